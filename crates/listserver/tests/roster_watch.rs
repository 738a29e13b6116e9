//! The list server compares its rosters with a real key server's over HTTP and tells the
//! owners by mail when they differ for longer than one check.

mod common;

use std::time::Duration;

use common::*;
use hushlist_core::roster::{Policy, Role, Roster, sign_genesis};
use hushlist_core::{Address, SecretIdentity};
use hushlist_listserver::delivery::KeyServerAccess;
use hushlist_listserver::roster_watch::RosterWatch;
use hushlist_testkit::now;
use rand::rngs::OsRng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_are_told_once_when_the_key_server_has_an_op_the_list_server_missed() {
    let dir = tempfile::tempdir().unwrap();
    let key_server = start_key_server(dir.path()).await;
    let server = list_server(dir.path()).await;
    let http = reqwest::Client::new();
    let list = Address::parse(LIST).unwrap();
    let owner = SecretIdentity::generate(OsRng, OWNER).unwrap();
    let genesis = sign_genesis(
        OsRng,
        &owner,
        Address::parse(OWNER).unwrap(),
        list.clone(),
        Policy::default(),
        now(),
    )
    .unwrap();
    let mut roster = Roster::genesis(genesis.clone()).unwrap();
    send_op(&http, format!("{key_server}/v1/lists"), &genesis).await;
    server.rosters().create(genesis).await.unwrap();

    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let access = KeyServerAccess {
        url: key_server.clone(),
        grants_token: GRANTS_TOKEN.into(),
    };
    RosterWatch::new(&server, &access, Duration::from_millis(100)).spawn(stopped);
    // In step: nothing to say.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(server.store().unsent_outbox().await.unwrap().is_empty());

    // The owner's add reaches the key server only.
    let member = SecretIdentity::generate(OsRng, "alice@example.net").unwrap();
    let op = roster
        .sign_next(
            OsRng,
            &owner,
            now(),
            adding("alice@example.net", &member, Role::Member),
        )
        .unwrap();
    roster.apply(op.clone()).unwrap();
    send_op(&http, format!("{key_server}/v1/lists/{LIST}/ops"), &op).await;
    wait_until(Duration::from_secs(10), "the owners' notice", || async {
        !server.store().unsent_outbox().await.unwrap().is_empty()
    })
    .await;
    // Checks go on, but the same difference is reported once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let outbox = server.store().unsent_outbox().await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].0.recipient, OWNER);
    let notice = String::from_utf8(outbox[0].0.message.clone()).unwrap();
    assert!(notice.contains("rosters differ"), "{notice}");
    assert!(
        notice.contains("the key server's roster is at seq 1, the list server's at seq 0"),
        "{notice}"
    );
    assert!(
        notice.contains(&format!("hushlist list sync {LIST}")),
        "{notice}"
    );

    // Once the list server has the op too, the watch is quiet.
    server.rosters().append(&list, op).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.store().unsent_outbox().await.unwrap().len(), 1);
}
