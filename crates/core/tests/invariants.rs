//! ARCHITECTURE.md invariants 5 and 6 as tests: a signature made for one use is refused in
//! every other, and no secret-bearing type prints its secret through `Debug`.

use hushlist_core::SecretIdentity;
use hushlist_core::listmail::UnsubscribeKey;
use hushlist_core::session::SessionKey;
use hushlist_core::signed::{Domain, Signed};
use rand::rngs::OsRng;

/// Every domain a signature is made under. Adding a domain without adding it here fails to
/// compile in `every_domain_is_listed`.
const DOMAINS: [Domain; 5] = [
    Domain::RosterOp,
    Domain::Request,
    Domain::PostProof,
    Domain::AuditHead,
    Domain::Deposit,
];

#[test]
fn every_domain_is_listed() {
    for domain in DOMAINS {
        match domain {
            Domain::RosterOp
            | Domain::Request
            | Domain::PostProof
            | Domain::AuditHead
            | Domain::Deposit => {}
        }
    }
}

/// The same signer and the same body: the signature verifies under the domain it was made
/// for and under no other.
#[test]
fn a_signature_made_for_one_use_is_refused_in_every_other() {
    let alice = SecretIdentity::generate(OsRng, "alice@example.org").unwrap();
    let body = br#"{"list":"team@lists.example.org","seq":1}"#.to_vec();
    for made_for in DOMAINS {
        let signed = Signed::sign(OsRng, made_for, &alice, body.clone()).unwrap();
        for used_as in DOMAINS {
            assert_eq!(
                signed.verify(used_as, alice.cert()),
                made_for == used_as,
                "a {made_for:?} signature checked as {used_as:?}"
            );
        }
    }
}

#[test]
fn secrets_do_not_show_through_debug() {
    let key = SessionKey::from_bytes(&[0xA5; 32]).unwrap();
    let shown = format!("{key:?}");
    assert_eq!(shown, "SessionKey(..)");

    let secret = b"unsubscribe-secret-0123456789";
    let shown = format!("{:?}", UnsubscribeKey::new(secret));
    assert_eq!(shown, "UnsubscribeKey(..)");

    let alice = SecretIdentity::generate(OsRng, "alice@example.org").unwrap();
    let shown = format!("{alice:?}");
    assert_eq!(
        shown,
        format!(
            "SecretIdentity {{ fingerprint: {:?}, .. }}",
            alice.fingerprint()
        )
    );
}
