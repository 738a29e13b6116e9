//! A key server on a loopback port with a real SQLite store, and the people of a test list.

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hushlist_core::api::purpose;
use hushlist_core::request::SignedRequest;
use hushlist_core::roster::{Change, MemberEntry, Policy, Role, Roster, SignedOp, sign_genesis};
use hushlist_core::{Address, KeyId, SecretIdentity};
use hushlist_keyserver::master::MasterKey;
use hushlist_keyserver::{KeyServer, ServiceConfig, router};
use hushlist_store::KeyStore;
use rand::rngs::OsRng;
use serde_json::Value;

pub const ADMIN: &str = "admin-token-for-tests";
pub const GRANTS: &str = "grants-token-for-tests";
pub const LIST: &str = "team@lists.example.org";

pub struct People {
    pub olivia: SecretIdentity,
    pub bob: SecretIdentity,
    pub rita: SecretIdentity,
    pub dave: SecretIdentity,
    pub eve: SecretIdentity,
}

/// Olivia owns the list, Bob is a member, Rita a reader; Dave joins later; Eve never does.
pub fn people() -> &'static People {
    static P: OnceLock<People> = OnceLock::new();
    P.get_or_init(|| People {
        olivia: SecretIdentity::generate(OsRng, "olivia@example.org").unwrap(),
        bob: SecretIdentity::generate(OsRng, "bob@example.org").unwrap(),
        rita: SecretIdentity::generate(OsRng, "rita@example.org").unwrap(),
        dave: SecretIdentity::generate(OsRng, "dave@example.org").unwrap(),
        eve: SecretIdentity::generate(OsRng, "eve@example.org").unwrap(),
    })
}

