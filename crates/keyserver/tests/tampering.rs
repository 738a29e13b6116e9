//! Issue 18, hole 4: someone who can write the key server's database but has no master key
//! changes a stored key's row. Moved to another list (its list column rewritten), a member of
//! that list would be released the key; given a later expiry, the key would outlive the
//! list's policy. Against the real `hushlist-keyserver` process, with the rows rewritten by
//! SQL on its SQLite file between a stop and a restart: each rewritten row fails to open and
//! is reported as tampering (500 `key_tampered`), never released; the honest row still opens.

mod common;

use std::path::Path;

use common::*;
use hushlist_core::api::purpose;
use hushlist_core::{Address, KeyId};
use hushlist_keyserver::master::MasterKey;
use hushlist_testkit::http::error_code as code;
use rand::rngs::OsRng;
use sqlx::{Connection as _, Row as _};

/// Eve's own list, where she may fetch keys.
const OTHER: &str = "other@lists.example.org";

/// The key server's SQLite file, opened directly.
async fn database(data_dir: &Path) -> sqlx::SqliteConnection {
    let url = format!("sqlite://{}", data_dir.join("keyserver.db").display());
    sqlx::SqliteConnection::connect(&url).await.unwrap()
}

/// Runs `sql` (with `$1` the key id) on the key server's SQLite file; it must change one row.
async fn rewrite_row(data_dir: &Path, sql: &str, key_id: &KeyId) {
    let mut db = database(data_dir).await;
    let done = sqlx::query(sql)
        .bind(key_id.as_str())
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1, "{sql}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_row_moved_to_another_list_or_given_a_later_expiry_is_reported_as_tampered() {
    let dir = tempfile::tempdir().unwrap();
    let p = people();
    let http = reqwest::Client::new();
    let (mut child, base) = spawn_binary(dir.path(), &[]);
    // Keys of this list live an hour.
    create_list_with_key_lifetime_in(&http, &base, dir.path(), 3600).await;
    let other = Address::parse(OTHER).unwrap();
    genesis_at(
        &http,
        &base,
        &admin_token(dir.path()),
        &p.eve,
        other.clone(),
    )
    .await;

    let server_cert = server_cert_at(&http, &base).await;
    let (moved, _) = deposit_at(&http, &base, &p.olivia, &server_cert).await;
    let (extended, _) = deposit_at(&http, &base, &p.olivia, &server_cert).await;
    let (honest, honest_key) = deposit_at(&http, &base, &p.olivia, &server_cert).await;
    child.kill().unwrap();
    child.wait().unwrap();

    // Moved whole: the roster seq too, or Eve's younger list would refuse it as posted later.
    rewrite_row(
        dir.path(),
        &format!("UPDATE session_keys SET list = '{OTHER}', roster_seq = 0 WHERE key_id = $1"),
        &moved,
    )
    .await;
    rewrite_row(
        dir.path(),
        "UPDATE session_keys SET expires_at = expires_at + 365 * 86400 WHERE key_id = $1",
        &extended,
    )
    .await;

    let (mut child, base) = spawn_binary(dir.path(), &[]);
    // Eve, on her own list, asks for the key moved there.
    let request = signed(
        &p.eve,
        &purpose::fetch_key(&other, &moved),
        &serde_json::json!({}),
    );
    let (status, body) = post_json(
        &http,
        format!("{base}/v1/lists/{OTHER}/keys/{moved}"),
        &request,
        None,
    )
    .await
    .unwrap();
    assert_eq!((status, code(&body)), (500, "key_tampered"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(moved.as_str())),
        "the message names the key: {body}"
    );
    // Bob, a member, asks for the key whose expiry was pushed back.
    let request = fetch_request(&p.bob, &extended);
    let (status, body) = post_json(
        &http,
        format!("{base}/v1/lists/{LIST}/keys/{extended}"),
        &request,
        None,
    )
    .await
    .unwrap();
    assert_eq!((status, code(&body)), (500, "key_tampered"), "{body}");
    // The row nobody touched still opens.
    let request = fetch_request(&p.bob, &honest);
    fetch_expecting(&http, &base, &p.bob, &request, &honest, &honest_key).await;
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The associated data the key server bound rows sealed directly under the master key to
/// (sealing 2, before wrapping keys), written out here as stores hold it: its key id, list,
/// depositor, roster seq at deposit and expiry (none here), each length-prefixed.
fn row_bound_context(key_id: &str, list: &str, sender: &str, roster_seq: i64) -> Vec<u8> {
    let mut context = b"hushlist session key row v2".to_vec();
    let seq = roster_seq.to_be_bytes();
    for field in [
        key_id.as_bytes(),
        list.as_bytes(),
        sender.as_bytes(),
        &seq,
        &[0],
    ] {
        context.extend_from_slice(&(field.len() as u32).to_be_bytes());
        context.extend_from_slice(field);
    }
    context
}

/// A store from before wrapping keys holds keys sealed directly under the master key: bound
/// to their key id alone (what migration 0013 marks as sealing 1), or to their whole row
/// (sealing 2). They still open, and the sweep re-seals them bound to their row, under a
/// wrapping key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_sealed_directly_under_the_master_key_still_open_and_the_sweep_moves_them_under_wrapping_keys()
 {
    let dir = tempfile::tempdir().unwrap();
    let p = people();
    let http = reqwest::Client::new();
    let (mut child, base) = spawn_binary(dir.path(), &[]);
    create_list_in(&http, &base, dir.path()).await;
    let server_cert = server_cert_at(&http, &base).await;
    let keys = [
        deposit_at(&http, &base, &p.olivia, &server_cert).await,
        deposit_at(&http, &base, &p.olivia, &server_cert).await,
    ];
    child.kill().unwrap();
    child.wait().unwrap();

    // The rows as the key server sealed them before.
    let master = MasterKey::from_hex(MASTER_HEX).unwrap();
    let mut db = database(dir.path()).await;
    let mut old_nonces = Vec::new();
    for (sealing, (key_id, session_key)) in [1i64, 2].into_iter().zip(&keys) {
        let row = sqlx::query("SELECT sender, roster_seq FROM session_keys WHERE key_id = $1")
            .bind(key_id.as_str())
            .fetch_one(&mut db)
            .await
            .unwrap();
        let context = match sealing {
            1 => key_id.as_str().as_bytes().to_vec(),
            _ => row_bound_context(
                key_id.as_str(),
                LIST,
                row.get("sender"),
                row.get("roster_seq"),
            ),
        };
        let old = master.seal(OsRng, session_key.as_bytes(), &context);
        sqlx::query(
            "UPDATE session_keys SET sealing = $2, master_key_id = $3, nonce = $4, sealed_key = $5, \
             wrapping_key_id = NULL WHERE key_id = $1",
        )
        .bind(key_id.as_str())
        .bind(sealing)
        .bind(master.id())
        .bind(&old.nonce)
        .bind(&old.ciphertext)
        .execute(&mut db)
        .await
        .unwrap();
        old_nonces.push(old.nonce);
    }
    drop(db);

    let (mut child, base) = spawn_binary(dir.path(), &["--sweep-secs", "1"]);
    for (key_id, session_key) in &keys {
        let request = fetch_request(&p.bob, key_id);
        fetch_expecting(&http, &base, &p.bob, &request, key_id, session_key).await;
    }
    // The first sweep runs at start; give it a moment past its one-second tick.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let mut db = database(dir.path()).await;
    for ((key_id, session_key), old_nonce) in keys.iter().zip(&old_nonces) {
        let row = sqlx::query(
            "SELECT sealing, nonce, wrapping_key_id FROM session_keys WHERE key_id = $1",
        )
        .bind(key_id.as_str())
        .fetch_one(&mut db)
        .await
        .unwrap();
        assert_eq!(
            row.get::<i64, _>("sealing"),
            3,
            "re-sealed bound to its row, under a wrapping key"
        );
        assert!(row.get::<Option<String>, _>("wrapping_key_id").is_some());
        assert_ne!(&row.get::<Vec<u8>, _>("nonce"), old_nonce);
        let request = fetch_request(&p.rita, key_id);
        fetch_expecting(&http, &base, &p.rita, &request, key_id, session_key).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
