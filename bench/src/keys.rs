//! The key server: signed pull requests and push grants per second next to
//! `openssl speed x25519` (one X25519 per released key is the floor of the work), and its
//! memory as deposits fill it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use hushlist_client::remote::Server as Remote;
use hushlist_core::api::{GrantRequest, Grants, KeyRelease, purpose};
use hushlist_core::request::SignedRequest;
use hushlist_core::roster::Policy;
use hushlist_core::{Address, KeyId, Pkesk, SecretIdentity, SessionKey};
use hushlist_store::KeyStore;
use rand::rngs::OsRng;

use crate::procs::{Server, run_command};
use crate::{BenchList, Figure, bench_list};

/// Members who fetch (each signs its own requests), the requests signed ahead (more than
/// the server answers in the measured seconds on this machine), and members per grants call.
const FETCHERS: usize = 64;
const FETCHES: usize = 60_000;
const GRANTS_PER_CALL: usize = 1000;
const CLIENTS: usize = 32;

/// `count` signed key requests, round-robin over `members` and `key_ids`, signed on every
/// core; each is the key it asks for and the JSON body to post.
fn presign_fetches(
    list: &BenchList,
    members: &[SecretIdentity],
    key_ids: &[KeyId],
    count: usize,
) -> anyhow::Result<Vec<(KeyId, Vec<u8>)>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sign = |n: usize| -> anyhow::Result<(KeyId, Vec<u8>)> {
        let key_id = &key_ids[n % key_ids.len()];
        let request = SignedRequest::sign(
            OsRng,
            &members[n % members.len()],
            &purpose::fetch_key(&list.address, key_id),
            b"{}".to_vec(),
            now,
        )?;
        Ok((key_id.clone(), serde_json::to_vec(&request)?))
    };
    std::thread::scope(|scope| {
        let shares: Vec<_> = (0..cores)
            .map(|core| {
                scope.spawn(move || {
                    (core..count)
                        .step_by(cores)
                        .map(sign)
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        let mut signed = Vec::with_capacity(count);
        for share in shares {
            signed.extend(
                share
                    .join()
                    .map_err(|_| anyhow::anyhow!("a signing thread panicked"))??,
            );
        }
        Ok(signed)
    })
}

/// X25519 operations per second on one core, from `openssl speed`.
fn openssl_x25519() -> anyhow::Result<f64> {
    let out = run_command("openssl", &["speed", "-seconds", "3", "ecdhx25519"])?;
    let text = String::from_utf8_lossy(&out);
    text.lines()
        .find(|l| l.contains("(X25519)"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no X25519 rate in openssl speed's output: {text}"))
}

/// The key server binary on `data`, rate limits off (the per-identity limit is not what is
/// measured).
fn start_key_server(data: &Path) -> anyhow::Result<Server> {
    Server::start(
        "hushlist-keyserver",
        &[
            "--data-dir",
            data.to_str().context("UTF-8 temp path")?,
            "--listen",
            "127.0.0.1:0",
            "--rate-per-sec",
            "1e9",
            "--rate-burst",
            "1e9",
        ],
        1,
    )
}

/// Posts signed key requests from `requests` (from `next` on) with CLIENTS concurrent
/// clients for `seconds`, or until they run out; returns requests answered per second.
async fn fetch_for(
    requests: &Arc<Vec<(String, Vec<u8>)>>,
    next: &Arc<AtomicUsize>,
    seconds: u64,
) -> anyhow::Result<f64> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (http, requests, next) = (http.clone(), requests.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let Some((url, body)) = requests.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                let response = http
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
                    .send()
                    .await?
                    .error_for_status()?;
                let release: KeyRelease = response.json().await?;
                Pkesk::from_bytes(&release.pkesk)?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut fetched = 0;
    for task in tasks {
        fetched += task.await??;
    }
    Ok(fetched as f64 / started.elapsed().as_secs_f64())
}

/// Deposits fresh keys from eight concurrent clients for `seconds`; returns how many were
/// stored and how many per second.
async fn deposit_for(
    keys: &Remote,
    list: &Address,
    owner: &Arc<SecretIdentity>,
    seconds: u64,
) -> anyhow::Result<(u64, f64)> {
    let stored = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (keys, list, owner, stored, stop) = (
            keys.clone(),
            list.clone(),
            owner.clone(),
            stored.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // Fetched for each deposit, as `hushlist send` does, so the figure stays the
                // cost of a whole deposit.
                let server_cert = keys.server_cert().await?;
                keys.deposit(
                    &owner,
                    &list,
                    &KeyId::generate(OsRng),
                    &SessionKey::generate(OsRng),
                    &server_cert,
                )
                .await?;
                stored.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    let stored = stored.load(Ordering::Relaxed);
    Ok((stored, stored as f64 / started.elapsed().as_secs_f64()))
}

pub async fn run(seconds: u64, fill_seconds: u64, bulk_keys: u64) -> anyhow::Result<Vec<Figure>> {
    let x25519 = openssl_x25519()?;
    let dir = tempfile::tempdir()?;
    let server = start_key_server(dir.path())?;
    let base = server.url()?;
    let admin = std::fs::read_to_string(dir.path().join("admin.token"))?;
    let grants_token = std::fs::read_to_string(dir.path().join("grants.token"))?;
    let keys = Remote::key_server(&base);
    let list = bench_list(GRANTS_PER_CALL, Policy::default())?;
    keys.create_list(admin.trim(), &list.ops[0]).await?;
    for op in &list.ops[1..] {
        keys.append_op(&list.address, op).await?;
    }
    let mut key_ids = Vec::new();
    let server_cert = keys.server_cert().await?;
    for _ in 0..16 {
        let key_id = KeyId::generate(OsRng);
        keys.deposit(
            &list.owner,
            &list.address,
            &key_id,
            &SessionKey::generate(OsRng),
            &server_cert,
        )
        .await?;
        key_ids.push(key_id);
    }

    // Signed pull requests from CLIENTS concurrent clients, round-robin over members and
    // keys. The requests are signed before the clock starts, on every core: signing is each
    // member's own work on their own machine, and here it would take the cores the server
    // is measured on. Every request still carries its own nonce and is verified in full.
    // The paths name the server's port, so the requests are kept as paths until it is known.
    let requests = presign_fetches(&list, &list.members[..FETCHERS], &key_ids, FETCHES)?;
    let urls_on = |base: &str| -> Arc<Vec<(String, Vec<u8>)>> {
        Arc::new(
            requests
                .iter()
                .map(|(key_id, body)| {
                    (
                        format!("{base}/v1/lists/{}/keys/{key_id}", list.address),
                        body.clone(),
                    )
                })
                .collect(),
        )
    };
    let next = Arc::new(AtomicUsize::new(0));
    let fetches = fetch_for(&urls_on(&base), &next, seconds).await?;

    // Grants: the list server's push batches, GRANTS_PER_CALL members per call, two callers
    // at once, each for its own post.
    let recipients: Vec<_> = list
        .members
        .iter()
        .map(|m| m.fingerprint().clone())
        .collect();
    let http = reqwest::Client::new();
    let granted = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for key_id in &key_ids[..2] {
        let url = format!("{base}/v1/lists/{}/keys/{key_id}/grants", list.address);
        let (http, token, request, granted) = (
            http.clone(),
            grants_token.trim().to_owned(),
            GrantRequest {
                recipients: recipients.clone(),
            },
            granted.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let response = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&request)
                    .send()
                    .await?
                    .error_for_status()?;
                let grants: Grants = response.json().await?;
                anyhow::ensure!(
                    grants.granted.len() == GRANTS_PER_CALL,
                    "{} refused",
                    grants.refused.len()
                );
                granted.fetch_add(GRANTS_PER_CALL as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let grants = granted.load(Ordering::Relaxed) as f64 / seconds as f64;

    // Memory as the key server fills: deposits from eight clients for fill_seconds.
    let owner = Arc::new(list.owner);
    let (stored, deposits) = deposit_for(&keys, &list.address, &owner, fill_seconds).await?;
    let held = stored + 16;
    let rss = server.peak_rss_mib()?;

    // Memory holding bulk_keys keys: the server stopped, its table filled to that size with
    // copies, then started again to answer fetches and take deposits for `seconds` each.
    drop(server);
    // A copy cannot be opened (the key id is bound into its sealing), so only real deposits
    // are fetched afterwards; at a few hundred deposits a second, depositing every key would
    // take most of an hour.
    let database = format!("sqlite://{}", dir.path().join("keyserver.db").display());
    KeyStore::open(&database)
        .await?
        .copy_session_keys(bulk_keys.saturating_sub(held))
        .await?;
    let server = start_key_server(dir.path())?;
    let base = server.url()?;
    let keys = Remote::key_server(&base);
    let fetches_full = fetch_for(&urls_on(&base), &next, seconds).await?;
    let (stored_full, _) = deposit_for(&keys, &list.address, &owner, seconds).await?;
    let held_full = bulk_keys.max(held) + stored_full;
    let rss_full = server.peak_rss_mib()?;

    Ok(vec![
        Figure {
            name: format!("key fetches ({CLIENTS} clients)"),
            ours: fetches,
            unit: "requests/s".into(),
            peer_name: "openssl speed ecdhx25519 (1 core)".into(),
            peer: x25519,
            ratio: fetches / x25519,
            target: ">= 0.30 of X25519".into(),
        },
        Figure {
            name: format!("grants ({GRANTS_PER_CALL} per call, 2 callers)"),
            ours: grants,
            unit: "grants/s".into(),
            peer_name: "openssl speed ecdhx25519 (1 core)".into(),
            peer: x25519,
            ratio: grants / x25519,
            target: "(floor: 1 X25519 each)".into(),
        },
        Figure {
            name: format!("deposits while filling ({held} keys)"),
            ours: deposits,
            unit: "deposits/s".into(),
            peer_name: "openssl speed ecdhx25519 (1 core)".into(),
            peer: x25519,
            ratio: deposits / x25519,
            target: "(1 X25519 each to unseal)".into(),
        },
        Figure {
            name: format!("key server peak RSS at {held} keys"),
            ours: rss,
            unit: "MiB".into(),
            peer_name: "target at 1,000,000 keys".into(),
            peer: 200.0,
            ratio: 200.0 / rss,
            target: "< 200 MB, flat".into(),
        },
        Figure {
            name: format!("key fetches at {held_full} keys"),
            ours: fetches_full,
            unit: "requests/s".into(),
            peer_name: "openssl speed ecdhx25519 (1 core)".into(),
            peer: x25519,
            ratio: fetches_full / x25519,
            target: ">= 0.30 of X25519".into(),
        },
        Figure {
            name: format!("key server peak RSS at {held_full} keys"),
            ours: rss_full,
            unit: "MiB".into(),
            peer_name: "target at 1,000,000 keys".into(),
            peer: 200.0,
            ratio: 200.0 / rss_full,
            target: "< 200 MB, flat".into(),
        },
    ])
}
