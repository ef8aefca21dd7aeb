//! The storing stage: all chunks of a document in one transaction, through
//! one `COPY ... FROM STDIN` (not a row at a time). Idempotent: the
//! document's previous chunks are deleted in the same transaction. Fenced: the
//! transaction first locks the job row and checks the attempt, so a stale
//! worker cannot replace the current owner's chunks.
//!
//! Rows go in with `indexed = false`, outside the HNSW index, so COPY runs
//! at table speed; search finds them by exact scan until the indexer actor
//! moves them into the index (see the migration `engines_deferred_index`).

use sqlx::PgPool;
use uuid::Uuid;

use super::chunk::{page_char_starts, Chunk};
use super::extract::Extracted;
use super::StageError;
use crate::db;
use crate::domain::Stage;
use crate::progress::Reporter;

/// COPY's binary format (no text round trip of 384 floats per row): the
/// signature, flags and header extension, then one tuple per chunk, then -1.
/// Columns, in order ([`db::CHUNK_COPY_COLUMNS`]): document_id, chunk_index,
/// content, page, char_start, char_end, model_id, engine_id, embedding.
pub fn copy_rows(document_id: Uuid, model: ModelIds, chunks: &[Chunk], vectors: &[Vec<f32>]) -> Vec<u8> {
    let dim = vectors.first().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(19 + chunks.iter().map(|c| c.text.len() + 64 + 4 * dim).sum::<usize>());
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    let int4 = |out: &mut Vec<u8>, v: i32| {
        out.extend_from_slice(&4i32.to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
    };
    let opt_int4 = |out: &mut Vec<u8>, v: Option<i32>| match v {
        Some(v) => int4(out, v),
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    };
    for (chunk, vector) in chunks.iter().zip(vectors) {
        out.extend_from_slice(&9i16.to_be_bytes());
        out.extend_from_slice(&16i32.to_be_bytes());
        out.extend_from_slice(document_id.as_bytes());
        int4(&mut out, chunk.index);
        // NUL cannot be stored in Postgres text at all and is dropped.
        let text = chunk.text.replace('\0', "");
        out.extend_from_slice(&(text.len() as i32).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
        opt_int4(&mut out, chunk.page);
        opt_int4(&mut out, chunk.char_start);
        opt_int4(&mut out, chunk.char_end);
        int4(&mut out, model.model_id);
        int4(&mut out, model.engine_id);
        // pgvector's binary form: dimension, an unused int16, big-endian floats.
        out.extend_from_slice(&((4 + 4 * vector.len()) as i32).to_be_bytes());
        out.extend_from_slice(&(vector.len() as i16).to_be_bytes());
        out.extend_from_slice(&0i16.to_be_bytes());
        for x in vector {
            out.extend_from_slice(&x.to_be_bytes());
        }
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

/// Which model's vectors these are, and which engine computed them.
#[derive(Debug, Clone, Copy)]
pub struct ModelIds {
    /// `embedding_models.id`
    pub model_id: i32,
    /// `embedding_engines.id`
    pub engine_id: i32,
}

/// Replaces the document's chunks with these (and, given the extracted
/// text, its stored text and page starts), if the reporter's attempt
/// still owns the job. The stage's closing event ("Finalizing", 0.95) is
/// written in the same transaction, so it is recorded exactly when the
/// chunks are, and sent once they are committed.
pub async fn store(
    pool: &PgPool,
    reporter: &mut Reporter,
    document_id: Uuid,
    model: ModelIds,
    chunks: &[Chunk],
    vectors: &[Vec<f32>],
    extracted: Option<&Extracted>,
) -> Result<(), StageError> {
    let rows = copy_rows(document_id, model, chunks, vectors);
    let pages = extracted.and_then(|e| e.pages);
    let mut tx = pool.begin().await?;
    if !db::lock_attempt(&mut tx, reporter.job_id(), reporter.attempt).await? {
        return Err(StageError::Fenced);
    }
    db::replace_chunks(&mut tx, document_id, model.model_id, &rows, chunks.len(), pages).await?;
    if let Some(ex) = extracted {
        // NUL cannot be stored in text; one replacement character keeps
        // every character offset after it true.
        let text = ex.text.replace('\0', "\u{fffd}");
        db::replace_document_text(&mut tx, document_id, &text, &page_char_starts(ex)).await?;
    }
    let stored = reporter
        .progress_in(
            &mut tx,
            Stage::Storing,
            0.95,
            "Finalizing document processing",
            serde_json::json!({ "chunks": chunks.len() }),
        )
        .await?;
    tx.commit().await?;
    reporter.publish(stored).await;
    Ok(())
}

/// A re-embed's store: these vectors of the configured model go in beside
/// the vectors search uses until the user's switch (see `crate::reembed`);
/// fenced and closed with the same event as [`store`].
pub async fn store_beside(
    pool: &PgPool,
    reporter: &mut Reporter,
    document_id: Uuid,
    model: ModelIds,
    chunks: &[Chunk],
    vectors: &[Vec<f32>],
) -> Result<(), StageError> {
    let rows = copy_rows(document_id, model, chunks, vectors);
    let mut tx = pool.begin().await?;
    if !db::lock_attempt(&mut tx, reporter.job_id(), reporter.attempt).await? {
        return Err(StageError::Fenced);
    }
    db::replace_model_chunks(&mut tx, document_id, model.model_id, &rows).await?;
    let stored = reporter
        .progress_in(
            &mut tx,
            Stage::Storing,
            0.95,
            "Finalizing re-embedding",
            serde_json::json!({ "chunks": chunks.len(), "reembed": true }),
        )
        .await?;
    tx.commit().await?;
    reporter.publish(stored).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_rows_are_postgres_binary_copy() {
        let id = Uuid::nil();
        let chunks = vec![Chunk {
            index: 2,
            text: "a\tb\0c".into(),
            page: None,
            char_start: Some(10),
            char_end: None,
        }];
        let ids = ModelIds {
            model_id: 1,
            engine_id: 3,
        };
        let rows = copy_rows(id, ids, &chunks, &[vec![0.5, -1.0]]);
        let mut want: Vec<u8> = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        want.extend([0, 9, 0, 0, 0, 16]);
        want.extend([0u8; 16]);
        want.extend([0, 0, 0, 4, 0, 0, 0, 2]);
        want.extend([0, 0, 0, 4, b'a', b'\t', b'b', b'c']);
        want.extend([0xff, 0xff, 0xff, 0xff]);
        want.extend([0, 0, 0, 4, 0, 0, 0, 10]);
        want.extend([0xff, 0xff, 0xff, 0xff]);
        want.extend([0, 0, 0, 4, 0, 0, 0, 1]);
        want.extend([0, 0, 0, 4, 0, 0, 0, 3]);
        want.extend([0, 0, 0, 12, 0, 2, 0, 0]);
        want.extend(0.5f32.to_be_bytes());
        want.extend((-1.0f32).to_be_bytes());
        want.extend([0xff, 0xff]);
        assert_eq!(rows, want);
    }
}
