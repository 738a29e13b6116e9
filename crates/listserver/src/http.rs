//! The list server's HTTP/JSON interface: the signed roster endpoints (shared with the key
//! server), the members' archive, delivery switches, one-click unsubscribe, join requests
//! and their confirmation, held posts, `/healthz` and `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hushlist_core::api::endpoints::{
    ConfirmJoin, HeldPostList, Join, PendingJoinRequests, ReadArchive, SettleHeld, SettleJoin,
    SwitchDelivery, Unsubscribe, UnsubscribeToken,
};
use hushlist_http::endpoints::{Call, EndpointRoutes as _, Params, Signed};
use hushlist_http::{ApiError, rosters, with_common_layers};

use crate::metrics::OPENMETRICS_TEXT;
use crate::service::ListServer;

pub fn router(state: Arc<ListServer>) -> Router {
    with_common_layers(
        rosters::routes::<ListServer>()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .endpoint::<ReadArchive, _, _>(archive)
            .endpoint::<SwitchDelivery, _, _>(switch_delivery)
            .endpoint::<Join, _, _>(join)
            .endpoint::<ConfirmJoin, _, _>(confirm_join)
            .endpoint::<PendingJoinRequests, _, _>(pending_joins)
            .endpoint::<SettleJoin, _, _>(settle_join)
            .endpoint::<HeldPostList, _, _>(held_posts)
            .endpoint::<SettleHeld, _, _>(settle_held)
            .endpoint::<Unsubscribe, _, _>(unsubscribe),
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
    request: Signed<ReadArchive>,
) -> Result<Response, ApiError> {
    Ok(Json(state.archive(&request).await?).into_response())
}

async fn switch_delivery(
    State(state): State<Arc<ListServer>>,
    request: Signed<SwitchDelivery>,
) -> Result<Response, ApiError> {
    Ok(Json(state.switch_delivery(&request).await?).into_response())
}

async fn join(
    State(state): State<Arc<ListServer>>,
    call: Call<Join>,
) -> Result<Response, ApiError> {
    let receipt = state.join(&call.params, &call.request).await?;
    Ok((StatusCode::ACCEPTED, Json(receipt)).into_response())
}

async fn confirm_join(
    State(state): State<Arc<ListServer>>,
    call: Call<ConfirmJoin>,
) -> Result<Response, ApiError> {
    Ok(Json(
        state
            .confirm_join(&call.params, &call.request.token)
            .await?,
    )
    .into_response())
}

async fn pending_joins(
    State(state): State<Arc<ListServer>>,
    request: Signed<PendingJoinRequests>,
) -> Result<Response, ApiError> {
    Ok(Json(state.pending_joins(&request).await?).into_response())
}

async fn settle_join(
    State(state): State<Arc<ListServer>>,
    request: Signed<SettleJoin>,
) -> Result<Response, ApiError> {
    Ok(Json(state.settle_join(&request).await?).into_response())
}

async fn held_posts(
    State(state): State<Arc<ListServer>>,
    request: Signed<HeldPostList>,
) -> Result<Response, ApiError> {
    Ok(Json(state.held_posts(&request).await?).into_response())
}

async fn settle_held(
    State(state): State<Arc<ListServer>>,
    request: Signed<SettleHeld>,
) -> Result<Response, ApiError> {
    Ok(Json(state.settle_held(&request).await?).into_response())
}

/// RFC 8058 one-click: the mail client POSTs `List-Unsubscribe=One-Click`; the token in the
/// path is what counts. GET is not routed, so link scanners cannot unsubscribe anyone.
async fn unsubscribe(
    State(state): State<Arc<ListServer>>,
    Params(UnsubscribeToken(token)): Params<Unsubscribe>,
) -> Result<Response, ApiError> {
    Ok(Json(state.unsubscribe(&token).await?).into_response())
}
