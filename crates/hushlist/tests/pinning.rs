//! Attacks on what the client believes about a list's roster, against real processes: the
//! `hushlist` command for every person, `hushlist serve` for the servers (honest ones and an
//! attacker's), Postfix's smtp-sink as the mailboxes, and a small HTTP proxy for a path that
//! serves an old log. A client pins a list's genesis, first owner and key server certificate
//! when it first meets the list, and the highest seq it has seen; these tests show each pin
//! turning an attack away, with a message that says why.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{Person, Served, create_list, ok, ok_bytes, refused, served_to_mailboxes};
use hushlist_core::Address;
use hushlist_core::api::RosterOps;
use hushlist_core::roster::{Change, MemberEntry, Role, Roster};
use hushlist_peers::{SmtpSink, free_port};
use rand::rngs::OsRng;

const LIST: &str = "team@lists.example.org";
const DOMAIN: &str = "lists.example.org";

impl Person {
    /// `hushlist list use` of the list at these servers, plus `extra` flags.
    fn use_list(&self, key_url: &str, list_url: &str, smtp: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "list",
            "use",
            LIST,
            "--key-server",
            key_url,
            "--list-server",
            list_url,
            "--smtp",
            smtp,
        ];
        args.extend_from_slice(extra);
        ok(self.run(&args))
    }

    /// Adds `member` to the list (this person being an owner).
    fn add(&self, member: &Person, dir: &Path) {
        let cert = dir.join(format!("{}-{}.asc", member.address, std::process::id()));
        std::fs::write(&cert, ok_bytes(member.run(&["key", "export"]))).unwrap();
        ok(self.run(&[
            "list",
            "add",
            LIST,
            member.address,
            "--key",
            cert.to_str().unwrap(),
        ]));
    }

    fn post(&self, subject: &str, body: &str) {
        ok(self.run_with(
            &["send", "--list", LIST, "--subject", subject],
            body.as_bytes(),
        ));
    }
}

/// The host:port of a loopback URL.
fn authority(url: &str) -> &str {
    url.trim_start_matches("http://").trim_end_matches('/')
}

/// The pinned key server is stopped and an attacker's real `hushlist serve` takes its place
/// (and the list server's) at the same URLs, holding a look-alike list: same address, the
/// attacker as owner, a key of their own enrolled as "olivia@example.org", and the real
/// member Alice's public certificate so the attacker's key server hands her the key. Without
/// pins Alice's `open` shows the forged post as signed by olivia@example.org.
#[test]
fn a_look_alike_list_served_at_the_pinned_urls_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let honest_mail = SmtpSink::start(&dir.path().join("mailboxes"));
    let honest = Served::start(&dir.path().join("honest"), honest_mail.port, DOMAIN);
    let olivia = Person::named(dir.path(), "olivia", "olivia@example.org");
    let alice = Person::named(dir.path(), "alice", "alice@example.net");
    create_list(&honest, LIST, &olivia, &[]);
    olivia.add(&alice, dir.path());
    alice.use_list(&honest.key_url, &honest.list_url, &honest.smtp, &[]);
    olivia.post("Hello", "The real list.\n");
    let real = honest_mail.wait_for_copies(alice.address, 1).remove(0);
    assert!(
        ok(alice.run_with(&["open"], &real))
            .starts_with("Hushlist-Verified-Signer: olivia@example.org ("),
        "the honest list works"
    );

    let (key_http, list_http) = (
        authority(&honest.key_url).to_owned(),
        authority(&honest.list_url).to_owned(),
    );
    drop(honest);
    let attacker_mail = SmtpSink::start(&dir.path().join("attacker-mailboxes"));
    let attacker = Served::start_on(
        &dir.path().join("attacker"),
        attacker_mail.port,
        DOMAIN,
        &key_http,
        &list_http,
    );
    assert_eq!(
        (attacker.key_url.as_str(), attacker.list_url.as_str()),
        (
            format!("http://{key_http}").as_str(),
            format!("http://{list_http}").as_str()
        ),
        "the attacker answers at the URLs Alice pinned"
    );
    let mallory = Person::named(dir.path(), "mallory", "mallory@example.com");
    let fake_olivia = Person::named(dir.path(), "fake-olivia", "olivia@example.org");
    create_list(&attacker, LIST, &mallory, &[]);
    mallory.add(&fake_olivia, dir.path());
    mallory.add(&alice, dir.path());
    fake_olivia.use_list(&attacker.key_url, &attacker.list_url, &attacker.smtp, &[]);
    fake_olivia.post("Change of bank details", "Wire the money to account 666.\n");
    let forged = attacker_mail.wait_for_copies(alice.address, 1).remove(0);

    let err = refused(alice.run_with(&["open"], &forged));
    assert!(
        err.contains("the key server's team@lists.example.org is not the list this home pinned"),
        "{err}"
    );
    assert!(err.contains("its genesis op is"), "{err}");
    let err = refused(alice.run(&["list", "show", LIST]));
    assert!(err.contains("is not the list this home pinned"), "{err}");
    // Nor is anything of Alice's sealed to the attacker's key server certificate.
    let err = refused(alice.run_with(&["send", "--list", LIST, "--subject", "x"], b"x"));
    assert!(err.contains("but this home pinned"), "{err}");
}

