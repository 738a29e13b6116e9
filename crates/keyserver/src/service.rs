//! What the key server does, independent of HTTP: roster ops, deposits, releases, grants,
//! revocation, expiry and audit, over the store. Every refusal is an [`ApiError`] with the
//! status and code the HTTP layer sends.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac as _};
use hushlist_core::api::endpoints::{AuditKey, DepositKey, FetchKey, RevokeKey, Token};
use hushlist_core::api::{
    AuditLog, AuditRecord, DepositReceipt, Grant, GrantRefusal, GrantRequest, Grants, KeyRelease,
    ServerKey,
};
use hushlist_core::audit::{AuditHash, AuditHead, sign_head, verify_links};
use hushlist_core::deposit::{DepositError, DepositRequest, open_deposit};
use hushlist_core::identity::NotValid;
use hushlist_core::roster::{Role, Roster};
use hushlist_core::session::SessionError;
use hushlist_core::{Address, Fingerprint, IdentityError, KeyId, SecretIdentity, SessionKey};
use hushlist_http::endpoints::Signed;
use hushlist_http::requests::RequestVerifier;
use hushlist_http::rosters::RosterHost;
use hushlist_http::{ApiError, check_token};
use hushlist_store::rosters::RosterCache;
use hushlist_store::{
    AuditEntry, KeyStore, SealedSecret, SessionKeyInserted, SessionKeyRow, Store, StoreError,
    WrappingKeyRow,
};
use rand::rngs::OsRng;
use rand::{Rng as _, RngCore as _};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::master::{MasterKey, MasterKeyError, SealedBlob};
use crate::metrics::Metrics;
use crate::release::{ReleaseError, release};

/// Name of the server's own OpenPGP secret key in the store.
const IDENTITY_SECRET: &str = "openpgp-identity";

/// Name of the secret that session keys' digests are keyed with in the store.
const KEY_DIGEST_SECRET: &str = "session-key-digest";

/// Settings the service needs at run time.
#[derive(Clone)]
pub struct ServiceConfig {
    /// Bearer token that authorizes list genesis.
    pub admin_token: String,
    /// Bearer token the list server presents for push-mode grants.
    pub grants_token: String,
    /// Largest number of recipients in one grants call.
    pub max_grants_per_call: usize,
    /// Signed requests allowed per identity per second, and the burst above that.
    pub rate_per_sec: f64,
    pub rate_burst: f64,
}

impl fmt::Debug for ServiceConfig {
    /// The two tokens are secrets: never in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("max_grants_per_call", &self.max_grants_per_call)
            .field("rate_per_sec", &self.rate_per_sec)
            .field("rate_burst", &self.rate_burst)
            .finish_non_exhaustive()
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            admin_token: String::new(),
            grants_token: String::new(),
            max_grants_per_call: 10_000,
            rate_per_sec: 50.0,
            rate_burst: 200.0,
        }
    }
}

pub struct KeyServer {
    store: KeyStore,
    master: MasterKey,
    identity: SecretIdentity,
    /// Keys the digest by which each session key is stored once (HMAC-SHA256); without it
    /// the database does not show which keys are equal.
    key_digest_secret: Zeroizing<Vec<u8>>,
    config: ServiceConfig,
    rosters: RosterCache,
    verifier: RequestVerifier,
    /// Wrapping keys opened for key fetches lately, by id, so that members fetching the same
    /// day's keys do not each read the keyring and open it under the master key. Kept for
    /// [`WRAPPING_KEY_CACHE_TTL`] at most, dropped at once when this instance retires or
    /// deletes wrapping keys, zeroized when dropped.
    opened_wrapping_keys: Mutex<OpenedWrappingKeys>,
    pub metrics: Metrics,
}

