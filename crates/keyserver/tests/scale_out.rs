//! Two real `hushlist-keyserver` processes on one PostgreSQL database, as when the key server
//! is scaled out behind one name: they share the server's identity, rosters, keys and the
//! memory of used request nonces, so any instance can serve any request, and losing one
//! loses nothing.

mod common;

use common::*;
use hushlist_core::Cert;
use hushlist_store::scratch::{ScratchDb, postgres_admin_url};
use hushlist_testkit::http::error_code as code;

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
    let (mut first, first_url) = spawn_binary(dirs[0].path(), &["--database", db.url()]);
    let (mut second, second_url) = spawn_binary(dirs[1].path(), &["--database", db.url()]);
    let bases = [first_url, second_url];
    let http = reqwest::Client::new();
    let p = people();

    // One identity: whichever instance starts first makes it, the other loads it.
    let certs = [
        server_key_at(&http, &bases[0]).await.cert,
        server_key_at(&http, &bases[1]).await.cert,
    ];
    assert_eq!(certs[0], certs[1], "both instances are one key server");
    let server_cert = Cert::from_bytes(certs[0].as_bytes()).unwrap();

    // The list is created through the first and changed through the second.
    create_list_at(&http, &bases[0], &bases[1], &admin_token(dirs[0].path())).await;

    // Keys deposited through one instance are released by the other, and a signed request
    // seen by one is refused as a replay by the other: the nonce memory is the database's.
    let mut deposited = Vec::new();
    for i in 0..20 {
        deposited.push(deposit_at(&http, &bases[i % 2], &p.bob, &server_cert).await);
    }
    for (i, (key_id, session_key)) in deposited.iter().enumerate() {
        let (first_seen, replay_at) = (&bases[(i + 1) % 2], &bases[i % 2]);
        let request = fetch_request(&p.rita, key_id);
        fetch_expecting(&http, first_seen, &p.rita, &request, key_id, session_key).await;
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
    for (key_id, session_key) in &deposited {
        let request = fetch_request(&p.bob, key_id);
        fetch_expecting(&http, &bases[1], &p.bob, &request, key_id, session_key).await;
    }
    second.kill().unwrap();
    second.wait().unwrap();
}
