//! Two real `hushlist-listserver` processes on one PostgreSQL database, as when a list
//! server is scaled out: posts submitted to either reach every member exactly once, and when
//! one instance is killed with SIGKILL mid-fan-out, the other finishes its deliveries once
//! their lease runs out, losing nothing. Copies are counted once the queue is empty and every
//! transaction the instances started has reached the relay, so a late duplicate is seen.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use hushlist_listserver::service::ListServer;
use hushlist_store::ListStore;
use hushlist_store::scratch::{ScratchDb, postgres_admin_url};

const MEMBERS: usize = 300;
const MAX_RCPTS: usize = 25;
const WORKERS: usize = 2;

/// Relay transactions `instance` made.
async fn transactions(instance: &ListServerProcess) -> i64 {
    instance
        .metric("hushlist_listserver_relay_transactions_total")
        .await
        .expect("the transactions counter in /metrics")
}

/// Whether every transaction `instance` (saying EHLO `name`) started has reached the relay.
async fn all_started_arrived(sink: &SmtpSink, instance: &ListServerProcess, name: &str) -> bool {
    let arrived = sink
        .transactions()
        .iter()
        .filter(|t| t.helo == name)
        .count();
    i64::try_from(arrived).unwrap() >= transactions(instance).await
}

/// Waits (bounded) until nothing is left to deliver in `store` and every transaction the
/// `instances` (with their EHLO names) started has reached the relay: only then can no
/// stray duplicate still be on its way.
async fn wait_for_quiet(
    store: &ListStore,
    sink: &SmtpSink,
    instances: &[(&ListServerProcess, &str)],
) {
    wait_until(
        Duration::from_secs(120),
        "an empty queue and every started transaction at the relay",
        || async {
            if store.delivery_counts().await.unwrap().pending > 0 {
                return false;
            }
            for (instance, name) in instances {
                if !all_started_arrived(sink, instance, name).await {
                    return false;
                }
            }
            true
        },
    )
    .await;
}

/// An instance relaying to `relay_port`, saying EHLO `name` (which tells its transactions
/// at the relay apart).
fn start_instance(
    data_dir: &Path,
    database: &str,
    relay_port: u16,
    name: &str,
) -> ListServerProcess {
    let relay = format!("127.0.0.1:{relay_port}");
    let (max_rcpts, workers) = (MAX_RCPTS.to_string(), WORKERS.to_string());
    let args = [
        &[
            "--database",
            database,
            "--relay",
            &relay,
            "--hostname",
            name,
        ][..],
        &["--max-rcpts", &max_rcpts, "--workers", &workers],
        &QUICK_RETRIES,
    ]
    .concat();
    ListServerProcess::start(data_dir, &args)
}

/// Sends a post with swaks and returns its key id (which tells the copies apart).
fn swaks_post(smtp_port: u16, post: &[u8], dir: &Path) -> String {
    let file = dir.join(format!("post-{smtp_port}.eml"));
    std::fs::write(&file, post).unwrap();
    let swaks = swaks(smtp_port, OWNER, LIST, &file, &[]);
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
    let store = db.open_lists().await.unwrap();
    let owner = create_list(&ListServer::new(store.clone()), MEMBERS).await;
    let dir = tempfile::tempdir().unwrap();
    // The relay answers each DATA after a second, so a fan-out takes a while.
    let sink = SmtpSink::start(free_port(), &dir.path().join("sink"), &["-w", "1"]);
    let (one, two) = ("one.lists.test", "two.lists.test");
    let first = start_instance(&dir.path().join("one"), db.url(), sink.port, one);
    let second = start_instance(&dir.path().join("two"), db.url(), sink.port, two);

    // One post through each instance: both instances' workers share both fan-outs, and
    // every member gets each post exactly once.
    let post_a = swaks_post(first.smtp.port(), &sealed_post(OWNER, &owner), dir.path());
    let post_b = swaks_post(second.smtp.port(), &sealed_post(OWNER, &owner), dir.path());
    for key_id in [&post_a, &post_b] {
        wait_until(Duration::from_secs(120), "both fan-outs", || async {
            copies_of(&sink, key_id).len() == MEMBERS + 1
        })
        .await;
    }
    wait_for_quiet(&store, &sink, &[(&first, one), (&second, two)]).await;
    for key_id in [&post_a, &post_b] {
        let copies = copies_of(&sink, key_id);
        assert_eq!(copies.keys().cloned().collect::<Vec<_>>(), everyone());
        assert!(
            copies.values().all(|&n| n == 1),
            "exactly once each: {:?}",
            copies.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
        );
    }
    let (by_first, by_second) = (transactions(&first).await, transactions(&second).await);
    assert!(
        by_first > 0 && by_second > 0,
        "both instances delivered ({by_first} and {by_second} transactions)"
    );

    // A third post; the first instance is killed once a few of its copies are out.
    let before = sink.transactions().len();
    let post_c = swaks_post(first.smtp.port(), &sealed_post(OWNER, &owner), dir.path());
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
    wait_for_quiet(&store, &sink, &[(&second, two)]).await;
    let copies = copies_of(&sink, &post_c);
    assert_eq!(copies.keys().cloned().collect::<Vec<_>>(), everyone());
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    assert!(
        duplicates <= WORKERS * MAX_RCPTS,
        "{duplicates} duplicates; at most the killed instance's {WORKERS} transactions in flight may repeat"
    );
    drop(second);
}
