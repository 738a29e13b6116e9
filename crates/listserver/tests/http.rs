//! The list server's HTTP interface over loopback TCP with a real HTTP client: the members'
//! archive (signed requests), the shared roster endpoints, /healthz and /metrics.

mod common;

use std::sync::Arc;

use common::*;
use hushlist_core::api::{
    ArchivePage, ArchiveQuery, DeliverySwitch, JoinAsk, JoinDecision, JoinRequest, PendingJoins,
    purpose,
};
use hushlist_core::listmail::UnsubscribeKey;
use hushlist_core::request::SignedRequest;
use hushlist_core::roster::Role;
use hushlist_core::{Address, SecretIdentity};
use hushlist_listserver::http::router;
use hushlist_listserver::service::ListServer;
use hushlist_listserver::smtp::PostSink as _;
use hushlist_peers::Gpg;
use hushlist_testkit::gpg::confirmation_token;
use hushlist_testkit::http::{error_code as code, post_json};
use hushlist_testkit::now;
use rand::rngs::OsRng;
use serde_json::Value;

async fn serve(server: Arc<ListServer>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(server)).await.unwrap() });
    format!("http://{address}")
}

fn archive_request(who: &SecretIdentity, after: i64, limit: u32) -> SignedRequest {
    let list = Address::parse(LIST).unwrap();
    SignedRequest::sign(
        OsRng,
        who,
        &purpose::archive(&list),
        serde_json::to_vec(&ArchiveQuery { after, limit }).unwrap(),
        now(),
    )
    .unwrap()
}

