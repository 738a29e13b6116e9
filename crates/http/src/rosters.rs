//! The roster endpoints: `POST /v1/lists` (genesis, operator admin token),
//! `POST /v1/lists/{list}/ops` (an owner-signed op, verified against the current roster),
//! `POST /v1/lists/{list}/ops/read` (the log, for a current member's signed request) and
//! `GET /v1/lists/{list}/ops[?since=N]` (the log, for an operator's or peer server's token),
//! and `GET /v1/lists/{list}/genesis` (the first op alone, public: no member but the first
//! owner, so that someone about to join can pin the list).
//! Who is on a list is nobody else's business: the log names every member and their key.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hushlist_core::api::{ListGenesis, RosterHead, RosterOps, RosterRead, purpose};
use hushlist_core::request::SignedRequest;
use hushlist_core::roster::{Roster, SignedOp};
use hushlist_store::Store;
use hushlist_store::rosters::RosterCache;
use serde::Deserialize;

use crate::requests::RequestVerifier;
use crate::{ApiError, bearer, json, list};

/// A server that keeps verified rosters.
pub trait RosterHost: Send + Sync + 'static {
    fn rosters(&self) -> &RosterCache;
    fn store(&self) -> &Store;
    fn verifier(&self) -> &RequestVerifier;
    /// Whether `presented` is the operator admin token, needed to create a list.
    fn check_admin(&self, presented: Option<&str>) -> Result<(), ApiError>;
    /// Whether `presented` is a token that may read every roster: the operator's, or a peer
    /// server's.
    fn check_roster_reader(&self, presented: Option<&str>) -> Result<(), ApiError>;
    /// Called after an op was verified and stored (for metrics).
    fn roster_op_accepted(&self);
}

/// Reads and verifies every stored list's roster in the background after a start, so that
/// the first request for a list need not wait for it (a list of 100,000 members takes about
/// half a minute); requests that come sooner wait for this replay rather than start their own.
pub fn spawn_roster_loading<S: RosterHost>(host: Arc<S>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        match host.rosters().load_all().await {
            Ok(failed) => {
                for (list, error) in &failed {
                    tracing::error!(%list, %error, "cannot load the list's roster");
                }
                tracing::info!(
                    ops = host.rosters().ops_verified(),
                    seconds = started.elapsed().as_secs_f64(),
                    failed = failed.len(),
                    "rosters loaded"
                );
            }
            Err(error) => tracing::error!(%error, "cannot list the stored rosters"),
        }
    })
}

pub fn routes<S: RosterHost>() -> Router<Arc<S>> {
    Router::new()
        .route("/v1/lists", post(create_list::<S>))
        .route(
            "/v1/lists/{list}/ops",
            post(append_op::<S>).get(get_ops::<S>),
        )
        .route("/v1/lists/{list}/ops/read", post(read_ops::<S>))
        .route("/v1/lists/{list}/genesis", get(get_genesis::<S>))
}

pub fn head(roster: &Roster) -> RosterHead {
    RosterHead {
        list: roster.list().clone(),
        head_seq: roster.head_seq(),
        head_hash: roster.head_hash().to_string(),
    }
}

async fn create_list<S: RosterHost>(
    State(state): State<Arc<S>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    state.check_admin(bearer(&headers))?;
    let op: SignedOp = json(body)?;
    let roster = state.rosters().create(op).await?;
    state.roster_op_accepted();
    Ok((StatusCode::CREATED, Json(head(&roster))).into_response())
}

async fn append_op<S: RosterHost>(
    State(state): State<Arc<S>>,
    Path(list_text): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let list = list(&list_text)?;
    let op: SignedOp = json(body)?;
    let roster = state.rosters().append(&list, op).await?;
    state.roster_op_accepted();
    Ok((StatusCode::CREATED, Json(head(&roster))).into_response())
}

#[derive(Deserialize)]
struct Since {
    since: Option<u64>,
}

async fn get_ops<S: RosterHost>(
    State(state): State<Arc<S>>,
    Path(list_text): Path<String>,
    headers: HeaderMap,
    query: Result<Query<Since>, QueryRejection>,
) -> Result<Response, ApiError> {
    state.check_roster_reader(bearer(&headers))?;
    let list = list(&list_text)?;
    let Query(since) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let roster = state.rosters().get(&list).await?;
    Ok(Json(ops_between(&roster, since.since, roster.head_seq())).into_response())
}

async fn read_ops<S: RosterHost>(
    State(state): State<Arc<S>>,
    Path(list_text): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let list = list(&list_text)?;
    let request: SignedRequest = json(body)?;
    let roster = state.rosters().get(&list).await?;
    let (verified, _) = state
        .verifier()
        .verify(
            state.store(),
            &roster,
            &request,
            &purpose::read_roster(&list),
        )
        .await?;
    // The verifier took the signature, so the signer is or was on the roster (anyone else
    // gets the answer a forgery gets): a current member reads to the head, a former one up to
    // their removal.
    let upto = roster.readable_by(&verified.signer).ok_or_else(|| {
        ApiError::internal("a signer the verifier accepted has no tenure on the roster")
    })?;
    let read: RosterRead = serde_json::from_slice(&verified.body).map_err(ApiError::malformed)?;
    Ok(Json(ops_between(&roster, read.since, upto)).into_response())
}

async fn get_genesis<S: RosterHost>(
    State(state): State<Arc<S>>,
    Path(list_text): Path<String>,
) -> Result<Response, ApiError> {
    let list = list(&list_text)?;
    let roster = state.rosters().get(&list).await?;
    Ok(Json(ListGenesis {
        genesis: roster.ops()[0].clone(),
        list,
    })
    .into_response())
}

/// The ops after `since` (all, without it) up to and including `upto`.
fn ops_between(roster: &Roster, since: Option<u64>, upto: u64) -> RosterOps {
    let start = since.map_or(0, |seq| seq.saturating_add(1));
    let ops = (start..=upto)
        .map_while(|seq| roster.ops().get(usize::try_from(seq).ok()?).cloned())
        .collect();
    RosterOps {
        list: roster.list().clone(),
        head_seq: upto,
        ops,
    }
}
