//! The key server's store: session keys sealed under wrapping keys (on SQLite in a keyring file
//! of their own), destroyed keys' tombstones, the chained audit log and sealed server secrets.

use std::collections::HashMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hushlist_core::audit::AuditHash;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row as _};
use tokio::sync::{Mutex, MutexGuard, mpsc, oneshot};

use crate::{
    AuditEntry, Backend, ChainedAuditEntry, DestroyedKey, Inserted, Role, SealedSecret,
    SessionKeyInserted, SessionKeyRow, Store, StoreError, WrappingKeyRow, inserted,
};

/// The key server's store (see the crate's documentation); the shared part through `Deref`.
#[derive(Debug, Clone)]
pub struct KeyStore {
    store: Store,
    /// On SQLite, where the keyring is a file of its own and no transaction spans both
    /// files, sealing a row under a wrapping key and deleting unused wrapping keys take turns
    /// here, so no row is ever sealed under a key deleted at the same moment. (PostgreSQL
    /// locks the wrapping key's row instead.)
    keyring_turn: Option<Arc<Mutex<()>>>,
    /// Where audit records go to be committed together (see [`KeyStore::append_audit`]).
    audit_writer: mpsc::UnboundedSender<AuditWaiter>,
}

impl Deref for KeyStore {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.store
    }
}

impl KeyStore {
    /// Opens (creating or migrating) the key server's database at `url`; see [`Store`] for the
    /// URLs. Refuses a database that is, or was, the list server's.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let opened = Store::open_as(url, Role::KeyServer).await?;
        let store = opened.store;
        chain_unchained_audit(&store.pool, store.backend).await?;
        Ok(KeyStore {
            audit_writer: spawn_audit_writer(
                store.pool.clone(),
                store.write_turn.clone(),
                store.backend,
            ),
            keyring_turn: opened.keyring.is_some().then(|| Arc::new(Mutex::new(()))),
            store,
        })
    }
}
/// The keyring's file beside the SQLite database `db`: `NAME.keyring` for `NAME`.
pub(crate) fn keyring_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".keyring");
    PathBuf::from(name)
}

/// The statements that attach the keyring file to a SQLite connection and make destruction
/// in it real: deleted rows overwritten, every commit durable.
pub(crate) fn attach_keyring(keyring: &str) -> String {
    format!(
        "ATTACH DATABASE '{}' AS keyring; PRAGMA keyring.journal_mode=WAL; PRAGMA keyring.synchronous=FULL; PRAGMA keyring.secure_delete=ON;",
        keyring.replace('\'', "''")
    )
}

/// The keyring's one table on SQLite (on PostgreSQL a table of the database, made by
/// migration 0016).
pub(crate) const SQLITE_KEYRING_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS keyring.wrapping_keys (
    id            TEXT   PRIMARY KEY,
    list          TEXT   NOT NULL,
    day           BIGINT NOT NULL,
    expiring      BIGINT NOT NULL,
    retired       BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    master_key_id TEXT   NOT NULL,
    nonce         BLOB   NOT NULL,
    sealed        BLOB   NOT NULL
);
CREATE INDEX IF NOT EXISTS keyring.wrapping_keys_by_bucket ON wrapping_keys (list, day, expiring);";

/// An audit record waiting for the next group commit, and whom to tell how it went.
type AuditWaiter = (AuditEntry, oneshot::Sender<Result<(), String>>);

/// Most audit records one group commit takes.
const MAX_AUDIT_BATCH: usize = 256;