/// A plain HTTP proxy in front of one real server: passes every request through, until it is
/// told to answer reads of the list's log with one it captured earlier.
struct Proxy {
    url: String,
    old_log: Arc<Mutex<Option<Bytes>>>,
}

type ProxyState = (String, Arc<Mutex<Option<Bytes>>>, reqwest::Client);

impl Proxy {
    fn start(runtime: &tokio::runtime::Runtime, upstream: &str) -> Self {
        let old_log = Arc::new(Mutex::new(None));
        let state: ProxyState = (upstream.to_owned(), old_log.clone(), reqwest::Client::new());
        let app = axum::Router::new().fallback(pass).with_state(state);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Proxy { url, old_log }
    }

    fn serve_old_log(&self, log: Bytes) {
        *self.old_log.lock().unwrap() = Some(log);
    }
}

async fn pass(
    State((upstream, old_log, http)): State<ProxyState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let frozen = old_log.lock().unwrap().clone();
    if method == Method::POST
        && uri.path().ends_with("/ops/read")
        && let Some(log) = frozen
    {
        return ([(CONTENT_TYPE, "application/json")], log).into_response();
    }
    let mut request = http.request(method, format!("{upstream}{uri}")).body(body);
    for name in [CONTENT_TYPE, AUTHORIZATION] {
        if let Some(value) = headers.get(&name) {
            request = request.header(name, value);
        }
    }
    let Ok(answer) = request.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    let content_type = answer.headers().get(CONTENT_TYPE).cloned();
    let body = answer.bytes().await.unwrap_or_default();
    let mut response = (status, body).into_response();
    if let Some(content_type) = content_type {
        response.headers_mut().insert(CONTENT_TYPE, content_type);
    }
    response
}

/// A roster log as the server's operator reads it, with the operator's token.
fn get(runtime: &tokio::runtime::Runtime, url: &str, token: &str) -> Bytes {
    runtime.block_on(async {
        reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    })
}

