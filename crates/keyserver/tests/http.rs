//! The key server over TCP: each endpoint and each refusal.

mod common;

use common::*;
use hushlist_core::api::{AuditLog, GrantRequest, Grants, KeyRelease, RosterOps, purpose};
use hushlist_core::audit::verify_log;
use hushlist_core::roster::{Change, KeyFollows, Policy, Role};
use hushlist_core::{Address, KeyId, Pkesk, SessionKey};
use hushlist_envelope::{OpenWith, open, seal};
use hushlist_keyserver::ServiceConfig;
use hushlist_testkit::http::error_code as code;
use rand::rngs::OsRng;

fn new_key() -> (KeyId, SessionKey) {
    (KeyId::generate(OsRng), SessionKey::generate(OsRng))
}

#[tokio::test]
async fn health_metrics_and_server_key_are_served() {
    let server = TestServer::start(ServiceConfig::default()).await;
    let (status, body) = server.get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let cert = server.server_cert().await;
    assert!(cert.encryption_subkey_at(now()).is_ok());
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    // OpenMetrics text: the HELP and TYPE lines name the family, the sample adds `_total`.
    assert!(metrics.contains(
        "# TYPE hushlist_keyserver_deposits counter\nhushlist_keyserver_deposits_total 0\n"
    ));
    assert!(metrics.contains("hushlist_keyserver_keys_stored 0\n"));
    assert!(metrics.ends_with("# EOF\n"));
    let (status, body) = server.get("/nope").await;
    assert_eq!(status, 404);
    assert!(body.contains("no_such_endpoint"));
}

#[tokio::test]
async fn genesis_needs_the_admin_token_and_ops_are_verified() {
    let server = TestServer::start(ServiceConfig::default()).await;
    let p = people();
    let genesis = hushlist_core::roster::sign_genesis(
        OsRng,
        &p.olivia,
        Address::parse("olivia@example.org").unwrap(),
        list(),
        Policy::default(),
        now(),
    )
    .unwrap();
    let (status, body) = server.post("/v1/lists", &genesis, None).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
    let (status, body) = server.post("/v1/lists", &genesis, Some("wrong")).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
    let mut roster = server.create_list(Policy::default()).await;
    assert_eq!(roster.head_seq(), 2);

    // The same genesis again is harmless; another genesis for the list is a conflict.
    let (status, _) = server
        .post("/v1/lists", &roster.ops()[0], Some(ADMIN))
        .await;
    assert_eq!(status, 201);
    let other = hushlist_core::roster::sign_genesis(
        OsRng,
        &p.bob,
        Address::parse("bob@example.org").unwrap(),
        list(),
        Policy::default(),
        now(),
    )
    .unwrap();
    let (status, body) = server.post("/v1/lists", &other, Some(ADMIN)).await;
    assert_eq!((status, code(&body)), (409, "list_exists"));

    let replay = roster.ops()[1].clone();
    let (status, body) = server.send_op(&replay).await;
    assert_eq!((status, code(&body)), (409, "replayed_op"));

    let by_member = roster
        .sign_next(
            OsRng,
            &p.bob,
            now(),
            Change::Remove {
                address: Address::parse("rita@example.org").unwrap(),
            },
        )
        .unwrap();
    let (status, body) = server.send_op(&by_member).await;
    assert_eq!((status, code(&body)), (403, "not_owner"));

    let fork_base = roster.clone();
    server
        .add(&mut roster, &p.dave, "dave@example.org", Role::Member)
        .await;
    let fork = fork_base
        .sign_next(
            OsRng,
            &p.olivia,
            now(),
            Change::Remove {
                address: Address::parse("rita@example.org").unwrap(),
            },
        )
        .unwrap();
    let (status, body) = server.send_op(&fork).await;
    assert_eq!((status, code(&body)), (409, "fork"));

    let (status, text) = server
        .get_with(&format!("/v1/lists/{LIST}/ops?since=1"), ADMIN)
        .await;
    assert_eq!(status, 200);
    let ops: RosterOps = serde_json::from_str(&text).unwrap();
    assert_eq!((ops.head_seq, ops.ops.len()), (3, 2));
    assert_eq!(ops.ops[1], roster.ops()[3]);

    let (status, body) = server
        .post(
            &format!("/v1/lists/{LIST}/ops"),
            &serde_json::json!({"body": "!!", "signature": ""}),
            None,
        )
        .await;
    assert_eq!((status, code(&body)), (400, "malformed"));
    let (status, text) = server
        .get_with("/v1/lists/nobody@lists.example.org/ops", ADMIN)
        .await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("unknown_list"));
}