/// Opened wrapping keys by id, with when each was opened.
type OpenedWrappingKeys = HashMap<String, (Instant, Zeroizing<[u8; 32]>)>;

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn as_db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl KeyServer {
    /// Loads the server's OpenPGP identity and its key digest secret from the store, creating
    /// them on first start (the first of several instances to store one wins; the others
    /// load that one).
    pub async fn start(
        store: KeyStore,
        master: MasterKey,
        config: ServiceConfig,
        user_id: &str,
    ) -> Result<Self, ApiError> {
        let armored = Self::server_secret_or_create(&store, &master, IDENTITY_SECRET, || {
            let fresh = SecretIdentity::generate(OsRng, user_id)
                .map_err(|e| ApiError::internal(format!("generating the server key: {e}")))?;
            Ok(Zeroizing::new(fresh.to_armored_secret().into_bytes()))
        })
        .await?;
        let identity = SecretIdentity::from_bytes(&armored, "")
            .map_err(|e| ApiError::internal(format!("loading the server key: {e}")))?;
        let key_digest_secret =
            Self::server_secret_or_create(&store, &master, KEY_DIGEST_SECRET, || {
                let mut fresh = Zeroizing::new(vec![0u8; 32]);
                OsRng.fill_bytes(fresh.as_mut());
                Ok(fresh)
            })
            .await?;
        let metrics = Metrics::default();
        metrics.keys_stored.set(store.count_session_keys().await?);
        Ok(KeyServer {
            rosters: RosterCache::new(Store::clone(&store)),
            store,
            master,
            identity,
            key_digest_secret,
            verifier: RequestVerifier::new(config.rate_per_sec, config.rate_burst),
            config,
            opened_wrapping_keys: Mutex::default(),
            metrics,
        })
    }

    /// The server secret `name`, opened under the master key; if the store has none, the one
    /// `create` makes is stored first (or another instance's, stored meanwhile, is taken).
    async fn server_secret_or_create(
        store: &KeyStore,
        master: &MasterKey,
        name: &str,
        create: impl FnOnce() -> Result<Zeroizing<Vec<u8>>, ApiError>,
    ) -> Result<Zeroizing<Vec<u8>>, ApiError> {
        let sealed = match store.server_secret(name).await? {
            Some(sealed) => sealed,
            None => {
                let fresh = create()?;
                let blob = master.seal(OsRng, &fresh, name.as_bytes());
                store.put_server_secret(name, &sealed_secret(blob)).await?;
                store.server_secret(name).await?.ok_or_else(|| {
                    ApiError::internal(format!("{name} vanished after storing it"))
                })?
            }
        };
        let blob = SealedBlob {
            master_key_id: sealed.master_key_id,
            nonce: sealed.nonce,
            ciphertext: sealed.sealed,
        };
        master
            .open(&blob, name.as_bytes())
            .map_err(|e| ApiError::internal(format!("opening the server secret {name}: {e}")))
    }

    /// The digest a session key is stored once by: HMAC-SHA256 under the key digest secret.
    fn key_digest(&self, session_key: &SessionKey) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key_digest_secret)
            .expect("HMAC takes a key of any length");
        mac.update(b"hushlist session key digest v1\n");
        mac.update(session_key.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    pub fn server_key(&self) -> ServerKey {
        ServerKey {
            fingerprint: self.identity.fingerprint().clone(),
            cert: self.identity.cert().to_armored(),
        }
    }

    pub fn store(&self) -> &KeyStore {
        &self.store
    }

    /// The list's roster, brought up to date with ops other instances may have stored.
    pub async fn roster(&self, list: &Address) -> Result<Arc<Roster>, ApiError> {
        Ok(self.rosters.get(list).await?)
    }

    /// Stores a sender's deposit once the sender may post, if it was sealed by that sender
    /// for this list and key id and its session key was never deposited before; 201 only
    /// after the row is durable.
    pub async fn deposit(
        &self,
        request: &Signed<DepositKey>,
    ) -> Result<(DepositReceipt, bool), ApiError> {
        let (list, roster, sender_cert) = (request.list(), &request.roster, &request.cert);
        let deposit = request.body()?;
        let sender = request.signer().clone();
        if let Err(refusal) = roster.may_deposit(&sender) {
            self.audit(
                &deposit.key_id,
                list,
                &sender,
                "deposit",
                "refused",
                Some(refusal.to_string()),
            )
            .await?;
            return Err(ApiError::forbidden("not_allowed", refusal.to_string()));
        }
        let opened = open_deposit(
            &deposit.sealed_key,
            &self.identity,
            DepositRequest {
                list,
                key_id: &deposit.key_id,
                sender: sender_cert,
            },
        );
        let session_key = match opened {
            Ok(session_key) => session_key,
            Err(refused) => {
                let answer = deposit_refusal(&refused);
                tracing::info!(key_id = %deposit.key_id, %list, %sender, %refused, "deposit refused");
                if matches!(refused, DepositError::NotBound(_)) {
                    self.audit(
                        &deposit.key_id,
                        list,
                        &sender,
                        "deposit",
                        "refused",
                        Some(answer.message.clone()),
                    )
                    .await?;
                }
                return Err(answer);
            }
        };
        let now = unix_now();
        let expires_at = roster
            .policy()
            .key_lifetime_secs
            .map(|secs| now.saturating_add(secs));
        let receipt = DepositReceipt {
            key_id: deposit.key_id.clone(),
            roster_seq: roster.head_seq(),
            expires_at,
        };
        let mut row = SessionKeyRow {
            key_id: deposit.key_id.to_string(),
            list: list.to_string(),
            sender: sender.to_string(),
            roster_seq: as_db(receipt.roster_seq),
            created_at: as_db(now),
            expires_at: expires_at.map(as_db),
            sealing: SEALED_UNDER_WRAPPING_KEY,
            master_key_id: String::new(),
            nonce: Vec::new(),
            sealed_key: Vec::new(),
            wrapping_key_id: None,
            key_digest: Some(self.key_digest(&session_key)),
        };
        let mut attempts = 0;
        let inserted = loop {
            self.seal_under_wrapping_key(&mut row, &session_key).await?;
            match self.store.insert_session_key(&row).await {
                // The sweep deleted the wrapping key as unused just now: take the current one.
                Err(StoreError::WrappingKeyGone(_)) if attempts < SEALING_ATTEMPTS => {
                    attempts += 1;
                }
                other => break other?,
            }
        };
        match inserted {
            SessionKeyInserted::New => {
                self.metrics.deposits.inc();
                self.metrics.keys_stored.inc();
                self.audit(&deposit.key_id, list, &sender, "deposit", "stored", None)
                    .await?;
                Ok((receipt, true))
            }
            SessionKeyInserted::KeyDigestTaken => Err(ApiError::conflict(
                "session_key_reused",
                "this session key was deposited before (under another key id, list or sender); every post is sealed under a fresh session key, so seal the post again",
            )),
            SessionKeyInserted::KeyIdTaken => {
                let existing = self.live_key(list, &deposit.key_id).await?;
                let same_key = match &existing.key_digest {
                    Some(digest) => row.key_digest.as_ref() == Some(digest),
                    None => self.open_session_key(&existing).await? == session_key,
                };
                let same = existing.list == row.list && existing.sender == row.sender && same_key;
                if !same {
                    return Err(ApiError::conflict(
                        "key_id_taken",
                        format!("key id {} already holds a different key", deposit.key_id),
                    ));
                }
                Ok((
                    DepositReceipt {
                        key_id: deposit.key_id,
                        roster_seq: u64::try_from(existing.roster_seq).unwrap_or_default(),
                        expires_at: existing.expires_at.and_then(|e| u64::try_from(e).ok()),
                    },
                    false,
                ))
            }
        }
    }

    /// Fetches a live key row of `list`: 404 if unknown, 410 if revoked or expired (and
    /// destroys it now if its time has passed).
    async fn live_key(&self, list: &Address, key_id: &KeyId) -> Result<SessionKeyRow, ApiError> {
        let Some(row) = self.store.session_key(key_id.as_str()).await? else {
            return Err(match self.store.destroyed_key(key_id.as_str()).await? {
                Some(gone) if gone.list == list.as_str() => ApiError::gone(key_id, &gone.reason),
                _ => ApiError::unknown_key(key_id),
            });
        };
        if row.list != list.as_str() {
            return Err(ApiError::unknown_key(key_id));
        }
        if row.expires_at.is_some_and(|at| at <= as_db(unix_now())) {
            self.destroy(&row, "expired", "server").await?;
            return Err(ApiError::gone(key_id, "expired"));
        }
        Ok(row)
    }

    /// Opens a stored session key. A row whose sealing does not open under its own columns
    /// was changed in the database (moved to another list, its sender, roster seq or expiry
    /// rewritten, or its ciphertext damaged): that is tampering, logged and answered 500
    /// `key_tampered`, and the key is not released.
    /// A row sealed under a wrapping key no longer in the keyring (a copy of the database
    /// older than the key's revocation or expiry) is answered 410: that key is destroyed.
    async fn open_session_key(&self, row: &SessionKeyRow) -> Result<SessionKey, ApiError> {
        let blob = SealedBlob {
            master_key_id: row.master_key_id.clone(),
            nonce: row.nonce.clone(),
            ciphertext: row.sealed_key.clone(),
        };
        let opened = match (row.sealing, &row.wrapping_key_id) {
            (SEALED_TO_KEY_ID, None) => self.master.open(&blob, row.key_id.as_bytes()),
            (SEALED_TO_ROW, None) => self.master.open(&blob, &row_context(row)),
            (SEALED_UNDER_WRAPPING_KEY, Some(id)) => {
                let Some(wrapping) = self.wrapping_key_by_id(id).await? else {
                    let key_id: KeyId = row
                        .key_id
                        .parse()
                        .map_err(|_| ApiError::internal("stored key id is malformed"))?;
                    return Err(ApiError::gone(
                        &key_id,
                        "its wrapping key was destroyed: the key was revoked or expired after this copy of the key database was made",
                    ));
                };
                MasterKey::from_bytes(&wrapping).open(&blob, &row_context(row))
            }
            _ => return Err(tampered(row)),
        };
        let bytes = match opened {
            Ok(bytes) => bytes,
            Err(MasterKeyError::Corrupt) => return Err(tampered(row)),
            Err(e) => return Err(ApiError::internal(format!("key {}: {e}", row.key_id))),
        };
        SessionKey::from_bytes(&bytes).map_err(|e| ApiError::internal(e.to_string()))
    }

    /// Releases a post's key to a member as a PKESK, if the roster and policy allow.
    pub async fn fetch_key(&self, request: &Signed<FetchKey>) -> Result<KeyRelease, ApiError> {
        let ((list, key_id), roster) = (&request.params, &request.roster);
        let reader = request.signer().clone();
        let row = self.live_key(list, key_id).await?;
        let posted_at = u64::try_from(row.roster_seq).unwrap_or_default();
        let session_key = self.open_session_key(&row).await?;
        let pkesk = match release(OsRng, roster, posted_at, &session_key, &reader, unix_now()) {
            Ok(pkesk) => pkesk,
            Err(ReleaseError::Refused(refusal)) => {
                self.metrics.refusals.inc();
                self.audit(
                    key_id,
                    list,
                    &reader,
                    "release",
                    "refused",
                    Some(refusal.to_string()),
                )
                .await?;
                return Err(ApiError::forbidden("not_allowed", refusal.to_string()));
            }
            Err(ReleaseError::Key(e)) => {
                let code = match &e {
                    SessionError::Identity(IdentityError::NotValid(NotValid::Expired {
                        ..
                    })) => "member_key_expired",
                    _ => "member_key_unusable",
                };
                return Err(ApiError::unprocessable(code, e.to_string()));
            }
        };
        let depositor = Fingerprint::try_from(row.sender.clone())
            .map_err(|_| ApiError::internal("stored depositor fingerprint is malformed"))?;
        self.metrics.releases.inc();
        self.audit(key_id, list, &reader, "release", "released", None)
            .await?;
        Ok(KeyRelease {
            key_id: key_id.clone(),
            pkesk: pkesk.as_bytes().to_vec(),
            depositor,
            roster_seq: posted_at,
            deposited_at: u64::try_from(row.created_at).unwrap_or_default(),
        })
    }

    /// One PKESK per allowed recipient of a push-mode post (the caller checked the list
    /// server's token). Refused recipients come back with the reason.
    pub async fn grants(
        &self,
        list: &Address,
        key_id: &KeyId,
        request: GrantRequest,
    ) -> Result<Grants, ApiError> {
        if request.recipients.len() > self.config.max_grants_per_call {
            return Err(ApiError::too_large(format!(
                "{} recipients in one call; the limit is {}",
                request.recipients.len(),
                self.config.max_grants_per_call
            )));
        }
        let roster = self.roster(list).await?;
        let row = self.live_key(list, key_id).await?;
        let posted_at = u64::try_from(row.roster_seq).unwrap_or_default();
        let session_key = self.open_session_key(&row).await?;
        let mut granted = Vec::with_capacity(request.recipients.len());
        let mut refused = Vec::new();
        let now = unix_now();
        for fingerprint in request.recipients {
            match release(OsRng, &roster, posted_at, &session_key, &fingerprint, now) {
                Ok(pkesk) => granted.push(Grant {
                    fingerprint,
                    pkesk: pkesk.as_bytes().to_vec(),
                }),
                Err(e) => refused.push(GrantRefusal {
                    fingerprint,
                    reason: e.to_string(),
                }),
            }
        }
        self.metrics.grants.inc_by(granted.len() as u64);
        self.metrics.refusals.inc_by(refused.len() as u64);
        let detail = format!(
            "{} granted, {} refused{}",
            granted.len(),
            refused.len(),
            refused
                .iter()
                .map(|r| format!("; {}: {}", r.fingerprint, r.reason))
                .collect::<String>()
        );
        self.audit_raw(
            key_id,
            list,
            "list-server",
            "grants",
            "released",
            Some(detail),
        )
        .await?;
        Ok(Grants {
            key_id: key_id.clone(),
            granted,
            refused,
        })
    }

    /// Destroys a key at the request of its sender or a current owner.
    pub async fn revoke(&self, request: &Signed<RevokeKey>) -> Result<(), ApiError> {
        let ((list, key_id), signer) = (&request.params, request.signer());
        let row = self.live_key(list, key_id).await?;
        if !sender_or_owner(&request.roster, signer, &row.sender) {
            self.audit(
                key_id,
                list,
                signer,
                "revoke",
                "refused",
                Some("not the sender or an owner".into()),
            )
            .await?;
            return Err(ApiError::forbidden(
                "not_allowed",
                "only the post's sender or a list owner may revoke its key",
            ));
        }
        self.destroy(&row, "revoked", signer.as_str()).await?;
        if let Some(id) = &row.wrapping_key_id
            && let Some(wrapping) = self.store.wrapping_key(id).await?
        {
            self.rekey(&wrapping).await?;
        }
        self.shred().await;
        Ok(())
    }

    /// Destroys a wrapping key that sealed a revoked key, so that no copy of the database
    /// opens that key again: a new wrapping key takes its list and day, the other keys under
    /// it are re-sealed under the new one, and the old one is deleted once none is left
    /// under it. Keys deposited under it meanwhile are moved too; should they keep coming
    /// for every round, the sweep finishes the move and the deletion.
    async fn rekey(&self, retiring: &WrappingKeyRow) -> Result<(), ApiError> {
        self.new_wrapping_key(
            &retiring.list,
            retiring.day,
            retiring.expiring,
            Some(&retiring.id),
        )
        .await?;
        for _ in 0..SEALING_ATTEMPTS {
            let rows = self
                .store
                .session_keys_wrapped_by(&retiring.id, i64::MAX)
                .await?;
            for batch in rows.chunks(RESEAL_BATCH) {
                self.move_under_current_wrapping_keys(batch).await?;
            }
            if self
                .store
                .delete_unused_wrapping_keys(Some(&retiring.id))
                .await?
                == 1
            {
                // Opening the keys to move them put it back in the cache.
                self.opened_wrapping_keys().remove(&retiring.id);
                return Ok(());
            }
        }
        tracing::warn!(
            wrapping_key = %retiring.id,
            "keys keep arriving under a retired wrapping key; the sweep deletes it"
        );
        Ok(())
    }

    /// Takes what destroyed keys and wrapping keys left behind out of the database's files
    /// (see `KeyStore::erase_deleted_rows`); a failure is logged and the next sweep tries again.
    async fn shred(&self) {
        match self.store.erase_deleted_rows().await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "the database's log is still read; it is truncated at the next sweep"
            ),
            Err(error) => tracing::warn!(%error, "cannot erase deleted rows from the database"),
        }
    }

    /// The wrapping key that new keys of `list` and `day` go under, made if there is none.
    async fn current_wrapping_key(
        &self,
        list: &str,
        day: i64,
        expiring: bool,
    ) -> Result<(String, MasterKey), ApiError> {
        match self.store.current_wrapping_key(list, day, expiring).await? {
            Some(stored) => {
                let bytes = self.open_wrapping_key(&stored)?;
                Ok((stored.id, MasterKey::from_bytes(&bytes)))
            }
            None => self.new_wrapping_key(list, day, expiring, None).await,
        }
    }

    /// Makes a random wrapping key for `list` and `day`, sealed under the master key, and
    /// stores it (retiring `retiring` in the same transaction).
    async fn new_wrapping_key(
        &self,
        list: &str,
        day: i64,
        expiring: bool,
        retiring: Option<&str>,
    ) -> Result<(String, MasterKey), ApiError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(bytes.as_mut());
        let id = hex::encode(OsRng.r#gen::<[u8; 16]>());
        let mut stored = WrappingKeyRow {
            id: id.clone(),
            list: list.to_owned(),
            day,
            expiring,
            retired: false,
            created_at: as_db(unix_now()),
            master_key_id: String::new(),
            nonce: Vec::new(),
            sealed: Vec::new(),
        };
        let blob = self
            .master
            .seal(OsRng, bytes.as_ref(), &wrapping_key_context(&stored));
        (stored.master_key_id, stored.nonce, stored.sealed) =
            (blob.master_key_id, blob.nonce, blob.ciphertext);
        self.store.add_wrapping_key(&stored, retiring).await?;
        Ok((id, MasterKey::from_bytes(&bytes)))
    }

    /// The wrapping key `id`, opened, from the cache or the keyring; `None` if the keyring
    /// no longer holds it.
    async fn wrapping_key_by_id(&self, id: &str) -> Result<Option<Zeroizing<[u8; 32]>>, ApiError> {
        let now = Instant::now();
        if let Some((opened_at, bytes)) = self.opened_wrapping_keys().get(id)
            && now.duration_since(*opened_at) < WRAPPING_KEY_CACHE_TTL
        {
            return Ok(Some(bytes.clone()));
        }
        let Some(stored) = self.store.wrapping_key(id).await? else {
            return Ok(None);
        };
        let bytes = self.open_wrapping_key(&stored)?;
        let mut cache = self.opened_wrapping_keys();
        cache.retain(|_, (opened_at, _)| now.duration_since(*opened_at) < WRAPPING_KEY_CACHE_TTL);
        cache.insert(id.to_owned(), (now, bytes.clone()));
        Ok(Some(bytes))
    }

    fn opened_wrapping_keys(&self) -> std::sync::MutexGuard<'_, OpenedWrappingKeys> {
        // A panic while holding the lock leaves the map whole: take it anyway.
        self.opened_wrapping_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn open_wrapping_key(&self, stored: &WrappingKeyRow) -> Result<Zeroizing<[u8; 32]>, ApiError> {
        let blob = SealedBlob {
            master_key_id: stored.master_key_id.clone(),
            nonce: stored.nonce.clone(),
            ciphertext: stored.sealed.clone(),
        };
        let bytes = self
            .master
            .open(&blob, &wrapping_key_context(stored))
            .map_err(|e| ApiError::internal(format!("wrapping key {}: {e}", stored.id)))?;
        let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            ApiError::internal(format!("wrapping key {} has the wrong length", stored.id))
        })?;
        Ok(Zeroizing::new(bytes))
    }

    /// Seals `session_key` into `row` under the current wrapping key of its list and day.
    async fn seal_under_wrapping_key(
        &self,
        row: &mut SessionKeyRow,
        session_key: &SessionKey,
    ) -> Result<(), ApiError> {
        let (day, expiring) = wrapping_day(row);
        let (id, wrapping) = self.current_wrapping_key(&row.list, day, expiring).await?;
        row.sealing = SEALED_UNDER_WRAPPING_KEY;
        row.wrapping_key_id = Some(id);
        let blob = wrapping.seal(OsRng, session_key.as_bytes(), &row_context(row));
        (row.master_key_id, row.nonce, row.sealed_key) =
            (blob.master_key_id, blob.nonce, blob.ciphertext);
        Ok(())
    }

    /// Re-seals stored keys under the current wrapping keys of their lists and days, in one
    /// transaction; returns how many were. A tampered row stays as it is (re-sealing it would
    /// launder the change) and keeps being reported.
    async fn move_under_current_wrapping_keys(
        &self,
        rows: &[SessionKeyRow],
    ) -> Result<u64, ApiError> {
        let mut resealed = Vec::with_capacity(rows.len());
        for row in rows {
            let key = match self.open_session_key(row).await {
                Ok(key) => key,
                Err(e) if e.code == KEY_TAMPERED => continue,
                Err(e) => return Err(e),
            };
            let mut row = row.clone();
            let was_nonce = row.nonce.clone();
            self.seal_under_wrapping_key(&mut row, &key).await?;
            resealed.push((row, was_nonce));
        }
        Ok(self.store.reseal_session_keys(&resealed).await?)
    }

    async fn destroy(
        &self,
        row: &SessionKeyRow,
        reason: &str,
        actor: &str,
    ) -> Result<(), ApiError> {
        if self
            .store
            .destroy_session_key(&row.key_id, reason, as_db(unix_now()))
            .await?
        {
            let counter = if reason == "expired" {
                &self.metrics.expirations
            } else {
                &self.metrics.revocations
            };
            counter.inc();
            self.metrics.keys_stored.dec();
            let key_id: KeyId = row
                .key_id
                .parse()
                .map_err(|_| ApiError::internal("stored key id is malformed"))?;
            let list = Address::parse(&row.list)
                .map_err(|_| ApiError::internal("stored list is malformed"))?;
            self.audit_raw(&key_id, &list, actor, reason, "destroyed", None)
                .await?;
        }
        Ok(())
    }

    /// Re-seals, under the current master key, up to `limit` wrapping keys (and the server's
    /// own secrets) still sealed under a retired one, and moves up to `limit` session keys under
    /// current wrapping keys (rows sealed directly under a master key, and rows under a
    /// wrapping key retired by a revocation); returns how many. Once it returns 0 the retired
    /// master keys can be dropped from the configuration.
    pub async fn reseal_under_current_master(&self, limit: i64) -> Result<usize, ApiError> {
        let current = self.master.id().to_owned();
        let mut resealed = 0;
        for name in [IDENTITY_SECRET, KEY_DIGEST_SECRET] {
            let Some(secret) = self.store.server_secret(name).await? else {
                continue;
            };
            if secret.master_key_id == current {
                continue;
            }
            let blob = SealedBlob {
                master_key_id: secret.master_key_id.clone(),
                nonce: secret.nonce,
                ciphertext: secret.sealed,
            };
            let plain = self
                .master
                .open(&blob, name.as_bytes())
                .map_err(|e| ApiError::internal(format!("the server secret {name}: {e}")))?;
            let fresh = self.master.seal(OsRng, &plain, name.as_bytes());
            if self
                .store
                .reseal_server_secret(name, &blob.master_key_id, &sealed_secret(fresh))
                .await?
            {
                resealed += 1;
            }
        }
        for stored in self.store.wrapping_keys_to_reseal(&current, limit).await? {
            let context = wrapping_key_context(&stored);
            let blob = SealedBlob {
                master_key_id: stored.master_key_id.clone(),
                nonce: stored.nonce,
                ciphertext: stored.sealed,
            };
            let plain = self
                .master
                .open(&blob, &context)
                .map_err(|e| ApiError::internal(format!("wrapping key {}: {e}", stored.id)))?;
            let fresh = self.master.seal(OsRng, &plain, &context);
            if self
                .store
                .reseal_wrapping_key(&stored.id, &blob.master_key_id, &sealed_secret(fresh))
                .await?
            {
                resealed += 1;
            }
        }
        let rows = self
            .store
            .session_keys_to_reseal(SEALED_UNDER_WRAPPING_KEY, limit)
            .await?;
        for batch in rows.chunks(RESEAL_BATCH) {
            resealed += usize::try_from(self.move_under_current_wrapping_keys(batch).await?)
                .unwrap_or(usize::MAX);
        }
        Ok(resealed)
    }

    /// Destroys every key whose lifetime has passed, then every wrapping key no key is
    /// sealed under any more (a day's, once all its keys have expired; a retired one, once
    /// its keys were moved); returns how many session keys it destroyed.
    pub async fn expire_due(&self) -> Result<usize, ApiError> {
        let due = self.store.expired_keys(as_db(unix_now()), 1000).await?;
        let mut destroyed = 0;
        for key_id in due {
            if let Some(row) = self.store.session_key(&key_id).await? {
                self.destroy(&row, "expired", "server").await?;
                destroyed += 1;
            }
        }
        if self.store.delete_unused_wrapping_keys(None).await? > 0 {
            self.opened_wrapping_keys().clear();
        }
        self.shred().await;
        self.store.prune_nonces(as_db(unix_now())).await?;
        self.store
            .prune_request_counts(self.verifier.prunable_before(unix_now()))
            .await?;
        // Counted again once a sweep, not per scrape: instances sharing a database each see
        // what the others stored or destroyed, and the gauge cannot drift between them.
        self.metrics
            .keys_stored
            .set(self.store.count_session_keys().await?);
        Ok(destroyed)
    }

    /// The audit trail of one key, for its sender and the list's owners.
    pub async fn audit_log(&self, request: &Signed<AuditKey>) -> Result<AuditLog, ApiError> {
        let (list, key_id) = &request.params;
        let sender = match self.store.session_key(key_id.as_str()).await? {
            Some(row) if row.list == list.as_str() => row.sender,
            _ => match self.store.destroyed_key(key_id.as_str()).await? {
                Some(gone) if gone.list == list.as_str() => gone.sender,
                _ => return Err(ApiError::unknown_key(key_id)),
            },
        };
        if !sender_or_owner(&request.roster, request.signer(), &sender) {
            return Err(ApiError::forbidden(
                "not_allowed",
                "only the post's sender or a list owner may read its audit log",
            ));
        }
        let entries: Vec<AuditRecord> = self
            .store
            .audit_log(key_id.as_str())
            .await?
            .into_iter()
            .map(|chained| AuditRecord {
                seq: u64::try_from(chained.seq).unwrap_or_default(),
                list: chained.entry.list,
                at: u64::try_from(chained.entry.at).unwrap_or_default(),
                actor: chained.entry.actor,
                action: chained.entry.action,
                outcome: chained.entry.outcome,
                detail: chained.entry.detail,
                hash: chained.hash,
            })
            .collect();
        // The head is signed as it stands; a chain broken in the database is still shown (the
        // reader's client names the break) and logged here for the operator.
        if let Err(broken) = verify_links(key_id, &entries) {
            tracing::error!(key_id = %key_id, %broken, "audit chain broken in the database");
        }
        let last = entries.last();
        let head = AuditHead {
            list: list.clone(),
            key_id: key_id.clone(),
            seq: last.map_or(0, |record| record.seq),
            hash: last.map_or(AuditHash::START, |record| record.hash),
        };
        let head = sign_head(OsRng, &self.identity, &head)
            .map_err(|e| ApiError::internal(format!("signing the audit head: {e}")))?;
        Ok(AuditLog {
            key_id: key_id.clone(),
            entries,
            head,
        })
    }

    async fn audit(
        &self,
        key_id: &KeyId,
        list: &Address,
        actor: &Fingerprint,
        action: &str,
        outcome: &str,
        detail: Option<String>,
    ) -> Result<(), ApiError> {
        self.audit_raw(key_id, list, actor.as_str(), action, outcome, detail)
            .await
    }

    async fn audit_raw(
        &self,
        key_id: &KeyId,
        list: &Address,
        actor: &str,
        action: &str,
        outcome: &str,
        detail: Option<String>,
    ) -> Result<(), ApiError> {
        tracing::info!(key_id = %key_id, list = %list, actor, action, outcome, "audit");
        let entry = AuditEntry {
            key_id: key_id.to_string(),
            list: list.to_string(),
            at: as_db(unix_now()),
            actor: actor.to_owned(),
            action: action.to_owned(),
            outcome: outcome.to_owned(),
            detail,
        };
        Ok(self.store.append_audit(&entry).await?)
    }

    pub fn check_admin(&self, presented: Option<&str>) -> Result<(), ApiError> {
        check_token(
            &self.config.admin_token,
            presented,
            "the operator admin token",
        )
    }

    pub fn check_grants_token(&self, presented: Option<&str>) -> Result<(), ApiError> {
        check_token(
            &self.config.grants_token,
            presented,
            "the list server's grants token",
        )
    }
}

