//! The SMTP receiver driven through an in-memory pipe, with the real acceptance path over a
//! SQLite store: every reply code and enhanced status, and posts stored before 250. STARTTLS
//! over a real loopback connection with a real TLS handshake.

mod common;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hushlist_core::roster::{Change, MemberEntry, Policy, Role, sign_genesis};
use hushlist_core::{Address, SecretIdentity};
use hushlist_envelope::seal;
use hushlist_listserver::service::ListServer;
use hushlist_listserver::smtp::{SmtpConfig, run_session, tls_acceptor};
use hushlist_peers::test_ca_and_leaf;
use hushlist_testkit::smtp::{data_lines, read_reply};
use rand::rngs::OsRng;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader, DuplexStream};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const LIST: &str = "team@lists.example.org";

struct People {
    olivia: SecretIdentity,
    rita: SecretIdentity,
    eve: SecretIdentity,
}

fn people() -> &'static People {
    static P: OnceLock<People> = OnceLock::new();
    P.get_or_init(|| People {
        olivia: SecretIdentity::generate(OsRng, "olivia@example.org").unwrap(),
        rita: SecretIdentity::generate(OsRng, "rita@example.org").unwrap(),
        eve: SecretIdentity::generate(OsRng, "eve@example.org").unwrap(),
    })
}

async fn list_server() -> (tempfile::TempDir, Arc<ListServer>) {
    let dir = tempfile::tempdir().unwrap();
    let store = hushlist_store::ListStore::open(&format!(
        "sqlite://{}",
        dir.path().join("lists.db").display()
    ))
    .await
    .unwrap();
    let server = Arc::new(ListServer::new(store));
    let p = people();
    let list = Address::parse(LIST).unwrap();
    let genesis = sign_genesis(
        OsRng,
        &p.olivia,
        Address::parse("olivia@example.org").unwrap(),
        list.clone(),
        Policy::default(),
        0,
    )
    .unwrap();
    let roster = server.rosters().create(genesis).await.unwrap();
    let member = MemberEntry {
        address: Address::parse("rita@example.org").unwrap(),
        cert: p.rita.cert().to_armored(),
        role: Role::Reader,
    };
    let op = roster
        .sign_next(OsRng, &p.olivia, 1, Change::Add { member })
        .unwrap();
    server.rosters().append(&list, op).await.unwrap();
    (dir, server)
}

/// The client end of an SMTP session: on the other end of a pipe, or over TCP or TLS.
struct Client<S> {
    io: BufReader<S>,
}

impl Client<DuplexStream> {
    async fn start(
        server: Arc<ListServer>,
        config: SmtpConfig,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (client, server_end) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(async move {
            run_session(server_end, &config, server.as_ref())
                .await
                .unwrap();
        });
        let mut client = Client {
            io: BufReader::new(client),
        };
        assert!(client.reply().await.starts_with("220 "));
        (client, task)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Reads one (possibly multi-line) reply.
    async fn reply(&mut self) -> String {
        read_reply(&mut self.io, Duration::from_secs(10))
            .await
            .expect("reply in time")
    }

    async fn send(&mut self, line: &str) -> String {
        self.io
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }

    async fn data(&mut self, message: &[u8]) -> String {
        assert!(self.send("DATA").await.starts_with("354 "));
        self.io
            .get_mut()
            .write_all(&data_lines(message))
            .await
            .unwrap();
        self.reply().await
    }
}

fn sealed_post(from: &str, who: &SecretIdentity) -> Vec<u8> {
    let text = format!("From: {from}\r\nTo: {LIST}\r\nSubject: s\r\n\r\n.leading dot\r\nbody\r\n");
    seal(OsRng, text.as_bytes(), who, "https://keys.example.org")
        .unwrap()
        .message
}

#[tokio::test]
async fn an_encrypted_post_from_an_allowed_poster_is_stored_before_250() {
    let (_dir, server) = list_server().await;
    let (mut c, _task) = Client::start(server.clone(), SmtpConfig::default()).await;
    let ehlo = c.send("EHLO client.example.org").await;
    for capability in [
        "PIPELINING",
        "SIZE 26214400",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(ehlo.contains(capability), "{ehlo}");
    }
    assert!(
        c.send("MAIL FROM:<olivia@example.org> SIZE=5000")
            .await
            .starts_with("250 2.1.0")
    );
    assert!(
        c.send(&format!("RCPT TO:<{LIST}>"))
            .await
            .starts_with("250 2.1.5")
    );
    let post = sealed_post("olivia@example.org", &people().olivia);
    let reply = c.data(&post).await;
    assert!(reply.starts_with("250 2.0.0 Queued as "), "{reply}");
    let stored = server.store().posts(LIST, 0, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].message, post,
        "the ciphertext is stored byte for byte"
    );
    assert_eq!(stored[0].mail_from.as_deref(), Some("olivia@example.org"));
    let deliveries = server
        .store()
        .pending_deliveries(stored[0].id)
        .await
        .unwrap();
    assert_eq!(
        deliveries,
        ["olivia@example.org", "rita@example.org"],
        "one queued delivery per member"
    );
    assert!(c.send("QUIT").await.starts_with("221 2.0.0"));
}

