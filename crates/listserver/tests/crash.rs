//! The real `hushlist-listserver` process: killed with SIGKILL in the middle of a fan-out to
//! 1,000 members and started again, every member still gets the post, and duplicates are
//! limited to the transactions that were in flight; a post to 10,000 members completes with
//! the process's peak memory well under 200 MB; killed while senders post, every post it
//! acknowledged is delivered after the restart; a started server loads each roster once,
//! before any request asks for it. Also its /healthz and /metrics.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use hushlist_testkit::smtp::{data_lines, read_reply};
use tokio::io::AsyncWriteExt as _;

const MEMBERS: usize = 1000;
const MAX_RCPTS: usize = 50;
const WORKERS: usize = 2;

/// The list server binary relaying to `relay_port` in batches of `max_rcpts`, with short
/// leases and retries.
fn start_list_server_with(data_dir: &Path, relay_port: u16, max_rcpts: usize) -> ListServerProcess {
    let relay = format!("127.0.0.1:{relay_port}");
    let (max_rcpts, workers) = (max_rcpts.to_string(), WORKERS.to_string());
    let args = [
        &[
            "--relay",
            &relay,
            "--max-rcpts",
            &max_rcpts,
            "--workers",
            &workers,
        ][..],
        &QUICK_RETRIES,
    ]
    .concat();
    ListServerProcess::start(data_dir, &args)
}

fn start_list_server(data_dir: &Path, relay_port: u16) -> ListServerProcess {
    start_list_server_with(data_dir, relay_port, MAX_RCPTS)
}

/// Creates the list with `members` in the data directory's store, before the server runs;
/// returns the path of a post by the owner.
async fn prepare(dir: &Path, data_dir: &Path, members: usize) -> std::path::PathBuf {
    let owner = create_list_in(data_dir, members).await;
    let post = dir.join("post.eml");
    std::fs::write(&post, sealed_post(OWNER, &owner)).unwrap();
    post
}

/// Posts with swaks and checks the 250.
fn swaks_post(smtp_port: u16, post: &Path) {
    let transcript = swaks_ok(smtp_port, OWNER, LIST, post, &[]);
    assert!(transcript.contains("<-  250 2.0.0"), "{transcript}");
}

/// Peak resident memory of a process, from /proc, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_to_ten_thousand_members_completes_in_well_under_200_mb() {
    const LARGE: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("lists");
    let post = prepare(dir.path(), &data_dir, LARGE).await;
    let sink = SmtpSink::start(free_port(), &dir.path().join("sink"), &[]);
    let server = start_list_server_with(&data_dir, sink.port, 500);
    swaks_post(server.smtp.port(), &post);
    wait_until(
        Duration::from_secs(300),
        "the fan-out to 10,000 members",
        || async {
            server
                .metric("hushlist_listserver_queue{state=\"pending\"}")
                .await
                == Some(0)
        },
    )
    .await;
    let peak = peak_rss_kib(server.child.id());
    eprintln!("peak RSS of the list server: {} MiB", peak / 1024);
    assert!(peak < 200 * 1024, "peak RSS {peak} KiB");
    let copies = sink.copies_per_recipient();
    assert_eq!(copies.len(), LARGE + 1);
    assert!(copies.values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_killed_mid_way_completes_after_restart_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("lists");
    let post = prepare(dir.path(), &data_dir, MEMBERS).await;

    // The relay waits a second before answering each DATA, so the fan-out takes a while.
    let sink = SmtpSink::start(free_port(), &dir.path().join("sink"), &["-w", "1"]);
    let server = start_list_server(&data_dir, sink.port);
    let health = reqwest::get(format!("{}/healthz", server.http))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    swaks_post(server.smtp.port(), &post);

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
            server
                .metric("hushlist_listserver_queue{state=\"pending\"}")
                .await
                == Some(0)
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
        server
            .metric("hushlist_listserver_queue{state=\"delivered\"}")
            .await,
        Some(MEMBERS as i64 + 1)
    );
    assert_eq!(
        server
            .metric("hushlist_listserver_queue{state=\"failed\"}")
            .await,
        Some(0)
    );
}

