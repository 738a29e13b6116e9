//! Fan-out to a real relay: Postfix's smtp-sink on loopback takes the copies; the queue in
//! a real SQLite store records what became of each recipient.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use hushlist_core::roster::{FromRewrite, Role};
use hushlist_core::{Address, SecretIdentity};
use hushlist_listserver::delivery::{Deliverer, DeliveryConfig, RelayConfig, RelayTls};
use hushlist_listserver::service::ListServer;
use hushlist_listserver::smtp::PostSink as _;
use hushlist_peers::test_ca_and_leaf;
use hushlist_store::DeliveryState;
use mail_parser::MessageParser;
use rand::rngs::OsRng;
use tokio::sync::watch;

fn config(port: u16) -> DeliveryConfig {
    let mut config = DeliveryConfig::new(RelayConfig {
        host: "127.0.0.1".into(),
        port,
        helo_name: "lists.example.org".into(),
        timeout: Duration::from_secs(10),
        starttls: None,
    });
    config.dns_resolver = hushlist_listserver::delivery::DnsResolver::Off;
    config.workers = 2;
    config.retry_first = Duration::from_secs(1);
    config.retry_max = Duration::from_secs(1);
    config.poll_interval = Duration::from_millis(100);
    config.public_url = Some("https://lists.example.org".into());
    config
}

/// Posts once as the owner; returns the post id.
async fn post(server: &ListServer, owner: &hushlist_core::SecretIdentity) -> i64 {
    let id = server
        .accept(
            Some(&Address::parse(OWNER).unwrap()),
            &[Address::parse(LIST).unwrap()],
            sealed_post(OWNER, owner),
        )
        .await
        .unwrap();
    queue_id(&id)
}

fn start(server: &Arc<ListServer>, config: DeliveryConfig) -> watch::Sender<bool> {
    let (stop, stopped) = watch::channel(false);
    let deliverer = Deliverer::new(server, config);
    deliverer.spawn(stopped);
    stop
}

