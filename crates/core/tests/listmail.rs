//! The delivered form of a post: golden files for the shared and the one-recipient copy,
//! and checks that the rewritten message is still the same encrypted post.

use std::path::PathBuf;

use hushlist_core::listmail::{
    Author, AuthorDmarc, CopyFrom, ListCopy, ListHeaders, UnsubscribeKey, bounce_sender,
    verp_sender,
};
use hushlist_core::outer::{EncryptedPost, OuterError};
use hushlist_core::roster::{FromRewrite, Member, Policy, Role, Roster, sign_genesis};
use hushlist_core::{Address, SecretIdentity};
use mail_parser::MessageParser;
use rand::rngs::OsRng;

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

/// The author of the golden post as the roster names them.
fn alice() -> Author {
    Author {
        address: Address::parse("alice@example.org").unwrap(),
        name: "Alice Liddell".into(),
    }
}

#[test]
fn shared_and_single_copies_match_their_golden_files() {
    let post = std::fs::read(golden("post.eml")).unwrap();
    let copy = ListCopy::new(&post, &team(), &alice(), CopyFrom::ViaList).unwrap();
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
    let delivered = ListCopy::new(&post, &team(), &alice(), CopyFrom::ViaList)
        .unwrap()
        .for_one(&team(), "https://u.example/x");

    let reparsed = EncryptedPost::parse(&delivered).unwrap();
    assert_eq!(reparsed.key_id, original.key_id);
    assert_eq!(reparsed.packets, original.packets);
    assert_eq!(reparsed.from.as_str(), "team@lists.example.org");

    let message = MessageParser::new().parse(&delivered).unwrap();
    let from = message.from().unwrap().first().unwrap();
    assert_eq!(from.name(), Some("Alice Liddell via team"));
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

/// Issue 19: a copy From the author keeps their address, which an OpenPGP client compares
/// with the post's signer; a reply goes to that From (no Reply-To), a reply to the list to
/// List-Post.
#[test]
fn a_copy_from_the_author_carries_their_address_and_no_reply_to() {
    let post = std::fs::read(golden("post.eml")).unwrap();
    let delivered = ListCopy::new(&post, &team(), &alice(), CopyFrom::Author)
        .unwrap()
        .shared(&team());
    let message = MessageParser::new().parse(&delivered).unwrap();
    let from: Vec<_> = message.from().unwrap().iter().collect();
    assert_eq!(from.len(), 1);
    assert_eq!(from[0].address(), Some("alice@example.org"));
    assert_eq!(from[0].name(), Some("Alice Liddell"));
    assert!(message.reply_to().is_none());
    assert_eq!(
        message.header_raw("List-Post").map(str::trim),
        Some("<mailto:team@lists.example.org>")
    );
    // Still the same encrypted post, now From its author.
    let reparsed = EncryptedPost::parse(&delivered).unwrap();
    assert_eq!(reparsed.from.as_str(), "alice@example.org");
    assert_eq!(
        reparsed.packets,
        EncryptedPost::parse(&post).unwrap().packets
    );
}

#[test]
fn the_from_follows_the_list_rule_then_the_author_domain() {
    assert_eq!(
        CopyFrom::by_rule(FromRewrite::Always),
        Some(CopyFrom::ViaList)
    );
    assert_eq!(
        CopyFrom::by_rule(FromRewrite::Never),
        Some(CopyFrom::Author)
    );
    assert_eq!(CopyFrom::by_rule(FromRewrite::Dmarc), None);
    assert_eq!(
        CopyFrom::for_author_domain(AuthorDmarc::Enforced),
        CopyFrom::ViaList
    );
    assert_eq!(
        CopyFrom::for_author_domain(AuthorDmarc::NotEnforced),
        CopyFrom::Author
    );
    // A failed lookup is the safe side: a rewritten From is never refused.
    assert_eq!(
        CopyFrom::for_author_domain(AuthorDmarc::Unknown),
        CopyFrom::ViaList
    );
}

/// Rosters signed before `from_rewrite` existed still read, with the DMARC rule.
#[test]
fn a_policy_without_from_rewrite_reads_as_dmarc() {
    let old = r#"{"posters":"members","key_follows":"current_roster","new_members_read_old":false,"delivery":"pull","key_lifetime_secs":null,"moderation":"none"}"#;
    let policy: Policy = serde_json::from_str(old).unwrap();
    assert_eq!(policy.from_rewrite, FromRewrite::Dmarc);
    assert_eq!(policy, Policy::default());
}

/// Issue 25, hole 5: nothing outside the encryption proves who wrote a header, so the copy
/// keeps only the post's addressing, threading and MIME headers and writes the rest itself.
#[test]
fn every_header_the_sender_wrote_outside_the_fixed_set_is_replaced_or_dropped() {
    let post = std::fs::read(golden("post.eml")).unwrap();
    let text = String::from_utf8(post).unwrap();
    let forged = text
        .replacen(
            "From: Alice <alice@example.org>\r\n",
            "Received: from attacker.example ([192.0.2.66])\r\n\
             DKIM-Signature: v=1; d=example.org; b=AAAA\r\n\
             Authentication-Results: lists.example.org; dkim=pass\r\n\
             ARC-Seal: i=1; cv=none; b=AAAA\r\n\
             From: \"Alice Example (CFO)\" <alice@example.org>\r\n\
             Sender: cfo@example.org\r\n\
             Reply-To: <payments@evil.example>\r\n\
             X-Priority: 1\r\n\
             List-Id: <evil.example.com>\r\n\
             Precedence: bulk\r\n\
             Hushlist-Post-Proof: v=1; sig=AAAA\r\n",
            1,
        )
        .replacen("Subject: [...]", "Subject: URGENT - new bank details", 1);
    let delivered = ListCopy::new(forged.as_bytes(), &team(), &alice(), CopyFrom::ViaList)
        .unwrap()
        .shared(&team());
    let message = MessageParser::new().parse(&delivered).unwrap();
    let text = String::from_utf8_lossy(&delivered);
    for planted in [
        "attacker.example",
        "DKIM-Signature",
        "Authentication-Results",
        "ARC-Seal",
        "Alice Example (CFO)",
        "cfo@example.org",
        "payments@evil.example",
        "X-Priority",
        "evil.example.com",
        "Precedence: bulk",
        "Hushlist-Post-Proof",
        "URGENT",
    ] {
        assert!(!text.contains(planted), "{planted} in {text}");
    }
    let count = |name: &str| text.lines().filter(|l| l.starts_with(name)).count();
    for header in [
        "From:",
        "Reply-To:",
        "Subject:",
        "To:",
        "Cc:",
        "Date:",
        "Message-ID:",
    ] {
        assert_eq!(count(header), 1, "{header} in {text}");
    }
    assert_eq!(message.subject(), Some("[...]"));
    assert_eq!(
        message.reply_to().unwrap().first().unwrap().address(),
        Some("alice@example.org")
    );
    assert_eq!(
        message.from().unwrap().first().unwrap().name(),
        Some("Alice Liddell via team")
    );
    assert!(message.header_raw("List-Unsubscribe-Post").is_none());
    assert!(
        message
            .header_raw("List-Unsubscribe")
            .unwrap()
            .contains("mailto:team-leave@lists.example.org")
    );
    // The copy is still the same encrypted post, with what a member's client needs.
    let reparsed = EncryptedPost::parse(&delivered).unwrap();
    assert_eq!(
        reparsed.key_server.as_deref(),
        Some("https://keys.example.org")
    );
}

/// The roster member as `user_id`'s certificate names them, at `address`.
fn member(user_id: &str, address: &str) -> Member {
    Member {
        address: Address::parse(address).unwrap(),
        cert: SecretIdentity::generate(OsRng, user_id)
            .unwrap()
            .cert()
            .clone(),
        role: Role::Member,
        since: 1,
    }
}

#[test]
fn the_author_is_named_by_their_roster_certificate_in_one_line() {
    let named = |user_id: &str| Author::of_member(&member(user_id, "alice@example.org")).name;
    assert_eq!(named("Alice Liddell <alice@example.org>"), "Alice Liddell");
    assert_eq!(named("\"Alice L.\" <Alice@Example.org>"), "Alice L.");
    assert_eq!(named("alice@example.org"), "alice@example.org");
    // A user id for another address does not name this one.
    assert_eq!(named("Bob <bob@example.org>"), "alice@example.org");
    // A line break would end the From header and start another.
    assert_eq!(
        named("Alice\r\nBcc: everyone@example.org <alice@example.org>"),
        "Alice Bcc: everyone@example.org"
    );
    assert_eq!(
        named(&format!("{} <alice@example.org>", "A".repeat(200))).len(),
        64
    );
    // Whatever the name, the copy's From stays one header naming the list.
    let author = Author::of_member(&member(
        "Ali\"ce\t<x>, Eve <alice@example.org>",
        "alice@example.org",
    ));
    let post = std::fs::read(golden("post.eml")).unwrap();
    let delivered = ListCopy::new(&post, &team(), &author, CopyFrom::ViaList)
        .unwrap()
        .shared(&team());
    let message = MessageParser::new().parse(&delivered).unwrap();
    let from: Vec<_> = message.from().unwrap().iter().collect();
    assert_eq!(from.len(), 1);
    assert_eq!(from[0].address(), Some("team@lists.example.org"));
    assert_eq!(from[0].name(), Some(author.via(&team().list).as_str()));
}

#[test]
fn the_author_of_a_post_is_looked_up_on_the_roster() {
    let owner = SecretIdentity::generate(OsRng, "Alice Liddell <alice@example.org>").unwrap();
    let genesis = sign_genesis(
        OsRng,
        &owner,
        Address::parse("alice@example.org").unwrap(),
        team().list,
        Policy::default(),
        0,
    )
    .unwrap();
    let roster = Roster::genesis(genesis).unwrap();
    let post = std::fs::read(golden("post.eml")).unwrap();
    assert_eq!(Author::of_post(&post, &roster).unwrap(), alice());
    // Someone not on the roster (any more) is named by their address.
    let text = String::from_utf8(post).unwrap();
    let theirs = text.replace("Alice <alice@example.org>", "Carol <carol@example.org>");
    assert_eq!(
        Author::of_post(theirs.as_bytes(), &roster).unwrap().name,
        "carol@example.org"
    );
    let raw = b"To: team@lists.example.org\r\nSubject: x\r\n\r\nbody\r\n";
    assert_eq!(
        Author::of_post(raw, &roster).unwrap_err(),
        OuterError::BadFrom
    );
}

#[test]
fn a_message_without_headers_is_refused() {
    assert_eq!(
        ListCopy::new(b"\r\nbody\r\n", &team(), &alice(), CopyFrom::ViaList).unwrap_err(),
        OuterError::NotAMessage
    );
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
