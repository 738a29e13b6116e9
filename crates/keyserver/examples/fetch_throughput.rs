//! Measures pull-mode key requests per second: a key server on loopback with a SQLite store,
//! one deposited key, and concurrent members sending signed requests for a fixed time.
//!
//! cargo run --release -p hushlist-keyserver --example fetch_throughput -- [SECONDS] [CLIENTS]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hushlist_core::api::{Deposit, ServerKey, purpose};
use hushlist_core::request::SignedRequest;
use hushlist_core::roster::{Change, MemberEntry, Policy, Role, Roster, sign_genesis};
use hushlist_core::{Address, Cert, KeyId, SecretIdentity, SessionKey};
use hushlist_keyserver::master::MasterKey;
use hushlist_keyserver::{KeyServer, ServiceConfig, router};
use hushlist_store::KeyStore;
use rand::rngs::OsRng;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(Ok(5), |a| a.parse())?;
    let clients: usize = args.next().map_or(Ok(8), |a| a.parse())?;

    let dir = tempfile::tempdir()?;
    let store = KeyStore::open(&format!(
        "sqlite://{}",
        dir.path().join("bench.db").display()
    ))
    .await?;
    let config = ServiceConfig {
        admin_token: "bench".into(),
        grants_token: "bench".into(),
        rate_per_sec: 1e9,
        rate_burst: 1e9,
        ..ServiceConfig::default()
    };
    let state = Arc::new(
        KeyServer::start(
            store,
            MasterKey::from_bytes(&[1; 32]),
            config,
            "bench <keys@bench.example.org>",
        )
        .await?,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(axum::serve(listener, router(state)).into_future());

    let list = Address::parse("bench@lists.example.org")?;
    let owner = SecretIdentity::generate(OsRng, "owner@example.org")?;
    let members: Vec<SecretIdentity> = (0..clients)
        .map(|i| SecretIdentity::generate(OsRng, &format!("m{i}@example.org")))
        .collect::<Result<_, _>>()?;
    let http = reqwest::Client::new();
    let genesis = sign_genesis(
        OsRng,
        &owner,
        Address::parse("owner@example.org")?,
        list.clone(),
        Policy::default(),
        now(),
    )?;
    http.post(format!("{base}/v1/lists"))
        .bearer_auth("bench")
        .json(&genesis)
        .send()
        .await?
        .error_for_status()?;
    let mut roster = Roster::genesis(genesis)?;
    for (i, member) in members.iter().enumerate() {
        let entry = MemberEntry {
            address: Address::parse(&format!("m{i}@example.org"))?,
            cert: member.cert().to_armored(),
            role: Role::Member,
        };
        let op = roster.sign_next(OsRng, &owner, now(), Change::Add { member: entry })?;
        http.post(format!("{base}/v1/lists/{list}/ops"))
            .json(&op)
            .send()
            .await?
            .error_for_status()?;
        roster.apply(op)?;
    }
    let server_key: ServerKey = http
        .get(format!("{base}/v1/server-key"))
        .send()
        .await?
        .json()
        .await?;
    let server_cert = Cert::from_bytes(server_key.cert.as_bytes())?;
    let key_id = KeyId::generate(OsRng);
    let deposit = Deposit::seal(
        OsRng,
        &owner,
        &server_cert,
        &list,
        &key_id,
        &SessionKey::generate(OsRng),
        now(),
    )?;
    let request = SignedRequest::sign(
        OsRng,
        &owner,
        &purpose::deposit(&list),
        serde_json::to_vec(&deposit)?,
        now(),
    )?;
    http.post(format!("{base}/v1/lists/{list}/keys"))
        .json(&request)
        .send()
        .await?
        .error_for_status()?;

    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for member in members {
        let (http, base, list, key_id, done, errors) = (
            http.clone(),
            base.clone(),
            list.clone(),
            key_id.clone(),
            done.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let purpose = purpose::fetch_key(&list, &key_id);
            while Instant::now() < deadline {
                let request = SignedRequest::sign(OsRng, &member, &purpose, b"{}".to_vec(), now())
                    .expect("signing");
                let ok = http
                    .post(format!("{base}/v1/lists/{list}/keys/{key_id}"))
                    .json(&request)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                let counter = if ok { &done } else { &errors };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let total = done.load(Ordering::Relaxed);
    println!(
        "key requests: {total} in {seconds} s with {clients} clients = {:.0} requests/s, {} errors",
        total as f64 / seconds as f64,
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}