async fn wait_for_empty_queue(server: &Arc<ListServer>) {
    wait_until(Duration::from_secs(60), "the queue to drain", || async {
        server.store().delivery_counts().await.unwrap().pending == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_member_gets_one_copy_with_list_headers_in_shared_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let server = list_server(dir.path()).await;
    let owner = create_list(&server, 20).await;
    // The list's own From, whatever example.org's DMARC policy (kept Froms: dmarc.rs).
    set_from_rewrite(&server, &owner, FromRewrite::Always).await;
    let sink = SmtpSink::start(free_port(), &dir.path().join("sink"), &[]);
    let mut config = config(sink.port);
    config.max_rcpts_per_transaction = 8;
    let _stop = start(&server, config);
    post(&server, &owner).await;
    wait_for_empty_queue(&server).await;

    let copies = sink.copies_per_recipient();
    let mut expected: Vec<String> = (0..20).map(member_address).collect();
    expected.push(OWNER.into());
    expected.sort();
    assert_eq!(copies.keys().cloned().collect::<Vec<_>>(), expected);
    assert!(copies.values().all(|&n| n == 1), "{copies:?}");
    let transactions = sink.transactions();
    // 21 recipients at most 8 per transaction.
    assert_eq!(transactions.len(), 3);
    for t in &transactions {
        assert_eq!(t.mail_from, "team-bounces@lists.example.org");
        let message = MessageParser::new().parse(t.message.as_bytes()).unwrap();
        let from = message.from().unwrap().first().unwrap();
        assert_eq!(from.address(), Some(LIST));
        // The name is the roster's (the owner's certificate names only the address), not
        // the "Olivia Owner" of the post's own From.
        assert_eq!(from.name(), Some("olivia@example.org via team"));
        assert_eq!(
            message.reply_to().unwrap().first().unwrap().address(),
            Some(OWNER)
        );
        let header = |name: &'static str| {
            message
                .header_raw(name)
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        assert_eq!(header("List-Id"), "<team.lists.example.org>");
        assert_eq!(header("List-Post"), "<mailto:team@lists.example.org>");
        assert_eq!(
            header("List-Archive"),
            "<https://lists.example.org/v1/lists/team@lists.example.org/archive>"
        );
        assert!(header("List-Unsubscribe").contains("mailto:team-leave@lists.example.org"));
        assert_eq!(header("Precedence"), "list");
        assert!(hushlist_core::outer::EncryptedPost::parse(t.message.as_bytes()).is_ok());
    }
    let counts = server.store().delivery_counts().await.unwrap();
    assert_eq!((counts.delivered, counts.failed), (21, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_verp_each_recipient_gets_a_transaction_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = list_server(dir.path()).await;
    let owner = create_list(&server, 3).await;
    let sink = SmtpSink::start(free_port(), &dir.path().join("sink"), &[]);
    let mut config = config(sink.port);
    config.verp = true;
    let _stop = start(&server, config);
    post(&server, &owner).await;
    wait_for_empty_queue(&server).await;

    let transactions = sink.transactions();
    assert_eq!(transactions.len(), 4);
    let key = server.unsubscribe_key().unwrap();
    for t in &transactions {
        let [rcpt] = t.rcpt_to.as_slice() else {
            panic!("one recipient per transaction, got {:?}", t.rcpt_to);
        };
        let (local, domain) = rcpt.split_once('@').unwrap();
        assert_eq!(
            t.mail_from,
            format!("team-bounces+{local}={domain}@lists.example.org")
        );
        // Each copy carries the recipient's own RFC 8058 one-click link.
        let message = MessageParser::new().parse(t.message.as_bytes()).unwrap();
        assert_eq!(
            message.header_raw("List-Unsubscribe-Post").map(str::trim),
            Some("List-Unsubscribe=One-Click")
        );
        let unsubscribe = message.header_raw("List-Unsubscribe").unwrap();
        let link = unsubscribe
            .split(['<', '>'])
            .find(|part| part.starts_with("https://"))
            .unwrap();
        let token = link
            .strip_prefix("https://lists.example.org/v1/unsubscribe/")
            .unwrap();
        let (list, member) = key.verify(token).unwrap();
        assert_eq!((list.as_str(), member.as_str()), (LIST, rcpt.as_str()));
    }
}

/// Issue 25, hole 5: a member's post whose outer headers pose as someone else (From name
/// "Alice Example (CFO)", Subject "URGENT - new bank details", Reply-To and Sender elsewhere,
/// X-Priority, unchecked trace and DKIM results) reaches nobody with them, in shared and in
/// one-recipient (VERP) copies: the list writes From, Reply-To and Subject from the roster.
/// (Push copies: `push.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posters_outer_headers_are_replaced_by_what_the_list_writes() {
    const MALLORY: &str = "mallory@example.net";
    for verp in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let server = list_server(dir.path()).await;
        let owner = create_list(&server, 2).await;
        let mallory =
            SecretIdentity::generate(OsRng, &format!("Mallory Member <{MALLORY}>")).unwrap();
        add_member_with_key(&server, &owner, MALLORY, &mallory, Role::Member).await;
        // The list's own From, whatever example.net's DMARC policy (kept Froms: dmarc.rs).
        set_from_rewrite(&server, &owner, FromRewrite::Always).await;
        let sink = SmtpSink::start(free_port(), &dir.path().join("sink"), &[]);
        let mut config = config(sink.port);
        config.verp = verp;
        let _stop = start(&server, config);
        let post = with_planted_outer_headers(&sealed_post(MALLORY, &mallory), MALLORY);
        server
            .accept(
                Some(&Address::parse(MALLORY).unwrap()),
                &[Address::parse(LIST).unwrap()],
                post,
            )
            .await
            .unwrap();
        wait_for_empty_queue(&server).await;

        let copies = sink.copies_per_recipient();
        assert_eq!(copies.len(), 4, "{copies:?}");
        for t in &sink.transactions() {
            assert_list_wrote_outer_headers(&t.message, "Mallory Member", MALLORY);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_is_down_or_answers_4xx_is_retried_until_it_takes_the_post() {
    let dir = tempfile::tempdir().unwrap();
    let server = list_server(dir.path()).await;
    let owner = create_list(&server, 2).await;
    let port = free_port();
    let _stop = start(&server, config(port));
    let id = post(&server, &owner).await;
    let first = member_address(0);

    // Nothing listens yet: the attempt is deferred, not lost.
    wait_until(
        Duration::from_secs(20),
        "a deferral while the relay is down",
        || async {
            let row = server.store().delivery(id, &first).await.unwrap().unwrap();
            row.attempts >= 1
                && row
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("unreachable"))
        },
    )
    .await;

    // Then the relay answers RCPT with 450 4.3.0.
    let soft = SmtpSink::start(port, &dir.path().join("soft"), &["-r", "RCPT"]);
    wait_until(Duration::from_secs(20), "a 4xx deferral", || async {
        let row = server.store().delivery(id, &first).await.unwrap().unwrap();
        row.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("450 4.3.0"))
    })
    .await;
    assert!(soft.transactions().is_empty());
    let row = server.store().delivery(id, &first).await.unwrap().unwrap();
    assert_eq!(row.state, DeliveryState::Pending);
    soft.stop();

    // Finally it takes the post: every recipient exactly once.
    let sink = SmtpSink::start(port, &dir.path().join("sink"), &[]);
    wait_for_empty_queue(&server).await;
    let copies = sink.copies_per_recipient();
    assert_eq!(copies.len(), 3);
    assert!(copies.values().all(|&n| n == 1), "{copies:?}");
    let row = server.store().delivery(id, &first).await.unwrap().unwrap();
    assert_eq!(row.state, DeliveryState::Delivered);
    assert!(row.attempts >= 3, "{row:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_refusal_is_recorded_per_recipient_and_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let server = list_server(dir.path()).await;
    let owner = create_list(&server, 2).await;
    let sink = SmtpSink::start(
        free_port(),
        &dir.path().join("sink"),
        &["-f", "RCPT", "-B", "550 5.1.1 Recipient address rejected"],
    );
    let _stop = start(&server, config(sink.port));
    let id = post(&server, &owner).await;
    wait_for_empty_queue(&server).await;

    let row = server
        .store()
        .delivery(id, &member_address(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, DeliveryState::Failed);
    assert_eq!(row.attempts, 1);
    assert_eq!(
        row.last_error.as_deref(),
        Some("550 5.1.1 Recipient address rejected")
    );
    assert_eq!(server.store().delivery_counts().await.unwrap().failed, 3);
    assert!(sink.transactions().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_starttls_required_copies_go_only_over_tls_to_a_relay_with_a_trusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server = list_server(dir.path()).await;
    let owner = create_list(&server, 2).await;
    let (ca, cert, key) = test_ca_and_leaf(dir.path());
    let tls = RelayTls::from_ca_file(&ca).unwrap();

    // A relay that does not offer STARTTLS gets nothing; the deliveries wait.
    let plain = SmtpSink::start(free_port(), &dir.path().join("plain"), &[]);
    let mut config = config(plain.port);
    config.relay.starttls = Some(tls.clone());
    let stop = start(&server, config);
    let id = post(&server, &owner).await;
    let first = member_address(0);
    wait_until(
        Duration::from_secs(20),
        "a deferral for lack of STARTTLS",
        || async {
            let row = server.store().delivery(id, &first).await.unwrap().unwrap();
            row.last_error
                .as_deref()
                .is_some_and(|e| e.contains("STARTTLS"))
        },
    )
    .await;
    assert!(plain.transactions().is_empty());
    stop.send(true).unwrap();

    // aiosmtpd requiring STARTTLS, with a certificate from the CA we trust, takes them.
    let relay = StarttlsRelay::start(dir.path(), &cert, &key).await;
    let mut config = self::config(relay.port);
    config.relay.starttls = Some(tls);
    config.retry_first = Duration::from_secs(1);
    let _stop = start(&server, config);
    // The deferred rows are due again within the retry delay.
    wait_for_empty_queue(&server).await;
    let received = relay.received();
    // aiosmtpd's debugging handler prints each message it took, without the envelope: one
    // transaction carried all three recipients.
    assert_eq!(received.matches("MESSAGE FOLLOWS").count(), 1, "{received}");
    assert!(
        received.contains("List-Id: <team.lists.example.org>"),
        "{received}"
    );
    assert!(
        received.contains("-----BEGIN PGP MESSAGE-----"),
        "{received}"
    );
    let counts = server.store().delivery_counts().await.unwrap();
    assert_eq!((counts.delivered, counts.failed), (3, 0));
}
