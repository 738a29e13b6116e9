//! The real `hushlist-keyserver` process killed with SIGKILL in the middle of a burst of
//! deposits: after a restart, every deposit that was answered 201 is still there. And
//! restarted with a new master key: the old one, kept as a previous key until the sweep has
//! re-sealed everything, is then no longer needed.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hushlist_core::{Cert, KeyId, SessionKey};
use hushlist_testkit::wait_until;
use rand::rngs::OsRng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_of_deposits_loses_none_that_got_201() {
    let dir = tempfile::tempdir().unwrap();
    let p = people();
    let http = reqwest::Client::new();
    let (mut child, base) = spawn_binary(dir.path(), &[]);

    create_list_in(&http, &base, dir.path()).await;
    let server_key = server_key_at(&http, &base).await;
    let server_cert = Arc::new(Cert::from_bytes(server_key.cert.as_bytes()).unwrap());

    let acknowledged: Arc<Mutex<Vec<(KeyId, SessionKey)>>> = Arc::default();
    let mut senders = Vec::new();
    for (sender_index, deposits) in [(0usize, 100usize), (1, 100)] {
        let (http, base, acknowledged, server_cert) = (
            http.clone(),
            base.clone(),
            acknowledged.clone(),
            server_cert.clone(),
        );
        senders.push(tokio::spawn(async move {
            let sender = if sender_index == 0 {
                &people().bob
            } else {
                &people().olivia
            };
            for _ in 0..deposits {
                let (key_id, session_key) = (KeyId::generate(OsRng), SessionKey::generate(OsRng));
                let request = deposit_request(sender, &list(), &key_id, &session_key, &server_cert);
                match post_json(
                    &http,
                    format!("{base}/v1/lists/{LIST}/keys"),
                    &request,
                    None,
                )
                .await
                {
                    Ok((201, _)) => acknowledged.lock().unwrap().push((key_id, session_key)),
                    Ok((status, body)) => panic!("unexpected {status}: {body}"),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    // Kill once a good part of the burst is acknowledged, while deposits are in flight.
    for _ in 0..600 {
        if acknowledged.lock().unwrap().len() >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for sender in senders {
        sender.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 40,
        "only {} deposits acknowledged before the kill",
        acknowledged.len()
    );

    let (mut child, base) = spawn_binary(dir.path(), &[]);
    for (key_id, session_key) in &acknowledged {
        let request = fetch_request(&p.rita, key_id);
        fetch_expecting(&http, &base, &p.rita, &request, key_id, session_key).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_master_key_keeps_every_key_readable() {
    const OLD: &str = "0101010101010101010101010101010101010101010101010101010101010101";
    const NEW: &str = "0202020202020202020202020202020202020202020202020202020202020202";
    let dir = tempfile::tempdir().unwrap();
    let p = people();
    let http = reqwest::Client::new();
    let (mut child, base) = spawn_binary_with(dir.path(), &[], &[("HUSHLIST_MASTER_KEY", OLD)]);
    create_list_in(&http, &base, dir.path()).await;
    let before = server_key_at(&http, &base).await;
    let server_cert = Cert::from_bytes(before.cert.as_bytes()).unwrap();
    let mut deposited = Vec::new();
    for _ in 0..5 {
        deposited.push(deposit_at(&http, &base, &p.olivia, &server_cert).await);
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // The new key alone cannot read what the old one sealed, and says what to do.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_hushlist-keyserver"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("HUSHLIST_MASTER_KEY", NEW)
        .env_remove("HUSHLIST_MASTER_KEY_PREVIOUS")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("HUSHLIST_MASTER_KEY_PREVIOUS"), "{err}");

    // New key plus the old as previous: everything reads, and the sweep re-seals it all.
    let log = dir.path().join("keyserver.log");
    let (mut child, base) = spawn_binary_logging(
        dir.path(),
        &["--sweep-secs", "1"],
        &[
            ("HUSHLIST_MASTER_KEY", NEW),
            ("HUSHLIST_MASTER_KEY_PREVIOUS", OLD),
            ("RUST_LOG", "info"),
        ],
        std::fs::File::create(&log).unwrap(),
    );
    assert_eq!(server_key_at(&http, &base).await.cert, before.cert);
    for (key_id, session_key) in &deposited {
        let request = fetch_request(&p.bob, key_id);
        fetch_expecting(&http, &base, &p.bob, &request, key_id, session_key).await;
    }
    // The sweep says when it has re-sealed; only then is the old key no longer needed.
    wait_until(Duration::from_secs(30), "the re-sealing sweep", || async {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("re-sealed keys under the current master key")
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();

    // The old key is gone from the configuration: nothing needed it any more.
    let (mut child, base) = spawn_binary_with(dir.path(), &[], &[("HUSHLIST_MASTER_KEY", NEW)]);
    assert_eq!(server_key_at(&http, &base).await.cert, before.cert);
    for (key_id, session_key) in &deposited {
        let request = fetch_request(&p.rita, key_id);
        fetch_expecting(&http, &base, &p.rita, &request, key_id, session_key).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