#[tokio::test]
async fn a_roster_is_shown_only_to_its_members_and_the_operators() {
    let server = TestServer::start(ServiceConfig::default()).await;
    let p = people();
    let mut roster = server.create_list(Policy::default()).await;
    let ops_path = format!("/v1/lists/{LIST}/ops");
    let names_members = |text: &str| text.contains("bob@example.org") || text.contains("QkVHSU4");

    // Without a token, or with a wrong one, nobody reads the log.
    let (status, text) = server.get(&ops_path).await;
    assert_eq!(status, 401, "{text}");
    assert!(!names_members(&text), "{text}");
    let (status, text) = server.get_with(&ops_path, "wrong").await;
    assert_eq!(status, 401, "{text}");
    // The operator and the list server (its grants token) do.
    for token in [ADMIN, GRANTS] {
        let (status, text) = server.get_with(&ops_path, token).await;
        assert_eq!(status, 200, "{text}");
        let ops: RosterOps = serde_json::from_str(&text).unwrap();
        assert_eq!(ops.ops.len(), 3);
    }

    // Members read it with a signed request; a stranger, a replay and a forgery do not.
    let read_path = format!("/v1/lists/{LIST}/ops/read");
    let read = |who| signed(who, &purpose::read_roster(&list()), &serde_json::json!({}));
    for member in [&p.olivia, &p.bob, &p.rita] {
        let (status, body) = server.post(&read_path, &read(member), None).await;
        assert_eq!(status, 200, "{body}");
        let ops: RosterOps = serde_json::from_value(body).unwrap();
        assert_eq!((ops.head_seq, ops.ops.len()), (2, 3));
    }
    let (status, body) = server.post(&read_path, &read(&p.eve), None).await;
    assert_eq!((status, code(&body)), (401, "bad_signature"), "{body}");
    assert!(!names_members(&body.to_string()), "{body}");
    let bobs = read(&p.bob);
    assert_eq!(server.post(&read_path, &bobs, None).await.0, 200);
    let (status, body) = server.post(&read_path, &bobs, None).await;
    assert_eq!((status, code(&body)), (401, "replayed"), "{body}");
    let mut forged = read(&p.bob);
    forged.signed.body = serde_json::to_vec(&serde_json::json!({"forged": true})).unwrap();
    let (status, body) = server.post(&read_path, &forged, None).await;
    assert_eq!((status, code(&body)), (401, "bad_signature"), "{body}");
    // A signature for reading one list's roster does not read another's.
    let (status, body) = server
        .post(
            "/v1/lists/other@lists.example.org/ops/read",
            &read(&p.bob),
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");

    // Once removed, a member reads the log as it was when they left (to check who signed
    // the posts they may still read) and nothing of later changes.
    server.remove(&mut roster, "bob@example.org").await;
    server
        .add(&mut roster, &p.dave, "dave@example.org", Role::Member)
        .await;
    let (status, body) = server.post(&read_path, &read(&p.bob), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.to_string().contains("dave@example.org"), "{body}");
    let ops: RosterOps = serde_json::from_value(body).unwrap();
    assert_eq!((ops.head_seq, ops.ops.len()), (3, 4));
    assert_eq!(ops.ops[..], roster.ops()[..4]);
    let (status, body) = server.post(&read_path, &read(&p.dave), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_value::<RosterOps>(body).unwrap().head_seq,
        4
    );

    // The genesis op alone is public: the list and its first owner, no member.
    let (status, text) = server.get(&format!("/v1/lists/{LIST}/genesis")).await;
    assert_eq!(status, 200, "{text}");
    let genesis: hushlist_core::api::ListGenesis = serde_json::from_str(&text).unwrap();
    assert_eq!(genesis.genesis, roster.ops()[0]);
    assert!(!names_members(&text), "{text}");
}

#[tokio::test]
async fn deposits_are_checked_idempotent_and_conflicting_ones_refused() {
    let server = TestServer::start(ServiceConfig::default()).await;
    server.create_list(Policy::default()).await;
    let p = people();
    let (key_id, session_key) = new_key();
    let (status, body) = server.deposit(&p.bob, &key_id, &session_key).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["roster_seq"], 2);
    assert_eq!(server.deposit(&p.bob, &key_id, &session_key).await.0, 200);
    let (status, body) = server
        .deposit(&p.bob, &key_id, &SessionKey::generate(OsRng))
        .await;
    assert_eq!((status, code(&body)), (409, "key_id_taken"));
    let (status, body) = server.deposit(&p.olivia, &key_id, &session_key).await;
    assert_eq!((status, code(&body)), (409, "key_id_taken"));

    let (status, body) = server
        .deposit(&p.rita, &KeyId::generate(OsRng), &session_key)
        .await;
    assert_eq!(
        (status, code(&body)),
        (403, "not_allowed"),
        "readers may not post"
    );
    let (status, body) = server
        .deposit(&p.eve, &KeyId::generate(OsRng), &session_key)
        .await;
    assert_eq!((status, code(&body)), (401, "bad_signature"));

    // A deposit sealed to someone other than the key server is refused with a hint.
    let key_id = KeyId::generate(OsRng);
    let body = hushlist_core::api::Deposit::seal(
        OsRng,
        &p.bob,
        p.bob.cert(),
        &list(),
        &key_id,
        &SessionKey::generate(OsRng),
        now(),
    )
    .unwrap();
    let request = signed(&p.bob, &purpose::deposit(&list()), &body);
    let (status, body) = server
        .post(&format!("/v1/lists/{LIST}/keys"), &request, None)
        .await;
    assert_eq!((status, code(&body)), (400, "sealed_key_invalid"));
    assert_eq!(
        body["error"]["message"],
        "the sealed deposit does not open with this key server's key; fetch /v1/server-key and seal to it"
    );
    // A bare PKESK, as clients sent before deposits were sealed, is refused: upgrade.
    let bare = Pkesk::seal(
        OsRng,
        &SessionKey::generate(OsRng),
        &server.server_cert().await,
        now(),
    )
    .unwrap();
    let body = hushlist_core::api::Deposit {
        key_id: KeyId::generate(OsRng),
        sealed_key: bare.as_bytes().to_vec(),
    };
    let request = signed(&p.bob, &purpose::deposit(&list()), &body);
    let (status, body) = server
        .post(&format!("/v1/lists/{LIST}/keys"), &request, None)
        .await;
    assert_eq!((status, code(&body)), (400, "deposit_format_outdated"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upgrade the hushlist client"),
        "{body}"
    );

    let (status, body) = server
        .post(
            &format!("/v1/lists/{LIST}/keys"),
            &serde_json::json!({"nope": 1}),
            None,
        )
        .await;
    assert_eq!((status, code(&body)), (400, "malformed"));
    let huge = "x".repeat(3 * 1024 * 1024);
    let response = server
        .http
        .post(server.url(&format!("/v1/lists/{LIST}/keys")))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(code(&body), "too_large");
}

#[tokio::test]
async fn members_fetch_a_pkesk_that_opens_the_post() {
    let server = TestServer::start(ServiceConfig::default()).await;
    server.create_list(Policy::default()).await;
    let p = people();
    let text = format!("From: bob@example.org\r\nTo: {LIST}\r\nSubject: over tcp\r\n\r\nhello\r\n");
    let sealed = seal(OsRng, text.as_bytes(), &p.bob, &server.url("")).unwrap();
    assert_eq!(
        server
            .deposit(&p.bob, &sealed.key_id, &sealed.session_key)
            .await
            .0,
        201
    );
    for member in [&p.olivia, &p.bob, &p.rita] {
        let (status, body) = server.fetch(member, &sealed.key_id).await;
        assert_eq!(status, 200, "{body}");
        let release: KeyRelease = serde_json::from_value(body).unwrap();
        // Who deposited the key, so the member's client can hold the signer to it.
        assert_eq!(&release.depositor, p.bob.fingerprint());
        let pkesk = Pkesk::from_bytes(&release.pkesk).unwrap();
        let opened = open(
            &sealed.message,
            OpenWith::Pkesk(&pkesk, member),
            &[p.bob.cert().clone()],
        )
        .unwrap();
        assert_eq!(opened.signature.valid_signer(), Some(p.bob.fingerprint()));
    }
    let (status, body) = server.fetch(&p.eve, &sealed.key_id).await;
    assert_eq!((status, code(&body)), (401, "bad_signature"));
    let (status, body) = server.fetch(&p.bob, &KeyId::generate(OsRng)).await;
    assert_eq!((status, code(&body)), (404, "unknown_key"));
    let (status, body) = server
        .post(
            &format!("/v1/lists/{LIST}/keys/not-a-key-id"),
            &serde_json::json!({}),
            None,
        )
        .await;
    assert_eq!((status, code(&body)), (400, "bad_key_id"));
}

#[tokio::test]
async fn replayed_stale_forged_and_misdirected_requests_are_refused() {
    let server = TestServer::start(ServiceConfig::default()).await;
    server.create_list(Policy::default()).await;
    let p = people();
    let (key_id, session_key) = new_key();
    server.deposit(&p.bob, &key_id, &session_key).await;

    let request = signed(
        &p.bob,
        &purpose::fetch_key(&list(), &key_id),
        &serde_json::json!({}),
    );
    assert_eq!(server.fetch_with(&key_id, &request).await.0, 200);
    let (status, body) = server.fetch_with(&key_id, &request).await;
    assert_eq!((status, code(&body)), (401, "replayed"));

    let stale = hushlist_core::request::SignedRequest::sign(
        OsRng,
        &p.bob,
        &purpose::fetch_key(&list(), &key_id),
        b"{}".to_vec(),
        now() - 600,
    )
    .unwrap();
    let (status, body) = server.fetch_with(&key_id, &stale).await;
    assert_eq!((status, code(&body)), (401, "stale_request"));

    // Eve signs but claims to be Bob.
    let mut forged = signed(
        &p.eve,
        &purpose::fetch_key(&list(), &key_id),
        &serde_json::json!({}),
    );
    forged.signer = p.bob.fingerprint().clone();
    let (status, body) = server.fetch_with(&key_id, &forged).await;
    assert_eq!((status, code(&body)), (401, "bad_signature"));

    // A request signed for another key id is refused at this one.
    let other = KeyId::generate(OsRng);
    let misdirected = signed(
        &p.bob,
        &purpose::fetch_key(&list(), &other),
        &serde_json::json!({}),
    );
    let (status, body) = server.fetch_with(&key_id, &misdirected).await;
    assert_eq!((status, code(&body)), (401, "wrong_purpose"));
}

#[tokio::test]
async fn a_member_removed_under_current_roster_policy_is_refused_old_posts() {
    let server = TestServer::start(ServiceConfig::default()).await;
    let mut roster = server
        .create_list(Policy {
            key_follows: KeyFollows::CurrentRoster,
            ..Policy::default()
        })
        .await;
    let p = people();
    let (key_id, session_key) = new_key();
    server.deposit(&p.olivia, &key_id, &session_key).await;
    assert_eq!(server.fetch(&p.bob, &key_id).await.0, 200);
    server.remove(&mut roster, "bob@example.org").await;
    let (status, body) = server.fetch(&p.bob, &key_id).await;
    assert_eq!((status, code(&body)), (403, "not_allowed"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no longer a member")
    );
}

#[tokio::test]
async fn under_posting_roster_policy_a_removed_member_keeps_old_posts() {
    let server = TestServer::start(ServiceConfig::default()).await;
    let mut roster = server
        .create_list(Policy {
            key_follows: KeyFollows::PostingRoster,
            ..Policy::default()
        })
        .await;
    let p = people();
    let (key_id, session_key) = new_key();
    server.deposit(&p.olivia, &key_id, &session_key).await;
    server.remove(&mut roster, "bob@example.org").await;
    assert_eq!(server.fetch(&p.bob, &key_id).await.0, 200);
}

#[tokio::test]
async fn a_member_added_later_is_refused_old_posts_when_policy_says_so() {
    for (new_read_old, expected) in [(false, 403), (true, 200)] {
        let server = TestServer::start(ServiceConfig::default()).await;
        let mut roster = server
            .create_list(Policy {
                new_members_read_old: new_read_old,
                ..Policy::default()
            })
            .await;
        let p = people();
        let (key_id, session_key) = new_key();
        server.deposit(&p.olivia, &key_id, &session_key).await;
        server
            .add(&mut roster, &p.dave, "dave@example.org", Role::Member)
            .await;
        let (status, body) = server.fetch(&p.dave, &key_id).await;
        assert_eq!(status, expected, "{body}");
    }
}

#[tokio::test]
async fn grants_need_the_list_server_token_and_refuse_non_members_with_a_reason() {
    let server = TestServer::start(ServiceConfig {
        max_grants_per_call: 3,
        ..ServiceConfig::default()
    })
    .await;
    server.create_list(Policy::default()).await;
    let p = people();
    let (key_id, session_key) = new_key();
    server.deposit(&p.olivia, &key_id, &session_key).await;
    let path = format!("/v1/lists/{LIST}/keys/{key_id}/grants");
    let request = GrantRequest {
        recipients: vec![
            p.bob.fingerprint().clone(),
            p.rita.fingerprint().clone(),
            p.eve.fingerprint().clone(),
        ],
    };
    let (status, body) = server.post(&path, &request, None).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
    // Neither a wrong token nor the operator's admin token grants anything: only the list
    // server's grants token does.
    for wrong in ["grants-token-for-tesTs", ADMIN] {
        let (status, body) = server.post(&path, &request, Some(wrong)).await;
        assert_eq!((status, code(&body)), (401, "unauthorized"), "{wrong}");
    }
    let (status, body) = server.post(&path, &request, Some(GRANTS)).await;
    assert_eq!(status, 200, "{body}");
    let grants: Grants = serde_json::from_value(body).unwrap();
    assert_eq!(grants.granted.len(), 2);
    assert_eq!(grants.refused.len(), 1);
    assert_eq!(&grants.refused[0].fingerprint, p.eve.fingerprint());
    assert!(grants.refused[0].reason.contains("not a member"));
    let for_rita = grants
        .granted
        .iter()
        .find(|g| &g.fingerprint == p.rita.fingerprint())
        .unwrap();
    assert_eq!(
        Pkesk::from_bytes(&for_rita.pkesk)
            .unwrap()
            .unseal(&p.rita)
            .unwrap(),
        session_key
    );

    let too_many = GrantRequest {
        recipients: vec![p.bob.fingerprint().clone(); 4],
    };
    let (status, body) = server.post(&path, &too_many, Some(GRANTS)).await;
    assert_eq!((status, code(&body)), (413, "too_large"));
}

#[tokio::test]
async fn revocation_destroys_the_key_and_the_audit_log_tells_the_story() {
    let server = TestServer::start(ServiceConfig::default()).await;
    server.create_list(Policy::default()).await;
    let p = people();
    let (key_id, session_key) = new_key();
    server.deposit(&p.bob, &key_id, &session_key).await;
    assert_eq!(server.fetch(&p.rita, &key_id).await.0, 200);
    // A stranger is turned away as a forgery is, before any key is looked at.
    let (status, body) = server.fetch(&p.eve, &key_id).await;
    assert_eq!((status, code(&body)), (401, "bad_signature"));

    let revoke_path = format!("/v1/lists/{LIST}/keys/{key_id}/revoke");
    let by_reader = signed(
        &p.rita,
        &purpose::revoke(&list(), &key_id),
        &serde_json::json!({}),
    );
    let (status, body) = server.post(&revoke_path, &by_reader, None).await;
    assert_eq!((status, code(&body)), (403, "not_allowed"));
    let by_sender = signed(
        &p.bob,
        &purpose::revoke(&list(), &key_id),
        &serde_json::json!({}),
    );
    let (status, body) = server.post(&revoke_path, &by_sender, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server
            .state
            .store()
            .session_key(key_id.as_str())
            .await
            .unwrap(),
        None,
        "the row is deleted"
    );

    let (status, body) = server.fetch(&p.rita, &key_id).await;
    assert_eq!((status, code(&body)), (410, "key_destroyed"));
    let again = signed(
        &p.bob,
        &purpose::revoke(&list(), &key_id),
        &serde_json::json!({}),
    );
    assert_eq!(server.post(&revoke_path, &again, None).await.0, 410);

    let audit_path = format!("/v1/lists/{LIST}/keys/{key_id}/audit");
    let by_member = signed(
        &p.rita,
        &purpose::audit(&list(), &key_id),
        &serde_json::json!({}),
    );
    assert_eq!(server.post(&audit_path, &by_member, None).await.0, 403);
    let by_owner = signed(
        &p.olivia,
        &purpose::audit(&list(), &key_id),
        &serde_json::json!({}),
    );
    let (status, body) = server.post(&audit_path, &by_owner, None).await;
    assert_eq!(status, 200, "{body}");
    let log: AuditLog = serde_json::from_value(body).unwrap();
    let story: Vec<_> = log
        .entries
        .iter()
        .map(|e| (e.action.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        story,
        [
            ("deposit", "stored"),
            ("release", "released"),
            ("revoke", "refused"),
            ("revoked", "destroyed")
        ]
    );
    // The records form a chain under a head the server signs with its own key.
    let head = verify_log(&list(), &log, &server.server_cert().await).unwrap();
    assert_eq!((head.seq, head.hash), (4, log.entries[3].hash));
    assert!(verify_log(&list(), &log, p.olivia.cert()).is_err());
}

#[tokio::test]
async fn expired_keys_are_destroyed_and_answer_410() {
    let server = TestServer::start(ServiceConfig::default()).await;
    // Expiry is counted in whole seconds (expired once `expires_at <= now`): with a lifetime
    // of 2 s, the fetch right after the deposit is in time even when a second ticks over in
    // between (with 1 s it failed about once in 60 runs), and 3.1 s later it is not.
    server
        .create_list(Policy {
            key_lifetime_secs: Some(2),
            ..Policy::default()
        })
        .await;
    let p = people();
    let (key_a, session_key_a) = new_key();
    let (key_b, session_key_b) = new_key();
    server.deposit(&p.bob, &key_a, &session_key_a).await;
    server.deposit(&p.bob, &key_b, &session_key_b).await;
    assert_eq!(server.fetch(&p.rita, &key_a).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let (status, body) = server.fetch(&p.rita, &key_a).await;
    assert_eq!((status, code(&body)), (410, "key_destroyed"));
    assert_eq!(
        server.state.expire_due().await.unwrap(),
        1,
        "the sweep destroys the other one"
    );
    assert_eq!(server.state.store().count_session_keys().await.unwrap(), 0);
    assert_eq!(server.fetch(&p.rita, &key_b).await.0, 410);
}

/// A key server allowing each identity three requests (and then one every 1,000 s), with the
/// list created and a key Bob deposited (his first request).
async fn three_requests_each_and_bob_deposited() -> (TestServer, KeyId) {
    let server = TestServer::start(ServiceConfig {
        rate_per_sec: 0.001,
        rate_burst: 3.0,
        ..ServiceConfig::default()
    })
    .await;
    server.create_list(Policy::default()).await;
    let (key_id, session_key) = new_key();
    assert_eq!(
        server.deposit(&people().bob, &key_id, &session_key).await.0,
        201
    );
    (server, key_id)
}

#[tokio::test]
async fn each_identity_is_rate_limited() {
    let (server, key_id) = three_requests_each_and_bob_deposited().await;
    let p = people();
    assert_eq!(server.fetch(&p.bob, &key_id).await.0, 200);
    assert_eq!(server.fetch(&p.bob, &key_id).await.0, 200);
    let (status, body) = server.fetch(&p.bob, &key_id).await;
    assert_eq!((status, code(&body)), (429, "rate_limited"));
    assert_eq!(
        server.fetch(&p.rita, &key_id).await.0,
        200,
        "others are not affected"
    );
}

#[tokio::test]
async fn forgeries_naming_a_member_do_not_use_up_their_allowance() {
    let (server, key_id) = three_requests_each_and_bob_deposited().await;
    let p = people();
    // Eve signs five requests but names Bob as the signer.
    for _ in 0..5 {
        let mut forged = signed(
            &p.eve,
            &purpose::fetch_key(&list(), &key_id),
            &serde_json::json!({}),
        );
        forged.signer = p.bob.fingerprint().clone();
        let (status, body) = server.fetch_with(&key_id, &forged).await;
        assert_eq!((status, code(&body)), (401, "bad_signature"));
    }
    // Bob's deposit took one of his three; his own two fetches still go through.
    assert_eq!(server.fetch(&p.bob, &key_id).await.0, 200);
    assert_eq!(server.fetch(&p.bob, &key_id).await.0, 200);
    let (status, body) = server.fetch(&p.bob, &key_id).await;
    assert_eq!((status, code(&body)), (429, "rate_limited"));
}

/// Whether any of the database's files (`keyserver.db`, `-wal`, `-shm`, and its keyring
/// `keyserver.db.keyring` with its own) holds `needle`, read while the server runs, as
/// someone copying the data directory would.
fn database_files_hold(dir: &std::path::Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        name.starts_with("keyserver.db")
            && std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_or_expired_key_leaves_no_bytes_in_the_database_files() {
    let server = TestServer::start(ServiceConfig::default()).await;
    let mut roster = server.create_list(Policy::default()).await;
    let p = people();
    let store = server.state.store().clone();
    // A key's sealed bytes, and those of the wrapping key it is sealed under.
    let sealed_bytes = |key_id: KeyId| {
        let store = store.clone();
        async move {
            let row = store.session_key(key_id.as_str()).await.unwrap().unwrap();
            let wrapping_key = store
                .wrapping_key(row.wrapping_key_id.as_deref().unwrap())
                .await
                .unwrap()
                .unwrap();
            (row.sealed_key, wrapping_key.sealed)
        }
    };
    let (revoked, session_key) = new_key();
    server.deposit(&p.bob, &revoked, &session_key).await;
    let (kept, session_key) = new_key();
    server.deposit(&p.bob, &kept, &session_key).await;
    let (revoked_bytes, revoked_wrapping_bytes) = sealed_bytes(revoked.clone()).await;
    assert!(database_files_hold(server.dir.path(), &revoked_bytes));
    assert!(database_files_hold(
        server.dir.path(),
        &revoked_wrapping_bytes
    ));

    let by_sender = signed(
        &p.bob,
        &purpose::revoke(&list(), &revoked),
        &serde_json::json!({}),
    );
    let revoke_path = format!("/v1/lists/{LIST}/keys/{revoked}/revoke");
    assert_eq!(server.post(&revoke_path, &by_sender, None).await.0, 200);
    assert!(
        !database_files_hold(server.dir.path(), &revoked_bytes),
        "the revoked key's sealed bytes are still in a database file"
    );
    assert!(
        !database_files_hold(server.dir.path(), &revoked_wrapping_bytes),
        "the revoked key's wrapping key is still in a file of the keyring"
    );
    // The other key of that list and day, re-sealed under a new wrapping key, is found, so
    // the search works.
    let (kept_bytes, kept_wrapping_bytes) = sealed_bytes(kept.clone()).await;
    assert_ne!(kept_wrapping_bytes, revoked_wrapping_bytes);
    assert!(database_files_hold(server.dir.path(), &kept_bytes));
    assert!(database_files_hold(server.dir.path(), &kept_wrapping_bytes));

    // The same for a key destroyed by the expiry sweep.
    let policy = Policy {
        key_lifetime_secs: Some(1),
        ..Policy::default()
    };
    server
        .change(&mut roster, Change::SetPolicy { policy })
        .await;
    let (expiring, session_key) = new_key();
    server.deposit(&p.bob, &expiring, &session_key).await;
    let (expiring_bytes, expiring_wrapping_bytes) = sealed_bytes(expiring.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(server.state.expire_due().await.unwrap(), 1);
    assert!(
        !database_files_hold(server.dir.path(), &expiring_bytes),
        "the expired key's sealed bytes are still in a database file"
    );
    assert!(
        !database_files_hold(server.dir.path(), &expiring_wrapping_bytes),
        "the expired key's day's wrapping key is still in a file of the keyring"
    );
    assert!(database_files_hold(server.dir.path(), &kept_bytes));
    assert!(database_files_hold(server.dir.path(), &kept_wrapping_bytes));
}

#[tokio::test]
async fn the_database_alone_holds_no_session_key_and_restart_keeps_deposits() {
    let server = TestServer::start(ServiceConfig::default()).await;
    server.create_list(Policy::default()).await;
    let p = people();
    let keys: Vec<_> = (0..20).map(|_| new_key()).collect();
    for (key_id, session_key) in &keys {
        assert_eq!(server.deposit(&p.bob, key_id, session_key).await.0, 201);
    }
    let dir = server.stop();
    let mut dump = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("keyserver.db")
        {
            dump.extend(std::fs::read(path).unwrap());
        }
    }
    assert!(dump.len() > 10_000, "the database files were found");
    for (_, session_key) in &keys {
        let needle = session_key.as_bytes();
        assert!(
            !dump.windows(needle.len()).any(|w| w == needle),
            "a session key is in the database in clear"
        );
    }

    let restarted = TestServer::start_in(dir, ServiceConfig::default()).await;
    for (key_id, session_key) in &keys {
        let (status, body) = restarted.fetch(&p.rita, key_id).await;
        assert_eq!(status, 200, "{body}");
        let release: KeyRelease = serde_json::from_value(body).unwrap();
        assert_eq!(
            &Pkesk::from_bytes(&release.pkesk)
                .unwrap()
                .unseal(&p.rita)
                .unwrap(),
            session_key
        );
    }
}

#[tokio::test]
async fn broken_http_requests_get_a_status_and_a_json_error() {
    let server = TestServer::start(ServiceConfig::default()).await;
    server.create_list(Policy::default()).await;
    let p = people();
    let (key_id, session_key) = new_key();
    server.deposit(&p.bob, &key_id, &session_key).await;
    let keys = server.url(&format!("/v1/lists/{LIST}/keys/{key_id}"));
    let raw = |body: Vec<u8>| {
        let request = server.http.post(&keys).body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.expect("a JSON error body");
            (status, body)
        }
    };
    for body in [
        b"{\"signer\": ".to_vec(),
        b"not json at all".to_vec(),
        b"\xff\xfe\x00garbage".to_vec(),
        b"{} trailing".to_vec(),
        Vec::new(),
        // Deeper than serde_json's recursion limit: refused, not a stack overflow.
        [vec![b'['; 100_000], vec![b']'; 100_000]].concat(),
    ] {
        let (status, body) = raw(body).await;
        assert_eq!((status, code(&body)), (400, "malformed"), "{body}");
    }

    // A path that does not decode: the declared endpoint's extractor answers in JSON too.
    let response = server
        .http
        .post(server.url(&format!("/v1/lists/%FF%FE/keys/{key_id}")))
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    assert_eq!((status, code(&body)), (400, "bad_path"), "{body}");

    // A well-formed request for a key nobody deposited, and for a list nobody made.
    let unknown = KeyId::generate(OsRng);
    let (status, body) = server.fetch(&p.rita, &unknown).await;
    assert_eq!((status, code(&body)), (404, "unknown_key"), "{body}");
    let nobody = Address::parse("nobody@lists.example.org").unwrap();
    let request = signed(
        &p.rita,
        &purpose::fetch_key(&nobody, &unknown),
        &serde_json::json!({}),
    );
    let (status, body) = server
        .post(
            &format!("/v1/lists/{nobody}/keys/{unknown}"),
            &request,
            None,
        )
        .await;
    assert_eq!((status, code(&body)), (404, "unknown_list"), "{body}");
    let (status, body) = server
        .post(
            &format!("/v1/lists/{LIST}/keys/not-a-key-id"),
            &request,
            None,
        )
        .await;
    assert_eq!((status, code(&body)), (400, "bad_key_id"), "{body}");

    // Unknown paths and methods.
    let (status, text) = server.get("/v2/everything").await;
    assert_eq!(status, 404);
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(code(&body), "no_such_endpoint");
    let response = server.http.delete(&keys).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    assert_eq!(code(&body), "method_not_allowed");
}

/// The value of the sample `name` (with its labels, if any) in a `/metrics` scrape.
async fn scraped(server: &TestServer, name: &str) -> i64 {
    let (status, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics:\n{text}"))
}

#[tokio::test]
async fn the_keys_stored_gauge_follows_deposits_and_destructions_and_survives_a_restart() {
    const STORED: &str = "hushlist_keyserver_keys_stored";
    let server = TestServer::start(ServiceConfig::default()).await;
    server.create_list(Policy::default()).await;
    let p = people();
    assert_eq!(scraped(&server, STORED).await, 0);
    let keys: Vec<(KeyId, SessionKey)> = (0..3).map(|_| new_key()).collect();
    for (key_id, session_key) in &keys {
        assert_eq!(server.deposit(&p.bob, key_id, session_key).await.0, 201);
    }
    // The same deposit again is answered but stores nothing.
    assert_eq!(server.deposit(&p.bob, &keys[0].0, &keys[0].1).await.0, 200);
    assert_eq!(scraped(&server, STORED).await, 3);
    assert_eq!(
        scraped(&server, "hushlist_keyserver_deposits_total").await,
        3
    );

    let revoke = |key_id: &KeyId| {
        let path = format!("/v1/lists/{LIST}/keys/{key_id}/revoke");
        let request = signed(
            &p.bob,
            &purpose::revoke(&list(), key_id),
            &serde_json::json!({}),
        );
        (path, request)
    };
    let (path, request) = revoke(&keys[1].0);
    assert_eq!(server.post(&path, &request, None).await.0, 200);
    // Revoking it again destroys nothing more.
    let (path, request) = revoke(&keys[1].0);
    server.post(&path, &request, None).await;
    assert_eq!(scraped(&server, STORED).await, 2);
    assert_eq!(
        scraped(&server, "hushlist_keyserver_revocations_total").await,
        1
    );

    // A new process counts what the store holds once, as it starts.
    let server = TestServer::start_in(server.stop(), ServiceConfig::default()).await;
    assert_eq!(scraped(&server, STORED).await, 2);
    assert_eq!(
        scraped(&server, "hushlist_keyserver_deposits_total").await,
        0
    );
    let (key_id, session_key) = new_key();
    assert_eq!(server.deposit(&p.bob, &key_id, &session_key).await.0, 201);
    assert_eq!(scraped(&server, STORED).await, 3);
}
