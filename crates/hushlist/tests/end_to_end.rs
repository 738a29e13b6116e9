//! A list used the way people use it, across real processes: `hushlist serve` running both
//! servers, a private Postfix on loopback as the relay, Postfix's smtp-sink as everyone's
//! mailbox, and the `hushlist` command (one home per person) or gpg reading the mail.

mod common;

use std::path::{Path, PathBuf};

use common::{Served, hushlist, ok, ok_bytes, refused, served_to_mailboxes};
use hushlist_client::remote::submit;
use hushlist_core::Address;
use hushlist_peers::{Gpg, Postfix, SmtpSink, free_port};
use hushlist_testkit::gpg::confirmation_token;

const LIST: &str = "team@lists.example.org";

struct Person {
    address: &'static str,
    home: PathBuf,
}

impl Person {
    fn new(dir: &Path, address: &'static str) -> Self {
        Person {
            address,
            home: dir.join(address),
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        hushlist(&self.home, args, b"")
    }

    fn run_with(&self, args: &[&str], stdin: &[u8]) -> std::process::Output {
        hushlist(&self.home, args, stdin)
    }

    /// Points this home at the list (what a member does once).
    fn use_list(&self, served: &Served) {
        ok(self.run(&[&["list", "use", LIST][..], &served.servers()].concat()));
    }

    /// Points this home at `list` on the given servers.
    fn use_list_at(&self, list: &str, key_url: &str, list_url: &str, smtp: &str) {
        ok(self.run(&[
            "list",
            "use",
            list,
            "--key-server",
            key_url,
            "--list-server",
            list_url,
            "--smtp",
            smtp,
        ]));
    }

    fn export_cert(&self, dir: &Path) -> PathBuf {
        let file = dir.join(format!("{}.asc", self.address));
        std::fs::write(&file, ok_bytes(self.run(&["key", "export"]))).unwrap();
        file
    }
}

/// Everything running: sink ← Postfix ← hushlist serve.
struct Installation {
    sink: SmtpSink,
    postfix: Postfix,
    served: Served,
}

fn install(dir: &Path) -> Installation {
    let sink = SmtpSink::start(&dir.join("mailboxes"));
    let postfix = Postfix::start(&dir.join("postfix"), sink.port);
    let served = Served::start(
        &dir.join("hushlist-data"),
        postfix.port,
        "lists.example.org",
    );
    Installation {
        sink,
        postfix,
        served,
    }
}

fn create_list(owner: &Person, served: &Served, mode: &str) {
    let options = ["--mode", mode, "--admin-token", &served.admin_token];
    let out = ok(owner.run(&[&["list", "create", LIST][..], &served.servers(), &options].concat()));
    assert!(out.contains("on both servers"), "{out}");
}

fn add(owner: &Person, member: &Person, dir: &Path) {
    let cert = member.export_cert(dir);
    ok(owner.run(&[
        "list",
        "add",
        LIST,
        member.address,
        "--key",
        cert.to_str().unwrap(),
    ]));
}

#[test]
fn a_pull_mode_list_through_postfix_from_create_to_remove() {
    let dir = tempfile::tempdir().unwrap();
    let Installation {
        sink,
        postfix,
        served,
    } = install(dir.path());
    let olivia = Person::new(dir.path(), "olivia@example.org");
    let alice = Person::new(dir.path(), "alice@example.net");
    let bob = Person::new(dir.path(), "bob@example.net");
    for person in [&olivia, &alice, &bob] {
        ok(person.run(&["init", "--email", person.address]));
    }

    // No list yet: a clear error.
    let err = refused(olivia.run_with(&["send", "--list", LIST, "--subject", "x"], b"x"));
    assert!(err.contains("is not a list this home knows"), "{err}");

    create_list(&olivia, &served, "pull");
    for member in [&alice, &bob] {
        add(&olivia, member, dir.path());
        member.use_list(&served);
    }
    let shown = ok(olivia.run(&["list", "show", LIST]));
    assert!(shown.contains("both servers agree"), "{shown}");
    assert!(shown.contains("alice@example.net"), "{shown}");

    let sent = olivia.run_with(
        &["send", "--list", LIST, "--subject", "Quarterly numbers"],
        b"Revenue is up.\n",
    );
    let report = String::from_utf8_lossy(&sent.stderr).into_owned();
    ok(sent);
    let key_id = report
        .split("(key ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no key id in {report}"))
        .to_owned();

    let mut copies = Vec::new();
    for member in [&olivia, &alice, &bob] {
        let copy = sink.wait_for_copies(member.address, 1).remove(0);
        let text = String::from_utf8_lossy(&copy).into_owned();
        assert!(text.contains("Subject: [...]"), "{text}");
        assert!(
            text.contains("by relay.hushlist.test (Postfix)"),
            "the copy went through Postfix: {text}"
        );
        assert!(!text.contains("Revenue"), "only ciphertext travels");
        let opened = ok(member.run_with(&["open"], &copy));
        assert!(
            opened.starts_with("Hushlist-Verified-Signer: olivia@example.org ("),
            "{opened}"
        );
        assert!(opened.contains("Subject: Quarterly numbers"), "{opened}");
        assert!(opened.contains("Revenue is up."), "{opened}");
        copies.push(copy);
    }
    let alice_copy = copies[1].clone();
    let bob_copy = copies[2].clone();
    assert!(
        postfix.log_text().contains("status=sent"),
        "{}",
        postfix.log_text()
    );

    // A tampered copy (signature or MDC broken) is refused, and nothing of it printed.
    let mut tampered = alice_copy.clone();
    let at = tampered.len() - 200;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    refused(alice.run_with(&["open"], &tampered));

