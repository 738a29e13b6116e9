//! Hostile SMTP clients over real TCP connections to the list server's listener: megabyte
//! lines, ten thousand recipients, NUL bytes and smuggled end-of-data markers, slow-drip
//! senders and connection floods. Each is answered precisely, none hangs the server, and the
//! next honest client is still served. docs/ROBUSTNESS.md lists these with their replies.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    LIST, OWNER, SmtpSink, add_member, create_list, free_port, list_server, open_store,
    sealed_post, under_key_id, wait_until, with_proof_of, without_proof,
};
use hushlist_core::roster::Role;
use hushlist_http::connections::ConnectionCaps;
use hushlist_listserver::service::ListServer;
use hushlist_listserver::smtp::{SmtpConfig, serve};
use hushlist_testkit::net::drip;
use hushlist_testkit::smtp::read_reply;
use tokio::io::{AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

/// A list server listening on a loopback port; stops when dropped.
struct Listening {
    port: u16,
    server: Arc<ListServer>,
    owner: hushlist_core::SecretIdentity,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn listen(config: SmtpConfig, max_connections: usize) -> Listening {
    let dir = tempfile::tempdir().unwrap();
    let server = list_server(dir.path()).await;
    let owner = create_list(&server, 1).await;
    listen_with(dir, server, owner, config, max_connections).await
}

/// Serves `server` (whose data lives in `dir`) over SMTP on a loopback port.
async fn listen_with(
    dir: tempfile::TempDir,
    server: Arc<ListServer>,
    owner: hushlist_core::SecretIdentity,
    config: SmtpConfig,
    max_connections: usize,
) -> Listening {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        Arc::new(config),
        server.clone(),
        // No cap per address: the flood test fills the global limit from one address
        // (the per-address cap is tested in connection_limits.rs).
        ConnectionCaps {
            total: max_connections,
            per_client: usize::MAX,
        },
        None,
        async {
            let _ = stopped.await;
        },
    ));
    Listening {
        port,
        server,
        owner,
        _stop: stop,
        _dir: dir,
    }
}

struct Conn {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: Option<OwnedWriteHalf>,
}

impl Conn {
    /// Connects and returns the connection with the server's first reply.
    async fn open(port: u16) -> (Self, String) {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (read, writer) = stream.into_split();
        let mut conn = Conn {
            reader: BufReader::new(read),
            writer: Some(writer),
        };
        let greeting = conn.reply().await;
        (conn, greeting)
    }

    /// One reply (possibly multi-line), or "" at end of stream.
    async fn reply(&mut self) -> String {
        read_reply(&mut self.reader, Duration::from_secs(10))
            .await
            .expect("a reply within 10 s")
    }

