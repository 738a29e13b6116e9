//! Store behaviour every backend must share, run on SQLite and on PostgreSQL (the server at
//! `$HUSHLIST_TEST_POSTGRES`, which `.ci/run` starts on loopback): each test gets a fresh
//! database of each kind.

use std::sync::Arc;

use hushlist_core::audit::AuditHash;
use hushlist_core::roster::{Change, MemberEntry, Policy, Role, Roster, SignedOp, sign_genesis};
use hushlist_core::{Address, SecretIdentity};
use hushlist_store::membership::{
    JoinFiling, JoinLimits, JoinRequestRow, OutboxMessage, RefusedPost, SentProbe,
};
use hushlist_store::rosters::RosterCache;
use hushlist_store::scratch::ScratchDb;
use hushlist_store::{
    AuditEntry, ChainedAuditEntry, DeliveryCounts, DeliveryState, Inserted, KeyStore, ListStore,
    SealedSecret, SessionKeyInserted, SessionKeyRow, Store, StoreError, StoredOp, WrappingKeyRow,
};
use rand::rngs::OsRng;
use sqlx::Connection as _;

/// Runs each conformance test once per backend.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let db = hushlist_store::scratch::ScratchDb::sqlite().unwrap();
                    super::$test(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let db = hushlist_store::scratch::ScratchDb::postgres().await.unwrap_or_else(|e| {
                        panic!(
                            "no PostgreSQL at {} ({e}); run .ci/run once, or set HUSHLIST_TEST_POSTGRES",
                            hushlist_store::scratch::postgres_admin_url()
                        )
                    });
                    super::$test(&db).await;
                }
            )*
        }
    };
}

conformance!(
    roster_ops_append_once_per_seq_and_read_back_in_order,
    session_keys_insert_once_and_destruction_leaves_only_a_tombstone,
    a_key_digest_is_stored_once_among_live_and_destroyed_keys,
    nonces_are_single_use_until_pruned,
    audit_entries_come_back_in_order_and_secrets_are_first_writer_wins,
    audit_records_appended_at_once_are_each_kept_once,
    two_instances_appending_to_one_audit_chain_keep_it_whole,
    audit_records_from_before_chains_are_chained_when_the_store_opens,
    data_survives_reopening,
    a_post_and_its_deliveries_are_stored_together,
    deliveries_are_claimed_once_per_lease_and_end_delivered_or_failed,
    suspensions_are_per_list_and_resume_removes_them,
    bounce_scores_are_compare_and_set_and_probes_are_found_by_token,
    outbox_messages_are_claimed_once_per_lease_until_sent_or_failed,
    join_requests_are_confirmed_kept_per_key_lapse_and_settle_with_their_answer,
    held_posts_stay_out_of_the_queue_and_archive_until_released_or_discarded,
    concurrent_claims_from_two_instances_take_each_delivery_once,
    request_counts_are_per_signer_and_window_and_pruned,
    a_cold_roster_cache_replays_the_log_once_for_requests_arriving_together,
    session_keys_are_copied_in_bulk_under_new_key_ids,
    refusals_reach_owners_in_one_digest_per_interval,
    wrapping_keys_serve_their_list_and_day_and_go_once_unused,
    each_server_refuses_the_other_servers_database,
    a_database_from_before_the_split_keeps_its_data_and_drops_the_other_servers_tables,
    a_database_with_both_servers_data_from_before_the_split_is_refused_by_both,
    a_database_migrated_by_a_newer_build_is_refused,
    a_list_servers_database_from_before_the_split_with_rosters_but_no_posts_is_refused_by_the_key_server,
    on_postgresql_a_key_server_in_its_own_schema_leaves_the_list_servers_tables_in_another_alone,
);

fn key_row(key_id: &str) -> SessionKeyRow {
    SessionKeyRow {
        key_id: key_id.into(),
        list: "team@lists.example.org".into(),
        sender: "FPR".into(),
        roster_seq: 3,
        created_at: 100,
        expires_at: Some(200),
        sealing: 2,
        master_key_id: "mk1".into(),
        nonce: vec![1; 12],
        sealed_key: vec![2; 48],
        wrapping_key_id: None,
        key_digest: Some(format!("digest of {key_id}").into_bytes()),
    }
}

fn wrapping_key(id: &str, day: i64, expiring: bool) -> WrappingKeyRow {
    WrappingKeyRow {
        id: id.into(),
        list: "team@lists.example.org".into(),
        day,
        expiring,
        retired: false,
        created_at: 100,
        master_key_id: "mk1".into(),
        nonce: vec![3; 12],
        sealed: vec![4; 48],
    }
}

/// A row sealed under the wrapping key `wrapping_key_id`.
fn wrapped_row(key_id: &str, wrapping_key_id: &str) -> SessionKeyRow {
    SessionKeyRow {
        sealing: 3,
        master_key_id: format!("{wrapping_key_id}-id"),
        wrapping_key_id: Some(wrapping_key_id.into()),
        ..key_row(key_id)
    }
}

