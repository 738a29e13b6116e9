//! The roster endpoints: `POST /v1/lists` (genesis, operator admin token),
//! `POST /v1/lists/{list}/ops` (an owner-signed op, verified against the current roster) and
//! `GET /v1/lists/{list}/ops[?since=N]`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hushlist_core::api::{RosterHead, RosterOps};
use hushlist_core::roster::{Roster, SignedOp};
use hushlist_store::rosters::RosterCache;
use serde::Deserialize;

use crate::{ApiError, bearer, json, list};

/// A server that keeps verified rosters.
pub trait RosterHost: Send + Sync + 'static {
    fn rosters(&self) -> &RosterCache;
    /// Whether `presented` is the operator admin token, needed to create a list.
    fn check_admin(&self, presented: Option<&str>) -> Result<(), ApiError>;
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
    query: Result<Query<Since>, QueryRejection>,
) -> Result<Response, ApiError> {
    let list = list(&list_text)?;
    let Query(since) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let roster = state.rosters().get(&list).await?;
    let ops = match since.since {
        Some(seq) => roster.ops_since(seq).to_vec(),
        None => roster.ops().to_vec(),
    };
    Ok(Json(RosterOps {
        list,
        head_seq: roster.head_seq(),
        ops,
    })
    .into_response())
}
