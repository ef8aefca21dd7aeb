//! `POST /api/v1/search`: the caller's best chunks for a query, by
//! keyword and vector search fused (`mode` hybrid, the default), or by one
//! of them (`semantic`, `keyword`); each hit with its citation. See
//! [`crate::search`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::AuthUser;
use super::error::ApiError;
use super::AppState;
use crate::pipeline::embed::{EmbedError, Embedder};
use crate::search::{self, Mode};
use crate::{db, reembed};

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
        Mode::Semantic => search::single(semantic(s, user.user_id, query, k, ids).await?, mode, &terms),
        Mode::Keyword => search::single(
            db::keyword_search(&s.db, user.user_id, query, k, ids).await?,
            mode,
            &terms,
        ),
        Mode::Hybrid => {
            let depth = search::fusion_depth(k);
            let (sem, key) = tokio::try_join!(semantic(s, user.user_id, query, depth, ids), async {
                db::keyword_search(&s.db, user.user_id, query, depth, ids)
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

async fn embed_query(e: &Arc<dyn Embedder>, query: &str) -> Result<pgvector::Vector, ApiError> {
    let mut vectors = e.embed(&[query.to_string()]).await.map_err(|e| match e {
        EmbedError::Transient { reason, .. } => ApiError::Unavailable(reason),
        EmbedError::Permanent(reason) => ApiError::Internal(anyhow::anyhow!(reason)),
    })?;
    Ok(pgvector::Vector::from(
        vectors.pop().ok_or_else(|| anyhow::anyhow!("no query vector"))?,
    ))
}

/// The best chunks by meaning. Each document is searched with the model
/// its vectors are of (the configured one, or a previous one until the
/// user's re-embed switches, see [`crate::reembed`]), the query embedded by
/// that model; lists of several models are interleaved by rank.
async fn semantic(
    s: &crate::services::Services,
    user: Uuid,
    query: &str,
    k: i64,
    document_ids: Option<&[Uuid]>,
) -> Result<Vec<db::ChunkHit>, ApiError> {
    let mut models: HashMap<i32, (Arc<dyn Embedder>, pgvector::Vector)> = HashMap::new();
    for (id, e) in reembed::query_models(s, user).await? {
        let v = embed_query(&e, query).await?;
        models.insert(id, (e, v));
    }
    let mut tx = db::begin_search(&s.db).await?;
    let mut ids = db::user_search_models(&mut *tx, user).await?;
    if ids.is_empty() {
        ids.push(s.model_id);
    }
    // A switch committed between the lookup and this snapshot: the
    // configured model now covers those documents.
    if ids.contains(&s.model_id) && !models.contains_key(&s.model_id) {
        let v = embed_query(&s.embedder, query).await?;
        models.insert(s.model_id, (s.embedder.clone(), v));
    }
    let mut lists = Vec::new();
    for id in ids {
        if let Some((e, v)) = models.get(&id) {
            lists.push(db::search(&mut tx, user, id, e.dimension(), v, k, document_ids).await?);
        }
    }
    tx.commit().await?;
    Ok(interleave(lists, k as usize))
}

/// One list from several ranked lists: by reciprocal rank (1/(60 + rank)),
/// ties by list order; a single list is returned as it is.
fn interleave(mut lists: Vec<Vec<db::ChunkHit>>, k: usize) -> Vec<db::ChunkHit> {
    if lists.len() <= 1 {
        return lists.pop().unwrap_or_default();
    }
    let mut ranked: Vec<(f64, usize, db::ChunkHit)> = Vec::new();
    for (l, list) in lists.into_iter().enumerate() {
        for (rank, hit) in list.into_iter().enumerate() {
            ranked.push((1.0 / (61.0 + rank as f64), l, hit));
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.into_iter().take(k).map(|(.., h)| h).collect()
}
