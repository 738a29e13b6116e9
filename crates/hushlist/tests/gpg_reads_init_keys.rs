//! What a member's own mail software makes of a key `hushlist init` made: real gpg, real
//! `hushlist` processes. A key without algorithm preferences makes gpg warn on every
//! decryption and encrypt to it with 3DES (RFC 4880's implicit default).

mod common;

use common::{Person, ok, ok_bytes};
use hushlist_peers::Gpg;

/// A gpg home holding `person`'s secret key, as their mail client would.
fn gpg_with_secret_of(person: &Person) -> Gpg {
    let gpg = Gpg::new();
    gpg.import(&std::fs::read(person.home.join("identity.asc")).unwrap());
    gpg
}

#[test]
fn a_key_made_by_init_states_aes_and_sha2_preferences_that_gpg_follows() {
    let dir = tempfile::tempdir().unwrap();
    let alice = Person::new(dir.path(), "alice@example.net");
    let gpg = gpg_with_secret_of(&alice);

    // The self-signature states the preferences (gpg's numbers: AES-256 9, AES-128 7,
    // SHA-512 10, SHA-256 8; features 01 is SEIPD v1, MDC).
    let packets = ok(gpg.run(
        &["--list-packets"],
        &ok_bytes(alice.run(&["key", "export"])),
    ));
    for stated in [
        "(pref-sym-algos: 9 7)",
        "(pref-hash-algos: 10 8)",
        "(features: 01)",
    ] {
        assert!(packets.contains(stated), "{stated} missing in {packets}");
    }
    // gpg's own reading of them (edit-key's listing: S cipher, H hash, then features).
    let listing = ok(gpg.run(&["--with-colons", "--edit-key", alice.address, "quit"], b""));
    let preferences = listing
        .lines()
        .find(|line| line.starts_with("uid:"))
        .and_then(|uid| uid.split(':').nth(12))
        .unwrap_or_else(|| panic!("no uid preferences in {listing}"));
    assert_eq!(preferences, "S9 S7 H10 H8,mdc");

    // gpg encrypting to the key follows them: AES-256 (DECRYPTION_INFO <mdc> <cipher>).
    let encrypted = ok_bytes(gpg.run(
        &["--trust-model", "always", "--encrypt", "-r", alice.address],
        b"To Alice.\n",
    ));
    let decrypted = gpg.run(&["--status-fd", "2", "--decrypt"], &encrypted);
    let status = String::from_utf8_lossy(&decrypted.stderr);
    assert!(decrypted.status.success(), "{status}");
    assert!(
        status.contains("[GNUPG:] DECRYPTION_INFO 2 9"),
        "gpg must encrypt to an init key with AES-256 and MDC: {status}"
    );
}
