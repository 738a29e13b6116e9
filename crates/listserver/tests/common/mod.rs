//! Shared set-up for the list server's tests: a list over a real SQLite store, sealed posts,
//! and Postfix's `smtp-sink` as the relay that copies are delivered to.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hushlist_core::listmail::UnsubscribeKey;
use hushlist_core::outer::EncryptedPost;
use hushlist_core::post_proof::{POST_PROOF_HEADER, PostProof};
use hushlist_core::roster::{
    Change, FromRewrite, MemberEntry, Policy, Role, SignedOp, sign_genesis,
};
use hushlist_core::{Address, SecretIdentity};
use hushlist_envelope::seal;
use hushlist_keyserver::master::MasterKey;
use hushlist_keyserver::{KeyServer, ServiceConfig};
use hushlist_listserver::service::ListServer;
use hushlist_listserver::smtp::{DEFAULT_CONNECTIONS, SmtpConfig, serve};
use hushlist_store::ListStore;
use rand::rngs::OsRng;
use tokio_rustls::TlsAcceptor;

pub use hushlist_testkit::wait_until;

pub const LIST: &str = "team@lists.example.org";
pub const OWNER: &str = "olivia@example.org";

pub fn member_address(i: usize) -> String {
    format!("member{i:05}@example.net")
}

pub async fn open_store(dir: &Path) -> ListStore {
    ListStore::open(&format!("sqlite://{}", dir.join("lists.db").display()))
        .await
        .unwrap()
}

/// Creates the list in `server`'s store with `members` readers besides the owner, each with
/// a key of their own. Returns the owner, who may post.
pub async fn create_list(server: &ListServer, members: usize) -> SecretIdentity {
    let members: Vec<(String, SecretIdentity)> = (0..members)
        .map(|i| {
            let address = member_address(i);
            let key = SecretIdentity::generate(OsRng, &address).unwrap();
            (address, key)
        })
        .collect();
    create_list_with(server, &members).await
}

/// Creates the list with these readers besides the owner; returns the owner.
pub async fn create_list_with(
    server: &ListServer,
    members: &[(String, SecretIdentity)],
) -> SecretIdentity {
    let owner = SecretIdentity::generate(OsRng, OWNER).unwrap();
    let list = Address::parse(LIST).unwrap();
    let genesis = sign_genesis(
        OsRng,
        &owner,
        Address::parse(OWNER).unwrap(),
        list.clone(),
        Policy::default(),
        0,
    )
    .unwrap();
    // A copy of our own to sign with, so the server's cached roster is not shared and each
    // append works on it in place.
    let mut roster = Arc::unwrap_or_clone(server.rosters().create(genesis).await.unwrap());
    for (address, key) in members {
        let op = roster
            .sign_next(OsRng, &owner, 1, adding(address, key, Role::Reader))
            .unwrap();
        roster.apply(op.clone()).unwrap();
        server.rosters().append(&list, op).await.unwrap();
    }
    owner
}

/// Creates the list with `members` readers in the store of a list server's data directory,
/// before the server runs; returns its owner.
pub async fn create_list_in(data_dir: &Path, members: usize) -> SecretIdentity {
    std::fs::create_dir_all(data_dir).unwrap();
    let store = ListStore::open(&format!(
        "sqlite://{}",
        data_dir.join("listserver.db").display()
    ))
    .await
    .unwrap();
    create_list(&ListServer::new(store), members).await
}

pub async fn list_server(dir: &Path) -> Arc<ListServer> {
    Arc::new(
        ListServer::new(open_store(dir).await)
            .with_unsubscribe_key(UnsubscribeKey::new(b"unsubscribe secret for tests")),
    )
}

pub fn sealed_post(from: &str, who: &SecretIdentity) -> Vec<u8> {
    sealed_post_with_id(from, who, "post@example.org")
}

pub fn sealed_post_with_id(from: &str, who: &SecretIdentity, message_id: &str) -> Vec<u8> {
    let text = format!(
        "From: Olivia Owner <{from}>\r\nTo: {LIST}\r\nSubject: news\r\nMessage-ID: <{message_id}>\r\n\r\n.leading dot\r\nbody\r\n"
    );
    seal(OsRng, text.as_bytes(), who, "https://keys.example.org")
        .unwrap()
        .message
}

