//! Storage for the hushlist servers. One interface ([`Store`]) over SQLx's `Any` driver, so the
//! same queries run on SQLite (the embedded default) and PostgreSQL (for several instances of
//! a server sharing one database). This is the only crate that knows SQL; it stores opaque
//! bytes, and its one piece of cryptography is chaining audit records with
//! `hushlist_core::audit`'s hash as it appends them.
//!
//! Every write returns only after the database committed it (SQLite: WAL with
//! `synchronous=FULL`; PostgreSQL: its default synchronous commit), so a server may
//! acknowledge what a call here accepted.

pub mod membership;
pub mod rosters;
pub mod scratch;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use hushlist_core::audit::{AuditFields, AuditHash};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, ConnectOptions as _, Executor as _, Row as _};
use tokio::sync::{Mutex, MutexGuard, mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported database URL {0:?}: use sqlite://PATH or postgres://USER:PASSWORD@HOST/DB"
    )]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("unexpected value in the database: {0}")]
    Corrupt(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A group commit failed; the error as the database gave it.
    #[error("database error: {0}")]
    GroupCommit(String),
    /// A post under a list and key id already stored with other bytes: the stored post stays.
    #[error("{list} already holds a different post under key id {key_id}")]
    KeyIdTaken { list: String, key_id: String },
    /// A session key was to be sealed under a wrapping key that is no longer in the keyring
    /// (deleted as unused meanwhile); nothing was written, and sealing it under a current
    /// wrapping key succeeds.
    #[error("wrapping key {0} is no longer in the keyring")]
    WrappingKeyGone(String),
}

/// A roster op as stored: its position and exact signed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOp {
    pub seq: i64,
    pub body: Vec<u8>,
    pub signature: Vec<u8>,
}

/// What [`Store::insert_post`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertedPost {
    pub id: i64,
    /// The post was stored before (same list and key id); nothing was added.
    pub duplicate: bool,
}

/// A session key row. `sealed_key` is the key encrypted under the wrapping key
/// `wrapping_key_id` or, when that is `None`, directly under a master key; `master_key_id`
/// identifies the key that encrypted it (the digest id of the wrapping or master key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKeyRow {
    pub key_id: String,
    pub list: String,
    pub sender: String,
    pub roster_seq: i64,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// Which of the row's columns its sealing is bound to, as the key server numbers it.
    pub sealing: i64,
    pub master_key_id: String,
    pub nonce: Vec<u8>,
    pub sealed_key: Vec<u8>,
    pub wrapping_key_id: Option<String>,
    /// A keyed digest of the session key, unique among all keys stored or destroyed (`None`
    /// on rows stored before digests were kept).
    pub key_digest: Option<Vec<u8>>,
}

/// A wrapping key as the keyring keeps it: random key bytes sealed under the master key
/// `master_key_id`. One serves the session keys of one list that expire on `day` (days since
/// the epoch), or, when `expiring` is false, that were deposited on `day` without an expiry.
/// A retired one (replaced after a revocation) serves no new key and is deleted once no row
/// is sealed under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappingKeyRow {
    pub id: String,
    pub list: String,
    pub day: i64,
    pub expiring: bool,
    pub retired: bool,
    pub created_at: i64,
    pub master_key_id: String,
    pub nonce: Vec<u8>,
    pub sealed: Vec<u8>,
}

/// The trace of a destroyed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestroyedKey {
    pub key_id: String,
    pub list: String,
    pub sender: String,
    pub reason: String,
    pub destroyed_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub key_id: String,
    pub list: String,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub detail: Option<String>,
}

impl AuditEntry {
    /// What the record's link in its key id's chain covers.
    pub fn fields(&self) -> AuditFields<'_> {
        AuditFields {
            key_id: &self.key_id,
            list: &self.list,
            at: u64::try_from(self.at).unwrap_or_default(),
            actor: &self.actor,
            action: &self.action,
            outcome: &self.outcome,
            detail: self.detail.as_deref(),
        }
    }
}

/// An audit record as stored: its place in its key id's chain (from 1) and the chain's hash
/// up to and including it (see `hushlist_core::audit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedAuditEntry {
    pub seq: i64,
    pub entry: AuditEntry,
    pub hash: AuditHash,
}

