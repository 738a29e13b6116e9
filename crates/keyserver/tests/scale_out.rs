//! Two real `hushlist-keyserver` processes on one PostgreSQL database, as when the key server
//! is scaled out behind one name: they share the server's identity, rosters, keys and the
//! memory of used request nonces, so any instance can serve any request, and losing one
//! loses nothing.

mod common;

use common::*;
use hushlist_core::api::{Deposit, KeyRelease, ServerKey, purpose};
use hushlist_core::roster::{Change, MemberEntry, Policy, Role, Roster, sign_genesis};
use hushlist_core::{Address, Cert, KeyId, Pkesk, SessionKey};
use hushlist_store::scratch::{ScratchDb, postgres_admin_url};
use rand::rngs::OsRng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_serve_each_others_keys_and_share_nonces() {
    let db = ScratchDb::postgres().await.unwrap_or_else(|e| {
        panic!(
            "no PostgreSQL at {} ({e}); run .ci/run once, or set HUSHLIST_TEST_POSTGRES",
            postgres_admin_url()
        )
    });
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    // Both get the same master key (HUSHLIST_MASTER_KEY), as a deployment must give them.
    let (first, first_url) = spawn_binary(dirs[0].path(), &["--database", db.url()]);
    let (mut second, second_url) = spawn_binary(dirs[1].path(), &["--database", db.url()]);
    let mut first = first;
    let bases = [first_url, second_url];
    let http = reqwest::Client::new();
    let p = people();

    // One identity: whichever instance starts first makes it, the other loads it.
    let mut certs = Vec::new();
    for base in &bases {
        let key: ServerKey = http
            .get(format!("{base}/v1/server-key"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        certs.push(key.cert);
    }
    assert_eq!(certs[0], certs[1], "both instances are one key server");
    let server_cert = Cert::from_bytes(certs[0].as_bytes()).unwrap();

    // The list is created through the first and changed through the second.
    let admin = std::fs::read_to_string(dirs[0].path().join("admin.token")).unwrap();
    let genesis = sign_genesis(
        OsRng,
        &p.olivia,
        Address::parse("olivia@example.org").unwrap(),
        list(),
        Policy::default(),
        now(),
    )
    .unwrap();
    let (status, _) = post_json(
        &http,
        format!("{}/v1/lists", bases[0]),
        &genesis,
        Some(&admin),
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
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
        let (status, body) = post_json(
            &http,
            format!("{}/v1/lists/{LIST}/ops", bases[1]),
            &op,
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 201, "{body}");
        roster.apply(op).unwrap();
    }

    // Keys deposited through one instance are released by the other.
    let mut deposited = Vec::new();
    for i in 0..20 {
        let (key_id, session_key) = (KeyId::generate(OsRng), SessionKey::generate(OsRng));
        let body = Deposit {
            key_id: key_id.clone(),
            sealed_key: Pkesk::seal(OsRng, &session_key, &server_cert)
                .unwrap()
                .as_bytes()
                .to_vec(),
        };
        let request = signed(&p.bob, &purpose::deposit(&list()), &body);
        let (status, body) = post_json(
            &http,
            format!("{}/v1/lists/{LIST}/keys", bases[i % 2]),
            &request,
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 201, "{body}");
        deposited.push((i, key_id, session_key));
    }
    for (i, key_id, session_key) in &deposited {
        let request = signed(
            &p.rita,
            &purpose::fetch_key(&list(), key_id),
            &serde_json::json!({}),
        );
        let other = &bases[(i + 1) % 2];
        let (status, body) = post_json(
            &http,
            format!("{other}/v1/lists/{LIST}/keys/{key_id}"),
            &request,
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let release: KeyRelease = serde_json::from_value(body).unwrap();
        let pkesk = Pkesk::from_bytes(&release.pkesk).unwrap();
        assert_eq!(&pkesk.unseal(&p.rita).unwrap(), session_key);

        // The same signed request replayed at the instance that did not see it is refused:
        // the nonce memory is the database's, not the process's.
        let first_seen = &bases[(i + 1) % 2];
        let replay_at = if first_seen == &bases[0] {
            &bases[1]
        } else {
            &bases[0]
        };
        let (status, body) = post_json(
            &http,
            format!("{replay_at}/v1/lists/{LIST}/keys/{key_id}"),
            &request,
            None,
        )
        .await
        .unwrap();
        assert_eq!((status, code(&body)), (401, "replayed"), "{body}");
    }

    // Losing the first instance loses nothing: the second serves every key.
    first.kill().unwrap();
    first.wait().unwrap();
    for (_, key_id, session_key) in &deposited {
        let request = signed(
            &p.bob,
            &purpose::fetch_key(&list(), key_id),
            &serde_json::json!({}),
        );
        let (status, body) = post_json(
            &http,
            format!("{}/v1/lists/{LIST}/keys/{key_id}", bases[1]),
            &request,
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let release: KeyRelease = serde_json::from_value(body).unwrap();
        let pkesk = Pkesk::from_bytes(&release.pkesk).unwrap();
        assert_eq!(&pkesk.unseal(&p.bob).unwrap(), session_key);
    }
    second.kill().unwrap();
    second.wait().unwrap();
}