pub fn list() -> Address {
    Address::parse(LIST).unwrap()
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub state: Arc<KeyServer>,
    pub http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

pub fn master() -> MasterKey {
    MasterKey::from_bytes(&[42; 32])
}

impl TestServer {
    pub async fn start(config: ServiceConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, config).await
    }

    pub async fn start_in(dir: tempfile::TempDir, config: ServiceConfig) -> Self {
        let store = KeyStore::open(&format!("sqlite://{}", Self::db_path(&dir).display()))
            .await
            .unwrap();
        let config = ServiceConfig {
            admin_token: ADMIN.into(),
            grants_token: GRANTS.into(),
            ..config
        };
        let state = Arc::new(
            KeyServer::start(store, master(), config, "keys <keys@keys.example.org>")
                .await
                .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestServer {
            dir,
            addr,
            state,
            http: reqwest::Client::new(),
            task,
        }
    }

    pub fn db_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("keyserver.db")
    }

    /// Stops serving and hands back the data directory (for restart tests).
    pub fn stop(self) -> tempfile::TempDir {
        self.task.abort();
        self.dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        token: Option<&str>,
    ) -> (u16, Value) {
        post_json(&self.http, self.url(path), body, token)
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// A GET with a bearer token (the operator's or the list server's).
    pub async fn get_with(&self, path: &str, token: &str) -> (u16, String) {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Creates the list with Olivia as owner, Bob as member and Rita as reader.
    pub async fn create_list(&self, policy: Policy) -> Roster {
        let p = people();
        let genesis = sign_genesis(
            OsRng,
            &p.olivia,
            Address::parse("olivia@example.org").unwrap(),
            list(),
            policy,
            now(),
        )
        .unwrap();
        let (status, body) = self.post("/v1/lists", &genesis, Some(ADMIN)).await;
        assert_eq!(status, 201, "{body}");
        let mut roster = Roster::genesis(genesis).unwrap();
        self.add(&mut roster, &p.bob, "bob@example.org", Role::Member)
            .await;
        self.add(&mut roster, &p.rita, "rita@example.org", Role::Reader)
            .await;
        roster
    }

    pub async fn add(&self, roster: &mut Roster, who: &SecretIdentity, address: &str, role: Role) {
        let member = MemberEntry {
            address: Address::parse(address).unwrap(),
            cert: who.cert().to_armored(),
            role,
        };
        self.change(roster, Change::Add { member }).await;
    }

    /// Olivia removes `address` from the list.
    pub async fn remove(&self, roster: &mut Roster, address: &str) {
        let address = Address::parse(address).unwrap();
        self.change(roster, Change::Remove { address }).await;
    }

    pub async fn change(&self, roster: &mut Roster, change: Change) {
        let op = roster
            .sign_next(OsRng, &people().olivia, now(), change)
            .unwrap();
        let (status, body) = self.send_op(&op).await;
        assert_eq!(status, 201, "{body}");
        roster.apply(op).unwrap();
    }

    pub async fn send_op(&self, op: &SignedOp) -> (u16, Value) {
        self.post(&format!("/v1/lists/{LIST}/ops"), op, None).await
    }

    pub async fn server_cert(&self) -> hushlist_core::Cert {
        let (_, text) = self.get("/v1/server-key").await;
        let key: hushlist_core::api::ServerKey = serde_json::from_str(&text).unwrap();
        hushlist_core::Cert::from_bytes(key.cert.as_bytes()).unwrap()
    }

    /// Deposits `session_key` under `key_id` as `sender`.
    pub async fn deposit(
        &self,
        sender: &SecretIdentity,
        key_id: &KeyId,
        session_key: &hushlist_core::SessionKey,
    ) -> (u16, Value) {
        let request = deposit_request(
            sender,
            &list(),
            key_id,
            session_key,
            &self.server_cert().await,
        );
        self.post(&format!("/v1/lists/{LIST}/keys"), &request, None)
            .await
    }

    pub async fn fetch(&self, reader: &SecretIdentity, key_id: &KeyId) -> (u16, Value) {
        let request = signed(
            reader,
            &purpose::fetch_key(&list(), key_id),
            &serde_json::json!({}),
        );
        self.fetch_with(key_id, &request).await
    }

    pub async fn fetch_with(&self, key_id: &KeyId, request: &SignedRequest) -> (u16, Value) {
        self.post(&format!("/v1/lists/{LIST}/keys/{key_id}"), request, None)
            .await
    }
}

pub fn signed(who: &SecretIdentity, purpose: &str, body: &impl serde::Serialize) -> SignedRequest {
    SignedRequest::sign(
        OsRng,
        who,
        purpose,
        serde_json::to_vec(body).unwrap(),
        now(),
    )
    .unwrap()
}

/// `sender`'s signed request depositing `session_key` under `key_id` at `list`, sealed to the
/// key server certificate `server_cert`.
pub fn deposit_request(
    sender: &SecretIdentity,
    list: &Address,
    key_id: &KeyId,
    session_key: &hushlist_core::SessionKey,
    server_cert: &hushlist_core::Cert,
) -> SignedRequest {
    let body = hushlist_core::api::Deposit::seal(
        OsRng,
        sender,
        server_cert,
        list,
        key_id,
        session_key,
        now(),
    )
    .unwrap();
    signed(sender, &purpose::deposit(list), &body)
}

pub use hushlist_testkit::http::post_json;
pub use hushlist_testkit::now;

pub const MASTER_HEX: &str = "2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a";

/// Starts the `hushlist-keyserver` binary on a free loopback port and waits (bounded) for the
/// base URL it prints.
pub fn spawn_binary(data_dir: &Path, extra_args: &[&str]) -> (Child, String) {
    spawn_binary_with(data_dir, extra_args, &[("HUSHLIST_MASTER_KEY", MASTER_HEX)])
}

/// [`spawn_binary`] with the environment given (master keys, say) instead of the default.
pub fn spawn_binary_with(
    data_dir: &Path,
    extra_args: &[&str],
    env: &[(&str, &str)],
) -> (Child, String) {
    spawn_binary_logging(data_dir, extra_args, env, Stdio::null())
}

/// [`spawn_binary_with`], the server's log (its stderr, warnings only unless `env` sets
/// `RUST_LOG`) going to `log`.
pub fn spawn_binary_logging(
    data_dir: &Path,
    extra_args: &[&str],
    env: &[(&str, &str)],
    log: impl Into<Stdio>,
) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hushlist-keyserver"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra_args)
        .env_remove("HUSHLIST_MASTER_KEY")
        .env_remove("HUSHLIST_MASTER_KEY_PREVIOUS")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the key server printed its address");
    (child, base)
}

/// A running key server process's identity.
pub async fn server_key_at(http: &reqwest::Client, base: &str) -> hushlist_core::api::ServerKey {
    http.get(format!("{base}/v1/server-key"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Creates the test list (Olivia owner) at `genesis_base` with the operator's `admin` token,
/// then adds Bob as a member and Rita as a reader through `ops_base`.
pub async fn create_list_at(
    http: &reqwest::Client,
    genesis_base: &str,
    ops_base: &str,
    admin: &str,
) -> Roster {
    let p = people();
    let mut roster = genesis_at(http, genesis_base, admin, &p.olivia, list()).await;
    for (who, address, role) in [
        (&p.bob, "bob@example.org", Role::Member),
        (&p.rita, "rita@example.org", Role::Reader),
    ] {
        let member = MemberEntry {
            address: Address::parse(address).unwrap(),
            cert: who.cert().to_armored(),
            role,
        };
        change_at(
            http,
            ops_base,
            &mut roster,
            &p.olivia,
            Change::Add { member },
        )
        .await;
    }
    roster
}

/// [`create_list_at`] at the key server process `base` whose data directory is `data_dir`,
/// with the admin token it wrote there.
pub async fn create_list_in(http: &reqwest::Client, base: &str, data_dir: &Path) -> Roster {
    create_list_at(http, base, base, &admin_token(data_dir)).await
}

/// [`create_list_in`], then Olivia has the list's keys live `secs` seconds.
pub async fn create_list_with_key_lifetime_in(
    http: &reqwest::Client,
    base: &str,
    data_dir: &Path,
    secs: u64,
) -> Roster {
    let mut roster = create_list_in(http, base, data_dir).await;
    let policy = Policy {
        key_lifetime_secs: Some(secs),
        ..Policy::default()
    };
    let change = Change::SetPolicy { policy };
    change_at(http, base, &mut roster, &people().olivia, change).await;
    roster
}

/// The admin token a key server process wrote in its data directory.
pub fn admin_token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("admin.token")).unwrap()
}

/// Creates `list` with the default policy and `owner` (at the address their certificate
/// names) as its owner at the key server `base`, with the operator's `admin` token.
pub async fn genesis_at(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    owner: &SecretIdentity,
    list: Address,
) -> Roster {
    let address = owner.cert().addresses().remove(0);
    let genesis = sign_genesis(OsRng, owner, address, list, Policy::default(), now()).unwrap();
    let (status, body) = post_json(http, format!("{base}/v1/lists"), &genesis, Some(admin))
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    Roster::genesis(genesis).unwrap()
}

/// `owner` signs `change` as the next op of `roster` and sends it to the key server `base`,
/// which must take it; then it is applied to `roster`.
pub async fn change_at(
    http: &reqwest::Client,
    base: &str,
    roster: &mut Roster,
    owner: &SecretIdentity,
    change: Change,
) {
    let op = roster.sign_next(OsRng, owner, now(), change).unwrap();
    let url = format!("{base}/v1/lists/{}/ops", roster.list());
    let (status, body) = post_json(http, url, &op, None).await.unwrap();
    assert_eq!(status, 201, "{body}");
    roster.apply(op).unwrap();
}

/// The certificate of the key server process at `base`.
pub async fn server_cert_at(http: &reqwest::Client, base: &str) -> hushlist_core::Cert {
    hushlist_core::Cert::from_bytes(server_key_at(http, base).await.cert.as_bytes()).unwrap()
}

/// `who` revokes `key_id` of the test list at the key server `base`; the answer.
pub async fn revoke_at(
    http: &reqwest::Client,
    base: &str,
    who: &SecretIdentity,
    key_id: &KeyId,
) -> (u16, Value) {
    let request = signed(
        who,
        &purpose::revoke(&list(), key_id),
        &serde_json::json!({}),
    );
    let url = format!("{base}/v1/lists/{LIST}/keys/{key_id}/revoke");
    post_json(http, url, &request, None).await.unwrap()
}

/// Deposits a fresh session key as `sender` at a running key server; returns it with its id.
pub async fn deposit_at(
    http: &reqwest::Client,
    base: &str,
    sender: &SecretIdentity,
    server_cert: &hushlist_core::Cert,
) -> (KeyId, hushlist_core::SessionKey) {
    let (key_id, session_key) = (
        KeyId::generate(OsRng),
        hushlist_core::SessionKey::generate(OsRng),
    );
    let request = deposit_request(sender, &list(), &key_id, &session_key, server_cert);
    let (status, body) = post_json(http, format!("{base}/v1/lists/{LIST}/keys"), &request, None)
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    (key_id, session_key)
}

/// Fetches `key_id` as `reader` with `request` (signed for it) and checks that the released
/// PKESK opens, with the reader's key, to `expected`.
pub async fn fetch_expecting(
    http: &reqwest::Client,
    base: &str,
    reader: &SecretIdentity,
    request: &SignedRequest,
    key_id: &KeyId,
    expected: &hushlist_core::SessionKey,
) {
    let (status, body) = post_json(
        http,
        format!("{base}/v1/lists/{LIST}/keys/{key_id}"),
        request,
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "key {key_id} at {base}: {body}");
    let release: hushlist_core::api::KeyRelease = serde_json::from_value(body).unwrap();
    let pkesk = hushlist_core::Pkesk::from_bytes(&release.pkesk).unwrap();
    assert_eq!(&pkesk.unseal(reader).unwrap(), expected);
}

/// A fresh signed request by `reader` for `key_id`.
pub fn fetch_request(reader: &SecretIdentity, key_id: &KeyId) -> SignedRequest {
    signed(
        reader,
        &purpose::fetch_key(&list(), key_id),
        &serde_json::json!({}),
    )
}