/// A server's own secret, encrypted under the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    pub master_key_id: String,
    pub nonce: Vec<u8>,
    pub sealed: Vec<u8>,
}

/// A post as the list server keeps it: the encrypted message and its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostRow {
    pub id: i64,
    pub list: String,
    pub mail_from: Option<String>,
    pub key_id: String,
    pub message_id: Option<String>,
    pub received_at: i64,
    pub message: Vec<u8>,
    /// The SHA-256 of `message`, computed by the list server; empty for posts stored before
    /// digests were kept.
    pub digest: Vec<u8>,
    /// The list's roster head when the post was accepted; `None` for posts stored before it
    /// was kept.
    pub roster_seq: Option<i64>,
}

/// A delivery claimed by a worker: due, and leased to it until the lease time it claimed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    pub post_id: i64,
    pub recipient: String,
    /// Attempts made before this one.
    pub attempts: i64,
}

/// Where one delivery stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub state: DeliveryState,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

/// The states of a delivery: `Pending` until the relay takes it (`Delivered`) or refuses
/// it for good or for too long (`Failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryState {
    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "pending" => Ok(DeliveryState::Pending),
            "delivered" => Ok(DeliveryState::Delivered),
            "failed" => Ok(DeliveryState::Failed),
            other => Err(StoreError::Corrupt(format!("delivery state {other:?}"))),
        }
    }
}

/// Number of deliveries in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub pending: i64,
    pub delivered: i64,
    pub failed: i64,
}

/// An address the list server does not deliver to for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspension {
    pub address: String,
    pub reason: String,
    pub since: i64,
}

/// Outcome of inserting a row that may already exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New,
    AlreadyPresent,
}

/// What [`Store::insert_session_key`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKeyInserted {
    New,
    /// A key is stored (or was destroyed) under this key id; nothing was added.
    KeyIdTaken,
    /// Another key id holds (or held) a key with this key digest; nothing was added.
    KeyDigestTaken,
}

/// Which database a [`Store`] runs on, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// Connections for writes whose last few may be lost to a power failure without harm:
    /// delivery bookkeeping (claims, outcomes, the outbox's marks: losing them re-sends
    /// copies, and delivery is at least once anyway) and request nonces and rate-limit counts
    /// (losing them lets a captured request be replayed within its five minutes after the
    /// outage, which repeats an idempotent or already-allowed action). Their commits do not
    /// wait for the disk (SQLite `synchronous=NORMAL` under WAL, PostgreSQL
    /// `synchronous_commit=off`); a process crash loses nothing. What is acknowledged to anyone
    /// (posts, deposits, roster ops, audit records) goes through `pool`, which waits.
    bookkeeping: AnyPool,
    /// On SQLite, the frequent writes (`bookkeeping`'s and the audit group commits) take
    /// turns here. SQLite lets one writer in at a time, and a connection that finds the
    /// database locked sleeps in its busy handler, 1 to 100 ms a try, while the lock may
    /// already be free; queued here, the next writer starts the moment the last one ends.
    write_turn: Option<Arc<Mutex<()>>>,
    /// On SQLite, where the keyring is a file of its own and no transaction spans both
    /// files, sealing a row under a wrapping key and deleting unused wrapping keys take turns
    /// here, so no row is ever sealed under a key deleted at the same moment. (PostgreSQL
    /// locks the wrapping key's row instead.)
    keyring_turn: Option<Arc<Mutex<()>>>,
    /// Where audit records go to be committed together (see [`Store::append_audit`]).
    audit_writer: mpsc::UnboundedSender<AuditWaiter>,
    backend: Backend,
}

/// The keyring's file beside the SQLite database `db`: `NAME.keyring` for `NAME`.
fn keyring_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".keyring");
    PathBuf::from(name)
}

/// The statements that attach the keyring file to a SQLite connection and make destruction
/// in it real: deleted rows overwritten, every commit durable.
fn attach_keyring(keyring: &str) -> String {
    format!(
        "ATTACH DATABASE '{}' AS keyring; PRAGMA keyring.journal_mode=WAL; PRAGMA keyring.synchronous=FULL; PRAGMA keyring.secure_delete=ON;",
        keyring.replace('\'', "''")
    )
}