    // --splice gives a standard PGP/MIME message gpg opens with Alice's key alone.
    let spliced = ok_bytes(alice.run_with(&["open", "--splice"], &alice_copy));
    let gpg = Gpg::new();
    ok_bytes(gpg.run(
        &["--import"],
        &std::fs::read(alice.home.join("identity.asc")).unwrap(),
    ));
    ok_bytes(gpg.run(&["--import"], &ok_bytes(olivia.run(&["key", "export"]))));
    let decrypted = ok(gpg.decrypt_pgp_mime(&spliced));
    assert!(decrypted.contains("Revenue is up."), "{decrypted}");

    // Alice posts the way mutt or git send-email would, through `hushlist sendmail`.
    let from_alice = format!(
        "From: Alice <{}>\nTo: {LIST}\nSubject: Re: Quarterly numbers\n\nAnd costs are down.\n",
        alice.address
    );
    ok(alice.run_with(
        &["sendmail", "-oi", "-oem", "-f", alice.address, LIST],
        from_alice.as_bytes(),
    ));
    let err = refused(alice.run_with(
        &["sendmail", "-oi", "somebody@example.com"],
        b"From: alice@example.net\n\nx\n",
    ));
    assert!(err.contains("is not a list this home knows"), "{err}");
    // A Bcc to the list: the post's proof of origin covers the addresses in To and Cc, so
    // the list must be named there; the command says so instead of the list server refusing.
    let err = refused(
        alice.run_with(
            &["sendmail", "-oi", LIST],
            format!(
                "From: {}\nTo: somebody@example.com\nSubject: Bcc\n\nx\n",
                alice.address
            )
            .as_bytes(),
        ),
    );
    assert!(err.contains(&format!("do not name {LIST}")), "{err}");
    sink.wait_for_copies(bob.address, 2);

    // The archive holds both posts; a member opens the second from it, or downloads all.
    let listing = ok(bob.run(&["archive", LIST]));
    let ids: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids.len(), 2, "{listing}");
    let opened = ok(bob.run(&["archive", LIST, "--open", ids[1]]));
    assert!(
        opened.starts_with("Hushlist-Verified-Signer: alice@example.net ("),
        "{opened}"
    );
    assert!(opened.contains("And costs are down."), "{opened}");
    let download = dir.path().join("bob-archive");
    let report = ok(bob.run(&["archive", LIST, "--download", download.to_str().unwrap()]));
    assert!(report.contains("saved 2 post(s)"), "{report}");
    let saved = std::fs::read_to_string(download.join(format!("{}.eml", ids[0]))).unwrap();
    assert!(saved.contains("Revenue is up."), "{saved}");
    let report = ok(bob.run(&["archive", LIST, "--download", download.to_str().unwrap()]));
    assert!(report.contains("saved 0 post(s)"), "{report}");
    assert!(report.contains("2 already there"), "{report}");

    // Someone not on the list, and Alice on a new machine with a new key, are told exactly why.
    let eve = Person::new(dir.path(), "eve@example.com");
    ok(eve.run(&["init", "--email", eve.address]));
    eve.use_list(&served);
    let err = refused(eve.run_with(&["open"], &alice_copy));
    assert!(
        err.contains("is not on the roster of team@lists.example.org")
            && err.contains("hushlist join team@lists.example.org"),
        "{err}"
    );
    let alice_again = Person {
        address: alice.address,
        home: dir.path().join("alice-new-laptop"),
    };
    ok(alice_again.run(&["init", "--email", alice.address]));
    alice_again.use_list(&served);
    // Nobody off the roster learns who is on it, so she is told what to do either way.
    let err = refused(alice_again.run_with(&["open"], &alice_copy));
    assert!(err.contains("this home's key"), "{err}");
    assert!(
        err.contains("if you are a member with another key, use the home that holds it"),
        "{err}"
    );

    // The owner lets only owners post from now on: Alice's next post is refused.
    ok(olivia.run(&["list", "policy", LIST, "--posters", "owners"]));
    let shown = ok(olivia.run(&["list", "show", LIST]));
    assert!(shown.contains("posters: Owners"), "{shown}");
    assert!(shown.contains("both servers agree"), "{shown}");
    let err = refused(alice.run_with(&["send", "--list", LIST, "--subject", "refused"], b"x"));
    assert!(err.contains("lets only Owners post"), "{err}");

    // Bob stops delivery to himself (an ordinary member may not do it for him); the next
    // post reaches Alice but not Bob, who can still read it; then the owner resumes him.
    let said = ok(bob.run(&["delivery", "suspend", LIST]));
    assert!(
        said.contains("delivery of team@lists.example.org to bob@example.net suspended"),
        "{said}"
    );
    let err = refused(alice.run(&["delivery", "resume", LIST, bob.address]));
    assert!(err.contains("only an owner"), "{err}");
    ok(olivia.run_with(
        &["send", "--list", LIST, "--subject", "While Bob is away"],
        b"Nothing much.\n",
    ));
    sink.wait_for_copies(alice.address, 3);
    assert_eq!(sink.copies_for(bob.address).len(), 2);
    let listing = ok(bob.run(&["archive", LIST]));
    let newest = listing
        .lines()
        .last()
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("an archive listing: {listing}"));
    let read = ok(bob.run(&["archive", LIST, "--open", newest]));
    assert!(read.contains("Nothing much."), "Bob still reads it: {read}");
    let said = ok(olivia.run(&["delivery", "resume", LIST, bob.address]));
    assert!(said.ends_with("bob@example.net resumed\n"), "{said}");

    // Bob is removed; his old copy no longer opens.
    ok(olivia.run(&["list", "remove", LIST, bob.address]));
    let err = refused(bob.run_with(&["open"], &bob_copy));
    assert!(err.contains("key server refused"), "{err}");

    // The sender sees who fetched the key, then destroys it: nobody can open the post now.
    let audit = ok(olivia.run(&["audit", &key_id]));
    assert_eq!(audit.matches(" deposit stored").count(), 1, "{audit}");
    // Released: Olivia, Alice and Bob opening their copies, Alice's tampered copy (the key
    // comes before the MDC check fails), her splice, and Bob's download. Refused: Bob once
    // removed (Eve and Alice's new key are strangers to the roster: turned away before any
    // key is looked at, so not in this key's log).
    assert_eq!(audit.matches(" release released").count(), 6, "{audit}");
    assert_eq!(audit.matches(" release refused").count(), 1, "{audit}");
    ok(olivia.run(&["revoke", &key_id]));
    let err = refused(alice.run_with(&["open"], &alice_copy));
    assert!(err.contains("destroyed"), "{err}");

    // A home pointed at servers that are not running says so, when it first tries to pin
    // the list, and remembers nothing.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let err = refused(alice.run(&[
        "list",
        "use",
        "other@lists.example.org",
        "--key-server",
        &dead,
        "--list-server",
        &dead,
        "--smtp",
        &served.smtp,
    ]));
    assert!(err.contains("cannot reach the key server"), "{err}");
    let err = refused(alice.run_with(
        &[
            "send",
            "--list",
            "other@lists.example.org",
            "--subject",
            "x",
        ],
        b"x",
    ));
    assert!(err.contains("is not a list this home knows"), "{err}");
}

