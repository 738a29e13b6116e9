//! Issue 25, holes 1, 6 and 8: a signed post is Alice's only in the context she signed it
//! for, and only if she may post there.
//!
//! Mallory, a member of two lists (each with its own key server) with Alice and Bob, opens a
//! post of Alice's as any member can, takes the signed packets inside (one-pass signature,
//! literal, signature) and encrypts them again under a session key of her own. Her own
//! program (not `hushlist send`) deposits that key as herself and posts the result: (a) to
//! the same list under a new key id; (b) to the other list under Alice's key id; (c) to the
//! other list, for a post of Alice's addressed to both lists, under Alice's key id (so only
//! the depositor is wrong); (d) straight to Bob with a PKESK for him, deposited under a new
//! key id; (e) straight to Bob with a PKESK and no deposit at all. `hushlist open` refuses
//! each, saying what does not match.
//!
//! On a list where only owners post, a reader signs a post and mails it to Bob with a PKESK
//! for him: `open` refuses it, saying the reader may not post to the list.
//!
//! A post whose (signed, inner) Message-ID Bob has already been shown under another key id is
//! shown with a warning naming the first key id; a warning header the sender wrote is not.
//!
//! A post whose signature names no post (no post marker: sealed before signatures named their
//! post, as archives hold them), is shown with a warning when its signer deposited its key
//! when signing, and refused when someone else did, or when the signature is older than the
//! deposit (an older signature wrapped in a key the signer deposited for another post).

mod common;

use common::{Person, Served, list_with, ok, ok_bytes, proved_by, refused, served_to_mailboxes};
use hushlist_client::Home;
use hushlist_client::remote::{Server, submit};
use hushlist_core::outer::{EncryptedPost, armor_message};
use hushlist_core::session::POST_CIPHER;
use hushlist_core::{Address, Pkesk, SecretIdentity, SessionKey};
use hushlist_envelope::{Sealed, seal};
use hushlist_peers::{Gpg, SmtpSink};
use hushlist_testkit::gpg::gpg_at;
use hushlist_testkit::now;
use pgp::packet::{
    LiteralData, OnePassSignature, Packet, PacketParser, PacketTrait as _, SignatureConfig,
    SignatureType, Subpacket, SubpacketData, SymEncryptedProtectedData,
};
use pgp::types::{Seipdv1ReadMode, Timestamp};
use rand::rngs::OsRng;

const TEAM: &str = "team@lists.example.org";
const BOARD: &str = "board@lists.example.org";
const OLIVIA: &str = "olivia@example.org";
const ALICE: &str = "alice@example.net";
const MALLORY: &str = "mallory@example.net";
const BOB: &str = "bob@example.net";

/// The session key a PKESK among `post`'s packets holds for `me`, and the SEIPD packet.
fn opened_by(post: &EncryptedPost, me: &SecretIdentity) -> (SessionKey, SymEncryptedProtectedData) {
    let mut session_key = None;
    let mut seipd = None;
    for packet in PacketParser::new(&post.packets[..]) {
        match packet.unwrap() {
            Packet::PublicKeyEncryptedSessionKey(pkesk) => {
                if let Ok(key) = Pkesk::from_packet(&pkesk).unwrap().unseal(me) {
                    session_key = Some(key);
                }
            }
            Packet::SymEncryptedProtectedData(data) => seipd = Some(data),
            _ => {}
        }
    }
    (session_key.unwrap(), seipd.unwrap())
}

/// What Mallory takes from a post she may read: the signed packets inside its encryption
/// (one-pass signature, literal, signature), exactly as the sender made them. `spliced` is
/// the post with her PKESK in it, as `hushlist open --splice` gives it to her.
fn signed_packets_inside(spliced: &[u8], mallory: &SecretIdentity) -> Vec<u8> {
    let post = EncryptedPost::parse(spliced).unwrap();
    let (session_key, seipd) = opened_by(&post, mallory);
    seipd
        .decrypt(
            &session_key.as_bytes()[..],
            Some(POST_CIPHER),
            Seipdv1ReadMode::default(),
        )
        .unwrap()
}