/// Posts `posts` (Message-ID, message) one after another on one pipelining SMTP connection
/// until they are done or the server goes away. Returns the Message-IDs answered 250, and
/// any reply that was neither expected nor the end of the connection.
async fn post_until_gone(
    port: u16,
    posts: Vec<(String, Vec<u8>)>,
    acknowledged: Arc<AtomicUsize>,
) -> (Vec<String>, Vec<String>) {
    let (mut acked, mut unexpected) = (Vec::new(), Vec::new());
    let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return (acked, unexpected);
    };
    let (read, mut write) = stream.into_split();
    let mut read = tokio::io::BufReader::new(read);
    // None when the server is gone (or silent for 30 s).
    let mut reply = async move || -> Option<String> {
        read_reply(&mut read, Duration::from_secs(30))
            .await
            .ok()
            .filter(|text| !text.is_empty())
    };
    let mut expect = async |reply: Option<String>, code: &str| match reply {
        Some(text) if text.starts_with(code) => true,
        Some(text) => {
            unexpected.push(text);
            false
        }
        None => false,
    };
    if !expect(reply().await, "220").await
        || write
            .write_all(b"EHLO crash.example.org\r\n")
            .await
            .is_err()
        || !expect(reply().await, "250").await
    {
        return (acked, unexpected);
    }
    for (message_id, message) in posts {
        let bytes = format!("MAIL FROM:<{OWNER}>\r\nRCPT TO:<{LIST}>\r\nDATA\r\n").into_bytes();
        if write.write_all(&bytes).await.is_err()
            || !expect(reply().await, "250").await
            || !expect(reply().await, "250").await
            || !expect(reply().await, "354").await
        {
            break;
        }
        if write.write_all(&data_lines(&message)).await.is_err()
            || !expect(reply().await, "250").await
        {
            break;
        }
        acked.push(message_id);
        acknowledged.fetch_add(1, Ordering::SeqCst);
    }
    (acked, unexpected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_senders_post_loses_no_acknowledged_post() {
    const SENDERS: usize = 4;
    const POSTS_EACH: usize = 100;
    const MEMBERS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("lists");
    let owner = create_list_in(&data_dir, MEMBERS).await;
    let sink = SmtpSink::start(free_port(), &dir.path().join("sink"), &[]);
    let mut first = start_list_server(&data_dir, sink.port);

    let acknowledged = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let posts = (0..POSTS_EACH)
                .map(|n| {
                    let id = format!("crash-{s}-{n}@example.org");
                    let post = sealed_post_with_id(OWNER, &owner, &id);
                    (id, post)
                })
                .collect();
            tokio::spawn(post_until_gone(
                first.smtp.port(),
                posts,
                acknowledged.clone(),
            ))
        })
        .collect();
    wait_until(Duration::from_secs(60), "the first 30 posts", || async {
        acknowledged.load(Ordering::SeqCst) >= 30
    })
    .await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let mut acked = Vec::new();
    for sender in senders {
        let (ids, unexpected) = sender.await.unwrap();
        assert!(unexpected.is_empty(), "{unexpected:?}");
        acked.extend(ids);
    }
    assert!(
        acked.len() < SENDERS * POSTS_EACH,
        "the senders were done before the kill"
    );

    let second = start_list_server(&data_dir, sink.port);
    wait_until(
        Duration::from_secs(120),
        "the queue to drain after restart",
        || async {
            second
                .metric("hushlist_listserver_queue{state=\"pending\"}")
                .await
                == Some(0)
        },
    )
    .await;
    let transactions = sink.transactions();
    let mut everyone: Vec<String> = (0..MEMBERS).map(member_address).collect();
    everyone.push(OWNER.into());
    everyone.sort();
    for id in &acked {
        let header = format!("Message-ID: <{id}>");
        let mut reached: Vec<String> = transactions
            .iter()
            .filter(|t| t.message.contains(&header))
            .flat_map(|t| t.rcpt_to.iter().cloned())
            .collect();
        reached.sort();
        reached.dedup();
        assert_eq!(reached, everyone, "acknowledged post {id}");
    }
    assert_eq!(
        second
            .metric("hushlist_listserver_queue{state=\"failed\"}")
            .await,
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_server_loads_each_roster_once_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("lists");
    let post = prepare(dir.path(), &data_dir, 200).await;
    let store = hushlist_store::ListStore::open(&format!(
        "sqlite://{}",
        data_dir.join("listserver.db").display()
    ))
    .await
    .unwrap();
    let stored_ops = store.roster_ops(LIST, -1, 10_000).await.unwrap().len() as i64;
    assert!(stored_ops > 200);
    let sink = SmtpSink::start(free_port(), &dir.path().join("sink"), &[]);
    let server = start_list_server(&data_dir, sink.port);
    const VERIFIED: &str = "hushlist_listserver_roster_ops_verified_total";
    wait_until(
        Duration::from_secs(30),
        "the roster loaded after the start",
        || async { server.metric(VERIFIED).await == Some(stored_ops) },
    )
    .await;
    // A post then finds the roster loaded: nothing is replayed again.
    swaks_post(server.smtp.port(), &post);
    assert_eq!(server.metric(VERIFIED).await, Some(stored_ops));
}

