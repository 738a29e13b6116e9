//! The delivered form of a post: golden files for the shared and the one-recipient copy,
//! and checks that the rewritten message is still the same encrypted post.

use std::path::PathBuf;

use hushlist_core::Address;
use hushlist_core::listmail::{ListCopy, ListHeaders, UnsubscribeKey, bounce_sender, verp_sender};
use hushlist_core::outer::EncryptedPost;
use mail_parser::MessageParser;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Compares with the golden file, or rewrites it when HUSHLIST_BLESS=1.
fn assert_golden(name: &str, actual: &[u8]) {
    let path = golden(name);
    if std::env::var_os("HUSHLIST_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read(&path).unwrap();
    assert!(
        expected == actual,
        "{name} differs from its golden file; got:\n{}",
        String::from_utf8_lossy(actual)
    );
}

fn team() -> ListHeaders {
    ListHeaders {
        list: Address::parse("team@lists.example.org").unwrap(),
        description: Some("Team, Überall".into()),
        archive_url: Some(
            "https://lists.example.org/v1/lists/team@lists.example.org/archive".into(),
        ),
    }
}

#[test]
fn shared_and_single_copies_match_their_golden_files() {
    let post = std::fs::read(golden("post.eml")).unwrap();
    let copy = ListCopy::new(&post, &team()).unwrap();
    assert_golden("post.shared.eml", &copy.shared(&team()));
    assert_golden(
        "post.one.eml",
        &copy.for_one(&team(), "https://lists.example.org/u/tok3n"),
    );
}

#[test]
fn the_copy_is_the_same_encrypted_post_from_the_list() {
    let post = std::fs::read(golden("post.eml")).unwrap();
    let original = EncryptedPost::parse(&post).unwrap();
    let delivered = ListCopy::new(&post, &team())
        .unwrap()
        .for_one(&team(), "https://u.example/x");

    let reparsed = EncryptedPost::parse(&delivered).unwrap();
    assert_eq!(reparsed.key_id, original.key_id);
    assert_eq!(reparsed.packets, original.packets);
    assert_eq!(reparsed.from.as_str(), "team@lists.example.org");

    let message = MessageParser::new().parse(&delivered).unwrap();
    let from = message.from().unwrap().first().unwrap();
    assert_eq!(from.name(), Some("Alice via team"));
    let reply_to = message.reply_to().unwrap().first().unwrap();
    assert_eq!(reply_to.address(), Some("alice@example.org"));
    assert_eq!(
        message.header_raw("Precedence").map(str::trim),
        Some("list")
    );
    assert_eq!(
        message.header_raw("List-Unsubscribe-Post").map(str::trim),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(
        message
            .header_raw("List-Id")
            .unwrap()
            .contains("<team.lists.example.org>")
    );
    assert_eq!(message.message_id(), Some("golden@example.org"));
    // The body after the header block is untouched.
    let body = |raw: &[u8]| {
        let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        raw[at..].to_vec()
    };
    assert_eq!(body(&delivered), body(&post));
}

#[test]
fn headers_the_sender_set_for_the_list_are_replaced_and_reply_to_is_kept() {
    let post = std::fs::read(golden("post.eml")).unwrap();
    let mut forged =
        b"List-Id: <evil.example.com>\r\nPrecedence: bulk\r\nReply-To: <replies@example.org>\r\n"
            .to_vec();
    forged.extend_from_slice(&post);
    let delivered = ListCopy::new(&forged, &team()).unwrap().shared(&team());
    let message = MessageParser::new().parse(&delivered).unwrap();
    let text = String::from_utf8_lossy(&delivered);
    assert!(!text.contains("evil.example.com"));
    assert!(!text.contains("Precedence: bulk"));
    assert_eq!(
        text.lines().filter(|l| l.starts_with("Reply-To:")).count(),
        1
    );
    assert_eq!(
        message.reply_to().unwrap().first().unwrap().address(),
        Some("replies@example.org")
    );
    assert!(message.header_raw("List-Unsubscribe-Post").is_none());
    assert!(
        message
            .header_raw("List-Unsubscribe")
            .unwrap()
            .contains("mailto:team-leave@lists.example.org")
    );
}

#[test]
fn a_message_without_from_is_refused() {
    let raw = b"To: team@lists.example.org\r\nSubject: x\r\n\r\nbody\r\n";
    assert!(ListCopy::new(raw, &team()).is_err());
}

#[test]
fn verp_names_the_recipient_in_the_envelope_sender() {
    let list = Address::parse("team@lists.example.org").unwrap();
    let bob = Address::parse("bob+tag@Example.COM").unwrap();
    assert_eq!(
        verp_sender(&list, &bob),
        "team-bounces+bob+tag=example.com@lists.example.org"
    );
    assert!(Address::parse(&verp_sender(&list, &bob)).is_ok());
    assert_eq!(bounce_sender(&list), "team-bounces@lists.example.org");
}

#[test]
fn unsubscribe_tokens_name_list_and_member_and_only_their_key_accepts_them() {
    let key = UnsubscribeKey::new(b"a secret of the list server");
    let list = Address::parse("team@lists.example.org").unwrap();
    let bob = Address::parse("bob+x/y?z@example.com").unwrap();
    let token = key.token(&list, &bob);
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
        "usable as a URL path segment: {token}"
    );
    assert_eq!(key.verify(&token), Some((list.clone(), bob.clone())));
    assert_eq!(UnsubscribeKey::new(b"another secret").verify(&token), None);
    // Naming someone else with the same MAC fails.
    let (_, mac) = token.split_once('.').unwrap();
    let alice = Address::parse("alice@example.com").unwrap();
    let (forged_payload, _) = key
        .token(&list, &alice)
        .split_once('.')
        .map(|(p, m)| (p.to_owned(), m.to_owned()))
        .unwrap();
    assert_eq!(key.verify(&format!("{forged_payload}.{mac}")), None);
    for bad in ["", ".", "abc", "abc.def", "###.00"] {
        assert_eq!(key.verify(bad), None, "{bad}");
    }
}