/// The keyring's one table on SQLite (on PostgreSQL a table of the database, made by
/// migration 0016).
const SQLITE_KEYRING_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS keyring.wrapping_keys (
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

/// A pool of SQLite connections in WAL mode whose commits wait for the disk as
/// `synchronous` says (`FULL`: every commit; `NORMAL`: only checkpoints).
async fn sqlite_pool(
    options: &AnyConnectOptions,
    max_connections: u32,
    synchronous: &'static str,
    keyring: &str,
) -> Result<AnyPool, StoreError> {
    let attach = Arc::new(attach_keyring(keyring));
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(move |conn, _| {
            let attach = attach.clone();
            Box::pin(async move {
                conn.execute(
                    format!(
                        "PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous}; PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON; PRAGMA secure_delete=ON; {attach}"
                    )
                    .as_str(),
                )
                .await?;
                Ok(())
            })
        })
        .connect_with(options.clone())
        .await?;
    Ok(pool)
}

/// Makes the SQLite database at `db` readable by its owner alone: created empty with mode 0600
/// if missing (SQLite gives its -wal and -shm files the database file's mode), and an
/// existing database's files tightened to 0600.
fn private_database_files(db: &Path) -> Result<(), StoreError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Io { path, source }
    };
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db)
    {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(db)(e)),
        _ => {}
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        let path = PathBuf::from(path);
        let mode = match fs::metadata(&path) {
            Ok(metadata) => metadata.permissions().mode(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&path)(e)),
        };
        if mode & 0o077 != 0 {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io(&path))?;
        }
    }
    Ok(())
}

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

