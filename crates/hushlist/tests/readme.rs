//! README's "Your first list" walkthrough, run line for line (less the `cargo install`, which
//! this test's build stands in for) in an empty directory with the built `hushlist` first on
//! PATH. The documented default ports 8470, 8471 and 2525 become free ports, so the test does
//! not depend on (or disturb) whatever listens on them.

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
    assert!(script.contains("hushlist serve 2>"), "{script}");
    // Three listeners held at once, so the three ports differ.
    let held = [(); 3].map(|()| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let [key_http, list_http, smtp] = held.each_ref().map(|l| l.local_addr().unwrap().port());
    drop(held);
    let script = script
        .replace(
            "hushlist serve 2>",
            &format!(
                "hushlist serve --key-http 127.0.0.1:{key_http} --list-http 127.0.0.1:{list_http} --smtp 127.0.0.1:{smtp} 2>"
            ),
        )
        .replace("127.0.0.1:8470", &format!("127.0.0.1:{key_http}"))
        .replace("127.0.0.1:8471", &format!("127.0.0.1:{list_http}"))
        .replace("127.0.0.1:2525", &format!("127.0.0.1:{smtp}"));
    let commands = script
        .lines()
        .map(|line| line.split(" #").next().unwrap_or(line));
    for command in commands {
        for default in ["8470", "8471", "2525"] {
            assert!(!command.contains(default), "{command}");
        }
    }

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
    // Its own process group, so a server left behind by a failing line is killed too; output
    // to files, not pipes, so such a server cannot keep the test waiting for end of file.
    let stdout_file = dir.path().join("walkthrough.out");
    let stderr_file = dir.path().join("walkthrough.err");
    let mut child = Command::new("bash")
        .args(["-e", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("HUSHLIST_HOME")
        .env_remove("HUSHLIST_ADMIN_TOKEN")
        .env_remove("HUSHLIST_PASSPHRASE")
        .process_group(0)
        .stdout(std::fs::File::create(&stdout_file).unwrap())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap();
    let group = format!("-{}", child.id());
    let status = child.wait().unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", "--", &group])
        .stderr(Stdio::null())
        .status();
    let out = std::process::Output {
        status,
        stdout: std::fs::read(&stdout_file).unwrap(),
        stderr: std::fs::read(&stderr_file).unwrap(),
    };
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
