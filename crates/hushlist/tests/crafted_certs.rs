//! A certificate crafted to carry another member's public key as one of its subkeys, against
//! real processes: `hushlist serve` running both servers, and the `hushlist` command. Before
//! the roster filed keys by their holder's primary fingerprint only, such a certificate took
//! over the victim's entry: the owner's later ops failed `bad_signature`, the victim's
//! requests got 403, and push-mode copies were sealed to the attacker.

mod common;
#[path = "../../core/tests/crafted/mod.rs"]
mod crafted;

use std::path::Path;

use common::{Person, Served, add_member, create_list, hushlist, ok, refused, use_list};
use crafted::{Binding, carrying_key_of};
use hushlist_core::api::{JoinAsk, JoinRequest, RosterOps, purpose};
use hushlist_core::request::SignedRequest;
use hushlist_core::roster::{Change, MemberEntry, Role, Roster};
use hushlist_core::{Address, Cert, SecretIdentity};
use hushlist_peers::{Gpg, SmtpSink};
use hushlist_testkit::http::post_json;
use hushlist_testkit::now;
use rand::rngs::OsRng;
use serde_json::Value;

const LIST: &str = "team@lists.example.org";

impl Person {
    fn cert(&self) -> Cert {
        Cert::from_bytes(ok(self.run(&["key", "export"])).as_bytes()).unwrap()
    }

    fn cert_file(&self, dir: &Path) -> String {
        let file = dir.join(format!("{}.asc", self.address));
        std::fs::write(&file, self.cert().to_armored()).unwrap();
        file.to_str().unwrap().to_owned()
    }
}

