//! Bounces, probes and leave requests arriving over SMTP at the list server's listener.
//!
//! The first test routes everything through a private Postfix: the list server relays its
//! copies to Postfix, Postfix hands them on to a mailbox server (smtp-sink) that refuses one
//! member with `550 5.1.1`, and Postfix's own bounce daemon sends the delivery status
//! notification to the VERP address, back at the list server. Nothing in the bounce path is
//! written by the test.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use hushlist_core::bounce::BouncePolicy;
use hushlist_core::{Address, SecretIdentity};
use hushlist_listserver::delivery::{Deliverer, DeliveryConfig, RelayConfig};
use hushlist_listserver::service::ListServer;
use hushlist_listserver::smtp::PostSink as _;
use hushlist_peers::Postfix;
use rand::rngs::OsRng;

const GONE: &str = "bob@gone.example";

/// A bounce policy for tests: every bounce counts (no day between them), and two bounces
/// call for a probe (the first has decayed a little by the time the second arrives, so the
/// threshold sits between one bounce and two).
fn quick_policy() -> BouncePolicy {
    BouncePolicy {
        threshold: 1.5,
        min_interval_secs: 0,
        ..BouncePolicy::default()
    }
}

async fn server_with_members(dir: &std::path::Path) -> (Arc<ListServer>, SecretIdentity) {
    let server =
        Arc::new(ListServer::new(open_store(dir).await).with_bounce_policy(quick_policy()));
    let members: Vec<(String, SecretIdentity)> = [GONE.to_owned(), member_address(0)]
        .into_iter()
        .map(|address| {
            let key = SecretIdentity::generate(OsRng, &address).unwrap();
            (address, key)
        })
        .collect();
    let owner = create_list_with(&server, &members).await;
    (server, owner)
}

async fn post(server: &ListServer, owner: &SecretIdentity, message_id: &str) -> i64 {
    queue_id(
        &server
            .accept(
                Some(&Address::parse(OWNER).unwrap()),
                &[Address::parse(LIST).unwrap()],
                sealed_post_with_id(OWNER, owner, message_id),
            )
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_bounces_to_verp_addresses_probe_then_suspend_the_member_and_owners_are_told() {
    let dir = tempfile::tempdir().unwrap();
    let (server, owner) = server_with_members(dir.path()).await;
    let smtp_port = serve_smtp(&server, None).await;
    let mailboxes = SmtpSink::start(free_port(), &dir.path().join("mailboxes"), &[]);
    let gone = SmtpSink::start(
        free_port(),
        &dir.path().join("gone"),
        &["-f", "RCPT", "-B", "550 5.1.1 No such user here"],
    );
    let postfix = Postfix::start_with(
        &dir.path().join("postfix"),
        mailboxes.port,
        &format!(
            "transport_maps = inline:{{ gone.example=smtp:[127.0.0.1]:{}, lists.example.org=smtp:[127.0.0.1]:{smtp_port} }}\n",
            gone.port
        ),
    );
    let mut config = DeliveryConfig::new(RelayConfig {
        host: "127.0.0.1".into(),
        port: postfix.port,
        helo_name: "lists.example.org".into(),
        timeout: Duration::from_secs(10),
        starttls: None,
    });
    config.dns_resolver = hushlist_listserver::delivery::DnsResolver::Off;
    config.verp = true;
    config.workers = 2;
    config.poll_interval = Duration::from_millis(100);
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    Deliverer::new(&server, config).spawn(stopped);

    // The first post's bounce is counted; the second reaches the threshold and a probe goes
    // out; the probe bounces too, and delivery is suspended.
    post(&server, &owner, "first@example.org").await;
    wait_until(
        Duration::from_secs(60),
        "the first bounce to be counted",
        || async {
            server
                .store()
                .bounce_record(LIST, GONE)
                .await
                .unwrap()
                .is_some()
        },
    )
    .await;
    let first = server
        .store()
        .bounce_record(LIST, GONE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.score, 1.0);
    assert_eq!(first.probe_token, None);
    assert!(server.store().suspensions(LIST).await.unwrap().is_empty());

    post(&server, &owner, "second@example.org").await;
    wait_until(
        Duration::from_secs(60),
        "the member to be suspended",
        || async { !server.store().suspensions(LIST).await.unwrap().is_empty() },
    )
    .await;
    let suspended = server.store().suspensions(LIST).await.unwrap();
    assert_eq!(suspended.len(), 1);
    assert_eq!(suspended[0].address, GONE);
    assert!(
        suspended[0].reason.contains("the probe came back")
            && suspended[0].reason.contains("550 5.1.1 No such user here"),
        "{}",
        suspended[0].reason
    );
    // A suspension starts the member afresh.
    assert_eq!(
        server.store().bounce_record(LIST, GONE).await.unwrap(),
        None
    );

    // Postfix's log shows its bounce daemon returning two posts and one probe to us.
    let log = postfix.log_text();
    let returned = |to: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("to=<{to}")) && l.contains("status=sent"))
            .count()
    };
    assert_eq!(
        returned("team-bounces+bob=gone.example@lists.example.org"),
        2,
        "{log}"
    );
    assert_eq!(returned("team-probe+"), 1, "{log}");

    // The owner is told, through the relay; the working member hears nothing of it.
    wait_until(Duration::from_secs(30), "the owner's notice", || async {
        !server
            .store()
            .unsent_outbox()
            .await
            .unwrap()
            .iter()
            .any(|(m, _)| m.recipient == OWNER)
            && mailboxes
                .transactions()
                .iter()
                .any(|t| t.rcpt_to == [OWNER] && t.message.contains("suspended (bouncing)"))
    })
    .await;
    let notices: Vec<_> = mailboxes
        .transactions()
        .into_iter()
        .filter(|t| t.message.contains("Auto-Submitted: auto-generated"))
        .collect();
    assert_eq!(notices.len(), 1, "{notices:#?}");
    let notice = &notices[0];
    assert_eq!(notice.mail_from, "team-bounces@lists.example.org");
    assert!(
        notice
            .message
            .contains(&format!("Subject: [team] delivery to {GONE} suspended"))
    );
    assert!(
        notice
            .message
            .contains(&format!("hushlist list remove {LIST} {GONE}"))
    );
    assert!(notice.message.contains("550 5.1.1 No such user here"));

    // The next post is not delivered to the suspended member at all.
    let third = post(&server, &owner, "third@example.org").await;
    assert_eq!(server.store().delivery(third, GONE).await.unwrap(), None);
    assert!(
        server
            .store()
            .delivery(third, &member_address(0))
            .await
            .unwrap()
            .is_some()
    );
}