/// Commits audit records in groups: every record that arrived while the previous commit
/// waited for the disk goes into the next one, and each caller hears back once its record
/// is durable. One disk wait then serves many requests, and none is answered early.
fn spawn_audit_writer(
    pool: AnyPool,
    write_turn: Option<Arc<Mutex<()>>>,
    backend: Backend,
) -> mpsc::UnboundedSender<AuditWaiter> {
    let (sender, mut waiting) = mpsc::unbounded_channel::<AuditWaiter>();
    tokio::spawn(async move {
        while let Some(first) = waiting.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_AUDIT_BATCH {
                match waiting.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let turn = match &write_turn {
                Some(turn) => Some(turn.lock().await),
                None => None,
            };
            let entries: Vec<&AuditEntry> = batch.iter().map(|(entry, _)| entry).collect();
            let result = append_chained(&pool, backend, &entries)
                .await
                .map_err(|e| e.to_string());
            drop(turn);
            for (_, done) in batch {
                let _ = done.send(result.clone());
            }
        }
    });
    sender
}

/// Most tries of one group commit whose chains other instances keep extending first.
const AUDIT_CHAIN_TRIES: usize = 20;

/// Appends `entries` to their key ids' chains in one transaction, tried again from the new
/// heads when another instance sharing the database appended to one of those chains between
/// this one's read of a head and its insert.
async fn append_chained(
    pool: &AnyPool,
    backend: Backend,
    entries: &[&AuditEntry],
) -> Result<(), StoreError> {
    for _ in 0..AUDIT_CHAIN_TRIES {
        if insert_chained(pool, backend, entries).await? {
            return Ok(());
        }
    }
    Err(StoreError::GroupCommit(format!(
        "other instances took the next place in an audit chain {AUDIT_CHAIN_TRIES} times running"
    )))
}

/// One try of [`append_chained`]: false, with nothing committed, if another instance took a
/// (key id, seq) this batch meant to use.
async fn insert_chained(
    pool: &AnyPool,
    backend: Backend,
    entries: &[&AuditEntry],
) -> Result<bool, StoreError> {
    let mut tx = begin_writing(pool, backend).await?;
    // Several records of one key id in a batch chain onto each other.
    let mut heads: HashMap<&str, (i64, AuditHash)> = HashMap::new();
    for entry in entries {
        let (seq, previous) = match heads.get(entry.key_id.as_str()) {
            Some(head) => *head,
            None => chain_head(&mut tx, &entry.key_id).await?,
        };
        let seq = seq + 1;
        let hash = previous.next(as_seq(seq)?, &entry.fields());
        let inserted = sqlx::query(
            "INSERT INTO audit (key_id, list, at, actor, action, outcome, detail, seq, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        )
        .bind(&entry.key_id)
        .bind(&entry.list)
        .bind(entry.at)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.outcome)
        .bind(&entry.detail)
        .bind(seq)
        .bind(hash.as_bytes().to_vec())
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        heads.insert(&entry.key_id, (seq, hash));
    }
    tx.commit().await?;
    Ok(true)
}

/// A transaction that will write after reading. On SQLite it takes the write lock at once,
/// so that no other process's commit can land between its reads and its writes.
async fn begin_writing(
    pool: &AnyPool,
    backend: Backend,
) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
    Ok(match backend {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => pool.begin().await?,
    })
}

/// The last seq and hash of `key_id`'s chain (0 and the start for a key id without records).
async fn chain_head(
    conn: &mut AnyConnection,
    key_id: &str,
) -> Result<(i64, AuditHash), StoreError> {
    let row = sqlx::query(
        "SELECT seq, hash FROM audit WHERE key_id = $1 AND seq IS NOT NULL ORDER BY seq DESC LIMIT 1",
    )
    .bind(key_id)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        None => Ok((0, AuditHash::START)),
        Some(row) => Ok((row.get("seq"), stored_hash(&row)?)),
    }
}

fn stored_hash(row: &AnyRow) -> Result<AuditHash, StoreError> {
    let bytes: Option<Vec<u8>> = row.get("hash");
    bytes
        .as_deref()
        .and_then(AuditHash::from_bytes)
        .ok_or_else(|| StoreError::Corrupt("an audit record's hash is not 32 bytes".into()))
}

fn as_seq(seq: i64) -> Result<u64, StoreError> {
    u64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("audit seq {seq}")))
}

