//! The client library's workflows without the command: both real servers (their daemons, as
//! `hushlist serve` starts them) on loopback ports in this process, and people with homes of
//! their own calling the library as the `hushlist` command does.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use hushlist_client::Home;
use hushlist_client::archive::{self, ArchiveError, ArchivePages, DownloadStep};
use hushlist_client::delivery::{self, DeliveryError};
use hushlist_client::lists::ListConfig;
use hushlist_client::posts::{self, PostError};
use hushlist_client::remote::RemoteError;
use hushlist_client::rosters::{self, PolicyUpdate};
use hushlist_core::bounce::BouncePolicy;
use hushlist_core::roster::{Change, MemberEntry, Moderation, Policy, Posters, Role};
use hushlist_core::{Address, KeyId, SecretIdentity};
use hushlist_http::connections::{ConnectionCaps, HttpLimits};
use hushlist_keyserver::daemon::{self as keys, KeyDaemonConfig};
use hushlist_listserver::daemon::{self as lists, ListDaemonConfig};
use hushlist_listserver::delivery::{DeliveryConfig, DnsResolver, RelayConfig};
use hushlist_listserver::smtp::SmtpConfig;
use rand::rngs::OsRng;

const LIST: &str = "team@lists.example.org";
const DOMAIN: &str = "lists.example.org";
const ADMIN_TOKEN: &str = "admin-token-for-the-client-tests";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Both servers in this process, sharing one admin token, relaying to a closed port (the
/// copies wait in the queue; members read from the archive). Returns where the list lives.
async fn start_servers(data: &Path) -> ListConfig {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    for server in ["keys", "lists"] {
        std::fs::create_dir_all(data.join(server)).unwrap();
        hushlist_http::tokens::store_if_absent(&data.join(server), "admin.token", ADMIN_TOKEN)
            .unwrap();
    }
    let key_server = keys::start(KeyDaemonConfig {
        data_dir: data.join("keys"),
        listen: loopback,
        database: None,
        domain: DOMAIN.into(),
        tls: None,
        sweep_every: Duration::from_secs(60),
        rate_per_sec: 1_000.0,
        rate_burst: 1_000.0,
        http: HttpLimits::default(),
    })
    .await
    .unwrap();
    let list_server = lists::start(ListDaemonConfig {
        data_dir: data.join("lists"),
        database: None,
        smtp_listen: loopback,
        http_listen: loopback,
        smtp: SmtpConfig::default(),
        smtp_connections: ConnectionCaps {
            total: 16,
            per_client: 16,
        },
        http: HttpLimits::default(),
        tls: None,
        delivery: DeliveryConfig {
            dns_resolver: DnsResolver::Off,
            ..DeliveryConfig::new(RelayConfig {
                host: "127.0.0.1".into(),
                port: 1,
                helo_name: DOMAIN.into(),
                timeout: Duration::from_secs(1),
                starttls: None,
            })
        },
        bounces: BouncePolicy::default(),
    })
    .await
    .unwrap();
    ListConfig {
        list: Address::parse(LIST).unwrap(),
        key_server: key_server.url,
        list_server: list_server.url,
        smtp: list_server.smtp_address.to_string(),
        insecure_http: false,
        pins: None,
    }
}

struct Person {
    address: Address,
    identity: SecretIdentity,
    home: Home,
}

impl Person {
    fn new(dir: &Path, address: &str) -> Self {
        let home = Home::at(dir.join(address));
        let identity = home.init_generate(OsRng, address, None).unwrap();
        Person {
            address: Address::parse(address).unwrap(),
            identity,
            home,
        }
    }

    /// This person's record of the list, as their home keeps it.
    fn list(&self) -> ListConfig {
        self.home.list(&Address::parse(LIST).unwrap()).unwrap()
    }

    /// Posts a plain-text message to the list; returns its key id.
    async fn post(&self, subject: &str) -> String {
        let message = posts::compose(&self.address, &self.list().list, subject, b"text\n");
        posts::send(&self.identity, &self.home, &self.list(), &message)
            .await
            .unwrap()
            .key_id
    }
}

/// Olivia's list on both servers, with Bob as a member using it.
struct Team {
    dir: tempfile::TempDir,
    servers: ListConfig,
    olivia: Person,
    bob: Person,
}

impl Team {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let servers = start_servers(&dir.path().join("data")).await;
        let olivia = Person::new(dir.path(), "olivia@example.org");
        let bob = Person::new(dir.path(), "bob@example.org");
        rosters::create(
            &olivia.identity,
            olivia.address.clone(),
            &olivia.home,
            &servers,
            Policy::default(),
            ADMIN_TOKEN,
            now(),
        )
        .await
        .unwrap();
        let bob_entry = MemberEntry {
            address: bob.address.clone(),
            cert: bob.identity.cert().to_armored(),
            role: Role::Member,
        };
        let added = rosters::add_many(
            &olivia.identity,
            &olivia.home,
            &olivia.list(),
            vec![bob_entry],
            now(),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(added.added, 1);
        let genesis = olivia.list().pins.unwrap().genesis;
        bob.home
            .use_list(&bob.identity, servers.clone(), Some(genesis))
            .await
            .unwrap();
        Team {
            dir,
            servers,
            olivia,
            bob,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_is_read_across_pages_and_one_post_found_by_id() {
    let team = Team::start().await;
    let Team { olivia, bob, .. } = &team;
    // One more post than a page holds, so the last one is on a second page.
    let mut sent = Vec::new();
    for n in 0..101 {
        sent.push(olivia.post(&format!("post {n}")).await);
    }

    let mut pages = ArchivePages::new(&bob.identity, &bob.list()).unwrap();
    let mut page_sizes = Vec::new();
    let mut listed = Vec::new();
    while let Some(page) = pages.next_page().await.unwrap() {
        page_sizes.push(page.len());
        listed.extend(page);
    }
    assert_eq!(page_sizes, [100, 1]);
    assert_eq!(
        listed.iter().map(|p| p.key_id.clone()).collect::<Vec<_>>(),
        sent
    );
    assert!(listed.windows(2).all(|w| w[0].id < w[1].id));
    assert!(pages.next_page().await.unwrap().is_none());

    let last = listed.last().unwrap();
    let found = archive::find_post(&bob.identity, &bob.list(), last.id)
        .await
        .unwrap();
    assert_eq!(found, *last);
    let missing = archive::find_post(&bob.identity, &bob.list(), last.id + 1).await;
    assert!(
        matches!(missing, Err(ArchiveError::NoSuchPost { id, .. }) if id == last.id + 1),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_saves_each_readable_post_privately_and_resumes() {
    let team = Team::start().await;
    let Team { olivia, bob, .. } = &team;
    olivia.post("first").await;
    let destroyed = olivia.post("second").await;
    olivia.post("third").await;
    team.servers
        .key_server()
        .unwrap()
        .revoke(
            &olivia.identity,
            &team.servers.list,
            &destroyed.parse::<KeyId>().unwrap(),
        )
        .await
        .unwrap();

    let out = team.dir.path().join("posts");
    let mut steps = Vec::new();
    let done = archive::download(&bob.identity, &bob.home, &bob.list(), &out, |step| {
        steps.push(step)
    })
    .await
    .unwrap();
    assert_eq!((done.saved, done.kept), (2, 0));
    let [unreadable] = &done.unreadable[..] else {
        panic!("{:?}", done.unreadable)
    };
    assert!(
        matches!(
            &unreadable.error,
            PostError::Remote(RemoteError::Refused { status: 410, code, .. }) if code == "key_destroyed"
        ),
        "{:?}",
        unreadable.error
    );
    assert_eq!(steps.len(), 3);
    assert!(
        steps
            .iter()
            .all(|step| matches!(step, DownloadStep::Opening(_)))
    );
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), 0o700);
    let mut files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
        let text = String::from_utf8(std::fs::read(file).unwrap()).unwrap();
        assert!(text.starts_with(posts::VERIFIED_SIGNER_HEADER), "{text}");
    }
    let first_file = std::fs::read_to_string(&files[0]).unwrap();
    assert!(first_file.contains("Subject: first"), "{first_file}");

    // Again: the saved posts are kept, and the destroyed one is tried and named again.
    let again = archive::download(&bob.identity, &bob.home, &bob.list(), &out, |_| {})
        .await
        .unwrap();
    assert_eq!((again.saved, again.kept, again.unreadable.len()), (0, 2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_update_changes_only_what_it_names_on_both_servers() {
    let team = Team::start().await;
    let Team { olivia, .. } = &team;
    let lifetime = PolicyUpdate {
        key_lifetime_secs: Some(3_600),
        ..PolicyUpdate::default()
    };
    rosters::set_policy(
        &olivia.identity,
        &olivia.home,
        &olivia.list(),
        &lifetime,
        now(),
    )
    .await
    .unwrap();
    let posters = PolicyUpdate {
        posters: Some(Posters::Owners),
        moderation: Some(Moderation::All),
        ..PolicyUpdate::default()
    };
    let head = rosters::set_policy(
        &olivia.identity,
        &olivia.home,
        &olivia.list(),
        &posters,
        now(),
    )
    .await
    .unwrap();
    assert_eq!(head, 3);
    let rosters = olivia
        .home
        .rosters(&olivia.identity, &olivia.list())
        .await
        .unwrap();
    assert_eq!(rosters.out_of_step(), None);
    assert_eq!(
        rosters.newest().policy(),
        &Policy {
            posters: Posters::Owners,
            moderation: Moderation::All,
            key_lifetime_secs: Some(3_600),
            ..Policy::default()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_is_switched_for_the_caller_unless_a_member_is_named() {
    let team = Team::start().await;
    let Team { olivia, bob, .. } = &team;

    let own = delivery::switch(&bob.identity, &bob.home, &bob.list(), None, true)
        .await
        .unwrap();
    assert_eq!((own.address, own.suspended), (bob.address.clone(), true));
    let by_owner = delivery::switch(
        &olivia.identity,
        &olivia.home,
        &olivia.list(),
        Some(bob.address.clone()),
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        (by_owner.address, by_owner.suspended),
        (bob.address.clone(), false)
    );

    // Once removed, bob reads the roster up to his removal and finds himself not on it, so
    // he must name whose delivery to change.
    rosters::change(
        &olivia.identity,
        &olivia.home,
        &olivia.list(),
        Change::Remove {
            address: bob.address.clone(),
        },
        now(),
    )
    .await
    .unwrap();
    let removed = delivery::switch(&bob.identity, &bob.home, &bob.list(), None, true).await;
    assert!(
        matches!(&removed, Err(DeliveryError::NotAMember(list)) if list == &team.servers.list),
        "{removed:?}"
    );
}
