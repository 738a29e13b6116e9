//! A post's proof of origin. The poster's roster key signs the lists a post is for, its key
//! id, the SHA-256 of its OpenPGP packets and the time; the proof travels in a header of the
//! outer message. The list server verifies it with the certificate of the member the From
//! names before it answers 250, so nobody can post as a member (the From alone proves
//! nothing), and a proof cannot be moved to other packets, another key id or another list.
//!
//! The proof is not a request: mail may sit in queues for days, so it carries no nonce and
//! has a wide age window. Replaying it is harmless: the list server keeps one post per list
//! and key id, and the same bytes again are a repeat.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::address::Address;
use crate::identity::{Cert, IdentityError, NotValid, SecretIdentity, SignatureRefusal};
use crate::request::MAX_SKEW_SECS;
use crate::session::KeyId;
use crate::signed::{Domain, Signed};

/// The outer header carrying the proof.
pub const POST_PROOF_HEADER: &str = "Hushlist-Post-Proof";

/// Oldest proof accepted: longer than mail servers keep retrying (Postfix gives up after five
/// days), so a post delayed in a queue still gets in.
pub const MAX_PROOF_AGE_SECS: u64 = 7 * 24 * 60 * 60;

/// Longest a header line of the proof gets (RFC 5322 asks for 78 characters).
const FOLD_AT: usize = 64;

/// What the poster signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofBody {
    lists: Vec<Address>,
    key_id: KeyId,
    packets_sha256: String,
    signed_at: u64,
}

/// Why a post's proof does not let it in. Every answer is the same whoever the From names,
/// except that only a proof by the member it names gets past [`ProofError::BadSignature`],
/// so a refusal does not tell a stranger who is on the roster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error(
        "the post carries no {POST_PROOF_HEADER} header; posts to this list must be sent with `hushlist send`"
    )]
    Missing,
    #[error("the post carries more than one {POST_PROOF_HEADER} header")]
    Repeated,
    #[error("the post's {POST_PROOF_HEADER} header is malformed: {0}")]
    Malformed(String),
    #[error(
        "the post's {POST_PROOF_HEADER} is not signed by the roster key of the member its From names"
    )]
    BadSignature,
    /// Only the member's own key gets this far, so it tells nobody else anything.
    #[error(
        "the post's {POST_PROOF_HEADER} is signed by the member's key, which was not valid when it signed: {0}"
    )]
    KeyNotValid(NotValid),
    #[error("the post's proof was made for {named}, not this list")]
    OtherList { named: String },
    #[error("the post's proof was made for other OpenPGP data or another key id")]
    OtherPost,
    #[error(
        "the post's proof was made {age_secs} s ago; proofs are accepted for {MAX_PROOF_AGE_SECS} s"
    )]
    Stale { age_secs: u64 },
    #[error(
        "the post's proof is dated {ahead_secs} s ahead of the server's clock (limit {MAX_SKEW_SECS} s)"
    )]
    Future { ahead_secs: u64 },
}

/// A signed proof, as carried in [`POST_PROOF_HEADER`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostProof {
    signed: Signed,
}

impl PostProof {
    /// Signs the proof for the post whose OpenPGP data is `packets` (binary, before any PKESK
    /// is spliced in), to be sent to `lists` at time `now`.
    pub fn sign<R: Rng + CryptoRng>(
        rng: R,
        signer: &SecretIdentity,
        lists: &[Address],
        key_id: &KeyId,
        packets: &[u8],
        now: u64,
    ) -> Result<Self, IdentityError> {
        let body = ProofBody {
            lists: lists.to_vec(),
            key_id: key_id.clone(),
            packets_sha256: hex::encode(Sha256::digest(packets)),
            signed_at: now,
        };
        let bytes = serde_json::to_vec(&body).expect("proof bodies always serialize");
        Ok(PostProof {
            signed: Signed::sign(rng, Domain::PostProof, signer, bytes)?,
        })
    }

    /// The header value: base64 body, a dot, base64 signature, folded onto short lines.
    pub fn to_header_value(&self) -> String {
        let text = format!(
            "{}.{}",
            STANDARD.encode(&self.signed.body),
            STANDARD.encode(&self.signed.signature)
        );
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(FOLD_AT)
            .map(|chunk| std::str::from_utf8(chunk).expect("base64 is ASCII"))
            .collect();
        lines.join("\r\n ")
    }

    /// Reads a header value, however it was folded.
    pub fn from_header_value(value: &str) -> Result<Self, ProofError> {
        let text: String = value.split_ascii_whitespace().collect();
        let (body, signature) = text
            .split_once('.')
            .ok_or_else(|| ProofError::Malformed("no '.' between body and signature".into()))?;
        let decode = |part: &str, what: &str| {
            STANDARD
                .decode(part)
                .map_err(|e| ProofError::Malformed(format!("{what}: {e}")))
        };
        Ok(PostProof {
            signed: Signed {
                body: decode(body, "body")?,
                signature: decode(signature, "signature")?,
            },
        })
    }

    /// Checks that `poster` (the certificate of the member the post's From names) signed this
    /// proof for `list`, this key id and exactly these packets, within the age window. What
    /// the proof says is checked before who signed it, so a proof taken from another post
    /// gets the same answer whether or not the From names a member of this list.
    pub fn verify(
        &self,
        poster: Option<&Cert>,
        list: &Address,
        key_id: &KeyId,
        packets: &[u8],
        now: u64,
    ) -> Result<(), ProofError> {
        let body: ProofBody = serde_json::from_slice(&self.signed.body)
            .map_err(|e| ProofError::Malformed(e.to_string()))?;
        if !body.lists.iter().any(|named| named.same_mailbox(list)) {
            let named: Vec<String> = body.lists.iter().map(Address::to_string).collect();
            return Err(ProofError::OtherList {
                named: named.join(", "),
            });
        }
        if body.key_id != *key_id || body.packets_sha256 != hex::encode(Sha256::digest(packets)) {
            return Err(ProofError::OtherPost);
        }
        if body.signed_at > now + MAX_SKEW_SECS {
            return Err(ProofError::Future {
                ahead_secs: body.signed_at - now,
            });
        }
        let age_secs = now.saturating_sub(body.signed_at);
        if age_secs > MAX_PROOF_AGE_SECS {
            return Err(ProofError::Stale { age_secs });
        }
        let poster = poster.ok_or(ProofError::BadSignature)?;
        match self.signed.check(Domain::PostProof, poster, None) {
            Ok(()) => Ok(()),
            Err(SignatureRefusal::KeyNotValid(not_valid)) => {
                Err(ProofError::KeyNotValid(not_valid))
            }
            Err(SignatureRefusal::NotBy(_)) => Err(ProofError::BadSignature),
        }
    }
}