impl Person {
    fn fingerprint(&self) -> String {
        ok(self.run(&["key", "fingerprint"])).trim().to_owned()
    }

    /// A gpg home holding this person's secret key: their ordinary mail client.
    fn gpg(&self) -> Gpg {
        let gpg = Gpg::new();
        gpg.import(&std::fs::read(self.home.join("identity.asc")).unwrap());
        gpg
    }
}

/// The join confirmations in `address`'s mailbox (encrypted, marked by their subject).
fn confirmations(sink: &SmtpSink, address: &str, count: usize) -> Vec<Vec<u8>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let found: Vec<Vec<u8>> = sink
            .copies_for(address)
            .into_iter()
            .filter(|m| String::from_utf8_lossy(m).contains("confirm your request to join"))
            .collect();
        if found.len() >= count {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count} confirmations for {address} did not arrive"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Confirms by mail, as a mail client's reply does: any message to `list-join+TOKEN@`,
/// over SMTP to the list server.
fn confirm_by_mail(served: &Served, from: &str, token: &str) {
    let to = Address::parse(&format!("team-join+{token}@lists.example.org")).unwrap();
    let from = Address::parse(from).unwrap();
    let message = format!("From: {from}\r\nTo: {to}\r\nSubject: Re: confirm\r\n\r\nyes\r\n");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(submit(&served.smtp, &from, &to, message.as_bytes()))
        .unwrap();
}

#[test]
fn people_ask_to_join_confirm_from_their_mailbox_and_the_owner_lets_one_in_and_turns_one_away() {
    let dir = tempfile::tempdir().unwrap();
    let Installation {
        sink,
        postfix: _postfix,
        served,
    } = install(dir.path());
    let olivia = Person::new(dir.path(), "olivia@example.org");
    let carol = Person::new(dir.path(), "carol@example.net");
    let mallory = Person::new(dir.path(), "mallory@example.com");
    for person in [&olivia, &carol, &mallory] {
        ok(person.run(&["init", "--email", person.address]));
    }
    create_list(&olivia, &served, "pull");

    // Asking needs to know where the list lives.
    let err = refused(carol.run(&["join", LIST]));
    assert!(err.contains("hushlist list use"), "{err}");
    for person in [&carol, &mallory] {
        person.use_list(&served);
    }
    let said = ok(carol.run(&["join", LIST, "--note", "Carol from accounting"]));
    assert!(
        said.contains("asked to join team@lists.example.org as carol@example.net")
            && said.contains("a confirmation is on its way"),
        "{said}"
    );
    ok(mallory.run(&["join", LIST]));
    // Asking twice files one request and mails one confirmation.
    ok(mallory.run(&["join", LIST]));

    // Until they confirm from their mailboxes, the owner hears and sees nothing.
    let carols = confirmations(&sink, carol.address, 1);
    let mallorys = confirmations(&sink, mallory.address, 1);
    assert!(ok(olivia.run(&["list", "pending", LIST])).contains("no pending requests"));
    assert!(sink.copies_for(olivia.address).is_empty());

    // Carol reads hers in gpg and confirms with the command; Mallory answers by mail.
    let token = confirmation_token(&carol.gpg(), &carols[0]).unwrap();
    let said = ok(carol.run(&["join", LIST, "--confirm", &token]));
    assert!(said.contains("waits for the owners"), "{said}");
    let err = refused(carol.run(&["join", LIST, "--confirm", &token]));
    assert!(err.contains("ask again"), "{err}");
    confirm_by_mail(
        &served,
        mallory.address,
        &confirmation_token(&mallory.gpg(), &mallorys[0]).unwrap(),
    );

    let asked = sink.wait_for_copies(olivia.address, 2);
    let asked: Vec<String> = asked
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    assert!(
        asked
            .iter()
            .any(|m| m.contains("carol@example.net asks to join")
                && m.contains("Carol from accounting")),
        "{asked:?}"
    );
    assert!(asked.iter().all(|m| m.contains("hushlist list approve")));

    let pending = ok(olivia.run(&["list", "pending", LIST]));
    assert_eq!(pending.lines().count(), 2, "{pending}");
    assert!(
        pending.contains(&format!(
            "carol@example.net key {} asked at",
            carol.fingerprint()
        )),
        "{pending}"
    );
    assert!(
        pending.contains(": confirmed; note: Carol from accounting"),
        "{pending}"
    );
    // Only owners see or settle requests.
    let err = refused(carol.run(&["list", "pending", LIST]));
    assert!(err.contains("not on the roster"), "{err}");

    // Approving takes the key the owner saw.
    let err = refused(olivia.run(&["list", "approve", LIST, carol.address]));
    assert!(err.contains("--fingerprint"), "{err}");
    let said = ok(olivia.run(&[
        "list",
        "approve",
        LIST,
        carol.address,
        "--fingerprint",
        &carol.fingerprint(),
    ]));
    assert!(
        said.contains("carol@example.net added to team@lists.example.org"),
        "{said}"
    );
    let shown = ok(olivia.run(&["list", "show", LIST]));
    assert!(shown.contains("carol@example.net"), "{shown}");
    assert!(shown.contains("both servers agree"), "{shown}");
    let said = ok(olivia.run(&[
        "list",
        "reject",
        LIST,
        mallory.address,
        "--reason",
        "Not on the staff list",
    ]));
    assert!(said.contains("declined"), "{said}");
    let err = refused(olivia.run(&[
        "list",
        "approve",
        LIST,
        mallory.address,
        "--fingerprint",
        &mallory.fingerprint(),
    ]));
    assert!(err.contains("no pending request"), "{err}");
    assert!(ok(olivia.run(&["list", "pending", LIST])).contains("no pending requests"));

    let welcome = sink.wait_for_copies(carol.address, 2);
    let welcome = welcome
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .find(|m| m.contains("welcome"))
        .unwrap();
    assert!(welcome.contains("Subject: [team] welcome"), "{welcome}");
    let declined = sink.wait_for_copies(mallory.address, 2);
    let declined = declined
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .find(|m| m.contains("declined"))
        .unwrap();
    assert!(declined.contains("Not on the staff list"), "{declined}");

    // Carol is a member now: she reads the next post with the key she asked with.
    ok(olivia.run_with(
        &["send", "--list", LIST, "--subject", "Welcome, Carol"],
        b"Glad to have you.\n",
    ));
    let copies = sink.wait_for_copies(carol.address, 3);
    let post = copies
        .iter()
        .find(|m| !String::from_utf8_lossy(m).contains("Auto-Submitted"))
        .unwrap();
    let opened = ok(carol.run_with(&["open"], post));
    assert!(opened.contains("Glad to have you."), "{opened}");
}

