//! The roster log: every way an op can be wrong gets its own error, and the policy
//! evaluation answers who may post and who may read which post.

mod crafted;

use std::sync::OnceLock;

use crafted::{Binding, carrying_key_of};

use hushlist_core::roster::{
    Change, DeliveryMode, KeyFollows, MemberEntry, Policy, Posters, Refusal, Role, Roster,
    RosterError, SignedOp, sign_genesis,
};
use hushlist_core::{Address, Cert, IdentityError, SecretIdentity};
use rand::rngs::OsRng;

struct People {
    owner: SecretIdentity,
    co_owner: SecretIdentity,
    bob: SecretIdentity,
    carol: SecretIdentity,
}

fn people() -> &'static People {
    static P: OnceLock<People> = OnceLock::new();
    P.get_or_init(|| People {
        owner: SecretIdentity::generate(OsRng, "Olivia <olivia@example.org>").unwrap(),
        co_owner: SecretIdentity::generate(OsRng, "Oscar <oscar@example.org>").unwrap(),
        bob: SecretIdentity::generate(OsRng, "Bob <bob@example.org>").unwrap(),
        carol: SecretIdentity::generate(OsRng, "Carol <carol@example.org>").unwrap(),
    })
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn entry(who: &SecretIdentity, address: &str, role: Role) -> MemberEntry {
    MemberEntry {
        address: addr(address),
        cert: who.cert().to_armored(),
        role,
    }
}

fn new_list(policy: Policy) -> Roster {
    let genesis = sign_genesis(
        OsRng,
        &people().owner,
        addr("olivia@example.org"),
        addr("team@lists.example.org"),
        policy,
        1,
    )
    .unwrap();
    Roster::genesis(genesis).unwrap()
}

fn next(roster: &Roster, signer: &SecretIdentity, change: Change) -> SignedOp {
    roster.sign_next(OsRng, signer, 2, change).unwrap()
}

fn apply(roster: &mut Roster, signer: &SecretIdentity, change: Change) {
    let op = next(roster, signer, change);
    roster.apply(op).unwrap();
}

fn add(roster: &mut Roster, who: &SecretIdentity, address: &str, role: Role) {
    let owner = &people().owner;
    apply(
        roster,
        owner,
        Change::Add {
            member: entry(who, address, role),
        },
    );
}

#[test]
fn a_log_replays_to_the_same_state() {
    let p = people();
    let mut roster = new_list(Policy::default());
    add(&mut roster, &p.bob, "bob@example.org", Role::Member);
    add(&mut roster, &p.carol, "carol@example.org", Role::Reader);
    apply(
        &mut roster,
        &p.owner,
        Change::Remove {
            address: addr("carol@example.org"),
        },
    );

    let replayed = Roster::from_log(roster.ops().to_vec()).unwrap();
    assert_eq!(replayed.head_seq(), 3);
    assert_eq!(replayed.head_hash(), roster.head_hash());
    let members: Vec<_> = replayed.members().map(|m| m.address.to_string()).collect();
    assert_eq!(members, ["bob@example.org", "olivia@example.org"]);
    assert_eq!(roster.ops_since(1).len(), 2);
    assert!(roster.ops_since(3).is_empty());
    assert!(roster.ops_since(u64::MAX).is_empty());
}

#[test]
fn a_replayed_op_is_refused() {
    let p = people();
    let mut roster = new_list(Policy::default());
    let op = next(
        &roster,
        &p.owner,
        Change::Add {
            member: entry(&p.bob, "bob@example.org", Role::Member),
        },
    );
    roster.apply(op.clone()).unwrap();
    assert!(matches!(
        roster.apply(op),
        Err(RosterError::Replayed { seq: 1 })
    ));
}

#[test]
fn a_fork_is_refused() {
    let p = people();
    let mut roster = new_list(Policy::default());
    let base = roster.clone();
    add(&mut roster, &p.bob, "bob@example.org", Role::Member);
    // Another op signed on top of the same head: a second history.
    let fork = next(
        &base,
        &p.owner,
        Change::Add {
            member: entry(&p.carol, "carol@example.org", Role::Member),
        },
    );
    assert!(matches!(
        roster.apply(fork),
        Err(RosterError::Fork { seq: 1 })
    ));
}

