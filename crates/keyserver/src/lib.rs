//! The key server (the patent's key-managing server). It holds each post's session key,
//! sealed to its own OpenPGP key on deposit, and releases it only as a PKESK to a member the
//! signed roster allows. It never receives a message body, and the code that decrypts one
//! (`hushlist-envelope`) is not in its dependency graph.
//!
//! This crate so far holds the release decision and its one cryptographic step; the HTTP
//! service and storage build on it.

use hushlist_core::roster::{Refusal, Roster};
use hushlist_core::session::SessionError;
use hushlist_core::{Fingerprint, Pkesk, SecretIdentity};
use rand::{CryptoRng, Rng};

/// A deposited session key as the key server keeps it: sealed to the server's own key, with
/// the roster head at the time of posting.
#[derive(Debug, Clone)]
pub struct Deposit {
    pub sealed_to_server: Pkesk,
    pub posted_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    #[error("the deposited key cannot be used: {0}")]
    Key(#[from] SessionError),
}

/// Decides whether `reader` may have the post's key under `roster`, and if so re-seals the
/// deposited session key to the reader's encryption subkey. The plain session key exists only
/// inside this call and is zeroized when it returns.
pub fn grant<R: Rng + CryptoRng>(
    rng: R,
    roster: &Roster,
    deposit: &Deposit,
    server: &SecretIdentity,
    reader: &Fingerprint,
) -> Result<Pkesk, GrantError> {
    let cert = roster.may_read(reader, deposit.posted_at)?;
    let session_key = deposit.sealed_to_server.unseal(server)?;
    Ok(Pkesk::seal(rng, &session_key, cert)?)
}