/// The roster change adding `key`'s holder at `address` as `role`.
pub fn adding(address: &str, key: &SecretIdentity, role: Role) -> Change {
    Change::Add {
        member: MemberEntry {
            address: Address::parse(address).unwrap(),
            cert: key.cert().to_armored(),
            role,
        },
    }
}

/// Adds `address` to the list with `role` (signed by `owner`); returns their key.
pub async fn add_member(
    server: &ListServer,
    owner: &SecretIdentity,
    address: &str,
    role: Role,
) -> SecretIdentity {
    let key = SecretIdentity::generate(OsRng, address).unwrap();
    add_member_with_key(server, owner, address, &key, role).await;
    key
}

/// Adds `address` with `key` to the list with `role` (signed by `owner`).
pub async fn add_member_with_key(
    server: &ListServer,
    owner: &SecretIdentity,
    address: &str,
    key: &SecretIdentity,
    role: Role,
) {
    let list = Address::parse(LIST).unwrap();
    let roster = server.rosters().get(&list).await.unwrap();
    let op = roster
        .sign_next(OsRng, owner, 1, adding(address, key, role))
        .unwrap();
    server.rosters().append(&list, op).await.unwrap();
}

/// Sets the list's rule for whose address a copy's From carries (signed by `owner`).
pub async fn set_from_rewrite(server: &ListServer, owner: &SecretIdentity, rule: FromRewrite) {
    let list = Address::parse(LIST).unwrap();
    let roster = server.rosters().get(&list).await.unwrap();
    let policy = Policy {
        from_rewrite: rule,
        ..roster.policy().clone()
    };
    let op = roster
        .sign_next(OsRng, owner, 1, Change::SetPolicy { policy })
        .unwrap();
    server.rosters().append(&list, op).await.unwrap();
}

/// Where the proof-of-origin header of a sealed post lies (with its folded lines).
fn proof_header_range(post: &str) -> std::ops::Range<usize> {
    let start = post
        .find(&format!("{POST_PROOF_HEADER}: "))
        .expect("a sealed post has a proof");
    let mut end = start;
    loop {
        end += post[end..].find("\r\n").unwrap() + 2;
        if !post[end..].starts_with(' ') {
            return start..end;
        }
    }
}

/// `post` with its proof of origin removed, as a client that adds none sends it.
pub fn without_proof(post: &[u8]) -> Vec<u8> {
    let mut text = String::from_utf8(post.to_vec()).unwrap();
    text.replace_range(proof_header_range(&text), "");
    text.into_bytes()
}

/// `post` moved under `key_id` with a proof `who` signs for it: what someone who may post
/// and learned another post's key id can send under that key id.
pub fn under_key_id(post: &[u8], key_id: &str, who: &SecretIdentity) -> Vec<u8> {
    let parsed = EncryptedPost::parse(post).unwrap();
    let mut text = String::from_utf8(post.to_vec())
        .unwrap()
        .replace(parsed.key_id.as_str(), key_id);
    let proof = PostProof::sign(
        OsRng,
        who,
        &[Address::parse(LIST).unwrap()],
        &key_id.parse().unwrap(),
        &parsed.packets,
        hushlist_testkit::now(),
    )
    .unwrap();
    let header = format!("{POST_PROOF_HEADER}: {}\r\n", proof.to_header_value());
    text.replace_range(proof_header_range(&text), &header);
    text.into_bytes()
}

/// The proof-of-origin header of `from`, put on `onto` in place of its own.
pub fn with_proof_of(onto: &[u8], from: &[u8]) -> Vec<u8> {
    let from = String::from_utf8(from.to_vec()).unwrap();
    let header = &from[proof_header_range(&from)];
    let mut text = String::from_utf8(onto.to_vec()).unwrap();
    text.replace_range(proof_header_range(&text), header);
    text.into_bytes()
}