#[test]
fn wrong_previous_hash_and_gaps_are_refused() {
    let p = people();
    let mut roster = new_list(Policy::default());
    let mut ahead = roster.clone();
    add(&mut ahead, &p.bob, "bob@example.org", Role::Member);
    let skipped = next(
        &ahead,
        &p.owner,
        Change::Add {
            member: entry(&p.carol, "carol@example.org", Role::Member),
        },
    );
    assert!(matches!(
        roster.apply(skipped),
        Err(RosterError::Gap {
            expected: 1,
            got: 2
        })
    ));

    // Same seq as the roster expects, but chained to another list's head.
    let other = {
        let g = sign_genesis(
            OsRng,
            &p.owner,
            addr("olivia@example.org"),
            addr("team@lists.example.org"),
            Policy {
                key_lifetime_secs: Some(3 * 86_400),
                ..Policy::default()
            },
            1,
        )
        .unwrap();
        Roster::genesis(g).unwrap()
    };
    let wrong_prev_add = next(
        &other,
        &p.owner,
        Change::Add {
            member: entry(&p.bob, "bob@example.org", Role::Member),
        },
    );
    assert!(matches!(
        roster.apply(wrong_prev_add),
        Err(RosterError::WrongPrevious { seq: 1 })
    ));
}

#[test]
fn ops_signed_by_non_owners_strangers_and_removed_owners_are_refused() {
    let p = people();
    let mut roster = new_list(Policy::default());
    add(&mut roster, &p.bob, "bob@example.org", Role::Member);
    let by_member = next(
        &roster,
        &p.bob,
        Change::Add {
            member: entry(&p.carol, "carol@example.org", Role::Owner),
        },
    );
    assert!(matches!(
        roster.apply(by_member),
        Err(RosterError::NotOwner {
            role: Role::Member,
            ..
        })
    ));

    let by_stranger = next(
        &roster,
        &p.carol,
        Change::Add {
            member: entry(&p.carol, "carol@example.org", Role::Owner),
        },
    );
    assert!(matches!(
        roster.apply(by_stranger),
        Err(RosterError::BadSignature)
    ));

    add(&mut roster, &p.co_owner, "oscar@example.org", Role::Owner);
    apply(
        &mut roster,
        &p.owner,
        Change::Remove {
            address: addr("oscar@example.org"),
        },
    );
    let by_former = next(
        &roster,
        &p.co_owner,
        Change::Remove {
            address: addr("bob@example.org"),
        },
    );
    assert!(matches!(
        roster.apply(by_former),
        Err(RosterError::FormerOwner { .. })
    ));

    add(&mut roster, &p.carol, "carol@example.org", Role::Owner);
    apply(
        &mut roster,
        &p.carol,
        Change::SetRole {
            address: addr("olivia@example.org"),
            role: Role::Member,
        },
    );
    let by_demoted = next(
        &roster,
        &p.owner,
        Change::Remove {
            address: addr("bob@example.org"),
        },
    );
    assert!(matches!(
        roster.apply(by_demoted),
        Err(RosterError::FormerOwner { .. })
    ));
}

#[test]
fn a_tampered_body_fails_its_signature() {
    let p = people();
    let mut roster = new_list(Policy::default());
    let mut op = next(
        &roster,
        &p.owner,
        Change::Add {
            member: entry(&p.bob, "bob@example.org", Role::Member),
        },
    );
    let text = String::from_utf8(op.body.clone())
        .unwrap()
        .replace("\"member\"", "\"owner\"");
    op.body = text.into_bytes();
    assert!(matches!(roster.apply(op), Err(RosterError::BadSignature)));
}

#[test]
fn the_last_owner_can_be_neither_removed_nor_demoted() {
    let p = people();
    let mut roster = new_list(Policy::default());
    add(&mut roster, &p.bob, "bob@example.org", Role::Member);
    let remove = next(
        &roster,
        &p.owner,
        Change::Remove {
            address: addr("olivia@example.org"),
        },
    );
    assert!(matches!(roster.apply(remove), Err(RosterError::LastOwner)));
    let demote = next(
        &roster,
        &p.owner,
        Change::SetRole {
            address: addr("olivia@example.org"),
            role: Role::Reader,
        },
    );
    assert!(matches!(roster.apply(demote), Err(RosterError::LastOwner)));
}

