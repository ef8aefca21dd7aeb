//! `POST /api/v1/search`: the caller's best chunks for a query, by
//! keyword and vector search fused (`mode` hybrid, the default), or by one
//! of them (`semantic`, `keyword`); each hit with its citation. See
//! [`crate::search`].

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
use crate::search::{self, Mode};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// 1–2000 characters (not only spaces).
    #[schema(min_length = 1, max_length = 2000, pattern = "\\S")]
    query: String,
    /// 1–50, default 5.
    #[schema(minimum = 1, maximum = 50, value_type = Option<i64>)]
    k: Option<serde_json::Number>,
    /// Only these documents.
    document_ids: Option<Vec<Uuid>>,
    /// `hybrid` (default), `semantic` or `keyword`.
    #[schema(value_type = Option<String>, pattern = "^(hybrid|semantic|keyword)$")]
    mode: Option<String>,
}

pub const MAX_QUERY_CHARS: usize = 2000;

#[utoipa::path(post, path = "/api/v1/search", operation_id = "search_search", tag = "search",
    request_body = SearchRequest,
    responses(
        (status = 415, description = "Wrong content type", body = crate::http::openapi::ErrorBody),
        (status = 200, description = "The caller's best chunks", body = crate::http::openapi::SearchResults),
        (status = 400, description = "Empty or too long query, bad k, unknown mode", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "A document id that is not the caller's", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = [])))]
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
    // JSON's 5 and 5.0 are the same integer.
    let k = match &req.k {
        None => 5,
        Some(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && (1.0..=50.0).contains(&f) => f as i64,
            _ => return Err(ApiError::BadRequest("k must be an integer between 1 and 50".into())),
        },
    };
    let mode = match req.mode.as_deref() {
        None => Mode::Hybrid,
        Some(m) => Mode::parse(m)
            .ok_or_else(|| ApiError::BadRequest(format!("mode must be one of {}", Mode::NAMES.join(", "))))?,
    };
    let s = &state.services;
    // Another user's document ids answer 404, as on every other route.
    if let Some(ids) = req.document_ids.as_deref() {
        if ids.len() > 1000 {
            return Err(ApiError::BadRequest("document_ids holds at most 1000 ids".into()));
        }
        if !db::owns_all(&s.db, user.user_id, ids).await? {
            return Err(ApiError::NotFound("no such document".into()));
        }
    }
    let ids = req.document_ids.as_deref();
    let terms = search::query_terms(query);
    let hits = match mode {
        Mode::Semantic => search::single(semantic(&state, user.user_id, query, k, ids).await?, mode, &terms),
        Mode::Keyword => search::single(
            db::keyword_search(&s.db, user.user_id, s.model_id, query, k, ids).await?,
            mode,
            &terms,
        ),
        Mode::Hybrid => {
            let depth = search::fusion_depth(k);
            let (sem, key) = tokio::try_join!(semantic(&state, user.user_id, query, depth, ids), async {
                db::keyword_search(&s.db, user.user_id, s.model_id, query, depth, ids)
                    .await
                    .map_err(ApiError::from)
            })?;
            search::fuse(sem, key, k as usize, &terms)
        }
    };
    Ok(Json(json!({
        "query": query,
        "mode": mode.as_str(),
        "model": s.embedder.model(),
        "results": hits,
    })))
}

/// The semantic side: the query's vector, then the nearest chunks.
async fn semantic(
    state: &AppState,
    owner: Uuid,
    query: &str,
    k: i64,
    ids: Option<&[Uuid]>,
) -> Result<Vec<db::ChunkHit>, ApiError> {
    let s = &state.services;
    let mut vectors = s.embedder.embed(&[query.to_string()]).await.map_err(|e| match e {
        EmbedError::Transient { reason, .. } => ApiError::Unavailable(reason),
        EmbedError::Permanent(reason) => ApiError::Internal(anyhow::anyhow!(reason)),
    })?;
    let vector = pgvector::Vector::from(vectors.pop().ok_or_else(|| anyhow::anyhow!("no query vector"))?);
    Ok(db::search(&s.db, owner, s.model_id, s.embedder.dimension(), &vector, k, ids).await?)
}
