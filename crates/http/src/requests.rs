//! Checking a signed request from someone on a list's roster: per-signer rate limit,
//! signature, clock skew, and the nonce recorded in the store (shared by every instance).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hushlist_core::request::{RequestError, SignedRequest, VerifiedRequest};
use hushlist_core::roster::Roster;
use hushlist_core::{Cert, Fingerprint};
use hushlist_store::Store;

use crate::ApiError;

pub struct RequestVerifier {
    rate_per_sec: f64,
    rate_burst: f64,
    buckets: Mutex<HashMap<Fingerprint, Bucket>>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RequestVerifier {
    /// Each signer may make `rate_burst` requests at once and `rate_per_sec` after that.
    pub fn new(rate_per_sec: f64, rate_burst: f64) -> Self {
        RequestVerifier {
            rate_per_sec,
            rate_burst,
            buckets: Mutex::new(HashMap::new()),
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
        let cert = roster
            .known_cert(&request.signer)
            .ok_or_else(|| {
                ApiError::forbidden(
                    "not_member",
                    format!(
                        "{} is not on the roster of {}",
                        request.signer,
                        roster.list()
                    ),
                )
            })?
            .clone();
        // Buckets exist only for identities on some roster, so strangers cannot grow the map.
        self.rate_limit(&request.signer)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let verified = request
            .verify_signature_and_clock(purpose, &cert, now)
            .map_err(ApiError::request)?;
        let fresh = store
            .remember_nonce(
                verified.signer.as_str(),
                &verified.nonce,
                i64::try_from(verified.nonce_expires_at).unwrap_or(i64::MAX),
            )
            .await?;
        if !fresh {
            return Err(ApiError::request(RequestError::Replayed));
        }
        Ok((verified, cert))
    }

    fn rate_limit(&self, who: &Fingerprint) -> Result<(), ApiError> {
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        let now = Instant::now();
        let bucket = buckets.entry(who.clone()).or_insert(Bucket {
            tokens: self.rate_burst,
            last: now,
        });
        let refill = now.duration_since(bucket.last).as_secs_f64() * self.rate_per_sec;
        bucket.tokens = (bucket.tokens + refill).min(self.rate_burst);
        bucket.last = now;
        if bucket.tokens < 1.0 {
            return Err(ApiError::rate_limited(who));
        }
        bucket.tokens -= 1.0;
        Ok(())
    }
}
