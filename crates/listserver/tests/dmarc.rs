//! Issue 19: a copy's From is the author's own (which OpenPGP clients compare with the post's
//! signer) unless the author's domain publishes a DMARC policy of quarantine or reject, or the
//! lookup fails; then it is "Name via list" with Reply-To the author. The lookups go to a real
//! DNS server, dnsmasq on loopback, serving the test's records; the copies to Postfix's
//! smtp-sink through the list server's real delivery workers.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hushlist_core::roster::{FromRewrite, Role};
use hushlist_core::{Address, SecretIdentity};
use hushlist_listserver::delivery::{Deliverer, DeliveryConfig, DnsResolver, RelayConfig};
use hushlist_listserver::service::ListServer;
use hushlist_listserver::smtp::PostSink as _;
use mail_parser::MessageParser;
use tokio::sync::watch;

/// dnsmasq answering on a loopback port from its command line only: authoritative for
/// `.example` (NXDOMAIN for any name it was not given), REFUSED for `refused.example`.
struct Dnsmasq {
    child: Child,
    address: SocketAddr,
}

impl Dnsmasq {
    fn start(dir: &Path, txt_records: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut command = Command::new(dnsmasq_path());
        command.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            &format!("--port={port}"),
            &format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
            "--local=/example/",
            // No upstream for this domain: dnsmasq answers REFUSED.
            "--server=/refused.example/#",
        ]);
        for (name, text) in txt_records {
            command.arg(format!("--txt-record={name},{text}"));
        }
        let dnsmasq = Dnsmasq {
            child: command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("dnsmasq must be installed (.ci/run installs dnsmasq-base)"),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        // It answers over TCP too once it serves; on failure, dropping it kills it.
        for _ in 0..100 {
            if TcpStream::connect(dnsmasq.address).is_ok() {
                return dnsmasq;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("dnsmasq did not start serving on port {port}");
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dnsmasq_path() -> &'static str {
    ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("dnsmasq")
}

fn config(relay_port: u16, dns: SocketAddr) -> DeliveryConfig {
    let mut config = DeliveryConfig::new(RelayConfig {
        host: "127.0.0.1".into(),
        port: relay_port,
        helo_name: "lists.example.org".into(),
        timeout: Duration::from_secs(10),
        starttls: None,
    });
    config.workers = 2;
    config.poll_interval = Duration::from_millis(100);
    config.dns_resolver = DnsResolver::At(dns);
    config
}

/// Which From the copies of a post carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    /// "author via team" <list>, Reply-To the author.
    ViaList,
    /// The author's own address, no Reply-To.
    Author,
}

/// Posts as `author` under a Message-ID of its own, waits until every copy is out and checks
/// that each copy's From, Reply-To and List-Post are as `expected`.
async fn post_and_check(
    server: &Arc<ListServer>,
    sink: &SmtpSink,
    (author, key): (&str, &SecretIdentity),
    case: &str,
    expected: Expected,
) {
    let message_id = format!("{case}@example.org");
    server
        .accept(
            Some(&Address::parse(author).unwrap()),
            &[Address::parse(LIST).unwrap()],
            sealed_post_with_id(author, key, &message_id),
        )
        .await
        .unwrap();
    wait_until(Duration::from_secs(60), "the queue to drain", || async {
        server.store().delivery_counts().await.unwrap().pending == 0
    })
    .await;
    let copies: Vec<String> = sink
        .transactions()
        .into_iter()
        .map(|t| t.message)
        .filter(|m| m.contains(&format!("<{message_id}>")))
        .collect();
    assert!(!copies.is_empty(), "{case}: no copy delivered");
    for copy in &copies {
        let message = MessageParser::new().parse(copy.as_bytes()).unwrap();
        let froms: Vec<_> = message.from().unwrap().iter().collect();
        assert_eq!(froms.len(), 1, "{case}: {copy}");
        let reply_to: Vec<_> = message
            .reply_to()
            .map(|r| r.iter().filter_map(|a| a.address()).collect())
            .unwrap_or_default();
        match expected {
            Expected::ViaList => {
                assert_eq!(froms[0].address(), Some(LIST), "{case}: {copy}");
                assert_eq!(
                    froms[0].name(),
                    Some(format!("{author} via team").as_str()),
                    "{case}: {copy}"
                );
                assert_eq!(reply_to, [author], "{case}: {copy}");
            }
            Expected::Author => {
                assert_eq!(froms[0].address(), Some(author), "{case}: {copy}");
                // The name is the roster's (the certificate names no one but the address),
                // not the "Olivia Owner" the post's own From claims.
                assert_eq!(froms[0].name(), None, "{case}: {copy}");
                assert!(reply_to.is_empty(), "{case}: {copy}");
            }
        }
        // A reply to the list goes to the list whichever From the copy has.
        assert_eq!(
            message.header_raw("List-Post").map(str::trim),
            Some(format!("<mailto:{LIST}>").as_str()),
            "{case}: {copy}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_is_rewritten_only_where_the_authors_domain_enforces_dmarc_or_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let dns = Dnsmasq::start(
        dir.path(),
        &[
            ("_dmarc.reject.example", "v=DMARC1; p=reject"),
            ("_dmarc.none.example", "v=DMARC1; p=none"),
            // Only the parent publishes; its sp applies to the author's subdomain.
            (
                "_dmarc.quarantine.example",
                "v=DMARC1; p=none; sp=quarantine",
            ),
            ("_dmarc.later.example", "v=DMARC1; p=none"),
        ],
    );
    let server = list_server(dir.path()).await;
    let owner = create_list(&server, 1).await;
    let mut authors = Vec::new();
    for address in [
        "rita@reject.example",
        "nora@none.example",
        "nick@norecord.example",
        "sam@mail.quarantine.example",
        "rex@refused.example",
        "lee@later.example",
    ] {
        let key = add_member(&server, &owner, address, Role::Member).await;
        authors.push((address, key));
    }
    let author = |i: usize| (authors[i].0, &authors[i].1);
    let sink = SmtpSink::start(free_port(), &dir.path().join("sink"), &[]);
    let (_stop, stopped) = watch::channel(false);
    Deliverer::new(&server, config(sink.port, dns.address)).spawn(stopped);

    // The default rule of a new list is DMARC.
    let list = Address::parse(LIST).unwrap();
    let policy = server.rosters().get(&list).await.unwrap().policy().clone();
    assert_eq!(policy.from_rewrite, FromRewrite::Dmarc);
    post_and_check(&server, &sink, author(0), "reject", Expected::ViaList).await;
    post_and_check(&server, &sink, author(1), "none", Expected::Author).await;
    post_and_check(&server, &sink, author(2), "no-record", Expected::Author).await;
    post_and_check(&server, &sink, author(3), "parent-sp", Expected::ViaList).await;
    post_and_check(&server, &sink, author(4), "refused", Expected::ViaList).await;

    // The resolver stops answering: the safe side, although later.example says p=none.
    dns.stop();
    post_and_check(&server, &sink, author(5), "unreachable", Expected::ViaList).await;

    // The owners' rule overrides the domain's policy either way.
    set_from_rewrite(&server, &owner, FromRewrite::Never).await;
    post_and_check(&server, &sink, author(0), "never", Expected::Author).await;
    set_from_rewrite(&server, &owner, FromRewrite::Always).await;
    post_and_check(&server, &sink, author(1), "always", Expected::ViaList).await;
}