/// `cover` (a post of Mallory's own, sealed with the envelope library) with its encrypted
/// content replaced by `inner` encrypted under `cover`'s session key, and `key_id` in its
/// outer header.
fn rewrapped(cover: &Sealed, inner: &[u8], key_id: &str) -> Vec<u8> {
    let mut packets = Vec::new();
    SymEncryptedProtectedData::encrypt_seipdv1(
        OsRng,
        POST_CIPHER,
        &cover.session_key.as_bytes()[..],
        inner,
    )
    .unwrap()
    .to_writer_with_header(&mut packets)
    .unwrap();
    let text = String::from_utf8(cover.message.clone())
        .unwrap()
        .replace(cover.key_id.as_str(), key_id);
    const END: &str = "-----END PGP MESSAGE-----\r\n";
    let start = text.find("-----BEGIN PGP MESSAGE-----").unwrap();
    let end = text.find(END).unwrap() + END.len();
    let mut outer = text.as_bytes()[..start].to_vec();
    outer.extend_from_slice(&armor_message(&packets));
    outer.extend_from_slice(&text.as_bytes()[end..]);
    outer
}

/// A cover post of Mallory's (or whoever `mallory` is) to `list`: her From, her signature (replaced by what she
/// rewraps), a fresh session key and key id.
fn cover(mallory: &SecretIdentity, list: &str, key_server: &str) -> Sealed {
    let from = &mallory.cert().addresses()[0];
    seal(
        OsRng,
        format!("From: {from}\r\nTo: {list}\r\nSubject: cover\r\n\r\ncover\r\n").as_bytes(),
        mallory,
        key_server,
    )
    .unwrap()
}

/// Mallory's program (or any member's: `mallory` is who runs it): deposits `session_key`
/// under `key_id` at `list`'s key server as herself and, with `post` true, hands `outer` to
/// the list server with her proof of origin.
fn deposit_and_post(
    mallory: &Person,
    list: &str,
    key_id: &str,
    session_key: &SessionKey,
    outer: &[u8],
    post: bool,
) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let home = Home::at(&mallory.home);
        let me = home.load_identity("").unwrap();
        let config = home.list(&Address::parse(list).unwrap()).unwrap();
        let server_cert = home.server_cert(&config).await.unwrap();
        Server::key_server(&config.key_server)
            .deposit(
                &me,
                &config.list,
                &key_id.parse().unwrap(),
                session_key,
                &server_cert,
            )
            .await
            .unwrap();
        if post {
            let proved = proved_by(outer, &me, list);
            submit(
                &config.smtp,
                &Address::parse(mallory.address).unwrap(),
                &config.list,
                &proved,
            )
            .await
            .unwrap();
        }
    });
}

/// `outer` with a PKESK for `recipient` holding `session_key` spliced in: mailed straight to
/// them, past the list server.
fn mailed_straight_to(outer: &[u8], session_key: &SessionKey, recipient: &Person) -> Vec<u8> {
    let cert = Home::at(&recipient.home).load_cert("").unwrap();
    let pkesk = Pkesk::seal(OsRng, session_key, &cert, now()).unwrap();
    EncryptedPost::parse(outer).unwrap().splice(outer, &[pkesk])
}

/// The copy of the post under `key_id` that reached `recipient` from `list`, once
/// `count` copies have.
fn copy_on(sink: &SmtpSink, recipient: &str, count: usize, list: &str, key_id: &str) -> Vec<u8> {
    let (local, domain) = list.split_once('@').unwrap();
    let list_id = format!("<{local}.{domain}>");
    sink.wait_for_copies(recipient, count)
        .into_iter()
        .find(|c| {
            let text = String::from_utf8_lossy(c);
            text.contains(key_id) && text.contains(&list_id)
        })
        .unwrap_or_else(|| panic!("no copy of {key_id} from {list} for {recipient}"))
}

/// The key id `hushlist send` reports in "posted to LIST (key KEYID deposited at ...".
fn sent_key_id(out: std::process::Output) -> String {
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out);
    report
        .split("(key ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no key id in {report}"))
        .to_owned()
}

