//! A member who writes the headers of their own post cannot make it read as someone else's.
//! Mallory is on the roster; her own program (not `hushlist send`, which refuses a From that
//! is not hers) seals posts with the envelope library, deposits their keys with the real key
//! server and hands them to the real list server, as any member's program could. Inside are
//! (a) her own `Hushlist-Verified-*` headers in several spellings, (b) two From headers,
//! (c) Alice's address as From. Every way the command shows a post (`open`,
//! `archive --open`, `archive --download`, and `list held --open` for held posts) shows (a)
//! with one verified header, the true one, and refuses (b) and (c) naming both addresses.
//! `open` also refuses a Sender that is not hers, a bare CR in the headers (where readers
//! split lines differently), and (a) signed by a key not on the roster or not signed at all.

mod common;

use common::{Person, hushlist, list_with, ok, proved_by, refused, served_to_mailboxes};
use hushlist_client::Home;
use hushlist_client::remote::{Server, submit};
use hushlist_core::Address;
use hushlist_core::outer::{EncryptedPost, armor_message};
use hushlist_core::session::POST_CIPHER;
use hushlist_envelope::{Sealed, decrypt_packets, seal};
use rand::rngs::OsRng;

const LIST: &str = "team@lists.example.org";
const MALLORY: &str = "mallory@example.net";
const ALICE: &str = "alice@example.net";
const CEO: &str = "ceo@example.org";

/// (a): our header in the casings and spellings an attacker tries, one of them folded.
fn planted(n: usize) -> String {
    format!(
        "From: Mallory <{MALLORY}>\r\n\
         To: {LIST}\r\n\
         Subject: Planted verified header\r\n\
         Message-ID: <planted-{n}@example.net>\r\n\
         Hushlist-Verified-Signer: {CEO} (0123456789ABCDEF)\r\n\
         hushlist-verified-signer: {CEO}\r\n\
         HUSHLIST-VERIFIED-SIGNER:\r\n \
         {CEO}\r\n\
         Hushlist-Verified-Signer : {CEO}\r\n\
         Hushlist-Verified-Role: owner\r\n\
         \r\n\
         The chief executive approves the transfer.\r\n"
    )
}

/// (b): two From headers; mail readers show one or the other.
fn two_froms(n: usize) -> String {
    format!(
        "From: {MALLORY}\r\n\
         From: {CEO}\r\n\
         To: {LIST}\r\n\
         Subject: Two authors\r\n\
         Message-ID: <two-froms-{n}@example.net>\r\n\
         \r\n\
         Pay the invoice today.\r\n"
    )
}

/// (c): Alice, a member too, as the author of a post Mallory signs.
fn as_alice(n: usize) -> String {
    format!(
        "From: Alice <{ALICE}>\r\n\
         To: {LIST}\r\n\
         Subject: From Alice, honestly\r\n\
         Message-ID: <as-alice-{n}@example.net>\r\n\
         \r\n\
         I resign.\r\n"
    )
}

/// A Sender naming someone else: mail readers show "ceo on behalf of mallory".
fn with_sender(n: usize) -> String {
    format!(
        "From: {MALLORY}\r\n\
         Sender: {CEO}\r\n\
         To: {LIST}\r\n\
         Subject: Sent for the chief executive\r\n\
         Message-ID: <with-sender-{n}@example.net>\r\n\
         \r\n\
         Pay the invoice today.\r\n"
    )
}

/// A bare CR: a reader that ends lines at CR alone sees a second From.
fn bare_cr(n: usize) -> String {
    format!(
        "From: {MALLORY}\r\n\
         To: {LIST}\r\n\
         Subject: Hello\rFrom: {CEO}\r\n\
         Message-ID: <bare-cr-{n}@example.net>\r\n\
         \r\n\
         Pay the invoice today.\r\n"
    )
}

/// Whose signature a post of Mallory's program carries.
#[derive(Clone, Copy)]
enum SignedBy {
    Mallory,
    /// A key Mallory holds that is not on the roster.
    Eve,
    Nobody,
}