fn sender_or_owner(roster: &Roster, who: &Fingerprint, sender: &str) -> bool {
    who.as_str() == sender
        || roster
            .member_by_fingerprint(who)
            .is_some_and(|m| m.role == Role::Owner)
}

impl RosterHost for KeyServer {
    fn rosters(&self) -> &RosterCache {
        &self.rosters
    }

    fn store(&self) -> &Store {
        &self.store
    }

    fn verifier(&self) -> &RequestVerifier {
        &self.verifier
    }

    /// Rosters are read by the operator, and by the list server (with its grants token)
    /// comparing rosters.
    fn check_token(&self, token: Token, presented: Option<&str>) -> Result<(), ApiError> {
        match token {
            Token::Admin => self.check_admin(presented),
            Token::RosterReader => self
                .check_admin(presented)
                .or_else(|_| self.check_grants_token(presented)),
            Token::ListServer => self.check_grants_token(presented),
        }
    }

    fn roster_op_accepted(&self) {
        self.metrics.roster_ops.inc();
    }
}

/// How a session key row is sealed (its `sealing` column): what the AEAD's associated data
/// binds. Rows stored before rows were bound are bound to their key id alone; the sweep
/// re-seals them bound to the row.
const SEALED_TO_KEY_ID: i64 = 1;
/// Bound to the key id, list, depositor's fingerprint, roster seq at deposit and expiry, so a
/// row moved to another list or given another expiry no longer opens.
const SEALED_TO_ROW: i64 = 2;
/// Bound as [`SEALED_TO_ROW`], under the row's wrapping key (itself under the master key)
/// rather than the master key: deleting the wrapping key destroys the row in every copy.
const SEALED_UNDER_WRAPPING_KEY: i64 = 3;