#[test]
fn a_members_replay_of_another_members_signed_post_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&dir.path().join("mailboxes"));
    let team_servers = Served::start(
        &dir.path().join("team-data"),
        sink.port,
        "lists.example.org",
    );
    let board_servers = Served::start(
        &dir.path().join("board-data"),
        sink.port,
        "lists.example.org",
    );
    let olivia = Person::new(dir.path(), OLIVIA);
    let alice = Person::new(dir.path(), ALICE);
    let mallory = Person::new(dir.path(), MALLORY);
    let bob = Person::new(dir.path(), BOB);
    let members = [(&alice, "member"), (&mallory, "member"), (&bob, "member")];
    list_with(&team_servers, TEAM, &olivia, &members);
    list_with(&board_servers, BOARD, &olivia, &members);
    let mallory_id = mallory.identity();

    // Alice's two posts to the team list: one addressed to it alone, one to both lists.
    let to_team = sent_key_id(alice.run_with(
        &["send"],
        format!(
            "From: {ALICE}\r\nTo: {TEAM}\r\nSubject: Salaries\r\n\r\nThe salaries are attached.\r\n"
        )
        .as_bytes(),
    ));
    let to_both = sent_key_id(alice.run_with(
        &["send"],
        format!(
            "From: {ALICE}\r\nTo: {TEAM}\r\nCc: {BOARD}\r\nSubject: Layoffs\r\n\r\nWe let ten go.\r\n"
        )
        .as_bytes(),
    ));
    let signed_inside = |key_id: &str| {
        let copy = copy_on(&sink, MALLORY, 2, TEAM, key_id);
        let spliced = ok_bytes(mallory.run_with(&["open", "--splice"], &copy));
        signed_packets_inside(&spliced, &mallory_id)
    };
    let salaries = signed_inside(&to_team);
    let layoffs = signed_inside(&to_both);
    // Bob reads Alice's real post: the control.
    let shown = ok(bob.run_with(&["open"], &copy_on(&sink, BOB, 2, TEAM, &to_team)));
    assert!(
        shown.starts_with(&format!("Hushlist-Verified-Signer: {ALICE} (")),
        "{shown}"
    );

    // (a) The same list, a new key id, deposited by Mallory.
    let a = cover(&mallory_id, TEAM, &team_servers.key_url);
    let a_key = a.key_id.to_string();
    let outer = rewrapped(&a, &salaries, &a_key);
    deposit_and_post(&mallory, TEAM, &a_key, &a.session_key, &outer, true);
    let err = refused(bob.run_with(&["open"], &copy_on(&sink, BOB, 3, TEAM, &a_key)));
    assert!(err.contains(&format!("signed by {ALICE}")), "{err}");
    assert!(err.contains(&format!("key id {to_team}")), "{err}");
    assert!(err.contains(&a_key), "{err}");

    // (b) The other list, under Alice's own key id (a key id is unique per key server
    // only), deposited by Mallory: Alice did not address it to that list.
    let b = cover(&mallory_id, BOARD, &board_servers.key_url);
    let outer = rewrapped(&b, &salaries, &to_team);
    deposit_and_post(&mallory, BOARD, &to_team, &b.session_key, &outer, true);
    let err = refused(bob.run_with(&["open"], &copy_on(&sink, BOB, 4, BOARD, &to_team)));
    assert!(err.contains(&format!("signed by {ALICE}")), "{err}");
    assert!(err.contains(&format!("not for {BOARD}")), "{err}");

    // (c) Alice's post to both lists, put on the board list under her key id: key id and
    // list match what she signed, but the key there is Mallory's deposit.
    let c = cover(&mallory_id, BOARD, &board_servers.key_url);
    let outer = rewrapped(&c, &layoffs, &to_both);
    deposit_and_post(&mallory, BOARD, &to_both, &c.session_key, &outer, true);
    let on_board = copy_on(&sink, BOB, 5, BOARD, &to_both);
    let err = refused(bob.run_with(&["open"], &on_board));
    assert!(err.contains(&format!("signed by {ALICE}")), "{err}");
    assert!(err.contains(&format!("deposited by {MALLORY}")), "{err}");

    // (d) Straight to Bob with a PKESK for him, its key deposited by Mallory at the team
    // list's key server under a new key id.
    let d = cover(&mallory_id, TEAM, &team_servers.key_url);
    let d_key = d.key_id.to_string();
    let outer = rewrapped(&d, &salaries, &d_key);
    deposit_and_post(&mallory, TEAM, &d_key, &d.session_key, &outer, false);
    let err = refused(bob.run_with(&["open"], &mailed_straight_to(&outer, &d.session_key, &bob)));
    assert!(err.contains(&format!("key id {to_team}")), "{err}");
    assert!(err.contains(&d_key), "{err}");

    // (e) Straight to Bob with a PKESK, nothing deposited: the key server does not know the
    // key id, and `open` says so along with what the PKESK gave.
    let e = cover(&mallory_id, TEAM, &team_servers.key_url);
    let e_key = e.key_id.to_string();
    let outer = rewrapped(&e, &salaries, &e_key);
    let err = refused(bob.run_with(&["open"], &mailed_straight_to(&outer, &e.session_key, &bob)));
    assert!(err.contains(&e_key), "{err}");
    assert!(err.contains("404"), "{err}");
    assert!(err.contains("PKESK"), "{err}");
}