/// The post id in what `accept` says for a post (`Queued as 12`).
pub fn queue_id(taken: &str) -> i64 {
    taken
        .strip_prefix("Queued as ")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not a queued post: {taken}"))
}

pub fn free_port() -> u16 {
    hushlist_peers::free_port()
}

/// `server`'s SMTP listener (offering STARTTLS with `tls`) on a free loopback port, serving
/// until the test ends; its port.
pub async fn serve_smtp(server: &Arc<ListServer>, tls: Option<TlsAcceptor>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve(
        listener,
        Arc::new(SmtpConfig::default()),
        server.clone(),
        DEFAULT_CONNECTIONS,
        tls,
        std::future::pending::<()>(),
    ));
    port
}

/// swaks, a real SMTP client, sending the file `data` from `from` to `to` at the loopback
/// `port` with `extra` options; its output, the transcript on stdout.
pub fn swaks(port: u16, from: &str, to: &str, data: &Path, extra: &[&str]) -> Output {
    Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args(["--from", from, "--to", to])
        .args(extra)
        .arg("--data")
        .arg(data)
        .output()
        .expect("swaks must be installed (.ci/run installs it)")
}

/// [`swaks`] that must succeed; its transcript.
pub fn swaks_ok(port: u16, from: &str, to: &str, data: &Path, extra: &[&str]) -> String {
    let out = swaks(port, from, to, data, extra);
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{transcript}");
    transcript
}

/// Lease, relay timeout and retry short enough for a test to see a killed server's
/// deliveries taken over and retried.
pub const QUICK_RETRIES: [&str; 6] = [
    "--lease-secs",
    "9",
    "--relay-timeout-secs",
    "2",
    "--retry-secs",
    "1",
];

/// The `hushlist-listserver` binary on free loopback ports with the data directory and
/// `args` given; killed when dropped.
pub struct ListServerProcess {
    pub child: Child,
    pub smtp: SocketAddr,
    /// The HTTP base URL.
    pub http: String,
}

impl ListServerProcess {
    pub fn start(data_dir: &Path, args: &[&str]) -> Self {
        Self::start_logging(data_dir, args, Stdio::null())
    }

    /// [`ListServerProcess::start`] with the server's log (its stderr) going to `log`.
    pub fn start_logging(data_dir: &Path, args: &[&str], log: impl Into<Stdio>) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hushlist-listserver"))
            .args(["--data-dir", data_dir.to_str().unwrap()])
            .args(["--smtp-listen", "127.0.0.1:0"])
            .args(["--http-listen", "127.0.0.1:0"])
            .args(["--dns-resolver", "none"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = |prefix: &str| {
            let line = lines.next().unwrap().unwrap();
            line.strip_prefix(prefix)
                .unwrap_or_else(|| panic!("unexpected {line:?}"))
                .to_owned()
        };
        let smtp = next("smtp on ").parse().unwrap();
        let http = next("listening on ");
        ListServerProcess { child, smtp, http }
    }

    /// The HTTP listener's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.strip_prefix("http://").unwrap().parse().unwrap()
    }

    /// The value of the metric line starting `name` in `/metrics`; `None` if the server does
    /// not answer or has no such line.
    pub async fn metric(&self, name: &str) -> Option<i64> {
        metric(&self.http, name).await
    }
}

impl Drop for ListServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Postfix's smtp-sink on a loopback port, writing each transaction it takes to a file.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    dump_dir: PathBuf,
}