/// Whether `s` is a metric or label name as Prometheus reads one.
fn is_metric_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks that `text` reads as OpenMetrics text: `# HELP` and `# TYPE` lines, samples
/// `name{label="value",...} number` of a family typed above them, and `# EOF` last.
fn assert_exposition_parses(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "{text}");
    let mut families: Vec<&str> = Vec::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let (kind, name, rest) = (words.next(), words.next(), words.next());
            assert!(name.is_some_and(is_metric_name), "{line}");
            match kind {
                Some("HELP") => {}
                Some("TYPE") => {
                    assert!(matches!(rest, Some("counter" | "gauge")), "{line}");
                    families.extend(name);
                }
                _ => panic!("not a HELP or TYPE line: {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample and its value");
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels end with }");
                for label in labels.split(',') {
                    let (key, value) = label.split_once('=').expect("label=\"value\"");
                    assert!(is_metric_name(key), "{line}");
                    assert!(
                        value.len() >= 2 && value.starts_with('"') && value.ends_with('"'),
                        "{line}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(
            families
                .iter()
                .any(|f| name == *f || name.strip_suffix("_total") == Some(f)),
            "{line}: no TYPE line for it above"
        );
    }
}

/// Posts `post` and waits until the sample `name` reaches `value`.
async fn post_until(server: &ListServerProcess, post: &Path, name: &str, value: i64) {
    swaks_post(server.smtp.port(), post);
    wait_until(Duration::from_secs(60), name, || async {
        metric(&server.http, name).await == Some(value)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_gauge_counts_each_outcome_once_and_is_counted_again_at_a_restart() {
    const RECIPIENTS: i64 = 4;
    let delivered = "hushlist_listserver_queue{state=\"delivered\"}";
    let failed = "hushlist_listserver_queue{state=\"failed\"}";
    let pending = "hushlist_listserver_queue{state=\"pending\"}";
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("lists");
    let owner = create_list_in(&data_dir, RECIPIENTS as usize - 1).await;
    let posts: Vec<_> = ["first", "second"]
        .into_iter()
        .map(|name| {
            let path = dir.path().join(format!("{name}.eml"));
            let id = format!("{name}@example.org");
            std::fs::write(&path, sealed_post_with_id(OWNER, &owner, &id)).unwrap();
            path
        })
        .collect();

    let taking = SmtpSink::start(free_port(), &dir.path().join("taking"), &[]);
    let server = start_list_server(&data_dir, taking.port);
    assert_exposition_parses(&scrape(&server.http).await.unwrap());
    for state in [pending, delivered, failed] {
        assert_eq!(metric(&server.http, state).await, Some(0), "{state}");
    }
    post_until(&server, &posts[0], delivered, RECIPIENTS).await;
    assert_eq!(metric(&server.http, pending).await, Some(0));
    assert_eq!(metric(&server.http, failed).await, Some(0));
    assert_eq!(
        metric(&server.http, "hushlist_listserver_delivered_total").await,
        Some(RECIPIENTS)
    );
    drop(server);

    // A new process counts what the store holds once, as it starts; then its own outcomes.
    let refusing = SmtpSink::start(
        free_port(),
        &dir.path().join("refusing"),
        &["-f", "RCPT", "-B", "550 5.1.1 Recipient address rejected"],
    );
    let server = start_list_server(&data_dir, refusing.port);
    assert_eq!(metric(&server.http, delivered).await, Some(RECIPIENTS));
    assert_eq!(
        metric(&server.http, "hushlist_listserver_delivered_total").await,
        Some(0)
    );
    post_until(&server, &posts[1], failed, RECIPIENTS).await;
    assert_eq!(metric(&server.http, delivered).await, Some(RECIPIENTS));
    assert_eq!(metric(&server.http, pending).await, Some(0));
    assert_eq!(
        metric(&server.http, "hushlist_listserver_failed_total").await,
        Some(RECIPIENTS)
    );

    // The key server's exposition comes from the same library and reads the same way.
    let keys = start_key_server(dir.path()).await;
    assert_exposition_parses(&scrape(&keys).await.unwrap());
}
