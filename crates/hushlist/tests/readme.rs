//! README's "Your first list" walkthrough, run line for line (less the `cargo install`, which
//! this test's build stands in for) in an empty directory with the built `hushlist` first on
//! PATH. It uses the documented default ports 8470, 8471 and 2525.

use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};

#[test]
fn the_readme_walkthrough_works_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let block = readme
        .split("<!-- walkthrough -->\n```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("README has the walkthrough block");
    let script: String = block
        .lines()
        .filter(|line| !line.starts_with("cargo install"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(script.contains("hushlist serve"), "{script}");

    let dir = tempfile::tempdir().unwrap();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_hushlist"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Its own process group, so a server left behind by a failing line is killed too.
    let child = Command::new("bash")
        .args(["-e", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("HUSHLIST_HOME")
        .env_remove("HUSHLIST_ADMIN_TOKEN")
        .env_remove("HUSHLIST_PASSPHRASE")
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let group = format!("-{}", child.id());
    let out = child.wait_with_output().unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", "--", &group])
        .stderr(Stdio::null())
        .status();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Hushlist-Verified-Signer: olivia@example.org ("),
        "{stdout}"
    );
    assert!(stdout.contains("Subject: First post"), "{stdout}");
    assert!(stdout.contains("Hello, team."), "{stdout}");
}