/// [`swaks_ok`] with a 20 s timeout.
fn swaks_20s(port: u16, from: &str, to: &str, data: &std::path::Path) -> String {
    swaks_ok(port, from, to, data, &["--timeout", "20"])
}

fn golden_bounce(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../core/tests/golden/bounces")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_bounces_name_members_by_the_report_and_leave_requests_suspend_their_author() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _owner) = server_with_members(dir.path()).await;
    let port = serve_smtp(&server, None).await;
    let bounces = "team-bounces@lists.example.org";

    // A Postfix report to the shared bounce address names bob in Final-Recipient.
    let transcript = tokio::task::spawn_blocking(move || {
        swaks_20s(port, "<>", bounces, &golden_bounce("postfix-hard.eml"))
    })
    .await
    .unwrap();
    assert!(transcript.contains("<-  250 2.0.0 Taken"), "{transcript}");
    let record = server.store().bounce_record(LIST, GONE).await.unwrap();
    assert_eq!(record.map(|r| r.score), Some(1.0));

    // qmail's report names carol, who is not on the list; a vacation reply and a delay
    // warning are not failures. None of them changes any score.
    for sample in ["qmail.eml", "vacation.eml", "postfix-delayed.eml"] {
        tokio::task::spawn_blocking(move || swaks_20s(port, "<>", bounces, &golden_bounce(sample)))
            .await
            .unwrap();
    }
    assert_eq!(
        server
            .store()
            .bounce_record(LIST, GONE)
            .await
            .unwrap()
            .map(|r| r.score),
        Some(1.0)
    );
    assert_eq!(
        server
            .store()
            .bounce_record(LIST, "carol@gone.example")
            .await
            .unwrap(),
        None
    );
    // A probe address nobody was sent is taken and ignored: the report in it (naming bob)
    // neither suspends him nor counts as another bounce.
    let unknown_probe = "team-probe+NoSuchToken123@lists.example.org";
    let transcript = tokio::task::spawn_blocking(move || {
        swaks_20s(
            port,
            "<>",
            unknown_probe,
            &golden_bounce("postfix-hard.eml"),
        )
    })
    .await
    .unwrap();
    assert!(transcript.contains("<-  250 2.0.0 Taken"), "{transcript}");
    assert!(server.store().suspensions(LIST).await.unwrap().is_empty());
    assert_eq!(
        server
            .store()
            .bounce_record(LIST, GONE)
            .await
            .unwrap()
            .map(|r| r.score),
        Some(1.0),
        "a bounce to an unknown probe token is not counted"
    );

    // Mail to -leave from a member suspends them at once and tells the owner and them.
    let member = member_address(0);
    let leave = dir.path().join("leave.eml");
    std::fs::write(
        &leave,
        format!("From: <{member}>\r\nTo: team-leave@lists.example.org\r\nSubject: unsubscribe\r\n\r\n\r\n"),
    )
    .unwrap();
    let sender = member.clone();
    let request = leave.clone();
    tokio::task::spawn_blocking(move || {
        swaks_20s(port, &sender, "team-leave@lists.example.org", &request)
    })
    .await
    .unwrap();
    let suspended = server.store().suspensions(LIST).await.unwrap();
    assert_eq!(suspended.len(), 1);
    assert_eq!(suspended[0].address, member);
    let told: Vec<String> = server
        .store()
        .unsent_outbox()
        .await
        .unwrap()
        .into_iter()
        .map(|(m, _)| m.recipient)
        .collect();
    assert_eq!(told, [OWNER.to_owned(), member.clone()]);

    // A stranger's leave request is answered like any other (nothing to learn from it) and
    // changes nothing.
    let stranger = dir.path().join("stranger.eml");
    std::fs::write(
        &stranger,
        "From: <mallory@example.com>\r\nTo: team-leave@lists.example.org\r\nSubject: unsubscribe\r\n\r\n\r\n",
    )
    .unwrap();
    let transcript = tokio::task::spawn_blocking(move || {
        swaks_20s(
            port,
            "mallory@example.com",
            "team-leave@lists.example.org",
            &stranger,
        )
    })
    .await
    .unwrap();
    assert!(transcript.contains("<-  250 2.0.0 Taken"), "{transcript}");
    assert_eq!(server.store().suspensions(LIST).await.unwrap().len(), 1);
    assert_eq!(server.store().unsent_outbox().await.unwrap().len(), 2);

    // Addresses that only look like list mailboxes of another list are refused at RCPT.
    let out = std::process::Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--from",
            "<>",
            "--to",
            "other-bounces@lists.example.org",
            "--timeout",
            "20",
        ])
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(transcript.contains("<** 550 5.1.1"), "{transcript}");
}
