//! Seal/open round trips, PKESK paths, tampering and signature outcomes.

use std::sync::OnceLock;

use hushlist_core::outer::{EncryptedPost, OBSCURED_SUBJECT, OuterError, armor_message};
use hushlist_core::{Address, Pkesk, SecretIdentity, SessionKey};
use hushlist_envelope::{
    MAX_PLAINTEXT, OpenError, OpenWith, SealError, Sealed, Signature, open,
    post_signature_subpackets, seal,
};
use hushlist_testkit::now;
use pgp::composed::MessageBuilder;
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::CompressionAlgorithm;
use proptest::prelude::*;
use rand::rngs::OsRng;

fn sender() -> &'static SecretIdentity {
    static ID: OnceLock<SecretIdentity> = OnceLock::new();
    ID.get_or_init(|| SecretIdentity::generate(OsRng, "Alice <alice@example.org>").unwrap())
}

fn member() -> &'static SecretIdentity {
    static ID: OnceLock<SecretIdentity> = OnceLock::new();
    ID.get_or_init(|| SecretIdentity::generate(OsRng, "Bob <bob@example.org>").unwrap())
}

const POST: &str = "From: Alice <alice@example.org>\r\n\
To: team@lists.example.org\r\n\
Subject: The secret plan\r\n\
Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <plan-1@example.org>\r\n\
User-Agent: hushlist-test\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Meet at the usual place.\r\n";

#[test]
fn sealed_post_hides_subject_and_body_and_opens_with_the_session_key() {
    let sealed = seal(OsRng, POST.as_bytes(), sender(), "https://keys.example.org").unwrap();
    let outer = String::from_utf8(sealed.message.clone()).unwrap();
    assert!(!outer.contains("secret plan"));
    assert!(!outer.contains("usual place"));
    assert!(
        !outer.contains("hushlist-test"),
        "User-Agent must stay inside"
    );
    assert!(outer.contains(&format!("Subject: {OBSCURED_SUBJECT}\r\n")));
    assert!(outer.contains("From: Alice <alice@example.org>\r\n"));
    assert!(outer.contains(&format!("Hushlist-Key-Id: {}\r\n", sealed.key_id)));
    assert!(outer.contains("Hushlist-Key-Server: https://keys.example.org\r\n"));

    let post = EncryptedPost::parse(&sealed.message).unwrap();
    assert_eq!(post.key_id, sealed.key_id);
    assert_eq!(post.from.as_str(), "alice@example.org");

    let opened = open(
        &sealed.message,
        OpenWith::SessionKey(&sealed.session_key),
        &[member().cert().clone(), sender().cert().clone()],
    )
    .unwrap();
    assert_eq!(
        opened.signature.valid_signer(),
        Some(sender().fingerprint())
    );
    let inner = String::from_utf8(opened.message).unwrap();
    assert!(inner.contains("Subject: The secret plan\r\n"));
    assert!(inner.contains(
        "Content-Type: text/plain; charset=utf-8; protected-headers=\"v1\"; hp=\"cipher\"\r\n"
    ));
    assert!(inner.contains("HP-Outer: Subject: [...]\r\n"));
    assert!(inner.ends_with("\r\n\r\nMeet at the usual place.\r\n"));
}

#[test]
fn a_pkesk_for_the_member_opens_the_post_and_splicing_makes_it_self_contained() {
    let sealed = seal(OsRng, POST.as_bytes(), sender(), "https://keys.example.org").unwrap();
    let pkesk = Pkesk::seal(OsRng, &sealed.session_key, member().cert(), now()).unwrap();
    let via_pkesk = open(
        &sealed.message,
        OpenWith::Pkesk(&pkesk, member()),
        &[sender().cert().clone()],
    )
    .unwrap();
    assert_eq!(
        via_pkesk.signature.valid_signer(),
        Some(sender().fingerprint())
    );

    let post = EncryptedPost::parse(&sealed.message).unwrap();
    let other = SecretIdentity::generate(OsRng, "carol@example.org").unwrap();
    let other_pkesk = Pkesk::seal(OsRng, &sealed.session_key, other.cert(), now()).unwrap();
    let spliced = post.splice(&sealed.message, &[other_pkesk, pkesk]);
    let via_splice = open(
        &spliced,
        OpenWith::Identity(member()),
        &[sender().cert().clone()],
    )
    .unwrap();
    assert_eq!(via_splice.message, via_pkesk.message);

    let stranger = SecretIdentity::generate(OsRng, "eve@example.org").unwrap();
    let refused = open(&spliced, OpenWith::Identity(&stranger), &[]).unwrap_err();
    assert!(matches!(refused, OpenError::NoPkeskForUs(_)), "{refused:?}");
}

