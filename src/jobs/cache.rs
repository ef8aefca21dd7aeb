//! The stage cache: what extraction and chunking made of a file, kept by
//! content hash (and extractor version, and chunk settings), so a re-run of
//! the same bytes (a retry after a later stage failed, a crash, a re-upload)
//! skips them. The cache is a shortcut, never a dependency: if it cannot be
//! read or written, the stage simply runs.

use std::future::Future;

use crate::db;
use crate::pipeline::chunk::{self, Chunk};
use crate::pipeline::extract::{self, Extracted};
use crate::pipeline::StageError;
use crate::services::Services;

/// The cached extraction of these bytes, or `extract`'s (then cached).
/// The flag says whether it came from the cache.
pub async fn extraction<F>(s: &Services, sha: &str, extract: F) -> Result<(Extracted, bool), StageError>
where
    F: Future<Output = Result<Extracted, StageError>>,
{
    match db::cached_extraction(&s.db, sha, extract::EXTRACTOR).await {
        Ok(Some(v)) => {
            if let Ok(ex) = serde_json::from_value::<Extracted>(v) {
                return Ok((ex, true));
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "stage cache unavailable"),
    }
    let ex = extract.await?;
    if let Ok(v) = serde_json::to_value(&ex) {
        if let Err(e) = db::cache_extraction(&s.db, sha, extract::EXTRACTOR, &v).await {
            tracing::warn!(error = %e, "cannot cache the extracted text");
        }
    }
    Ok((ex, false))
}

/// The cached chunks of this text under the configured chunk settings, or a fresh split (then cached).
pub async fn chunks(s: &Services, sha: &str, extracted: &Extracted) -> Vec<Chunk> {
    let p = &s.settings.pipeline;
    let cached = db::cached_chunks(&s.db, sha, extract::EXTRACTOR, p.chunk_size, p.chunk_overlap)
        .await
        .ok()
        .flatten()
        .and_then(|v| serde_json::from_value::<Vec<Chunk>>(v).ok());
    if let Some(c) = cached {
        return c;
    }
    let c = chunk::split(extracted, p.chunk_size, p.chunk_overlap);
    if let Ok(v) = serde_json::to_value(&c) {
        if let Err(e) = db::cache_chunks(&s.db, sha, extract::EXTRACTOR, p.chunk_size, p.chunk_overlap, &v).await {
            tracing::warn!(error = %e, "cannot cache the chunks");
        }
    }
    c
}
