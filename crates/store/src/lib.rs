//! Storage for the hushlist servers, over SQLx's `Any` driver, so the same queries run on
//! SQLite (the embedded default) and PostgreSQL (for several instances of a server sharing one
//! database). This is the only crate that knows SQL; it stores opaque bytes, and its one piece
//! of cryptography is chaining audit records with `hushlist_core::audit`'s hash as it appends
//! them.
//!
//! Each server has a store of its own, over a database of its own: [`KeyStore`] (session keys,
//! wrapping keys, the audit chain, sealed server secrets) and [`ListStore`] (posts, the delivery
//! queue, bounces, joins, held posts). Both dereference to [`Store`], the part they share:
//! roster ops, request nonces and rate-limit counts. A database holds one server's tables only
//! and refuses to be opened by the other server.
//!
//! Every write returns only after the database committed it (SQLite: WAL with
//! `synchronous=FULL`; PostgreSQL: its default synchronous commit), so a server may
//! acknowledge what a call here accepted.

mod keys;
mod lists;
pub mod membership;
pub mod rosters;
pub mod scratch;

pub use keys::KeyStore;
pub use lists::ListStore;

use std::fs;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use hushlist_core::audit::{AuditFields, AuditHash};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AnyPool, ConnectOptions as _, Executor as _, Row as _};

use crate::keys::{SQLITE_KEYRING_SCHEMA, attach_keyring, keyring_path};
use tokio::sync::{Mutex, MutexGuard};

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
    /// The database is (or was) the other server's: each server needs a database of its own.
    #[error(
        "this database is not the {expected}'s ({found}): the key server and the list server each need a database of their own"
    )]
    OtherServersDatabase {
        expected: &'static str,
        found: String,
    },
    /// A newer hushlist migrated the database; this one does not know its schema.
    #[error(
        "the database was migrated by a newer hushlist (migration {version}; this build knows up to {known}): run that version or newer"
    )]
    NewerDatabase { version: i64, known: i64 },
}

/// A roster op as stored: its position and exact signed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOp {
    pub seq: i64,
    pub body: Vec<u8>,
    pub signature: Vec<u8>,
}

/// What [`ListStore::insert_post`] did.
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

/// What [`KeyStore::insert_session_key`] did.
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
    backend: Backend,
}

/// `url` with any password in it replaced by `***`, for messages and logs.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Which server a database belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    KeyServer,
    ListServer,
}

impl Role {
    /// As stored in the `server_role` table and named in errors.
    fn name(self) -> &'static str {
        match self {
            Role::KeyServer => "key server",
            Role::ListServer => "list server",
        }
    }

    /// The versions of the migration history (`migrations/*/NNNN_*.sql`) this server applies.
    /// Until 0018 both servers applied every migration; 0019 and 0020 drop from each server's
    /// database the other server's (empty) tables.
    fn migrations(self) -> &'static [i64] {
        match self {
            Role::KeyServer => &[1, 5, 13, 15, 16, 18, 19],
            Role::ListServer => &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 17, 20],
        }
    }

    /// The tables only the other server uses: a database where one of them holds rows was the
    /// other server's, or both servers', and is not opened.
    fn foreign_tables(self) -> &'static [&'static str] {
        match self {
            Role::KeyServer => &[
                "posts",
                "deliveries",
                "suspensions",
                "bounce_scores",
                "outbox",
                "join_requests",
                "held_posts",
                "refused_posts",
                "refusal_digests",
            ],
            Role::ListServer => &[
                "session_keys",
                "destroyed_keys",
                "audit",
                "server_secrets",
                "wrapping_keys",
            ],
        }
    }
}

/// The embedded migration history cut down to `role`'s part. Missing versions are ignored, since
/// a database made before the servers' tables were kept apart has all of them applied.
/// (SQLx's `Migrator` fields are public for its macro; Cargo.lock pins the version.)
fn migrator(all: Migrator, role: Role) -> Migrator {
    Migrator {
        migrations: all
            .migrations
            .iter()
            .filter(|migration| role.migrations().contains(&migration.version))
            .cloned()
            .collect(),
        ignore_missing: true,
        ..all
    }
}

/// The newest migration this build knows, of either server.
fn newest_version(all: &Migrator) -> i64 {
    all.iter()
        .map(|migration| migration.version)
        .max()
        .unwrap_or(0)
}

