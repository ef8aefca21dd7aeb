//! Liveness and readiness for operators and load balancers.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use redis::AsyncCommands;
use serde_json::{json, Value};

use super::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the database and Redis answer, the actor tree runs and the
/// process is not draining.
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
pub async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