/// Olivia (who will own the list), Carol, and someone else whose own key names Carol's
/// address, in the home `impostor`; each with an identity made by `hushlist init`.
fn owner_carol_and_impostor(dir: &Path, impostor: &str) -> [Person; 3] {
    let people = [
        Person::new(dir, "olivia@example.org"),
        Person::new(dir, "carol@example.net"),
        Person {
            address: "carol@example.net",
            home: dir.join(impostor),
        },
    ];
    for person in &people {
        ok(person.run(&["init", "--email", person.address]));
    }
    people
}

#[test]
fn a_stranger_cannot_claim_someone_elses_address_and_the_real_person_is_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let Installation {
        sink,
        postfix: _postfix,
        served,
    } = install(dir.path());
    // Eve makes a key naming Carol's address (anyone can) and asks first.
    let [olivia, carol, eve] = owner_carol_and_impostor(dir.path(), "eve");
    create_list(&olivia, &served, "pull");
    eve.use_list(&served);
    carol.use_list(&served);
    ok(eve.run(&["join", LIST]));
    ok(carol.run(&["join", LIST]));

    // Both confirmations go to Carol's mailbox, where Eve cannot read them, and each opens
    // only with the key that asked: Carol can confirm hers and not Eve's.
    let mailed = confirmations(&sink, carol.address, 2);
    let tokens: Vec<Option<String>> = mailed
        .iter()
        .map(|m| confirmation_token(&carol.gpg(), m))
        .collect();
    assert_eq!(tokens.iter().flatten().count(), 1, "{tokens:?}");
    let carols_token = tokens.into_iter().flatten().next().unwrap();
    let err = refused(eve.run(&[
        "join",
        LIST,
        "--confirm",
        "00112233445566778899aabbccddeeff",
    ]));
    assert!(err.contains("no_join_request"), "{err}");
    ok(carol.run(&["join", LIST, "--confirm", &carols_token]));

    // The owner sees both keys for the address, the unconfirmed one as a conflict, and can
    // approve only the confirmed one.
    let pending = ok(olivia.run(&["list", "pending", LIST]));
    assert_eq!(pending.lines().count(), 2, "{pending}");
    let line_of = |fingerprint: &str| {
        pending
            .lines()
            .find(|l| l.contains(fingerprint))
            .unwrap_or_else(|| panic!("{fingerprint} not in {pending}"))
            .to_owned()
    };
    assert!(
        line_of(&carol.fingerprint()).contains("CONFLICT"),
        "{pending}"
    );
    assert!(
        line_of(&eve.fingerprint()).contains("not confirmed"),
        "{pending}"
    );
    let err = refused(olivia.run(&[
        "list",
        "approve",
        LIST,
        carol.address,
        "--fingerprint",
        &eve.fingerprint(),
    ]));
    assert!(err.contains("has not confirmed"), "{err}");
    assert!(!ok(olivia.run(&["list", "show", LIST])).contains(carol.address));
    ok(olivia.run(&[
        "list",
        "approve",
        LIST,
        carol.address,
        "--fingerprint",
        &carol.fingerprint(),
    ]));
    let shown = ok(olivia.run(&["list", "show", LIST]));
    assert!(shown.contains(&carol.fingerprint()), "{shown}");
    assert!(!shown.contains(&eve.fingerprint()), "{shown}");
    // Approving Carol settled the conflict: Eve's request is gone.
    assert!(ok(olivia.run(&["list", "pending", LIST])).contains("no pending requests"));
}