/// Mallory's own program: seals each message, deposits its key with her key and submits it,
/// with only her own From in the outer headers, as she signs it in (a): the servers see an
/// ordinary post of hers, and `open` finds no outer header that differs from what she signed.
/// Returns the posts' key ids.
fn mallory_posts(mallory: &Person, eve: &Person, messages: &[(String, SignedBy)]) -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let home = Home::at(&mallory.home);
        let me = home.load_identity("").unwrap();
        let eve = Home::at(&eve.home).load_identity("").unwrap();
        let list = home.list(&Address::parse(LIST).unwrap()).unwrap();
        let from = Address::parse(MALLORY).unwrap();
        let mut key_ids = Vec::new();
        for (message, signed_by) in messages {
            let signer = match signed_by {
                SignedBy::Eve => &eve,
                SignedBy::Mallory | SignedBy::Nobody => &me,
            };
            let mut sealed = seal(OsRng, message.as_bytes(), signer, &list.key_server).unwrap();
            if let SignedBy::Nobody = signed_by {
                sealed.message = without_signature(&sealed);
            }
            let server_cert = home.server_cert(&list).await.unwrap();
            Server::key_server(&list.key_server)
                .deposit(
                    &me,
                    &list.list,
                    &sealed.key_id,
                    &sealed.session_key,
                    &server_cert,
                )
                .await
                .unwrap();
            let outer = proved_by(
                &only_from(&sealed.message, &format!("Mallory <{MALLORY}>")),
                &me,
                LIST,
            );
            submit(&list.smtp, &from, &list.list, &outer).await.unwrap();
            key_ids.push(sealed.key_id.to_string());
        }
        key_ids
    })
}

/// The sealed post re-encrypted under the same session key with no signature inside.
fn without_signature(sealed: &Sealed) -> Vec<u8> {
    let post = EncryptedPost::parse(&sealed.message).unwrap();
    let (inner, _) = decrypt_packets(&post.packets, &sealed.session_key, &[], 0).unwrap();
    let mut builder =
        pgp::composed::MessageBuilder::from_bytes("", inner).seipd_v1(OsRng, POST_CIPHER);
    builder
        .set_session_key(pgp::composed::RawSessionKey::from(
            &sealed.session_key.as_bytes()[..],
        ))
        .unwrap();
    let armored = armor_message(&builder.to_vec(OsRng).unwrap());
    let text = String::from_utf8(sealed.message.clone()).unwrap();
    const END: &str = "-----END PGP MESSAGE-----\r\n";
    let start = text.find("-----BEGIN PGP MESSAGE-----").unwrap();
    let end = text.find(END).unwrap() + END.len();
    let mut outer = text.as_bytes()[..start].to_vec();
    outer.extend_from_slice(&armored);
    outer.extend_from_slice(&text.as_bytes()[end..]);
    outer
}

/// The outer message with its (unsigned) From lines replaced by one naming `from`.
fn only_from(outer: &[u8], from: &str) -> Vec<u8> {
    let text = String::from_utf8(outer.to_vec()).unwrap();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap();
    let mut rewritten = format!("From: {from}\r\n");
    for line in headers.split("\r\n") {
        if !line.to_ascii_lowercase().starts_with("from:") {
            rewritten.push_str(line);
            rewritten.push_str("\r\n");
        }
    }
    rewritten.push_str("\r\n");
    rewritten.push_str(body);
    rewritten.into_bytes()
}

/// (a) as shown: exactly one verified header, ours, first, naming Mallory; none of hers.
fn assert_one_true_verified_header(shown: &str) {
    assert!(
        shown.starts_with(&format!("Hushlist-Verified-Signer: {MALLORY} (")),
        "{shown}"
    );
    assert_eq!(
        shown
            .to_ascii_lowercase()
            .matches("hushlist-verified")
            .count(),
        1,
        "{shown}"
    );
    assert!(!shown.contains(CEO), "{shown}");
    let parsed = mail_parser::MessageParser::new()
        .parse(shown.as_bytes())
        .unwrap();
    let ours = parsed
        .headers()
        .iter()
        .filter(|h| {
            h.name()
                .to_ascii_lowercase()
                .starts_with("hushlist-verified")
        })
        .count();
    assert_eq!(ours, 1, "{shown}");
    assert!(
        shown.contains("The chief executive approves the transfer."),
        "{shown}"
    );
}

/// (b) and (c) refused, the refusal naming the signer and the address claimed.
fn assert_refused_naming(err: &str, claimed: &str) {
    assert!(err.contains(&format!("signed by {MALLORY}")), "{err}");
    assert!(err.contains(claimed), "{err}");
}