#[test]
fn semantic_errors_are_precise() {
    let p = people();
    let mut roster = new_list(Policy::default());
    add(&mut roster, &p.bob, "bob@example.org", Role::Member);
    let again = next(
        &roster,
        &p.owner,
        Change::Add {
            member: entry(&p.carol, "bob@example.org", Role::Member),
        },
    );
    assert!(matches!(
        roster.apply(again),
        Err(RosterError::AlreadyMember(_))
    ));
    let same_cert = next(
        &roster,
        &p.owner,
        Change::Add {
            member: entry(&p.bob, "bobby@example.org", Role::Member),
        },
    );
    assert!(matches!(
        roster.apply(same_cert),
        Err(RosterError::CertInUse(_))
    ));
    let unknown = next(
        &roster,
        &p.owner,
        Change::Remove {
            address: addr("nobody@example.org"),
        },
    );
    assert!(matches!(
        roster.apply(unknown),
        Err(RosterError::UnknownMember(_))
    ));
    let bad_cert = next(
        &roster,
        &p.owner,
        Change::Add {
            member: MemberEntry {
                address: addr("x@example.org"),
                cert: "not a key".into(),
                role: Role::Member,
            },
        },
    );
    assert!(matches!(
        roster.apply(bad_cert),
        Err(RosterError::BadCert(_))
    ));
    let genesis_again = next(
        &roster,
        &p.owner,
        Change::Genesis {
            policy: Policy::default(),
            owner: entry(&p.owner, "olivia@example.org", Role::Owner),
        },
    );
    assert!(matches!(
        roster.apply(genesis_again),
        Err(RosterError::SecondGenesis)
    ));
    assert!(matches!(
        Roster::from_log(roster.ops()[1..].to_vec()),
        Err(RosterError::GenesisExpected)
    ));
}

/// Two members whose addresses differ only in case would be one mailbox to every mail server,
/// and the list server finds a post's author by mailbox: the second is refused, and after a
/// removal the mailbox is free again.
#[test]
fn an_address_differing_only_in_case_is_the_same_member() {
    let p = people();
    let mut roster = new_list(Policy::default());
    add(&mut roster, &p.bob, "bob@example.org", Role::Member);
    let op = next(
        &roster,
        &p.owner,
        Change::Add {
            member: entry(&p.carol, "Bob@EXAMPLE.org", Role::Member),
        },
    );
    assert!(matches!(
        roster.apply(op),
        Err(RosterError::AlreadyMember(_))
    ));
    apply(
        &mut roster,
        &p.owner,
        Change::Remove {
            address: addr("bob@example.org"),
        },
    );
    assert!(roster.member_by_mailbox(&addr("BOB@example.org")).is_none());
    add(&mut roster, &p.carol, "Bob@EXAMPLE.org", Role::Member);
    let found = roster.member_by_mailbox(&addr("bob@example.org")).unwrap();
    assert_eq!(found.cert.fingerprint(), p.carol.fingerprint());
}

#[test]
fn posting_follows_roles_and_policy() {
    let p = people();
    let mut roster = new_list(Policy::default());
    add(&mut roster, &p.bob, "bob@example.org", Role::Member);
    add(&mut roster, &p.carol, "carol@example.org", Role::Reader);
    assert!(roster.may_post(p.owner.fingerprint()).is_ok());
    assert!(roster.may_post(p.bob.fingerprint()).is_ok());
    let bob = roster.member_by_mailbox(&addr("Bob@EXAMPLE.org")).unwrap();
    assert_eq!(bob.cert.fingerprint(), p.bob.fingerprint());
    assert!(matches!(
        roster.may_post(p.carol.fingerprint()),
        Err(Refusal::MayNotPost {
            role: Role::Reader,
            ..
        })
    ));
    assert!(matches!(
        roster.may_post(p.co_owner.fingerprint()),
        Err(Refusal::NotMember(_))
    ));
    assert!(roster.member_by_mailbox(&addr("eve@example.org")).is_none());

    apply(
        &mut roster,
        &p.owner,
        Change::SetPolicy {
            policy: Policy {
                posters: Posters::Owners,
                ..Policy::default()
            },
        },
    );
    assert!(matches!(
        roster.may_post(p.bob.fingerprint()),
        Err(Refusal::MayNotPost {
            role: Role::Member,
            ..
        })
    ));
    assert!(roster.may_post(p.owner.fingerprint()).is_ok());
}

