//! Each refusal at the end of DATA carries the right SMTP code and enhanced status.

mod common;

use common::adding;
use hushlist_core::outer::EncryptedPost;
use hushlist_core::post_proof::{MAX_PROOF_AGE_SECS, ProofError};
use hushlist_core::roster::{Admission, Policy, Role, Roster, sign_genesis};
use hushlist_core::{Address, SecretIdentity};
use hushlist_envelope::seal;
use hushlist_listserver::{Rejection, check_key_server, parse_post};
use hushlist_testkit::gpg::gpg_at;
use hushlist_testkit::now;
use rand::rngs::OsRng;

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

/// The list server's decision on `raw` for `roster`'s list at `now`: its form, then the proof
/// and the poster's role.
fn check_post(
    raw: &[u8],
    roster: &Roster,
    now: u64,
) -> Result<(EncryptedPost, Admission), Rejection> {
    let post = parse_post(raw)?;
    let admission = hushlist_listserver::check_post(&post, roster, now)?;
    Ok((post, admission))
}

#[test]
fn only_encrypted_posts_from_allowed_posters_are_accepted() {
    let owner = SecretIdentity::generate(OsRng, "olivia@example.org").unwrap();
    let reader = SecretIdentity::generate(OsRng, "rita@example.org").unwrap();
    let stranger = SecretIdentity::generate(OsRng, "eve@example.org").unwrap();
    let genesis = sign_genesis(
        OsRng,
        &owner,
        addr("olivia@example.org"),
        addr("team@lists.example.org"),
        Policy::default(),
        0,
    )
    .unwrap();
    let mut roster = Roster::genesis(genesis).unwrap();
    let add = adding("rita@example.org", &reader, Role::Reader);
    roster
        .apply(roster.sign_next(OsRng, &owner, 1, add).unwrap())
        .unwrap();

    let post = |from: &str, who: &SecretIdentity| {
        let text =
            format!("From: {from}\r\nTo: team@lists.example.org\r\nSubject: s\r\n\r\nbody\r\n");
        seal(OsRng, text.as_bytes(), who, "https://keys.example.org")
            .unwrap()
            .message
    };

    let (accepted, admission) =
        check_post(&post("olivia@example.org", &owner), &roster, now()).unwrap();
    assert_eq!(accepted.from, addr("olivia@example.org"));
    assert_eq!(admission, Admission::Deliver);
    check_key_server(&accepted, "https://keys.example.org/").unwrap();
    let err = check_key_server(&accepted, "https://keys.other.example").unwrap_err();
    assert_eq!(err.smtp_status(), (550, "5.7.1"));
    assert!(
        err.to_string().contains("https://keys.other.example"),
        "{err}"
    );

    let plaintext =
        b"From: olivia@example.org\r\nTo: team@lists.example.org\r\nSubject: s\r\n\r\nbody\r\n";
    let err = check_post(plaintext, &roster, now()).unwrap_err();
    assert_eq!(err.smtp_status(), (550, "5.7.1"));
    assert!(matches!(err, Rejection::NotEncrypted(_)));
    assert!(err.to_string().contains("only accepts encrypted posts"));

    for (from, who) in [
        ("eve@example.org", &stranger),
        ("olivia@example.org", &stranger),
    ] {
        let err = check_post(&post(from, who), &roster, now()).unwrap_err();
        assert_eq!(err.smtp_status(), (550, "5.7.1"), "{from}");
        assert!(
            matches!(err, Rejection::Unproven(ProofError::BadSignature)),
            "{from}: {err}"
        );
    }
    let err = check_post(&post("rita@example.org", &reader), &roster, now()).unwrap_err();
    assert_eq!(err.smtp_status(), (550, "5.7.1"));
    assert!(matches!(err, Rejection::NotAllowed(..)), "{err}");

    // A second From outside (mail readers disagree on which is the author): refused as
    // malformed before any proof is looked at.
    let mut two_froms = b"From: ceo@example.org\r\n".to_vec();
    two_froms.extend_from_slice(&post("olivia@example.org", &owner));
    let err = check_post(&two_froms, &roster, now()).unwrap_err();
    assert_eq!(err.smtp_status(), (554, "5.6.0"), "{err}");
    assert!(err.to_string().contains("From header"), "{err}");

    let mut truncated = post("olivia@example.org", &owner);
    let cut = truncated.len() - 200;
    truncated.truncate(cut);
    let err = check_post(&truncated, &roster, now()).unwrap_err();
    assert_eq!(err.smtp_status(), (554, "5.6.0"), "{err}");
}

