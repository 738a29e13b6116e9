//! The key server's HTTP/JSON interface: `router(state)` maps endpoints to the service and
//! every failure to a typed JSON error.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hushlist_core::api::endpoints::{
    AuditKey, DepositKey, FetchKey, GetServerKey, GrantKeys, KeyDestroyed, RevokeKey,
};
use hushlist_http::endpoints::{Call, EndpointRoutes as _, Signed};
use hushlist_http::rosters::{self, RosterHost as _};
use hushlist_http::{ApiError, with_common_layers};

use crate::metrics::OPENMETRICS_TEXT;
use crate::service::KeyServer;

pub fn router(state: Arc<KeyServer>) -> Router {
    with_common_layers(
        rosters::routes::<KeyServer>()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .endpoint::<GetServerKey, _, _>(server_key)
            .endpoint::<DepositKey, _, _>(deposit)
            .endpoint::<FetchKey, _, _>(fetch_key)
            .endpoint::<GrantKeys, _, _>(grants)
            .endpoint::<RevokeKey, _, _>(revoke)
            .endpoint::<AuditKey, _, _>(audit),
    )
    .with_state(state)
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
    request: Signed<DepositKey>,
) -> Result<Response, ApiError> {
    let (receipt, new) = state.deposit(&request).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(receipt)).into_response())
}

async fn fetch_key(
    State(state): State<Arc<KeyServer>>,
    request: Signed<FetchKey>,
) -> Result<Response, ApiError> {
    Ok(Json(state.fetch_key(&request).await?).into_response())
}

async fn grants(
    State(state): State<Arc<KeyServer>>,
    call: Call<GrantKeys>,
) -> Result<Response, ApiError> {
    let (list, key_id) = &call.params;
    Ok(Json(state.grants(list, key_id, call.request).await?).into_response())
}

async fn revoke(
    State(state): State<Arc<KeyServer>>,
    request: Signed<RevokeKey>,
) -> Result<Response, ApiError> {
    state.revoke(&request).await?;
    Ok(Json(KeyDestroyed {
        key_id: request.params.1,
        status: "destroyed".to_owned(),
    })
    .into_response())
}

async fn audit(
    State(state): State<Arc<KeyServer>>,
    request: Signed<AuditKey>,
) -> Result<Response, ApiError> {
    Ok(Json(state.audit_log(&request).await?).into_response())
}