fn audit_entry(row: &AnyRow) -> AuditEntry {
    AuditEntry {
        key_id: row.get("key_id"),
        list: row.get("list"),
        at: row.get("at"),
        actor: row.get("actor"),
        action: row.get("action"),
        outcome: row.get("outcome"),
        detail: row.get("detail"),
    }
}

/// Chains the audit records stored before chains were kept (migration 0015), each key id's in
/// the order they were written. Instances opening one database at once may race here: the one
/// that finds a record already chained leaves that key id to the other.
async fn chain_unchained_audit(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    let key_ids: Vec<String> = sqlx::query("SELECT DISTINCT key_id FROM audit WHERE seq IS NULL")
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| row.get("key_id"))
        .collect();
    'keys: for key_id in key_ids {
        let mut tx = begin_writing(pool, backend).await?;
        let (mut seq, mut hash) = chain_head(&mut tx, &key_id).await?;
        let rows = sqlx::query(
            "SELECT id, key_id, list, at, actor, action, outcome, detail FROM audit WHERE key_id = $1 AND seq IS NULL ORDER BY id",
        )
        .bind(&key_id)
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            seq += 1;
            hash = hash.next(as_seq(seq)?, &audit_entry(&row).fields());
            let id: i64 = row.get("id");
            let chained =
                sqlx::query("UPDATE audit SET seq = $1, hash = $2 WHERE id = $3 AND seq IS NULL")
                    .bind(seq)
                    .bind(hash.as_bytes().to_vec())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            if chained.rows_affected() == 0 {
                tx.rollback().await?;
                continue 'keys;
            }
        }
        tx.commit().await?;
    }
    Ok(())
}
impl KeyStore {
    /// Stores a session key row unless one with the same key id or key digest exists (or was
    /// destroyed). One statement, so SQLite takes the write lock up front instead of
    /// upgrading a read snapshot (which fails under concurrent writers). A row sealed under a
    /// wrapping key is stored only while that key is in the keyring
    /// ([`StoreError::WrappingKeyGone`] if it was deleted as unused meanwhile).
    pub async fn insert_session_key(
        &self,
        row: &SessionKeyRow,
    ) -> Result<SessionKeyInserted, StoreError> {
        let _turn = self.keyring_turn().await;
        let wrapped = match &row.wrapping_key_id {
            Some(_) => self.wrapping_key_exists_clause(11),
            None => "",
        };
        let insert = format!(
            "INSERT INTO session_keys (key_id, list, sender, roster_seq, created_at, expires_at, master_key_id, nonce, sealed_key, sealing, wrapping_key_id, key_digest) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 \
             WHERE NOT EXISTS (SELECT 1 FROM destroyed_keys WHERE key_id = $1 OR key_digest = $12){wrapped} \
             ON CONFLICT DO NOTHING"
        );
        let done = sqlx::query(&insert)
            .bind(&row.key_id)
            .bind(&row.list)
            .bind(&row.sender)
            .bind(row.roster_seq)
            .bind(row.created_at)
            .bind(row.expires_at)
            .bind(&row.master_key_id)
            .bind(&row.nonce)
            .bind(&row.sealed_key)
            .bind(row.sealing)
            .bind(&row.wrapping_key_id)
            .bind(&row.key_digest)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() > 0 {
            return Ok(SessionKeyInserted::New);
        }
        if self.session_key(&row.key_id).await?.is_some()
            || self.destroyed_key(&row.key_id).await?.is_some()
        {
            return Ok(SessionKeyInserted::KeyIdTaken);
        }
        if let Some(digest) = &row.key_digest
            && self.key_digest_taken(digest).await?
        {
            return Ok(SessionKeyInserted::KeyDigestTaken);
        }
        match &row.wrapping_key_id {
            Some(wrapping_key_id) => Err(StoreError::WrappingKeyGone(wrapping_key_id.clone())),
            // Nothing conflicts now: the conflicting row was destroyed in between, leaving
            // its tombstone, which the checks above read a moment before it was written.
            None => Ok(SessionKeyInserted::KeyIdTaken),
        }
    }

