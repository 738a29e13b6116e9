//! The key server's HTTP/JSON interface: `router(state)` maps endpoints to the service and
//! every failure to a typed JSON error.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hushlist_core::KeyId;
use hushlist_core::api::GrantRequest;
use hushlist_core::request::SignedRequest;
use hushlist_http::rosters::{self, RosterHost as _};
use hushlist_http::{ApiError, bearer, json, list, with_common_layers};

use crate::metrics::OPENMETRICS_TEXT;
use crate::service::KeyServer;

pub fn router(state: Arc<KeyServer>) -> Router {
    with_common_layers(
        rosters::routes::<KeyServer>()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .route("/v1/server-key", get(server_key))
            .route("/v1/lists/{list}/keys", post(deposit))
            .route("/v1/lists/{list}/keys/{key_id}", post(fetch_key))
            .route("/v1/lists/{list}/keys/{key_id}/grants", post(grants))
            .route("/v1/lists/{list}/keys/{key_id}/revoke", post(revoke))
            .route("/v1/lists/{list}/keys/{key_id}/audit", post(audit)),
    )
    .with_state(state)
}

fn key_id(text: &str) -> Result<KeyId, ApiError> {
    text.parse()
        .map_err(|e: hushlist_core::session::SessionError| {
            ApiError::bad_request("bad_key_id", e.to_string())
        })
}

async fn healthz(State(state): State<Arc<KeyServer>>) -> Response {
    match state.store().ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(e) => ApiError::unavailable(format!("storage check failed: {e}")).into_response(),
    }
}

async fn metrics(State(state): State<Arc<KeyServer>>) -> Response {
    let text = state.metrics.encode(state.rosters().ops_verified());
    ([(header::CONTENT_TYPE, OPENMETRICS_TEXT)], text).into_response()
}

async fn server_key(State(state): State<Arc<KeyServer>>) -> impl IntoResponse {
    Json(state.server_key())
}

async fn deposit(
    State(state): State<Arc<KeyServer>>,
    Path(list_text): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let list = list(&list_text)?;
    let request: SignedRequest = json(body)?;
    let (receipt, new) = state.deposit(&list, &request).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(receipt)).into_response())
}

async fn fetch_key(
    State(state): State<Arc<KeyServer>>,
    Path((list_text, key_text)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (list, key_id) = (list(&list_text)?, key_id(&key_text)?);
    let request: SignedRequest = json(body)?;
    Ok(Json(state.fetch_key(&list, &key_id, &request).await?).into_response())
}

async fn grants(
    State(state): State<Arc<KeyServer>>,
    Path((list_text, key_text)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    state.check_grants_token(bearer(&headers))?;
    let (list, key_id) = (list(&list_text)?, key_id(&key_text)?);
    let request: GrantRequest = json(body)?;
    Ok(Json(state.grants(&list, &key_id, request).await?).into_response())
}

async fn revoke(
    State(state): State<Arc<KeyServer>>,
    Path((list_text, key_text)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (list, key_id) = (list(&list_text)?, key_id(&key_text)?);
    let request: SignedRequest = json(body)?;
    state.revoke(&list, &key_id, &request).await?;
    Ok(Json(serde_json::json!({"key_id": key_id, "status": "destroyed"})).into_response())
}

async fn audit(
    State(state): State<Arc<KeyServer>>,
    Path((list_text, key_text)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (list, key_id) = (list(&list_text)?, key_id(&key_text)?);
    let request: SignedRequest = json(body)?;
    Ok(Json(state.audit_log(&list, &key_id, &request).await?).into_response())
}