#[test]
fn a_readers_post_to_an_owners_only_list_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_sink, served) = served_to_mailboxes(dir.path());
    let olivia = Person::new(dir.path(), OLIVIA);
    let rita = Person::new(dir.path(), "rita@example.net");
    let bob = Person::new(dir.path(), BOB);
    list_with(
        &served,
        TEAM,
        &olivia,
        &[(&rita, "reader"), (&bob, "member")],
    );
    ok(olivia.run(&["list", "policy", TEAM, "--posters", "owners"]));

    let post = seal(
        OsRng,
        format!("From: rita@example.net\r\nTo: {TEAM}\r\nSubject: Announcement\r\n\r\nThe office closes.\r\n")
            .as_bytes(),
        &rita.identity(),
        &served.key_url,
    )
    .unwrap();
    let err = refused(bob.run_with(
        &["open"],
        &mailed_straight_to(&post.message, &post.session_key, &bob),
    ));
    assert!(err.contains("rita@example.net"), "{err}");
    assert!(err.contains("may not post to this list"), "{err}");
}

#[test]
fn a_message_id_seen_under_another_key_id_is_shown_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, served) = served_to_mailboxes(dir.path());
    let olivia = Person::new(dir.path(), OLIVIA);
    let alice = Person::new(dir.path(), ALICE);
    let mallory = Person::new(dir.path(), MALLORY);
    let bob = Person::new(dir.path(), BOB);
    list_with(
        &served,
        TEAM,
        &olivia,
        &[(&alice, "member"), (&mallory, "member"), (&bob, "member")],
    );
    let message_id = "<agenda-7@example.net>";
    let first = sent_key_id(alice.run_with(
        &["send"],
        format!("From: {ALICE}\r\nTo: {TEAM}\r\nSubject: Agenda\r\nMessage-ID: {message_id}\r\n\r\nItem one.\r\n")
            .as_bytes(),
    ));
    // Mallory's own post, under Alice's Message-ID (so a mail reader threading or
    // deduplicating by it would take one for the other), with a warning header of her own.
    let second = sent_key_id(mallory.run_with(
        &["send"],
        format!("From: {MALLORY}\r\nTo: {TEAM}\r\nSubject: Agenda\r\nMessage-ID: {message_id}\r\nHushlist-Warning: none, all checked\r\n\r\nItem one: cancelled.\r\n")
            .as_bytes(),
    ));

    let shown = ok(bob.run_with(&["open"], &copy_on(&sink, BOB, 2, TEAM, &first)));
    assert!(
        !shown.to_ascii_lowercase().contains("hushlist-warning"),
        "{shown}"
    );
    // Opening the same post again is no repeat.
    let again = ok(bob.run_with(&["open"], &copy_on(&sink, BOB, 2, TEAM, &first)));
    assert!(
        !again.to_ascii_lowercase().contains("hushlist-warning"),
        "{again}"
    );

    let shown = ok(bob.run_with(&["open"], &copy_on(&sink, BOB, 2, TEAM, &second)));
    let warnings: Vec<&str> = shown
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("hushlist-warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "{shown}");
    assert!(warnings[0].contains(message_id), "{shown}");
    assert!(warnings[0].contains(&first), "{shown}");
    assert!(!shown.contains("all checked"), "{shown}");
}

/// What hushlist sealed inside a post before signatures named their post: a one-pass
/// signature, `message` as the literal and `signer`'s binary signature over it dated
/// `created`, with no notations.
fn unmarked_signed_packets(signer: &SecretIdentity, message: &[u8], created: u64) -> Vec<u8> {
    signer
        .with_signing_key(|key| {
            let mut config =
                SignatureConfig::from_key(OsRng, &Box::new(key), SignatureType::Binary).unwrap();
            config.hashed_subpackets = vec![
                Subpacket::regular(SubpacketData::IssuerFingerprint(key.fingerprint())).unwrap(),
                Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::from_secs(
                    created as u32,
                )))
                .unwrap(),
            ];
            config.unhashed_subpackets =
                vec![Subpacket::regular(SubpacketData::IssuerKeyId(key.legacy_key_id())).unwrap()];
            let mut hasher = config.hash_alg.new_hasher().unwrap();
            hasher.update(message);
            let len = config.hash_signature_data(&mut hasher).unwrap();
            hasher.update(&config.trailer(len).unwrap());
            let hash = hasher.finalize();
            let bytes = key
                .sign(&signer.password(), config.hash_alg, &hash)
                .unwrap();
            let signature =
                pgp::packet::Signature::from_config(config, [hash[0], hash[1]], bytes).unwrap();
            let mut packets = Vec::new();
            OnePassSignature::v3(
                SignatureType::Binary,
                signature.hash_alg().unwrap(),
                key.algorithm(),
                key.legacy_key_id(),
            )
            .to_writer_with_header(&mut packets)
            .unwrap();
            LiteralData::from_bytes("", message.to_vec().into())
                .unwrap()
                .to_writer_with_header(&mut packets)
                .unwrap();
            signature.to_writer_with_header(&mut packets).unwrap();
            packets
        })
        .unwrap()
}

