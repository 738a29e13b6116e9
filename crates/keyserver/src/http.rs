//! The key server's HTTP/JSON interface: `router(state)` maps endpoints to the service and
//! every failure to a typed JSON error.

use std::sync::Arc;
use std::sync::atomic::Ordering;

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
        "# HELP hushlist_keyserver_roster_ops_verified_total Roster ops read from the store and verified (each list's whole log once after a start, then new ops).\n# TYPE hushlist_keyserver_roster_ops_verified_total counter\nhushlist_keyserver_roster_ops_verified_total {}\n",
        state.rosters().ops_verified()
    ));
    text.push_str(&format!(
        "# HELP hushlist_keyserver_keys_stored Session keys currently held.\n# TYPE hushlist_keyserver_keys_stored gauge\nhushlist_keyserver_keys_stored {stored}\n"
    ));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
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