/// Mallory posts while a member, then the owner removes her. Alice reads the list through
/// a path (proxies in front of both servers) that later serves the log from before the
/// removal, so Mallory's post would open as signed by a current member. Alice has seen the
/// removal, so the older log is refused.
#[test]
fn a_rolled_back_roster_is_refused() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mail, served) = served_to_mailboxes(dir.path());
    let olivia = Person::named(dir.path(), "olivia", "olivia@example.org");
    let alice = Person::named(dir.path(), "alice", "alice@example.net");
    let mallory = Person::named(dir.path(), "mallory", "mallory@example.com");
    create_list(&served, LIST, &olivia, &[]);
    olivia.add(&alice, dir.path());
    olivia.add(&mallory, dir.path());
    let log_with_mallory = get(
        &runtime,
        &format!("{}/v1/lists/{LIST}/ops", served.key_url),
        &served.admin_token,
    );
    mallory.use_list(&served.key_url, &served.list_url, &served.smtp, &[]);
    mallory.post("Minutes", "As agreed.\n");
    let copy = mail.wait_for_copies(alice.address, 1).remove(0);
    ok(olivia.run(&["list", "remove", LIST, mallory.address]));

    let keys = Proxy::start(&runtime, &served.key_url);
    let lists = Proxy::start(&runtime, &served.list_url);
    alice.use_list(&keys.url, &lists.url, &served.smtp, &[]);
    let err = refused(alice.run_with(&["open"], &copy));
    assert!(
        err.contains("refused: the post's signature does not verify"),
        "Mallory is no longer on the roster: {err}"
    );

    keys.serve_old_log(log_with_mallory.clone());
    lists.serve_old_log(log_with_mallory);
    let err = refused(alice.run_with(&["open"], &copy));
    assert!(
        err.contains("roster of team@lists.example.org ends at seq 2, but this home has already seen seq 3: a rolled-back or stale log"),
        "{err}"
    );
    let err = refused(alice.run(&["list", "show", LIST]));
    assert!(err.contains("a rolled-back or stale log"), "{err}");
}

/// Only the path to the list server is taken over: it serves the log of another
/// installation's list of the same address. The key server's log is still the pinned one, so
/// the refusal names the list server.
#[test]
fn a_list_server_serving_another_list_is_named() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mail, served) = served_to_mailboxes(dir.path());
    let other = Served::start(&dir.path().join("other"), mail.port, DOMAIN);
    let olivia = Person::named(dir.path(), "olivia", "olivia@example.org");
    let mallory = Person::named(dir.path(), "mallory", "mallory@example.com");
    let alice = Person::named(dir.path(), "alice", "alice@example.net");
    create_list(&served, LIST, &olivia, &[]);
    olivia.add(&alice, dir.path());
    create_list(&other, LIST, &mallory, &[]);
    let lists = Proxy::start(&runtime, &served.list_url);
    alice.use_list(&served.key_url, &lists.url, &served.smtp, &[]);
    assert!(ok(alice.run(&["list", "show", LIST])).contains("both servers agree"));

    lists.serve_old_log(get(
        &runtime,
        &format!("{}/v1/lists/{LIST}/ops", other.list_url),
        &other.admin_token,
    ));
    let err = refused(alice.run(&["list", "show", LIST]));
    assert!(
        err.contains("the list server's team@lists.example.org is not the list this home pinned"),
        "{err}"
    );

    // Someone not on the list yet, whose key server path serves the other list's genesis,
    // pins nothing: the two servers' public genesis ops differ.
    let carol = Person::named(dir.path(), "carol", "carol@example.net");
    let err = refused(carol.run(&[
        "list",
        "use",
        LIST,
        "--key-server",
        &other.key_url,
        "--list-server",
        &served.list_url,
        "--smtp",
        &served.smtp,
    ]));
    assert!(
        err.contains("the key server presents genesis")
            && err.contains("one of them serves another list"),
        "{err}"
    );
}