/// Whether `table` exists in the database's own schema (PostgreSQL: the current schema, not
/// whatever the search path would find).
async fn table_exists(
    conn: &mut AnyConnection,
    backend: Backend,
    table: &str,
) -> Result<bool, StoreError> {
    let sql = match backend {
        Backend::Sqlite => {
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = $1"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
        }
    };
    let row = sqlx::query(sql)
        .bind(table.to_owned())
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.get::<i64, _>("n") > 0)
}

/// Whether `table` exists in the database's own schema and holds a row.
async fn table_used(
    conn: &mut AnyConnection,
    backend: Backend,
    table: &str,
) -> Result<bool, StoreError> {
    if !table_exists(conn, backend, table).await? {
        return Ok(false);
    }
    let qualified = match backend {
        Backend::Sqlite => table.to_owned(),
        Backend::Postgres => format!("{}.{table}", current_schema(conn).await?),
    };
    Ok(
        sqlx::query(&format!("SELECT 1 AS one FROM {qualified} LIMIT 1"))
            .fetch_optional(&mut *conn)
            .await?
            .is_some(),
    )
}

/// PostgreSQL's current schema, quoted as an identifier.
async fn current_schema(conn: &mut AnyConnection) -> Result<String, StoreError> {
    let row = sqlx::query("SELECT quote_ident(current_schema()) AS s")
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.get("s"))
}

/// Refuses a database that is not `role`'s to open: one marked as the other server's, one
/// holding rows in the other server's tables (or, for the key server, a roster without the
/// secret every key server stores at its first start: a list server's), or one migrated by a
/// build newer than this one, whose newest migration is `newest`.
async fn check_role(
    conn: &mut AnyConnection,
    role: Role,
    backend: Backend,
    newest: i64,
) -> Result<(), StoreError> {
    let wrong = |found: String| StoreError::OtherServersDatabase {
        expected: role.name(),
        found,
    };
    if table_exists(conn, backend, "_sqlx_migrations").await? {
        let applied: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
            .fetch_one(&mut *conn)
            .await?
            .get("v");
        if let Some(applied) = applied.filter(|v| *v > newest) {
            return Err(StoreError::NewerDatabase {
                version: applied,
                known: newest,
            });
        }
    }
    if table_exists(conn, backend, "server_role").await? {
        let found: String = sqlx::query("SELECT role FROM server_role")
            .fetch_one(&mut *conn)
            .await?
            .get("role");
        return if found == role.name() {
            Ok(())
        } else {
            Err(wrong(found))
        };
    }
    for table in role.foreign_tables() {
        if table_used(conn, backend, table).await? {
            return Err(wrong(format!("{table} holds rows")));
        }
    }
    if role == Role::KeyServer
        && table_exists(conn, backend, "server_secrets").await?
        && !table_used(conn, backend, "server_secrets").await?
        && table_used(conn, backend, "roster_ops").await?
    {
        return Err(wrong(
            "rosters but no key server secret: a list server's".to_owned(),
        ));
    }
    Ok(())
}

/// Where a store's database is, once opened and migrated for its server.
pub(crate) struct Opened {
    pub(crate) store: Store,
    /// SQLite: the keyring file's path (for a key server), attached to every connection.
    pub(crate) keyring: Option<String>,
}

