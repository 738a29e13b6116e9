//! Throwaway databases for tests and benchmarks: a fresh SQLite file or a fresh PostgreSQL
//! database, removed when dropped, so every run starts empty and runs can overlap.

use std::str::FromStr as _;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, Executor as _};

use crate::{KeyStore, ListStore, StoreError};

/// Where the test PostgreSQL is: `$HUSHLIST_TEST_POSTGRES`, else the server `.ci/run` sets up
/// on loopback.
pub fn postgres_admin_url() -> String {
    std::env::var("HUSHLIST_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres:hushlist@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists until this is dropped.
pub struct ScratchDb {
    url: String,
    kind: Kind,
}

enum Kind {
    /// Held for its Drop, which removes the file.
    Sqlite {
        _dir: tempfile::TempDir,
    },
    Postgres {
        admin_url: String,
        name: String,
    },
}

impl ScratchDb {
    /// A new SQLite database file in a temporary directory.
    pub fn sqlite() -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        Ok(ScratchDb {
            url: format!("sqlite://{}", dir.path().join("store.db").display()),
            kind: Kind::Sqlite { _dir: dir },
        })
    }

    /// A new, empty database on the PostgreSQL server at [`postgres_admin_url`].
    pub async fn postgres() -> Result<Self, StoreError> {
        let admin_url = postgres_admin_url();
        let name = format!("hushlist_scratch_{:016x}", rand_suffix());
        let mut admin = PgConnectOptions::from_str(&admin_url)?.connect().await?;
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await?;
        admin.close().await?;
        let url = PgConnectOptions::from_str(&admin_url)?
            .database(&name)
            .to_url_lossy()
            .to_string();
        Ok(ScratchDb {
            url,
            kind: Kind::Postgres { admin_url, name },
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens it as a key server's database.
    pub async fn open_keys(&self) -> Result<KeyStore, StoreError> {
        KeyStore::open(&self.url).await
    }

    /// Opens it as a list server's database.
    pub async fn open_lists(&self) -> Result<ListStore, StoreError> {
        ListStore::open(&self.url).await
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let Kind::Postgres { admin_url, name } = &self.kind else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Drop may run inside an async runtime; the database is dropped from a thread of
        // its own, with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = PgConnectOptions::from_str(&admin_url)
                    .map_err(std::io::Error::other)?
                    .connect()
                    .await
                    .map_err(std::io::Error::other)?;
                admin
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(())
            })
        });
        let _ = dropped.join();
    }
}

/// Enough randomness to keep concurrent runs' database names apart.
fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

impl KeyStore {
    /// Adds `copies` rows to the session-key table, each a copy of one stored row under the
    /// key id `bulk-N`: a table the size of a large installation's, for measuring a server's
    /// memory and lookups at that size without depositing every key. A copy cannot be opened
    /// (the key id is bound into its sealing). Returns how many rows were added: none when
    /// the table is empty.
    pub async fn copy_session_keys(&self, copies: u64) -> Result<u64, StoreError> {
        let copies = i64::try_from(copies).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
             INSERT INTO session_keys (key_id, list, sender, roster_seq, created_at, expires_at, \
             master_key_id, nonce, sealed_key, sealing, wrapping_key_id) \
             SELECT 'bulk-' || n.i, k.list, k.sender, k.roster_seq, k.created_at, k.expires_at, \
             k.master_key_id, k.nonce, k.sealed_key, k.sealing, k.wrapping_key_id \
             FROM n, (SELECT * FROM session_keys LIMIT 1) AS k",
        )
        .bind(copies)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
