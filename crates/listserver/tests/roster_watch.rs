//! The list server compares its rosters with a real key server's over HTTP and tells the
//! owners by mail when they differ for longer than one check. Each "nothing was said" is
//! checked only after a notice about a control list shows the watch has been round.

mod common;

use std::time::Duration;

use common::*;
use hushlist_core::roster::{Policy, Role, Roster, SignedOp, sign_genesis};
use hushlist_core::{Address, SecretIdentity};
use hushlist_listserver::delivery::KeyServerAccess;
use hushlist_listserver::roster_watch::RosterWatch;
use hushlist_listserver::service::ListServer;
use hushlist_testkit::now;
use rand::rngs::OsRng;

/// A second list, its rosters under the test's control, that sorts after [`LIST`]: the
/// watch checks it after `LIST` in each round, so a notice about it shows that a whole round
/// of checks ran, `LIST` included.
const CONTROL: &str = "watch-control@lists.example.org";

/// Queued notices about `list`.
async fn notices_about(server: &ListServer, list: &str) -> usize {
    let needle = format!("hushlist list sync {list}");
    server
        .store()
        .unsent_outbox()
        .await
        .unwrap()
        .iter()
        .filter(|(message, _)| String::from_utf8_lossy(&message.message).contains(&needle))
        .count()
}

/// Waits (bounded) until `count` notices about `list` are queued.
async fn wait_for_notices(server: &ListServer, list: &str, count: usize, what: &str) {
    wait_until(Duration::from_secs(10), what, || async {
        notices_about(server, list).await == count
    })
    .await;
}

/// A new list owned by `owner`, with its genesis op.
fn new_list(owner: &SecretIdentity, list: &str) -> (Roster, SignedOp) {
    let genesis = sign_genesis(
        OsRng,
        owner,
        Address::parse(OWNER).unwrap(),
        Address::parse(list).unwrap(),
        Policy::default(),
        now(),
    )
    .unwrap();
    (Roster::genesis(genesis.clone()).unwrap(), genesis)
}

/// The owner's next op on `roster`, adding a member at `address`; applied to `roster`.
fn add_next(roster: &mut Roster, owner: &SecretIdentity, address: &str) -> SignedOp {
    let member = SecretIdentity::generate(OsRng, address).unwrap();
    let op = roster
        .sign_next(OsRng, owner, now(), adding(address, &member, Role::Member))
        .unwrap();
    roster.apply(op.clone()).unwrap();
    op
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_are_told_once_when_the_key_server_has_an_op_the_list_server_missed() {
    let dir = tempfile::tempdir().unwrap();
    let key_server = start_key_server(dir.path()).await;
    let server = list_server(dir.path()).await;
    let http = reqwest::Client::new();
    let ops_at_key_server = |list: &str| format!("{key_server}/v1/lists/{list}/ops");
    let owner = SecretIdentity::generate(OsRng, OWNER).unwrap();
    let (mut roster, genesis) = new_list(&owner, LIST);
    send_op(&http, format!("{key_server}/v1/lists"), &genesis).await;
    server.rosters().create(genesis).await.unwrap();
    // The control list is on the list server only, which the watch reports.
    let (mut control, control_genesis) = new_list(&owner, CONTROL);
    server
        .rosters()
        .create(control_genesis.clone())
        .await
        .unwrap();

    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let access = KeyServerAccess {
        url: key_server.clone(),
        grants_token: GRANTS_TOKEN.into(),
    };
    RosterWatch::new(&server, &access, Duration::from_millis(100)).spawn(stopped);
    // In step: nothing to say, though the watch has been round (it told about the control).
    wait_for_notices(&server, CONTROL, 1, "the notice about the control list").await;
    assert_eq!(notices_about(&server, LIST).await, 0);

    // The owner's add reaches the key server only.
    let op = add_next(&mut roster, &owner, "alice@example.net");
    send_op(&http, ops_at_key_server(LIST), &op).await;
    wait_for_notices(&server, LIST, 1, "the owners' notice").await;
    // Checks go on (a new difference on the control list is told), but the same difference
    // is reported once.
    send_op(&http, format!("{key_server}/v1/lists"), &control_genesis).await;
    let control_op = add_next(&mut control, &owner, "carol@example.net");
    send_op(&http, ops_at_key_server(CONTROL), &control_op).await;
    wait_for_notices(&server, CONTROL, 2, "the second control notice").await;
    let outbox = server.store().unsent_outbox().await.unwrap();
    let notices: Vec<String> = outbox
        .iter()
        .map(|(message, _)| String::from_utf8_lossy(&message.message).into_owned())
        .filter(|text| text.contains(&format!("hushlist list sync {LIST}")))
        .collect();
    assert_eq!(notices.len(), 1);
    let notice = &notices[0];
    assert!(
        outbox.iter().all(|(message, _)| message.recipient == OWNER),
        "{outbox:?}"
    );
    assert!(notice.contains("rosters differ"), "{notice}");
    assert!(
        notice.contains("the key server's roster is at seq 1, the list server's at seq 0"),
        "{notice}"
    );

    // Once the list server has the op too, the watch is quiet about the list, though it
    // goes on checking (a third difference on the control list is told).
    server
        .rosters()
        .append(&Address::parse(LIST).unwrap(), op)
        .await
        .unwrap();
    server
        .rosters()
        .append(&Address::parse(CONTROL).unwrap(), control_op)
        .await
        .unwrap();
    let control_op = add_next(&mut control, &owner, "dave@example.net");
    send_op(&http, ops_at_key_server(CONTROL), &control_op).await;
    wait_for_notices(&server, CONTROL, 3, "the third control notice").await;
    assert_eq!(notices_about(&server, LIST).await, 1);
}