async fn wrapping_keys_serve_their_list_and_day_and_go_once_unused(db: &ScratchDb) {
    let store = db.open_keys().await.unwrap();
    let w1 = wrapping_key("w1", 5, true);
    store.add_wrapping_key(&w1, None).await.unwrap();
    store
        .add_wrapping_key(&wrapping_key("other-day", 6, true), None)
        .await
        .unwrap();
    let current = |day, expiring| {
        let store = store.clone();
        async move {
            store
                .current_wrapping_key("team@lists.example.org", day, expiring)
                .await
                .unwrap()
                .map(|key| key.id)
        }
    };
    assert_eq!(current(5, true).await.as_deref(), Some("w1"));
    assert_eq!(current(5, false).await, None);
    assert_eq!(store.wrapping_key("w1").await.unwrap(), Some(w1.clone()));

    // A row goes in only under a wrapping key the keyring holds.
    assert_eq!(
        store
            .insert_session_key(&wrapped_row("k1", "w1"))
            .await
            .unwrap(),
        SessionKeyInserted::New
    );
    assert!(matches!(
        store.insert_session_key(&wrapped_row("k2", "missing")).await,
        Err(StoreError::WrappingKeyGone(id)) if id == "missing"
    ));
    assert_eq!(store.session_key("k2").await.unwrap(), None);
    assert_eq!(
        store
            .insert_session_key(&wrapped_row("k1", "w1"))
            .await
            .unwrap(),
        SessionKeyInserted::KeyIdTaken
    );
    assert_eq!(
        store.session_key("k1").await.unwrap(),
        Some(wrapped_row("k1", "w1"))
    );

    // Only the unused key of another day goes.
    assert_eq!(store.delete_unused_wrapping_keys(None).await.unwrap(), 1);
    assert_eq!(store.wrapping_key("other-day").await.unwrap(), None);

    // A revocation's new key retires the old: new rows go under the new one, and the rows
    // under the old one are listed to re-seal.
    store
        .add_wrapping_key(&wrapping_key("w2", 5, true), Some("w1"))
        .await
        .unwrap();
    assert_eq!(current(5, true).await.as_deref(), Some("w2"));
    assert!(store.wrapping_key("w1").await.unwrap().unwrap().retired);
    let to_reseal = store.session_keys_to_reseal(3, 10).await.unwrap();
    assert_eq!(to_reseal, vec![wrapped_row("k1", "w1")]);
    assert_eq!(
        store.delete_unused_wrapping_keys(Some("w1")).await.unwrap(),
        0
    );

    // Re-sealing under a key the keyring no longer holds changes nothing.
    let mut moved = wrapped_row("k1", "missing");
    moved.nonce = vec![9; 12];
    assert_eq!(
        store
            .reseal_session_keys(&[(moved.clone(), vec![1; 12])])
            .await
            .unwrap(),
        0
    );
    moved.wrapping_key_id = Some("w2".into());
    // Nor one whose nonce changed since it was read.
    assert_eq!(
        store
            .reseal_session_keys(&[(moved.clone(), vec![7; 12]), (moved.clone(), vec![1; 12])])
            .await
            .unwrap(),
        1
    );
    assert!(
        store
            .session_keys_wrapped_by("w1", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.session_keys_wrapped_by("w2", 10).await.unwrap(),
        vec![moved]
    );
    assert!(
        store
            .session_keys_to_reseal(3, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.delete_unused_wrapping_keys(Some("w2")).await.unwrap(),
        0
    );
    assert_eq!(
        store.delete_unused_wrapping_keys(Some("w1")).await.unwrap(),
        1
    );
    assert_eq!(store.wrapping_key("w1").await.unwrap(), None);

    // Rotating the master key re-seals wrapping keys.
    let w2 = store.wrapping_key("w2").await.unwrap().unwrap();
    assert_eq!(
        store.wrapping_keys_to_reseal("mk2", 10).await.unwrap(),
        vec![w2]
    );
    let resealed = SealedSecret {
        master_key_id: "mk2".into(),
        nonce: vec![5; 12],
        sealed: vec![6; 48],
    };
    assert!(
        !store
            .reseal_wrapping_key("w2", "mk0", &resealed)
            .await
            .unwrap()
    );
    assert!(
        store
            .reseal_wrapping_key("w2", "mk1", &resealed)
            .await
            .unwrap()
    );
    assert!(
        store
            .wrapping_keys_to_reseal("mk2", 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Once its last row is destroyed, the key goes, and its bytes are erased.
    assert!(
        store
            .destroy_session_key("k1", "revoked", 150)
            .await
            .unwrap()
    );
    assert_eq!(store.delete_unused_wrapping_keys(None).await.unwrap(), 1);
    assert_eq!(store.wrapping_key("w2").await.unwrap(), None);
    assert!(store.erase_deleted_rows().await.unwrap());
}

async fn roster_ops_append_once_per_seq_and_read_back_in_order(db: &ScratchDb) {
    let store = db.open_lists().await.unwrap();
    let op = |seq, b: u8| StoredOp {
        seq,
        body: vec![b],
        signature: vec![b, b],
    };
    assert_eq!(
        store.append_roster_op("l", &op(0, 1)).await.unwrap(),
        Inserted::New
    );
    assert_eq!(
        store.append_roster_op("l", &op(1, 2)).await.unwrap(),
        Inserted::New
    );
    assert_eq!(
        store.append_roster_op("l", &op(1, 9)).await.unwrap(),
        Inserted::AlreadyPresent
    );
    assert_eq!(
        store.append_roster_op("other", &op(0, 5)).await.unwrap(),
        Inserted::New
    );
    assert_eq!(
        store.roster_ops("l", -1, 100).await.unwrap(),
        vec![op(0, 1), op(1, 2)]
    );
    assert_eq!(store.roster_ops("l", 0, 100).await.unwrap(), vec![op(1, 2)]);
    assert_eq!(store.roster_ops("l", -1, 1).await.unwrap(), vec![op(0, 1)]);
    assert_eq!(store.lists().await.unwrap(), ["l", "other"]);
}

async fn session_keys_insert_once_and_destruction_leaves_only_a_tombstone(db: &ScratchDb) {
    let store = db.open_keys().await.unwrap();
    assert_eq!(
        store.insert_session_key(&key_row("k1")).await.unwrap(),
        SessionKeyInserted::New
    );
    assert_eq!(
        store.insert_session_key(&key_row("k1")).await.unwrap(),
        SessionKeyInserted::KeyIdTaken
    );
    assert_eq!(store.session_key("k1").await.unwrap(), Some(key_row("k1")));
    assert_eq!(
        store.expired_keys(199, 10).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(store.expired_keys(200, 10).await.unwrap(), ["k1"]);
    assert_eq!(store.count_session_keys().await.unwrap(), 1);

    assert!(
        store
            .destroy_session_key("k1", "revoked", 150)
            .await
            .unwrap()
    );
    assert!(
        !store
            .destroy_session_key("k1", "revoked", 151)
            .await
            .unwrap()
    );
    assert_eq!(store.session_key("k1").await.unwrap(), None);
    let tomb = store.destroyed_key("k1").await.unwrap().unwrap();
    assert_eq!((tomb.reason.as_str(), tomb.destroyed_at), ("revoked", 150));
    // A destroyed id can never be filled again.
    assert_eq!(
        store.insert_session_key(&key_row("k1")).await.unwrap(),
        SessionKeyInserted::KeyIdTaken
    );
    assert_eq!(store.count_session_keys().await.unwrap(), 0);
}

async fn a_key_digest_is_stored_once_among_live_and_destroyed_keys(db: &ScratchDb) {
    let store = db.open_keys().await.unwrap();
    let with_digest = |key_id: &str, digest: Option<&str>| SessionKeyRow {
        key_digest: digest.map(|d| d.as_bytes().to_vec()),
        ..key_row(key_id)
    };
    assert_eq!(
        store
            .insert_session_key(&with_digest("k1", Some("d1")))
            .await
            .unwrap(),
        SessionKeyInserted::New
    );
    assert_eq!(
        store
            .insert_session_key(&with_digest("k2", Some("d1")))
            .await
            .unwrap(),
        SessionKeyInserted::KeyDigestTaken
    );
    assert_eq!(store.session_key("k2").await.unwrap(), None);
    // Under a wrapping key the keyring holds, the digest is still what conflicts.
    store
        .add_wrapping_key(&wrapping_key("w1", 5, true), None)
        .await
        .unwrap();
    let wrapped = SessionKeyRow {
        key_digest: Some(b"d1".to_vec()),
        ..wrapped_row("k3", "w1")
    };
    assert_eq!(
        store.insert_session_key(&wrapped).await.unwrap(),
        SessionKeyInserted::KeyDigestTaken
    );
    // Rows from before digests were kept have none, and do not conflict.
    for key_id in ["old1", "old2"] {
        assert_eq!(
            store
                .insert_session_key(&with_digest(key_id, None))
                .await
                .unwrap(),
            SessionKeyInserted::New
        );
    }
    // A destroyed key's digest stays taken.
    assert!(
        store
            .destroy_session_key("k1", "revoked", 150)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .insert_session_key(&with_digest("k4", Some("d1")))
            .await
            .unwrap(),
        SessionKeyInserted::KeyDigestTaken
    );
    assert_eq!(
        store
            .insert_session_key(&with_digest("k4", Some("d2")))
            .await
            .unwrap(),
        SessionKeyInserted::New
    );
    assert!(
        store
            .destroy_session_key("old1", "expired", 160)
            .await
            .unwrap()
    );
    assert_eq!(store.count_session_keys().await.unwrap(), 2);
}

async fn nonces_are_single_use_until_pruned(db: &ScratchDb) {
    let store = db.open_keys().await.unwrap();
    assert!(store.remember_nonce("A", "n1", 10).await.unwrap());
    assert!(!store.remember_nonce("A", "n1", 10).await.unwrap());
    assert!(store.remember_nonce("B", "n1", 10).await.unwrap());
    assert_eq!(store.prune_nonces(11).await.unwrap(), 2);
    assert!(store.remember_nonce("A", "n1", 20).await.unwrap());
}

async fn audit_entries_come_back_in_order_and_secrets_are_first_writer_wins(db: &ScratchDb) {
    let store = db.open_keys().await.unwrap();
    for (i, action) in ["deposit", "release", "refuse"].iter().enumerate() {
        let entry = AuditEntry {
            key_id: "k".into(),
            list: "l".into(),
            at: i as i64,
            actor: "FPR".into(),
            action: (*action).into(),
            outcome: "ok".into(),
            detail: None,
        };
        store.append_audit(&entry).await.unwrap();
    }
    let actions: Vec<_> = store
        .audit_log("k")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.entry.action)
        .collect();
    assert_eq!(actions, ["deposit", "release", "refuse"]);

    let first = SealedSecret {
        master_key_id: "mk".into(),
        nonce: vec![1],
        sealed: vec![2],
    };
    let second = SealedSecret {
        sealed: vec![3],
        ..first.clone()
    };
    assert_eq!(
        store.put_server_secret("id", &first).await.unwrap(),
        Inserted::New
    );
    assert_eq!(
        store.put_server_secret("id", &second).await.unwrap(),
        Inserted::AlreadyPresent
    );
    assert_eq!(store.server_secret("id").await.unwrap(), Some(first));
}

async fn audit_records_appended_at_once_are_each_kept_once(db: &ScratchDb) {
    // Many requests at once: their records are committed in groups, and each caller is
    // answered only once its record is in.
    let store = db.open_keys().await.unwrap();
    let writers: Vec<_> = (0..300)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let entry = AuditEntry {
                    key_id: format!("k{}", i % 3),
                    list: "l".into(),
                    at: i,
                    actor: format!("FPR{i}"),
                    action: "release".into(),
                    outcome: "released".into(),
                    detail: None,
                };
                store.append_audit(&entry).await.unwrap();
                // Answered means stored: this instance reads it back at once.
                assert!(
                    store
                        .audit_log(&entry.key_id)
                        .await
                        .unwrap()
                        .iter()
                        .any(|e| e.entry.actor == entry.actor)
                );
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let mut actors: Vec<String> = Vec::new();
    for key in ["k0", "k1", "k2"] {
        let log = store.audit_log(key).await.unwrap();
        assert_eq!(log.len(), 100, "{key}");
        // Records of one key id committed in one group still chain one after another.
        assert_chained(&log);
        actors.extend(log.into_iter().map(|e| e.entry.actor));
    }
    actors.sort();
    actors.dedup();
    assert_eq!(actors.len(), 300);
}

/// A key id's records numbered from 1, each hashing the one before it.
fn assert_chained(log: &[ChainedAuditEntry]) {
    let mut previous = AuditHash::START;
    for (i, record) in log.iter().enumerate() {
        assert_eq!(record.seq, i as i64 + 1);
        let expected = previous.next(record.seq as u64, &record.entry.fields());
        assert_eq!(record.hash, expected, "record {}", record.seq);
        previous = record.hash;
    }
}

fn release_by(key_id: &str, actor: String, at: i64) -> AuditEntry {
    AuditEntry {
        key_id: key_id.into(),
        list: "l".into(),
        at,
        actor,
        action: "release".into(),
        outcome: "released".into(),
        detail: Some(format!("at {at}")),
    }
}

async fn two_instances_appending_to_one_audit_chain_keep_it_whole(db: &ScratchDb) {
    // Two key server instances on one database append to the same key's chain at once: each
    // group commit reads the head and inserts after it, and the one that loses the race for
    // a seq tries again, so the chain has every record once and no fork.
    let instances = [db.open_keys().await.unwrap(), db.open_keys().await.unwrap()];
    let writers: Vec<_> = (0..200)
        .map(|i| {
            let store = instances[i % 2].clone();
            tokio::spawn(async move {
                store
                    .append_audit(&release_by("k", format!("FPR{i}"), i as i64))
                    .await
                    .unwrap();
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let log = instances[0].audit_log("k").await.unwrap();
    assert_eq!(log.len(), 200);
    assert_chained(&log);
    let mut actors: Vec<_> = log.iter().map(|e| e.entry.actor.clone()).collect();
    actors.sort();
    actors.dedup();
    assert_eq!(actors.len(), 200);
    assert_eq!(instances[1].audit_log("k").await.unwrap(), log);
}

async fn audit_records_from_before_chains_are_chained_when_the_store_opens(db: &ScratchDb) {
    let store = db.open_keys().await.unwrap();
    store
        .append_audit(&release_by("k1", "A".into(), 1))
        .await
        .unwrap();
    drop(store);
    // Records as a key server before migration 0015 wrote them: no seq, no hash.
    let mut conn = sqlx::AnyConnection::connect(db.url()).await.unwrap();
    for (key_id, actor) in [("k1", "B"), ("k2", "C"), ("k1", "D"), ("k2", "E")] {
        sqlx::query(
            "INSERT INTO audit (key_id, list, at, actor, action, outcome, detail) VALUES ($1, 'l', 2, $2, 'release', 'released', NULL)",
        )
        .bind(key_id)
        .bind(actor)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    conn.close().await.unwrap();

    let store = db.open_keys().await.unwrap();
    for (key_id, actors) in [("k1", ["A", "B", "D"].as_slice()), ("k2", &["C", "E"])] {
        let log = store.audit_log(key_id).await.unwrap();
        assert_chained(&log);
        let got: Vec<_> = log.iter().map(|e| e.entry.actor.as_str()).collect();
        assert_eq!(got, actors, "{key_id}");
    }
    // New records continue the chains.
    store
        .append_audit(&release_by("k2", "F".into(), 3))
        .await
        .unwrap();
    let log = store.audit_log("k2").await.unwrap();
    assert_eq!(log.len(), 3);
    assert_chained(&log);
}

async fn data_survives_reopening(db: &ScratchDb) {
    {
        let store = db.open_keys().await.unwrap();
        store.insert_session_key(&key_row("k9")).await.unwrap();
    }
    let store = KeyStore::open(db.url()).await.unwrap();
    assert_eq!(store.session_key("k9").await.unwrap(), Some(key_row("k9")));
    assert!(matches!(
        KeyStore::open("mysql://x").await,
        Err(StoreError::UnsupportedUrl(_))
    ));
}

async fn a_post_and_its_deliveries_are_stored_together(db: &ScratchDb) {
    let store = db.open_lists().await.unwrap();
    let post = hushlist_store::PostRow {
        id: 0,
        list: "l".into(),
        mail_from: Some("a@example.org".into()),
        key_id: "k".into(),
        message_id: None,
        received_at: 7,
        message: b"ciphertext".to_vec(),
        digest: b"digest of ciphertext".to_vec(),
        roster_seq: Some(12),
    };
    let mut recipients: Vec<String> = (0..1000).map(|i| format!("m{i:04}@example.org")).collect();
    recipients.push("m0000@example.org".into());
    let inserted = store.insert_post(&post, &recipients).await.unwrap();
    assert!(!inserted.duplicate);
    let id = inserted.id;
    let pending = store.pending_deliveries(id).await.unwrap();
    assert_eq!(pending.len(), 1000, "one delivery per distinct recipient");
    assert_eq!(pending[0], "m0000@example.org");
    let stored = store.posts("l", 0, 10).await.unwrap();
    assert_eq!(
        (
            stored[0].id,
            stored[0].message.as_slice(),
            stored[0].roster_seq
        ),
        (id, &b"ciphertext"[..], Some(12))
    );
    // The same list and key id again (a retry, or a replay): the stored post, untouched.
    let again = store
        .insert_post(&post, &["x@example.org".into()])
        .await
        .unwrap();
    assert_eq!((again.id, again.duplicate), (id, true));
    assert_eq!(store.pending_deliveries(id).await.unwrap().len(), 1000);
    assert_eq!(store.posts("l", 0, 10).await.unwrap().len(), 1);
    store.check_post_key(&post).await.unwrap();
    // Other bytes under the same list and key id: refused, the stored post untouched.
    let replacement = hushlist_store::PostRow {
        message: b"garbage".to_vec(),
        digest: b"digest of garbage".to_vec(),
        ..post.clone()
    };
    for refused in [
        store.check_post_key(&replacement).await,
        store
            .insert_post(&replacement, &["x@example.org".into()])
            .await
            .map(|_| ()),
        store
            .insert_held_post(&replacement, "held", &[])
            .await
            .map(|_| ()),
    ] {
        assert!(
            matches!(&refused, Err(StoreError::KeyIdTaken { list, key_id }) if list == "l" && key_id == "k"),
            "{refused:?}"
        );
    }
    let stored = store.posts("l", 0, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].message.as_slice(), stored[0].digest.as_slice()),
        (&b"ciphertext"[..], &b"digest of ciphertext"[..])
    );
    assert_eq!(store.pending_deliveries(id).await.unwrap().len(), 1000);
    // Another post, and the same key id on another list, are new.
    let other_key = hushlist_store::PostRow {
        key_id: "k2".into(),
        ..post.clone()
    };
    let second = store.insert_post(&other_key, &[]).await.unwrap();
    assert!(second.id > id && !second.duplicate);
    assert!(
        store
            .pending_deliveries(second.id)
            .await
            .unwrap()
            .is_empty()
    );
    let other_list = hushlist_store::PostRow {
        list: "l2".into(),
        ..post
    };
    assert!(!store.insert_post(&other_list, &[]).await.unwrap().duplicate);
}

async fn deliveries_are_claimed_once_per_lease_and_end_delivered_or_failed(db: &ScratchDb) {
    let store = db.open_lists().await.unwrap();
    let post = ciphertext_post();
    let recipients: Vec<String> = (0..5).map(|i| format!("m{i}@example.org")).collect();
    let id = store.insert_post(&post, &recipients).await.unwrap().id;
    assert_eq!(
        store.post(id).await.unwrap().unwrap().message,
        b"ciphertext"
    );
    assert!(store.post(id + 1).await.unwrap().is_none());

    // Not due before the post was received.
    assert!(
        store
            .claim_deliveries(99, 200, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let first = store.claim_deliveries(100, 200, 3).await.unwrap();
    assert_eq!(first.len(), 3);
    assert_eq!(first[0].recipient, "m0@example.org");
    assert_eq!(first[0].attempts, 0);
    // Claimed rows are leased: a second claim gets only the others.
    let second = store.claim_deliveries(100, 200, 10).await.unwrap();
    let names: Vec<_> = second.iter().map(|c| c.recipient.as_str()).collect();
    assert_eq!(names, ["m3@example.org", "m4@example.org"]);
    assert!(
        store
            .claim_deliveries(150, 200, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Each says how many rows it moved, which is what the list server's queue gauge adds.
    assert_eq!(
        store
            .mark_delivered(id, &["m0@example.org".into(), "m1@example.org".into()])
            .await
            .unwrap(),
        2
    );
    store
        .defer_delivery(id, "m2@example.org", 300, "451 4.3.0 try later")
        .await
        .unwrap();
    assert!(
        store
            .fail_delivery(id, "m3@example.org", "550 5.1.1 no such user")
            .await
            .unwrap()
    );

    // A lease that ran out (the worker died) makes the rest due again.
    let expired = store.claim_deliveries(200, 400, 10).await.unwrap();
    let names: Vec<_> = expired.iter().map(|c| c.recipient.as_str()).collect();
    assert_eq!(names, ["m4@example.org"]);
    let retried = store.claim_deliveries(300, 500, 10).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(
        (retried[0].recipient.as_str(), retried[0].attempts),
        ("m2@example.org", 1)
    );

    let m2 = store.delivery(id, "m2@example.org").await.unwrap().unwrap();
    assert_eq!(m2.last_error.as_deref(), Some("451 4.3.0 try later"));
    let m3 = store.delivery(id, "m3@example.org").await.unwrap().unwrap();
    assert_eq!(m3.state, DeliveryState::Failed);
    assert_eq!(m3.last_error.as_deref(), Some("550 5.1.1 no such user"));
    let m0 = store.delivery(id, "m0@example.org").await.unwrap().unwrap();
    assert_eq!((m0.state, m0.attempts), (DeliveryState::Delivered, 1));
    // A delivered or failed row is final: a late report from a dead worker's lease changes nothing.
    store
        .defer_delivery(id, "m0@example.org", 999, "late")
        .await
        .unwrap();
    assert!(
        !store
            .fail_delivery(id, "m0@example.org", "late")
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .mark_delivered(id, &["m0@example.org".into(), "m3@example.org".into()])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store.delivery(id, "m0@example.org").await.unwrap().unwrap(),
        m0
    );
    assert_eq!(store.count_pending_deliveries().await.unwrap(), 2);
    assert_eq!(
        store.delivery_counts().await.unwrap(),
        DeliveryCounts {
            pending: 2,
            delivered: 2,
            failed: 1
        }
    );
}

async fn suspensions_are_per_list_and_resume_removes_them(db: &ScratchDb) {
    let store = db.open_lists().await.unwrap();
    let notice = |text: &str| OutboxMessage {
        mail_from: "l-bounces@example.org".into(),
        recipient: "owner@example.org".into(),
        message: text.as_bytes().to_vec(),
    };
    assert!(
        store
            .suspend("l", "a@example.org", "bounces", 5, &[notice("first")])
            .await
            .unwrap()
    );
    // Suspending again keeps the first reason and queues no second notice.
    assert!(
        !store
            .suspend("l", "a@example.org", "again", 9, &[notice("second")])
            .await
            .unwrap()
    );
    assert!(
        store
            .suspend("other", "b@example.org", "unsubscribed", 6, &[])
            .await
            .unwrap()
    );
    let suspended = store.suspensions("l").await.unwrap();
    assert_eq!(suspended.len(), 1);
    assert_eq!(
        (suspended[0].reason.as_str(), suspended[0].since),
        ("bounces", 5)
    );
    let outbox = store.unsent_outbox().await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].0.message, b"first");
    assert!(store.resume("l", "a@example.org").await.unwrap());
    assert!(!store.resume("l", "a@example.org").await.unwrap());
    assert!(store.suspensions("l").await.unwrap().is_empty());
    assert_eq!(store.suspensions("other").await.unwrap().len(), 1);
}

async fn bounce_scores_are_compare_and_set_and_probes_are_found_by_token(db: &ScratchDb) {
    let store = db.open_lists().await.unwrap();
    assert_eq!(
        store.bounce_record("l", "a@example.org").await.unwrap(),
        None
    );
    assert!(
        store
            .put_bounce_score("l", "a@example.org", 1.0, 100, None)
            .await
            .unwrap()
    );
    // A second first bounce (another instance counted one meanwhile) does not overwrite.
    assert!(
        !store
            .put_bounce_score("l", "a@example.org", 1.0, 101, None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_bounce_score("l", "a@example.org", 2.0, 200, Some(99))
            .await
            .unwrap()
    );
    assert!(
        store
            .put_bounce_score("l", "a@example.org", 1.5, 200, Some(100))
            .await
            .unwrap()
    );
    let record = store
        .bounce_record("l", "a@example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((record.score, record.last_counted_at), (1.5, 200));
    assert_eq!(record.probe_token, None);

    let probe = OutboxMessage {
        mail_from: "l-probe+tok1@example.org".into(),
        recipient: "a@example.org".into(),
        message: b"probe".to_vec(),
    };
    assert!(
        !store
            .send_probe("l", "nobody@example.org", "tok0", 300, 0, &probe)
            .await
            .unwrap(),
        "no record, no probe"
    );
    assert!(
        store
            .send_probe("l", "a@example.org", "tok1", 300, 0, &probe)
            .await
            .unwrap()
    );
    // While that probe is current, no second one goes out.
    assert!(
        !store
            .send_probe("l", "a@example.org", "tok2", 301, 0, &probe)
            .await
            .unwrap()
    );
    assert_eq!(
        store.probe("tok1").await.unwrap(),
        Some(SentProbe {
            list: "l".into(),
            address: "a@example.org".into(),
            sent_at: 300
        })
    );
    assert_eq!(store.probe("tok2").await.unwrap(), None);
    assert_eq!(store.unsent_outbox().await.unwrap().len(), 1);
    // Suspension clears the record, and the probe token with it.
    store
        .suspend("l", "a@example.org", "probe bounced", 400, &[])
        .await
        .unwrap();
    assert_eq!(
        store.bounce_record("l", "a@example.org").await.unwrap(),
        None
    );
    assert_eq!(store.probe("tok1").await.unwrap(), None);
}

async fn refusals_reach_owners_in_one_digest_per_interval(db: &ScratchDb) {
    let store = db.open_lists().await.unwrap();
    let list = "team@lists.example.org";
    let refused = |at: i64| RefusedPost {
        sender: "rita@example.org".into(),
        reason: "a reader".into(),
        refused_at: at,
    };
    let notice = |refused: &[RefusedPost]| {
        vec![OutboxMessage {
            mail_from: "team-bounces@lists.example.org".into(),
            recipient: "olivia@example.org".into(),
            message: format!("{} refused", refused.len()).into_bytes(),
        }]
    };
    assert_eq!(
        store
            .send_refusal_digest(list, 100, 40, notice)
            .await
            .unwrap(),
        0,
        "nothing to report uses up no interval"
    );
    store.record_refusal(list, &refused(100)).await.unwrap();
    assert_eq!(store.lists_due_a_refusal_digest(40).await.unwrap(), [list]);
    assert_eq!(
        store
            .send_refusal_digest(list, 100, 40, notice)
            .await
            .unwrap(),
        1
    );
    for at in 101..104 {
        store.record_refusal(list, &refused(at)).await.unwrap();
    }
    // Within the interval (last sent at 100): they wait.
    assert!(
        store
            .lists_due_a_refusal_digest(99)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .send_refusal_digest(list, 104, 99, notice)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.lists_due_a_refusal_digest(100).await.unwrap(), [list]);
    assert_eq!(
        store
            .send_refusal_digest(list, 160, 100, notice)
            .await
            .unwrap(),
        3
    );
    assert!(
        store
            .lists_due_a_refusal_digest(i64::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    let sent: Vec<Vec<u8>> = store
        .unsent_outbox()
        .await
        .unwrap()
        .into_iter()
        .map(|(m, _)| m.message)
        .collect();
    assert_eq!(sent, [b"1 refused".to_vec(), b"3 refused".to_vec()]);
}

async fn outbox_messages_are_claimed_once_per_lease_until_sent_or_failed(db: &ScratchDb) {
    let store = db.open_lists().await.unwrap();
    let messages: Vec<OutboxMessage> = (0..3)
        .map(|i| OutboxMessage {
            mail_from: "l-bounces@example.org".into(),
            recipient: format!("o{i}@example.org"),
            message: format!("notice {i}").into_bytes(),
        })
        .collect();
    store.queue_messages(&messages, 10).await.unwrap();
    let first = store.claim_outbox(10, 70, 2).await.unwrap();
    assert_eq!(
        first
            .iter()
            .map(|m| m.recipient.as_str())
            .collect::<Vec<_>>(),
        ["o0@example.org", "o1@example.org"]
    );
    let second = store.claim_outbox(10, 70, 10).await.unwrap();
    assert_eq!(second.len(), 1, "leased messages are not claimed twice");
    assert!(store.claim_outbox(11, 70, 10).await.unwrap().is_empty());
    store.outbox_sent(first[0].id).await.unwrap();
    store
        .outbox_attempt_failed(first[1].id, Some(100), "451 try later")
        .await
        .unwrap();
    store
        .outbox_attempt_failed(second[0].id, None, "550 no such user")
        .await
        .unwrap();
    // After the lease: only the deferred message comes back, once due.
    assert!(store.claim_outbox(99, 200, 10).await.unwrap().is_empty());
    let retried = store.claim_outbox(100, 200, 10).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!((retried[0].id, retried[0].attempts), (first[1].id, 1));
    let unsent = store.unsent_outbox().await.unwrap();
    assert_eq!(
        unsent
            .iter()
            .map(|(m, state)| (m.recipient.as_str(), state.as_str()))
            .collect::<Vec<_>>(),
        [("o1@example.org", "pending"), ("o2@example.org", "failed")]
    );
}

async fn join_requests_are_confirmed_kept_per_key_lapse_and_settle_with_their_answer(
    db: &ScratchDb,
) {
    let store = db.open_lists().await.unwrap();
    let request = |address: &str, key: &str, at: i64| JoinRequestRow {
        list: "l".into(),
        address: address.into(),
        fingerprint: key.into(),
        request: format!("{{\"signed by\": \"{key}\"}}"),
        note: Some("hello".into()),
        confirm_token: format!("token-{address}-{key}"),
        confirmed_at: None,
        requested_at: at,
        expires_at: at + 100,
    };
    let notice = |to: &str| OutboxMessage {
        mail_from: "l-bounces@example.org".into(),
        recipient: to.into(),
        message: b"notice".to_vec(),
    };
    let limits = JoinLimits {
        per_list: 3,
        per_address: 2,
    };
    let file = |row: JoinRequestRow, to: &'static str| {
        let store = &store;
        async move {
            store
                .file_join_request(&row, limits, &[notice(to)])
                .await
                .unwrap()
        }
    };
    assert_eq!(
        file(request("a@example.org", "F1", 10), "a@example.org").await,
        JoinFiling::Filed
    );
    // The same address and key asking again files nothing and mails nothing again.
    assert_eq!(
        file(request("a@example.org", "F1", 20), "a@example.org").await,
        JoinFiling::AlreadyPending
    );
    // Another key for the same address is kept beside it, up to the per-address limit.
    assert_eq!(
        file(request("a@example.org", "F2", 20), "a@example.org").await,
        JoinFiling::Filed
    );
    assert_eq!(
        file(request("a@example.org", "F3", 20), "a@example.org").await,
        JoinFiling::AddressFull
    );
    assert_eq!(
        file(request("b@example.org", "F4", 30), "b@example.org").await,
        JoinFiling::Filed
    );
    assert_eq!(
        file(request("c@example.org", "F5", 40), "c@example.org").await,
        JoinFiling::ListFull
    );
    assert_eq!(store.unsent_outbox().await.unwrap().len(), 3);

    // Confirming needs the right token, once, before the request lapses.
    assert_eq!(
        store.join_request_to_confirm("token-x", 40).await.unwrap(),
        None
    );
    let to_confirm = store
        .join_request_to_confirm("token-a@example.org-F2", 40)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(to_confirm, request("a@example.org", "F2", 20));
    assert!(
        store
            .confirm_join_request("token-a@example.org-F2", 40, 1_000, &[notice("owner")])
            .await
            .unwrap()
    );
    assert!(
        !store
            .confirm_join_request("token-a@example.org-F2", 41, 1_000, &[notice("owner")])
            .await
            .unwrap(),
        "a confirmation counts once"
    );
    assert_eq!(
        store
            .join_request_to_confirm("token-a@example.org-F2", 41)
            .await
            .unwrap(),
        None
    );
    assert!(
        !store
            .confirm_join_request("token-b@example.org-F4", 131, 1_000, &[notice("owner")])
            .await
            .unwrap(),
        "b's request lapsed at 130"
    );
    let pending = store.join_requests("l", 41).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|r| (r.fingerprint.as_str(), r.confirmed_at))
            .collect::<Vec<_>>(),
        [("F1", None), ("F2", Some(40)), ("F4", None)]
    );
    assert_eq!(pending[1].expires_at, 1_000);
    // The unconfirmed F1 and F4 lapse at 110 and 130; the confirmed F2 waits for the owners.
    assert_eq!(store.join_requests("l", 131).await.unwrap().len(), 1);

    // Only a confirmed request can be settled; approving drops the address's other keys.
    assert!(
        !store
            .settle_join_request("l", "a@example.org", "F1", true, 50, &[notice("a")])
            .await
            .unwrap(),
        "an unconfirmed request cannot be settled"
    );
    assert!(
        store
            .settle_join_request("l", "a@example.org", "F2", true, 50, &[notice("a")])
            .await
            .unwrap()
    );
    assert!(
        !store
            .settle_join_request("l", "a@example.org", "F2", true, 51, &[notice("a")])
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .join_requests("l", 51)
            .await
            .unwrap()
            .iter()
            .map(|r| r.fingerprint.as_str())
            .collect::<Vec<_>>(),
        ["F4"]
    );
    let told: Vec<String> = store
        .unsent_outbox()
        .await
        .unwrap()
        .into_iter()
        .map(|(m, _)| m.recipient)
        .collect();
    assert_eq!(
        told,
        [
            "a@example.org",
            "a@example.org",
            "b@example.org",
            "owner",
            "a"
        ]
    );
    assert_eq!(store.join_requests("other", 0).await.unwrap(), []);
}

async fn held_posts_stay_out_of_the_queue_and_archive_until_released_or_discarded(db: &ScratchDb) {
    let store = db.open_lists().await.unwrap();
    let post = |key_id: &str| hushlist_store::PostRow {
        key_id: key_id.into(),
        ..ciphertext_post()
    };
    let notice = OutboxMessage {
        mail_from: "l-bounces@example.org".into(),
        recipient: "owner@example.org".into(),
        message: b"held".to_vec(),
    };
    let list = ciphertext_post().list;
    let first = store
        .insert_held_post(
            &post("k1"),
            "every post waits",
            std::slice::from_ref(&notice),
        )
        .await
        .unwrap();
    assert!(!first.duplicate);
    let again = store
        .insert_held_post(
            &post("k1"),
            "every post waits",
            std::slice::from_ref(&notice),
        )
        .await
        .unwrap();
    assert_eq!((again.id, again.duplicate), (first.id, true));
    let second = store
        .insert_held_post(&post("k2"), "a reader", &[])
        .await
        .unwrap();
    assert_eq!(store.unsent_outbox().await.unwrap().len(), 1);
    let held = store.held_posts(&list).await.unwrap();
    assert_eq!(
        held.iter()
            .map(|h| (h.post.id, h.reason.as_str()))
            .collect::<Vec<_>>(),
        [(first.id, "every post waits"), (second.id, "a reader")]
    );
    assert_eq!(held[0].post.key_id, "k1");
    assert!(store.posts(&list, 0, 10).await.unwrap().is_empty());
    assert!(
        store
            .claim_deliveries(i64::MAX, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let recipients = ["a@example.org".to_owned(), "b@example.org".to_owned()];
    assert!(
        store
            .release_held_post(&list, first.id, &recipients, 50, &[])
            .await
            .unwrap()
    );
    assert!(
        !store
            .release_held_post(&list, first.id, &recipients, 51, &[])
            .await
            .unwrap(),
        "released once"
    );
    assert!(
        !store
            .release_held_post("other@example.org", second.id, &recipients, 51, &[])
            .await
            .unwrap(),
        "only by its own list"
    );
    assert_eq!(
        store.pending_deliveries(first.id).await.unwrap(),
        recipients
    );
    assert_eq!(
        store
            .posts(&list, 0, 10)
            .await
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect::<Vec<_>>(),
        [first.id]
    );
    assert!(
        store
            .discard_held_post(&list, second.id, 60, std::slice::from_ref(&notice))
            .await
            .unwrap()
    );
    assert!(store.post(second.id).await.unwrap().is_none());
    assert!(store.held_posts(&list).await.unwrap().is_empty());
    assert_eq!(store.unsent_outbox().await.unwrap().len(), 2);
}

async fn concurrent_claims_from_two_instances_take_each_delivery_once(db: &ScratchDb) {
    let instances = [
        db.open_lists().await.unwrap(),
        db.open_lists().await.unwrap(),
    ];
    let post = ciphertext_post();
    let recipients: Vec<String> = (0..1000).map(|i| format!("m{i}@example.org")).collect();
    instances[0].insert_post(&post, &recipients).await.unwrap();
    // Eight workers, four per instance (each instance its own connection pool), claim in
    // small batches until nothing is due.
    let mut workers = Vec::new();
    for worker in 0..8 {
        let store = instances[worker % 2].clone();
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..1000 {
                let claimed = store.claim_deliveries(100, 10_000, 37).await.unwrap();
                if claimed.is_empty() {
                    break;
                }
                mine.extend(claimed.into_iter().map(|c| c.recipient));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    let claimed = all.len();
    all.sort();
    all.dedup();
    assert_eq!(claimed, 1000, "every delivery claimed exactly once");
    assert_eq!(all.len(), 1000);
}

async fn request_counts_are_per_signer_and_window_and_pruned(db: &ScratchDb) {
    let instances = [
        db.open_lists().await.unwrap(),
        db.open_lists().await.unwrap(),
    ];
    for expected in 1..=4 {
        let store = &instances[expected as usize % 2];
        assert_eq!(store.count_request("A", 100).await.unwrap(), expected);
    }
    assert_eq!(instances[0].count_request("B", 100).await.unwrap(), 1);
    assert_eq!(instances[0].count_request("A", 110).await.unwrap(), 1);
    assert_eq!(instances[1].prune_request_counts(110).await.unwrap(), 2);
    assert_eq!(instances[1].count_request("A", 100).await.unwrap(), 1);
    assert_eq!(instances[1].count_request("A", 110).await.unwrap(), 2);
}

/// A post of list `l` received at 100, as the list server stores it.
fn ciphertext_post() -> hushlist_store::PostRow {
    hushlist_store::PostRow {
        id: 0,
        list: "l".into(),
        mail_from: None,
        key_id: "k".into(),
        message_id: None,
        received_at: 100,
        message: b"ciphertext".to_vec(),
        digest: b"digest of ciphertext".to_vec(),
        roster_seq: None,
    }
}

/// A list's genesis by its owner and `members` ops adding readers, signed in order.
fn signed_roster(members: usize) -> (Address, SecretIdentity, Vec<SignedOp>) {
    let list = Address::parse("team@lists.example.org").unwrap();
    let owner_address = Address::parse("owner@example.org").unwrap();
    let owner = SecretIdentity::generate(OsRng, owner_address.as_str()).unwrap();
    let genesis = sign_genesis(
        OsRng,
        &owner,
        owner_address,
        list.clone(),
        Policy::default(),
        0,
    )
    .unwrap();
    let mut roster = Roster::genesis(genesis.clone()).unwrap();
    let mut ops = vec![genesis];
    for i in 0..members {
        let address = format!("member{i}@example.net");
        let key = SecretIdentity::generate(OsRng, &address).unwrap();
        let member = MemberEntry {
            address: Address::parse(&address).unwrap(),
            cert: key.cert().to_armored(),
            role: Role::Reader,
        };
        let op = roster
            .sign_next(OsRng, &owner, 0, Change::Add { member })
            .unwrap();
        roster.apply(op.clone()).unwrap();
        ops.push(op);
    }
    (list, owner, ops)
}

async fn a_cold_roster_cache_replays_the_log_once_for_requests_arriving_together(db: &ScratchDb) {
    let store = db.open_lists().await.unwrap();
    let (list, _owner, ops) = signed_roster(20);
    let writer = RosterCache::new(Store::clone(&store));
    writer.create(ops[0].clone()).await.unwrap();
    for op in &ops[1..=19] {
        writer.append(&list, op.clone()).await.unwrap();
    }

    // A fresh cache over the same database, as after a restart: 32 requests arrive at once.
    let cold = Arc::new(RosterCache::new(Store::clone(&store)));
    let requests: Vec<_> = (0..32)
        .map(|_| {
            let (cold, list) = (cold.clone(), list.clone());
            tokio::spawn(async move { cold.get(&list).await.unwrap().head_seq() })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 19);
    }
    assert_eq!(
        cold.ops_verified(),
        20,
        "the log was replayed once, not once per request"
    );

    // An op another instance stores later is read and verified once more, by the next read.
    writer.append(&list, ops[20].clone()).await.unwrap();
    assert_eq!(cold.get(&list).await.unwrap().head_seq(), 20);
    assert_eq!(cold.get(&list).await.unwrap().head_seq(), 20);
    assert_eq!(cold.ops_verified(), 21);
}

async fn session_keys_are_copied_in_bulk_under_new_key_ids(db: &ScratchDb) {
    let store = db.open_keys().await.unwrap();
    assert_eq!(
        store.copy_session_keys(10).await.unwrap(),
        0,
        "nothing to copy"
    );
    store.insert_session_key(&key_row("k1")).await.unwrap();
    assert_eq!(store.copy_session_keys(1000).await.unwrap(), 1000);
    assert_eq!(store.count_session_keys().await.unwrap(), 1001);
    let copy = store.session_key("bulk-1000").await.unwrap().unwrap();
    assert_eq!(copy.sealed_key, key_row("k1").sealed_key);
    assert_eq!(copy.list, key_row("k1").list);
}

/// The tables of the database at `db`, sorted (PostgreSQL: in the current schema).
async fn tables(db: &ScratchDb) -> Vec<String> {
    let sql = if db.url().starts_with("sqlite:") {
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    } else {
        "SELECT table_name::text AS name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY table_name"
    };
    let mut conn = sqlx::AnyConnection::connect(db.url()).await.unwrap();
    let names = sqlx::query(sql)
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|row| sqlx::Row::get::<String, _>(row, "name"))
        .collect();
    conn.close().await.unwrap();
    names
}

/// `sql` with its `X'00'` byte literals written as `db`'s dialect has them.
fn with_bytes(db: &ScratchDb, sql: &str) -> String {
    if db.url().starts_with("sqlite:") {
        sql.to_owned()
    } else {
        sql.replace("X'00'", "'\\x00'::bytea")
    }
}

/// Migrates `db` as every database was before each server had tables of its own: the whole
/// history up to 0018, key server's and list server's tables alike.
async fn migrate_as_before_the_split(db: &ScratchDb) {
    sqlx::any::install_default_drivers();
    let all = if db.url().starts_with("sqlite:") {
        sqlx::migrate!("./migrations/sqlite")
    } else {
        sqlx::migrate!("./migrations/postgres")
    };
    let before = sqlx::migrate::Migrator {
        migrations: all
            .migrations
            .iter()
            .filter(|m| m.version <= 18)
            .cloned()
            .collect(),
        ..all
    };
    let url = if db.url().starts_with("sqlite:") {
        format!("{}?mode=rwc", db.url())
    } else {
        db.url().to_owned()
    };
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    before.run(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

async fn each_server_refuses_the_other_servers_database(db: &ScratchDb) {
    let keys = db.open_keys().await.unwrap();
    drop(keys);
    let refused = ListStore::open(db.url()).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::OtherServersDatabase { expected: "list server", found } if found == "key server"),
        "{refused}"
    );
    // And the other way round, on a database of its own.
    let other = if db.url().starts_with("sqlite:") {
        ScratchDb::sqlite().unwrap()
    } else {
        ScratchDb::postgres().await.unwrap()
    };
    drop(other.open_lists().await.unwrap());
    let refused = KeyStore::open(other.url()).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::OtherServersDatabase { expected: "key server", found } if found == "list server"),
        "{refused}"
    );
    // Each opens its own again.
    drop(db.open_keys().await.unwrap());
    drop(other.open_lists().await.unwrap());
}

async fn a_database_from_before_the_split_keeps_its_data_and_drops_the_other_servers_tables(
    db: &ScratchDb,
) {
    migrate_as_before_the_split(db).await;
    assert!(tables(db).await.contains(&"posts".to_owned()));
    // A key server's: a roster, and the secret every key server stores at its first start.
    let mut conn = sqlx::AnyConnection::connect(db.url()).await.unwrap();
    for insert in [
        "INSERT INTO roster_ops (list, seq, body, signature) VALUES ('l@example.org', 0, X'00', X'00')",
        "INSERT INTO server_secrets (name, master_key_id, nonce, sealed) VALUES ('s', 'm', X'00', X'00')",
    ] {
        sqlx::query(&with_bytes(db, insert))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();

    let store = db.open_keys().await.unwrap();
    store.insert_session_key(&key_row("k1")).await.unwrap();
    assert_eq!(
        store
            .roster_ops("l@example.org", -1, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    drop(store);
    let tables = tables(db).await;
    for list_table in [
        "posts",
        "deliveries",
        "outbox",
        "held_posts",
        "join_requests",
    ] {
        assert!(
            !tables.contains(&list_table.to_owned()),
            "{list_table} in {tables:?}"
        );
    }
    assert!(tables.contains(&"session_keys".to_owned()), "{tables:?}");
    let store = db.open_keys().await.unwrap();
    assert_eq!(store.session_key("k1").await.unwrap(), Some(key_row("k1")));
}

async fn a_database_with_both_servers_data_from_before_the_split_is_refused_by_both(
    db: &ScratchDb,
) {
    migrate_as_before_the_split(db).await;
    let mut conn = sqlx::AnyConnection::connect(db.url()).await.unwrap();
    for insert in [
        "INSERT INTO server_secrets (name, master_key_id, nonce, sealed) VALUES ('s', 'm', X'00', X'00')",
        "INSERT INTO outbox (mail_from, recipient, message, created_at, next_attempt_at) VALUES ('f', 'r', X'00', 0, 0)",
    ] {
        sqlx::query(&with_bytes(db, insert))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();
    let before = tables(db).await;
    for refused in [
        KeyStore::open(db.url()).await.map(drop),
        ListStore::open(db.url()).await.map(drop),
    ] {
        assert!(
            matches!(refused, Err(StoreError::OtherServersDatabase { .. })),
            "{refused:?}"
        );
    }
    assert_eq!(tables(db).await, before, "nothing was dropped");
}

async fn a_database_migrated_by_a_newer_build_is_refused(db: &ScratchDb) {
    drop(db.open_lists().await.unwrap());
    let mut conn = sqlx::AnyConnection::connect(db.url()).await.unwrap();
    sqlx::query(&with_bytes(
        db,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (9999, 'from the future', TRUE, X'00', 0)",
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let refused = ListStore::open(db.url()).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::NewerDatabase { version: 9999, .. }),
        "{refused}"
    );
}

async fn a_list_servers_database_from_before_the_split_with_rosters_but_no_posts_is_refused_by_the_key_server(
    db: &ScratchDb,
) {
    migrate_as_before_the_split(db).await;
    let mut conn = sqlx::AnyConnection::connect(db.url()).await.unwrap();
    sqlx::query(&with_bytes(
        db,
        "INSERT INTO roster_ops (list, seq, body, signature) VALUES ('l@example.org', 0, X'00', X'00')",
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let before = tables(db).await;
    let refused = KeyStore::open(db.url()).await.map(drop);
    assert!(
        matches!(&refused, Err(StoreError::OtherServersDatabase { expected: "key server", found }) if found.contains("list server")),
        "{refused:?}"
    );
    assert_eq!(tables(db).await, before, "nothing was dropped");
    let store = db.open_lists().await.unwrap();
    assert_eq!(
        store
            .roster_ops("l@example.org", -1, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// One PostgreSQL database, the list server in `public` and a key server added later in a
/// schema of its own, whose search path reaches `public` too: the key server's migrations
/// must not drop the list server's tables they find there.
async fn on_postgresql_a_key_server_in_its_own_schema_leaves_the_list_servers_tables_in_another_alone(
    db: &ScratchDb,
) {
    if db.url().starts_with("sqlite:") {
        return;
    }
    let lists = db.open_lists().await.unwrap();
    lists
        .insert_post(&ciphertext_post(), &["m@example.org".to_owned()])
        .await
        .unwrap();
    drop(lists);
    let mut conn = sqlx::AnyConnection::connect(db.url()).await.unwrap();
    sqlx::query("CREATE SCHEMA keyschema")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let separator = if db.url().contains('?') { '&' } else { '?' };
    let in_keyschema = format!(
        "{}{separator}options=-c%20search_path%3Dkeyschema%2Cpublic",
        db.url()
    );
    let keys = KeyStore::open(&in_keyschema).await.unwrap();
    keys.insert_session_key(&key_row("k1")).await.unwrap();
    drop(keys);
    let lists = db.open_lists().await.unwrap();
    assert_eq!(lists.posts("l", 0, 10).await.unwrap().len(), 1);
}
