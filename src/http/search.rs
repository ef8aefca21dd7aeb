//! `POST /api/v1/search`: the caller's best chunks for a query, by cosine
//! similarity of the configured model's vectors.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::AuthUser;
use super::error::ApiError;
use super::AppState;
use crate::db;
use crate::pipeline::embed::EmbedError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    query: String,
    k: Option<i64>,
    document_ids: Option<Vec<Uuid>>,
}

pub const MAX_QUERY_CHARS: usize = 2000;

pub async fn search(
    State(state): State<AppState>,
    user: AuthUser,
    Json(req): Json<SearchRequest>,
) -> Result<Json<Value>, ApiError> {
    let query = req.query.trim();
    if query.is_empty() {
        return Err(ApiError::BadRequest("the query is empty".into()));
    }
    if query.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::BadRequest(format!(
            "the query is longer than {MAX_QUERY_CHARS} characters"
        )));
    }
    let k = req.k.unwrap_or(5);
    if !(1..=50).contains(&k) {
        return Err(ApiError::BadRequest("k must be between 1 and 50".into()));
    }
    let s = &state.services;
    let mut vectors = s.embedder.embed(&[query.to_string()]).await.map_err(|e| match e {
        EmbedError::Transient { reason, .. } => ApiError::Unavailable(reason),
        EmbedError::Permanent(reason) => ApiError::Internal(anyhow::anyhow!(reason)),
    })?;
    let vector = pgvector::Vector::from(vectors.pop().ok_or_else(|| anyhow::anyhow!("no query vector"))?);
    let hits = db::search(
        &s.db,
        user.user_id,
        s.model_id,
        s.embedder.dimension(),
        &vector,
        k,
        req.document_ids.as_deref(),
    )
    .await?;
    Ok(Json(
        json!({ "query": query, "model": s.embedder.model(), "results": hits }),
    ))
}
