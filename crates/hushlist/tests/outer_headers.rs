//! Issue 25, hole 5: the outer headers of a delivered copy are signed by nobody, yet a mail
//! reader shows them beside a good signature. Someone on the way from the list server to a
//! member (a relay, or whoever can edit the member's mail) changes the copy of Alice's post
//! that Bob opens: its To, Date and Subject and the name in its From, then its Reply-To, then
//! its From address. `hushlist open` flags each change it shows the post with, naming the
//! outer value and what Alice signed (the `HP-Outer` records inside) or the list writes, and
//! refuses a copy whose Reply-To or From points anywhere but at Alice or the list. The copy
//! as delivered and the post as archived are shown with no flag. (A member's replay of
//! Alice's signed post is refused before its headers are looked at: see `bound_posts.rs` and
//! the key server's `deposit_binding.rs`.)

mod common;

use std::path::Path;

use common::{Person, Served, list_with, ok, refused};
use hushlist_peers::SmtpSink;

const LIST: &str = "team@lists.example.org";
const ALICE: &str = "alice@example.net";
const MISMATCH: &str = "Hushlist-Verified-Outer-Mismatch: ";

/// `copy` with its header field `name` (with any folded lines) replaced by `field`, or
/// `field` added when it has none.
fn edited(copy: &[u8], name: &str, field: &str) -> Vec<u8> {
    let text = String::from_utf8(copy.to_vec()).unwrap();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap();
    let mut out = String::new();
    let mut replaced = false;
    let mut in_field = false;
    for line in headers.split("\r\n") {
        if in_field && line.starts_with([' ', '\t']) {
            continue;
        }
        in_field = line
            .to_ascii_lowercase()
            .starts_with(&format!("{}:", name.to_ascii_lowercase()));
        if in_field {
            if !replaced {
                out.push_str(field);
                out.push_str("\r\n");
                replaced = true;
            }
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if !replaced {
        out.push_str(field);
        out.push_str("\r\n");
    }
    format!("{out}\r\n{body}").into_bytes()
}

/// The value of the header `name` in `copy`, unfolded.
fn header(copy: &[u8], name: &str) -> String {
    let message = mail_parser::MessageParser::new().parse(copy).unwrap();
    message
        .header_raw(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The flags a shown post carries, in order.
fn flags(shown: &str) -> Vec<String> {
    shown
        .lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix(MISMATCH))
        .map(str::to_owned)
        .collect()
}

/// `hushlist serve` delivering to `sink`, with a list Olivia owns and these members on it,
/// each using the list from their own home; copies From "Name via list" (`always`) or From
/// the author (`never`), whatever example.net's DMARC policy.
fn a_list(
    dir: &Path,
    sink: &SmtpSink,
    members: &[&'static str],
    from_rewrite: &str,
) -> (Served, Vec<Person>) {
    let served = Served::start(&dir.join("hushlist-data"), sink.port, "lists.example.org");
    let olivia = Person::new(dir, "olivia@example.org");
    let members: Vec<Person> = members.iter().map(|a| Person::new(dir, a)).collect();
    let roles: Vec<(&Person, &str)> = members.iter().map(|m| (m, "member")).collect();
    list_with(&served, LIST, &olivia, &roles);
    ok(olivia.run(&["list", "policy", LIST, "--from-rewrite", from_rewrite]));
    (served, members)
}

#[test]
fn a_copy_whose_outer_headers_were_changed_on_the_way_is_flagged_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&dir.path().join("mailboxes"));
    let (_served, members) = a_list(dir.path(), &sink, &[ALICE, "bob@example.net"], "always");
    let [alice, bob] = &members[..] else {
        unreachable!()
    };
    ok(alice.run_with(
        &["send", "--list", LIST, "--subject", "Bank details"],
        b"Our account stays the same.\n",
    ));
    let copy = sink.wait_for_copies(bob.address, 1).remove(0);

    // As delivered: nothing to flag.
    let shown = ok(bob.run_with(&["open"], &copy));
    assert!(
        shown.starts_with(&format!("Hushlist-Verified-Signer: {ALICE} (")),
        "{shown}"
    );
    assert_eq!(flags(&shown), Vec::<String>::new(), "{shown}");

    // To, Date, Subject and the From name changed on the way: shown, each change flagged.
    let signed_date = header(&copy, "Date");
    let changed = [
        ("To", "To: board@example.org"),
        ("Date", "Date: Fri, 01 Jan 2027 09:00:00 +0000"),
        ("Subject", "Subject: URGENT - new bank details"),
        (
            "From",
            "From: \"Alice Example (CFO) via team\" <team@lists.example.org>",
        ),
    ]
    .iter()
    .fold(copy.clone(), |copy, (name, field)| {
        edited(&copy, name, field)
    });
    let shown = ok(bob.run_with(&["open"], &changed));
    assert!(
        shown.starts_with(&format!("Hushlist-Verified-Signer: {ALICE} (")),
        "{shown}"
    );
    assert_eq!(
        flags(&shown),
        [
            format!(
                "From: the outer name is \"Alice Example (CFO) via team\" but the list names {ALICE} \"{ALICE} via team\""
            ),
            format!("To: the outer header is \"board@example.org\" but {ALICE} signed \"{LIST}\""),
            format!(
                "Date: the outer header is \"Fri, 01 Jan 2027 09:00:00 +0000\" but {ALICE} signed \"{signed_date}\""
            ),
            format!(
                "Subject: the outer header is \"URGENT - new bank details\" but {ALICE} signed \"[...]\""
            ),
        ],
        "{shown}"
    );
    assert!(shown.contains("Subject: Bank details"), "{shown}");

    // A From name whose encoded word decodes to line breaks: flagged on one line, so it
    // cannot add headers or a body of its own to what `open` prints.
    let injected = edited(
        &copy,
        "From",
        "From: =?utf-8?q?x=0D=0AFrom:_CFO_<cfo@corp.example>=0D=0ASubject:_Wire_now=0D=0A=0D=0APay_now?= <team@lists.example.org>",
    );
    let shown = ok(bob.run_with(&["open"], &injected));
    assert_eq!(
        flags(&shown),
        [format!(
            "From: the outer name is \"x From: CFO <cfo@corp.example> Subject: Wire now Pay now\" but the list names {ALICE} \"{ALICE} via team\""
        )],
        "{shown}"
    );
    assert!(
        !shown
            .lines()
            .any(|l| l.starts_with("From: CFO") || l.starts_with("Pay now")),
        "{shown}"
    );

    // A Reply-To elsewhere: a reply would go to whoever changed it. Refused.
    let err = refused(bob.run_with(
        &["open"],
        &edited(&copy, "Reply-To", "Reply-To: payments@evil.example"),
    ));
    assert!(
        err.contains("outer Reply-To names payments@evil.example"),
        "{err}"
    );
    assert!(err.contains(&format!("signed by {ALICE}")), "{err}");

    // A Mail-Followup-To or Mail-Reply-To elsewhere: a list reply in mutt would go there.
    // Refused. A read receipt asked for on the way: flagged.
    for header in ["Mail-Followup-To", "Mail-Reply-To"] {
        let err = refused(bob.run_with(
            &["open"],
            &edited(&copy, header, &format!("{header}: payments@evil.example")),
        ));
        assert!(
            err.contains(&format!("outer {header} names payments@evil.example")),
            "{err}"
        );
    }
    let shown = ok(bob.run_with(
        &["open"],
        &edited(
            &copy,
            "Disposition-Notification-To",
            "Disposition-Notification-To: tracker@evil.example",
        ),
    ));
    assert_eq!(
        flags(&shown),
        [format!(
            "Disposition-Notification-To: the outer header asks for a read receipt to \"tracker@evil.example\", which neither the list nor {ALICE} wrote"
        )],
        "{shown}"
    );

    // A From that is neither the list nor Alice. Refused.
    let err = refused(bob.run_with(
        &["open"],
        &edited(&copy, "From", "From: Alice <alice@evil.example>"),
    ));
    assert!(err.contains("outer From names alice@evil.example"), "{err}");
    assert!(err.contains(&format!("signed by {ALICE}")), "{err}");

    // A Sender naming no address, only terminal escapes (cursor up, erase line): the
    // refusal quotes it with the escapes written out, so a terminal does not run them.
    let err = refused(bob.run_with(
        &["open"],
        &edited(&copy, "Sender", "Sender: =?utf-8?q?=1B[1A=1B[2Kall_good?="),
    ));
    assert!(!err.contains('\u{1b}'), "{err:?}");
    assert!(err.contains("\\u{1b}[1A\\u{1b}[2Kall good"), "{err:?}");

    // The post as the list server keeps it (Alice's own outer headers): nothing to flag.
    let listing = ok(bob.run(&["archive", LIST]));
    let id = listing
        .lines()
        .find_map(|l| {
            l.split_whitespace()
                .next()
                .filter(|w| w.parse::<u64>().is_ok())
        })
        .unwrap_or_else(|| panic!("no post in {listing}"))
        .to_owned();
    let shown = ok(bob.run(&["archive", LIST, "--open", &id]));
    assert!(
        shown.starts_with(&format!("Hushlist-Verified-Signer: {ALICE} (")),
        "{shown}"
    );
    assert_eq!(flags(&shown), Vec::<String>::new(), "{shown}");
}

/// Issue 19: a list that keeps the author's From (their domain does not enforce DMARC, or the
/// owners say `never`) delivers a copy whose From names the signer, which a mail reader
/// compares with the signature's user ids; `hushlist open` flags nothing on it as delivered,
/// and flags a name changed on the way.
#[test]
fn a_copy_from_the_author_opens_unflagged_and_a_name_changed_on_the_way_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&dir.path().join("mailboxes"));
    let (_served, members) = a_list(dir.path(), &sink, &[ALICE, "bob@example.net"], "never");
    let [alice, bob] = &members[..] else {
        unreachable!()
    };
    ok(alice.run_with(
        &["send", "--list", LIST, "--subject", "Bank details"],
        b"Our account stays the same.\n",
    ));
    let copy = sink.wait_for_copies(bob.address, 1).remove(0);
    let message = mail_parser::MessageParser::new().parse(&copy).unwrap();
    let from = message.from().unwrap().first().unwrap();
    assert_eq!(from.address(), Some(ALICE));
    assert!(message.reply_to().is_none());

    let shown = ok(bob.run_with(&["open"], &copy));
    assert!(
        shown.starts_with(&format!("Hushlist-Verified-Signer: {ALICE} (")),
        "{shown}"
    );
    assert_eq!(flags(&shown), Vec::<String>::new(), "{shown}");

    let changed = edited(
        &copy,
        "From",
        &format!("From: \"Alice Example (CFO)\" <{ALICE}>"),
    );
    let shown = ok(bob.run_with(&["open"], &changed));
    let flagged = flags(&shown);
    assert_eq!(flagged.len(), 1, "{shown}");
    assert!(
        flagged[0].starts_with("From: the outer header is")
            && flagged[0].contains("Alice Example (CFO)"),
        "{shown}"
    );
}
