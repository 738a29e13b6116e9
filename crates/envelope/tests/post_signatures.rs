//! Issue 25, hole 6: only a post signature opens as one. Alice's key makes other signatures
//! too: roster ops and requests (detached, over their own domain's bytes), certifications of
//! keys (type 0x13). A member who holds one wraps it, with the bytes it covers as the literal,
//! in a post of their own: it verifies against Alice's key, but is not taken as her post.
//! Nor is a post signature dated years ahead (it would outlive any revocation check by date),
//! or one without the post marker.

use std::sync::OnceLock;

use hushlist_core::outer::armor_message;
use hushlist_core::session::POST_CIPHER;
use hushlist_core::signed::{Domain, Signed};
use hushlist_core::{Address, SecretIdentity};
use hushlist_envelope::{
    NotAPostSignature, OpenWith, SIGNATURE_SKEW_SECS, Sealed, Signature, SignedContext, open, seal,
};
use hushlist_testkit::now;
use pgp::composed::{Deserializable as _, DetachedSignature};
use pgp::packet::{
    LiteralData, Notation, OnePassSignature, PacketTrait as _, SignatureConfig, SignatureType,
    Subpacket, SubpacketData, SymEncryptedProtectedData,
};
use pgp::types::Timestamp;
use rand::rngs::OsRng;

const LIST: &str = "team@lists.example.org";
const POST: &str = "From: Alice <alice@example.org>\r\n\
To: team@lists.example.org\r\n\
Subject: Hand-signed\r\n\
Message-ID: <hand-1@example.org>\r\n\
\r\n\
Signed by hand.\r\n";

fn alice() -> &'static SecretIdentity {
    static ID: OnceLock<SecretIdentity> = OnceLock::new();
    ID.get_or_init(|| SecretIdentity::generate(OsRng, "Alice <alice@example.org>").unwrap())
}

/// `sealed`'s outer form around a one-pass signature, `literal` and `signature` (Alice's), all
/// encrypted under `sealed`'s session key: what a member's own program can build from any
/// signature of Alice's and the bytes it covers.
fn wrapped(sealed: &Sealed, literal: &[u8], signature: pgp::packet::Signature) -> Vec<u8> {
    let mut inner = Vec::new();
    alice()
        .with_signing_key(|key| {
            OnePassSignature::v3(
                signature.typ().unwrap(),
                signature.hash_alg().unwrap(),
                key.algorithm(),
                key.legacy_key_id(),
            )
            .to_writer_with_header(&mut inner)
            .unwrap();
        })
        .unwrap();
    LiteralData::from_bytes("", literal.to_vec().into())
        .unwrap()
        .to_writer_with_header(&mut inner)
        .unwrap();
    signature.to_writer_with_header(&mut inner).unwrap();
    let mut packets = Vec::new();
    SymEncryptedProtectedData::encrypt_seipdv1(
        OsRng,
        POST_CIPHER,
        &sealed.session_key.as_bytes()[..],
        &inner,
    )
    .unwrap()
    .to_writer_with_header(&mut packets)
    .unwrap();
    let text = String::from_utf8(sealed.message.clone()).unwrap();
    let start = text.find("-----BEGIN PGP MESSAGE-----").unwrap();
    let end = text.find("-----END PGP MESSAGE-----\r\n").unwrap() + 27;
    let armored = String::from_utf8(armor_message(&packets)).unwrap();
    format!("{}{armored}{}", &text[..start], &text[end..]).into_bytes()
}

/// Alice's signature of type `typ` over `data`, dated `created`, with the post marker and the
/// sealed post's key id and list among its notations when `marked`.
fn signature_by_alice(
    sealed: &Sealed,
    data: &[u8],
    typ: SignatureType,
    created: u64,
    marked: bool,
) -> pgp::packet::Signature {
    alice()
        .with_signing_key(|key| {
            let mut config = SignatureConfig::from_key(OsRng, &Box::new(key), typ).unwrap();
            config.hashed_subpackets = vec![
                Subpacket::regular(SubpacketData::IssuerFingerprint(key.fingerprint())).unwrap(),
                Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::from_secs(
                    created as u32,
                )))
                .unwrap(),
            ];
            if marked {
                for (name, value) in [
                    ("post@hushlist.org", "1".to_owned()),
                    ("key-id@hushlist.org", sealed.key_id.to_string()),
                    ("list@hushlist.org", LIST.to_owned()),
                ] {
                    config.hashed_subpackets.push(
                        Subpacket::regular(SubpacketData::Notation(Notation {
                            readable: true,
                            name: name.into(),
                            value: value.into(),
                        }))
                        .unwrap(),
                    );
                }
            }
            config.unhashed_subpackets =
                vec![Subpacket::regular(SubpacketData::IssuerKeyId(key.legacy_key_id())).unwrap()];
            // Hashed as a signature over a document is (the data, then the signature's
            // fields and trailer), by hand: rPGP's document signer makes only types 0x00
            // and 0x01, while a key's self-certification is type 0x13.
            let mut hasher = config.hash_alg.new_hasher().unwrap();
            hasher.update(data);
            let len = config.hash_signature_data(&mut hasher).unwrap();
            hasher.update(&config.trailer(len).unwrap());
            let hash = hasher.finalize();
            let signature_bytes = key
                .sign(&alice().password(), config.hash_alg, &hash)
                .unwrap();
            pgp::packet::Signature::from_config(config, [hash[0], hash[1]], signature_bytes)
                .unwrap()
        })
        .unwrap()
}