impl Store {
    /// Opens the database at `url` and applies migrations: `sqlite://PATH` (created if
    /// missing) or `postgres://…` (the database must exist; several instances may open it
    /// at once, since migrations take PostgreSQL's advisory lock).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Self::open_postgres(url).await;
        }
        if !url.starts_with("sqlite:") {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        }
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // A destroyed key's bytes are overwritten, not left in a free page.
            .pragma("secure_delete", "ON");
        // An in-memory database has no files to keep private (and its keyring is in memory).
        let keyring = if url.contains(":memory:") || url.contains("mode=memory") {
            ":memory:".to_owned()
        } else {
            let keyring = keyring_path(options.get_filename());
            private_database_files(options.get_filename())?;
            private_database_files(&keyring)?;
            keyring.display().to_string()
        };
        // Migrate over a native connection (creates the files and the schema), then serve
        // queries through the `Any` pool so PostgreSQL can share them.
        let mut conn = options.connect().await?;
        sqlx::migrate!("./migrations/sqlite").run(&mut conn).await?;
        conn.execute(attach_keyring(&keyring).as_str()).await?;
        conn.execute(SQLITE_KEYRING_SCHEMA).await?;
        drop(conn);
        let any_options = AnyConnectOptions::from_str(url)?;
        let pool = sqlite_pool(&any_options, 8, "FULL", &keyring).await?;
        let bookkeeping = sqlite_pool(&any_options, 4, "NORMAL", &keyring).await?;
        let write_turn = Some(Arc::new(Mutex::new(())));
        chain_unchained_audit(&pool, Backend::Sqlite).await?;
        Ok(Store {
            audit_writer: spawn_audit_writer(pool.clone(), write_turn.clone(), Backend::Sqlite),
            write_turn,
            keyring_turn: Some(Arc::new(Mutex::new(()))),
            pool,
            bookkeeping,
            backend: Backend::Sqlite,
        })
    }

    async fn open_postgres(url: &str) -> Result<Self, StoreError> {
        let mut conn = sqlx::postgres::PgConnectOptions::from_str(url)?
            .connect()
            .await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&mut conn)
            .await?;
        drop(conn);
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(AnyConnectOptions::from_str(url)?)
            .await?;
        let bookkeeping = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("SET synchronous_commit = off").await?;
                    Ok(())
                })
            })
            .connect_with(AnyConnectOptions::from_str(url)?)
            .await?;
        chain_unchained_audit(&pool, Backend::Postgres).await?;
        Ok(Store {
            audit_writer: spawn_audit_writer(pool.clone(), None, Backend::Postgres),
            write_turn: None,
            keyring_turn: None,
            pool,
            bookkeeping,
            backend: Backend::Postgres,
        })
    }

    /// This process's turn to write, on SQLite (see the `write_turn` field).
    async fn write_turn(&self) -> Option<MutexGuard<'_, ()>> {
        match &self.write_turn {
            Some(turn) => Some(turn.lock().await),
            None => None,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks the database answers (for health endpoints).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn roster_ops(
        &self,
        list: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<StoredOp>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, body, signature FROM roster_ops WHERE list = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(list)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| StoredOp {
                seq: r.get("seq"),
                body: r.get("body"),
                signature: r.get("signature"),
            })
            .collect())
    }

    /// Appends an op at `seq`; `AlreadyPresent` when another writer took that seq first.
    pub async fn append_roster_op(
        &self,
        list: &str,
        op: &StoredOp,
    ) -> Result<Inserted, StoreError> {
        let done = sqlx::query(
            "INSERT INTO roster_ops (list, seq, body, signature) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(list)
        .bind(op.seq)
        .bind(&op.body)
        .bind(&op.signature)
        .execute(&self.pool)
        .await?;
        Ok(inserted(done.rows_affected()))
    }

    pub async fn lists(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT list FROM roster_ops ORDER BY list")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get("list")).collect())
    }

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

    /// Records a request nonce; false if this signer already used it.
    pub async fn remember_nonce(
        &self,
        signer: &str,
        nonce: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "INSERT INTO nonces (signer, nonce, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(signer)
        .bind(nonce)
        .bind(expires_at)
        .execute(&self.bookkeeping)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Counts one request by `signer` in the rate-limit window starting at `window_start`
    /// and returns the window's count so far (this request included).
    pub async fn count_request(&self, signer: &str, window_start: i64) -> Result<i64, StoreError> {
        let _turn = self.write_turn().await;
        let row = sqlx::query(
            "INSERT INTO request_counts (signer, window_start, count) VALUES ($1, $2, 1) \
             ON CONFLICT (signer, window_start) DO UPDATE SET count = request_counts.count + 1 \
             RETURNING count",
        )
        .bind(signer)
        .bind(window_start)
        .fetch_one(&self.bookkeeping)
        .await?;
        Ok(row.get("count"))
    }

    /// Forgets rate-limit windows that started before `before`.
    pub async fn prune_request_counts(&self, before: i64) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query("DELETE FROM request_counts WHERE window_start < $1")
            .bind(before)
            .execute(&self.bookkeeping)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn prune_nonces(&self, now: i64) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query("DELETE FROM nonces WHERE expires_at < $1")
            .bind(now)
            .execute(&self.bookkeeping)
            .await?;
        Ok(done.rows_affected())
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

impl Store {
    /// Stores a post with one pending delivery per distinct recipient, in one transaction.
    /// A post whose list and key id are already stored is not stored again: the same bytes
    /// are returned as a duplicate of the stored post (no deliveries are added), other bytes
    /// are refused with [`StoreError::KeyIdTaken`].
    pub async fn insert_post(
        &self,
        post: &PostRow,
        recipients: &[String],
    ) -> Result<InsertedPost, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = match insert_post_row(&mut tx, post).await? {
            InsertedPost {
                id,
                duplicate: false,
            } => id,
            duplicate => {
                tx.commit().await?;
                return Ok(duplicate);
            }
        };
        insert_deliveries(&mut tx, id, recipients, post.received_at).await?;
        tx.commit().await?;
        Ok(InsertedPost {
            id,
            duplicate: false,
        })
    }

    /// Refuses with [`StoreError::KeyIdTaken`] a post whose list and key id are stored with
    /// other bytes, so that a post to several lists can be checked for all before it is
    /// stored for any. (Storing it checks again, against a post stored meanwhile.)
    pub async fn check_post_key(&self, post: &PostRow) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        match post_under_key(&mut conn, post).await? {
            UnderKey::Free | UnderKey::Same(_) => Ok(()),
            UnderKey::Different => Err(key_id_taken(post)),
        }
    }

    /// The recipients of a post still waiting for delivery.
    pub async fn pending_deliveries(&self, post_id: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT recipient FROM deliveries WHERE post_id = $1 AND state = 'pending' ORDER BY recipient",
        )
        .bind(post_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get("recipient")).collect())
    }

    /// Claims up to `limit` pending deliveries due at `now`, oldest post first, by moving
    /// their next attempt to `lease_until`: a worker that dies holding them only delays them
    /// until then, and another worker (in this process or another) picks them up.
    pub async fn claim_deliveries(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let _turn = self.write_turn().await;
        // SQLite serializes writers, so the UPDATE alone is atomic; it finds the claimed rows
        // by rowid (conditions on the outer UPDATE made it walk every due row of the
        // claim-order index, O(queue) per claim: most of a fan-out's CPU). PostgreSQL runs
        // concurrent claims from many processes: each locks its rows in a CTE (evaluated
        // exactly once, unlike an IN subquery the planner may rescan) and skips rows another
        // claim has locked instead of waiting for them or taking them twice.
        let sql = match self.backend {
            Backend::Sqlite => {
                "UPDATE deliveries SET next_attempt_at = $2 WHERE rowid IN ( \
                     SELECT rowid FROM deliveries \
                     WHERE state = 'pending' AND next_attempt_at <= $1 \
                     ORDER BY next_attempt_at, post_id, recipient LIMIT $3) \
                 RETURNING post_id, recipient, attempts"
            }
            Backend::Postgres => {
                "WITH due AS ( \
                     SELECT post_id, recipient FROM deliveries \
                     WHERE state = 'pending' AND next_attempt_at <= $1 \
                     ORDER BY next_attempt_at, post_id, recipient LIMIT $3 \
                     FOR UPDATE SKIP LOCKED) \
                 UPDATE deliveries AS d SET next_attempt_at = $2 FROM due \
                 WHERE d.post_id = due.post_id AND d.recipient = due.recipient \
                 RETURNING d.post_id, d.recipient, d.attempts"
            }
        };
        let rows = sqlx::query(sql)
            .bind(now)
            .bind(lease_until)
            .bind(limit)
            .fetch_all(&self.bookkeeping)
            .await?;
        let mut claimed: Vec<ClaimedDelivery> = rows
            .iter()
            .map(|r| ClaimedDelivery {
                post_id: r.get("post_id"),
                recipient: r.get("recipient"),
                attempts: r.get("attempts"),
            })
            .collect();
        claimed.sort_by(|a, b| (a.post_id, &a.recipient).cmp(&(b.post_id, &b.recipient)));
        Ok(claimed)
    }

    /// Records that the relay took the post for these recipients; returns how many were
    /// still pending (and so are now delivered).
    pub async fn mark_delivered(
        &self,
        post_id: i64,
        recipients: &[String],
    ) -> Result<u64, StoreError> {
        self.update_pending(
            "state = 'delivered', attempts = attempts + 1, last_error = NULL",
            None,
            post_id,
            recipients,
        )
        .await
    }

    /// Hands claimed deliveries back unattempted, due again at `due_at`.
    pub async fn release_deliveries(
        &self,
        post_id: i64,
        recipients: &[String],
        due_at: i64,
    ) -> Result<(), StoreError> {
        self.update_pending("next_attempt_at = $2", Some(due_at), post_id, recipients)
            .await?;
        Ok(())
    }

    /// Applies `set` to the pending deliveries of `post_id` to `recipients`; `$2` in `set`
    /// is `value`. Returns how many deliveries were pending.
    async fn update_pending(
        &self,
        set: &str,
        value: Option<i64>,
        post_id: i64,
        recipients: &[String],
    ) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        // Recipients per UPDATE: well under SQLite's limit of bound parameters.
        const BATCH: usize = 400;
        let first = if value.is_some() { 3 } else { 2 };
        // Without statistics SQLite would look these rows up by `state` in the claim-order
        // index, walking every pending row; the unary plus leaves it the primary key.
        let pending = match self.backend {
            Backend::Sqlite => "+state = 'pending'",
            Backend::Postgres => "state = 'pending'",
        };
        let mut updated = 0;
        for chunk in recipients.chunks(BATCH) {
            let placeholders: Vec<String> = (0..chunk.len())
                .map(|i| format!("${}", i + first))
                .collect();
            let sql = format!(
                "UPDATE deliveries SET {set} \
                 WHERE post_id = $1 AND {pending} AND recipient IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(post_id);
            if let Some(value) = value {
                query = query.bind(value);
            }
            for recipient in chunk {
                query = query.bind(recipient);
            }
            updated += query.execute(&self.bookkeeping).await?.rows_affected();
        }
        Ok(updated)
    }

    /// Records a failed attempt: the delivery is retried at `next_attempt_at`.
    pub async fn defer_delivery(
        &self,
        post_id: i64,
        recipient: &str,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = $3, last_error = $4 \
             WHERE post_id = $1 AND recipient = $2 AND state = 'pending'",
        )
        .bind(post_id)
        .bind(recipient)
        .bind(next_attempt_at)
        .bind(error)
        .execute(&self.bookkeeping)
        .await?;
        Ok(())
    }

    /// Records that the delivery will not be tried again, and why; returns whether it was
    /// pending (and so is now failed).
    pub async fn fail_delivery(
        &self,
        post_id: i64,
        recipient: &str,
        error: &str,
    ) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE deliveries SET state = 'failed', attempts = attempts + 1, last_error = $3 \
             WHERE post_id = $1 AND recipient = $2 AND state = 'pending'",
        )
        .bind(post_id)
        .bind(recipient)
        .bind(error)
        .execute(&self.bookkeeping)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn delivery(
        &self,
        post_id: i64,
        recipient: &str,
    ) -> Result<Option<DeliveryRow>, StoreError> {
        let row = sqlx::query(
            "SELECT state, attempts, next_attempt_at, last_error FROM deliveries \
             WHERE post_id = $1 AND recipient = $2",
        )
        .bind(post_id)
        .bind(recipient)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(DeliveryRow {
                state: DeliveryState::parse(&r.get::<String, _>("state"))?,
                attempts: r.get("attempts"),
                next_attempt_at: r.get("next_attempt_at"),
                last_error: r.get("last_error"),
            })
        })
        .transpose()
    }

    /// How many deliveries wait to be made: a range of the claim-order index, so it costs the
    /// backlog rather than every delivery ever made.
    pub async fn count_pending_deliveries(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM deliveries WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get("n"))
    }

    /// How many deliveries are in each state, over all posts.
    pub async fn delivery_counts(&self) -> Result<DeliveryCounts, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let mut counts = DeliveryCounts::default();
        for row in rows {
            let n: i64 = row.get("n");
            match DeliveryState::parse(&row.get::<String, _>("state"))? {
                DeliveryState::Pending => counts.pending = n,
                DeliveryState::Delivered => counts.delivered = n,
                DeliveryState::Failed => counts.failed = n,
            }
        }
        Ok(counts)
    }

    /// Delivers `list`'s posts to `address` again, with a clean bounce record; returns
    /// whether it was suspended.
    pub async fn resume(&self, list: &str, address: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM suspensions WHERE list = $1 AND address = $2")
            .bind(list)
            .bind(address)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM bounce_scores WHERE list = $1 AND address = $2")
            .bind(list)
            .bind(address)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn suspensions(&self, list: &str) -> Result<Vec<Suspension>, StoreError> {
        let rows = sqlx::query(
            "SELECT address, reason, since FROM suspensions WHERE list = $1 ORDER BY address",
        )
        .bind(list)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Suspension {
                address: r.get("address"),
                reason: r.get("reason"),
                since: r.get("since"),
            })
            .collect())
    }

    /// One post by id.
    pub async fn post(&self, id: i64) -> Result<Option<PostRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, list, mail_from, key_id, message_id, received_at, message, digest, roster_seq \
             FROM posts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(post_row))
    }

    /// Posts of `list` with ids above `after_id`, oldest first, at most `limit`; held posts
    /// are not among them until released.
    pub async fn posts(
        &self,
        list: &str,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<PostRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, list, mail_from, key_id, message_id, received_at, message, digest, roster_seq \
             FROM posts \
             WHERE list = $1 AND id > $2 \
             AND NOT EXISTS (SELECT 1 FROM held_posts h WHERE h.post_id = posts.id) \
             ORDER BY id LIMIT $3",
        )
        .bind(list)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(post_row).collect())
    }
}