#[test]
fn a_pkesk_for_another_key_is_refused() {
    let sealed = seal(OsRng, POST.as_bytes(), sender(), "https://keys.example.org").unwrap();
    let for_sender = Pkesk::seal(OsRng, &sealed.session_key, sender().cert(), now()).unwrap();
    let err = open(&sealed.message, OpenWith::Pkesk(&for_sender, member()), &[]).unwrap_err();
    assert!(err.to_string().contains("not a key of"), "{err}");
}

/// `sealed` with its OpenPGP data replaced by what another program makes of `inner` under the
/// same session key: compressed or not, with this many one-pass post signatures by the
/// sender.
fn crafted(sealed: &Sealed, inner: Vec<u8>, compress: bool, signatures: usize) -> Vec<u8> {
    let packets = sender()
        .with_signing_key(|key| {
            let mut builder = MessageBuilder::from_bytes("", inner)
                .seipd_v1(OsRng, SymmetricKeyAlgorithm::AES256);
            builder
                .set_session_key(pgp::composed::RawSessionKey::from(
                    &sealed.session_key.as_bytes()[..],
                ))
                .unwrap();
            if compress {
                builder.compression(CompressionAlgorithm::ZLIB);
            }
            for _ in 0..signatures {
                let subpackets = post_signature_subpackets(
                    key,
                    now(),
                    &sealed.key_id,
                    &[Address::parse("team@lists.example.org").unwrap()],
                )
                .unwrap();
                builder.sign_with_subpackets(
                    key,
                    sender().password(),
                    HashAlgorithm::Sha256,
                    subpackets,
                );
            }
            builder.to_vec(OsRng).unwrap()
        })
        .unwrap();
    let text = String::from_utf8(sealed.message.clone()).unwrap();
    let start = text.find("-----BEGIN PGP MESSAGE-----").unwrap();
    let end = text.find("-----END PGP MESSAGE-----\r\n").unwrap() + 27;
    let armored = String::from_utf8(armor_message(&packets)).unwrap();
    format!("{}{armored}{}", &text[..start], &text[end..]).into_bytes()
}

/// Issue 25, holes 2 and 3: a compressed payload that inflates past the plaintext limit (65
/// MiB of zeros compress to well under 1 MiB; gigabytes would too) is refused once the limit
/// is reached, not read into memory whole; a payload with many one-pass signatures (each one
/// a hash of every byte) is refused before anything is hashed. One signature over a
/// literal, compressed (as gpg sends) or not, opens.
#[test]
fn a_decompression_bomb_and_extra_one_pass_signatures_are_refused() {
    let sealed = seal(OsRng, POST.as_bytes(), sender(), "https://keys.example.org").unwrap();
    let key = OpenWith::SessionKey(&sealed.session_key);
    let signers = [sender().cert().clone()];

    let bomb = crafted(&sealed, vec![0; MAX_PLAINTEXT + (1 << 20)], true, 1);
    assert!(
        bomb.len() < 1 << 20,
        "the bomb is small: {} bytes",
        bomb.len()
    );
    let err = open(&bomb, key, &signers).unwrap_err();
    assert!(
        matches!(err, OpenError::TooLarge { limit } if limit == MAX_PLAINTEXT),
        "{err}"
    );

    let many = crafted(&sealed, POST.as_bytes().to_vec(), false, 200);
    let err = open(&many, key, &signers).unwrap_err();
    assert!(
        matches!(&err, OpenError::Unexpected(why) if why.contains("200 signatures")),
        "{err}"
    );

    for compress in [false, true] {
        let one_signature = crafted(&sealed, POST.as_bytes().to_vec(), compress, 1);
        let opened = open(&one_signature, key, &signers).unwrap();
        assert_eq!(
            opened.signature.valid_signer(),
            Some(sender().fingerprint())
        );
        assert_eq!(opened.message, POST.as_bytes());
    }
}

