//! Bounce reading against bounces as MTAs send them. `postfix-hard.eml` is what Postfix 3.7
//! sent to a VERP address after a remote server refused the recipient (captured on loopback);
//! `postfix-delayed.eml` is the same report turned into a delay warning; the qmail, Exim and
//! vacation samples follow those programs' fixed wording.

use hushlist_core::Address;
use hushlist_core::bounce::{BouncePolicy, BounceReading, BounceScore, Severity, read_bounce};
use hushlist_core::listmail::{ListMailbox, join_confirm_address, probe_sender, verp_sender};
use proptest::prelude::*;

fn golden(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/golden/bounces/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn failed(name: &str) -> Vec<(Option<String>, Severity, Option<String>)> {
    match read_bounce(&golden(name)) {
        BounceReading::Failed(recipients) => recipients
            .into_iter()
            .map(|r| (r.address.map(|a| a.to_string()), r.severity, r.status))
            .collect(),
        other => panic!("{name} read as {other:?}"),
    }
}

#[test]
fn a_postfix_dsn_names_the_recipient_status_and_diagnostic() {
    let BounceReading::Failed(recipients) = read_bounce(&golden("postfix-hard.eml")) else {
        panic!("not read as a failure");
    };
    assert_eq!(recipients.len(), 1);
    let r = &recipients[0];
    assert_eq!(r.address.as_ref().unwrap().as_str(), "bob@gone.example");
    assert_eq!(r.severity, Severity::Hard);
    assert_eq!(r.status.as_deref(), Some("5.1.1"));
    assert_eq!(
        r.diagnostic.as_deref(),
        Some("smtp; 550 5.1.1 No such user here")
    );
}

#[test]
fn a_delay_warning_is_not_a_failure() {
    assert!(matches!(
        read_bounce(&golden("postfix-delayed.eml")),
        BounceReading::NotAFailure(_)
    ));
}

#[test]
fn qmail_and_exim_plain_text_bounces_are_read() {
    assert_eq!(
        failed("qmail.eml"),
        vec![(
            Some("carol@gone.example".into()),
            Severity::Hard,
            Some("5.1.1".into())
        )]
    );
    assert_eq!(
        failed("exim-quota.eml"),
        vec![(
            Some("dave@gone.example".into()),
            Severity::Soft,
            Some("4.2.2".into())
        )]
    );
}

#[test]
fn auto_replies_and_ordinary_mail_are_not_failures() {
    assert!(matches!(
        read_bounce(&golden("vacation.eml")),
        BounceReading::NotAFailure(_)
    ));
    let chat = b"From: a@example.org\r\nTo: team-bounces@lists.example.org\r\nSubject: hi\r\n\r\nHello there.\r\n";
    assert!(matches!(read_bounce(chat), BounceReading::NotAFailure(_)));
    assert!(matches!(read_bounce(b""), BounceReading::NotAFailure(_)));
}

#[test]
fn list_mailboxes_are_told_apart() {
    let list = Address::parse("team@lists.example.org").unwrap();
    let bob = Address::parse("bob+tag@example.com").unwrap();
    let verp = Address::parse(&verp_sender(&list, &bob)).unwrap();
    assert_eq!(
        ListMailbox::parse(&verp),
        Some((list.clone(), ListMailbox::Bounces(Some(bob))))
    );
    let plain = Address::parse("team-bounces@lists.example.org").unwrap();
    assert_eq!(
        ListMailbox::parse(&plain),
        Some((list.clone(), ListMailbox::Bounces(None)))
    );
    let probe = Address::parse(&probe_sender(&list, "a1B2")).unwrap();
    assert_eq!(
        ListMailbox::parse(&probe),
        Some((list.clone(), ListMailbox::Probe("a1B2".into())))
    );
    let leave = Address::parse("team-leave@lists.example.org").unwrap();
    assert_eq!(
        ListMailbox::parse(&leave),
        Some((list.clone(), ListMailbox::Leave))
    );
    let join = Address::parse(&join_confirm_address(&list, "00ff")).unwrap();
    assert_eq!(
        ListMailbox::parse(&join),
        Some((list.clone(), ListMailbox::Join("00ff".into())))
    );
    for not_one in [
        "team@lists.example.org",
        "team-join+@lists.example.org",
        "team-join+a.b@lists.example.org",
        "team-probe+@lists.example.org",
        "team-probe+a.b@lists.example.org",
        "team-bounces+nohost@lists.example.org",
    ] {
        assert_eq!(
            ListMailbox::parse(&Address::parse(not_one).unwrap()),
            None,
            "{not_one}"
        );
    }
}

#[test]
fn the_score_counts_one_bounce_a_day_and_halves_each_week() {
    let policy = BouncePolicy::default();
    let day = 24 * 3600;
    let first = policy.count(None, Severity::Hard, 1_000).unwrap();
    assert_eq!(first.score, 1.0);
    // A dead mailbox bounces every post: the same day counts once.
    assert_eq!(
        policy.count(Some(first), Severity::Hard, 1_000 + 3600),
        None
    );
    let second = policy
        .count(Some(first), Severity::Soft, 1_000 + day)
        .unwrap();
    let expected = 0.5f64.powf(1.0 / 7.0) + 0.5;
    assert!((second.score - expected).abs() < 1e-9, "{}", second.score);
    // A week of daily hard bounces reaches the threshold; a quiet month later, far below.
    let mut score: Option<BounceScore> = None;
    for n in 0..7 {
        score = policy.count(score, Severity::Hard, n * day);
    }
    let score = score.unwrap();
    assert!(policy.calls_for_probe(score), "{}", score.score);
    assert!(policy.decayed(score, 6 * day + 28 * day) < 0.5);
}

proptest! {
    #[test]
    fn any_bytes_are_read_without_panicking(raw in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = read_bounce(&raw);
    }

    #[test]
    fn any_dsn_fields_are_read_without_panicking(fields in "[A-Za-z:;@. \r\n0-9-]{0,600}") {
        let raw = format!(
            "From: x@y.example\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n{fields}\r\n--b--\r\n"
        );
        let _ = read_bounce(raw.as_bytes());
    }
}