/// Inserts a post unless its list and key id are already stored: then returns that one as a
/// duplicate if it has the same bytes, and refuses it with [`StoreError::KeyIdTaken`] if not.
pub(crate) async fn insert_post_row(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    post: &PostRow,
) -> Result<InsertedPost, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO posts \
         (list, mail_from, key_id, message_id, received_at, message, digest, roster_seq) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (list, key_id) DO NOTHING RETURNING id",
    )
    .bind(&post.list)
    .bind(&post.mail_from)
    .bind(&post.key_id)
    .bind(&post.message_id)
    .bind(post.received_at)
    .bind(&post.message)
    .bind(&post.digest)
    .bind(post.roster_seq)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = inserted {
        return Ok(InsertedPost {
            id: row.get("id"),
            duplicate: false,
        });
    }
    match post_under_key(tx, post).await? {
        UnderKey::Same(id) => Ok(InsertedPost {
            id,
            duplicate: true,
        }),
        UnderKey::Different => Err(key_id_taken(post)),
        // The conflicting row went between the two statements (a held post discarded).
        UnderKey::Free => Err(StoreError::Database(sqlx::Error::RowNotFound)),
    }
}

/// What is stored under a post's list and key id.
enum UnderKey {
    Free,
    /// A post with the same bytes, and its id.
    Same(i64),
    Different,
}

