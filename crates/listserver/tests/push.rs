//! Push mode end to end in one process: a real key server over HTTP grants each member's
//! PKESK, the list server splices it and delivers to Postfix's smtp-sink, and each member's
//! copy opens with their own secret key (with gpg too); a member the key server refuses is
//! recorded as failed, not sent a copy. The post carries outer headers its sender planted
//! (issue 25, hole 5); no copy does: the list writes its own.

mod common;

use std::time::Duration;

use common::*;
use hushlist_core::api::{Deposit, purpose};
use hushlist_core::request::SignedRequest;
use hushlist_core::roster::{
    Change, DeliveryMode, FromRewrite, KeyFollows, Policy, Role, Roster, sign_genesis,
};
use hushlist_core::{Address, SecretIdentity};
use hushlist_envelope::{OpenWith, open, seal};
use hushlist_listserver::delivery::{Deliverer, DeliveryConfig, KeyServerAccess, RelayConfig};
use hushlist_listserver::smtp::PostSink as _;
use hushlist_store::DeliveryState;
use hushlist_testkit::http::post_json;
use hushlist_testkit::now;
use rand::rngs::OsRng;
use tokio::sync::watch;

/// Decrypts with gpg holding only `member`'s secret key and the sender's certificate;
/// returns stdout after checking the exit code (gpg prints tampered plaintext before failing).
fn gpg_decrypt(member: &SecretIdentity, sender: &hushlist_core::Cert, message: &[u8]) -> Vec<u8> {
    let gpg = hushlist_peers::Gpg::new();
    gpg.import(member.to_armored_secret().as_bytes());
    gpg.import(sender.to_armored().as_bytes());
    gpg.run_ok(&["--decrypt"], message).stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_member_gets_a_copy_that_opens_with_their_own_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_server = start_key_server(dir.path()).await;
    let list_server = list_server(dir.path()).await;
    let http = reqwest::Client::new();
    let list = Address::parse(LIST).unwrap();

    let owner = SecretIdentity::generate(OsRng, OWNER).unwrap();
    let policy = Policy {
        delivery: DeliveryMode::Push,
        key_follows: KeyFollows::CurrentRoster,
        // The list's own From, whatever example.org's DMARC policy (kept Froms: dmarc.rs).
        from_rewrite: FromRewrite::Always,
        ..Policy::default()
    };
    let genesis = sign_genesis(
        OsRng,
        &owner,
        Address::parse(OWNER).unwrap(),
        list.clone(),
        policy,
        now(),
    )
    .unwrap();
    let mut roster = Roster::genesis(genesis.clone()).unwrap();
    send_op(&http, format!("{key_server}/v1/lists"), &genesis).await;
    list_server.rosters().create(genesis).await.unwrap();
    let members: Vec<(String, SecretIdentity)> = ["alice", "bob", "carol"]
        .iter()
        .map(|name| {
            let address = format!("{name}@example.net");
            let key = SecretIdentity::generate(OsRng, &address).unwrap();
            (address, key)
        })
        .collect();
    for (address, key) in &members {
        let op = roster
            .sign_next(OsRng, &owner, now(), adding(address, key, Role::Reader))
            .unwrap();
        roster.apply(op.clone()).unwrap();
        send_op(&http, format!("{key_server}/v1/lists/{LIST}/ops"), &op).await;
        list_server.rosters().append(&list, op).await.unwrap();
    }

    // The owner seals a post and deposits its key, as `hushlist send` does.
    let text = format!(
        "From: Olivia <{OWNER}>\r\nTo: {LIST}\r\nSubject: pushed\r\n\r\nfor members only\r\n"
    );
    let sealed = seal(OsRng, text.as_bytes(), &owner, &key_server).unwrap();
    let server_key: hushlist_core::api::ServerKey = http
        .get(format!("{key_server}/v1/server-key"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let server_cert = hushlist_core::Cert::from_bytes(server_key.cert.as_bytes()).unwrap();
    let deposit = Deposit::seal(
        OsRng,
        &owner,
        &server_cert,
        &list,
        &sealed.key_id,
        &sealed.session_key,
        now(),
    )
    .unwrap();
    let request = SignedRequest::sign(
        OsRng,
        &owner,
        &purpose::deposit(&list),
        serde_json::to_vec(&deposit).unwrap(),
        now(),
    )
    .unwrap();
    let url = format!("{key_server}/v1/lists/{LIST}/keys");
    let (status, body) = post_json(&http, url, &request, None).await.unwrap();
    assert_eq!(status, 201, "{body}");

    // Carol is removed on the key server only (the list server has not heard yet): the key
    // server must refuse her key, and the list server must not send her a copy.
    let carol = Address::parse("carol@example.net").unwrap();
    let removal = roster
        .sign_next(
            OsRng,
            &owner,
            now(),
            Change::Remove {
                address: carol.clone(),
            },
        )
        .unwrap();
    send_op(&http, format!("{key_server}/v1/lists/{LIST}/ops"), &removal).await;

    let post_id = queue_id(
        &list_server
            .accept(
                Some(&Address::parse(OWNER).unwrap()),
                std::slice::from_ref(&list),
                with_planted_outer_headers(&sealed.message, OWNER),
            )
            .await
            .unwrap(),
    );
    let sink = SmtpSink::start(free_port(), &dir.path().join("sink"), &[]);
    let mut config = DeliveryConfig::new(RelayConfig {
        host: "127.0.0.1".into(),
        port: sink.port,
        helo_name: "lists.example.org".into(),
        timeout: Duration::from_secs(10),
        starttls: None,
    });
    config.dns_resolver = hushlist_listserver::delivery::DnsResolver::Off;
    config.poll_interval = Duration::from_millis(100);
    config.public_url = Some("https://lists.example.org".into());
    config.key_server = Some(KeyServerAccess {
        url: key_server.clone(),
        grants_token: GRANTS_TOKEN.into(),
    });
    let (_stop, stopped) = watch::channel(false);
    Deliverer::new(&list_server, config).spawn(stopped);
    wait_until(Duration::from_secs(60), "the queue to drain", || async {
        list_server.store().delivery_counts().await.unwrap().pending == 0
    })
    .await;

    let transactions = sink.transactions();
    let copy_for = |address: &str| {
        let found: Vec<_> = transactions
            .iter()
            .filter(|t| t.rcpt_to == [address.to_owned()])
            .collect();
        assert_eq!(found.len(), 1, "one copy for {address}");
        let (local, domain) = address.split_once('@').unwrap();
        assert_eq!(
            found[0].mail_from,
            format!("team-bounces+{local}={domain}@lists.example.org")
        );
        found[0]
            .message
            .replace('\n', "\r\n")
            .replace("\r\r\n", "\r\n")
            .into_bytes()
    };
    for (address, key) in members.iter().take(2) {
        let copy = copy_for(address);
        let text = String::from_utf8_lossy(&copy);
        // The owner's certificate names no one but the address, so the list names them so.
        assert_list_wrote_outer_headers(&text, OWNER, OWNER);
        assert!(
            text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
            "{text}"
        );
        let opened = open(&copy, OpenWith::Identity(key), &[owner.cert().clone()]).unwrap();
        assert_eq!(opened.signature.valid_signer(), Some(owner.fingerprint()));
        assert!(String::from_utf8_lossy(&opened.message).contains("for members only"));
        // The copy is a standard PGP/MIME message: gpg opens it with the member's key alone.
        let plain = gpg_decrypt(key, owner.cert(), &copy);
        assert!(String::from_utf8_lossy(&plain).contains("for members only"));
        // And nobody else's key opens it.
        let other = &members[if address.starts_with("alice") { 1 } else { 0 }].1;
        assert!(open(&copy, OpenWith::Identity(other), &[]).is_err());
    }
    assert_list_wrote_outer_headers(&String::from_utf8_lossy(&copy_for(OWNER)), OWNER, OWNER);
    assert!(
        transactions
            .iter()
            .all(|t| t.rcpt_to != [carol.to_string()])
    );
    let row = list_server
        .store()
        .delivery(post_id, carol.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, DeliveryState::Failed);
    assert!(
        row.last_error
            .as_deref()
            .unwrap()
            .starts_with("the key server refused the key"),
        "{row:?}"
    );
}
