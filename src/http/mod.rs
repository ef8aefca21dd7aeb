//! The HTTP surface (`spec/contract.md`): router, shared state, and one
//! module per resource.

pub mod admin;
pub mod analytics;
pub mod auth;
pub mod batches;
pub mod documents;
pub mod error;
pub mod health;
pub mod jobs;
pub mod search;
pub mod ws;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::routing::{get, post};
use axum::Router;
use ractor::ActorRef;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::actors::SupervisorMsg;
use crate::services::Services;
use auth::AuthKeys;

#[derive(Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub auth: Arc<AuthKeys>,
    /// Set when shutdown begins: readiness turns false.
    pub draining: Arc<AtomicBool>,
    /// Cancelled when shutdown begins: sockets close with 1001.
    pub shutdown: CancellationToken,
    pub socket_ids: ws::SocketIds,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let upload_limit = state.services.settings.http.max_request_bytes as usize;
    let api = Router::new()
        .route(
            "/documents",
            post(documents::upload)
                .layer(DefaultBodyLimit::max(upload_limit))
                .get(documents::list),
        )
        .route("/documents/{id}", get(documents::get).delete(documents::delete))
        .route(
            "/batches",
            post(batches::create).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/batches/{id}", get(batches::get))
        .route("/jobs/progress", post(jobs::external_progress))
        .route("/jobs/{job_id}", get(jobs::get))
        .route("/jobs/{job_id}/history", get(jobs::history))
        .route("/jobs/{job_id}/retry", post(jobs::retry))
        .route("/jobs/{job_id}/cancel", post(jobs::cancel))
        .route("/admin/jobs", get(admin::jobs))
        .route("/admin/jobs/recover-stalled", post(admin::recover_stalled))
        .route("/search", post(search::search))
        .route("/analytics/processing", get(analytics::processing))
        .route("/ws/{user_id}", get(ws::handler));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .nest("/api/v1", api)
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let matched = req
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            let rid = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            tracing::info_span!("request", method = %req.method(), matched_path = %matched, request_id = %rid)
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}
