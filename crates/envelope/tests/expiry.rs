//! Key expiry in `open`: a post's signature counts only if its key was valid when it signed.
//! The sender's key is made by gpg ten days ago to last two days (`--faked-system-time`), as a
//! key made long ago and let lapse would be.

use hushlist_core::outer::KEY_ID_HEADER;
use hushlist_core::{Cert, SecretIdentity};
use hushlist_envelope::{OpenWith, Signature, open, seal};
use hushlist_peers::Gpg;
use hushlist_testkit::gpg::gpg_at;
use hushlist_testkit::now;
use rand::rngs::OsRng;

const POST: &str = "From: Sender <sender@example.org>\r\n\
To: team@lists.example.org\r\n\
Subject: expiry\r\n\
Message-ID: <expiry@example.org>\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Signed while the key was valid, or not.\r\n";

fn export(gpg: &Gpg, uid: &str, what: &str) -> Vec<u8> {
    gpg.run_ok(&["--armor", what, uid], b"").stdout
}

/// Wraps gpg's armored output as the PGP/MIME post a mail client would send.
fn as_post(armored: &[u8]) -> Vec<u8> {
    let mut outer = format!(
        "From: sender@example.org\r\nTo: team@lists.example.org\r\nSubject: [...]\r\n\
         {KEY_ID_HEADER}: 0123456789abcdef0123456789abcdef\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
         --b\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    outer.extend_from_slice(armored);
    outer.extend_from_slice(b"\r\n--b--\r\n");
    outer
}

#[test]
fn a_post_signed_after_the_senders_key_expired_does_not_verify_one_signed_before_does() {
    // The sender made their key ten days ago to last two days; the member's never expires.
    let gpg = Gpg::new();
    let sender_uid = "Sender <sender@example.org>";
    let member_uid = "Member <member@example.org>";
    let made = now() - 10 * 86_400;
    for (uid, expiry) in [(sender_uid, "2d"), (member_uid, "never")] {
        gpg_at(
            &gpg,
            made,
            &["--quick-gen-key", uid, "future-default", "default", expiry],
            b"",
        );
    }
    let sender_cert = Cert::from_bytes(&export(&gpg, sender_uid, "--export")).unwrap();
    let sender =
        SecretIdentity::from_bytes(&export(&gpg, sender_uid, "--export-secret-keys"), "").unwrap();
    let member =
        SecretIdentity::from_bytes(&export(&gpg, member_uid, "--export-secret-keys"), "").unwrap();

    // Signed (by gpg, as a post: with hushlist's notations) a day after the key was made:
    // still verifies.
    let while_valid = gpg_at(
        &gpg,
        made + 86_400,
        &[
            "--armor",
            "--sign",
            "--local-user",
            sender_uid,
            "--encrypt",
            "--recipient",
            member_uid,
            "--sig-notation",
            "post@hushlist.org=1",
            "--sig-notation",
            "key-id@hushlist.org=0123456789abcdef0123456789abcdef",
            "--sig-notation",
            "list@hushlist.org=team@lists.example.org",
        ],
        POST.as_bytes(),
    );
    let opened = open(
        &as_post(&while_valid),
        OpenWith::Identity(&member),
        std::slice::from_ref(&sender_cert),
    )
    .unwrap();
    assert_eq!(
        opened.signature.valid_signer(),
        Some(sender_cert.fingerprint()),
        "{:?}",
        opened.signature
    );

    // Sealed now with the lapsed key (hushlist's seal does not ask gpg): the signature is
    // genuine but made by an expired key, so the post is not the sender's.
    let sealed = seal(OsRng, POST.as_bytes(), &sender, "https://keys.example.org").unwrap();
    let opened = open(
        &sealed.message,
        OpenWith::SessionKey(&sealed.session_key),
        &[sender_cert],
    )
    .unwrap();
    assert_eq!(opened.signature, Signature::Invalid);
}
