//! The real `hushlist-keyserver` process killed with SIGKILL in the middle of a burst of
//! deposits: after a restart, every deposit that was answered 201 is still there. And
//! restarted with a new master key: the old one, kept as a previous key until the sweep has
//! re-sealed everything, is then no longer needed.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hushlist_core::api::{KeyRelease, ServerKey, purpose};
use hushlist_core::roster::{Change, MemberEntry, Policy, Role, Roster, sign_genesis};
use hushlist_core::{Address, Cert, KeyId, Pkesk, SessionKey};
use rand::rngs::OsRng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_of_deposits_loses_none_that_got_201() {
    let dir = tempfile::tempdir().unwrap();
    let p = people();
    let http = reqwest::Client::new();
    let (mut child, base) = spawn_binary(dir.path(), &[]);
    let admin = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();

    let genesis = sign_genesis(
        OsRng,
        &p.olivia,
        Address::parse("olivia@example.org").unwrap(),
        list(),
        Policy::default(),
        now(),
    )
    .unwrap();
    assert_eq!(
        post_json(&http, format!("{base}/v1/lists"), &genesis, Some(&admin))
            .await
            .unwrap()
            .0,
        201
    );
    let mut roster = Roster::genesis(genesis).unwrap();
    for (who, address, role) in [
        (&p.bob, "bob@example.org", Role::Member),
        (&p.rita, "rita@example.org", Role::Reader),
    ] {
        let member = MemberEntry {
            address: Address::parse(address).unwrap(),
            cert: who.cert().to_armored(),
            role,
        };
        let op = roster
            .sign_next(OsRng, &p.olivia, now(), Change::Add { member })
            .unwrap();
        assert_eq!(
            post_json(&http, format!("{base}/v1/lists/{LIST}/ops"), &op, None)
                .await
                .unwrap()
                .0,
            201
        );
        roster.apply(op).unwrap();
    }
    let server_key: ServerKey = http
        .get(format!("{base}/v1/server-key"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
                let sealed = Pkesk::seal(OsRng, &session_key, &server_cert).unwrap();
                let body = hushlist_core::api::Deposit {
                    key_id: key_id.clone(),
                    sealed_key: sealed.as_bytes().to_vec(),
                };
                let request = signed(sender, &purpose::deposit(&list()), &body);
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
        let request = signed(
            &p.rita,
            &purpose::fetch_key(&list(), key_id),
            &serde_json::json!({}),
        );
        let (status, body) = post_json(
            &http,
            format!("{base}/v1/lists/{LIST}/keys/{key_id}"),
            &request,
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "acknowledged deposit {key_id} lost: {body}");
        let release: KeyRelease = serde_json::from_value(body).unwrap();
        assert_eq!(
            &Pkesk::from_bytes(&release.pkesk)
                .unwrap()
                .unseal(&p.rita)
                .unwrap(),
            session_key
        );
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
    let admin = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let genesis = sign_genesis(
        OsRng,
        &p.olivia,
        Address::parse("olivia@example.org").unwrap(),
        list(),
        Policy::default(),
        now(),
    )
    .unwrap();
    let (status, _) = post_json(&http, format!("{base}/v1/lists"), &genesis, Some(&admin))
        .await
        .unwrap();
    assert_eq!(status, 201);
    let server_key = |base: String| {
        let http = http.clone();
        async move {
            let key: ServerKey = http
                .get(format!("{base}/v1/server-key"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            key
        }
    };
    let before = server_key(base.clone()).await;
    let server_cert = Cert::from_bytes(before.cert.as_bytes()).unwrap();
    let mut deposited = Vec::new();
    for _ in 0..5 {
        let (key_id, session_key) = (KeyId::generate(OsRng), SessionKey::generate(OsRng));
        let body = hushlist_core::api::Deposit {
            key_id: key_id.clone(),
            sealed_key: Pkesk::seal(OsRng, &session_key, &server_cert)
                .unwrap()
                .as_bytes()
                .to_vec(),
        };
        let request = signed(&p.olivia, &purpose::deposit(&list()), &body);
        let (status, body) = post_json(
            &http,
            format!("{base}/v1/lists/{LIST}/keys"),
            &request,
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 201, "{body}");
        deposited.push((key_id, session_key));
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
    let fetch_all = |base: String| {
        let (http, deposited) = (http.clone(), deposited.clone());
        async move {
            for (key_id, session_key) in &deposited {
                let request = signed(
                    &people().olivia,
                    &purpose::fetch_key(&list(), key_id),
                    &serde_json::json!({}),
                );
                let (status, body) = post_json(
                    &http,
                    format!("{base}/v1/lists/{LIST}/keys/{key_id}"),
                    &request,
                    None,
                )
                .await
                .unwrap();
                assert_eq!(status, 200, "{body}");
                let release: KeyRelease = serde_json::from_value(body).unwrap();
                let pkesk = Pkesk::from_bytes(&release.pkesk).unwrap();
                assert_eq!(&pkesk.unseal(&people().olivia).unwrap(), session_key);
            }
        }
    };
    let (mut child, base) = spawn_binary_with(
        dir.path(),
        &["--sweep-secs", "1"],
        &[
            ("HUSHLIST_MASTER_KEY", NEW),
            ("HUSHLIST_MASTER_KEY_PREVIOUS", OLD),
        ],
    );
    assert_eq!(server_key(base.clone()).await.cert, before.cert);
    fetch_all(base).await;
    // The first sweep runs at start; give it a moment past its one-second tick.
    tokio::time::sleep(Duration::from_secs(2)).await;
    child.kill().unwrap();
    child.wait().unwrap();

    // The old key is gone from the configuration: nothing needed it any more.
    let (mut child, base) = spawn_binary_with(dir.path(), &[], &[("HUSHLIST_MASTER_KEY", NEW)]);
    assert_eq!(server_key(base.clone()).await.cert, before.cert);
    fetch_all(base).await;
    child.kill().unwrap();
    child.wait().unwrap();
}