impl Store {
    /// Opens the database at `url` for `role` and applies that server's migrations:
    /// `sqlite://PATH` (created if missing) or `postgres://…` (the database must exist;
    /// several instances may open it at once, since migrations take PostgreSQL's advisory
    /// lock). A key server's SQLite database has its keyring in a file beside it.
    pub(crate) async fn open_as(url: &str, role: Role) -> Result<Opened, StoreError> {
        sqlx::any::install_default_drivers();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Self::open_postgres(url, role).await;
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
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if !in_memory {
            private_database_files(options.get_filename())?;
        }
        let keyring = match role {
            Role::ListServer => None,
            Role::KeyServer if in_memory => Some(":memory:".to_owned()),
            Role::KeyServer => {
                let keyring = keyring_path(options.get_filename());
                private_database_files(&keyring)?;
                Some(keyring.display().to_string())
            }
        };
        // Migrate over a native connection (creates the files and the schema), then serve
        // queries through the `Any` pool so PostgreSQL can share them.
        let mut conn = options.connect().await?;
        let any_options = AnyConnectOptions::from_str(url)?;
        let all = sqlx::migrate!("./migrations/sqlite");
        let newest = newest_version(&all);
        check_role(
            &mut any_options.connect().await?,
            role,
            Backend::Sqlite,
            newest,
        )
        .await?;
        migrator(all, role).run(&mut conn).await?;
        if let Some(keyring) = &keyring {
            conn.execute(attach_keyring(keyring).as_str()).await?;
            conn.execute(SQLITE_KEYRING_SCHEMA).await?;
        }
        drop(conn);
        let pool = sqlite_pool(&any_options, 8, "FULL", keyring.as_deref()).await?;
        let bookkeeping = sqlite_pool(&any_options, 4, "NORMAL", keyring.as_deref()).await?;
        Ok(Opened {
            store: Store {
                write_turn: Some(Arc::new(Mutex::new(()))),
                pool,
                bookkeeping,
                backend: Backend::Sqlite,
            },
            keyring,
        })
    }

    async fn open_postgres(url: &str, role: Role) -> Result<Opened, StoreError> {
        let mut conn = sqlx::postgres::PgConnectOptions::from_str(url)?
            .connect()
            .await?;
        let all = sqlx::migrate!("./migrations/postgres");
        let newest = newest_version(&all);
        check_role(
            &mut AnyConnectOptions::from_str(url)?.connect().await?,
            role,
            Backend::Postgres,
            newest,
        )
        .await?;
        migrator(all, role).run(&mut conn).await?;
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
        Ok(Opened {
            store: Store {
                write_turn: None,
                pool,
                bookkeeping,
                backend: Backend::Postgres,
            },
            keyring: None,
        })
    }

    /// This process's turn to write, on SQLite (see the `write_turn` field).
    async fn write_turn(&self) -> Option<MutexGuard<'_, ()>> {
        match &self.write_turn {
            Some(turn) => Some(turn.lock().await),
            None => None,
        }
    }
}

/// A pool of SQLite connections in WAL mode whose commits wait for the disk as
/// `synchronous` says (`FULL`: every commit; `NORMAL`: only checkpoints).
async fn sqlite_pool(
    options: &AnyConnectOptions,
    max_connections: u32,
    synchronous: &'static str,
    keyring: Option<&str>,
) -> Result<AnyPool, StoreError> {
    let attach = Arc::new(keyring.map(attach_keyring).unwrap_or_default());
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

impl Store {
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
}

fn inserted(rows_affected: u64) -> Inserted {
    if rows_affected == 1 {
        Inserted::New
    } else {
        Inserted::AlreadyPresent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migration added to the history but to neither server's part would never run; the
    /// two backends' histories must have the same versions.
    #[test]
    fn passwords_are_left_out_of_database_urls() {
        assert_eq!(
            without_password("postgres://hushlist:s3cr@t@db.internal:5432/keys?sslmode=disable"),
            "postgres://hushlist:***@db.internal:5432/keys?sslmode=disable"
        );
        assert_eq!(
            without_password("postgres://hushlist@db/keys"),
            "postgres://hushlist@db/keys"
        );
        assert_eq!(
            without_password("sqlite:///var/lib/hushlist/keys/keyserver.db"),
            "sqlite:///var/lib/hushlist/keys/keyserver.db"
        );
    }

    #[test]
    fn every_migration_belongs_to_a_server_on_both_backends() {
        let versions = |all: Migrator| all.iter().map(|m| m.version).collect::<Vec<_>>();
        let sqlite = versions(sqlx::migrate!("./migrations/sqlite"));
        let postgres = versions(sqlx::migrate!("./migrations/postgres"));
        assert_eq!(sqlite, postgres);
        for version in &sqlite {
            assert!(
                [Role::KeyServer, Role::ListServer]
                    .iter()
                    .any(|role| role.migrations().contains(version)),
                "migration {version} belongs to neither server"
            );
        }
        for role in [Role::KeyServer, Role::ListServer] {
            for version in role.migrations() {
                assert!(sqlite.contains(version), "{role:?} lists missing {version}");
            }
        }
    }
}
