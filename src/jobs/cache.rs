//! The stage cache: what extraction and chunking made of a file, kept per
//! owner by content hash (and extractor key, and chunk settings), so a
//! re-run of the same bytes by the same user (a retry after a later stage
//! failed, a crash, a re-upload with `on_duplicate=keep` or `replace`) skips
//! them. Per owner, not shared: a cache shared between users would answer
//! a second user's upload of a file someone else already has measurably
//! sooner, and so tell them so. The cache is a shortcut, never a dependency:
//! if it cannot be read or written, the stage simply runs.

use std::future::Future;

use uuid::Uuid;

use crate::config::PipelineSettings;
use crate::db::{self, ChunkKey};
use crate::pipeline::chunk::{self, Chunk};
use crate::pipeline::extract::{self, Extracted};
use crate::pipeline::StageError;
use crate::services::Services;

/// The extractor's version plus every setting that changes what it makes of
/// the same bytes (OCR on or off, its languages, dpi and page cap), so a
/// change of any of them does not reuse text made under the old ones.
pub fn extractor_key(p: &PipelineSettings) -> String {
    if p.ocr {
        format!(
            "{};ocr={};dpi={};max_pages={}",
            extract::EXTRACTOR,
            p.ocr_languages,
            p.ocr_dpi,
            p.ocr_max_pages
        )
    } else {
        format!("{};ocr=off", extract::EXTRACTOR)
    }
}

/// The owner's cached extraction of these bytes, or `extract`'s (then
/// cached). The flag says whether it came from the cache.
pub async fn extraction<F>(s: &Services, owner: Uuid, sha: &str, extract: F) -> Result<(Extracted, bool), StageError>
where
    F: Future<Output = Result<Extracted, StageError>>,
{
    let key = extractor_key(&s.settings.pipeline);
    match db::cached_extraction(&s.db, owner, sha, &key).await {
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
        if let Err(e) = db::cache_extraction(&s.db, owner, sha, &key, &v).await {
            tracing::warn!(error = %e, "cannot cache the extracted text");
        }
    }
    Ok((ex, false))
}

/// The owner's cached chunks of this text under the configured chunk
/// settings, or a fresh split (then cached).
pub async fn chunks(s: &Services, owner: Uuid, sha: &str, extracted: &Extracted) -> Vec<Chunk> {
    let p = &s.settings.pipeline;
    let extractor = extractor_key(p);
    let key = ChunkKey {
        owner,
        sha256: sha,
        extractor: &extractor,
        size: p.chunk_size,
        overlap: p.chunk_overlap,
    };
    let cached = db::cached_chunks(&s.db, &key)
        .await
        .ok()
        .flatten()
        .and_then(|v| serde_json::from_value::<Vec<Chunk>>(v).ok());
    if let Some(c) = cached {
        return c;
    }
    let c = chunk::split(extracted, p.chunk_size, p.chunk_overlap);
    if let Ok(v) = serde_json::to_value(&c) {
        if let Err(e) = db::cache_chunks(&s.db, &key, &v).await {
            tracing::warn!(error = %e, "cannot cache the chunks");
        }
    }
    c
}
