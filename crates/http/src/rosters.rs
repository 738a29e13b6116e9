//! The roster endpoints: `POST /v1/lists` (genesis, operator admin token),
//! `POST /v1/lists/{list}/ops` (an owner-signed op, verified against the current roster),
//! `POST /v1/lists/{list}/ops/read` (the log, for a current member's signed request) and
//! `GET /v1/lists/{list}/ops[?since=N]` (the log, for an operator's or peer server's token),
//! and `GET /v1/lists/{list}/genesis` (the first op alone, public: no member but the first
//! owner, so that someone about to join can pin the list).
//! Who is on a list is nobody else's business: the log names every member and their key.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hushlist_core::api::endpoints::{AppendOp, CreateList, Genesis, ReadOps, ReadRoster, Token};
use hushlist_core::api::{ListGenesis, RosterHead, RosterOps};
use hushlist_core::roster::Roster;
use hushlist_store::Store;
use hushlist_store::rosters::RosterCache;

use crate::ApiError;
use crate::endpoints::{Call, EndpointRoutes as _, Params, Signed};
use crate::requests::RequestVerifier;

/// A server that keeps verified rosters.
pub trait RosterHost: Send + Sync + 'static {
    fn rosters(&self) -> &RosterCache;
    fn store(&self) -> &Store;
    fn verifier(&self) -> &RequestVerifier;
    /// Whether `presented` is a `token` this server takes (for an endpoint that needs it).
    fn check_token(&self, token: Token, presented: Option<&str>) -> Result<(), ApiError>;
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
        .endpoint::<CreateList, _, _>(create_list::<S>)
        .endpoint::<AppendOp, _, _>(append_op::<S>)
        .endpoint::<ReadOps, _, _>(get_ops::<S>)
        .endpoint::<ReadRoster, _, _>(read_ops)
        .endpoint::<Genesis, _, _>(get_genesis::<S>)
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
    call: Call<CreateList>,
) -> Result<Response, ApiError> {
    let roster = state.rosters().create(call.request).await?;
    state.roster_op_accepted();
    Ok((StatusCode::CREATED, Json(head(&roster))).into_response())
}

async fn append_op<S: RosterHost>(
    State(state): State<Arc<S>>,
    call: Call<AppendOp>,
) -> Result<Response, ApiError> {
    let roster = state.rosters().append(&call.params, call.request).await?;
    state.roster_op_accepted();
    Ok((StatusCode::CREATED, Json(head(&roster))).into_response())
}

async fn get_ops<S: RosterHost>(
    State(state): State<Arc<S>>,
    call: Call<ReadOps>,
) -> Result<Response, ApiError> {
    let roster = state.rosters().get(&call.params).await?;
    Ok(Json(ops_between(&roster, call.request.since, roster.head_seq())).into_response())
}

async fn read_ops(request: Signed<ReadRoster>) -> Result<Response, ApiError> {
    // The verifier took the signature, so the signer is or was on the roster (anyone else
    // gets the answer a forgery gets): a current member reads to the head, a former one up to
    // their removal.
    let upto = request
        .roster
        .readable_by(request.signer())
        .ok_or_else(|| {
            ApiError::internal("a signer the verifier accepted has no tenure on the roster")
        })?;
    let read = request.body()?;
    Ok(Json(ops_between(&request.roster, read.since, upto)).into_response())
}

async fn get_genesis<S: RosterHost>(
    State(state): State<Arc<S>>,
    Params(list): Params<Genesis>,
) -> Result<Response, ApiError> {
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