/// What `open` makes of the post: the signature it reports.
fn opened_signature(sealed: &Sealed, outer: &[u8]) -> Signature {
    open(
        outer,
        OpenWith::SessionKey(&sealed.session_key),
        &[alice().cert().clone()],
    )
    .unwrap()
    .signature
}

fn sealed() -> Sealed {
    seal(OsRng, POST.as_bytes(), alice(), "https://keys.example.org").unwrap()
}

#[test]
fn alices_roster_op_signature_is_not_her_post() {
    let sealed = sealed();
    let body = br#"{"list":"team@lists.example.org","seq":1}"#.to_vec();
    let op = Signed::sign(OsRng, Domain::RosterOp, alice(), body.clone()).unwrap();
    let signature = DetachedSignature::from_bytes(&op.signature[..])
        .unwrap()
        .signature;
    let mut covered = b"hushlist roster-op v1\n".to_vec();
    covered.extend_from_slice(&body);
    let outer = wrapped(&sealed, &covered, signature);
    let signature = opened_signature(&sealed, &outer);
    assert!(
        matches!(
            &signature,
            Signature::NotAPost { signer, reason: NotAPostSignature::NoMarker { .. } }
                if signer == alice().fingerprint()
        ),
        "{signature:?}"
    );
}

#[test]
fn a_certification_signature_by_alices_key_is_not_her_post() {
    let sealed = sealed();
    let typ = SignatureType::CertPositive;
    let signature = signature_by_alice(&sealed, POST.as_bytes(), typ, now(), true);
    let outer = wrapped(&sealed, POST.as_bytes(), signature);
    assert_eq!(
        opened_signature(&sealed, &outer),
        Signature::NotAPost {
            signer: alice().fingerprint().clone(),
            reason: NotAPostSignature::WrongType(Some(typ))
        }
    );
}

#[test]
fn a_post_signature_dated_five_years_ahead_is_refused() {
    let sealed = sealed();
    let created = now() + 5 * 365 * 24 * 3600;
    let signature = signature_by_alice(
        &sealed,
        POST.as_bytes(),
        SignatureType::Binary,
        created,
        true,
    );
    let outer = wrapped(&sealed, POST.as_bytes(), signature);
    let signature = opened_signature(&sealed, &outer);
    assert!(
        matches!(
            &signature,
            Signature::NotAPost { reason: NotAPostSignature::Future { created: at, .. }, .. }
                if *at == created
        ),
        "{signature:?}"
    );
    // Within the skew (a sender's clock a little ahead) a post signature opens.
    let created = now() + SIGNATURE_SKEW_SECS / 2;
    let signature = signature_by_alice(
        &sealed,
        POST.as_bytes(),
        SignatureType::Binary,
        created,
        true,
    );
    let outer = wrapped(&sealed, POST.as_bytes(), signature);
    let signature = opened_signature(&sealed, &outer);
    assert!(
        matches!(signature, Signature::Valid { .. }),
        "within the skew: {signature:?}"
    );
}

#[test]
fn a_binary_signature_without_the_post_marker_is_not_a_post() {
    let sealed = sealed();
    let signature = signature_by_alice(
        &sealed,
        POST.as_bytes(),
        SignatureType::Binary,
        now(),
        false,
    );
    let outer = wrapped(&sealed, POST.as_bytes(), signature);
    let signature = opened_signature(&sealed, &outer);
    assert!(
        matches!(
            &signature,
            Signature::NotAPost { signer, reason: NotAPostSignature::NoMarker { .. } }
                if signer == alice().fingerprint()
        ),
        "{signature:?}"
    );
}

/// The control: the same hand-built form with a marked binary signature dated now opens as
/// Alice's, binding the key id and list its notations name, so the refusals above are for
/// the signature alone.
#[test]
fn a_marked_binary_signature_dated_now_opens_as_alices() {
    let sealed = sealed();
    let signature =
        signature_by_alice(&sealed, POST.as_bytes(), SignatureType::Binary, now(), true);
    let outer = wrapped(&sealed, POST.as_bytes(), signature);
    assert_eq!(
        opened_signature(&sealed, &outer),
        Signature::Valid {
            signer: alice().fingerprint().clone(),
            context: SignedContext {
                key_id: sealed.key_id.to_string(),
                lists: vec![Address::parse(LIST).unwrap()],
            }
        }
    );
}
