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
    assert!(stdout.contains("| Subject: [...]"));
    assert!(stdout.contains("key server refuses carol"));
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
