//! Issue 25, hole 4: the key server opened any captured deposit. A deposit's sealed key was a
//! bare PKESK to the key server, tied to no list, key id or sender, so whoever captured one
//! (a plain-HTTP hop, a proxy's log) re-deposited it on a list of their own, fetched the
//! session key there and read the post, and kept reading after the post's key was revoked.
//! Against the real `hushlist-keyserver` process: a sealed deposit names its list, key id and
//! sender under the sender's signature, inside the encryption to the key server, and one
//! session key is stored once.

mod common;

use std::process::Child;

use common::*;
use hushlist_core::api::{Deposit, purpose};
use hushlist_core::roster::{Change, MemberEntry, Role};
use hushlist_core::{Address, Cert, KeyId, SecretIdentity, SessionKey};
use hushlist_testkit::http::error_code as code;
use rand::rngs::OsRng;
use serde_json::Value;

/// Mallory's own list: Eve owns it (she is on no roster of the test list), Bob is a member.
const OTHER: &str = "other@lists.example.org";

fn other() -> Address {
    Address::parse(OTHER).unwrap()
}

/// A running key server with the test list (Olivia, Bob, Rita) and Eve's list (Eve, Bob).
struct TwoLists {
    _dir: tempfile::TempDir,
    child: Child,
    base: String,
    http: reqwest::Client,
    server_cert: Cert,
}

impl Drop for TwoLists {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TwoLists {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (child, base) = spawn_binary(dir.path(), &[]);
        let http = reqwest::Client::new();
        create_list_in(&http, &base, dir.path()).await;
        let p = people();
        let mut roster = genesis_at(&http, &base, &admin_token(dir.path()), &p.eve, other()).await;
        let member = MemberEntry {
            address: Address::parse("bob@example.org").unwrap(),
            cert: p.bob.cert().to_armored(),
            role: Role::Member,
        };
        change_at(&http, &base, &mut roster, &p.eve, Change::Add { member }).await;
        let server_cert = server_cert_at(&http, &base).await;
        TwoLists {
            _dir: dir,
            child,
            base,
            http,
            server_cert,
        }
    }

    async fn deposit_with(&self, list: &Address, request: &impl serde::Serialize) -> (u16, Value) {
        post_json(
            &self.http,
            format!("{}/v1/lists/{list}/keys", self.base),
            request,
            None,
        )
        .await
        .unwrap()
    }

    /// `sender` deposits `session_key` under `key_id` at `list`, sealed as the client seals.
    async fn deposit(
        &self,
        sender: &SecretIdentity,
        list: &Address,
        key_id: &KeyId,
        session_key: &SessionKey,
    ) -> (u16, Value) {
        let request = deposit_request(sender, list, key_id, session_key, &self.server_cert);
        self.deposit_with(list, &request).await
    }

    async fn fetch(&self, reader: &SecretIdentity, list: &Address, key_id: &KeyId) -> (u16, Value) {
        let request = signed(
            reader,
            &purpose::fetch_key(list, key_id),
            &serde_json::json!({}),
        );
        post_json(
            &self.http,
            format!("{}/v1/lists/{list}/keys/{key_id}", self.base),
            &request,
            None,
        )
        .await
        .unwrap()
    }

    async fn revoke(&self, who: &SecretIdentity, list: &Address, key_id: &KeyId) -> (u16, Value) {
        let request = signed(who, &purpose::revoke(list, key_id), &serde_json::json!({}));
        post_json(
            &self.http,
            format!("{}/v1/lists/{list}/keys/{key_id}/revoke", self.base),
            &request,
            None,
        )
        .await
        .unwrap()
    }
}

