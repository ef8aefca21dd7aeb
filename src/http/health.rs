//! Liveness and readiness for operators and load balancers.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use redis::AsyncCommands;
use serde_json::{json, Value};

use super::AppState;

#[utoipa::path(get, path = "/healthz", operation_id = "health_healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = crate::http::openapi::Alive)))]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the database and Redis answer, the actor tree runs and the
/// process is not draining.
#[utoipa::path(get, path = "/readyz", operation_id = "health_readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = crate::http::openapi::Readiness),
        (status = 503, description = "Not ready (dependency down or draining)", body = crate::http::openapi::Readiness),
    ))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let db_ok = sqlx::query("SELECT 1").execute(&state.services.db).await.is_ok();
    let mut con = state.services.redis.clone();
    let redis_ok = con.ping::<String>().await.is_ok();
    let workers_ok = state.supervisor.get_status() == ractor::ActorStatus::Running;
    let draining = state.draining.load(Ordering::SeqCst);
    let ready = db_ok && redis_ok && workers_ok && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "database": db_ok,
            "redis": redis_ok,
            "workers": workers_ok,
            "draining": draining,
        })),
    )
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", operation_id = "health_metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