/// Compares `post` with the post stored under its list and key id, if any: by digest, or
/// byte for byte for posts stored without one.
async fn post_under_key(
    conn: &mut sqlx::AnyConnection,
    post: &PostRow,
) -> Result<UnderKey, StoreError> {
    let row = sqlx::query("SELECT id, digest FROM posts WHERE list = $1 AND key_id = $2")
        .bind(&post.list)
        .bind(&post.key_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(UnderKey::Free);
    };
    let id: i64 = row.get("id");
    let same = match row.get::<Option<Vec<u8>>, _>("digest") {
        Some(digest) => digest == post.digest,
        None => {
            let stored = sqlx::query("SELECT message FROM posts WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *conn)
                .await?;
            stored.get::<Vec<u8>, _>("message") == post.message
        }
    };
    Ok(if same {
        UnderKey::Same(id)
    } else {
        UnderKey::Different
    })
}

fn key_id_taken(post: &PostRow) -> StoreError {
    StoreError::KeyIdTaken {
        list: post.list.clone(),
        key_id: post.key_id.clone(),
    }
}

/// One pending delivery of post `id` per recipient, due at `due_at`.
pub(crate) async fn insert_deliveries(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: i64,
    recipients: &[String],
    due_at: i64,
) -> Result<(), StoreError> {
    // Rows per INSERT statement: well under SQLite's limit of bound parameters.
    const BATCH: usize = 400;
    for chunk in recipients.chunks(BATCH) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("($1, ${}, $2)", i + 3))
            .collect();
        let sql = format!(
            "INSERT INTO deliveries (post_id, recipient, next_attempt_at) VALUES {} ON CONFLICT DO NOTHING",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(id).bind(due_at);
        for recipient in chunk {
            query = query.bind(recipient);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
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

fn post_row(r: &sqlx::any::AnyRow) -> PostRow {
    PostRow {
        id: r.get("id"),
        list: r.get("list"),
        mail_from: r.get("mail_from"),
        key_id: r.get("key_id"),
        message_id: r.get("message_id"),
        received_at: r.get("received_at"),
        message: r.get("message"),
        digest: r.get::<Option<Vec<u8>>, _>("digest").unwrap_or_default(),
        roster_seq: r.get("roster_seq"),
    }
}

fn inserted(rows_affected: u64) -> Inserted {
    if rows_affected == 1 {
        Inserted::New
    } else {
        Inserted::AlreadyPresent
    }
}
