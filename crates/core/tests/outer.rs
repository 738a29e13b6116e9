//! The outer envelope parser refuses everything that is not a well-formed encrypted post.

use hushlist_core::outer::{EncryptedPost, OuterError};

fn post(content_type: &str, parts: &str, key_id: bool) -> Vec<u8> {
    let key_header = if key_id {
        "Hushlist-Key-Id: 0123456789abcdef0123456789abcdef\r\n"
    } else {
        ""
    };
    format!(
        "From: alice@example.org\r\nTo: team@lists.example.org\r\nSubject: [...]\r\n{key_header}\
         MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n{parts}"
    )
    .into_bytes()
}

const ENCRYPTED: &str =
    "multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"";
const CONTROL: &str = "--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n";

#[test]
fn plaintext_is_refused_as_not_encrypted() {
    let err = EncryptedPost::parse(&post("text/plain", "hello\r\n", true)).unwrap_err();
    assert_eq!(err, OuterError::NotEncrypted("text/plain".into()));
    assert!(err.to_string().contains("must be PGP/MIME"));
}

#[test]
fn malformed_structures_are_refused_precisely() {
    let one_part = post(ENCRYPTED, &format!("{CONTROL}--b--\r\n"), true);
    assert!(matches!(
        EncryptedPost::parse(&one_part),
        Err(OuterError::MalformedMime(_))
    ));

    let garbage_armor = format!(
        "{CONTROL}--b\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\n!!!!\r\n-----END PGP MESSAGE-----\r\n--b--\r\n"
    );
    assert!(matches!(
        EncryptedPost::parse(&post(ENCRYPTED, &garbage_armor, true)),
        Err(OuterError::MalformedPayload(_))
    ));

    let wrong_protocol = post(
        "multipart/encrypted; protocol=\"application/pkcs7-mime\"; boundary=\"b\"",
        CONTROL,
        true,
    );
    assert!(matches!(
        EncryptedPost::parse(&wrong_protocol),
        Err(OuterError::MalformedMime(_))
    ));

    assert_eq!(
        EncryptedPost::parse(b"").unwrap_err(),
        OuterError::NotAMessage
    );
}

#[test]
fn an_armored_non_seipd_payload_is_refused() {
    // A literal data packet (tag 11) armored as a message: signed-only or plaintext OpenPGP.
    let literal = [0xcb, 0x06, b'b', 0x00, 0, 0, 0, 0];
    let armored = String::from_utf8(hushlist_core::outer::armor_message(&literal)).unwrap();
    let parts = format!(
        "{CONTROL}--b\r\nContent-Type: application/octet-stream\r\n\r\n{armored}\r\n--b--\r\n"
    );
    let err = EncryptedPost::parse(&post(ENCRYPTED, &parts, true)).unwrap_err();
    assert!(
        matches!(err, OuterError::MalformedPayload(ref m) if m.contains("Literal")),
        "{err:?}"
    );
}
