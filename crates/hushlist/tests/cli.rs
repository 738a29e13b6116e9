//! The `hushlist` binary as a user runs it.

use std::process::{Command, Output};
use std::time::Duration;

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

/// What the server says first to a connection that sends nothing (an SMTP greeting, or
/// whatever it writes before closing), within 3 s; `None` if it says nothing.
async fn first_words(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut chunk)).await {
            Err(_) => return (!got.is_empty()).then(|| String::from_utf8_lossy(&got).into()),
            Ok(Ok(0) | Err(_)) => return Some(String::from_utf8_lossy(&got).into()),
            Ok(Ok(read)) => {
                got.extend_from_slice(&chunk[..read]);
                if got.ends_with(b"\r\n") && got.starts_with(b"2") {
                    // An SMTP greeting: the session is open.
                    return Some(String::from_utf8_lossy(&got).into());
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_connection_limits_from_its_config() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hushlist.toml");
    std::fs::write(
        &config,
        "[keys]\nmax_http_connections_per_client = 1\n\
         [lists]\nmax_http_connections_per_client = 1\nmax_connections_per_client = 1\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hushlist"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .args(["--key-http", "127.0.0.1:0", "--list-http", "127.0.0.1:0"])
        .args(["--smtp", "127.0.0.1:0", "--relay", "127.0.0.1:1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let keys = lines.next().unwrap().unwrap();
    let lists = lines.next().unwrap().unwrap();
    let word = |line: &str, n: usize| {
        line.split_whitespace()
            .nth(n)
            .unwrap()
            .trim_end_matches(',')
            .trim_start_matches("http://")
            .to_owned()
    };
    let connect =
        |address: String| async move { tokio::net::TcpStream::connect(address).await.unwrap() };
    for http in [word(&keys, 3), word(&lists, 3)] {
        let _held = connect(http.clone()).await;
        let refused = first_words(&mut connect(http.clone()).await)
            .await
            .unwrap_or_default();
        assert!(
            refused.starts_with("HTTP/1.1 503 ") && refused.contains("too_many_connections"),
            "{http}: {refused}"
        );
    }
    let smtp = word(&lists, 5);
    let mut session = connect(smtp.clone()).await;
    let greeting = first_words(&mut session).await.unwrap_or_default();
    assert!(greeting.starts_with("220 "), "{greeting}");
    let refused = first_words(&mut connect(smtp).await)
        .await
        .unwrap_or_default();
    assert!(
        refused.starts_with("421 4.7.0 Too many connections from 127.0.0.1"),
        "{refused}"
    );
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

    std::fs::write(
        &config,
        "[keys]\nmax_http_connections_per_client = 0\n[lists]\nmax_connections_per_client = 0\n",
    )
    .unwrap();
    let out = hushlist(dir.path(), &["serve", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 problems"), "{err}");
    assert!(
        err.contains("keys.http_header_timeout_secs, keys.max_http_connections and keys.max_http_connections_per_client must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains(
            "lists.max_connections and lists.max_connections_per_client must be at least 1"
        ),
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

/// Each server keeps a database of its own: pointed at the key server's database, the list
/// server refuses to start, saying what is wrong, and the key server still starts on it.
#[test]
fn a_server_pointed_at_the_other_servers_database_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let home = dir.path().join("home");
    // Starts the key server, reads its first line (it is serving: its database is migrated)
    // and stops it.
    let key_server_starts = || {
        let mut keys = Command::new(env!("CARGO_BIN_EXE_hushlist"))
            .env("HUSHLIST_HOME", &home)
            .args(["serve", "--data-dir", data.to_str().unwrap(), "keys"])
            .args(["--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(keys.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();
        keys.kill().unwrap();
        keys.wait().unwrap();
        assert!(ready.contains("key server on"), "{ready:?}");
    };
    key_server_starts();
    let key_db = data.join("keys").join("keyserver.db");

    let lists = hushlist(
        &home,
        &[
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "lists",
            "--smtp-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--database",
            &format!("sqlite://{}", key_db.display()),
        ],
    );
    let stderr = String::from_utf8_lossy(&lists.stderr);
    assert!(!lists.status.success(), "{stderr}");
    assert!(
        stderr.contains("this database is not the list server's (key server)")
            && stderr.contains("each need a database of their own"),
        "{stderr}"
    );
    key_server_starts();
}