/// What the malicious list server does to the join requests it shows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Swap {
    /// Answers honestly.
    None,
    /// Shows the operator's request for the address, labelled with the operator's key.
    Relabel,
    /// Shows the operator's request under the key the owner saw.
    Disguise,
}

/// A list server in front of the real one that answers everything honestly except the join
/// requests, which it swaps for its operator's own while `swap` says so.
struct SwappingListServer {
    url: String,
    swap: std::sync::Arc<std::sync::Mutex<Swap>>,
    _runtime: tokio::runtime::Runtime,
}

impl SwappingListServer {
    fn start(upstream: &str, victim: String, operator: String) -> Self {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, Method, StatusCode, Uri};

        let runtime = tokio::runtime::Runtime::new().unwrap();
        let swap = std::sync::Arc::new(std::sync::Mutex::new(Swap::None));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.to_owned();
        let mode = swap.clone();
        let forward = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let upstream = upstream.clone();
            let mode = *mode.lock().unwrap();
            let (victim, operator) = (victim.clone(), operator.clone());
            async move {
                let mut request = reqwest::Client::new()
                    .request(method, format!("{upstream}{uri}"))
                    .body(body);
                for name in [
                    axum::http::header::CONTENT_TYPE,
                    axum::http::header::AUTHORIZATION,
                ] {
                    if let Some(value) = headers.get(&name) {
                        request = request.header(name, value);
                    }
                }
                let response = request.send().await.unwrap();
                let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
                let mut body = response.bytes().await.unwrap().to_vec();
                if uri.path().ends_with("/join-requests")
                    && mode != Swap::None
                    && status.is_success()
                {
                    let mut shown: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let requests = shown["requests"].as_array_mut().unwrap();
                    requests.retain(|r| r["fingerprint"] != victim.as_str());
                    for request in requests.iter_mut() {
                        request["confirmed"] = true.into();
                        if mode == Swap::Disguise && request["fingerprint"] == operator.as_str() {
                            request["fingerprint"] = victim.clone().into();
                        }
                    }
                    body = serde_json::to_vec(&shown).unwrap();
                }
                (
                    status,
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }
        };
        runtime.spawn(async move {
            axum::serve(listener, axum::Router::new().fallback(forward))
                .await
                .unwrap()
        });
        SwappingListServer {
            url,
            swap,
            _runtime: runtime,
        }
    }

    fn set(&self, swap: Swap) {
        *self.swap.lock().unwrap() = swap;
    }
}

#[test]
fn a_list_server_that_swaps_the_key_at_approval_gets_nothing_signed() {
    let dir = tempfile::tempdir().unwrap();
    let Installation {
        sink,
        postfix: _postfix,
        served,
    } = install(dir.path());
    // The list server's operator, with a key naming Carol's address.
    let [olivia, carol, operator] = owner_carol_and_impostor(dir.path(), "operator");
    let evil = SwappingListServer::start(
        &served.list_url,
        carol.fingerprint(),
        operator.fingerprint(),
    );
    // Olivia reaches the list server only through the operator's proxy.
    ok(olivia.run(&[
        "list",
        "create",
        LIST,
        "--key-server",
        &served.key_url,
        "--list-server",
        &evil.url,
        "--smtp",
        &served.smtp,
        "--admin-token",
        &served.admin_token,
    ]));
    carol.use_list(&served);
    operator.use_list(&served);
    ok(carol.run(&["join", LIST]));
    ok(operator.run(&["join", LIST]));
    let mailed = confirmations(&sink, carol.address, 2);
    let token = mailed
        .iter()
        .find_map(|m| confirmation_token(&carol.gpg(), m))
        .unwrap();
    ok(carol.run(&["join", LIST, "--confirm", &token]));

    // Olivia sees Carol's key, honestly shown, and approves exactly that key.
    let pending = ok(olivia.run(&["list", "pending", LIST]));
    assert!(pending.contains(&carol.fingerprint()), "{pending}");
    let roster_before = ok(olivia.run(&["list", "show", LIST]));
    let approve = || {
        olivia.run(&[
            "list",
            "approve",
            LIST,
            carol.address,
            "--fingerprint",
            &carol.fingerprint(),
        ])
    };
    // At approval the list server offers its operator's key instead: refused, naming both.
    evil.set(Swap::Relabel);
    let err = refused(approve());
    assert!(
        err.contains(&operator.fingerprint()) && err.contains(&carol.fingerprint()),
        "{err}"
    );
    assert!(err.contains("nothing was signed"), "{err}");
    // Or passes it off under Carol's fingerprint: the signature gives it away.
    evil.set(Swap::Disguise);
    let err = refused(approve());
    assert!(
        err.contains(&operator.fingerprint()) && err.contains(&carol.fingerprint()),
        "{err}"
    );
    assert!(err.contains("does not hold"), "{err}");
    // Nothing was signed: the roster on both servers is as before.
    let roster_after = ok(olivia.run(&["list", "show", LIST]));
    assert_eq!(roster_after, roster_before);
    assert!(
        !roster_after.contains(&operator.fingerprint()),
        "{roster_after}"
    );

    // Answered honestly, the same approval goes through.
    evil.set(Swap::None);
    ok(approve());
    let shown = ok(olivia.run(&["list", "show", LIST]));
    assert!(shown.contains(&carol.fingerprint()), "{shown}");
}

