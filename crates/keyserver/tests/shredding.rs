//! Crypto-shredding against backups: the real `hushlist-keyserver` process, a copy of its key
//! database taken before a revocation (or an expiry), put back afterwards beside the current
//! keyring as an operator restoring last night's backup would (on SQLite the keyring is a file
//! of its own; on PostgreSQL the `wrapping_keys` table, left out of the dump). The copy still holds the
//! destroyed key's row, but its wrapping key is gone from the keyring, so not even the server
//! holding the master key can open it again.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use common::*;
use hushlist_keyserver::master::{MasterKeyError, SealedBlob};
use hushlist_store::KeyStore;
use hushlist_store::scratch::{ScratchDb, postgres_admin_url};
use hushlist_testkit::http::error_code as code;
use sqlx::Connection as _;

const DATABASE: &str = "keyserver.db";
const KEYRING: &str = "keyserver.db.keyring";

/// Copies the files of the SQLite database `name` (with its -wal and -shm) from `from` to
/// `to`, replacing what `to` had under that name.
fn copy_database(name: &str, from: &Path, to: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let target = to.join(format!("{name}{suffix}"));
        let _ = std::fs::remove_file(&target);
        let source = from.join(format!("{name}{suffix}"));
        if source.exists() {
            std::fs::copy(&source, &target).unwrap();
        }
    }
}

