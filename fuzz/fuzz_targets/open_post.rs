//! A member's `open` decrypts whatever a sender put inside the encryption: any packet stream
//! there (compressed, signed many times, nested, truncated) must be refused or read within
//! the plaintext limit, never panic, stall or inflate without bound. The input is that inner
//! stream; the target encrypts it under a fixed session key as a sender would, so every input
//! reaches the code behind the integrity check. Inputs starting with `-----BEGIN` or `From:`
//! go through the whole outer post parser instead.
#![no_main]

use std::sync::OnceLock;

use hushlist_core::SecretIdentity;
use hushlist_core::session::{POST_CIPHER, SessionKey};
use hushlist_envelope::{MAX_PLAINTEXT, OpenWith, decrypt_packets, open_at};
use libfuzzer_sys::fuzz_target;
use pgp::packet::{PacketTrait as _, SymEncryptedProtectedData};
use rand::SeedableRng as _;
use rand::rngs::StdRng;

/// A fixed clock, so an input is judged the same way on every run.
const NOW: u64 = 1_800_000_000;

fn session_key() -> &'static SessionKey {
    static KEY: OnceLock<SessionKey> = OnceLock::new();
    KEY.get_or_init(|| SessionKey::from_bytes(&[7; 32]).expect("32 bytes are a session key"))
}

fn signer() -> &'static SecretIdentity {
    static SIGNER: OnceLock<SecretIdentity> = OnceLock::new();
    SIGNER.get_or_init(|| {
        SecretIdentity::generate(StdRng::seed_from_u64(25), "alice@example.org")
            .expect("a fixed seed makes an identity")
    })
}

fuzz_target!(|data: &[u8]| {
    let signers = [signer().cert().clone()];
    if data.starts_with(b"-----BEGIN") || data.starts_with(b"From:") {
        let _ = open_at(data, OpenWith::SessionKey(session_key()), &signers, NOW);
        return;
    }
    let seipd = SymEncryptedProtectedData::encrypt_seipdv1(
        StdRng::seed_from_u64(0),
        POST_CIPHER,
        session_key().as_bytes(),
        data,
    )
    .expect("encrypting into memory cannot fail");
    let mut packets = Vec::new();
    seipd
        .to_writer_with_header(&mut packets)
        .expect("writing into memory cannot fail");
    if let Ok((plaintext, _)) = decrypt_packets(&packets, session_key(), &signers, NOW) {
        assert!(plaintext.len() <= MAX_PLAINTEXT);
    }
});