#[test]
fn a_moderated_list_holds_posts_until_an_owner_releases_or_discards_them() {
    let dir = tempfile::tempdir().unwrap();
    let Installation {
        sink,
        postfix: _postfix,
        served,
    } = install(dir.path());
    let olivia = Person::new(dir.path(), "olivia@example.org");
    let alice = Person::new(dir.path(), "alice@example.net");
    let rita = Person::new(dir.path(), "rita@example.net");
    for person in [&olivia, &alice, &rita] {
        ok(person.run(&["init", "--email", person.address]));
    }
    create_list(&olivia, &served, "pull");
    add(&olivia, &alice, dir.path());
    let cert = rita.export_cert(dir.path());
    ok(olivia.run(&[
        "list",
        "add",
        LIST,
        rita.address,
        "--key",
        cert.to_str().unwrap(),
        "--role",
        "reader",
    ]));
    for member in [&alice, &rita] {
        member.use_list(&served);
    }

    // Readers may not post: refused outright, until the owner has their posts held instead.
    let err = refused(rita.run_with(&["send", "--list", LIST, "--subject", "x"], b"x"));
    assert!(
        err.contains("is a reader and the list lets only Members post"),
        "{err}"
    );
    ok(olivia.run(&["list", "policy", LIST, "--moderation", "non-posters"]));
    assert!(ok(olivia.run(&["list", "show", LIST])).contains("moderation: NonPosters"));
    let sent = rita.run_with(
        &["send", "--list", LIST, "--subject", "A reader speaks"],
        b"May I say something?\n",
    );
    let report = String::from_utf8_lossy(&sent.stderr).into_owned();
    ok(sent);
    assert!(
        report.contains("holds it until an owner approves it"),
        "{report}"
    );
    let notice = String::from_utf8_lossy(&sink.wait_for_copies(olivia.address, 1)[0]).into_owned();
    assert!(
        notice.contains("a post from rita@example.net waits for approval"),
        "{notice}"
    );

    let held = ok(olivia.run(&["list", "held", LIST]));
    assert_eq!(held.lines().count(), 1, "{held}");
    assert!(held.contains("from rita@example.net"), "{held}");
    let id = held.split_whitespace().next().unwrap().to_owned();
    let opened = ok(olivia.run(&["list", "held", LIST, "--open", &id]));
    assert!(opened.contains("May I say something?"), "{opened}");
    // Only owners moderate; nothing held is in the archive or delivered yet.
    let err = refused(alice.run(&["list", "release", LIST, &id]));
    assert!(err.contains("only an owner"), "{err}");
    assert!(ok(alice.run(&["archive", LIST])).trim().is_empty());
    assert!(sink.copies_for(alice.address).is_empty());

    ok(olivia.run(&["list", "release", LIST, &id]));
    let copy = sink.wait_for_copies(alice.address, 1).remove(0);
    let opened = ok(alice.run_with(&["open"], &copy));
    assert!(
        opened.starts_with("Hushlist-Verified-Signer: rita@example.net ("),
        "{opened}"
    );
    // Rita may not post on her own: what she signed reached the list only by an owner's
    // release, which a copy cannot show, and `open` says so.
    assert!(
        opened.contains("\nHushlist-Warning: ") && opened.contains("only if an owner released it"),
        "{opened}"
    );
    assert!(opened.contains("May I say something?"), "{opened}");
    let err = refused(olivia.run(&["list", "release", LIST, &id]));
    assert!(err.contains("is not held"), "{err}");

    // Every post held; the owner turns one away and its sender hears why.
    ok(olivia.run(&["list", "policy", LIST, "--moderation", "all"]));
    ok(alice.run_with(
        &["send", "--list", LIST, "--subject", "Off topic"],
        b"Cats!\n",
    ));
    let held = ok(olivia.run(&["list", "held", LIST]));
    let id = held.split_whitespace().next().unwrap().to_owned();
    ok(olivia.run(&[
        "list",
        "discard",
        LIST,
        &id,
        "--reason",
        "Off topic for this list",
    ]));
    let copies = sink.wait_for_copies(alice.address, 2);
    let answer = String::from_utf8_lossy(&copies[1]).into_owned();
    assert!(answer.contains("your post was not accepted"), "{answer}");
    assert!(answer.contains("Off topic for this list"), "{answer}");
    assert!(ok(olivia.run(&["list", "held", LIST])).contains("no posts held"));
    let archive = ok(alice.run(&["archive", LIST]));
    assert_eq!(archive.lines().count(), 1, "{archive}");
}