/// What a reader's client checks a post against: the role its signer held and the policy in
/// force at the roster seq of the post's deposit, not now.
#[test]
fn posting_at_a_past_seq_follows_the_role_and_policy_then() {
    let p = people();
    let mut roster = new_list(Policy::default());
    let before_bob = roster.head_seq();
    add(&mut roster, &p.bob, "bob@example.org", Role::Member);
    let members_post = roster.head_seq();
    apply(
        &mut roster,
        &p.owner,
        Change::SetPolicy {
            policy: Policy {
                posters: Posters::Owners,
                ..Policy::default()
            },
        },
    );
    let owners_post = roster.head_seq();
    apply(
        &mut roster,
        &p.owner,
        Change::Remove {
            address: addr("bob@example.org"),
        },
    );
    assert_eq!(
        roster.may_post_at(p.bob.fingerprint(), members_post),
        Ok(Role::Member)
    );
    assert!(matches!(
        roster.may_post_at(p.bob.fingerprint(), owners_post),
        Err(Refusal::MayNotPost {
            role: Role::Member,
            posters: Posters::Owners,
            ..
        })
    ));
    assert!(matches!(
        roster.may_post_at(p.bob.fingerprint(), before_bob),
        Err(Refusal::NotMember(_))
    ));
    assert_eq!(
        roster.may_post_at(p.owner.fingerprint(), owners_post),
        Ok(Role::Owner)
    );
    let beyond = roster.head_seq() + 1;
    assert!(matches!(
        roster.may_post_at(p.owner.fingerprint(), beyond),
        Err(Refusal::FuturePost { posted_at, .. }) if posted_at == beyond
    ));
}

#[test]
fn under_current_roster_policy_removal_revokes_old_posts() {
    let p = people();
    let mut roster = new_list(Policy {
        key_follows: KeyFollows::CurrentRoster,
        ..Policy::default()
    });
    add(&mut roster, &p.bob, "bob@example.org", Role::Member);
    let posted_at = roster.head_seq();
    assert!(roster.may_read(p.bob.fingerprint(), posted_at).is_ok());
    apply(
        &mut roster,
        &p.owner,
        Change::Remove {
            address: addr("bob@example.org"),
        },
    );
    assert!(matches!(
        roster.may_read(p.bob.fingerprint(), posted_at),
        Err(Refusal::RemovedSincePosting(_))
    ));
    assert!(roster.may_read(p.owner.fingerprint(), posted_at).is_ok());
}

#[test]
fn under_posting_roster_policy_removed_members_keep_old_posts() {
    let p = people();
    let mut roster = new_list(Policy {
        key_follows: KeyFollows::PostingRoster,
        ..Policy::default()
    });
    add(&mut roster, &p.bob, "bob@example.org", Role::Member);
    let posted_at = roster.head_seq();
    apply(
        &mut roster,
        &p.owner,
        Change::Remove {
            address: addr("bob@example.org"),
        },
    );
    let cert = roster.may_read(p.bob.fingerprint(), posted_at).unwrap();
    assert_eq!(cert.fingerprint(), p.bob.fingerprint());
    assert!(matches!(
        roster.may_read(p.bob.fingerprint(), roster.head_seq()),
        Err(Refusal::NotMember(_))
    ));
}

#[test]
fn new_members_read_old_posts_only_when_the_policy_says_so() {
    let p = people();
    for (new_read_old, expect_ok) in [(false, false), (true, true)] {
        let mut roster = new_list(Policy {
            new_members_read_old: new_read_old,
            delivery: DeliveryMode::Push,
            ..Policy::default()
        });
        let posted_at = roster.head_seq();
        add(&mut roster, &p.carol, "carol@example.org", Role::Reader);
        let verdict = roster.may_read(p.carol.fingerprint(), posted_at);
        assert_eq!(verdict.is_ok(), expect_ok, "{verdict:?}");
        if !expect_ok {
            assert!(matches!(verdict, Err(Refusal::JoinedAfterPosting(_))));
        }
        assert!(matches!(
            roster.may_read(p.carol.fingerprint(), posted_at + 5),
            Err(Refusal::FuturePost { .. })
        ));
    }
}

#[test]
fn the_policy_in_force_at_posting_governs_the_post() {
    let p = people();
    let mut roster = new_list(Policy {
        key_follows: KeyFollows::PostingRoster,
        ..Policy::default()
    });
    add(&mut roster, &p.bob, "bob@example.org", Role::Member);
    let early_post = roster.head_seq();
    apply(
        &mut roster,
        &p.owner,
        Change::SetPolicy {
            policy: Policy {
                key_follows: KeyFollows::CurrentRoster,
                ..Policy::default()
            },
        },
    );
    let late_post = roster.head_seq();
    apply(
        &mut roster,
        &p.owner,
        Change::Remove {
            address: addr("bob@example.org"),
        },
    );
    assert!(roster.may_read(p.bob.fingerprint(), early_post).is_ok());
    assert!(matches!(
        roster.may_read(p.bob.fingerprint(), late_post),
        Err(Refusal::RemovedSincePosting(_))
    ));
    assert_eq!(
        roster.policy_at(early_post).key_follows,
        KeyFollows::PostingRoster
    );
    assert_eq!(roster.policy().key_follows, KeyFollows::CurrentRoster);
}

