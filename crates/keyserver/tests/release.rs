//! A key released by `release` opens the post for an allowed member and is refused to others.

use hushlist_core::roster::{
    Change, KeyFollows, MemberEntry, Policy, Refusal, Role, Roster, sign_genesis,
};
use hushlist_core::{Address, SecretIdentity};
use hushlist_envelope::{OpenWith, open, seal};
use hushlist_keyserver::{ReleaseError, release};
use hushlist_testkit::now;
use rand::rngs::OsRng;

#[test]
fn members_get_a_pkesk_that_opens_the_post_and_removed_members_do_not() {
    let owner = SecretIdentity::generate(OsRng, "olivia@example.org").unwrap();
    let bob = SecretIdentity::generate(OsRng, "bob@example.org").unwrap();
    let list = Address::parse("team@lists.example.org").unwrap();
    let policy = Policy {
        key_follows: KeyFollows::CurrentRoster,
        ..Policy::default()
    };
    let genesis = sign_genesis(
        OsRng,
        &owner,
        Address::parse("olivia@example.org").unwrap(),
        list,
        policy,
        0,
    )
    .unwrap();
    let mut roster = Roster::genesis(genesis).unwrap();
    let add = Change::Add {
        member: MemberEntry {
            address: Address::parse("bob@example.org").unwrap(),
            cert: bob.cert().to_armored(),
            role: Role::Member,
        },
    };
    roster
        .apply(roster.sign_next(OsRng, &owner, 1, add).unwrap())
        .unwrap();

    let post =
        "From: olivia@example.org\r\nTo: team@lists.example.org\r\nSubject: s\r\n\r\nhello\r\n";
    let sealed = seal(OsRng, post.as_bytes(), &owner, "https://keys.example.org").unwrap();
    let posted_at = roster.head_seq();

    let pkesk = release(
        OsRng,
        &roster,
        posted_at,
        &sealed.session_key,
        bob.fingerprint(),
        now(),
    )
    .unwrap();
    let opened = open(
        &sealed.message,
        OpenWith::Pkesk(&pkesk, &bob),
        &[owner.cert().clone()],
    )
    .unwrap();
    assert_eq!(opened.signature.valid_signer(), Some(owner.fingerprint()));
    assert!(opened.message.ends_with(b"\r\n\r\nhello\r\n"));

    let remove = Change::Remove {
        address: Address::parse("bob@example.org").unwrap(),
    };
    roster
        .apply(roster.sign_next(OsRng, &owner, 2, remove).unwrap())
        .unwrap();
    let refused = release(
        OsRng,
        &roster,
        posted_at,
        &sealed.session_key,
        bob.fingerprint(),
        now(),
    )
    .unwrap_err();
    assert!(
        matches!(
            refused,
            ReleaseError::Refused(Refusal::RemovedSincePosting(_))
        ),
        "{refused:?}"
    );
}