#[tokio::test]
async fn refusals_at_end_of_data_carry_code_and_enhanced_status() {
    let (_dir, server) = list_server().await;
    let (mut c, _task) = Client::start(server.clone(), SmtpConfig::default()).await;
    c.send("EHLO client.example.org").await;
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "olivia@example.org",
            format!("From: olivia@example.org\r\nTo: {LIST}\r\nSubject: plain\r\n\r\nhello\r\n")
                .into_bytes(),
            "550 5.7.1 this list only accepts encrypted posts",
        ),
        (
            "eve@example.org",
            sealed_post("eve@example.org", &people().eve),
            "550 5.7.1 the post's Hushlist-Post-Proof is not signed by the roster key",
        ),
        (
            "rita@example.org",
            sealed_post("rita@example.org", &people().rita),
            "550 5.7.1 rita@example.org may not post",
        ),
    ];
    for (from, message, expected) in cases {
        assert!(
            c.send(&format!("MAIL FROM:<{from}>"))
                .await
                .starts_with("250 ")
        );
        assert!(
            c.send(&format!("RCPT TO:<{LIST}>"))
                .await
                .starts_with("250 ")
        );
        let reply = c.data(&message).await;
        assert!(reply.starts_with(expected), "{from}: {reply}");
    }
    let mut truncated = sealed_post("olivia@example.org", &people().olivia);
    truncated.truncate(truncated.len() - 300);
    truncated.extend_from_slice(b"\r\n");
    c.send("MAIL FROM:<olivia@example.org>").await;
    c.send(&format!("RCPT TO:<{LIST}>")).await;
    let reply = c.data(&truncated).await;
    assert!(reply.starts_with("554 5.6.0"), "{reply}");
    assert!(
        server.store().posts(LIST, 0, 10).await.unwrap().is_empty(),
        "nothing refused is stored"
    );
}