#[test]
fn owners_add_members_in_bulk_and_sync_servers_that_fell_out_of_step() {
    let dir = tempfile::tempdir().unwrap();
    let (_sink, served) = served_to_mailboxes(dir.path());
    let olivia = Person::new(dir.path(), "olivia@example.org");
    ok(olivia.run(&["init", "--email", olivia.address]));
    create_list(&olivia, &served, "pull");

    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let mut lines = String::from("# address  certificate  role\n");
    let members: Vec<Person> = (0..12)
        .map(|i| Person {
            address: Box::leak(format!("member{i}@example.net").into_boxed_str()),
            home: dir.path().join(format!("member{i}")),
        })
        .collect();
    for (i, member) in members.iter().enumerate() {
        ok(member.run(&["init", "--email", member.address]));
        member.export_cert(&certs);
        let role = if i == 0 { " reader" } else { "" };
        lines.push_str(&format!(
            "{} {}.asc{role}\n",
            member.address, member.address
        ));
    }
    let file = certs.join("members.txt");

    // A bad file is refused as a whole, with every problem named.
    std::fs::write(&file, format!("{lines}bad-address x.asc\nmember1@example.net member1@example.net.asc\nz@example.net missing.asc boss\n")).unwrap();
    let err = refused(olivia.run(&["list", "add", LIST, "--from-file", file.to_str().unwrap()]));
    assert!(err.contains("has 3 problem(s)"), "{err}");
    assert!(
        err.contains("line 15: member1@example.net is listed twice"),
        "{err}"
    );
    assert!(
        err.contains("role \"boss\" is not owner, member or reader"),
        "{err}"
    );
    assert!(
        ok(olivia.run(&["list", "show", LIST]))
            .matches("@example.net")
            .count()
            == 0
    );

    // Half the file first (as if interrupted), then all of it: the second run finishes.
    let half: String = lines.lines().take(7).map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, half).unwrap();
    let report = ok(olivia.run(&["list", "add", LIST, "--from-file", file.to_str().unwrap()]));
    assert!(report.contains("added 6, 0 already members"), "{report}");
    std::fs::write(&file, &lines).unwrap();
    let report = ok(olivia.run(&["list", "add", LIST, "--from-file", file.to_str().unwrap()]));
    assert!(
        report.contains("added 6, 6 already members; at seq 12"),
        "{report}"
    );
    let shown = ok(olivia.run(&["list", "show", LIST]));
    assert_eq!(shown.matches("@example.net").count(), 12, "{shown}");
    assert!(shown.contains("reader   member0@example.net"), "{shown}");
    assert!(shown.contains("both servers agree"), "{shown}");

    // The list server is unreachable while the owner removes someone: the key server takes
    // the op, the list server misses it, and the owner is told how to mend it.
    let dead = format!("http://127.0.0.1:{}", free_port());
    olivia.use_list_at(LIST, &served.key_url, &dead, &served.smtp);
    let out = olivia.run(&["list", "remove", LIST, members[5].address]);
    let err = refused(out);
    assert!(
        err.contains("run `hushlist list sync team@lists.example.org`"),
        "{err}"
    );
    olivia.use_list_at(LIST, &served.key_url, &served.list_url, &served.smtp);
    let shown = ok(olivia.run(&["list", "show", LIST]));
    assert!(shown.contains("the servers DISAGREE"), "{shown}");
    let synced = ok(olivia.run(&["list", "sync", LIST]));
    assert!(
        synced.contains("sent 0 op(s) to the key server and 1 to the list server; both at seq 13"),
        "{synced}"
    );
    let shown = ok(olivia.run(&["list", "show", LIST]));
    assert!(shown.contains("both servers agree"), "{shown}");
    assert!(!shown.contains(members[5].address), "{shown}");
    let synced = ok(olivia.run(&["list", "sync", LIST]));
    assert!(
        synced.contains("sent 0 op(s) to the key server and 0"),
        "{synced}"
    );

    // A list created while the list server is unreachable exists on the key server only;
    // sync with the admin token gives the list server the same genesis.
    const LATER: &str = "later@lists.example.org";
    let err = refused(olivia.run(&[
        "list",
        "create",
        LATER,
        "--key-server",
        &served.key_url,
        "--list-server",
        &dead,
        "--smtp",
        &served.smtp,
        "--admin-token",
        &served.admin_token,
    ]));
    assert!(
        err.contains("with --admin-token if this was the list's creation"),
        "{err}"
    );
    olivia.use_list_at(LATER, &served.key_url, &served.list_url, &served.smtp);
    let err = refused(olivia.run(&["list", "sync", LATER]));
    assert!(
        err.contains("does not have later@lists.example.org at all"),
        "{err}"
    );
    let synced = ok(olivia.run(&["list", "sync", LATER, "--admin-token", &served.admin_token]));
    assert!(synced.contains("both at seq 0"), "{synced}");
    let shown = ok(olivia.run(&["list", "show", LATER]));
    assert!(shown.contains("both servers agree"), "{shown}");
}

#[test]
fn a_push_mode_list_delivers_copies_that_gpg_decrypts_with_gpg_made_keys() {
    let dir = tempfile::tempdir().unwrap();
    let Installation {
        sink,
        postfix: _postfix,
        served,
    } = install(dir.path());
    let people = [
        Person::new(dir.path(), "olivia@example.org"),
        Person::new(dir.path(), "alice@example.net"),
        Person::new(dir.path(), "bob@example.net"),
    ];
    // Each person's key is made by their own gpg and imported into hushlist.
    let gpgs: Vec<Gpg> = people
        .iter()
        .map(|person| {
            let gpg = Gpg::new();
            let secret = gpg.generate(&format!("<{}>", person.address));
            let file = dir.path().join(format!("{}.sec.asc", person.address));
            std::fs::write(&file, secret).unwrap();
            let out = ok(person.run(&["init", "--import", file.to_str().unwrap()]));
            assert!(out.starts_with("identity "), "{out}");
            gpg
        })
        .collect();
    let [olivia, alice, bob] = &people;
    create_list(olivia, &served, "push");
    for member in [alice, bob] {
        add(olivia, member, dir.path());
        member.use_list(&served);
    }
    // Everyone's gpg knows the sender's key, to check the signature.
    let olivia_cert = ok_bytes(olivia.run(&["key", "export"]));
    for gpg in &gpgs {
        ok_bytes(gpg.run(&["--import"], &olivia_cert));
    }

    ok(olivia.run_with(
        &["send", "--list", LIST, "--subject", "Pushed"],
        b"Each copy carries its reader's key.\n",
    ));
    for (person, gpg) in people.iter().zip(&gpgs) {
        let copy = sink.wait_for_copies(person.address, 1).remove(0);
        let text = String::from_utf8_lossy(&copy);
        assert!(text.contains("by relay.hushlist.test (Postfix)"), "{text}");
        // The mail client's view: gpg alone, no hushlist, no key server.
        let decrypted = gpg.decrypt_pgp_mime(&copy);
        let stderr = String::from_utf8_lossy(&decrypted.stderr);
        assert!(decrypted.status.success(), "{}: {stderr}", person.address);
        assert!(stderr.contains("Good signature"), "{stderr}");
        assert!(
            String::from_utf8_lossy(&decrypted.stdout)
                .contains("Each copy carries its reader's key."),
            "{}",
            person.address
        );
        let opened = ok(person.run_with(&["open"], &copy));
        assert!(opened.contains("Subject: Pushed"), "{opened}");
        // Another member's gpg cannot read this member's copy.
        let other = &gpgs[(people
            .iter()
            .position(|p| p.address == person.address)
            .unwrap()
            + 1)
            % 3];
        assert!(!other.decrypt_pgp_mime(&copy).status.success());
    }

    // Bob is removed: the next post reaches the others but not him, and the archive refuses him.
    ok(olivia.run(&["list", "remove", LIST, bob.address]));
    ok(olivia.run_with(
        &["send", "--list", LIST, "--subject", "After"],
        b"Bob is gone.\n",
    ));
    let copies = sink.wait_for_copies(alice.address, 2);
    assert!(
        copies
            .iter()
            .any(|copy| ok(gpgs[1].decrypt_pgp_mime(copy)).contains("Bob is gone.")),
        "Alice can read the post made after Bob left"
    );
    assert_eq!(sink.copies_for(bob.address).len(), 1);
    let err = refused(bob.run(&["archive", LIST]));
    assert!(err.contains("list server refused"), "{err}");
}