/// Signs, as `owner`, the addition of `cert` on top of the key server's roster and posts it
/// straight to one server's ops endpoint, as a client without the local check would.
async fn post_add(served: &Served, base: &str, owner: &SecretIdentity, cert: &str) -> (u16, Value) {
    let http = reqwest::Client::new();
    let ops: RosterOps = http
        .get(format!("{}/v1/lists/{LIST}/ops", served.key_url))
        .bearer_auth(&served.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let roster = Roster::from_log(ops.ops).unwrap();
    let member = MemberEntry {
        address: Address::parse("mallory@example.com").unwrap(),
        cert: cert.to_owned(),
        role: Role::Member,
    };
    let op = roster
        .sign_next(OsRng, owner, 0, Change::Add { member })
        .unwrap();
    post_json(&http, format!("{base}/v1/lists/{LIST}/ops"), &op, None)
        .await
        .unwrap()
}

/// `hushlist serve` relaying to `relay_port`, and a list in `mode` that Olivia owns and Bob
/// reads.
fn list_with_bob(dir: &Path, relay_port: u16, mode: &str) -> (Served, Person, Person) {
    let served = Served::start(&dir.join("data"), relay_port, "lists.example.org");
    let olivia = Person::new(dir, "olivia@example.org");
    let bob = Person::new(dir, "bob@example.org");
    create_list(&served, LIST, &olivia, &["--mode", mode]);
    add_member(LIST, &olivia, &bob, "member");
    use_list(&served, LIST, &bob);
    (served, olivia, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_carrying_a_members_key_is_refused_everywhere_and_the_owner_keeps_control() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: copies wait in the queue and members read from the archive.
    let (served, olivia, bob) = list_with_bob(dir.path(), 1, "pull");
    let carol = Person::new(dir.path(), "carol@example.org");

    // Mallory's certificate carries Olivia's (the sole owner's) primary key as a subkey.
    let olivia_fingerprint = olivia.cert().fingerprint().to_string();
    let mallory = carrying_key_of(&olivia.cert(), "mallory@example.com", Binding::NoFlags);
    let carrying_olivias = mallory.cert.clone();
    let crafted_file = dir.path().join("crafted.asc");
    std::fs::write(&crafted_file, &carrying_olivias).unwrap();
    let err = refused(olivia.run(&[
        "list",
        "add",
        LIST,
        "mallory@example.com",
        "--key",
        crafted_file.to_str().unwrap(),
    ]));
    assert!(err.contains("was not sent"), "{err}");
    assert!(err.contains(&olivia_fingerprint), "{err}");
    assert!(err.contains("olivia@example.org"), "{err}");

    // In a member file, the line is named and the members before it are added.
    let members = dir.path().join("members.txt");
    std::fs::write(
        &members,
        format!(
            "carol@example.org {}\nmallory@example.com crafted.asc\n",
            carol.cert_file(dir.path())
        ),
    )
    .unwrap();
    let err = refused(olivia.run(&[
        "list",
        "add",
        LIST,
        "--from-file",
        members.to_str().unwrap(),
    ]));
    assert!(
        err.contains("mallory@example.com was not added to team@lists.example.org"),
        "{err}"
    );
    assert!(err.contains(&olivia_fingerprint), "{err}");
    ok(olivia.run(&["list", "remove", LIST, carol.address]));

    // The same op sent straight to each server, signed by the owner, is refused there too.
    let owner = olivia.identity();
    for base in [&served.key_url, &served.list_url] {
        let (status, body) = post_add(&served, base, &owner, &carrying_olivias).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("key_in_use")),
            "{base}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&olivia_fingerprint), "{message}");
        assert!(message.contains("olivia@example.org"), "{message}");
    }

    // Asking to join with it (signed by Mallory's own primary key) files nothing, so the
    // owners are not asked to approve an add that cannot be made; the answer is the one any
    // request gets, so that it does not tell a stranger whose key is on the list.
    let list = Address::parse(LIST).unwrap();
    let ask = JoinAsk {
        address: Address::parse("mallory@example.com").unwrap(),
        note: None,
    };
    let join = JoinRequest {
        cert: carrying_olivias.clone(),
        request: SignedRequest::sign(
            OsRng,
            &mallory.attacker,
            &purpose::join(&list),
            serde_json::to_vec(&ask).unwrap(),
            now(),
        )
        .unwrap(),
    };
    let response = reqwest::Client::new()
        .post(format!("{}/v1/lists/{LIST}/join", served.list_url))
        .json(&join)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    assert!(!body.to_string().contains("olivia"), "{body}");
    let pending = ok(olivia.run(&["list", "pending", LIST]));
    assert!(!pending.contains("mallory"), "{pending}");

    // Bob's key bound as a signing subkey lacks Bob's back-signature: not a valid certificate.
    let carrying_bobs = carrying_key_of(
        &bob.cert(),
        "mallory@example.com",
        Binding::SigningWithoutBackSignature,
    )
    .cert;
    std::fs::write(&crafted_file, &carrying_bobs).unwrap();
    let err = refused(olivia.run(&[
        "list",
        "add",
        LIST,
        "mallory@example.com",
        "--key",
        crafted_file.to_str().unwrap(),
    ]));
    assert!(err.contains("is not a usable certificate"), "{err}");
    assert!(err.contains("embedded signature"), "{err}");
    for base in [&served.key_url, &served.list_url] {
        let (status, body) = post_add(&served, base, &owner, &carrying_bobs).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("bad_cert")),
            "{base}: {body}"
        );
    }

    // Olivia still changes the roster (re-adding Carol, removed above, with the same
    // certificate), and Bob still gets the key of a new post.
    let carol_file = carol.cert_file(dir.path());
    ok(olivia.run(&["list", "add", LIST, carol.address, "--key", &carol_file]));
    ok(olivia.run(&["list", "remove", LIST, carol.address]));
    let shown = ok(olivia.run(&["list", "show", LIST]));
    assert!(shown.contains("both servers agree"), "{shown}");
    assert!(!shown.contains("mallory"), "{shown}");
    ok(hushlist(
        &olivia.home,
        &["send", "--list", LIST, "--subject", "Still ours"],
        b"Only members read this.\n",
    ));
    let opened = ok(bob.run(&["archive", LIST, "--open", "1"]));
    assert!(opened.contains("Only members read this."), "{opened}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_push_mode_a_members_copy_stays_sealed_to_the_member() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&dir.path().join("mailboxes"));
    let (served, olivia, bob) = list_with_bob(dir.path(), sink.port, "push");
    let mallory = carrying_key_of(&bob.cert(), "mallory@example.com", Binding::NoFlags);
    for base in [&served.key_url, &served.list_url] {
        let (status, body) = post_add(&served, base, &olivia.identity(), &mallory.cert).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("key_in_use")),
            "{base}: {body}"
        );
    }
    ok(hushlist(
        &olivia.home,
        &["send", "--list", LIST, "--subject", "Pushed"],
        b"Sealed to each member.\n",
    ));
    // The copy as delivered opens with Bob's secret key alone: its PKESK is sealed to him.
    let copy = sink.wait_for_copies(bob.address, 1).remove(0);
    let gpg = Gpg::new();
    gpg.run_ok(
        &["--import"],
        &std::fs::read(bob.home.join("identity.asc")).unwrap(),
    );
    gpg.run_ok(&["--import"], olivia.cert().to_armored().as_bytes());
    let text = ok(gpg.decrypt_pgp_mime(&copy));
    assert!(text.contains("Sealed to each member."), "{text}");
}