#[tokio::test]
async fn command_errors_get_precise_replies() {
    let (_dir, server) = list_server().await;
    let config = SmtpConfig {
        max_recipients: 1,
        max_errors: 100,
        ..SmtpConfig::default()
    };
    let (mut c, _task) = Client::start(server, config).await;
    assert!(
        c.send("MAIL FROM:<a@example.org>")
            .await
            .starts_with("503 5.5.1"),
        "EHLO first"
    );
    c.send("HELO client.example.org").await;
    assert!(
        c.send(&format!("RCPT TO:<{LIST}>"))
            .await
            .starts_with("503 5.5.1")
    );
    assert!(c.send("DATA").await.starts_with("503 5.5.1"));
    assert!(c.send("VRFY olivia").await.starts_with("502 5.5.1"));
    assert!(c.send("EXPN team").await.starts_with("502 5.5.1"));
    assert!(c.send("STARTTLS").await.starts_with("502 5.5.1"));
    assert!(c.send("FROB").await.starts_with("500 5.5.2"));
    assert!(
        c.send("MAIL FROM:<a@example.org> SIZE=999999999")
            .await
            .starts_with("552 5.3.4")
    );
    assert!(
        c.send("MAIL FROM:<not an address>")
            .await
            .starts_with("501 ")
    );
    assert!(
        c.send("MAIL FROM:<>").await.starts_with("250 2.1.0"),
        "the null sender is allowed"
    );
    assert!(
        c.send("MAIL FROM:<b@example.org>")
            .await
            .starts_with("503 5.5.1"),
        "nested MAIL"
    );
    assert!(
        c.send("RCPT TO:<nolist@lists.example.org>")
            .await
            .starts_with("550 5.1.1")
    );
    assert!(
        c.send("DATA").await.starts_with("554 5.5.1"),
        "no valid recipients"
    );
    assert!(
        c.send(&format!("RCPT TO:<{LIST}>"))
            .await
            .starts_with("250 2.1.5")
    );
    assert!(
        c.send("RCPT TO:<other@lists.example.org>")
            .await
            .starts_with("452 4.5.3")
    );
    assert!(c.send("RSET").await.starts_with("250 2.0.0"));
    assert!(c.send("NOOP").await.starts_with("250 2.0.0"));
    let long = format!("NOOP {}", "x".repeat(10_000));
    assert!(c.send(&long).await.starts_with("500 5.5.6"));
}