/// How many times sealing a key is tried when the wrapping key it took was deleted as unused
/// in between (by a sweep or a revocation elsewhere), and how many rounds a revocation moves
/// keys off the wrapping key it destroys before leaving the rest to the sweep.
const SEALING_ATTEMPTS: usize = 4;

/// Most keys re-sealed in one transaction: one durable commit for many keys, without holding
/// SQLite's write lock for long.
const RESEAL_BATCH: usize = 500;

const SECONDS_PER_DAY: i64 = 86_400;

/// How long an opened wrapping key is kept in memory for key fetches.
const WRAPPING_KEY_CACHE_TTL: Duration = Duration::from_secs(10);

/// Which wrapping key a row goes under, besides its list: the day it expires, so the key can
/// be deleted once that day's keys have all expired; or, for a key that never expires, the
/// day it was deposited, so a revocation re-seals one day's keys of one list.
fn wrapping_day(row: &SessionKeyRow) -> (i64, bool) {
    match row.expires_at {
        Some(at) => (at.div_euclid(SECONDS_PER_DAY), true),
        None => (row.created_at.div_euclid(SECONDS_PER_DAY), false),
    }
}

/// The associated data a wrapping key is sealed under the master key with, so it cannot be
/// moved to another list or day.
fn wrapping_key_context(key: &WrappingKeyRow) -> Vec<u8> {
    let fields: [&[u8]; 4] = [
        key.id.as_bytes(),
        key.list.as_bytes(),
        &key.day.to_be_bytes(),
        &[u8::from(key.expiring)],
    ];
    let mut context = b"hushlist wrapping key v1".to_vec();
    for field in fields {
        context.extend_from_slice(&(field.len() as u32).to_be_bytes());
        context.extend_from_slice(field);
    }
    context
}

