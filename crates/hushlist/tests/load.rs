//! A bounded load test on loopback: `hushlist serve` (both servers on SQLite) with Postfix's
//! smtp-sink as the relay. For a fixed time, concurrent senders post (seal, deposit the key,
//! hand the post over SMTP) and concurrent members fetch post keys with signed requests.
//! Every operation must succeed, and afterwards every acknowledged post reaches every member.
//! Throughput and latency are measured, not asserted: run with `--nocapture` to see the
//! report (docs/ROBUSTNESS.md records one).

mod common;

use std::time::{Duration, Instant};

use common::served_to_mailboxes;
use hushlist_client::Home;
use hushlist_client::lists::ListConfig;
use hushlist_client::posts;
use hushlist_client::remote::Server;
use hushlist_client::rosters;
use hushlist_core::roster::{MemberEntry, Policy, Role};
use hushlist_core::{Address, KeyId, SecretIdentity};
use hushlist_testkit::now;
use rand::rngs::OsRng;

const LIST: &str = "team@lists.example.org";
const SENDERS: usize = 4;
const REQUESTERS: usize = 8;
/// Readers the requesters sign as, so each identity stays under the key server's
/// per-identity rate limit (50 a second) however fast the requesters go.
const READERS_PER_REQUESTER: usize = 12;
const RUN_FOR: Duration = Duration::from_secs(5);

fn identity(address: &str) -> SecretIdentity {
    SecretIdentity::generate(OsRng, address).unwrap()
}

fn message(from: &str, n: usize) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {LIST}\r\nSubject: load {n}\r\nMessage-ID: <load-{n}-{from}>\r\n\r\n{}\r\n",
        "Five kilobytes of news. ".repeat(210)
    )
    .into_bytes()
}

/// What one kind of operation did during the run.
#[derive(Default)]
struct Outcome {
    latencies: Vec<Duration>,
    errors: Vec<String>,
}

impl Outcome {
    fn merge(mut self, other: Outcome) -> Self {
        self.latencies.extend(other.latencies);
        self.errors.extend(other.errors);
        self
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    fn report(&self, what: &str, clients: usize) -> String {
        format!(
            "{what:<24} {clients:>7} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>6}",
            self.latencies.len(),
            self.latencies.len() as f64 / RUN_FOR.as_secs_f64(),
            self.percentile(0.50).as_secs_f64() * 1000.0,
            self.percentile(0.99).as_secs_f64() * 1000.0,
            self.latencies.iter().max().unwrap().as_secs_f64() * 1000.0,
            self.errors.len(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_senders_and_key_requesters_get_no_errors_and_every_post_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, served) = served_to_mailboxes(dir.path());
    let list = ListConfig {
        list: Address::parse(LIST).unwrap(),
        key_server: served.key_url.clone(),
        list_server: served.list_url.clone(),
        smtp: served.smtp.clone(),
        insecure_http: false,
        pins: None,
    };
    // One home holds the pins for every client here: they all run in this process.
    let home = Home::at(dir.path().join("home"));
    let owner = identity("olivia@example.org");
    rosters::create(
        &owner,
        Address::parse("olivia@example.org").unwrap(),
        &home,
        &list,
        Policy::default(),
        &served.admin_token,
        now(),
    )
    .await
    .unwrap();
    let senders: Vec<(String, SecretIdentity)> = (0..SENDERS)
        .map(|i| format!("sender{i}@example.org"))
        .map(|a| (a.clone(), identity(&a)))
        .collect();
    let readers: Vec<(String, SecretIdentity)> = (0..REQUESTERS * READERS_PER_REQUESTER)
        .map(|i| format!("reader{i:03}@example.net"))
        .map(|a| (a.clone(), identity(&a)))
        .collect();
    let entries = senders
        .iter()
        .map(|s| (s, Role::Member))
        .chain(readers.iter().map(|r| (r, Role::Reader)))
        .map(|((address, key), role)| MemberEntry {
            address: Address::parse(address).unwrap(),
            cert: key.cert().to_armored(),
            role,
        })
        .collect();
    rosters::add_many(&owner, &home, &list, entries, now(), |_| {})
        .await
        .unwrap();
    let members = 1 + senders.len() + readers.len();

    // One post per sender first: their keys are what the requesters ask for.
    let mut key_ids = Vec::new();
    for (address, key) in &senders {
        let sent = posts::send(key, &home, &list, &message(address, 0))
            .await
            .unwrap();
        key_ids.push(sent.key_id.parse::<KeyId>().unwrap());
    }

    let deadline = Instant::now() + RUN_FOR;
    let sending: Vec<_> = senders
        .into_iter()
        .map(|(address, key)| {
            let (home, list) = (home.clone(), list.clone());
            tokio::spawn(async move {
                let mut outcome = Outcome::default();
                let mut n = 1;
                while Instant::now() < deadline {
                    let started = Instant::now();
                    match posts::send(&key, &home, &list, &message(&address, n)).await {
                        Ok(_) => outcome.latencies.push(started.elapsed()),
                        Err(e) => outcome.errors.push(e.to_string()),
                    }
                    n += 1;
                }
                outcome
            })
        })
        .collect();
    let mut readers = readers.into_iter().map(|(_, key)| key);
    let requesting: Vec<_> = (0..REQUESTERS)
        .map(|_| {
            let mine: Vec<SecretIdentity> = readers.by_ref().take(READERS_PER_REQUESTER).collect();
            let (keys, list, key_ids) = (
                Server::key_server(&list.key_server),
                list.list.clone(),
                key_ids.clone(),
            );
            tokio::spawn(async move {
                let mut outcome = Outcome::default();
                let mut n = 0;
                while Instant::now() < deadline {
                    let (me, key_id) = (&mine[n % mine.len()], &key_ids[n % key_ids.len()]);
                    let started = Instant::now();
                    match keys.fetch_key(me, &list, key_id).await {
                        Ok(_) => outcome.latencies.push(started.elapsed()),
                        Err(e) => outcome.errors.push(e.to_string()),
                    }
                    n += 1;
                }
                outcome
            })
        })
        .collect();
    let mut posted = Outcome::default();
    for task in sending {
        posted = posted.merge(task.await.unwrap());
    }
    let mut fetched = Outcome::default();
    for task in requesting {
        fetched = fetched.merge(task.await.unwrap());
    }

    eprintln!(
        "\nload for {:?} on loopback ({members} members, debug build):\n{:<24} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}\n{}\n{}",
        RUN_FOR,
        "operation",
        "clients",
        "done",
        "per s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        posted.report("post (seal+deposit+SMTP)", SENDERS),
        fetched.report("key fetch (signed)", REQUESTERS),
    );
    assert!(posted.errors.is_empty(), "{:?}", posted.errors);
    assert!(fetched.errors.is_empty(), "{:?}", fetched.errors);
    assert!(!posted.latencies.is_empty() && !fetched.latencies.is_empty());

    // Every acknowledged post, warm-up included, reaches a member.
    let acknowledged = posted.latencies.len() + SENDERS;
    let copies = sink.wait_for_copies("reader000@example.net", acknowledged);
    assert_eq!(copies.len(), acknowledged, "each post once");
}
