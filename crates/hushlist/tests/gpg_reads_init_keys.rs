//! What a member's own mail software makes of a key `hushlist init` made and of the push copies
//! `hushlist serve` delivers to it: real gpg, real `hushlist` processes, mail through loopback.
//! A key without algorithm preferences makes gpg warn on every decryption and encrypt to it
//! with 3DES (RFC 4880's implicit default); a protected Subject without the legacy
//! `protected-headers="v1"` parameter is not shown by Thunderbird or K-9.

mod common;

use common::{Person, add_member, create_list, ok, ok_bytes, served_to_mailboxes, use_list};
use hushlist_peers::Gpg;

const LIST: &str = "team@lists.example.org";

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

#[test]
fn gpg_decrypts_a_push_copy_to_an_init_key_without_warnings_and_sees_the_protected_headers() {
    let dir = tempfile::tempdir().unwrap();
    let (mailboxes, served) = served_to_mailboxes(dir.path());
    let olivia = Person::new(dir.path(), "olivia@example.org");
    let alice = Person::new(dir.path(), "alice@example.net");
    create_list(&served, LIST, &olivia, &["--mode", "push"]);
    add_member(LIST, &olivia, &alice, "member");
    use_list(&served, LIST, &alice);
    ok(olivia.run_with(
        &["send", "--list", LIST, "--subject", "Quarterly numbers"],
        b"Revenue is up.\n",
    ));

    let copy = mailboxes.wait_for_copies(alice.address, 1).remove(0);
    let gpg = gpg_with_secret_of(&alice);
    gpg.import(&ok_bytes(olivia.run(&["key", "export"])));
    let decrypted = gpg.decrypt_pgp_mime(&copy);
    let stderr = String::from_utf8_lossy(&decrypted.stderr);
    assert!(decrypted.status.success(), "{stderr}");
    assert!(stderr.contains("Good signature"), "{stderr}");
    assert!(
        !stderr.contains("not found in recipient preferences"),
        "gpg warns about the key's preferences: {stderr}"
    );

    // The inner part's Content-Type carries both the RFC 9788 marker and the legacy one that
    // Thunderbird and K-9 read; the real Subject is there beside it.
    let inner = String::from_utf8(decrypted.stdout).unwrap();
    let content_type = inner
        .lines()
        .find(|line| line.starts_with("Content-Type:"))
        .unwrap_or_else(|| panic!("no Content-Type in {inner}"));
    assert!(
        content_type.contains("protected-headers=\"v1\"") && content_type.contains("hp=\"cipher\""),
        "{content_type}"
    );
    assert!(inner.contains("Subject: Quarterly numbers"), "{inner}");
}