#[test]
fn a_passphrase_protected_gpg_key_imports_only_with_its_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let gpg = Gpg::new();
    let protect = ["--passphrase", "correct horse"];
    ok_bytes(
        gpg.run(
            &[
                &protect[..],
                &[
                    "--quick-gen-key",
                    "<dora@example.net>",
                    "future-default",
                    "default",
                    "never",
                ],
            ]
            .concat(),
            b"",
        ),
    );
    let secret = ok_bytes(
        gpg.run(
            &[
                &protect[..],
                &["--armor", "--export-secret-keys", "dora@example.net"],
            ]
            .concat(),
            b"",
        ),
    );
    let file = dir.path().join("dora.sec.asc");
    std::fs::write(&file, secret).unwrap();
    let home = dir.path().join("dora");
    let err = refused(hushlist(
        &home,
        &["init", "--import", file.to_str().unwrap()],
        b"",
    ));
    assert!(
        err.contains("is locked; put its passphrase in HUSHLIST_PASSPHRASE"),
        "{err}"
    );

    let imported = std::process::Command::new(env!("CARGO_BIN_EXE_hushlist"))
        .args(["init", "--import", file.to_str().unwrap()])
        .env("HUSHLIST_HOME", &home)
        .env("HUSHLIST_PASSPHRASE", "correct horse")
        .output()
        .unwrap();
    ok(imported);
    // The stored identity stays locked under the same passphrase.
    let err = refused(hushlist(&home, &["key", "fingerprint"], b""));
    assert!(err.contains("is locked"), "{err}");
}

/// A small tmpfs mounted for a test (root only); unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: PathBuf, megabytes: u32) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a tmpfs needs root (.ci/run runs as root)"
        );
        SmallDisk { path }
    }

    /// Fills what is left with a file, down to the last block.
    fn fill(&self) {
        use std::io::Write as _;
        let mut filler = std::fs::File::create(self.path.join("filler")).unwrap();
        for chunk in [1 << 20, 4096, 512] {
            let block = vec![0u8; chunk];
            while filler
                .write_all(&block)
                .and_then(|()| filler.flush())
                .is_ok()
            {}
        }
    }

    fn free(&self) {
        std::fs::remove_file(self.path.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn a_full_disk_is_a_temporary_failure_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hushlist-data");
    let key_disk = SmallDisk::mount(data.join("keys"), 16);
    let list_disk = SmallDisk::mount(data.join("lists"), 16);
    let sink = SmtpSink::start(&dir.path().join("mailboxes"));
    let served = Served::start(&data, sink.port, "lists.example.org");
    let olivia = Person::new(dir.path(), "olivia@example.org");
    let alice = Person::new(dir.path(), "alice@example.net");
    for person in [&olivia, &alice] {
        ok(person.run(&["init", "--email", person.address]));
    }
    create_list(&olivia, &served, "pull");
    add(&olivia, &alice, dir.path());
    alice.use_list(&served);
    let send = |subject: &str, body: &[u8]| {
        olivia.run_with(&["send", "--list", LIST, "--subject", subject], body)
    };
    ok(send("before", b"written while there was room\n"));
    sink.wait_for_copies(alice.address, 1);

    // The list server's disk is full: the post (2 MB, more than any free space the
    // database has inside its files) is deferred with 451, which the sender is told.
    let big_body = "all work and no play\n".repeat(100_000);
    list_disk.fill();
    let err = refused(send("while the list disk is full", big_body.as_bytes()));
    assert!(err.contains("451 4.3.0"), "{err}");

    // The key server's disk is full too: the deposit is refused with 503, nothing is sent.
    key_disk.fill();
    let err = refused(send("while both disks are full", b"small\n"));
    assert!(err.contains("disk is full (HTTP 503"), "{err}");

    // Space comes back: the same server processes take posts again, and every post that
    // was acknowledged reaches the member once and opens.
    list_disk.free();
    key_disk.free();
    ok(send("after", big_body.as_bytes()));
    let copies = sink.wait_for_copies(alice.address, 2);
    let opened = ok(alice.run_with(&["open"], &copies[1]));
    assert!(opened.contains("Subject: after"), "{opened}");
    let archive = ok(alice.run(&["archive", LIST]));
    assert_eq!(
        archive.lines().count(),
        2,
        "only the acknowledged posts: {archive}"
    );
}
