//! Checking a signed request from someone on a list's roster: per-signer rate limit,
//! signature, clock skew, and the nonce. The rate-limit counts and the nonces live in the
//! store, shared by every instance of the server, so a signer's limit and a request's
//! single use hold whichever instance they reach.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use hushlist_core::request::{RequestError, SignedRequest, VerifiedRequest};
use hushlist_core::roster::Roster;
use hushlist_core::{Cert, Fingerprint};
use hushlist_store::Store;

use crate::ApiError;

pub struct RequestVerifier {
    /// Requests a signer may make per window.
    per_window: i64,
    window_secs: u64,
}

/// Records a verified request's nonce in the store, shared by every instance; a nonce seen
/// before is a replay.
pub async fn use_nonce(store: &Store, verified: &VerifiedRequest) -> Result<(), ApiError> {
    let fresh = store
        .remember_nonce(
            verified.signer.as_str(),
            &verified.nonce,
            i64::try_from(verified.nonce_expires_at).unwrap_or(i64::MAX),
        )
        .await?;
    if fresh {
        Ok(())
    } else {
        Err(ApiError::request(RequestError::Replayed))
    }
}

/// Rate-limit windows are forgotten this long after they end.
const WINDOW_MEMORY_SECS: u64 = 3600;

impl RequestVerifier {
    /// Each signer may make `rate_burst` requests at once and `rate_per_sec` on average: at
    /// most `rate_burst` in each window of `rate_burst / rate_per_sec` seconds.
    pub fn new(rate_per_sec: f64, rate_burst: f64) -> Self {
        let window_secs = if rate_per_sec > 0.0 {
            (rate_burst / rate_per_sec)
                .ceil()
                .clamp(1.0, u64::MAX as f64) as u64
        } else {
            u64::MAX
        };
        RequestVerifier {
            per_window: rate_burst.clamp(1.0, i64::MAX as f64) as i64,
            window_secs,
        }
    }

    /// Checks `request` for `purpose` from someone ever on `roster`; returns what was signed
    /// and the signer's certificate.
    pub async fn verify(
        &self,
        store: &Store,
        roster: &Roster,
        request: &SignedRequest,
        purpose: &str,
    ) -> Result<(VerifiedRequest, Cert), ApiError> {
        // A signer never on the roster gets the same answer as a forgery naming a member, so
        // that nobody can ask whether a fingerprint is or was on a list.
        let not_signed = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                format!(
                    "the request is not signed by anyone on the roster of {}: its key is not on the roster, or it is forged",
                    roster.list()
                ),
            )
        };
        let cert = roster
            .known_cert(&request.signer)
            .ok_or_else(not_signed)?
            .clone();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let verified = request
            .verify_signature_and_clock(purpose, &cert, now)
            .map_err(|e| match e {
                RequestError::BadSignature(_) => not_signed(),
                other => ApiError::request(other),
            })?;
        // Counted only once the signature holds: counting every request that names a member
        // let anyone use up that member's allowance with forgeries and lock them out. Only
        // members are counted, so strangers cannot grow the table either.
        self.rate_limit(store, &verified.signer, now).await?;
        use_nonce(store, &verified).await?;
        Ok((verified, cert))
    }

    async fn rate_limit(&self, store: &Store, who: &Fingerprint, now: u64) -> Result<(), ApiError> {
        let window_start = now - now % self.window_secs;
        let count = store
            .count_request(
                who.as_str(),
                i64::try_from(window_start).unwrap_or(i64::MAX),
            )
            .await?;
        if count > self.per_window {
            return Err(ApiError::rate_limited(who));
        }
        Ok(())
    }

    /// When rate-limit windows that no longer matter may be pruned (those started before).
    pub fn prunable_before(&self, now: u64) -> i64 {
        let before = now
            .saturating_sub(self.window_secs)
            .saturating_sub(WINDOW_MEMORY_SECS);
        i64::try_from(before).unwrap_or(0)
    }
}
