//! The list server's HTTP/JSON interface: the signed roster endpoints (shared with the key
//! server), the members' archive, delivery switches, one-click unsubscribe, join requests
//! and their confirmation, held posts, `/healthz` and `/metrics`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hushlist_core::api::{JoinConfirmation, JoinRequest};
use hushlist_core::request::SignedRequest;
use hushlist_http::{ApiError, json, list, rosters, with_common_layers};

use crate::metrics::OPENMETRICS_TEXT;
use crate::service::ListServer;

pub fn router(state: Arc<ListServer>) -> Router {
    with_common_layers(
        rosters::routes::<ListServer>()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .route("/v1/lists/{list}/archive", post(archive))
            .route("/v1/lists/{list}/delivery", post(switch_delivery))
            .route("/v1/lists/{list}/join", post(join))
            .route("/v1/lists/{list}/join/confirm", post(confirm_join))
            .route("/v1/lists/{list}/join-requests", post(pending_joins))
            .route("/v1/lists/{list}/join-requests/settle", post(settle_join))
            .route("/v1/lists/{list}/held", post(held_posts))
            .route("/v1/lists/{list}/held/settle", post(settle_held))
            .route("/v1/unsubscribe/{token}", post(unsubscribe)),
    )
    .with_state(state)
}

async fn healthz(State(state): State<Arc<ListServer>>) -> Response {
    match state.store().ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(e) => ApiError::unavailable(format!("storage check failed: {e}")).into_response(),
    }
}

async fn metrics(State(state): State<Arc<ListServer>>) -> Result<Response, ApiError> {
    let text = state
        .metrics
        .encode(state.store(), state.rosters().ops_verified())
        .await?;
    Ok(([(header::CONTENT_TYPE, OPENMETRICS_TEXT)], text).into_response())
}

async fn archive(
    State(state): State<Arc<ListServer>>,
    Path(list_text): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let list = list(&list_text)?;
    let request: SignedRequest = json(body)?;
    Ok(Json(state.archive(&list, &request).await?).into_response())
}

async fn switch_delivery(
    State(state): State<Arc<ListServer>>,
    Path(list_text): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let list = list(&list_text)?;
    let request: SignedRequest = json(body)?;
    Ok(Json(state.switch_delivery(&list, &request).await?).into_response())
}

async fn join(
    State(state): State<Arc<ListServer>>,
    Path(list_text): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let list = list(&list_text)?;
    let request: JoinRequest = json(body)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(state.join(&list, &request).await?),
    )
        .into_response())
}

async fn confirm_join(
    State(state): State<Arc<ListServer>>,
    Path(list_text): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let list = list(&list_text)?;
    let confirmation: JoinConfirmation = json(body)?;
    Ok(Json(state.confirm_join(&list, &confirmation.token).await?).into_response())
}

async fn pending_joins(
    State(state): State<Arc<ListServer>>,
    Path(list_text): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let list = list(&list_text)?;
    let request: SignedRequest = json(body)?;
    Ok(Json(state.pending_joins(&list, &request).await?).into_response())
}

async fn settle_join(
    State(state): State<Arc<ListServer>>,
    Path(list_text): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let list = list(&list_text)?;
    let request: SignedRequest = json(body)?;
    Ok(Json(state.settle_join(&list, &request).await?).into_response())
}

async fn held_posts(
    State(state): State<Arc<ListServer>>,
    Path(list_text): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let list = list(&list_text)?;
    let request: SignedRequest = json(body)?;
    Ok(Json(state.held_posts(&list, &request).await?).into_response())
}

async fn settle_held(
    State(state): State<Arc<ListServer>>,
    Path(list_text): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let list = list(&list_text)?;
    let request: SignedRequest = json(body)?;
    Ok(Json(state.settle_held(&list, &request).await?).into_response())
}

/// RFC 8058 one-click: the mail client POSTs `List-Unsubscribe=One-Click`; the token in the
/// path is what counts. GET is not routed, so link scanners cannot unsubscribe anyone.
async fn unsubscribe(
    State(state): State<Arc<ListServer>>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.unsubscribe(&token).await?).into_response())
}
