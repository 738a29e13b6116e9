//! Signed requests from clients to the servers: a body, the purpose it is for (method and
//! path), a timestamp, a nonce and the signer, all covered by one detached OpenPGP signature.
//! The verifier refuses bad signatures, clocks more than [`MAX_SKEW_SECS`] apart and nonces
//! seen before. Nonce memory is passed in, so this stays pure; servers back it with their
//! store so every instance shares it.

use std::collections::HashMap;

use rand::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};

use crate::identity::{
    Cert, Fingerprint, IdentityError, NotValid, SecretIdentity, SignatureRefusal,
};
use crate::signed::{Domain, Signed, b64};

/// Largest accepted difference between the signer's clock and the verifier's.
pub const MAX_SKEW_SECS: u64 = 300;

/// The fields a request's signature covers, serialized as the signed bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Covered {
    purpose: String,
    signer: Fingerprint,
    timestamp: u64,
    nonce: String,
    #[serde(with = "b64")]
    body: Vec<u8>,
}

/// A request as sent over the wire (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRequest {
    pub signer: Fingerprint,
    #[serde(flatten)]
    pub signed: Signed,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the request is not well formed: {0}")]
    Malformed(String),
    #[error("the request was signed for {signed_for:?}, not {expected:?}")]
    WrongPurpose {
        expected: String,
        signed_for: String,
    },
    #[error("the request names {named} as signer but its envelope says {envelope}")]
    SignerMismatch {
        named: Fingerprint,
        envelope: Fingerprint,
    },
    #[error("the signature does not verify with the certificate of {0}")]
    BadSignature(Fingerprint),
    #[error("the request's signature is genuine but its key was not valid: {0}")]
    KeyNotValid(NotValid),
    #[error("the request is {skew_secs} s away from the server's clock (limit {MAX_SKEW_SECS} s)")]
    Stale { skew_secs: u64 },
    #[error("the request's nonce was already used (replay)")]
    Replayed,
}

/// Remembers nonces until their request could no longer pass the clock check.
pub trait NonceMemory {
    /// Records `nonce` for `signer`, forgettable after `expires_at` (unix seconds).
    /// Returns false if it was already recorded.
    fn remember(&mut self, signer: &Fingerprint, nonce: &str, expires_at: u64) -> bool;
}

/// Nonce memory for one process, pruned as entries expire.
#[derive(Debug, Default)]
pub struct RecentNonces {
    seen: HashMap<(Fingerprint, String), u64>,
    now: u64,
}

impl RecentNonces {
    /// Drops nonces that expired before `now`.
    pub fn prune(&mut self, now: u64) {
        self.now = now;
        self.seen.retain(|_, expires| *expires >= now);
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

impl NonceMemory for RecentNonces {
    fn remember(&mut self, signer: &Fingerprint, nonce: &str, expires_at: u64) -> bool {
        let key = (signer.clone(), nonce.to_owned());
        match self.seen.get(&key) {
            Some(expires) if *expires >= self.now => false,
            _ => {
                self.seen.insert(key, expires_at);
                true
            }
        }
    }
}

/// A request whose signature has been checked (and its freshness, unless it came from
/// [`SignedRequest::verify_signature`]). Its nonce still has to be recorded (see
/// [`SignedRequest::verify`]) before the request is acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRequest {
    pub signer: Fingerprint,
    pub timestamp: u64,
    pub nonce: String,
    /// When the nonce may be forgotten: the request can no longer pass the clock check.
    pub nonce_expires_at: u64,
    pub body: Vec<u8>,
}

impl VerifiedRequest {
    /// Refuses a request signed further from `now` than clocks may differ.
    pub fn check_clock(&self, now: u64) -> Result<(), RequestError> {
        let skew_secs = now.abs_diff(self.timestamp);
        if skew_secs > MAX_SKEW_SECS {
            return Err(RequestError::Stale { skew_secs });
        }
        Ok(())
    }
}

impl SignedRequest {
    /// Signs `body` for `purpose` (for example `POST /v1/keys`) at time `now`.
    pub fn sign<R: Rng + CryptoRng>(
        mut rng: R,
        signer: &SecretIdentity,
        purpose: &str,
        body: Vec<u8>,
        now: u64,
    ) -> Result<Self, IdentityError> {
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        let covered = Covered {
            purpose: purpose.to_owned(),
            signer: signer.fingerprint().clone(),
            timestamp: now,
            nonce: hex::encode(nonce),
            body,
        };
        let bytes = serde_json::to_vec(&covered).expect("request envelopes always serialize");
        Ok(SignedRequest {
            signer: signer.fingerprint().clone(),
            signed: Signed::sign(rng, Domain::Request, signer, bytes)?,
        })
    }

