//! The key server's HTTP/JSON interface: `router(state)` maps endpoints to the service and
//! every failure to a typed JSON error.

use std::sync::Arc;
use std::sync::atomic::Ordering;

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