#[test]
fn a_member_cannot_plant_a_verified_header_or_write_as_someone_else() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, served) = served_to_mailboxes(dir.path());
    let olivia = Person::new(dir.path(), "olivia@example.org");
    let mallory = Person::new(dir.path(), MALLORY);
    let alice = Person::new(dir.path(), ALICE);
    let bob = Person::new(dir.path(), "bob@example.net");
    let eve = Person::new(dir.path(), "eve@example.com");
    list_with(
        &served,
        LIST,
        &olivia,
        &[(&mallory, "member"), (&alice, "member"), (&bob, "member")],
    );

    let key_ids = mallory_posts(
        &mallory,
        &eve,
        &[
            (planted(1), SignedBy::Mallory),
            (two_froms(1), SignedBy::Mallory),
            (as_alice(1), SignedBy::Mallory),
            (with_sender(1), SignedBy::Mallory),
            (bare_cr(1), SignedBy::Mallory),
            (planted(2), SignedBy::Eve),
            (planted(3), SignedBy::Nobody),
        ],
    );
    let copies = sink.wait_for_copies(bob.address, 7);
    let copy_of = |key_id: &str| {
        copies
            .iter()
            .find(|c| String::from_utf8_lossy(c).contains(key_id))
            .unwrap_or_else(|| panic!("no copy with key {key_id}"))
            .clone()
    };

    // `open` on the delivered copies.
    let shown = ok(hushlist(&bob.home, &["open"], &copy_of(&key_ids[0])));
    assert_one_true_verified_header(&shown);
    let err = refused(hushlist(&bob.home, &["open"], &copy_of(&key_ids[1])));
    assert_refused_naming(&err, CEO);
    let err = refused(hushlist(&bob.home, &["open"], &copy_of(&key_ids[2])));
    assert_refused_naming(&err, ALICE);
    let err = refused(hushlist(&bob.home, &["open"], &copy_of(&key_ids[3])));
    assert_refused_naming(&err, &format!("Sender: {CEO}"));
    let err = refused(hushlist(&bob.home, &["open"], &copy_of(&key_ids[4])));
    assert_refused_naming(&err, "bare CR");
    let err = refused(hushlist(&bob.home, &["open"], &copy_of(&key_ids[5])));
    assert!(err.contains("signature does not verify"), "{err}");
    let err = refused(hushlist(&bob.home, &["open"], &copy_of(&key_ids[6])));
    assert!(err.contains("not signed"), "{err}");

    // `archive --open` on the archived posts.
    let listing = ok(bob.run(&["archive", LIST]));
    let archive_id = |key_id: &str| {
        listing
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(key_id))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("key {key_id} not in {listing}"))
            .to_owned()
    };
    let ids: Vec<String> = key_ids[..3].iter().map(|k| archive_id(k)).collect();
    assert_one_true_verified_header(&ok(bob.run(&["archive", LIST, "--open", &ids[0]])));
    let err = refused(bob.run(&["archive", LIST, "--open", &ids[1]]));
    assert_refused_naming(&err, CEO);
    let err = refused(bob.run(&["archive", LIST, "--open", &ids[2]]));
    assert_refused_naming(&err, ALICE);

    // `archive --download`: (a) saved as shown, (b) and (c) not saved, each named.
    let download = dir.path().join("bob-archive");
    let out = bob.run(&["archive", LIST, "--download", download.to_str().unwrap()]);
    let problems = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = ok(out);
    assert!(report.contains("saved 1 post(s)"), "{report}");
    assert!(report.contains("6 unreadable"), "{report}");
    let saved = std::fs::read_to_string(download.join(format!("{}.eml", ids[0]))).unwrap();
    assert_one_true_verified_header(&saved);
    for (id, claimed) in [(&ids[1], CEO), (&ids[2], ALICE)] {
        assert!(!download.join(format!("{id}.eml")).exists());
        let problem = problems
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("post {id}:")))
            .unwrap_or_else(|| panic!("post {id} not named in {problems}"));
        assert_refused_naming(problem, claimed);
    }

    // `list held --open`: the owner looks at held posts before releasing them.
    ok(olivia.run(&["list", "policy", LIST, "--moderation", "all"]));
    let key_ids = mallory_posts(
        &mallory,
        &eve,
        &[
            (planted(4), SignedBy::Mallory),
            (two_froms(2), SignedBy::Mallory),
            (as_alice(2), SignedBy::Mallory),
        ],
    );
    let held = ok(olivia.run(&["list", "held", LIST]));
    let held_id = |key_id: &str| {
        held.lines()
            .find(|l| l.contains(&format!("(key {key_id})")))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("key {key_id} not held: {held}"))
            .to_owned()
    };
    let ids: Vec<String> = key_ids.iter().map(|k| held_id(k)).collect();
    assert_one_true_verified_header(&ok(olivia.run(&["list", "held", LIST, "--open", &ids[0]])));
    let err = refused(olivia.run(&["list", "held", LIST, "--open", &ids[1]]));
    assert_refused_naming(&err, CEO);
    let err = refused(olivia.run(&["list", "held", LIST, "--open", &ids[2]]));
    assert_refused_naming(&err, ALICE);
}