/// The error code of a row that fails its integrity check.
pub const KEY_TAMPERED: &str = "key_tampered";

/// The associated data of a row sealed [`SEALED_TO_ROW`]: each field length-prefixed, so no
/// two rows share it.
fn row_context(row: &SessionKeyRow) -> Vec<u8> {
    let expiry = match row.expires_at {
        Some(at) => [&[1u8][..], &at.to_be_bytes()].concat(),
        None => vec![0],
    };
    let fields: [&[u8]; 5] = [
        row.key_id.as_bytes(),
        row.list.as_bytes(),
        row.sender.as_bytes(),
        &row.roster_seq.to_be_bytes(),
        &expiry,
    ];
    let mut context = b"hushlist session key row v2".to_vec();
    for field in fields {
        context.extend_from_slice(&(field.len() as u32).to_be_bytes());
        context.extend_from_slice(field);
    }
    context
}

fn tampered(row: &SessionKeyRow) -> ApiError {
    tracing::error!(
        key_id = %row.key_id,
        list = %row.list,
        "a stored session key fails its integrity check: its row was changed in the database"
    );
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        KEY_TAMPERED,
        format!(
            "the stored key {} fails its integrity check: its row was changed in the database (moved to another list, its sender, roster seq or expiry rewritten, or its ciphertext damaged), so it is not released; tell the key server's operator",
            row.key_id
        ),
    )
}

