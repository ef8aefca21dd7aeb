//! Submitting documents: one upload (files or a URL), several files, or a
//! batch. All or nothing: every document, its job row and its `queued`
//! event (and the batch row) are written in one transaction; only after the
//! commit are the jobs admitted to the arq queue and the events sent. A
//! failure while storing file k leaves nothing behind. If the queue cannot
//! be reached after the commit, the jobs stay held in Postgres and the
//! watchdog's admission pass enqueues them once it can.
//!
//! An `Idempotency-Key` makes a client's retry safe: the key, a fingerprint
//! of the request and the response are stored in the same transaction, so a
//! retry with the same key gets the same answer without storing anything
//! again, and the same key with a different request is refused. Keys are
//! kept for 24 hours.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::admission::{self, Admission};
use crate::batches;
use crate::db::{self, NewDocument};
use crate::domain::{job_id_for, ProgressEvent};
use crate::events::{JobMeta, NewEvent};
use crate::services::Services;

/// One document to store.
pub struct Upload {
    pub name: String,
    pub content_type: String,
    /// The bytes; `None` for a URL to fetch in the downloading stage.
    pub content: Option<Vec<u8>>,
    pub url: Option<String>,
}

pub struct Submission {
    pub owner: Uuid,
    pub uploads: Vec<Upload>,
    /// One batch with aggregated progress (else independent documents).
    pub batch: bool,
    /// `false`: the caller's own arq client enqueues the jobs.
    pub enqueue: bool,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("this Idempotency-Key was used for a different request")]
    KeyReused,
    #[error("{0}")]
    Db(#[from] sqlx::Error),
    /// Test fault injection (`faults.fail_upload_at_file`).
    #[error("injected fault while storing file {0}")]
    Injected(usize),
}

/// The answer to a submission.
pub struct Submitted {
    pub body: Value,
    /// An earlier request with the same key already got this answer.
    pub replayed: bool,
}

/// What identifies a request under its key: the shape and every file's bytes.
fn fingerprint(sub: &Submission) -> String {
    let mut h = Sha256::new();
    h.update(format!("batch={} enqueue={}\n", sub.batch, sub.enqueue));
    for u in &sub.uploads {
        h.update(u.name.as_bytes());
        h.update(b"\0");
        match (&u.content, &u.url) {
            (Some(c), _) => h.update(Sha256::digest(c)),
            (None, Some(url)) => h.update(url.as_bytes()),
            (None, None) => {}
        }
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

struct Stored {
    meta: JobMeta,
    document_id: Uuid,
    event: ProgressEvent,
    size: usize,
}

pub async fn submit(s: &Services, sub: Submission) -> Result<Submitted, SubmitError> {
    let print = sub.idempotency_key.as_ref().map(|_| fingerprint(&sub));
    let mut tx = s.db.begin().await?;
    if let (Some(key), Some(print)) = (&sub.idempotency_key, &print) {
        // Waits for a concurrent request with the same key to commit or roll back.
        if let Some((stored_print, response)) = db::claim_idempotency_key(&mut tx, sub.owner, key, print).await? {
            tx.rollback().await?;
            if &stored_print != print {
                return Err(SubmitError::KeyReused);
            }
            return Ok(Submitted {
                body: response,
                replayed: true,
            });
        }
    }
    let batch_id = sub.batch.then(Uuid::new_v4);
    if let Some(id) = batch_id {
        batches::create(&mut tx, id, sub.owner, sub.uploads.len()).await?;
    }
    let mut stored = Vec::with_capacity(sub.uploads.len());
    for (k, u) in sub.uploads.iter().enumerate() {
        if s.faults.fail_upload_at(k + 1) {
            return Err(SubmitError::Injected(k + 1));
        }
        let id = Uuid::new_v4();
        let job_id = job_id_for(id);
        let sha = u.content.as_deref().map(|c| hex::encode(Sha256::digest(c)));
        let doc = NewDocument {
            id,
            owner_id: sub.owner,
            name: &u.name,
            content_type: &u.content_type,
            content: u.content.as_deref(),
            sha256: sha.as_deref(),
            source_url: u.url.as_deref(),
            batch_id,
        };
        db::insert_document(&mut tx, &doc, &job_id, sub.enqueue).await?;
        let meta = JobMeta {
            job_id,
            user_id: sub.owner,
            document_id: Some(id),
            batch_id,
            document_name: Some(u.name.clone()),
        };
        let event = s
            .events
            .record_in(
                &mut tx,
                &meta,
                NewEvent::queued(0, "Document processing queued", json!({})),
            )
            .await?
            .ok_or_else(|| sqlx::Error::Protocol("the new job row was not found".into()))?;
        stored.push(Stored {
            meta,
            document_id: id,
            event,
            size: u.content.as_ref().map_or(0, Vec::len),
        });
    }
    let accepted: Vec<Value> = stored
        .iter()
        .map(|d| {
            let mut v = json!({ "document_id": d.document_id, "job_id": d.meta.job_id, "status": "queued" });
            if !sub.enqueue {
                v["enqueued"] = json!(false);
            }
            v
        })
        .collect();
    let body = match batch_id {
        Some(id) => json!({
            "batch_id": id,
            "job_id": batches::batch_job_id(id),
            "total": stored.len(),
            "status": "queued",
            "documents": accepted,
        }),
        None if accepted.len() == 1 => accepted.into_iter().next().expect("one"),
        None => Value::Array(accepted),
    };
    if let (Some(key), Some(_)) = (&sub.idempotency_key, &print) {
        db::store_idempotent_response(&mut tx, sub.owner, key, &body).await?;
    }
    tx.commit().await?;

    for d in &stored {
        if sub.enqueue {
            match admission::admit(s, sub.owner, &d.meta.job_id, d.document_id).await {
                Ok(Admission::Held) => {
                    tracing::info!(job_id = %d.meta.job_id, user_id = %sub.owner, "job held back for fairness");
                }
                Ok(Admission::Enqueued) => {}
                Err(e) => {
                    // Stored and held: the watchdog's admission pass enqueues it when it can.
                    tracing::warn!(job_id = %d.meta.job_id, error = %e, "cannot enqueue now; the job waits in Postgres");
                }
            }
        }
        s.events.send(&d.meta, &d.event, false).await;
        tracing::info!(document_id = %d.document_id, job_id = %d.meta.job_id, user_id = %sub.owner, bytes = d.size, "document accepted");
    }
    if let Some(id) = batch_id {
        s.events.refresh_batch(id).await;
    }
    Ok(Submitted { body, replayed: false })
}