    /// Whether a stored or destroyed key has the key digest `digest`.
    async fn key_digest_taken(&self, digest: &[u8]) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 FROM session_keys WHERE key_digest = $1 \
             UNION ALL SELECT 1 FROM destroyed_keys WHERE key_digest = $1",
        )
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// ` AND` the wrapping key `$N` is in the keyring; on PostgreSQL its row is share-locked
    /// until the statement's transaction ends, so it cannot be deleted in between.
    fn wrapping_key_exists_clause(&self, parameter: usize) -> &'static str {
        match (self.backend, parameter) {
            (Backend::Sqlite, 11) => " AND EXISTS (SELECT 1 FROM wrapping_keys WHERE id = $11)",
            (Backend::Postgres, 11) => {
                " AND EXISTS (SELECT 1 FROM wrapping_keys WHERE id = $11 FOR SHARE)"
            }
            (Backend::Sqlite, _) => " AND EXISTS (SELECT 1 FROM wrapping_keys WHERE id = $7)",
            (Backend::Postgres, _) => {
                " AND EXISTS (SELECT 1 FROM wrapping_keys WHERE id = $7 FOR SHARE)"
            }
        }
    }

    /// This process's turn to seal under or delete wrapping keys, on SQLite (see the
    /// `keyring_turn` field).
    async fn keyring_turn(&self) -> Option<MutexGuard<'_, ()>> {
        match &self.keyring_turn {
            Some(turn) => Some(turn.lock().await),
            None => None,
        }
    }

    pub async fn session_key(&self, key_id: &str) -> Result<Option<SessionKeyRow>, StoreError> {
        let row = sqlx::query(
            "SELECT key_id, list, sender, roster_seq, created_at, expires_at, sealing, master_key_id, nonce, sealed_key, wrapping_key_id, key_digest \
             FROM session_keys WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(session_key_row))
    }

    /// Deletes a session key and records why, in one transaction. Returns false if there was
    /// no such key.
    pub async fn destroy_session_key(
        &self,
        key_id: &str,
        reason: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        // The transaction starts with a write, so it holds the write lock from the start.
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "DELETE FROM session_keys WHERE key_id = $1 RETURNING list, sender, key_digest",
        )
        .bind(key_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let (list, sender): (String, String) = (row.get("list"), row.get("sender"));
        let key_digest: Option<Vec<u8>> = row.get("key_digest");
        // The tombstone keeps the key digest, so the key cannot be deposited again.
        sqlx::query(
            "INSERT INTO destroyed_keys (key_id, list, sender, reason, destroyed_at, key_digest) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(key_id)
        .bind(&list)
        .bind(&sender)
        .bind(reason)
        .bind(at)
        .bind(&key_digest)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Takes what deleted rows left behind out of the files. On SQLite, copies the
    /// write-ahead logs of the database and of its keyring into them and truncates the logs,
    /// so that the page images of rows deleted since (written to a log before
    /// `secure_delete` zeroed them) leave the files; returns false when readers kept it from
    /// finishing, and the next call finishes it. On PostgreSQL, rewrites the (tiny)
    /// `wrapping_keys` table so deleted wrapping keys leave its files (the other tables'
    /// dead rows wait for autovacuum: what they hold is sealed under wrapping keys).
    pub async fn erase_deleted_rows(&self) -> Result<bool, StoreError> {
        if self.backend != Backend::Sqlite {
            sqlx::query("VACUUM FULL wrapping_keys")
                .execute(&self.pool)
                .await?;
            return Ok(true);
        }
        let mut finished = true;
        for checkpoint in [
            "PRAGMA main.wal_checkpoint(TRUNCATE)",
            "PRAGMA keyring.wal_checkpoint(TRUNCATE)",
        ] {
            let row = sqlx::query(checkpoint).fetch_one(&self.pool).await?;
            finished &= row.try_get::<i64, _>(0)? == 0;
        }
        Ok(finished)
    }

    /// Session keys sealed in another way than `current_sealing`, or under a wrapping key
    /// retired since: what an upgrade or a revocation has left to re-seal. (Rows under a
    /// wrapping key no longer in the keyring cannot be re-sealed and are not listed.)
    pub async fn session_keys_to_reseal(
        &self,
        current_sealing: i64,
        limit: i64,
    ) -> Result<Vec<SessionKeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT key_id, list, sender, roster_seq, created_at, expires_at, sealing, master_key_id, nonce, sealed_key, wrapping_key_id, key_digest \
             FROM session_keys WHERE sealing <> $1 \
             OR wrapping_key_id IN (SELECT id FROM wrapping_keys WHERE retired = 1) LIMIT $2",
        )
        .bind(current_sealing)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(session_key_row).collect())
    }

    /// Session keys sealed under the wrapping key `wrapping_key_id`.
    pub async fn session_keys_wrapped_by(
        &self,
        wrapping_key_id: &str,
        limit: i64,
    ) -> Result<Vec<SessionKeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT key_id, list, sender, roster_seq, created_at, expires_at, sealing, master_key_id, nonce, sealed_key, wrapping_key_id, key_digest \
             FROM session_keys WHERE wrapping_key_id = $1 LIMIT $2",
        )
        .bind(wrapping_key_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(session_key_row).collect())
    }

    /// Replaces session keys' sealings (master key id, sealing, nonce, ciphertext and
    /// wrapping key) with those of the rows given, in one transaction, each unless another
    /// instance re-sealed or destroyed it meanwhile (its nonce must still be the one given
    /// beside it) or its new wrapping key was deleted as unused meanwhile; returns how many
    /// were replaced.
    pub async fn reseal_session_keys(
        &self,
        resealed: &[(SessionKeyRow, Vec<u8>)],
    ) -> Result<u64, StoreError> {
        let _turn = self.keyring_turn().await;
        let mut tx = self.pool.begin().await?;
        let mut replaced = 0;
        for (row, was_nonce) in resealed {
            let wrapped = match &row.wrapping_key_id {
                Some(_) => self.wrapping_key_exists_clause(7),
                None => "",
            };
            let update = format!(
                "UPDATE session_keys SET master_key_id = $3, sealing = $4, nonce = $5, sealed_key = $6, wrapping_key_id = $7 \
                 WHERE key_id = $1 AND nonce = $2{wrapped}"
            );
            replaced += sqlx::query(&update)
                .bind(&row.key_id)
                .bind(was_nonce)
                .bind(&row.master_key_id)
                .bind(row.sealing)
                .bind(&row.nonce)
                .bind(&row.sealed_key)
                .bind(&row.wrapping_key_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(replaced)
    }

    /// The newest wrapping key, not retired, of `list`, `day` and `expiring`.
    pub async fn current_wrapping_key(
        &self,
        list: &str,
        day: i64,
        expiring: bool,
    ) -> Result<Option<WrappingKeyRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, list, day, expiring, retired, created_at, master_key_id, nonce, sealed FROM wrapping_keys \
             WHERE list = $1 AND day = $2 AND expiring = $3 AND retired = 0 \
             ORDER BY created_at DESC, id LIMIT 1",
        )
        .bind(list)
        .bind(day)
        .bind(i64::from(expiring))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(wrapping_key_row))
    }

    pub async fn wrapping_key(&self, id: &str) -> Result<Option<WrappingKeyRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, list, day, expiring, retired, created_at, master_key_id, nonce, sealed FROM wrapping_keys WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(wrapping_key_row))
    }

    /// Adds a wrapping key to the keyring; if `retiring` names one, marks it retired in the
    /// same transaction, so new keys of its list and day go under the new one.
    pub async fn add_wrapping_key(
        &self,
        key: &WrappingKeyRow,
        retiring: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(retiring) = retiring {
            sqlx::query("UPDATE wrapping_keys SET retired = 1 WHERE id = $1")
                .bind(retiring)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO wrapping_keys (id, list, day, expiring, retired, created_at, master_key_id, nonce, sealed) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&key.id)
        .bind(&key.list)
        .bind(key.day)
        .bind(i64::from(key.expiring))
        .bind(i64::from(key.retired))
        .bind(key.created_at)
        .bind(&key.master_key_id)
        .bind(&key.nonce)
        .bind(&key.sealed)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Wrapping keys sealed under another master key than `current_master`.
    pub async fn wrapping_keys_to_reseal(
        &self,
        current_master: &str,
        limit: i64,
    ) -> Result<Vec<WrappingKeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, list, day, expiring, retired, created_at, master_key_id, nonce, sealed FROM wrapping_keys \
             WHERE master_key_id <> $1 LIMIT $2",
        )
        .bind(current_master)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(wrapping_key_row).collect())
    }

    /// Replaces a wrapping key's sealing if it is still under the master key `was`.
    pub async fn reseal_wrapping_key(
        &self,
        id: &str,
        was: &str,
        sealed: &SealedSecret,
    ) -> Result<bool, StoreError> {
        self.reseal(
            "UPDATE wrapping_keys SET master_key_id = $3, nonce = $4, sealed = $5 \
             WHERE id = $1 AND master_key_id = $2",
            id,
            was,
            sealed,
        )
        .await
    }

    /// Deletes the wrapping keys no session key row is sealed under (`only` one of them if
    /// given); returns how many. Deleting one destroys, in every copy of the session key
    /// table, the rows sealed under it.
    pub async fn delete_unused_wrapping_keys(&self, only: Option<&str>) -> Result<u64, StoreError> {
        const DELETE_UNUSED: &str = "DELETE FROM wrapping_keys \
             WHERE ($1 = '' OR id = $1) \
             AND NOT EXISTS (SELECT 1 FROM session_keys s WHERE s.wrapping_key_id = wrapping_keys.id)";
        let only = only.unwrap_or("");
        if self.backend == Backend::Sqlite {
            // One statement, which takes the keyring's write lock up front; the turn keeps
            // rows from being sealed under a key between its look at session_keys and the
            // delete.
            let _turn = self.keyring_turn().await;
            let done = sqlx::query(DELETE_UNUSED)
                .bind(only)
                .execute(&self.pool)
                .await?;
            return Ok(done.rows_affected());
        }
        // On PostgreSQL the candidates are locked first, which waits for statements sealing a
        // row under one of them (they share-lock it); each delete, a statement of its own,
        // then looks at session_keys afresh and sees their rows. Only locked candidates are
        // deleted: a key locked by the delete itself would be rechecked against the old look.
        let mut tx = self.pool.begin().await?;
        let candidates: Vec<String> = sqlx::query(
            "SELECT id FROM wrapping_keys w WHERE ($1 = '' OR w.id = $1) \
             AND NOT EXISTS (SELECT 1 FROM session_keys s WHERE s.wrapping_key_id = w.id) \
             FOR UPDATE",
        )
        .bind(only)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.get("id"))
        .collect();
        let mut deleted = 0;
        for id in candidates {
            deleted += sqlx::query(DELETE_UNUSED)
                .bind(&id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Replaces a server secret's sealing if it is still under `was`.
    pub async fn reseal_server_secret(
        &self,
        name: &str,
        was: &str,
        sealed: &SealedSecret,
    ) -> Result<bool, StoreError> {
        self.reseal(
            "UPDATE server_secrets SET master_key_id = $3, nonce = $4, sealed = $5 \
             WHERE name = $1 AND master_key_id = $2",
            name,
            was,
            sealed,
        )
        .await
    }

    /// Runs a re-sealing `update` ($1 the row, $2 the old master key id, $3..$5 the new
    /// sealing); true if the row was still under the old key.
    async fn reseal(
        &self,
        update: &str,
        row: &str,
        was: &str,
        sealed: &SealedSecret,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(update)
            .bind(row)
            .bind(was)
            .bind(&sealed.master_key_id)
            .bind(&sealed.nonce)
            .bind(&sealed.sealed)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn destroyed_key(&self, key_id: &str) -> Result<Option<DestroyedKey>, StoreError> {
        let row = sqlx::query(
            "SELECT key_id, list, sender, reason, destroyed_at FROM destroyed_keys WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| DestroyedKey {
            key_id: r.get("key_id"),
            list: r.get("list"),
            sender: r.get("sender"),
            reason: r.get("reason"),
            destroyed_at: r.get("destroyed_at"),
        }))
    }

    /// Key ids whose expiry is at or before `now`.
    pub async fn expired_keys(&self, now: i64, limit: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT key_id FROM session_keys WHERE expires_at IS NOT NULL AND expires_at <= $1 LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get("key_id")).collect())
    }

    pub async fn count_session_keys(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM session_keys")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get("n"))
    }

    /// Appends an audit record; returns once it is durable, committed together with the
    /// records of other requests waiting at the same moment.
    pub async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let (done, outcome) = oneshot::channel();
        let closed = || StoreError::GroupCommit("the audit writer has stopped".into());
        self.audit_writer
            .send((entry.clone(), done))
            .map_err(|_| closed())?;
        outcome
            .await
            .map_err(|_| closed())?
            .map_err(StoreError::GroupCommit)
    }

    /// A key id's audit chain, in order. A record without a place in the chain was written by
    /// an older key server after this one started; it is reported, not shown out of its chain.
    pub async fn audit_log(&self, key_id: &str) -> Result<Vec<ChainedAuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, key_id, list, at, actor, action, outcome, detail, seq, hash FROM audit WHERE key_id = $1 ORDER BY seq, id",
        )
        .bind(key_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let Some(seq) = row.get::<Option<i64>, _>("seq") else {
                    return Err(StoreError::Corrupt(format!(
                        "audit record {} of key {key_id} has no place in its chain (written by an older key server); restart the key server to chain it",
                        row.get::<i64, _>("id")
                    )));
                };
                Ok(ChainedAuditEntry {
                    seq,
                    entry: audit_entry(row),
                    hash: stored_hash(row)?,
                })
            })
            .collect()
    }

    pub async fn server_secret(&self, name: &str) -> Result<Option<SealedSecret>, StoreError> {
        let row =
            sqlx::query("SELECT master_key_id, nonce, sealed FROM server_secrets WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| SealedSecret {
            master_key_id: r.get("master_key_id"),
            nonce: r.get("nonce"),
            sealed: r.get("sealed"),
        }))
    }

    /// Stores a secret unless one of that name exists (first instance to start wins).
    pub async fn put_server_secret(
        &self,
        name: &str,
        secret: &SealedSecret,
    ) -> Result<Inserted, StoreError> {
        let done = sqlx::query(
            "INSERT INTO server_secrets (name, master_key_id, nonce, sealed) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(&secret.master_key_id)
        .bind(&secret.nonce)
        .bind(&secret.sealed)
        .execute(&self.pool)
        .await?;
        Ok(inserted(done.rows_affected()))
    }
}

fn session_key_row(r: &sqlx::any::AnyRow) -> SessionKeyRow {
    SessionKeyRow {
        key_id: r.get("key_id"),
        list: r.get("list"),
        sender: r.get("sender"),
        roster_seq: r.get("roster_seq"),
        created_at: r.get("created_at"),
        expires_at: r.get("expires_at"),
        sealing: r.get("sealing"),
        master_key_id: r.get("master_key_id"),
        nonce: r.get("nonce"),
        sealed_key: r.get("sealed_key"),
        wrapping_key_id: r.get("wrapping_key_id"),
        key_digest: r.get("key_digest"),
    }
}

fn wrapping_key_row(r: &sqlx::any::AnyRow) -> WrappingKeyRow {
    WrappingKeyRow {
        id: r.get("id"),
        list: r.get("list"),
        day: r.get("day"),
        expiring: r.get::<i64, _>("expiring") != 0,
        retired: r.get::<i64, _>("retired") != 0,
        created_at: r.get("created_at"),
        master_key_id: r.get("master_key_id"),
        nonce: r.get("nonce"),
        sealed: r.get("sealed"),
    }
}