/// One transaction as smtp-sink saw it.
#[derive(Debug)]
pub struct SinkTransaction {
    /// The name the client gave in EHLO.
    pub helo: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message as received (without smtp-sink's own X- lines).
    pub message: String,
}

impl SmtpSink {
    /// Starts smtp-sink on `port`; `extra` are smtp-sink options (e.g. `-r RCPT` to answer
    /// RCPT with 4xx).
    pub fn start(port: u16, dump_dir: &Path, extra: &[&str]) -> Self {
        std::fs::create_dir_all(dump_dir).unwrap();
        let mut command = Command::new(smtp_sink_path());
        // As root, smtp-sink must drop privileges; the dump directory must then be writable.
        if hushlist_peers::running_as_root() {
            hushlist_peers::open_up(dump_dir, 0o777);
            command.args(["-u", "nobody"]);
        }
        let template = format!("{}/%H%M%S.", dump_dir.display());
        let sink = SmtpSink {
            child: command
                .args(extra)
                .args(["-d", &template, &format!("127.0.0.1:{port}"), "64"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("smtp-sink must be installed (.ci/run installs postfix)"),
            port,
            dump_dir: dump_dir.to_owned(),
        };
        // Bounded wait until it listens; on failure, dropping `sink` kills it.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return sink;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("smtp-sink did not start listening on port {port}");
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Every transaction dumped so far.
    pub fn transactions(&self) -> Vec<SinkTransaction> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dump_dir) else {
            return out;
        };
        for entry in entries {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let mut helo = String::new();
            let mut mail_from = String::new();
            let mut rcpt_to = Vec::new();
            let mut message = String::new();
            let mut in_envelope = true;
            for line in text.split_inclusive('\n') {
                if in_envelope {
                    if let Some(v) = line.strip_prefix("X-Mail-Args: ") {
                        mail_from = first_path(v);
                        continue;
                    }
                    if let Some(v) = line.strip_prefix("X-Rcpt-Args: ") {
                        rcpt_to.push(first_path(v));
                        continue;
                    }
                    if let Some(v) = line.strip_prefix("X-Helo-Args: ") {
                        helo = first_path(v);
                        continue;
                    }
                    if line.starts_with("X-Client-") {
                        continue;
                    }
                    in_envelope = false;
                }
                message.push_str(line);
            }
            out.push(SinkTransaction {
                helo,
                mail_from,
                rcpt_to,
                message,
            });
        }
        out
    }

    /// How many copies each recipient got.
    pub fn copies_per_recipient(&self) -> BTreeMap<String, usize> {
        let mut copies = BTreeMap::new();
        for t in self.transactions() {
            for r in t.rcpt_to {
                *copies.entry(r).or_default() += 1;
            }
        }
        copies
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// aiosmtpd on a loopback port, requiring STARTTLS with the certificate and key given, and
/// printing each message it takes to a log file; killed when dropped.
pub struct StarttlsRelay {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl StarttlsRelay {
    pub async fn start(dir: &Path, cert: &Path, key: &Path) -> Self {
        let port = free_port();
        let log = dir.join(format!("aiosmtpd-{port}.log"));
        let relay = StarttlsRelay {
            child: Command::new("/usr/bin/python3")
                .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
                .arg("--tlscert")
                .arg(cert)
                .arg("--tlskey")
                .arg(key)
                .env("PYTHONUNBUFFERED", "1")
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3-aiosmtpd must be installed (.ci/run installs it)"),
            port,
            log,
        };
        // On failure, dropping `relay` kills it.
        wait_until(Duration::from_secs(20), "aiosmtpd to listen", || async {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        relay
    }

    /// What it printed: each message it took, without the envelope, after a line
    /// "MESSAGE FOLLOWS".
    pub fn received(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for StarttlsRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn first_path(args: &str) -> String {
    args.split_whitespace()
        .next()
        .unwrap_or("")
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

fn smtp_sink_path() -> &'static str {
    ["/usr/sbin/smtp-sink", "/usr/bin/smtp-sink"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("smtp-sink")
}

pub const GRANTS_TOKEN: &str = "grants-token-for-tests";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests";

/// A real key server over HTTP on a loopback port, in this process; returns its URL.
pub async fn start_key_server(dir: &std::path::Path) -> String {
    let store =
        hushlist_store::KeyStore::open(&format!("sqlite://{}", dir.join("keys.db").display()))
            .await
            .unwrap();
    let config = ServiceConfig {
        admin_token: ADMIN_TOKEN.into(),
        grants_token: GRANTS_TOKEN.into(),
        ..ServiceConfig::default()
    };
    let server = KeyServer::start(
        store,
        MasterKey::from_bytes(&[7; 32]),
        config,
        "keys <keys@example.org>",
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = hushlist_keyserver::router(Arc::new(server));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Sends a roster op (genesis or later) to a server's roster endpoint, as the operator.
pub async fn send_op(http: &reqwest::Client, url: String, op: &SignedOp) {
    let response = http
        .post(url)
        .bearer_auth(ADMIN_TOKEN)
        .json(op)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
}

/// The display name a member posing as someone else writes in the outer From of their post.
pub const POSING_NAME: &str = "Alice Example (CFO)";

/// `post` (sealed by the member at `address`) with the outer headers a poster chooses freely,
/// since the proof of origin covers only To, Cc and the OpenPGP data: a From display name
/// posing as someone else, an alarming Subject, a Reply-To elsewhere, an X-Priority, and
/// trace and authentication headers nobody checked.
pub fn with_planted_outer_headers(post: &[u8], address: &str) -> Vec<u8> {
    let text = String::from_utf8(post.to_vec()).unwrap();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap();
    let mut planted = format!(
        "Received: from attacker.example (attacker.example [192.0.2.66])\r\n\
         DKIM-Signature: v=1; a=rsa-sha256; d=example.net; s=x; b=AAAA\r\n\
         Authentication-Results: lists.example.org; dkim=pass header.d=example.net\r\n\
         From: \"{POSING_NAME}\" <{address}>\r\n\
         Reply-To: payments@evil.example\r\n\
         X-Priority: 1\r\n\
         Sender: cfo@example.org\r\n"
    );
    for line in headers.split("\r\n") {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("from:") {
            continue;
        }
        if lower.starts_with("subject:") {
            planted.push_str("Subject: URGENT - new bank details\r\n");
            continue;
        }
        planted.push_str(line);
        planted.push_str("\r\n");
    }
    planted.push_str("\r\n");
    planted.push_str(body);
    planted.into_bytes()
}

/// A delivered copy of a post by `author` (roster address) whose roster certificate names
/// them `name`: the outer headers are the ones the list writes, whatever the post said.
pub fn assert_list_wrote_outer_headers(copy: &str, name: &str, author: &str) {
    let message = mail_parser::MessageParser::new()
        .parse(copy.as_bytes())
        .unwrap();
    let froms: Vec<_> = message.from().unwrap().iter().collect();
    assert_eq!(froms.len(), 1, "{copy}");
    assert_eq!(froms[0].address(), Some(LIST), "{copy}");
    assert_eq!(
        froms[0].name(),
        Some(format!("{name} via team").as_str()),
        "{copy}"
    );
    let reply_to: Vec<_> = message.reply_to().unwrap().iter().collect();
    assert_eq!(reply_to.len(), 1, "{copy}");
    assert_eq!(reply_to[0].address(), Some(author), "{copy}");
    assert_eq!(message.subject(), Some("[...]"), "{copy}");
    let count = |name: &str| {
        message
            .headers()
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case(name))
            .count()
    };
    for (header, times) in [("From", 1), ("Reply-To", 1), ("Subject", 1), ("To", 1)] {
        assert_eq!(count(header), times, "{header} in {copy}");
    }
    // The relay's own Received line stays; the poster's ("attacker.example") is below.
    for header in [
        "X-Priority",
        "Sender",
        "DKIM-Signature",
        "Authentication-Results",
    ] {
        assert_eq!(count(header), 0, "{header} in {copy}");
    }
    for planted in [
        POSING_NAME,
        "URGENT",
        "payments@evil.example",
        "cfo@example.org",
        "attacker.example",
    ] {
        assert!(!copy.contains(planted), "{planted} in {copy}");
    }
    assert!(EncryptedPost::parse(copy.as_bytes()).is_ok(), "{copy}");
}

/// The `/metrics` text of the server at `http`; `None` if it does not answer.
pub async fn scrape(http: &str) -> Option<String> {
    reqwest::get(format!("{http}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The value of the metric line starting `name` in the `/metrics` of the server at `http`;
/// `None` if it does not answer or has no such line.
pub async fn metric(http: &str, name: &str) -> Option<i64> {
    scrape(http)
        .await?
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}
