//! Two real `hushlist-listserver` processes on one PostgreSQL database, as when a list
//! server is scaled out: posts submitted to either reach every member exactly once, and when
//! one instance is killed with SIGKILL mid-fan-out, the other finishes its deliveries once
//! their lease runs out, losing nothing.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use hushlist_listserver::service::ListServer;
use hushlist_store::scratch::{ScratchDb, postgres_admin_url};

const MEMBERS: usize = 300;
const MAX_RCPTS: usize = 25;
const WORKERS: usize = 2;

struct Instance {
    child: Child,
    smtp_port: u16,
    http: String,
}

impl Instance {
    /// Relay transactions this process made.
    async fn transactions(&self) -> i64 {
        let text = reqwest::get(format!("{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("hushlist_listserver_relay_transactions_total "))
            .and_then(|n| n.trim().parse().ok())
            .expect("the transactions counter in /metrics")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_instance(data_dir: &Path, database: &str, relay_port: u16) -> Instance {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hushlist-listserver"))
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .args(["--database", database])
        .args(["--smtp-listen", "127.0.0.1:0"])
        .args(["--http-listen", "127.0.0.1:0"])
        .args(["--relay", &format!("127.0.0.1:{relay_port}")])
        .args(["--max-rcpts", &MAX_RCPTS.to_string()])
        .args(["--workers", &WORKERS.to_string()])
        .args(["--lease-secs", "9", "--relay-timeout-secs", "2"])
        .args(["--retry-secs", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let smtp = lines.next().unwrap().unwrap();
    let http = lines.next().unwrap().unwrap();
    let http = http
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected {http:?}"))
        .to_owned();
    let smtp_port = smtp.rsplit(':').next().unwrap().parse().unwrap();
    Instance {
        child,
        smtp_port,
        http,
    }
}

/// Sends a post with swaks and returns its key id (which tells the copies apart).
fn swaks_post(smtp_port: u16, post: &[u8], dir: &Path) -> String {
    let file = dir.join(format!("post-{smtp_port}.eml"));
    std::fs::write(&file, post).unwrap();
    let swaks = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &smtp_port.to_string()])
        .args(["--from", OWNER, "--to", LIST, "--data"])
        .arg(&file)
        .output()
        .expect("swaks must be installed (.ci/run installs it)");
    let transcript = String::from_utf8_lossy(&swaks.stdout);
    assert!(
        transcript.contains("<-  250 2.0.0"),
        "{transcript} {}",
        String::from_utf8_lossy(&swaks.stderr)
    );
    let text = String::from_utf8_lossy(post);
    text.lines()
        .find_map(|l| l.strip_prefix("Hushlist-Key-Id: "))
        .expect("a sealed post names its key")
        .trim()
        .to_owned()
}

/// Copies each recipient got of the post with `key_id`.
fn copies_of(sink: &SmtpSink, key_id: &str) -> BTreeMap<String, usize> {
    let mut copies = BTreeMap::new();
    for transaction in sink.transactions() {
        if transaction
            .message
            .contains(&format!("Hushlist-Key-Id: {key_id}"))
        {
            for recipient in transaction.rcpt_to {
                *copies.entry(recipient).or_default() += 1;
            }
        }
    }
    copies
}

fn everyone() -> Vec<String> {
    let mut all: Vec<String> = (0..MEMBERS).map(member_address).collect();
    all.push(OWNER.into());
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_queue_and_survive_losing_one_mid_fan_out() {
    let db = ScratchDb::postgres().await.unwrap_or_else(|e| {
        panic!(
            "no PostgreSQL at {} ({e}); run .ci/run once, or set HUSHLIST_TEST_POSTGRES",
            postgres_admin_url()
        )
    });
    let owner = create_list(&ListServer::new(db.open_lists().await.unwrap()), MEMBERS).await;
    let dir = tempfile::Builder::new().prefix("scale").tempdir().unwrap();
    eprintln!("DIR {}", dir.path().display());
    let dir = dir.keep();
    let dir = tempfile::TempDir::new_in(&dir).unwrap().keep();
    let dir = &dir;
    struct D<'a>(&'a std::path::Path);
    impl D<'_> {
        fn path(&self) -> &std::path::Path {
            self.0
        }
    }
    let dir = D(dir);
    // The relay answers each DATA after a second, so a fan-out takes a while.
    let sink = SmtpSink::start(free_port(), &dir.path().join("sink"), &["-w", "1"]);
    let first = start_instance(&dir.path().join("one"), db.url(), sink.port);
    let second = start_instance(&dir.path().join("two"), db.url(), sink.port);

    // One post through each instance: both instances' workers share both fan-outs, and
    // every member gets each post exactly once.
    let post_a = swaks_post(first.smtp_port, &sealed_post(OWNER, &owner), dir.path());
    let post_b = swaks_post(second.smtp_port, &sealed_post(OWNER, &owner), dir.path());
    for key_id in [&post_a, &post_b] {
        wait_until(Duration::from_secs(120), "both fan-outs", || async {
            copies_of(&sink, key_id).len() == MEMBERS + 1
        })
        .await;
    }
    // Give any stray duplicate a moment to show up before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for key_id in [&post_a, &post_b] {
        let copies = copies_of(&sink, key_id);
        assert_eq!(copies.keys().cloned().collect::<Vec<_>>(), everyone());
        assert!(
            copies.values().all(|&n| n == 1),
            "exactly once each: {:?}",
            copies.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
        );
    }
    let (by_first, by_second) = (first.transactions().await, second.transactions().await);
    assert!(
        by_first > 0 && by_second > 0,
        "both instances delivered ({by_first} and {by_second} transactions)"
    );

    // A third post; the first instance is killed once a few of its copies are out.
    let before = sink.transactions().len();
    let post_c = swaks_post(first.smtp_port, &sealed_post(OWNER, &owner), dir.path());
    wait_until(
        Duration::from_secs(60),
        "the first transactions",
        || async { sink.transactions().len() >= before + 4 },
    )
    .await;
    let mut first = first;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(
        copies_of(&sink, &post_c).len() < MEMBERS + 1,
        "the fan-out was over before the kill"
    );
    wait_until(
        Duration::from_secs(120),
        "the second instance to finish the fan-out",
        || async { copies_of(&sink, &post_c).len() == MEMBERS + 1 },
    )
    .await;
    let copies = copies_of(&sink, &post_c);
    assert_eq!(copies.keys().cloned().collect::<Vec<_>>(), everyone());
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    assert!(
        duplicates <= WORKERS * MAX_RCPTS,
        "{duplicates} duplicates; at most the killed instance's {WORKERS} transactions in flight may repeat"
    );
    drop(second);
}
