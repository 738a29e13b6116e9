//! The key server's HTTP/JSON interface: `router(state)` maps endpoints to the service and
//! every failure to a typed JSON error.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hushlist_core::api::GrantRequest;
use hushlist_core::request::SignedRequest;
use hushlist_core::roster::SignedOp;
use hushlist_core::{Address, KeyId};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tower_http::timeout::TimeoutLayer;

use crate::error::ApiError;
use crate::service::KeyServer;

/// Largest request body: a grants call for 10,000 recipients is about 0.5 MB of JSON.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Longest a request may take before it is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn router(state: Arc<KeyServer>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/server-key", get(server_key))
        .route("/v1/lists", post(create_list))
        .route("/v1/lists/{list}/ops", post(append_op).get(get_ops))
        .route("/v1/lists/{list}/keys", post(deposit))
        .route("/v1/lists/{list}/keys/{key_id}", post(fetch_key))
        .route("/v1/lists/{list}/keys/{key_id}/grants", post(grants))
        .route("/v1/lists/{list}/keys/{key_id}/revoke", post(revoke))
        .route("/v1/lists/{list}/keys/{key_id}/audit", post(audit))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_such_endpoint",
                "no such endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

/// Parses a JSON body, telling a too-large body (413) from a malformed one (400).
fn json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(format!(
            "request bodies are limited to {MAX_BODY_BYTES} bytes"
        )),
        _ => ApiError::malformed(rejection.body_text()),
    })?;
    serde_json::from_slice(&bytes).map_err(ApiError::malformed)
}

fn list(text: &str) -> Result<Address, ApiError> {
    Address::parse(text).map_err(|e| ApiError::bad_request("bad_list", e.to_string()))
}

fn key_id(text: &str) -> Result<KeyId, ApiError> {
    text.parse()
        .map_err(|e: hushlist_core::session::SessionError| {
            ApiError::bad_request("bad_key_id", e.to_string())
        })
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

async fn healthz(State(state): State<Arc<KeyServer>>) -> Response {
    match state.store().ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(e) => ApiError::unavailable(format!("storage check failed: {e}")).into_response(),
    }
}

async fn metrics(State(state): State<Arc<KeyServer>>) -> Result<Response, ApiError> {
    let stored = state.store().count_session_keys().await?;
    let m = &state.metrics;
    let counters = [
        ("deposits", "Session keys deposited", &m.deposits),
        ("releases", "Keys released to members (pull)", &m.releases),
        ("grants", "PKESKs granted for push delivery", &m.grants),
        ("refusals", "Key requests and grants refused", &m.refusals),
        (
            "revocations",
            "Keys destroyed by revocation",
            &m.revocations,
        ),
        ("expirations", "Keys destroyed at expiry", &m.expirations),
        ("roster_ops", "Roster ops accepted", &m.roster_ops),
    ];
    let mut text = String::new();
    for (name, help, value) in counters {
        text.push_str(&format!(
            "# HELP hushlist_keyserver_{name}_total {help}.\n# TYPE hushlist_keyserver_{name}_total counter\nhushlist_keyserver_{name}_total {}\n",
            value.load(Ordering::Relaxed)
        ));
    }
    text.push_str(&format!(
        "# HELP hushlist_keyserver_keys_stored Session keys currently held.\n# TYPE hushlist_keyserver_keys_stored gauge\nhushlist_keyserver_keys_stored {stored}\n"
    ));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn server_key(State(state): State<Arc<KeyServer>>) -> impl IntoResponse {
    Json(state.server_key())
}

async fn create_list(
    State(state): State<Arc<KeyServer>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    state.check_admin(bearer(&headers))?;
    let op: SignedOp = json(body)?;
    let head = state.create_list(op).await?;
    Ok((StatusCode::CREATED, Json(head)).into_response())
}

async fn append_op(
    State(state): State<Arc<KeyServer>>,
    Path(list_text): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let list = list(&list_text)?;
    let op: SignedOp = json(body)?;
    let head = state.append_op(&list, op).await?;
    Ok((StatusCode::CREATED, Json(head)).into_response())
}

#[derive(Deserialize)]
struct Since {
    since: Option<u64>,
}

async fn get_ops(
    State(state): State<Arc<KeyServer>>,
    Path(list_text): Path<String>,
    query: Result<Query<Since>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let list = list(&list_text)?;
    let Query(since) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    Ok(Json(state.ops_since(&list, since.since).await?).into_response())
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