async fn post(http: &reqwest::Client, url: String, body: &impl serde::Serialize) -> (u16, Value) {
    post_json(http, url, body, None).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_page_through_the_archive_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = list_server(dir.path()).await;
    let owner = create_list(&server, 2).await;
    let mut posted = Vec::new();
    for _ in 0..3 {
        let message = sealed_post(OWNER, &owner);
        server
            .accept(
                Some(&Address::parse(OWNER).unwrap()),
                &[Address::parse(LIST).unwrap()],
                message.clone(),
            )
            .await
            .unwrap();
        posted.push(message);
    }
    let base = serve(server).await;
    let http = reqwest::Client::new();
    let url = format!("{base}/v1/lists/{LIST}/archive");

    let (status, body) = post(&http, url.clone(), &archive_request(&owner, 0, 2)).await;
    assert_eq!(status, 200, "{body}");
    let page: ArchivePage = serde_json::from_value(body).unwrap();
    assert_eq!(page.posts.len(), 2);
    assert_eq!(
        page.posts[0].message, posted[0],
        "the ciphertext exactly as posted"
    );
    let after = page.next_after.expect("a next page");
    let (_, body) = post(&http, url.clone(), &archive_request(&owner, after, 2)).await;
    let page: ArchivePage = serde_json::from_value(body).unwrap();
    assert_eq!(page.posts.len(), 1);
    assert_eq!(page.posts[0].message, posted[2]);
    assert_eq!(page.next_after, None);

    // Someone never on the roster: answered as a forgery naming a member would be, so the
    // answer does not tell whether a key is on the list.
    let eve = SecretIdentity::generate(OsRng, "eve@example.org").unwrap();
    let (status, body) = post(&http, url.clone(), &archive_request(&eve, 0, 10)).await;
    assert_eq!((status, code(&body)), (401, "bad_signature"), "{body}");

    // The same signed request twice.
    let request = archive_request(&owner, 0, 1);
    assert_eq!(post(&http, url.clone(), &request).await.0, 200);
    let (status, body) = post(&http, url.clone(), &request).await;
    assert_eq!((status, code(&body)), (401, "replayed"), "{body}");

    // Signed for another purpose.
    let wrong = SignedRequest::sign(
        OsRng,
        &owner,
        "POST /elsewhere",
        serde_json::to_vec(&ArchiveQuery { after: 0, limit: 1 }).unwrap(),
        now(),
    )
    .unwrap();
    let (status, body) = post(&http, url.clone(), &wrong).await;
    assert_eq!((status, code(&body)), (401, "wrong_purpose"), "{body}");

    let response = http
        .post(url.clone())
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(code(&body), "malformed");

    let (status, body) = post(
        &http,
        format!("{base}/v1/lists/nobody@lists.example.org/archive"),
        &archive_request(&owner, 0, 1),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "unknown_list"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_joined_later_is_listed_only_the_posts_the_policy_lets_them_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = list_server(dir.path()).await;
    let early = SecretIdentity::generate(OsRng, &member_address(0)).unwrap();
    let owner = create_list_with(&server, &[(member_address(0), early.clone())]).await;
    let list = Address::parse(LIST).unwrap();
    let post_one = || async {
        server
            .accept(
                Some(&Address::parse(OWNER).unwrap()),
                std::slice::from_ref(&list),
                sealed_post(OWNER, &owner),
            )
            .await
            .unwrap()
    };
    post_one().await;
    post_one().await;
    // Dave joins under the default policy (new members do not read older posts).
    let dave = SecretIdentity::generate(OsRng, "dave@example.org").unwrap();
    let roster = server.rosters().get(&list).await.unwrap();
    let add = roster
        .sign_next(
            OsRng,
            &owner,
            now(),
            adding("dave@example.org", &dave, Role::Member),
        )
        .unwrap();
    server.rosters().append(&list, add).await.unwrap();
    post_one().await;
    let base = serve(server).await;
    let http = reqwest::Client::new();
    let url = format!("{base}/v1/lists/{LIST}/archive");
    let listed = |who: &SecretIdentity| {
        let request = archive_request(who, 0, 10);
        let (http, url) = (http.clone(), url.clone());
        async move {
            let (status, body) = post(&http, url, &request).await;
            assert_eq!(status, 200, "{body}");
            serde_json::from_value::<ArchivePage>(body)
                .unwrap()
                .posts
                .len()
        }
    };
    assert_eq!(listed(&early).await, 3);
    assert_eq!(
        listed(&dave).await,
        1,
        "only the post made after Dave joined"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_endpoints_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = list_server(dir.path()).await;
    let owner = create_list(&server, 2).await;
    let base = serve(server).await;
    let http = reqwest::Client::new();

    // The log is shown to the operator (a token) and to members (a signed request) only.
    let response = http
        .get(format!("{base}/v1/lists/{LIST}/ops?since=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let list = Address::parse(LIST).unwrap();
    let read = |who: &SecretIdentity| {
        SignedRequest::sign(
            OsRng,
            who,
            &purpose::read_roster(&list),
            serde_json::to_vec(&serde_json::json!({"since": 1})).unwrap(),
            now(),
        )
        .unwrap()
    };
    let stranger = SecretIdentity::generate(OsRng, "eve@example.org").unwrap();
    let (status, body) = post(
        &http,
        format!("{base}/v1/lists/{LIST}/ops/read"),
        &read(&stranger),
    )
    .await;
    assert_eq!((status, code(&body)), (401, "bad_signature"), "{body}");
    let (status, ops) = post(
        &http,
        format!("{base}/v1/lists/{LIST}/ops/read"),
        &read(&owner),
    )
    .await;
    assert_eq!(status, 200, "{ops}");
    assert_eq!(ops["head_seq"], 2);
    assert_eq!(ops["ops"].as_array().unwrap().len(), 1);

    // Creating a list needs the operator token.
    let (status, body) = post(&http, format!("{base}/v1/lists"), &serde_json::json!({})).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");

    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("hushlist_listserver_queue{state=\"pending\"} 0"));
    assert!(metrics.contains("hushlist_listserver_posts_accepted_total 0"));

    let missing = http.get(format!("{base}/v2/nothing")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

fn delivery_request(who: &SecretIdentity, address: &str, suspended: bool) -> SignedRequest {
    let list = Address::parse(LIST).unwrap();
    let switch = DeliverySwitch {
        address: Address::parse(address).unwrap(),
        suspended,
    };
    SignedRequest::sign(
        OsRng,
        who,
        &purpose::delivery(&list),
        serde_json::to_vec(&switch).unwrap(),
        now(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_is_suspended_by_an_owner_or_the_member_and_skips_their_copies() {
    let dir = tempfile::tempdir().unwrap();
    let server = list_server(dir.path()).await;
    let (alice, bob) = ("alice@example.net", "bob@example.net");
    let members: Vec<(String, SecretIdentity)> = [alice, bob]
        .iter()
        .map(|a| (a.to_string(), SecretIdentity::generate(OsRng, a).unwrap()))
        .collect();
    let owner = create_list_with(&server, &members).await;
    let base = serve(server.clone()).await;
    let http = reqwest::Client::new();
    let url = format!("{base}/v1/lists/{LIST}/delivery");
    let post_now = || async {
        let id = server
            .accept(
                Some(&Address::parse(OWNER).unwrap()),
                &[Address::parse(LIST).unwrap()],
                sealed_post(OWNER, &owner),
            )
            .await
            .unwrap();
        server
            .store()
            .pending_deliveries(queue_id(&id))
            .await
            .unwrap()
    };

    // The owner suspends Bob; Alice pauses herself.
    let (status, body) = post(&http, url.clone(), &delivery_request(&owner, bob, true)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["suspended"], true);
    let (status, body) = post(
        &http,
        url.clone(),
        &delivery_request(&members[0].1, alice, true),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(post_now().await, [OWNER]);

    // A member may not switch someone else; a stranger not at all; nor for a non-member.
    let (status, body) = post(
        &http,
        url.clone(),
        &delivery_request(&members[0].1, bob, false),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "not_owner"), "{body}");
    let eve = SecretIdentity::generate(OsRng, "eve@example.org").unwrap();
    let (status, body) = post(&http, url.clone(), &delivery_request(&eve, bob, false)).await;
    assert_eq!((status, code(&body)), (401, "bad_signature"), "{body}");
    let (status, body) = post(
        &http,
        url.clone(),
        &delivery_request(&owner, "nobody@example.net", true),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "unknown_member"), "{body}");

    // Bob resumes himself and gets the next post again.
    let (status, body) = post(
        &http,
        url.clone(),
        &delivery_request(&members[1].1, bob, false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(post_now().await, [bob, OWNER]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_click_post_suspends_delivery_and_forged_links_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = list_server(dir.path()).await;
    create_list(&server, 2).await;
    let base = serve(server.clone()).await;
    let http = reqwest::Client::new();
    let list = Address::parse(LIST).unwrap();
    let member = Address::parse(&member_address(1)).unwrap();
    let token = server.unsubscribe_key().unwrap().token(&list, &member);

    // What a mail client sends for RFC 8058.
    let response = http
        .post(format!("{base}/v1/unsubscribe/{token}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["suspended"], true);
    let suspended = server.store().suspensions(LIST).await.unwrap();
    assert_eq!(suspended.len(), 1);
    assert_eq!(suspended[0].address, member.as_str());
    // The owners are told, so they can sign a removal; a second click tells them nothing new.
    let notices = server.store().unsent_outbox().await.unwrap();
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].0.recipient, OWNER);
    let notice = String::from_utf8(notices[0].0.message.clone()).unwrap();
    assert!(
        notice.contains(&format!("Subject: [team] {member} unsubscribed")),
        "{notice}"
    );
    assert!(notice.contains(&format!("hushlist list remove {LIST} {member}")));
    let again = http
        .post(format!("{base}/v1/unsubscribe/{token}"))
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(server.store().unsent_outbox().await.unwrap().len(), 1);

    // A link scanner's GET changes nothing; a forged or foreign token is refused.
    let get = http
        .get(format!("{base}/v1/unsubscribe/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    let other = UnsubscribeKey::new(b"someone else").token(&list, &member);
    let flipped = if token.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{flipped}", &token[..token.len() - 1]);
    for bad in [other, forged, "nonsense".to_owned()] {
        let (status, body) = post(&http, format!("{base}/v1/unsubscribe/{bad}"), &()).await;
        assert_eq!(
            (status, code(&body)),
            (404, "unknown_link"),
            "{bad}: {body}"
        );
    }
    assert_eq!(server.store().suspensions(LIST).await.unwrap().len(), 1);
}

fn join_request(key: &SecretIdentity, cert_of: &SecretIdentity, address: &str) -> JoinRequest {
    let list = Address::parse(LIST).unwrap();
    let ask = JoinAsk {
        address: Address::parse(address).unwrap(),
        note: Some("line one\nline two\u{7}".into()),
    };
    JoinRequest {
        cert: cert_of.cert().to_armored(),
        request: SignedRequest::sign(
            OsRng,
            key,
            &purpose::join(&list),
            serde_json::to_vec(&ask).unwrap(),
            now(),
        )
        .unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_requests_need_the_key_they_name_a_confirmation_from_the_mailbox_and_only_owners_see_them()
 {
    let dir = tempfile::tempdir().unwrap();
    let server = list_server(dir.path()).await;
    let reader = SecretIdentity::generate(OsRng, &member_address(0)).unwrap();
    let owner = create_list_with(&server, &[(member_address(0), reader.clone())]).await;
    let base = serve(server.clone()).await;
    let http = reqwest::Client::new();
    let url = format!("{base}/v1/lists/{LIST}/join");
    let carol = SecretIdentity::generate(OsRng, "Carol <carol@example.net>").unwrap();
    let mallory = SecretIdentity::generate(OsRng, "mallory@example.com").unwrap();
    let macarol = SecretIdentity::generate(OsRng, "Mallory <macarol@example.net>").unwrap();
    // A key anyone can make, naming Carol's address.
    let fake_carol = SecretIdentity::generate(OsRng, "carol@example.net").unwrap();

    let request = join_request(&carol, &carol, "carol@example.net");
    let (status, body) = post(&http, url.clone(), &request).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["address"], "carol@example.net");
    assert_eq!(body["fingerprint"], carol.fingerprint().as_str());
    // The same signed request again is a replay.
    let (status, body) = post(&http, url.clone(), &request).await;
    assert_eq!((status, code(&body)), (401, "replayed"), "{body}");

    for (request, expected) in [
        // Mallory's certificate with Carol's signature: not proof of holding the key.
        (
            join_request(&carol, &mallory, "mallory@example.com"),
            (401, "bad_signature"),
        ),
        // Mallory asking in Carol's name: the certificate does not name that address, not
        // even when her own address ends with it.
        (
            join_request(&mallory, &mallory, "carol@example.net"),
            (400, "address_not_in_cert"),
        ),
        (
            join_request(&macarol, &macarol, "carol@example.net"),
            (400, "address_not_in_cert"),
        ),
    ] {
        let (status, body) = post(&http, url.clone(), &request).await;
        assert_eq!((status, code(&body)), expected, "{body}");
    }
    // Someone already on the list is answered as anyone asking is (a stranger with a key
    // naming a member's address must not learn that it is one), and nothing is filed or
    // mailed (the outbox below holds only Carol's two confirmations).
    let (status, body) = post(&http, url.clone(), &join_request(&owner, &owner, OWNER)).await;
    assert_eq!(status, 202, "{body}");
    let mut garbage = join_request(&carol, &carol, "carol@example.net");
    garbage.cert = "not a certificate".into();
    let (status, body) = post(&http, url.clone(), &garbage).await;
    assert_eq!((status, code(&body)), (400, "bad_cert"), "{body}");
    // A second key asking for Carol's address is kept beside hers, not dropped.
    let (status, body) = post(
        &http,
        url.clone(),
        &join_request(&fake_carol, &fake_carol, "carol@example.net"),
    )
    .await;
    assert_eq!(status, 202, "{body}");

    let list = Address::parse(LIST).unwrap();
    let pending_url = format!("{base}/v1/lists/{LIST}/join-requests");
    let ask = |who: &SecretIdentity| {
        SignedRequest::sign(
            OsRng,
            who,
            &purpose::join_requests(&list),
            b"{}".to_vec(),
            now(),
        )
        .unwrap()
    };
    let pending = || async {
        let (status, body) = post(&http, pending_url.clone(), &ask(&owner)).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value::<PendingJoins>(body).unwrap()
    };
    // Nothing reaches the owners before a confirmation: only the two confirmations went out,
    // both to Carol's mailbox, each readable only with the key that asked.
    assert!(pending().await.requests.is_empty());
    let outbox = server.store().unsent_outbox().await.unwrap();
    assert_eq!(
        outbox
            .iter()
            .map(|(m, _)| m.recipient.as_str())
            .collect::<Vec<_>>(),
        ["carol@example.net", "carol@example.net"]
    );
    let carols_gpg = Gpg::new();
    carols_gpg.import(carol.to_armored_secret().as_bytes());
    let token = confirmation_token(&carols_gpg, &outbox[0].0.message).unwrap();
    assert!(
        !String::from_utf8_lossy(&outbox[0].0.message).contains(&token),
        "the token is only inside the encryption"
    );
    assert_eq!(
        confirmation_token(&carols_gpg, &outbox[1].0.message),
        None,
        "the other key's confirmation is not Carol's to read"
    );

    let confirm_url = format!("{base}/v1/lists/{LIST}/join/confirm");
    let confirm = |token: &str| serde_json::json!({ "token": token });
    let (status, body) = post(&http, confirm_url.clone(), &confirm("0123456789abcdef")).await;
    assert_eq!((status, code(&body)), (404, "no_join_request"), "{body}");
    let (status, body) = post(
        &http,
        format!("{base}/v1/lists/other@example.org/join/confirm"),
        &confirm(&token),
    )
    .await;
    assert_eq!(
        status, 404,
        "another list's address confirms nothing: {body}"
    );
    let (status, body) = post(&http, confirm_url.clone(), &confirm(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fingerprint"], carol.fingerprint().as_str());
    let (status, body) = post(&http, confirm_url, &confirm(&token)).await;
    assert_eq!((status, code(&body)), (404, "no_join_request"), "{body}");

    // The owner now sees Carol's confirmed request, and beside it the unconfirmed one for her
    // address, each exactly as signed; a member is refused.
    let mut shown = pending().await.requests;
    shown.sort_by_key(|r| !r.confirmed);
    assert_eq!(
        shown
            .iter()
            .map(|r| (r.fingerprint.clone(), r.confirmed))
            .collect::<Vec<_>>(),
        [
            (carol.fingerprint().clone(), true),
            (fake_carol.fingerprint().clone(), false)
        ]
    );
    assert_eq!(shown[0].request, request);
    let (status, body) = post(&http, pending_url.clone(), &ask(&reader)).await;
    assert_eq!((status, code(&body)), (403, "not_owner"), "{body}");

    // Approving before the signed add is refused, and an unconfirmed request cannot be
    // settled at all: the requests stay.
    let settle = |who: &SecretIdentity, approved: bool| {
        let decision = JoinDecision {
            address: Address::parse("carol@example.net").unwrap(),
            fingerprint: who.fingerprint().clone(),
            approved,
            reason: None,
        };
        SignedRequest::sign(
            OsRng,
            &owner,
            &purpose::settle_join(&list),
            serde_json::to_vec(&decision).unwrap(),
            now(),
        )
        .unwrap()
    };
    let settle_url = format!("{base}/v1/lists/{LIST}/join-requests/settle");
    let (status, body) = post(&http, settle_url.clone(), &settle(&carol, true)).await;
    assert_eq!((status, code(&body)), (409, "not_added"), "{body}");
    let (status, body) = post(&http, settle_url.clone(), &settle(&fake_carol, false)).await;
    assert_eq!((status, code(&body)), (404, "no_join_request"), "{body}");
    let (status, body) = post(&http, settle_url.clone(), &settle(&carol, false)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&http, settle_url, &settle(&carol, false)).await;
    assert_eq!((status, code(&body)), (404, "no_join_request"), "{body}");
    // The owner was told of the confirmed request (its note made one printable line), and
    // Carol of the decision.
    let told = server.store().unsent_outbox().await.unwrap();
    assert_eq!(
        told.iter()
            .map(|(m, _)| m.recipient.as_str())
            .collect::<Vec<_>>(),
        [
            "carol@example.net",
            "carol@example.net",
            OWNER,
            "carol@example.net"
        ]
    );
    let notice = mail_parser::MessageParser::new()
        .parse(&told[2].0.message)
        .unwrap()
        .body_text(0)
        .unwrap()
        .into_owned();
    assert!(notice.contains("line one line two"), "{notice}");
    assert!(
        notice.contains(&format!("--fingerprint {}", carol.fingerprint())),
        "{notice}"
    );

    // Other spellings of an address share its limit of three waiting keys (the unconfirmed
    // one of Carol's address is still waiting): a stranger cannot mail-bomb a mailbox by
    // changing the case of its address.
    for (spelling, expected) in [
        ("CAROL@example.net", 202),
        ("Carol@Example.Net", 202),
        ("cArOl@example.NET", 429),
    ] {
        let key = SecretIdentity::generate(OsRng, spelling).unwrap();
        let (status, body) = post(&http, url.clone(), &join_request(&key, &key, spelling)).await;
        assert_eq!(status, expected, "{spelling}: {body}");
    }
}