/// The owner's key signs two different ops for seq 3, and each server gets one (the key
/// server through `hushlist list add` while the list server was unreachable, the list server
/// directly). Alice, who has seen the key server's op 3, refuses the list server's log and
/// names it; Bob, who has seen only seq 2, cannot tell which is genuine and refuses both.
#[test]
fn a_forked_roster_is_refused_naming_the_server_that_departs() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mail, served) = served_to_mailboxes(dir.path());
    let olivia = Person::named(dir.path(), "olivia", "olivia@example.org");
    let alice = Person::named(dir.path(), "alice", "alice@example.net");
    let bob = Person::named(dir.path(), "bob", "bob@example.net");
    let carol = Person::named(dir.path(), "carol", "carol@example.net");
    let dave = Person::named(dir.path(), "dave", "dave@example.net");
    create_list(&served, LIST, &olivia, &[]);
    olivia.add(&alice, dir.path());
    olivia.add(&bob, dir.path());
    alice.use_list(&served.key_url, &served.list_url, &served.smtp, &[]);
    bob.use_list(&served.key_url, &served.list_url, &served.smtp, &[]);
    olivia.post("Before the fork", "All well.\n");
    let copy = mail.wait_for_copies(alice.address, 1).remove(0);

    // Op 3a, Carol's add, reaches the key server only.
    let dead = format!("http://127.0.0.1:{}", free_port());
    olivia.use_list(&served.key_url, &dead, &served.smtp, &[]);
    let cert = dir.path().join("carol.asc");
    std::fs::write(&cert, ok_bytes(carol.run(&["key", "export"]))).unwrap();
    let err = refused(olivia.run(&[
        "list",
        "add",
        LIST,
        carol.address,
        "--key",
        cert.to_str().unwrap(),
    ]));
    assert!(err.contains("hushlist list sync"), "{err}");
    let shown = ok(alice.run(&["list", "show", LIST]));
    assert!(shown.contains("the servers DISAGREE"), "{shown}");

    // Op 3b, Dave's add, signed with the same owner key on the list server's log.
    let log: RosterOps = serde_json::from_slice(&get(
        &runtime,
        &format!("{}/v1/lists/{LIST}/ops", served.list_url),
        &served.admin_token,
    ))
    .unwrap();
    let roster = Roster::from_log(log.ops).unwrap();
    assert_eq!(roster.head_seq(), 2);
    let dave_cert = hushlist_core::Cert::from_bytes(&ok_bytes(dave.run(&["key", "export"])))
        .unwrap()
        .to_armored();
    let fork = roster
        .sign_next(
            OsRng,
            &olivia.identity(),
            0,
            Change::Add {
                member: MemberEntry {
                    address: Address::parse(dave.address).unwrap(),
                    cert: dave_cert,
                    role: Role::Member,
                },
            },
        )
        .unwrap();
    let status = runtime.block_on(async {
        reqwest::Client::new()
            .post(format!("{}/v1/lists/{LIST}/ops", served.list_url))
            .json(&fork)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(status.is_success(), "{status}");

    let err = refused(alice.run(&["list", "show", LIST]));
    assert!(
        err.contains("the list server's roster of team@lists.example.org forks from the history this home has seen: it holds a different op at seq 3"),
        "{err}"
    );
    let err = refused(alice.run_with(&["open"], &copy));
    assert!(err.contains("the list server's roster"), "{err}");
    assert!(err.contains("forks from the history"), "{err}");
    let err = refused(bob.run(&["list", "show", LIST]));
    assert!(
        err.contains("the key server and the list server hold different ops for team@lists.example.org at seq 3, after seq 2 which this home has seen"),
        "{err}"
    );
}

/// Owners hand out the genesis hash (`list create` and `list show` print it); a member who
/// gives it to `list use --genesis` does not take the servers' word, and a wrong one is
/// refused before anything is saved. A home from before pinning is told how to pin.
#[test]
fn list_use_checks_a_genesis_given_out_of_band_and_old_homes_are_told_how_to_pin() {
    let dir = tempfile::tempdir().unwrap();
    let (_mail, served) = served_to_mailboxes(dir.path());
    let olivia = Person::named(dir.path(), "olivia", "olivia@example.org");
    let created = create_list(&served, LIST, &olivia, &[]);
    let genesis = created
        .split("its genesis is ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no genesis in {created}"))
        .to_owned();
    let shown = ok(olivia.run(&["list", "show", LIST]));
    assert!(shown.contains(&format!("--genesis {genesis}`")), "{shown}");

    let bob = Person::named(dir.path(), "bob", "bob@example.net");
    let wrong = "0".repeat(64);
    let err = refused(
        bob.run(
            &[
                &["list", "use", LIST][..],
                &served.servers(),
                &["--genesis", &wrong],
            ]
            .concat(),
        ),
    );
    assert!(
        err.contains(&format!(
            "has genesis {genesis}, not {wrong} as given with --genesis"
        )),
        "{err}"
    );
    let err = refused(bob.run(&["list", "show", LIST]));
    assert!(err.contains("is not a list this home knows"), "{err}");
    let err = refused(bob.run(&[
        "list",
        "use",
        LIST,
        "--key-server",
        &served.key_url,
        "--list-server",
        &served.list_url,
        "--smtp",
        &served.smtp,
        "--genesis",
        "abc",
    ]));
    assert!(err.contains("is not an op hash"), "{err}");
    let used = bob.use_list(
        &served.key_url,
        &served.list_url,
        &served.smtp,
        &["--genesis", &genesis.to_uppercase()],
    );
    assert!(
        used.contains(&format!("pinned: genesis {genesis}")),
        "{used}"
    );
    assert!(!used.contains("on the servers' word"), "{used}");
    // Bob is not on the roster: only the public genesis was read, and he is told so.
    assert!(used.contains("you are not on its roster yet"), "{used}");

    // A list file written before pinning existed still loads, and says what to do.
    let carol = Person::named(dir.path(), "carol", "carol@example.net");
    olivia.add(&carol, dir.path());
    std::fs::create_dir_all(carol.home.join("lists")).unwrap();
    std::fs::write(
        carol.home.join(format!("lists/{LIST}.json")),
        format!(
            r#"{{"list":"{LIST}","key_server":"{}","list_server":"{}","smtp":"{}"}}"#,
            served.key_url, served.list_url, served.smtp
        ),
    )
    .unwrap();
    let err = refused(carol.run(&["list", "show", LIST]));
    assert!(err.contains("has nothing pinned"), "{err}");
    assert!(
        err.contains(&format!(
            "run `hushlist list use {LIST} --key-server {} --list-server {} --smtp {}` again",
            served.key_url, served.list_url, served.smtp
        )),
        "{err}"
    );
    carol.use_list(
        &served.key_url,
        &served.list_url,
        &served.smtp,
        &["--genesis", &genesis],
    );
    assert!(ok(carol.run(&["list", "show", LIST])).contains("both servers agree"));
    let file = carol.home.join(format!("lists/{LIST}.json"));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

/// Plain http:// to a host that is not this machine is refused before any connection is
/// made, unless the user says --insecure-http.
#[test]
fn plain_http_to_another_host_is_refused_without_insecure_http() {
    let dir = tempfile::tempdir().unwrap();
    let olivia = Person::named(dir.path(), "olivia", "olivia@example.org");
    let err = refused(olivia.run(&[
        "list",
        "use",
        LIST,
        "--key-server",
        "http://keys.example.org:8470",
        "--list-server",
        "https://lists.example.org",
        "--smtp",
        "lists.example.org:25",
    ]));
    assert!(
        err.contains("the key server URL http://keys.example.org:8470 is plain http:// to a host that is not this machine"),
        "{err}"
    );
    assert!(err.contains("--insecure-http"), "{err}");
    let err = refused(olivia.run(&[
        "list",
        "create",
        LIST,
        "--key-server",
        "https://keys.example.org",
        "--list-server",
        "http://198.51.100.7:8471",
        "--smtp",
        "lists.example.org:25",
        "--admin-token",
        "t",
    ]));
    assert!(
        err.contains("the list server URL http://198.51.100.7:8471 is plain http://"),
        "{err}"
    );
    let err = refused(olivia.run(&["list", "show", LIST]));
    assert!(err.contains("is not a list this home knows"), "{err}");
}