#[test]
fn a_post_whose_signature_names_no_post_is_shown_with_a_warning_only_from_its_depositor() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, served) = served_to_mailboxes(dir.path());
    let olivia = Person::new(dir.path(), OLIVIA);
    // Alice's key is a month old (made by gpg then, and imported), so she has older
    // signatures too.
    let gpg = Gpg::new();
    gpg_at(
        &gpg,
        now() - 30 * 86_400,
        &[
            "--quick-gen-key",
            ALICE,
            "future-default",
            "default",
            "never",
        ],
        b"",
    );
    let secret = dir.path().join("alice.sec");
    let exported = gpg.run_ok(&["--armor", "--export-secret-keys", ALICE], b"");
    std::fs::write(&secret, exported.stdout).unwrap();
    let alice = Person {
        address: ALICE,
        home: dir.path().join(ALICE),
    };
    ok(alice.run(&["init", "--import", secret.to_str().unwrap()]));
    let mallory = Person::new(dir.path(), MALLORY);
    let bob = Person::new(dir.path(), BOB);
    list_with(
        &served,
        TEAM,
        &olivia,
        &[(&alice, "member"), (&mallory, "member"), (&bob, "member")],
    );
    let (alice_id, mallory_id) = (alice.identity(), mallory.identity());
    let message = format!(
        "From: {ALICE}\r\nTo: {TEAM}\r\nSubject: From the old days\r\n\r\nSealed long ago.\r\n"
    );
    let old = unmarked_signed_packets(&alice_id, message.as_bytes(), now());

    // Alice's own post as hushlist sealed it then, deposited by her: shown, with a warning.
    let hers = cover(&alice_id, TEAM, &served.key_url);
    let hers_key = hers.key_id.to_string();
    let outer = rewrapped(&hers, &old, &hers_key);
    deposit_and_post(&alice, TEAM, &hers_key, &hers.session_key, &outer, true);
    let shown = ok(bob.run_with(&["open"], &copy_on(&sink, BOB, 1, TEAM, &hers_key)));
    assert!(
        shown.starts_with(&format!("Hushlist-Verified-Signer: {ALICE} (")),
        "{shown}"
    );
    assert!(
        shown.contains("Hushlist-Warning: this post's signature does not name its list"),
        "{shown}"
    );
    assert!(shown.contains("Sealed long ago."), "{shown}");

    // The same old packets of Alice's, deposited and posted by Mallory: refused.
    let replay = cover(&mallory_id, TEAM, &served.key_url);
    let replay_key = replay.key_id.to_string();
    let outer = rewrapped(&replay, &old, &replay_key);
    deposit_and_post(
        &mallory,
        TEAM,
        &replay_key,
        &replay.session_key,
        &outer,
        true,
    );
    let err = refused(bob.run_with(&["open"], &copy_on(&sink, BOB, 2, TEAM, &replay_key)));
    assert!(err.contains(&format!("deposited by {MALLORY}")), "{err}");

    // An unmarked signature Alice made two days earlier, wrapped by Mallory (who may fetch
    // its key) in the key Alice deposited for her post, and mailed straight to Bob: the key
    // server says Alice deposited that key, but not when this was signed. Refused.
    let earlier = format!(
        "From: {ALICE}\r\nTo: {TEAM}\r\nSubject: New bank details\r\n\r\nPay the new account.\r\n"
    );
    let earlier = unmarked_signed_packets(&alice_id, earlier.as_bytes(), now() - 2 * 86_400);
    let outer = rewrapped(&hers, &earlier, &hers_key);
    let err = refused(bob.run_with(
        &["open"],
        &mailed_straight_to(&outer, &hers.session_key, &bob),
    ));
    assert!(err.contains("no hushlist post marker"), "{err}");
}
