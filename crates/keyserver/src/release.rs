//! The release decision and the key server's one cryptographic step: if the roster and the
//! post's policy let `reader` have the key, seal the session key to their encryption subkey.

use hushlist_core::roster::{Refusal, Roster};
use hushlist_core::session::SessionError;
use hushlist_core::{Fingerprint, Pkesk, SessionKey};
use rand::{CryptoRng, Rng};

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    #[error("the member's key cannot receive the session key: {0}")]
    Key(#[from] SessionError),
}

/// Seals `session_key` for `reader` if the roster lets them read a post made at roster seq
/// `posted_at`, to their encryption subkey valid `now` (unix seconds).
pub fn release<R: Rng + CryptoRng>(
    rng: R,
    roster: &Roster,
    posted_at: u64,
    session_key: &SessionKey,
    reader: &Fingerprint,
    now: u64,
) -> Result<Pkesk, ReleaseError> {
    let cert = roster.may_read(reader, posted_at)?;
    Ok(Pkesk::seal(rng, session_key, cert, now)?)
}
