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
pub mod openapi;
pub mod proxy;
pub mod search;
pub mod socket_leases;
pub mod ui;
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
    /// Where sockets register (the session registry, wherever it runs now).
    pub registry: crate::actors::registry::RegistryHandle,
    pub auth: Arc<AuthKeys>,
    /// Set when shutdown begins: readiness turns false.
    pub draining: Arc<AtomicBool>,
    /// Cancelled when shutdown begins: sockets close with 1001.
    pub shutdown: CancellationToken,
    pub socket_ids: ws::SocketIds,
    /// The per-user socket limit across instances.
    pub socket_leases: Arc<socket_leases::SocketLeases>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

/// Every error leaves as `{"error": {"code", "message"}}`, also the ones
/// axum's extractors and router produce as plain text (malformed JSON or
/// query, wrong content type, unknown route or method). A 422 from a JSON
/// body that parses but does not fit becomes 400 like our own validation.
async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "error",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let mut out = (
        status,
        axum::Json(serde_json::json!({ "error": { "code": code, "message": message } })),
    )
        .into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let proxies = proxy::TrustedProxies::new(&state.services.settings.http.trusted_proxies);
    let upload_limit = state.services.settings.http.max_request_bytes as usize;
    let api = Router::new()
        .route(
            "/documents",
            post(documents::upload)
                .layer(DefaultBodyLimit::max(upload_limit))
                .get(documents::list),
        )
        .route("/documents/{id}", get(documents::get).delete(documents::delete))
        .route("/documents/{id}/text", get(documents::text))
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
        .route("/admin/reembed", get(admin::reembed_status).post(admin::reembed_start))
        .route("/search", post(search::search))
        .route("/analytics/processing", get(analytics::processing))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/ws/{user_id}", get(ws::handler));
    Router::new()
        .merge(ui::routes(state.services.settings.http.dev_mode))
        .route("/healthz", get(health::healthz))
        .route("/livez", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .nest("/api/v1", api)
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(TraceLayer::new_for_http().make_span_with(move |req: &Request<_>| {
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
            let peer = req
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0);
            let (client, scheme) = proxies.client(peer, req.headers());
            let client = client.map(|c| c.to_string()).unwrap_or_default();
            tracing::info_span!("request", method = %req.method(), matched_path = %matched, request_id = %rid, client = %client, scheme)
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}
