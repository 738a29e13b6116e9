//! Golden files for the outer format. `outer-structure.eml` is a freshly sealed post with the
//! random parts (key id, proof of origin, armored payload) masked, so any change to the format shows up as a
//! diff. `sealed-post.eml` was sealed by an earlier build and must keep opening, with its
//! session key and sender certificate stored beside it. Set HUSHLIST_BLESS=1 to rewrite the
//! files after an intended format change.

use std::path::PathBuf;

use hushlist_core::{Cert, SecretIdentity, SessionKey};
use hushlist_envelope::{NotAPostSignature, OpenWith, Signature, open, seal};
use rand::rngs::OsRng;

const INPUT: &str = "From: Alice <alice@example.org>\r\n\
To: team@lists.example.org\r\n\
Cc: bob@example.org\r\n\
Subject: Golden\r\n\
Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <golden@example.org>\r\n\
In-Reply-To: <earlier@example.org>\r\n\
X-Mailer: golden-test\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
Golden body.\r\n";

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn bless() -> bool {
    std::env::var_os("HUSHLIST_BLESS").is_some()
}

fn check(name: &str, actual: &[u8]) {
    let path = golden(name);
    if bless() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        expected == actual,
        "{name} differs from the golden file:\n--- expected\n{}\n--- actual\n{}",
        String::from_utf8_lossy(&expected),
        String::from_utf8_lossy(actual)
    );
}

#[test]
fn outer_format_matches_the_golden_file() {
    let sender = SecretIdentity::generate(OsRng, "Alice <alice@example.org>").unwrap();
    let sealed = seal(OsRng, INPUT.as_bytes(), &sender, "https://keys.example.org").unwrap();
    let text = String::from_utf8(sealed.message).unwrap();
    let start = text.find("-----BEGIN PGP MESSAGE-----").unwrap();
    let end =
        text.find("-----END PGP MESSAGE-----\r\n").unwrap() + "-----END PGP MESSAGE-----\r\n".len();
    let proof_start = text.find("Hushlist-Post-Proof: ").unwrap() + "Hushlist-Post-Proof: ".len();
    let proof_end = proof_start
        + text[proof_start..]
            .match_indices("\r\n")
            .map(|(i, _)| i)
            .find(|&i| !text[proof_start + i + 2..].starts_with(' '))
            .unwrap();
    let masked = format!(
        "{}<POST PROOF>{}<ARMORED OPENPGP PAYLOAD>\r\n{}",
        &text[..proof_start],
        &text[proof_end..start],
        &text[end..]
    )
    .replace(sealed.key_id.as_str(), "<KEY-ID>");
    check("outer-structure.eml", masked.as_bytes());
}

#[test]
fn a_post_sealed_by_an_earlier_build_still_opens() {
    if bless() {
        let sender = SecretIdentity::generate(OsRng, "Alice <alice@example.org>").unwrap();
        let sealed = seal(OsRng, INPUT.as_bytes(), &sender, "https://keys.example.org").unwrap();
        std::fs::write(golden("sealed-post.eml"), &sealed.message).unwrap();
        std::fs::write(
            golden("sealed-post.session-key"),
            format!("9:{}\n", hex::encode(sealed.session_key.as_bytes())),
        )
        .unwrap();
        std::fs::write(golden("sender.asc"), sender.cert().to_armored()).unwrap();
    }
    let outer = std::fs::read(golden("sealed-post.eml")).unwrap();
    let key = SessionKey::from_gpg_string(
        &std::fs::read_to_string(golden("sealed-post.session-key")).unwrap(),
    )
    .unwrap();
    let sender = Cert::from_bytes(&std::fs::read(golden("sender.asc")).unwrap()).unwrap();
    let opened = open(
        &outer,
        OpenWith::SessionKey(&key),
        std::slice::from_ref(&sender),
    )
    .unwrap();
    assert_eq!(opened.signature.valid_signer(), Some(sender.fingerprint()));
    check("sealed-post.inner.eml", &opened.message);
}

/// A post sealed before post signatures carried the post marker (issue 25) still decrypts to
/// the same message, but its signature is not taken as a post signature: it binds no list or
/// key id, so anyone who could read it could have re-posted it.
#[test]
fn a_post_sealed_before_the_post_marker_decrypts_but_is_not_taken_as_a_post() {
    let outer = std::fs::read(golden("unmarked-post.eml")).unwrap();
    let key = SessionKey::from_gpg_string(
        &std::fs::read_to_string(golden("unmarked-post.session-key")).unwrap(),
    )
    .unwrap();
    let sender = Cert::from_bytes(&std::fs::read(golden("unmarked-sender.asc")).unwrap()).unwrap();
    let opened = open(
        &outer,
        OpenWith::SessionKey(&key),
        std::slice::from_ref(&sender),
    )
    .unwrap();
    let signature = opened.signature;
    assert!(
        matches!(
            &signature,
            Signature::NotAPost { signer, reason: NotAPostSignature::NoMarker { .. } }
                if signer == sender.fingerprint()
        ),
        "{signature:?}"
    );
    check("unmarked-post.inner.eml", &opened.message);
}
