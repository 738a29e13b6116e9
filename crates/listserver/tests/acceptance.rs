//! Each refusal at the end of DATA carries the right SMTP code and enhanced status.

use hushlist_core::roster::{Admission, Change, MemberEntry, Policy, Role, Roster, sign_genesis};
use hushlist_core::{Address, SecretIdentity};
use hushlist_envelope::seal;
use hushlist_listserver::{Rejection, check_key_server, check_post};
use rand::rngs::OsRng;

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
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
    let add = Change::Add {
        member: MemberEntry {
            address: addr("rita@example.org"),
            cert: reader.cert().to_armored(),
            role: Role::Reader,
        },
    };
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

    let (accepted, admission) = check_post(&post("olivia@example.org", &owner), &roster).unwrap();
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
    let err = check_post(plaintext, &roster).unwrap_err();
    assert_eq!(err.smtp_status(), (550, "5.7.1"));
    assert!(matches!(err, Rejection::NotEncrypted(_)));
    assert!(err.to_string().contains("only accepts encrypted posts"));

    for (from, who) in [
        ("eve@example.org", &stranger),
        ("rita@example.org", &reader),
    ] {
        let err = check_post(&post(from, who), &roster).unwrap_err();
        assert_eq!(err.smtp_status(), (550, "5.7.1"), "{from}");
        assert!(matches!(err, Rejection::NotAllowed(..)), "{from}: {err}");
    }

    let mut truncated = post("olivia@example.org", &owner);
    let cut = truncated.len() - 200;
    truncated.truncate(cut);
    let err = check_post(&truncated, &roster).unwrap_err();
    assert_eq!(err.smtp_status(), (554, "5.6.0"), "{err}");
}
