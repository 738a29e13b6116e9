//! `hushlist serve` logs to stderr what an operator needs to follow a post: its acceptance
//! (list, queue id, key id, recipient count), the relay's outcomes, each refusal with its
//! code and reason, and each key release; never the subject. Real `hushlist serve`, Postfix's
//! smtp-sink as everyone's mailbox, and the `hushlist` command.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{Served, hushlist, ok};
use hushlist_peers::SmtpSink;

const LIST: &str = "team@lists.example.org";
const SUBJECT: &str = "Quarterly secrets";

/// Runs one list through `hushlist serve`: olivia creates it, adds bob, posts; bob reads
/// (a key release); then a non-member's plain post is refused. Returns the servers' log.
fn post_through_serve(dir: &Path, json: bool) -> String {
    let sink = SmtpSink::start(&dir.join("mailboxes"));
    let log = dir.join("serve.log");
    let served = Served::start_logging(
        &dir.join("data"),
        sink.port,
        "lists.example.org",
        &log,
        json,
    );
    let olivia = dir.join("olivia");
    let bob = dir.join("bob");
    ok(hushlist(
        &olivia,
        &["init", "--email", "olivia@example.org"],
        b"",
    ));
    ok(hushlist(&bob, &["init", "--email", "bob@example.org"], b""));
    let servers = served.servers();
    let mut create = vec!["list", "create", LIST];
    create.extend(servers);
    create.extend(["--admin-token", &served.admin_token]);
    ok(hushlist(&olivia, &create, b""));
    let bob_cert = dir.join("bob.asc");
    std::fs::write(&bob_cert, ok(hushlist(&bob, &["key", "export"], b""))).unwrap();
    ok(hushlist(
        &olivia,
        &[
            "list",
            "add",
            LIST,
            "bob@example.org",
            "--key",
            bob_cert.to_str().unwrap(),
        ],
        b"",
    ));
    let mut use_list = vec!["list", "use", LIST];
    use_list.extend(servers);
    ok(hushlist(&bob, &use_list, b""));
    ok(hushlist(
        &olivia,
        &["send", "--list", LIST, "--subject", SUBJECT],
        b"Numbers inside.\n",
    ));
    let copies = sink.wait_for_copies("bob@example.org", 1);
    ok(hushlist(&bob, &["open"], &copies[0]));
    refuse_plain_post(&served.smtp);
    drop(served);
    std::fs::read_to_string(&log).unwrap()
}

/// Offers the list a plain-text post from a stranger over SMTP; the server refuses it.
fn refuse_plain_post(smtp: &str) {
    let stream = TcpStream::connect(smtp).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut reply = || {
        let mut last = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                last.push_str(&line);
                return last;
            }
        }
    };
    reply();
    for command in [
        "EHLO stranger.example.net".to_owned(),
        "MAIL FROM:<mallory@example.net>".to_owned(),
        format!("RCPT TO:<{LIST}>"),
        "DATA".to_owned(),
    ] {
        writer
            .write_all(format!("{command}\r\n").as_bytes())
            .unwrap();
        reply();
    }
    writer
        .write_all(
            format!(
                "From: mallory@example.net\r\nTo: {LIST}\r\nSubject: {SUBJECT}\r\n\r\nhello\r\n.\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let refusal = reply();
    assert!(refusal.starts_with("550"), "{refusal}");
    writer.write_all(b"QUIT\r\n").unwrap();
}

#[test]
fn serve_logs_acceptance_relay_outcomes_refusals_and_key_releases_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let log = post_through_serve(dir.path(), false);
    for expected in [
        "post accepted",
        "queue_id=",
        "key_id=",
        "recipients=",
        "relay outcomes",
        "delivered=",
        "post refused",
        "code=550",
        "action=\"release\" outcome=\"released\"",
    ] {
        assert!(log.contains(expected), "no {expected:?} in the log:\n{log}");
    }
    assert!(!log.contains(SUBJECT), "the subject was logged:\n{log}");
}

#[test]
fn serve_log_json_writes_one_json_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = post_through_serve(dir.path(), true);
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let message =
        |event: &serde_json::Value| event["fields"]["message"].as_str().map(str::to_owned);
    let accepted = events
        .iter()
        .find(|e| message(e).as_deref() == Some("post accepted"))
        .unwrap_or_else(|| panic!("no accepted post in the log:\n{log}"));
    assert_eq!(accepted["fields"]["list"], LIST);
    assert!(accepted["fields"]["recipients"].is_u64(), "{accepted}");
    assert!(accepted["fields"]["queue_id"].is_u64(), "{accepted}");
    assert!(accepted["fields"]["key_id"].is_string(), "{accepted}");
    let refused = events
        .iter()
        .find(|e| message(e).as_deref() == Some("post refused"))
        .unwrap_or_else(|| panic!("no refusal in the log:\n{log}"));
    assert_eq!(refused["fields"]["code"], 550);
    assert!(
        events
            .iter()
            .any(|e| message(e).as_deref() == Some("relay outcomes")),
        "{log}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["action"] == "release" && e["fields"]["outcome"] == "released"),
        "{log}"
    );
    assert!(!log.contains(SUBJECT), "the subject was logged:\n{log}");
}