/// A proof holds for the lists it names and for a week after it was made (mail may wait in
/// queues for days), and not for a clock far ahead of the server's.
#[test]
fn a_post_proof_holds_for_its_own_list_and_its_age_window() {
    let owner = SecretIdentity::generate(OsRng, "olivia@example.org").unwrap();
    let roster_of = |list: &str| {
        let genesis = sign_genesis(
            OsRng,
            &owner,
            addr("olivia@example.org"),
            addr(list),
            Policy::default(),
            0,
        )
        .unwrap();
        Roster::genesis(genesis).unwrap()
    };
    let team = roster_of("team@lists.example.org");
    let other = roster_of("other@lists.example.org");
    let text =
        "From: olivia@example.org\r\nTo: team@lists.example.org\r\nSubject: s\r\n\r\nbody\r\n";
    let post = seal(OsRng, text.as_bytes(), &owner, "https://keys.example.org")
        .unwrap()
        .message;
    let signed_at = now();

    assert!(check_post(&post, &team, signed_at + MAX_PROOF_AGE_SECS - 60).is_ok());
    let err = check_post(&post, &team, signed_at + MAX_PROOF_AGE_SECS + 60).unwrap_err();
    assert!(
        matches!(err, Rejection::Unproven(ProofError::Stale { .. })),
        "{err}"
    );
    let err = check_post(&post, &team, signed_at - 3600).unwrap_err();
    assert!(
        matches!(err, Rejection::Unproven(ProofError::Future { .. })),
        "{err}"
    );
    let err = check_post(&post, &other, signed_at).unwrap_err();
    assert!(
        matches!(err, Rejection::Unproven(ProofError::OtherList { .. })),
        "{err}"
    );
    assert_eq!(err.smtp_status(), (550, "5.7.1"));
    assert!(err.to_string().contains("team@lists.example.org"), "{err}");
}

/// A member added while their key was valid cannot post once it has expired: the proof's
/// signature is theirs, made by a lapsed key, and the refusal says so.
#[test]
fn a_post_proved_by_an_expired_key_is_refused_with_the_reason() {
    let owner = SecretIdentity::generate(OsRng, "olivia@example.org").unwrap();
    // Xena made her key with gpg ten days ago to last two days.
    let made = now() - 10 * 86_400;
    let gpg = hushlist_peers::Gpg::new();
    let uid = "Xena <xena@example.org>";
    gpg_at(
        &gpg,
        made,
        &["--quick-gen-key", uid, "future-default", "default", "2d"],
        b"",
    );
    let xena = SecretIdentity::from_bytes(
        &gpg.run_ok(&["--armor", "--export-secret-keys", uid], b"")
            .stdout,
        "",
    )
    .unwrap();
    let genesis = sign_genesis(
        OsRng,
        &owner,
        addr("olivia@example.org"),
        addr("team@lists.example.org"),
        Policy::default(),
        made,
    )
    .unwrap();
    let mut roster = Roster::genesis(genesis).unwrap();
    let add = adding("xena@example.org", &xena, Role::Member);
    roster
        .apply(roster.sign_next(OsRng, &owner, made + 86_400, add).unwrap())
        .unwrap();

    let text = "From: xena@example.org\r\nTo: team@lists.example.org\r\nSubject: s\r\n\r\nbody\r\n";
    let post = seal(OsRng, text.as_bytes(), &xena, "https://keys.example.org")
        .unwrap()
        .message;
    let err = check_post(&post, &roster, now()).unwrap_err();
    assert_eq!(err.smtp_status(), (550, "5.7.1"));
    assert!(
        matches!(err, Rejection::Unproven(ProofError::KeyNotValid(_))),
        "{err}"
    );
    assert!(err.to_string().contains("expired"), "{err}");
}