fn stop(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

async fn fetch_status(
    http: &reqwest::Client,
    base: &str,
    key_id: &hushlist_core::KeyId,
) -> (u16, serde_json::Value) {
    post_json(
        http,
        format!("{base}/v1/lists/{LIST}/keys/{key_id}"),
        &fetch_request(&people().rita, key_id),
        None,
    )
    .await
    .unwrap()
}

/// Whether any file of `dir` holds `needle`.
fn files_hold(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        path.is_file()
            && std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_before_a_revocation_cannot_give_the_revoked_key_back() {
    let dir = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let p = people();
    let http = reqwest::Client::new();
    let (child, base) = spawn_binary(dir.path(), &[]);
    create_list_in(&http, &base, dir.path()).await;
    let server_cert = server_cert_at(&http, &base).await;
    let (revoked, _) = deposit_at(&http, &base, &p.bob, &server_cert).await;
    let (kept, kept_key) = deposit_at(&http, &base, &p.bob, &server_cert).await;
    stop(child);
    copy_database(DATABASE, dir.path(), backup.path());

    let (child, base) = spawn_binary(dir.path(), &[]);
    let (status, body) = revoke_at(&http, &base, &p.bob, &revoked).await;
    assert_eq!(status, 200, "{body}");
    // The other key of the same list and day, re-sealed under the new wrapping key, reads.
    let request = fetch_request(&p.rita, &kept);
    fetch_expecting(&http, &base, &p.rita, &request, &kept, &kept_key).await;
    stop(child);

    // Last night's backup of the key database, with the current keyring.
    copy_database(DATABASE, backup.path(), dir.path());
    let (child, base) = spawn_binary(dir.path(), &[]);
    let (status, body) = fetch_status(&http, &base, &revoked).await;
    assert_eq!(
        status, 410,
        "the revoked key came back from the backup: {body}"
    );
    assert_eq!(code(&body), "key_destroyed", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("wrapping key"), "{message}");
    // The backup's copy of the other key was sealed under the same, destroyed, wrapping key:
    // restoring a copy older than a revocation loses the keys of that list and day it holds.
    let (status, body) = fetch_status(&http, &base, &kept).await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(code(&body), "key_destroyed", "{body}");
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_before_an_expiry_cannot_give_the_expired_key_back() {
    let dir = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let p = people();
    let http = reqwest::Client::new();
    let (child, base) = spawn_binary(dir.path(), &[]);
    create_list_with_key_lifetime_in(&http, &base, dir.path(), 2).await;
    let server_cert = server_cert_at(&http, &base).await;
    let (expiring, session_key) = deposit_at(&http, &base, &p.bob, &server_cert).await;
    stop(child);
    copy_database(DATABASE, dir.path(), backup.path());
    copy_database(KEYRING, dir.path(), backup.path());

    // The sweep destroys the key, then its day's wrapping key, which no key needs any more.
    let (child, _) = spawn_binary(dir.path(), &["--sweep-secs", "1"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop(child);

    // What the backup holds: the row, sealed under a wrapping key, not the master key.
    let url = |dir: &Path| format!("sqlite://{}", dir.join(DATABASE).display());
    let old = KeyStore::open(&url(backup.path())).await.unwrap();
    let row = old.session_key(expiring.as_str()).await.unwrap().unwrap();
    let wrapping_key_id = row
        .wrapping_key_id
        .clone()
        .expect("sealed under a wrapping key");
    let old_wrapping_key = old.wrapping_key(&wrapping_key_id).await.unwrap().unwrap();
    let sealed_row = SealedBlob {
        master_key_id: master().id().to_owned(),
        nonce: row.nonce.clone(),
        ciphertext: row.sealed_key.clone(),
    };
    assert!(matches!(
        master().open(&sealed_row, row.key_id.as_bytes()),
        Err(MasterKeyError::Corrupt)
    ));
    drop(old);

    // Restored beside the current keyring, the row's wrapping key is not there, and no file
    // of the data directory holds it any more.
    copy_database(DATABASE, backup.path(), dir.path());
    let restored = KeyStore::open(&url(dir.path())).await.unwrap();
    assert!(
        restored
            .session_key(expiring.as_str())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(restored.wrapping_key(&wrapping_key_id).await.unwrap(), None);
    drop(restored);
    assert!(
        !files_hold(dir.path(), &old_wrapping_key.sealed),
        "the destroyed wrapping key's sealed bytes are still in a file of the data directory"
    );
    assert!(
        !files_hold(dir.path(), session_key.as_bytes()),
        "the session key is in a file of the data directory in clear"
    );
}

/// The same on PostgreSQL, where the "backup" is a dump of the database's tables but for
/// `wrapping_keys` (`pg_dump --exclude-table-data=wrapping_keys`, as the deployment guide
/// asks), restored over the database after the revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_dump_taken_before_a_revocation_cannot_give_the_revoked_key_back() {
    let db = ScratchDb::postgres().await.unwrap_or_else(|e| {
        panic!(
            "no PostgreSQL at {} ({e}); run .ci/run once, or set HUSHLIST_TEST_POSTGRES",
            postgres_admin_url()
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let p = people();
    let http = reqwest::Client::new();
    let (child, base) = spawn_binary(dir.path(), &["--database", db.url()]);
    create_list_in(&http, &base, dir.path()).await;
    let server_cert = server_cert_at(&http, &base).await;
    let (revoked, _) = deposit_at(&http, &base, &p.bob, &server_cert).await;
    let (kept, kept_key) = deposit_at(&http, &base, &p.bob, &server_cert).await;
    let mut sql = sqlx::PgConnection::connect(db.url()).await.unwrap();
    for statement in [
        "CREATE TABLE dumped_session_keys AS SELECT * FROM session_keys",
        "CREATE TABLE dumped_destroyed_keys AS SELECT * FROM destroyed_keys",
    ] {
        sqlx::query(statement).execute(&mut sql).await.unwrap();
    }

    let (status, body) = revoke_at(&http, &base, &p.bob, &revoked).await;
    assert_eq!(status, 200, "{body}");
    let request = fetch_request(&p.rita, &kept);
    fetch_expecting(&http, &base, &p.rita, &request, &kept, &kept_key).await;
    stop(child);

    for statement in [
        "DELETE FROM session_keys",
        "INSERT INTO session_keys SELECT * FROM dumped_session_keys",
        "DELETE FROM destroyed_keys",
        "INSERT INTO destroyed_keys SELECT * FROM dumped_destroyed_keys",
    ] {
        sqlx::query(statement).execute(&mut sql).await.unwrap();
    }
    drop(sql);
    let (child, base) = spawn_binary(dir.path(), &["--database", db.url()]);
    for key_id in [&revoked, &kept] {
        let (status, body) = fetch_status(&http, &base, key_id).await;
        assert_eq!(status, 410, "a key came back from the dump: {body}");
        assert_eq!(code(&body), "key_destroyed", "{body}");
    }
    stop(child);
}