/// A refusal's message says what was wrong in the key server's own words: no OpenPGP or
/// parser text comes back to the client.
fn says_no_internals(body: &Value) {
    let message = body["error"]["message"].as_str().unwrap();
    for internal in [
        "pgp", "Pgp", "packet", "MDC", "serde", "expected", "assert", "line ",
    ] {
        assert!(!message.contains(internal), "{internal:?} in {message:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_deposit_deposited_again_on_another_list_is_refused_and_the_original_stays_revocable()
 {
    let lists = TwoLists::start().await;
    let p = people();
    let mallory = &p.eve;
    let (key_id, session_key) = (KeyId::generate(OsRng), SessionKey::generate(OsRng));
    let alices = deposit_request(&p.bob, &list(), &key_id, &session_key, &lists.server_cert);
    let (status, body) = lists.deposit_with(&list(), &alices).await;
    assert_eq!(status, 201, "{body}");

    // Mallory read Alice's request on the wire: its body is signed, not encrypted.
    let captured: Deposit = serde_json::from_slice(
        &alices
            .verify_signature(&purpose::deposit(&list()), p.bob.cert())
            .unwrap()
            .body,
    )
    .unwrap();
    let fresh_key_id = KeyId::generate(OsRng);
    for key_id in [&fresh_key_id, &key_id] {
        let redeposit = Deposit {
            key_id: key_id.clone(),
            sealed_key: captured.sealed_key.clone(),
        };
        let request = signed(mallory, &purpose::deposit(&other()), &redeposit);
        let (status, body) = lists.deposit_with(&other(), &request).await;
        assert_eq!((status, code(&body)), (403, "deposit_not_bound"), "{body}");
        says_no_internals(&body);
        let (status, body) = lists.fetch(mallory, &other(), key_id).await;
        assert_eq!((status, code(&body)), (404, "unknown_key"), "{body}");
    }

    // The original is revocable, and after that nobody gets the key, on either list.
    assert_eq!(lists.fetch(&p.rita, &list(), &key_id).await.0, 200);
    let (status, body) = lists.revoke(&p.bob, &list(), &key_id).await;
    assert_eq!(status, 200, "{body}");
    for reader in [&p.rita, &p.bob, &p.olivia] {
        let (status, body) = lists.fetch(reader, &list(), &key_id).await;
        assert_eq!((status, code(&body)), (410, "key_destroyed"), "{body}");
    }
    let later = KeyId::generate(OsRng);
    let redeposit = Deposit {
        key_id: later.clone(),
        sealed_key: captured.sealed_key.clone(),
    };
    let request = signed(mallory, &purpose::deposit(&other()), &redeposit);
    let (status, body) = lists.deposit_with(&other(), &request).await;
    assert_eq!((status, code(&body)), (403, "deposit_not_bound"), "{body}");
    let (status, body) = lists.fetch(mallory, &other(), &later).await;
    assert_eq!((status, code(&body)), (404, "unknown_key"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_key_is_stored_once_under_any_key_id_list_or_sender() {
    let lists = TwoLists::start().await;
    let p = people();
    let (key_id, session_key) = (KeyId::generate(OsRng), SessionKey::generate(OsRng));
    let (status, body) = lists.deposit(&p.bob, &list(), &key_id, &session_key).await;
    assert_eq!(status, 201, "{body}");
    // The client's retry of the same deposit (resealed, so other bytes) is answered as before.
    let (status, body) = lists.deposit(&p.bob, &list(), &key_id, &session_key).await;
    assert_eq!(status, 200, "{body}");

    let deposits: [(&SecretIdentity, Address); 3] =
        [(&p.bob, list()), (&p.bob, other()), (&p.olivia, list())];
    for (sender, at) in &deposits {
        let (status, body) = lists
            .deposit(sender, at, &KeyId::generate(OsRng), &session_key)
            .await;
        assert_eq!((status, code(&body)), (409, "session_key_reused"), "{body}");
        says_no_internals(&body);
    }

    // Revoking the key does not free it for another deposit.
    assert_eq!(lists.revoke(&p.bob, &list(), &key_id).await.0, 200);
    let again = KeyId::generate(OsRng);
    let (status, body) = lists.deposit(&p.bob, &list(), &again, &session_key).await;
    assert_eq!((status, code(&body)), (409, "session_key_reused"), "{body}");
    let (status, body) = lists.fetch(&p.rita, &list(), &again).await;
    assert_eq!((status, code(&body)), (404, "unknown_key"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_sealed_for_another_list_key_id_or_sender_is_refused_as_not_bound() {
    let lists = TwoLists::start().await;
    let p = people();
    let (key_id, session_key) = (KeyId::generate(OsRng), SessionKey::generate(OsRng));
    let other_key_id = KeyId::generate(OsRng);
    // Who sealed it, and for which list and key id; Bob's request is always for his key id
    // on the test list.
    let cases = [
        (&p.bob, other(), &key_id, "list"),
        (&p.bob, list(), &other_key_id, "key id"),
        (&p.olivia, list(), &key_id, "sender"),
    ];
    for (sealer, sealed_for, sealed_key_id, bound) in cases {
        let mut deposit = Deposit::seal(
            OsRng,
            sealer,
            &lists.server_cert,
            &sealed_for,
            sealed_key_id,
            &session_key,
            now(),
        )
        .unwrap();
        deposit.key_id = key_id.clone();
        let request = signed(&p.bob, &purpose::deposit(&list()), &deposit);
        let (status, body) = lists.deposit_with(&list(), &request).await;
        assert_eq!((status, code(&body)), (403, "deposit_not_bound"), "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("its {bound} differs")),
            "{message}"
        );
        says_no_internals(&body);
    }
    // Nothing was stored, and the deposit sealed for its own request goes in.
    let (status, body) = lists.fetch(&p.rita, &list(), &key_id).await;
    assert_eq!((status, code(&body)), (404, "unknown_key"), "{body}");
    let (status, body) = lists.deposit(&p.bob, &list(), &key_id, &session_key).await;
    assert_eq!(status, 201, "{body}");
}