    /// Every reply until the server closes the connection.
    async fn replies_until_closed(&mut self) -> Vec<String> {
        let mut replies = Vec::new();
        loop {
            let reply = self.reply().await;
            if reply.is_empty() {
                return replies;
            }
            replies.push(reply);
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        let writer = self.writer.as_mut().expect("still writing");
        writer.write_all(bytes).await.unwrap();
    }

    /// Writes `bytes` while the caller reads the replies; the server may close the
    /// connection before it has read them all, which is its right.
    fn write_in_background(&mut self, bytes: Vec<u8>) -> tokio::task::JoinHandle<()> {
        let mut writer = self.writer.take().expect("still writing");
        tokio::spawn(async move {
            let _ = writer.write_all(&bytes).await;
            let _ = writer.shutdown().await;
        })
    }

    async fn send(&mut self, line: &str) -> String {
        self.write(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }
}

/// An honest client still gets its post queued.
async fn honest_post_is_queued(at: &Listening) {
    let (mut c, greeting) = Conn::open(at.port).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    assert!(c.send("EHLO honest.example.org").await.starts_with("250"));
    assert!(
        c.send(&format!("MAIL FROM:<{OWNER}>"))
            .await
            .starts_with("250")
    );
    assert!(
        c.send(&format!("RCPT TO:<{LIST}>"))
            .await
            .starts_with("250")
    );
    assert!(c.send("DATA").await.starts_with("354"));
    let mut post = sealed_post(OWNER, &at.owner);
    post.extend_from_slice(b".\r\n");
    c.write(&post).await;
    let reply = c.reply().await;
    assert!(reply.starts_with("250 2.0.0 Queued as"), "{reply}");
}

async fn stored_posts(server: &ListServer) -> usize {
    server.store().posts(LIST, 0, 100).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_command_line_is_refused_and_the_session_closed() {
    let at = listen(SmtpConfig::default(), 8).await;
    let (mut c, _) = Conn::open(at.port).await;
    c.send("EHLO big.example.org").await;
    let writing = c.write_in_background(format!("NOOP {}\r\n", "x".repeat(1 << 20)).into_bytes());
    let replies = c.replies_until_closed().await;
    assert!(
        replies[0].starts_with("500 5.5.6 Line too long"),
        "{replies:?}"
    );
    assert!(
        replies
            .last()
            .unwrap()
            .starts_with("421 4.7.0 Too many errors"),
        "{replies:?}"
    );
    writing.await.unwrap();
    honest_post_is_queued(&at).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_line_of_message_data_is_read_and_judged_as_content() {
    let at = listen(SmtpConfig::default(), 8).await;
    let (mut c, _) = Conn::open(at.port).await;
    c.send("EHLO big.example.org").await;
    c.send(&format!("MAIL FROM:<{OWNER}>")).await;
    c.send(&format!("RCPT TO:<{LIST}>")).await;
    assert!(c.send("DATA").await.starts_with("354"));
    let message = format!("Subject: one line\r\n\r\n{}\r\n.\r\n", "y".repeat(1 << 20));
    c.write(message.as_bytes()).await;
    let reply = c.reply().await;
    assert!(
        reply.starts_with("550 5.7.1 this list only accepts encrypted posts"),
        "{reply}"
    );
    assert!(
        c.send("NOOP").await.starts_with("250"),
        "the session goes on"
    );
    assert_eq!(stored_posts(&at.server).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_recipients_are_answered_in_order_and_bounded() {
    let at = listen(SmtpConfig::default(), 8).await;

    // Ten thousand RCPTs naming the list: one recipient, ten thousand 250s, one post.
    let (mut c, _) = Conn::open(at.port).await;
    c.send("EHLO many.example.org").await;
    let mut commands = format!("MAIL FROM:<{OWNER}>\r\n");
    for _ in 0..10_000 {
        commands.push_str(&format!("RCPT TO:<{LIST}>\r\n"));
    }
    commands.push_str("DATA\r\n");
    c.write(commands.as_bytes()).await;
    assert!(c.reply().await.starts_with("250 2.1.0"));
    for i in 0..10_000 {
        let reply = c.reply().await;
        assert!(reply.starts_with("250 2.1.5"), "RCPT {i}: {reply}");
    }
    assert!(c.reply().await.starts_with("354"));
    let mut post = sealed_post(OWNER, &at.owner);
    post.extend_from_slice(b".\r\n");
    c.write(&post).await;
    assert!(c.reply().await.starts_with("250 2.0.0 Queued as"));
    assert_eq!(stored_posts(&at.server).await, 1);

    // Ten thousand distinct unknown recipients: refused one by one until the error limit
    // closes the session; the rest are never looked up.
    let (mut c, _) = Conn::open(at.port).await;
    c.send("EHLO many.example.org").await;
    let mut commands = format!("MAIL FROM:<{OWNER}>\r\n");
    for i in 0..10_000 {
        commands.push_str(&format!("RCPT TO:<nobody{i}@lists.example.org>\r\n"));
    }
    let writing = c.write_in_background(commands.into_bytes());
    let replies = c.replies_until_closed().await;
    let limit = SmtpConfig::default().max_errors;
    assert_eq!(replies.len(), 1 + limit + 1, "{replies:?}");
    assert!(replies[0].starts_with("250 2.1.0"));
    assert!(
        replies[1..=limit]
            .iter()
            .all(|r| r.starts_with("550 5.1.1"))
    );
    assert!(replies[limit + 1].starts_with("421 4.7.0 Too many errors"));
    writing.await.unwrap();
    honest_post_is_queued(&at).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_bare_line_feeds_and_pipelined_garbage_get_precise_replies() {
    let at = listen(
        SmtpConfig {
            max_errors: 100,
            ..SmtpConfig::default()
        },
        8,
    )
    .await;
    let (mut c, _) = Conn::open(at.port).await;
    c.write(b"EHLO lf.example.org\n").await;
    assert!(
        c.reply().await.starts_with("250"),
        "a bare LF ends a command"
    );
    c.write(b"NO\0OP\r\n").await;
    assert!(c.reply().await.starts_with("500 5.5.2"));
    c.write(b"MAIL FROM:<a\0b@example.org>\r\n").await;
    let reply = c.reply().await;
    assert!(reply.starts_with("501 5.1.7"), "{reply}");
    c.write(b"\xff\xfe\r\nGARBAGE\r\n\x1b[2J\r\nNOOP\r\n").await;
    for _ in 0..3 {
        let reply = c.reply().await;
        assert!(reply.starts_with("500 5.5.2"), "{reply}");
    }
    assert!(
        c.reply().await.starts_with("250 2.0.0"),
        "NOOP after the garbage"
    );
    assert_eq!(c.send("QUIT").await, "221 2.0.0 Bye\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smuggled_end_of_data_marker_does_not_end_the_message() {
    let at = listen(SmtpConfig::default(), 8).await;
    let (mut c, _) = Conn::open(at.port).await;
    c.send("EHLO smuggle.example.org").await;
    c.send(&format!("MAIL FROM:<{OWNER}>")).await;
    c.send(&format!("RCPT TO:<{LIST}>")).await;
    assert!(c.send("DATA").await.starts_with("354"));
    // A bare-LF "dot" line and a CR-only one followed by a second transaction: a server that
    // ended DATA at either would run the smuggled MAIL/RCPT/DATA (SMTP smuggling).
    let mut message = sealed_post(OWNER, &at.owner);
    message.extend_from_slice(b"\n.\nMAIL FROM:<eve@example.org>\r\n");
    message.extend_from_slice(b"\r.\rRCPT TO:<team@lists.example.org>\r\nDATA\r\n");
    message.extend_from_slice(b"\r\n.\r\n");
    c.write(&message).await;
    // The whole thing is one message: the text after the PGP/MIME closing boundary is its
    // epilogue, which MIME ignores, so the post is taken, smuggled text and all.
    let reply = c.reply().await;
    assert!(reply.starts_with("250 2.0.0 Queued as"), "{reply}");
    assert!(
        c.send("NOOP").await.starts_with("250 2.0.0 OK"),
        "no replies to smuggled commands are queued"
    );
    let stored = at.server.store().posts(LIST, 0, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0].message);
    assert!(
        text.contains("\r.\rRCPT TO:<team@lists.example.org>"),
        "{text}"
    );
    assert!(text.contains("\n.\nMAIL FROM:<eve@example.org>"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_drip_senders_are_cut_off_at_the_deadline() {
    let at = listen(
        SmtpConfig {
            idle_timeout: Duration::from_secs(1),
            min_data_rate: 100,
            ..SmtpConfig::default()
        },
        8,
    )
    .await;

    // A command line one byte every 100 ms: never idle for the timeout, but the line is not
    // done within it.
    let (mut c, _) = Conn::open(at.port).await;
    let line = b"EHLO a-very-slow-client.example.org\r\n";
    let dripping = drip(c.writer.take().unwrap(), line, Duration::from_millis(100));
    let replies = c.replies_until_closed().await;
    assert_eq!(
        replies,
        ["421 4.4.2 Timeout waiting for a command, closing connection\r\n"]
    );
    let sent = dripping.await.unwrap();
    assert!(
        sent < line.len(),
        "cut off after {sent} of {} bytes",
        line.len()
    );

    // Message data at 50 bytes/s against a minimum of 100: cut off once the grace is used.
    let (mut c, _) = Conn::open(at.port).await;
    c.send("EHLO slow.example.org").await;
    c.send(&format!("MAIL FROM:<{OWNER}>")).await;
    c.send(&format!("RCPT TO:<{LIST}>")).await;
    assert!(c.send("DATA").await.starts_with("354"));
    let mut writer = c.writer.take().unwrap();
    let dripping = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b"0123456789").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let replies = c.replies_until_closed().await;
    assert_eq!(
        replies,
        ["421 4.4.2 Message data arriving too slowly, closing connection\r\n"]
    );
    dripping.await.unwrap();
    assert_eq!(stored_posts(&at.server).await, 0);

    // Commands that keep a session busy without doing anything count as errors past a limit.
    let (mut c, _) = Conn::open(at.port).await;
    let mut noops = String::new();
    for _ in 0..SmtpConfig::default().max_junk_commands + 20 {
        noops.push_str("NOOP\r\n");
    }
    let writing = c.write_in_background(noops.into_bytes());
    let replies = c.replies_until_closed().await;
    assert_eq!(
        replies.len(),
        SmtpConfig::default().max_junk_commands + SmtpConfig::default().max_errors + 1
    );
    assert!(
        replies
            .last()
            .unwrap()
            .starts_with("421 4.7.0 Too many errors")
    );
    writing.await.unwrap();
    honest_post_is_queued(&at).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_told_421_beyond_the_limit_and_service_resumes() {
    const SLOTS: usize = 8;
    let at = listen(SmtpConfig::default(), SLOTS).await;
    let mut held = Vec::new();
    let mut greetings = Vec::new();
    for _ in 0..200 {
        let (conn, greeting) = Conn::open(at.port).await;
        held.push(conn);
        greetings.push(greeting);
    }
    let served = greetings.iter().filter(|g| g.starts_with("220 ")).count();
    let turned_away = greetings
        .iter()
        .filter(|g| g.starts_with("421 4.3.2 Too many connections"))
        .count();
    assert_eq!((served, turned_away), (SLOTS, 200 - SLOTS), "{greetings:?}");
    drop(held);

    // Slots come back as the server sees the flood's connections close.
    let mut greeting = String::new();
    for _ in 0..100 {
        let (_conn, g) = Conn::open(at.port).await;
        greeting = g;
        if greeting.starts_with("220 ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(greeting.starts_with("220 "), "{greeting}");
    honest_post_is_queued(&at).await;
    assert_eq!(stored_posts(&at.server).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_post_is_acknowledged_with_its_first_id_and_queued_once() {
    let at = listen(SmtpConfig::default(), 8).await;
    let post = sealed_post(OWNER, &at.owner);
    let mut queue_ids = Vec::new();
    for _ in 0..3 {
        let (mut c, _) = Conn::open(at.port).await;
        c.send("EHLO replay.example.org").await;
        c.send(&format!("MAIL FROM:<{OWNER}>")).await;
        c.send(&format!("RCPT TO:<{LIST}>")).await;
        assert!(c.send("DATA").await.starts_with("354"));
        c.write(&[&post[..], b".\r\n"].concat()).await;
        let reply = c.reply().await;
        assert!(reply.starts_with("250 2.0.0 Queued as "), "{reply}");
        queue_ids.push(reply);
    }
    assert!(
        queue_ids.iter().all(|id| *id == queue_ids[0]),
        "{queue_ids:?}"
    );
    let stored = at.server.store().posts(LIST, 0, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    let pending = at.server.store().pending_deliveries(stored[0].id).await;
    assert_eq!(
        pending.unwrap().len(),
        2,
        "one copy each for the owner and the member"
    );
}

/// One post over a new connection; the reply to its end of data.
async fn post_over_smtp(port: u16, message: &[u8]) -> String {
    let (mut c, _) = Conn::open(port).await;
    c.send("EHLO poster.example.org").await;
    c.send(&format!("MAIL FROM:<{OWNER}>")).await;
    c.send(&format!("RCPT TO:<{LIST}>")).await;
    assert!(c.send("DATA").await.starts_with("354"));
    c.write(&[message, b".\r\n"].concat()).await;
    c.reply().await
}

/// Issue 18, hole 2: whoever learns a post's key id before the post arrives (the key server
/// sees the deposit first; anyone on a plain-text path sees it in transit) posts other bytes
/// under it first. Since hole 1 only someone who may post can do that, with a proof of their
/// own for that key id: here Mallory, a member. The real post must be refused naming the
/// conflict, not answered 250 while the archive keeps only the forgery; the forgery handed
/// over again is a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_post_under_a_stored_key_id_is_refused_and_the_first_stays() {
    let at = listen(SmtpConfig::default(), 8).await;
    let mallory_address = "mallory@example.net";
    let mallory = add_member(&at.server, &at.owner, mallory_address, Role::Member).await;
    let honest = hushlist_envelope::seal(
        rand::rngs::OsRng,
        format!("From: {OWNER}\r\nTo: {LIST}\r\nSubject: the real post\r\n\r\nMeet at ten.\r\n")
            .as_bytes(),
        &at.owner,
        "https://keys.example.org",
    )
    .unwrap();
    let garbage = sealed_post(mallory_address, &mallory);
    let forged = under_key_id(&garbage, honest.key_id.as_str(), &mallory);

    let first = post_over_smtp(at.port, &forged).await;
    assert!(first.starts_with("250 2.0.0 Queued as "), "{first}");
    let again = post_over_smtp(at.port, &forged).await;
    assert_eq!(again, first, "the same bytes again are a repeat");

    let real = post_over_smtp(at.port, &honest.message).await;
    assert!(real.starts_with("554 5.7.0 "), "{real}");
    assert!(
        real.contains(LIST) && real.contains(&honest.key_id.to_string()),
        "the refusal names the list and the key id: {real}"
    );

    let stored = at.server.store().posts(LIST, 0, 10).await.unwrap();
    assert_eq!(stored.len(), 1, "nothing was added or replaced");
    assert_eq!(stored[0].message, forged, "the first post stays");
    assert_eq!(
        at.server
            .store()
            .pending_deliveries(stored[0].id)
            .await
            .unwrap()
            .len(),
        3
    );
}

/// Issue 18, hole 1: the From of a post proves nothing, so a post counts as a member's only
/// with their proof of origin. Eve, on no roster, posts in the owner's name: with a proof
/// she signed herself, with none, and with the owner's real proof taken from another post.
/// Each is refused 550 5.7.1 before anything is kept; a From naming nobody on the roster gets
/// the same reply as one naming a member, with her own proof or the owner's, so the refusals
/// tell her nothing about the roster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_in_a_members_name_without_their_proof_are_refused_and_nothing_kept() {
    let at = listen(SmtpConfig::default(), 8).await;
    let eve =
        hushlist_core::SecretIdentity::generate(rand::rngs::OsRng, "eve@example.net").unwrap();

    let signed_by_eve = post_over_smtp(at.port, &sealed_post(OWNER, &eve)).await;
    assert!(signed_by_eve.starts_with("550 5.7.1 "), "{signed_by_eve}");
    assert!(
        signed_by_eve.contains("not signed by the roster key"),
        "{signed_by_eve}"
    );
    let as_a_stranger = post_over_smtp(at.port, &sealed_post("nobody@example.net", &eve)).await;
    assert_eq!(
        as_a_stranger, signed_by_eve,
        "a member's address and a stranger's are refused alike"
    );

    let unproven = post_over_smtp(at.port, &without_proof(&sealed_post(OWNER, &at.owner))).await;
    assert!(unproven.starts_with("550 5.7.1 "), "{unproven}");
    assert!(unproven.contains("no Hushlist-Post-Proof"), "{unproven}");

    let owners_proof = sealed_post(OWNER, &at.owner);
    let moved = with_proof_of(&sealed_post(OWNER, &eve), &owners_proof);
    let moved = post_over_smtp(at.port, &moved).await;
    assert!(moved.starts_with("550 5.7.1 "), "{moved}");
    assert!(
        moved.contains("other OpenPGP data or another key id"),
        "{moved}"
    );
    // The same stolen proof under a stranger's From: the same words, so a member's proof
    // taken from one post does not tell who else is on the roster.
    let moved_as_a_stranger =
        with_proof_of(&sealed_post("nobody@example.net", &eve), &owners_proof);
    assert_eq!(post_over_smtp(at.port, &moved_as_a_stranger).await, moved);

    assert_eq!(stored_posts(&at.server).await, 0, "nothing was kept");
    assert_eq!(
        at.server.store().unsent_outbox().await.unwrap().len(),
        0,
        "no notice went out about a post no member sent"
    );
    honest_post_is_queued(&at).await;
}

/// Issue 18, hole 6: refused posts must not turn into a flood of notices. Rita, a reader on a
/// list where members post, sends 20 posts the list refuses: her sessions end after their
/// third refusal like after a third bad command, and the owner gets one notice at once and
/// then one digest of the other 19 when the interval has passed, through the real relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_posts_end_the_session_at_its_error_limit_and_reach_owners_as_one_digest() {
    let dir = tempfile::tempdir().unwrap();
    let every = Duration::from_secs(5);
    let server =
        Arc::new(ListServer::new(open_store(dir.path()).await).with_refusal_digest_every(every));
    let owner = create_list(&server, 0).await;
    let rita_address = "rita@example.org";
    let rita = add_member(&server, &owner, rita_address, Role::Reader).await;
    let sink = SmtpSink::start(free_port(), &dir.path().join("sink"), &[]);
    let mut delivery = hushlist_listserver::delivery::DeliveryConfig::new(
        hushlist_listserver::delivery::RelayConfig {
            host: "127.0.0.1".into(),
            port: sink.port,
            helo_name: "lists.example.org".into(),
            timeout: Duration::from_secs(10),
            starttls: None,
        },
    );
    delivery.poll_interval = Duration::from_millis(100);
    delivery.dns_resolver = hushlist_listserver::delivery::DnsResolver::Off;
    let (_stop_workers, stopped) = tokio::sync::watch::channel(false);
    hushlist_listserver::delivery::Deliverer::new(&server, delivery).spawn(stopped);
    let config = SmtpConfig {
        max_errors: 3,
        ..SmtpConfig::default()
    };
    let at = listen_with(dir, server.clone(), owner, config, 8).await;
    let posts: Vec<Vec<u8>> = (0..20)
        .map(|n| {
            common::sealed_post_with_id(rita_address, &rita, &format!("refused-{n}@example.org"))
        })
        .collect();

    let mut sessions = 0;
    for chunk in posts.chunks(3) {
        sessions += 1;
        let (mut c, _) = Conn::open(at.port).await;
        c.send("EHLO rita.example.org").await;
        for post in chunk {
            c.send(&format!("MAIL FROM:<{rita_address}>")).await;
            c.send(&format!("RCPT TO:<{LIST}>")).await;
            assert!(c.send("DATA").await.starts_with("354"));
            c.write(&[&post[..], b".\r\n"].concat()).await;
            let reply = c.reply().await;
            assert!(
                reply.starts_with("550 5.7.1 rita@example.org may not post"),
                "{reply}"
            );
        }
        if chunk.len() == 3 {
            let closing = c.replies_until_closed().await;
            assert_eq!(
                closing,
                ["421 4.7.0 Too many errors, closing connection\r\n"],
                "the third refusal ends the session"
            );
        }
    }
    assert_eq!(sessions, 7);
    assert_eq!(stored_posts(&at.server).await, 0);

    let owner_copies = |count: usize| {
        let sink = &sink;
        async move {
            sink.transactions()
                .iter()
                .filter(|t| t.rcpt_to.iter().any(|r| r == OWNER))
                .count()
                >= count
        }
    };
    wait_until(Duration::from_secs(30), "the owner's first notice", || {
        owner_copies(1)
    })
    .await;
    wait_until(Duration::from_secs(60), "the owner's digest", || {
        owner_copies(2)
    })
    .await;
    let notices: Vec<String> = sink
        .transactions()
        .into_iter()
        .filter(|t| t.rcpt_to.iter().any(|r| r == OWNER))
        .map(|t| t.message)
        .collect();
    // smtp-sink's files come in no particular order.
    assert_eq!(notices.len(), 2, "{notices:?}");
    let first = notices
        .iter()
        .find(|n| n.contains("Subject: [team] a post from rita@example.org was refused"))
        .unwrap_or_else(|| panic!("a notice of the first refusal: {notices:?}"));
    assert!(first.contains("rita@example.org: "), "{first}");
    let digest = notices
        .iter()
        .find(|n| n.contains("Subject: [team] 19 posts were refused"))
        .unwrap_or_else(|| panic!("a digest of the other 19: {notices:?}"));
    assert!(digest.contains("rita@example.org (19 posts): "), "{digest}");
    assert!(
        at.server
            .store()
            .lists_due_a_refusal_digest(i64::MAX)
            .await
            .unwrap()
            .is_empty(),
        "no refusal is left waiting"
    );
}
