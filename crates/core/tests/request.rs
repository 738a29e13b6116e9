//! Signed requests: bad signatures, clock skew, replays and misdirected requests are refused.

use hushlist_core::SecretIdentity;
use hushlist_core::request::{
    MAX_SKEW_SECS, NonceMemory, RecentNonces, RequestError, SignedRequest,
};
use rand::rngs::OsRng;

const NOW: u64 = 1_800_000_000;
const PURPOSE: &str = "POST /v1/lists/team@lists.example.org/keys";

#[test]
fn a_fresh_request_verifies_once() {
    let alice = SecretIdentity::generate(OsRng, "alice@example.org").unwrap();
    let request = SignedRequest::sign(OsRng, &alice, PURPOSE, b"{\"k\":1}".to_vec(), NOW).unwrap();
    let wire = serde_json::to_string(&request).unwrap();
    let request: SignedRequest = serde_json::from_str(&wire).unwrap();
    let mut nonces = RecentNonces::default();
    let verified = request
        .verify(PURPOSE, alice.cert(), NOW + 10, &mut nonces)
        .unwrap();
    assert_eq!(verified.body, b"{\"k\":1}");
    assert_eq!(&verified.signer, alice.fingerprint());
    assert_eq!(
        request.verify(PURPOSE, alice.cert(), NOW + 11, &mut nonces),
        Err(RequestError::Replayed)
    );
}

#[test]
fn bad_signatures_are_refused_without_using_up_the_nonce() {
    let alice = SecretIdentity::generate(OsRng, "alice@example.org").unwrap();
    let mallory = SecretIdentity::generate(OsRng, "mallory@example.org").unwrap();
    let request = SignedRequest::sign(OsRng, &alice, PURPOSE, b"{}".to_vec(), NOW).unwrap();
    let mut nonces = RecentNonces::default();

    let mut forged = request.clone();
    forged.signed.body = String::from_utf8(forged.signed.body)
        .unwrap()
        .replace("e30=", "e319")
        .into_bytes();
    assert!(matches!(
        forged.verify(PURPOSE, alice.cert(), NOW, &mut nonces),
        Err(RequestError::BadSignature(_))
    ));

    // Mallory's certificate does not verify Alice's signature, and the envelope names Alice.
    assert!(matches!(
        request.verify(PURPOSE, mallory.cert(), NOW, &mut nonces),
        Err(RequestError::BadSignature(_))
    ));
    let mut renamed = request.clone();
    renamed.signer = mallory.fingerprint().clone();
    assert!(matches!(
        renamed.verify(PURPOSE, mallory.cert(), NOW, &mut nonces),
        Err(RequestError::BadSignature(_))
    ));

    assert!(nonces.is_empty(), "failed checks must not record nonces");
    assert!(
        request
            .verify(PURPOSE, alice.cert(), NOW, &mut nonces)
            .is_ok()
    );
}

#[test]
fn stale_and_future_requests_are_refused() {
    let alice = SecretIdentity::generate(OsRng, "alice@example.org").unwrap();
    let mut nonces = RecentNonces::default();
    let old = SignedRequest::sign(OsRng, &alice, PURPOSE, vec![], NOW - MAX_SKEW_SECS - 1).unwrap();
    assert_eq!(
        old.verify(PURPOSE, alice.cert(), NOW, &mut nonces),
        Err(RequestError::Stale {
            skew_secs: MAX_SKEW_SECS + 1
        })
    );
    let future = SignedRequest::sign(OsRng, &alice, PURPOSE, vec![], NOW + 3600).unwrap();
    assert!(matches!(
        future.verify(PURPOSE, alice.cert(), NOW, &mut nonces),
        Err(RequestError::Stale { .. })
    ));
    let edge = SignedRequest::sign(OsRng, &alice, PURPOSE, vec![], NOW - MAX_SKEW_SECS).unwrap();
    assert!(edge.verify(PURPOSE, alice.cert(), NOW, &mut nonces).is_ok());
}

#[test]
fn a_request_signed_for_one_endpoint_is_refused_at_another() {
    let alice = SecretIdentity::generate(OsRng, "alice@example.org").unwrap();
    let request = SignedRequest::sign(OsRng, &alice, PURPOSE, vec![], NOW).unwrap();
    let err = request
        .verify(
            "DELETE /v1/keys/x",
            alice.cert(),
            NOW,
            &mut RecentNonces::default(),
        )
        .unwrap_err();
    assert!(matches!(err, RequestError::WrongPurpose { .. }));
}

#[test]
fn nonce_memory_forgets_only_expired_entries() {
    let alice = SecretIdentity::generate(OsRng, "alice@example.org").unwrap();
    let mut nonces = RecentNonces::default();
    assert!(nonces.remember(alice.fingerprint(), "aa", NOW + 300));
    assert!(!nonces.remember(alice.fingerprint(), "aa", NOW + 300));
    nonces.prune(NOW + 100);
    assert_eq!(nonces.len(), 1);
    nonces.prune(NOW + 301);
    assert!(nonces.is_empty());
}