fn crafted_entry(victim: &SecretIdentity, binding: Binding) -> MemberEntry {
    MemberEntry {
        address: addr("mallory@example.com"),
        cert: carrying_key_of(victim.cert(), "mallory@example.com", binding).cert,
        role: Role::Member,
    }
}

/// The refusal of a certificate carrying `victim`'s primary key, as the roster words it.
fn assert_carries_key_of(refused: Result<(), RosterError>, victim: &SecretIdentity, at: &str) {
    match refused {
        Err(RosterError::KeyInUse {
            key,
            holder,
            holder_address,
            ..
        }) => {
            assert_eq!(&key, victim.fingerprint());
            assert_eq!(&holder, victim.fingerprint());
            assert_eq!(holder_address, addr(at));
        }
        other => panic!("expected KeyInUse naming {at}, got {other:?}"),
    }
}

#[test]
fn a_certificate_carrying_a_members_key_is_refused_and_the_owner_keeps_control() {
    let p = people();
    let mut roster = new_list(Policy::default());
    add(&mut roster, &p.bob, "bob@example.org", Role::Member);
    for (victim, at) in [
        (&p.owner, "olivia@example.org"),
        (&p.bob, "bob@example.org"),
    ] {
        let crafted = next(
            &roster,
            &p.owner,
            Change::Add {
                member: crafted_entry(victim, Binding::NoFlags),
            },
        );
        assert_carries_key_of(roster.apply(crafted), victim, at);
    }
    // The owner's ops still verify, and Bob's key still seals to Bob.
    add(&mut roster, &p.carol, "carol@example.org", Role::Member);
    let posted_at = roster.head_seq();
    let sealed_to = roster.may_read(p.bob.fingerprint(), posted_at).unwrap();
    assert_eq!(sealed_to.fingerprint(), p.bob.fingerprint());
    assert_eq!(
        roster
            .known_cert(p.bob.fingerprint())
            .unwrap()
            .fingerprint(),
        p.bob.fingerprint()
    );
}

#[test]
fn a_removed_members_keys_stay_theirs_and_they_can_come_back() {
    let p = people();
    let mut roster = new_list(Policy::default());
    add(&mut roster, &p.bob, "bob@example.org", Role::Member);
    apply(
        &mut roster,
        &p.owner,
        Change::Remove {
            address: addr("bob@example.org"),
        },
    );
    let crafted = next(
        &roster,
        &p.owner,
        Change::Add {
            member: crafted_entry(&p.bob, Binding::NoFlags),
        },
    );
    assert_carries_key_of(roster.apply(crafted), &p.bob, "bob@example.org");
    add(&mut roster, &p.bob, "bob@example.org", Role::Member);
    let cert = roster
        .may_read(p.bob.fingerprint(), roster.head_seq())
        .unwrap();
    assert_eq!(cert.fingerprint(), p.bob.fingerprint());
}

#[test]
fn a_crafted_certificate_enrolled_first_keeps_the_real_owner_of_the_key_out_by_name() {
    let p = people();
    let mut roster = new_list(Policy::default());
    let crafted = crafted_entry(&p.carol, Binding::NoFlags);
    let mallory = Cert::from_bytes(crafted.cert.as_bytes()).unwrap();
    apply(&mut roster, &p.owner, Change::Add { member: crafted });
    let carol = next(
        &roster,
        &p.owner,
        Change::Add {
            member: entry(&p.carol, "carol@example.org", Role::Member),
        },
    );
    match roster.apply(carol) {
        Err(RosterError::KeyInUse {
            key,
            holder,
            holder_address,
            ..
        }) => {
            assert_eq!(&key, p.carol.fingerprint());
            assert_eq!(&holder, mallory.fingerprint());
            assert_eq!(holder_address, addr("mallory@example.com"));
        }
        other => panic!("expected KeyInUse naming mallory, got {other:?}"),
    }
}

#[test]
fn a_signing_subkey_without_back_signature_is_refused() {
    let p = people();
    let crafted = carrying_key_of(
        p.bob.cert(),
        "mallory@example.com",
        Binding::SigningWithoutBackSignature,
    );
    match Cert::from_bytes(crafted.cert.as_bytes()) {
        Err(IdentityError::BadBinding { detail, .. }) => {
            assert!(detail.contains("embedded signature"), "{detail}")
        }
        other => panic!("expected BadBinding, got {other:?}"),
    }
    let mut roster = new_list(Policy::default());
    let op = next(
        &roster,
        &p.owner,
        Change::Add {
            member: crafted_entry(&p.bob, Binding::SigningWithoutBackSignature),
        },
    );
    assert!(matches!(roster.apply(op), Err(RosterError::BadCert(_))));
}
