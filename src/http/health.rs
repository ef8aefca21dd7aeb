//! Liveness and readiness for operators, load balancers and systemd. Both
//! ask the actor tree: the supervisor, the session registry, the relay and
//! (in the worker role) the queue poller must each answer a ping within a
//! second, so a tree that is frozen (a handler that never returns) turns
//! them 503 even though the HTTP server still runs.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use redis::AsyncCommands;
use serde_json::{json, Value};

use super::AppState;
use crate::actors::SupervisorMsg;

/// How long each actor of the tree has to answer.
const PING_MS: u64 = 1000;

/// Asks the tree; `Err` names who did not answer.
pub async fn tree_alive(state: &AppState) -> Result<(), String> {
    let refs = ractor::call_t!(state.supervisor, SupervisorMsg::Ping, PING_MS)
        .map_err(|_| "the supervisor did not answer".to_string())?;
    let registry = async {
        match &refs.registry {
            Some(r) => ractor::call_t!(r, crate::actors::registry::RegistryMsg::Ping, PING_MS)
                .map_err(|_| "the session registry did not answer"),
            None => Err("the session registry is not running"),
        }
    };
    let relay = async {
        match &refs.relay {
            Some(r) => ractor::call_t!(r, crate::actors::relay::RelayMsg::Ping, PING_MS)
                .map_err(|_| "the progress relay did not answer"),
            None => Err("the progress relay is not running"),
        }
    };
    let draining = state.draining.load(Ordering::SeqCst);
    let poller = async {
        match &refs.poller {
            Some(p) => ractor::call_t!(p, crate::actors::queue_poller::PollerMsg::Ping, PING_MS)
                .map_err(|_| "the queue poller did not answer"),
            // Stopped on purpose while draining; otherwise it must run.
            None if !refs.worker || draining => Ok(()),
            None => Err("the queue poller is not running"),
        }
    };
    let (a, b, c) = tokio::join!(registry, relay, poller);
    a.and(b).and(c).map_err(str::to_string)
}

/// Liveness: the actor tree answers (`/healthz`, also at `/livez`).
#[utoipa::path(get, path = "/healthz", operation_id = "health_healthz", tag = "operations",
    responses(
        (status = 200, description = "Alive: every actor of the tree answered", body = crate::http::openapi::Alive),
        (status = 503, description = "The actor tree did not answer", body = crate::http::openapi::Alive),
    ))]
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match tree_alive(&state).await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Err(why) => {
            tracing::error!(reason = %why, "liveness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "dead", "reason": why })),
            )
        }
    }
}

/// Ready when the database and Redis answer, the actor tree answers and the
/// process is not draining.
#[utoipa::path(get, path = "/readyz", operation_id = "health_readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = crate::http::openapi::Readiness),
        (status = 503, description = "Not ready (dependency down or draining)", body = crate::http::openapi::Readiness),
    ))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let db_ok = tokio::time::timeout(Duration::from_secs(2), crate::db::ping(&state.services.db))
        .await
        .is_ok_and(|r| r.is_ok());
    let mut con = state.services.redis.clone();
    let redis_ok = con.ping::<String>().await.is_ok();
    let tree = tree_alive(&state).await;
    let workers_ok = tree.is_ok();
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
            "tree": tree.err(),
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
