//! `hushlist demo`: both servers on free loopback ports with a temporary data directory, a
//! built-in mailbox sink as their relay, three people, one list and one post, printing at
//! each step what the list server and the key server saw. Everything goes over the same
//! HTTP and SMTP interfaces a real installation uses.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hushlist_client::Home;
use hushlist_client::lists::ListConfig;
use hushlist_client::pins::ServerLog;
use hushlist_client::posts;
use hushlist_client::rosters;
use hushlist_core::bounce::BouncePolicy;
use hushlist_core::roster::{Change, MemberEntry, Policy, Role};
use hushlist_core::{Address, SecretIdentity};
use hushlist_http::connections::{ConnectionCaps, HttpLimits};
use hushlist_keyserver::ServiceConfig;
use hushlist_keyserver::daemon::{self as keys, KeyDaemonConfig};
use hushlist_listserver::daemon::{self as lists, ListDaemonConfig};
use hushlist_listserver::delivery::{DeliveryConfig, DnsResolver, RelayConfig};
use hushlist_listserver::smtp::{PostSink, SinkError, SmtpConfig};
use rand::rngs::OsRng;

use crate::context::now;

const LIST: &str = "team@lists.example.org";
const DOMAIN: &str = "lists.example.org";

/// The demo's relay: the project's own SMTP receiver with every address a mailbox, keeping
/// what it is handed in memory.
#[derive(Default)]
struct Mailboxes {
    received: Mutex<Vec<(Vec<Address>, Vec<u8>)>>,
}

impl Mailboxes {
    fn delivered_to(&self, address: &Address) -> Option<Vec<u8>> {
        let received = self.received.lock().expect("mailbox lock");
        received
            .iter()
            .find(|(to, _)| to.iter().any(|a| a.same_mailbox(address)))
            .map(|(_, message)| message.clone())
    }

    fn transactions(&self) -> usize {
        self.received.lock().expect("mailbox lock").len()
    }
}

impl PostSink for Mailboxes {
    async fn takes_mail_for(&self, _address: &Address) -> Result<bool, SinkError> {
        Ok(true)
    }

    async fn accept(
        &self,
        _mail_from: Option<&Address>,
        recipients: &[Address],
        message: Vec<u8>,
    ) -> Result<String, SinkError> {
        let mut received = self.received.lock().expect("mailbox lock");
        received.push((recipients.to_vec(), message));
        Ok(format!("Queued as {}", received.len()))
    }
}

struct Person {
    name: &'static str,
    address: Address,
    identity: SecretIdentity,
    /// Where this person's client keeps what it pinned about the list.
    home: Home,
}

