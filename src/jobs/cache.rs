//! The stage cache: what extraction and chunking made of a file, kept per
//! owner by content hash (and extractor key: version, kind of file, OCR
//! settings; and chunk settings), so a
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
use crate::pipeline::extract::sniff::Kind;
use crate::pipeline::extract::{self, Extracted};
use crate::pipeline::StageError;
use crate::services::Services;

/// Where a file's cached stage outputs are kept: whose, which bytes, and
/// which extractor under which settings.
#[derive(Debug, Clone)]
pub struct Key {
    pub owner: Uuid,
    pub sha256: String,
    pub extractor: String,
}

impl Key {
    /// `kind` is what the bytes were sniffed as (the name decides between
    /// HTML, Markdown and text, so the same bytes under another name may
    /// read differently).
    pub fn new(p: &PipelineSettings, owner: Uuid, sha256: String, kind: Kind) -> Key {
        Key {
            owner,
            sha256,
            extractor: extractor_key(p, kind),
        }
    }
}

/// The extractor's version, the kind of file, and every setting that
/// changes what the extractor makes of the same bytes (OCR on or off, its
/// languages, dpi and page cap), so a change of any of them does not reuse
/// text made under the old ones.
pub fn extractor_key(p: &PipelineSettings, kind: Kind) -> String {
    if p.ocr {
        format!(
            "{};{kind:?};ocr={};dpi={};max_pages={}",
            extract::EXTRACTOR,
            p.ocr_languages,
            p.ocr_dpi,
            p.ocr_max_pages
        )
    } else {
        format!("{};{kind:?};ocr=off", extract::EXTRACTOR)
    }
}

/// The owner's cached extraction of these bytes, or `extract`'s (then
/// cached). The flag says whether it came from the cache.
pub async fn extraction<F>(s: &Services, key: &Key, extract: F) -> Result<(Extracted, bool), StageError>
where
    F: Future<Output = Result<Extracted, StageError>>,
{
    match db::cached_extraction(&s.db, key.owner, &key.sha256, &key.extractor).await {
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
        if let Err(e) = db::cache_extraction(&s.db, key.owner, &key.sha256, &key.extractor, &v).await {
            tracing::warn!(error = %e, "cannot cache the extracted text");
        }
    }
    Ok((ex, false))
}

/// The owner's cached chunks of this text under the configured chunk
/// settings, or a fresh split (then cached).
pub async fn chunks(s: &Services, key: &Key, extracted: &Extracted) -> Vec<Chunk> {
    let p = &s.settings.pipeline;
    let key = ChunkKey {
        owner: key.owner,
        sha256: &key.sha256,
        extractor: &key.extractor,
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
