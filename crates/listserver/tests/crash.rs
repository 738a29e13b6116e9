//! The real `hushlist-listserver` process killed with SIGKILL in the middle of a fan-out to
//! 1,000 members and started again: every member still gets the post, and duplicates are
//! limited to the transactions that were in flight. Also its /healthz and /metrics.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use hushlist_listserver::service::ListServer;

const MEMBERS: usize = 1000;
const MAX_RCPTS: usize = 50;
const WORKERS: usize = 2;

struct Running {
    child: Child,
    smtp_port: u16,
    http: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_list_server(data_dir: &Path, relay_port: u16) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hushlist-listserver"))
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .args([
            "--smtp-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--relay", &format!("127.0.0.1:{relay_port}")])
        .args(["--max-rcpts", &MAX_RCPTS.to_string()])
        .args(["--workers", &WORKERS.to_string()])
        .args([
            "--lease-secs",
            "9",
            "--relay-timeout-secs",
            "2",
            "--retry-secs",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let smtp = lines.next().unwrap().unwrap();
    let http = lines.next().unwrap().unwrap();
    let smtp_port = smtp.rsplit(':').next().unwrap().parse().unwrap();
    let http = http.strip_prefix("listening on ").unwrap().to_owned();
    Running {
        child,
        smtp_port,
        http,
    }
}

async fn metric(http: &str, name: &str) -> Option<i64> {
    let text = reqwest::get(format!("{http}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_killed_mid_way_completes_after_restart_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("lists");
    std::fs::create_dir_all(&data_dir).unwrap();
    let owner = {
        let server = ListServer::new(
            hushlist_store::Store::open(&format!(
                "sqlite://{}",
                data_dir.join("listserver.db").display()
            ))
            .await
            .unwrap(),
        );
        create_list(&server, MEMBERS).await
    };
    let post = dir.path().join("post.eml");
    std::fs::write(&post, sealed_post(OWNER, &owner)).unwrap();

    // The relay waits a second before answering each DATA, so the fan-out takes a while.
    let sink = SmtpSink::start(free_port(), &dir.path().join("sink"), &["-w", "1"]);
    let server = start_list_server(&data_dir, sink.port);
    let health = reqwest::get(format!("{}/healthz", server.http))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let swaks = Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1",
            "--port",
            &server.smtp_port.to_string(),
        ])
        .args(["--from", OWNER, "--to", LIST, "--data"])
        .arg(&post)
        .output()
        .expect("swaks must be installed (.ci/run installs it)");
    let transcript = String::from_utf8_lossy(&swaks.stdout);
    assert!(swaks.status.success(), "{transcript}");
    assert!(transcript.contains("<-  250 2.0.0"), "{transcript}");

    // Kill it once some, but far from all, copies are out.
    wait_until(
        Duration::from_secs(60),
        "the first transactions",
        || async { sink.transactions().len() >= 4 },
    )
    .await;
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let before = sink.copies_per_recipient().len();
    assert!(before < MEMBERS, "the fan-out was over before the kill");
    drop(server);

    let server = start_list_server(&data_dir, sink.port);
    wait_until(
        Duration::from_secs(180),
        "the queue to drain after restart",
        || async {
            metric(&server.http, "hushlist_listserver_queue{state=\"pending\"}").await == Some(0)
        },
    )
    .await;

    let copies = sink.copies_per_recipient();
    let mut expected: Vec<String> = (0..MEMBERS).map(member_address).collect();
    expected.push(OWNER.into());
    expected.sort();
    assert_eq!(
        copies.keys().cloned().collect::<Vec<_>>(),
        expected,
        "every member got the post"
    );
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    assert!(
        duplicates <= WORKERS * MAX_RCPTS,
        "{duplicates} duplicates; at most the {WORKERS} transactions in flight may repeat"
    );
    assert_eq!(
        metric(
            &server.http,
            "hushlist_listserver_queue{state=\"delivered\"}"
        )
        .await,
        Some(MEMBERS as i64 + 1)
    );
    assert_eq!(
        metric(&server.http, "hushlist_listserver_queue{state=\"failed\"}").await,
        Some(0)
    );
}