#[test]
fn wrong_session_key_and_tampered_ciphertext_yield_no_plaintext() {
    let sealed = seal(OsRng, POST.as_bytes(), sender(), "https://keys.example.org").unwrap();
    let wrong = SessionKey::generate(OsRng);
    let err = open(&sealed.message, OpenWith::SessionKey(&wrong), &[]).unwrap_err();
    assert!(matches!(err, OpenError::Undecryptable(_)), "{err:?}");

    // Flip one bit deep inside the encrypted data and re-armor it.
    let post = EncryptedPost::parse(&sealed.message).unwrap();
    let mut packets = post.packets.clone();
    let target = packets.len() - 40;
    packets[target] ^= 0x01;
    let text = String::from_utf8(sealed.message.clone()).unwrap();
    let start = text.find("-----BEGIN PGP MESSAGE-----").unwrap();
    let end = text.find("-----END PGP MESSAGE-----\r\n").unwrap() + 27;
    let rearmored = String::from_utf8(armor_message(&packets)).unwrap();
    let tampered = format!("{}{}{}", &text[..start], rearmored, &text[end..]).into_bytes();
    let err = open(&tampered, OpenWith::SessionKey(&sealed.session_key), &[]).unwrap_err();
    // The integrity check (MDC) fails as the data is decrypted, before any plaintext.
    assert!(matches!(err, OpenError::Undecryptable(_)), "{err:?}");
}

#[test]
fn a_swapped_key_id_names_a_key_that_does_not_open_the_post() {
    let a = seal(OsRng, POST.as_bytes(), sender(), "https://keys.example.org").unwrap();
    let b = seal(OsRng, POST.as_bytes(), sender(), "https://keys.example.org").unwrap();
    let swapped = String::from_utf8(a.message)
        .unwrap()
        .replace(a.key_id.as_str(), b.key_id.as_str());
    let post = EncryptedPost::parse(swapped.as_bytes()).unwrap();
    assert_eq!(post.key_id, b.key_id, "the header is all that changed");
    // A reader fetches the key the header names, and it does not open this ciphertext.
    let err = open(
        swapped.as_bytes(),
        OpenWith::SessionKey(&b.session_key),
        &[],
    )
    .unwrap_err();
    assert!(matches!(err, OpenError::Undecryptable(_)), "{err:?}");
}

#[test]
fn truncated_armor_is_refused_by_the_outer_parser() {
    let sealed = seal(OsRng, POST.as_bytes(), sender(), "https://keys.example.org").unwrap();
    let text = String::from_utf8(sealed.message).unwrap();
    let begin = text.find("-----BEGIN PGP MESSAGE-----").unwrap();
    let end = text.find("-----END PGP MESSAGE-----").unwrap();
    // Drop the second half of the base64 lines, keeping the armor's last line.
    let cut = text[..begin + (end - begin) / 2].rfind("\r\n").unwrap() + 2;
    let truncated = format!("{}{}", &text[..cut], &text[end..]);
    let err = EncryptedPost::parse(truncated.as_bytes()).unwrap_err();
    assert!(matches!(err, OuterError::MalformedPayload(_)), "{err:?}");
    let err = open(
        truncated.as_bytes(),
        OpenWith::SessionKey(&sealed.session_key),
        &[],
    )
    .unwrap_err();
    assert!(matches!(err, OpenError::Outer(_)), "{err:?}");
}

#[test]
fn signature_by_someone_outside_the_candidates_is_invalid() {
    let sealed = seal(OsRng, POST.as_bytes(), sender(), "https://keys.example.org").unwrap();
    let opened = open(
        &sealed.message,
        OpenWith::SessionKey(&sealed.session_key),
        &[member().cert().clone()],
    )
    .unwrap();
    assert_eq!(opened.signature, Signature::Invalid);
}

/// Whether a seal error is the one a case expects.
type ExpectedSealError = fn(&SealError) -> bool;

