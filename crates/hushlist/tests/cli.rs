//! The `hushlist` binary as a user runs it.

use std::process::{Command, Output};

fn hushlist(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hushlist"))
        .env("HUSHLIST_HOME", home)
        .env_remove("HUSHLIST_PASSPHRASE")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn demo_runs_end_to_end_and_shows_what_each_server_saw() {
    let home = tempfile::tempdir().unwrap();
    let out = hushlist(home.path(), &["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| Subject: [...]"), "{stdout}");
    assert!(
        stdout.contains("carol is refused: the key server refused"),
        "{stdout}"
    );
    assert!(stdout.contains("| carol   release refused"), "{stdout}");
    assert!(stdout.contains("| olivia  deposit stored"), "{stdout}");
    assert_eq!(
        stdout
            .matches("reads \"Subject: Quarterly numbers\"")
            .count(),
        3
    );
}

#[test]
fn init_then_export_gives_a_certificate_gpg_style_tools_read() {
    let home = tempfile::tempdir().unwrap();
    let missing = hushlist(home.path(), &["key", "export"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("hushlist init --email"));

    let init = hushlist(
        home.path(),
        &["init", "--email", "alice@example.org", "--name", "Alice"],
    );
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let again = hushlist(home.path(), &["init", "--email", "alice@example.org"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds an identity"));

    let export = hushlist(home.path(), &["key", "export"]);
    assert!(export.status.success());
    let cert = hushlist_core::Cert::from_bytes(&export.stdout).unwrap();
    let fingerprint = hushlist(home.path(), &["key", "fingerprint"]);
    assert_eq!(
        String::from_utf8_lossy(&fingerprint.stdout).trim(),
        cert.fingerprint().as_str()
    );
    assert_eq!(cert.user_ids(), ["Alice <alice@example.org>"]);

    let bad = hushlist(home.path(), &["init", "--email", "not-an-address"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a mail address"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_both_servers_with_one_admin_token() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hushlist"))
        .args(["serve", "--data-dir", data.to_str().unwrap()])
        .args(["--key-http", "127.0.0.1:0", "--list-http", "127.0.0.1:0"])
        .args(["--smtp", "127.0.0.1:0", "--relay", "127.0.0.1:1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let keys = lines.next().unwrap().unwrap();
    let lists = lines.next().unwrap().unwrap();
    let url_in = |line: &str| {
        line.split_whitespace()
            .nth(3)
            .unwrap()
            .trim_end_matches(',')
            .to_owned()
    };
    let (key_url, list_url) = (url_in(&keys), url_in(&lists));
    for url in [&key_url, &list_url] {
        let health = reqwest::get(format!("{url}/healthz")).await.unwrap();
        assert_eq!(health.status(), 200, "{url}");
    }
    assert!(lists.contains("SMTP 127.0.0.1:"), "{lists}");
    let token = |path: &str| std::fs::read_to_string(data.join(path)).unwrap();
    assert_eq!(token("keys/admin.token"), token("admin.token"));
    assert_eq!(token("lists/admin.token"), token("admin.token"));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_bad_config_reports_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hushlist.toml");
    std::fs::write(
        &config,
        "domain = \"not a domain\"\n[keys]\nhttp = \"nowhere\"\ndatabase = \"mysql://db\"\n[lists]\nrelay = \"no-port\"\ntls_cert = \"cert.pem\"\nbounce_threshold = -1.0\nroster_check_secs = 0\n",
    )
    .unwrap();
    let out = hushlist(dir.path(), &["serve", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("7 problems"), "{err}");
    assert!(
        err.contains("lists.bounce_threshold = -1 must be a positive number"),
        "{err}"
    );
    assert!(
        err.contains("lists.roster_check_secs must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains("keys.database = \"mysql://db\" is not a sqlite:// or postgres:// URL"),
        "{err}"
    );
    assert!(err.contains("domain = \"not a domain\""), "{err}");
    assert!(err.contains("keys.http = \"nowhere\""), "{err}");
    assert!(err.contains("lists.relay = \"no-port\""), "{err}");
    assert!(
        err.contains("lists.tls_cert and lists.tls_key go together"),
        "{err}"
    );

    std::fs::write(&config, "[lists]\nrelya = \"typo:25\"\n").unwrap();
    let out = hushlist(dir.path(), &["serve", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `relya`"), "{err}");
}

#[test]
fn commands_that_need_an_identity_say_how_to_make_one() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["key", "export"][..],
        &["open"],
        &["archive", "team@lists.example.org"],
    ] {
        let out = hushlist(home.path(), args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("hushlist init --email"), "{args:?}: {err}");
    }
}
