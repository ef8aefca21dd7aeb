//! The storing stage: all chunks of a document in one transaction, through
//! one `COPY ... FROM STDIN` (not a row at a time). Idempotent: the
//! document's previous chunks are deleted in the same transaction. Fenced: the
//! transaction first locks the job row and checks the attempt, so a stale
//! worker cannot replace the current owner's chunks.
//!
//! Rows go in with `indexed = false`, outside the HNSW index, so COPY runs
//! at table speed; search finds them by exact scan until the indexer actor
//! moves them into the index (see the migration `engines_deferred_index`).

use std::fmt::Write as _;

use sqlx::PgPool;
use uuid::Uuid;

use super::chunk::Chunk;
use super::StageError;
use crate::db;

/// Appends `s` escaped for COPY's text format. NUL cannot be stored in
/// Postgres text at all and is dropped.
fn escape_copy(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => {}
            c => out.push(c),
        }
    }
}

/// COPY text rows for the chunks.
pub fn copy_rows(document_id: Uuid, model: ModelIds, chunks: &[Chunk], vectors: &[Vec<f32>]) -> String {
    let mut out = String::with_capacity(chunks.iter().map(|c| c.text.len() + 4096).sum());
    for (chunk, vector) in chunks.iter().zip(vectors) {
        let _ = write!(out, "{document_id}\t{}\t", chunk.index);
        escape_copy(&chunk.text, &mut out);
        match chunk.page {
            Some(p) => {
                let _ = write!(out, "\t{p}");
            }
            None => out.push_str("\t\\N"),
        }
        let _ = write!(out, "\t{}\t{}\t[", model.model_id, model.engine_id);
        for (i, x) in vector.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{x}");
        }
        out.push_str("]\n");
    }
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

/// Replaces the document's chunks with these, if `attempt` still owns the job.
#[allow(clippy::too_many_arguments)]
pub async fn store(
    pool: &PgPool,
    job_id: &str,
    attempt: i32,
    document_id: Uuid,
    model: ModelIds,
    chunks: &[Chunk],
    vectors: &[Vec<f32>],
    pages: Option<u32>,
) -> Result<(), StageError> {
    let rows = copy_rows(document_id, model, chunks, vectors);
    let mut tx = pool.begin().await?;
    if !db::lock_attempt(&mut tx, job_id, attempt).await? {
        return Err(StageError::Fenced);
    }
    sqlx::query("DELETE FROM chunks WHERE document_id = $1")
        .bind(document_id)
        .execute(&mut *tx)
        .await?;
    {
        let mut copy = tx
            .copy_in_raw(
                "COPY chunks (document_id, chunk_index, content, page, model_id, engine_id, embedding) FROM STDIN",
            )
            .await?;
        // Send in pieces of about 1 MiB so a big document does not double its memory in one buffer.
        let bytes = rows.as_bytes();
        let mut start = 0;
        while start < bytes.len() {
            let mut end = (start + (1 << 20)).min(bytes.len());
            while end < bytes.len() && bytes[end - 1] != b'\n' {
                end += 1;
            }
            copy.send(&bytes[start..end]).await?;
            start = end;
        }
        copy.finish().await?;
    }
    sqlx::query("UPDATE documents SET chunk_count = $2, pages = COALESCE($3, pages), updated_at = now() WHERE id = $1")
        .bind(document_id)
        .bind(chunks.len() as i32)
        .bind(pages.map(|p| p as i32))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_rows_escape_text() {
        let id = Uuid::nil();
        let chunks = vec![Chunk {
            index: 0,
            text: "a\tb\nc\\d\0e".into(),
            page: None,
        }];
        let ids = ModelIds {
            model_id: 1,
            engine_id: 3,
        };
        let rows = copy_rows(id, ids, &chunks, &[vec![0.5, -1.0]]);
        assert_eq!(rows, format!("{id}\t0\ta\\tb\\nc\\\\de\t\\N\t1\t3\t[0.5,-1]\n"));
    }
}