#[tokio::test]
async fn oversize_messages_are_refused_after_data_without_being_kept() {
    let (_dir, server) = list_server().await;
    let (mut c, _task) = Client::start(
        server.clone(),
        SmtpConfig {
            max_message_bytes: 4096,
            ..SmtpConfig::default()
        },
    )
    .await;
    c.send("EHLO client.example.org").await;
    // A real post the list would take, but over the limit: refused and not stored.
    let text = format!(
        "From: olivia@example.org\r\nTo: {LIST}\r\nSubject: big\r\n\r\n{}\r\n",
        "y".repeat(100_000)
    );
    let big = seal(
        OsRng,
        text.as_bytes(),
        &people().olivia,
        "https://keys.example.org",
    )
    .unwrap()
    .message;
    c.send("MAIL FROM:<olivia@example.org>").await;
    c.send(&format!("RCPT TO:<{LIST}>")).await;
    let reply = c.data(&big).await;
    assert!(reply.starts_with("552 5.3.4"), "{reply}");
    assert!(
        server.store().posts(LIST, 0, 10).await.unwrap().is_empty(),
        "nothing of the oversize post is kept"
    );
    // The session goes on, and a post under the limit is taken and stored (so the store
    // check above would have seen the big one).
    let small = sealed_post("olivia@example.org", &people().olivia);
    assert!(small.len() < 4096, "{} bytes", small.len());
    c.send("MAIL FROM:<olivia@example.org>").await;
    c.send(&format!("RCPT TO:<{LIST}>")).await;
    let reply = c.data(&small).await;
    assert!(reply.starts_with("250 2.0.0 Queued as"), "{reply}");
    assert_eq!(server.store().posts(LIST, 0, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn idle_and_error_prone_sessions_are_closed() {
    let (_dir, server) = list_server().await;
    let config = SmtpConfig {
        idle_timeout: Duration::from_millis(200),
        ..SmtpConfig::default()
    };
    let (mut c, task) = Client::start(server.clone(), config).await;
    assert!(c.reply().await.starts_with("421 4.4.2"));
    task.await.unwrap();

    let (mut c, task) = Client::start(
        server,
        SmtpConfig {
            max_errors: 3,
            ..SmtpConfig::default()
        },
    )
    .await;
    c.send("FROB").await;
    c.send("FROB").await;
    let last = c.send("FROB").await;
    assert!(last.starts_with("500 5.5.2"), "{last}");
    assert!(c.reply().await.starts_with("421 4.7.0"));
    task.await.unwrap();
}

#[tokio::test]
async fn pipelined_commands_get_replies_in_order() {
    let (_dir, server) = list_server().await;
    let (mut c, _task) = Client::start(server, SmtpConfig::default()).await;
    c.send("EHLO client.example.org").await;
    c.io.get_mut().write_all(format!("MAIL FROM:<olivia@example.org>\r\nRCPT TO:<{LIST}>\r\nRCPT TO:<x@lists.example.org>\r\nRSET\r\n").as_bytes()).await.unwrap();
    assert!(c.reply().await.starts_with("250 2.1.0"));
    assert!(c.reply().await.starts_with("250 2.1.5"));
    assert!(c.reply().await.starts_with("550 5.1.1"));
    assert!(c.reply().await.starts_with("250 2.0.0"));
}

/// A TLS client trusting only the CA certificate in the PEM file `ca`.
fn tls_client_trusting(ca: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_pipelined_behind_starttls_never_reach_the_tls_session() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca_and_leaf(dir.path());
    let server = common::list_server(dir.path()).await;
    let owner = common::create_list(&server, 0).await;
    let port = common::serve_smtp(&server, Some(tls_acceptor(&cert, &key).unwrap())).await;

    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut clear = Client {
        io: BufReader::new(tcp),
    };
    assert!(clear.reply().await.starts_with("220 "));
    let ehlo = clear.send("EHLO client.example.org").await;
    assert!(ehlo.contains("250-STARTTLS"), "{ehlo}");
    // A man in the middle appends a transaction of its own to the client's STARTTLS, in
    // clear and in the same packet (CVE-2011-0411): it must not run inside the TLS session.
    clear
        .io
        .get_mut()
        .write_all(
            format!("STARTTLS\r\nMAIL FROM:<eve@example.org>\r\nRCPT TO:<{LIST}>\r\n").as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(clear.reply().await, "220 2.0.0 Ready to start TLS\r\n");
    assert!(
        clear.io.buffer().is_empty(),
        "nothing more is answered in clear: {:?}",
        String::from_utf8_lossy(clear.io.buffer())
    );

    let tls = tls_client_trusting(&ca)
        .connect(
            ServerName::try_from("localhost").unwrap(),
            clear.io.into_inner(),
        )
        .await
        .expect("the TLS handshake completes");
    let mut c = Client {
        io: BufReader::new(tls),
    };
    // The first reply inside TLS answers our fresh EHLO, not the smuggled MAIL or RCPT, and
    // the smuggled MAIL opened no transaction.
    let ehlo = c.send("EHLO client.example.org").await;
    assert!(ehlo.starts_with("250-"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "not offered twice: {ehlo}");
    let rcpt = c.send(&format!("RCPT TO:<{LIST}>")).await;
    assert!(rcpt.starts_with("503 5.5.1"), "{rcpt}");

    // A post then works over TLS.
    let mail = c.send(&format!("MAIL FROM:<{}>", common::OWNER)).await;
    assert!(mail.starts_with("250 2.1.0"), "{mail}");
    let rcpt = c.send(&format!("RCPT TO:<{LIST}>")).await;
    assert!(rcpt.starts_with("250 2.1.5"), "{rcpt}");
    let taken = c.data(&common::sealed_post(common::OWNER, &owner)).await;
    assert!(taken.starts_with("250 2.0.0 Queued as "), "{taken}");
    assert!(c.send("QUIT").await.starts_with("221 2.0.0"));
    let posts = server.store().posts(LIST, 0, 10).await.unwrap();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].mail_from.as_deref(), Some(common::OWNER));
}