#[test]
fn refuses_input_that_is_not_a_postable_message() {
    let cases: [(&str, &str, ExpectedSealError); 3] = [
        ("no headers at all", "no From", |e| {
            matches!(e, SealError::NotAMessage | SealError::BadFrom)
        }),
        (
            "From: a@example.org, b@example.org\r\nTo: l@lists.example.org\r\n\r\nx",
            "two From",
            |e| matches!(e, SealError::BadFrom),
        ),
        ("From: a@example.org\r\n\r\nx", "no To", |e| {
            matches!(e, SealError::NoRecipient)
        }),
    ];
    for (input, why, expected) in cases {
        let err = seal(OsRng, input.as_bytes(), sender(), "https://k.example.org").unwrap_err();
        assert!(expected(&err), "{why}: {err:?}");
    }
    let err = seal(
        OsRng,
        POST.as_bytes(),
        sender(),
        "https://k.example.org\r\nBcc: x",
    )
    .unwrap_err();
    assert!(matches!(err, SealError::BadKeyServer(_)), "{err:?}");
}

#[test]
fn missing_message_id_is_generated_inside_and_out() {
    let post = "From: alice@example.org\nTo: team@lists.example.org\nSubject: lf only\n\nbody\n";
    let sealed = seal(OsRng, post.as_bytes(), sender(), "https://k.example.org").unwrap();
    let expected = format!("Message-ID: <{}@example.org>", sealed.key_id);
    assert!(String::from_utf8_lossy(&sealed.message).contains(&expected));
    let opened = open(
        &sealed.message,
        OpenWith::SessionKey(&sealed.session_key),
        &[],
    )
    .unwrap();
    let inner = String::from_utf8(opened.message).unwrap();
    assert!(inner.contains(&expected));
    assert!(inner.ends_with("\n\nbody\n"));
}

/// A 10 MiB attachment of every byte value round-trips exactly.
#[test]
fn ten_mebibyte_binary_attachment_round_trips() {
    let attachment: Vec<u8> = (0..10 * 1024 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    let message = multipart_with_attachment("big", "see attached", &attachment);
    let sealed = seal(OsRng, &message, sender(), "https://k.example.org").unwrap();
    let opened = open(
        &sealed.message,
        OpenWith::SessionKey(&sealed.session_key),
        &[sender().cert().clone()],
    )
    .unwrap();
    assert!(opened.message.ends_with(&message[body_offset(&message)..]));
    assert_eq!(
        opened.signature.valid_signer(),
        Some(sender().fingerprint())
    );
}

fn body_offset(message: &[u8]) -> usize {
    message.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4
}

/// A multipart/mixed message with a text part and a raw 8-bit binary attachment
/// (Content-Transfer-Encoding: binary, as BINARYMIME allows).
fn multipart_with_attachment(subject: &str, text: &str, attachment: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "From: Alice <alice@example.org>\r\nTo: team@lists.example.org\r\nSubject: {subject}\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b0undary\"\r\n\r\n\
         --b0undary\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n\
         --b0undary\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(attachment);
    m.extend_from_slice(b"\r\n--b0undary--\r\n");
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_messages_round_trip_exactly(
        subject in "[ -~\u{a0}-\u{24f}]{0,200}",
        long_line in proptest::collection::vec(b'a'..=b'z', 0..3000),
        text in "\\PC{0,400}",
        attachment in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        let mut text = text;
        text.push('\n');
        text.push_str(std::str::from_utf8(&long_line).unwrap());
        let message = multipart_with_attachment(&subject.replace(['\r', '\n'], " "), &text, &attachment);
        let sealed = seal(OsRng, &message, sender(), "https://k.example.org").unwrap();
        let opened = open(&sealed.message, OpenWith::SessionKey(&sealed.session_key), &[sender().cert().clone()]).unwrap();
        prop_assert_eq!(opened.signature.valid_signer(), Some(sender().fingerprint()));
        let body = &message[body_offset(&message)..];
        prop_assert!(opened.message.ends_with(body));
        let subject_line = format!("Subject: {}\r\n", subject.replace(['\r', '\n'], " "));
        prop_assert!(opened.message.windows(subject_line.len()).any(|w| w == subject_line.as_bytes()));
    }
}