pub async fn run(out: &mut impl Write) -> anyhow::Result<()> {
    let data = tempfile::tempdir().context("creating a temporary data directory")?;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));

    let mailboxes = Arc::new(Mailboxes::default());
    let sink_listener = tokio::net::TcpListener::bind(loopback).await?;
    let sink_address = sink_listener.local_addr()?;
    tokio::spawn(hushlist_listserver::smtp::serve(
        sink_listener,
        Arc::new(SmtpConfig::default()),
        mailboxes.clone(),
        ConnectionCaps {
            total: 8,
            per_client: 8,
        },
        None,
        std::future::pending(),
    ));

    crate::serve::shared_admin_token(data.path())?;
    let key_server = keys::start(KeyDaemonConfig {
        data_dir: data.path().join("keys"),
        listen: loopback,
        database: None,
        domain: DOMAIN.into(),
        tls: None,
        sweep_every: Duration::from_secs(60),
        rate_per_sec: ServiceConfig::default().rate_per_sec,
        rate_burst: ServiceConfig::default().rate_burst,
        http: HttpLimits::default(),
    })
    .await?;
    let mut delivery = DeliveryConfig::new(RelayConfig {
        host: sink_address.ip().to_string(),
        port: sink_address.port(),
        helo_name: DOMAIN.into(),
        timeout: Duration::from_secs(10),
        starttls: None,
    });
    delivery.poll_interval = Duration::from_millis(50);
    // Everything stays on this machine: no DMARC lookups (copies are From the list).
    delivery.dns_resolver = DnsResolver::Off;
    let list_server = lists::start(ListDaemonConfig {
        data_dir: data.path().join("lists"),
        database: None,
        smtp_listen: loopback,
        http_listen: loopback,
        smtp: SmtpConfig {
            hostname: DOMAIN.into(),
            ..SmtpConfig::default()
        },
        smtp_connections: ConnectionCaps {
            total: 16,
            per_client: 16,
        },
        http: HttpLimits::default(),
        tls: None,
        delivery,
        bounces: BouncePolicy::default(),
    })
    .await?;
    let config = ListConfig {
        list: Address::parse(LIST)?,
        key_server: key_server.url.clone(),
        list_server: list_server.url.clone(),
        smtp: list_server.smtp_address.to_string(),
        insecure_http: false,
        pins: None,
    };
    writeln!(
        out,
        "Both servers on loopback, data in {} (removed at the end):\n   key server   {}\n   list server  {}, SMTP {}, relaying to the demo's mailbox sink on {sink_address}",
        data.path().display(),
        config.key_server,
        config.list_server,
        config.smtp
    )?;

    writeln!(
        out,
        "\n1. Three people make identities (Ed25519 + Cv25519, gpg-compatible):"
    )?;
    let mut people = Vec::new();
    for (name, address) in [
        ("olivia", "olivia@example.org"),
        ("bob", "bob@example.net"),
        ("carol", "carol@example.net"),
    ] {
        let home = Home::at(data.path().join("homes").join(name));
        let identity = home.init_generate(OsRng, address, None)?;
        writeln!(out, "   {address:<20} {}", identity.fingerprint())?;
        people.push(Person {
            name,
            address: Address::parse(address)?,
            identity,
            home,
        });
    }
    let [olivia, bob, carol] = &people[..] else {
        unreachable!("three people")
    };

    let admin_token = std::fs::read_to_string(data.path().join("admin.token"))?;
    rosters::create(
        &olivia.identity,
        olivia.address.clone(),
        &olivia.home,
        &config,
        Policy::default(),
        admin_token.trim(),
        now(),
    )
    .await?;
    for member in [bob, carol] {
        let entry = MemberEntry {
            address: member.address.clone(),
            cert: member.identity.cert().to_armored(),
            role: Role::Member,
        };
        rosters::change(
            &olivia.identity,
            &olivia.home,
            &config,
            Change::Add { member: entry },
            now(),
        )
        .await?;
        // The member's client pins the list (its genesis and the key server's key).
        member
            .home
            .use_list(&member.identity, config.clone(), None)
            .await?;
    }
    let (key_head, list_head) = heads(olivia, &config).await?;
    writeln!(
        out,
        "\n2. Olivia creates {LIST} and adds bob and carol: each change an op she signs and sends\n   to both servers, which verify every op. Key server at seq {key_head}, list server at seq {list_head}{}.",
        if key_head == list_head {
            ": they agree"
        } else {
            ": they DISAGREE"
        }
    )?;

    let post = format!(
        "From: Olivia <{}>\r\nTo: {LIST}\r\nSubject: Quarterly numbers\r\n\r\nRevenue is up. Keep it to yourselves.\r\n",
        olivia.address
    );
    let sent = posts::send(&olivia.identity, &olivia.home, &config, post.as_bytes()).await?;
    writeln!(
        out,
        "\n3. Olivia sends \"Quarterly numbers\": sealed on her machine under key id {},\n   the key deposited at the key server, the ciphertext posted to the list server over SMTP.",
        sent.key_id
    )?;
    let key_id = sent.key_id.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    print_key_server_view(out, &people, &config, &key_id).await?;

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut copies = Vec::new();
    for person in &people {
        let copy = loop {
            if let Some(copy) = mailboxes.delivered_to(&person.address) {
                break copy;
            }
            if Instant::now() > deadline {
                bail!(
                    "the list server did not deliver to {} in time",
                    person.address
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        copies.push(copy);
    }
    writeln!(
        out,
        "\n4. The list server relayed the post to 3 members in {} SMTP transaction(s). What it stored\n   and sent is this, and nothing else:",
        mailboxes.transactions()
    )?;
    print_outer(out, &copies[0])?;

    writeln!(
        out,
        "\n5. Each member opens their copy, fetching its key from the key server:"
    )?;
    for (person, copy) in people.iter().zip(&copies) {
        let shown = posts::show_post(
            &person.identity,
            &person.home,
            std::slice::from_ref(&config),
            copy,
        )
        .await?;
        let signer = &shown.signer;
        let text = String::from_utf8_lossy(&shown.message);
        let subject = text
            .lines()
            .find(|l| l.starts_with("Subject:"))
            .unwrap_or("Subject: ?");
        writeln!(
            out,
            "   {:<7} reads \"{subject}\", signed by {signer}",
            person.name
        )?;
    }

    rosters::change(
        &olivia.identity,
        &olivia.home,
        &config,
        Change::Remove {
            address: carol.address.clone(),
        },
        now(),
    )
    .await?;
    writeln!(
        out,
        "\n6. Olivia removes carol. The list keeps keys to its current members, so carol's copy\n   is now sealed shut:"
    )?;
    match posts::show_post(
        &carol.identity,
        &carol.home,
        std::slice::from_ref(&config),
        &copies[2],
    )
    .await
    {
        Err(refusal) => writeln!(out, "   carol is refused: {refusal}")?,
        Ok(_) => bail!("carol could still open the post after her removal"),
    }
    posts::show_post(
        &bob.identity,
        &bob.home,
        std::slice::from_ref(&config),
        &copies[1],
    )
    .await?;
    writeln!(out, "   bob still opens it.")?;
    print_key_server_view(out, &people, &config, &key_id).await?;

    list_server.stop().await;
    writeln!(
        out,
        "\nDone: the list server saw ciphertext only, the key server saw keys only."
    )?;
    Ok(())
}

/// Both servers' roster heads, as the owner's client reads them (checked against its pins).
async fn heads(owner: &Person, config: &ListConfig) -> anyhow::Result<(u64, u64)> {
    let rosters = owner.home.rosters(&owner.identity, config).await?;
    let head = |log: &ServerLog| {
        log.roster()
            .map(|r| r.head_seq())
            .context("a server has no roster")
    };
    Ok((head(&rosters.key_server)?, head(&rosters.list_server)?))
}

/// The key server's own record of a post's key (read with the owner's, the first person's,
/// signed request, and verified by her client): who deposited, fetched or was refused it.
async fn print_key_server_view(
    out: &mut impl Write,
    people: &[Person],
    config: &ListConfig,
    key_id: &hushlist_core::KeyId,
) -> anyhow::Result<()> {
    let log = people[0]
        .home
        .audit(&people[0].identity, config, key_id)
        .await?;
    writeln!(
        out,
        "   The key server holds the key (encrypted at rest) and never the message; its log (a hash chain whose head it signs):"
    )?;
    for entry in log.entries {
        writeln!(
            out,
            "   | {:<7} {} {}{}",
            people
                .iter()
                .find(|p| p.identity.fingerprint().as_str() == entry.actor)
                .map_or(entry.actor.as_str(), |p| p.name),
            entry.action,
            entry.outcome,
            entry.detail.map(|d| format!(" ({d})")).unwrap_or_default()
        )?;
    }
    Ok(())
}

/// The headers of a delivered copy and the size of its ciphertext, checking that neither
/// the subject nor the body travel in the clear.
fn print_outer(out: &mut impl Write, copy: &[u8]) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(copy);
    let header_end = text.find("\r\n\r\n").unwrap_or(text.len());
    for line in text[..header_end].lines() {
        writeln!(out, "   | {line}")?;
    }
    writeln!(
        out,
        "   | (+ {} bytes of PGP/MIME body around the OpenPGP ciphertext)",
        copy.len() - header_end
    )?;
    if text.contains("Quarterly") || text.contains("Revenue") {
        bail!("the list server's copy leaks the subject or body");
    }
    Ok(())
}