/// The answer to a refused sealed deposit, in the key server's own words: what was wrong and
/// what to do, never the OpenPGP library's or parser's text (which goes to the log).
fn deposit_refusal(refused: &DepositError) -> ApiError {
    match refused {
        DepositError::Outdated => ApiError::bad_request(
            "deposit_format_outdated",
            "the session key came as a bare PKESK, which anyone who saw it could deposit again; upgrade the hushlist client, which seals each deposit for its list, key id and sender, and send the post again",
        ),
        DepositError::NotBound(bound) => ApiError::forbidden(
            "deposit_not_bound",
            format!(
                "the sealed deposit was not made by this request's signer for this list and key id (its {bound} differs); a deposit is sealed by its sender for one list and key id"
            ),
        ),
        DepositError::TooLarge => ApiError::bad_request(
            "sealed_key_invalid",
            format!(
                "the sealed deposit is larger than {} bytes; seal deposits with the hushlist client",
                hushlist_core::deposit::MAX_SEALED_DEPOSIT
            ),
        ),
        DepositError::NotForThisServer(_) => ApiError::bad_request(
            "sealed_key_invalid",
            "the sealed deposit does not open with this key server's key; fetch /v1/server-key and seal to it",
        ),
        DepositError::Malformed(_) | DepositError::Identity(_) | DepositError::Pgp(_) => {
            ApiError::bad_request(
                "sealed_key_invalid",
                "the sealed deposit is not a deposit signed by its sender; seal deposits with the hushlist client",
            )
        }
    }
}

fn sealed_secret(blob: SealedBlob) -> SealedSecret {
    SealedSecret {
        master_key_id: blob.master_key_id,
        nonce: blob.nonce,
        sealed: blob.ciphertext,
    }
}