    /// Checks the request against `cert` (the signer's certificate, which the caller looked up
    /// by [`SignedRequest::signer`]), the purpose the server received it for, the clock and
    /// the nonce memory. The nonce is recorded only for a request whose signature holds, so
    /// forged requests cannot use up a real signer's nonces.
    pub fn verify(
        &self,
        purpose: &str,
        cert: &Cert,
        now: u64,
        nonces: &mut impl NonceMemory,
    ) -> Result<VerifiedRequest, RequestError> {
        let verified = self.verify_signature_and_clock(purpose, cert, now)?;
        if !nonces.remember(&verified.signer, &verified.nonce, verified.nonce_expires_at) {
            return Err(RequestError::Replayed);
        }
        Ok(verified)
    }

    /// Everything [`SignedRequest::verify`] checks except the nonce, for servers whose nonce
    /// memory is a database the caller writes to itself (and which must then refuse the
    /// request as [`RequestError::Replayed`] if the nonce was already there).
    pub fn verify_signature_and_clock(
        &self,
        purpose: &str,
        cert: &Cert,
        now: u64,
    ) -> Result<VerifiedRequest, RequestError> {
        let verified = self.verify_signature_valid_at(purpose, cert, Some(now))?;
        verified.check_clock(now)?;
        Ok(verified)
    }

    /// Checks the signature, signer and purpose but not the clock: for a request read again
    /// long after it was made (an owner checking a join request the list server kept).
    /// The signing key must have been valid when it signed.
    pub fn verify_signature(
        &self,
        purpose: &str,
        cert: &Cert,
    ) -> Result<VerifiedRequest, RequestError> {
        self.verify_signature_valid_at(purpose, cert, None)
    }

    /// [`SignedRequest::verify_signature`], the signing key also valid at `also_at` if given:
    /// a signature's own time is whatever its signer wrote, so a request acted on now needs
    /// a key valid now.
    fn verify_signature_valid_at(
        &self,
        purpose: &str,
        cert: &Cert,
        also_at: Option<u64>,
    ) -> Result<VerifiedRequest, RequestError> {
        if cert.fingerprint() != &self.signer {
            return Err(RequestError::BadSignature(self.signer.clone()));
        }
        match self.signed.check(Domain::Request, cert, also_at) {
            Ok(()) => {}
            Err(SignatureRefusal::KeyNotValid(not_valid)) => {
                return Err(RequestError::KeyNotValid(not_valid));
            }
            Err(SignatureRefusal::NotBy(_)) => {
                return Err(RequestError::BadSignature(self.signer.clone()));
            }
        }
        let covered: Covered = serde_json::from_slice(&self.signed.body)
            .map_err(|e| RequestError::Malformed(e.to_string()))?;
        if covered.signer != self.signer {
            return Err(RequestError::SignerMismatch {
                named: covered.signer,
                envelope: self.signer.clone(),
            });
        }
        if covered.purpose != purpose {
            return Err(RequestError::WrongPurpose {
                expected: purpose.to_owned(),
                signed_for: covered.purpose,
            });
        }
        let nonce_ok =
            covered.nonce.len() == 32 && covered.nonce.bytes().all(|b| b.is_ascii_hexdigit());
        if !nonce_ok {
            return Err(RequestError::Malformed(
                "nonce must be 32 hex digits".into(),
            ));
        }
        Ok(VerifiedRequest {
            signer: covered.signer,
            timestamp: covered.timestamp,
            nonce_expires_at: covered.timestamp + MAX_SKEW_SECS,
            nonce: covered.nonce,
            body: covered.body,
        })
    }
}
