//! Signed requests arrive as JSON from anyone: parsing and verifying must never panic.
#![no_main]

use std::sync::OnceLock;

use hushlist_core::SecretIdentity;
use hushlist_core::request::{RecentNonces, SignedRequest};
use libfuzzer_sys::fuzz_target;

fn signer() -> &'static SecretIdentity {
    static ID: OnceLock<SecretIdentity> = OnceLock::new();
    ID.get_or_init(|| SecretIdentity::generate(rand::rngs::OsRng, "fuzz@example.org").unwrap())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<SignedRequest>(data) {
        let _ = request.verify("POST /v1/fuzz", signer().cert(), 1_800_000_000, &mut RecentNonces::default());
    }
});
