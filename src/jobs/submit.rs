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
//!
//! Dedup, per owner: a file whose bytes (sha256) the owner already has in a
//! document that has not failed is not stored again. By default
//! ([`OnDuplicate::Existing`]) its entry answers with that document
//! (`duplicate_of`); [`OnDuplicate::Replace`] re-runs that document's job
//! as a new attempt (its chunks are replaced), [`OnDuplicate::Keep`] makes
//! a new document anyway. A second identical file in the same request is a
//! duplicate of the first. Uploads of the same bytes by the same owner are
//! serialised by an advisory lock on (owner, hash bucket) held to the
//! commit, so simultaneous ones make one document. Another owner's documents are never
//! looked at. In a batch, duplicates are not members: the batch's `total`
//! counts the documents it created, `duplicates` the entries that point
//! elsewhere, and a batch of nothing but duplicates creates no batch at all.
//! URL uploads are not deduplicated (their bytes are known only after the
//! download).

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::admission::{self, Admission};
use crate::batches;
use crate::db::{self, Duplicate, NewDocument};
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

/// What an upload of bytes the owner already has does (`on_duplicate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDuplicate {
    /// Answer with the existing document; store nothing.
    #[default]
    Existing,
    /// Re-process the existing document (same document and job id) as a new attempt.
    Replace,
    /// Store a second document of the same bytes, on purpose.
    Keep,
}

impl OnDuplicate {
    /// The accepted spellings, for error messages.
    pub const ALLOWED: &'static str = "existing, replace, keep";

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "existing" => Some(OnDuplicate::Existing),
            "replace" => Some(OnDuplicate::Replace),
            "keep" => Some(OnDuplicate::Keep),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OnDuplicate::Existing => "existing",
            OnDuplicate::Replace => "replace",
            OnDuplicate::Keep => "keep",
        }
    }
}

pub struct Submission {
    pub owner: Uuid,
    pub uploads: Vec<Upload>,
    /// One batch with aggregated progress (else independent documents).
    pub batch: bool,
    /// `false`: the caller's own arq client enqueues the jobs.
    pub enqueue: bool,
    pub idempotency_key: Option<String>,
    pub on_duplicate: OnDuplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("this Idempotency-Key was used for a different request")]
    KeyReused,
    /// `on_duplicate=replace` of a document whose job has not ended.
    #[error("“{name}” is already uploaded as document {document_id}, whose job is still {stage}; replace it once that job has ended (or cancel it first)")]
    ReplaceBusy {
        name: String,
        document_id: Uuid,
        stage: String,
    },
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
    /// Some file was queued (a new document or a replace): 202; else every
    /// file was a duplicate answered with its existing document: 200.
    pub queued: bool,
}

/// Whether an answer queued any work: one of its entries has no
/// `duplicate_of`, or was `replaced`. A function of the body alone, so an
/// idempotent replay gets the same status as the first answer.
pub fn queued_any(body: &Value) -> bool {
    let entries: Vec<&Value> = match body {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) if o.contains_key("documents") => o["documents"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        other => vec![other],
    };
    entries
        .iter()
        .any(|e| e.get("duplicate_of").is_none_or(Value::is_null) || e["replaced"] == true)
}

/// What identifies a request under its key: the shape and every file's bytes.
fn fingerprint(sub: &Submission) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "batch={} enqueue={} on_duplicate={}\n",
        sub.batch,
        sub.enqueue,
        sub.on_duplicate.as_str()
    ));
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
    /// An existing document re-queued by `on_duplicate=replace`.
    replaced: bool,
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
                queued: queued_any(&response),
                body: response,
                replayed: true,
            });
        }
    }
    let shas: Vec<Option<String>> = sub
        .uploads
        .iter()
        .map(|u| u.content.as_deref().map(|c| hex::encode(Sha256::digest(c))))
        .collect();
    let fates = classify(&mut tx, &sub, &shas).await?;
    let new_docs = fates.iter().filter(|f| matches!(f, Fate::New)).count();
    let batch_id = (sub.batch && new_docs > 0).then(Uuid::new_v4);
    if let Some(id) = batch_id {
        batches::create(&mut tx, id, sub.owner, new_docs).await?;
    }
    let mut stored = Vec::with_capacity(sub.uploads.len());
    let mut entries: Vec<Value> = Vec::with_capacity(sub.uploads.len());
    for (k, (u, fate)) in sub.uploads.iter().zip(&fates).enumerate() {
        if s.faults.fail_upload_at(k + 1) {
            return Err(SubmitError::Injected(k + 1));
        }
        let entry = match fate {
            Fate::New => {
                let d = store_new(s, &mut tx, &sub, u, shas[k].as_deref(), batch_id).await?;
                let mut v = json!({ "document_id": d.document_id, "job_id": d.meta.job_id, "status": "queued" });
                if !sub.enqueue {
                    v["enqueued"] = json!(false);
                }
                stored.push(d);
                v
            }
            Fate::Existing(dup) => duplicate_entry(dup.document_id, &dup.job_id, &dup.stage),
            Fate::Replace(dup) => {
                let d = replace(s, &mut tx, sub.owner, u, dup).await?;
                let mut v = duplicate_entry(dup.document_id, &dup.job_id, "queued");
                v["replaced"] = json!(true);
                // Events up to this one's are the earlier run's.
                v["seq"] = json!(d.event.seq);
                stored.push(d);
                v
            }
            Fate::Earlier(j) => {
                let first = &entries[*j];
                let mut v = first.clone();
                if let Some(o) = v.as_object_mut() {
                    o.remove("replaced");
                    o.remove("enqueued");
                    o.remove("seq");
                }
                v["duplicate_of"] = first["document_id"].clone();
                v
            }
        };
        entries.push(entry);
    }
    let duplicates = entries.iter().filter(|e| e.get("duplicate_of").is_some()).count();
    let body = answer(sub.batch, batch_id, new_docs, duplicates, entries);
    if let (Some(key), Some(_)) = (&sub.idempotency_key, &print) {
        db::store_idempotent_response(&mut tx, sub.owner, key, &body).await?;
    }
    tx.commit().await?;

    release(s, &sub, &stored).await;
    if duplicates > 0 {
        tracing::info!(user_id = %sub.owner, duplicates, "upload answered with existing documents");
    }
    if let Some(id) = batch_id {
        s.events.refresh_batch(id).await;
    }
    let queued = queued_any(&body);
    Ok(Submitted {
        body,
        replayed: false,
        queued,
    })
}

/// The body: a batch's, one entry, or an array of entries.
fn answer(batch: bool, batch_id: Option<Uuid>, members: usize, duplicates: usize, entries: Vec<Value>) -> Value {
    if batch {
        json!({
            "batch_id": batch_id,
            "job_id": batch_id.map(batches::batch_job_id),
            "total": members,
            "duplicates": duplicates,
            "status": if batch_id.is_some() { "queued" } else { "duplicate" },
            "documents": entries,
        })
    } else if entries.len() == 1 {
        entries.into_iter().next().expect("one")
    } else {
        Value::Array(entries)
    }
}

/// After the commit: admits the new jobs (and releases replaced ones) and sends their `queued` events.
async fn release(s: &Services, sub: &Submission, stored: &[Stored]) {
    for d in stored {
        if d.replaced {
            if let Err(e) = super::control::release(s, sub.owner, &d.meta.job_id, d.document_id).await {
                tracing::warn!(job_id = %d.meta.job_id, error = %e, "cannot enqueue the replaced job now");
            }
        } else if sub.enqueue {
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
        s.events.send(&d.meta, &d.event, d.replaced).await;
        if d.replaced {
            tracing::info!(document_id = %d.document_id, job_id = %d.meta.job_id, user_id = %sub.owner, "document re-queued by a replacing upload");
        } else {
            tracing::info!(document_id = %d.document_id, job_id = %d.meta.job_id, user_id = %sub.owner, bytes = d.size, "document accepted");
        }
    }
}

/// What becomes of one file of a submission.
enum Fate {
    /// A new document.
    New,
    /// The owner's existing document with these bytes answers for it.
    Existing(Duplicate),
    /// That existing document is re-processed (`on_duplicate=replace`).
    Replace(Duplicate),
    /// The same bytes as file `j` of this request: its duplicate.
    Earlier(usize),
}

/// Decides every file's fate, under the owner's hash-bucket locks (taken in
/// order, so two requests cannot deadlock on them).
async fn classify(
    tx: &mut sqlx::PgConnection,
    sub: &Submission,
    shas: &[Option<String>],
) -> Result<Vec<Fate>, SubmitError> {
    if sub.on_duplicate == OnDuplicate::Keep {
        return Ok(sub.uploads.iter().map(|_| Fate::New).collect());
    }
    let buckets: BTreeSet<char> = shas.iter().flatten().filter_map(|sha| sha.chars().next()).collect();
    for bucket in buckets {
        db::lock_owner_hash_bucket(tx, sub.owner, bucket).await?;
    }
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut fates = Vec::with_capacity(shas.len());
    for (k, sha) in shas.iter().enumerate() {
        let Some(sha) = sha.as_deref() else {
            fates.push(Fate::New);
            continue;
        };
        if let Some(&j) = first.get(sha) {
            fates.push(Fate::Earlier(j));
            continue;
        }
        first.insert(sha, k);
        fates.push(match db::find_duplicate(tx, sub.owner, sha).await? {
            None => Fate::New,
            Some(dup) if sub.on_duplicate == OnDuplicate::Existing => Fate::Existing(dup),
            Some(dup) if dup.stage == "completed" => Fate::Replace(dup),
            Some(dup) => {
                return Err(SubmitError::ReplaceBusy {
                    name: sub.uploads[k].name.clone(),
                    document_id: dup.document_id,
                    stage: dup.stage,
                })
            }
        });
    }
    Ok(fates)
}

/// An entry that points at an existing document.
fn duplicate_entry(document_id: Uuid, job_id: &str, stage: &str) -> Value {
    json!({ "document_id": document_id, "job_id": job_id, "status": stage, "duplicate_of": document_id })
}

/// Stores one new document, its job row and its `queued` event.
async fn store_new(
    s: &Services,
    tx: &mut sqlx::PgConnection,
    sub: &Submission,
    u: &Upload,
    sha: Option<&str>,
    batch_id: Option<Uuid>,
) -> Result<Stored, SubmitError> {
    let id = Uuid::new_v4();
    let job_id = job_id_for(id);
    let doc = NewDocument {
        id,
        owner_id: sub.owner,
        name: &u.name,
        content_type: &u.content_type,
        content: u.content.as_deref(),
        sha256: sha,
        source_url: u.url.as_deref(),
        batch_id,
    };
    db::insert_document(tx, &doc, &job_id, sub.enqueue).await?;
    let meta = JobMeta {
        job_id,
        user_id: sub.owner,
        document_id: Some(id),
        batch_id,
        document_name: Some(u.name.clone()),
    };
    let event = s
        .events
        .record_in(tx, &meta, NewEvent::queued(0, "Document processing queued", json!({})))
        .await?
        .ok_or_else(|| sqlx::Error::Protocol("the new job row was not found".into()))?;
    Ok(Stored {
        meta,
        document_id: id,
        event,
        size: u.content.as_ref().map_or(0, Vec::len),
        replaced: false,
    })
}

/// Puts the existing completed document's job back to `queued` as a new
/// attempt (the document takes the new upload's name); it runs after the
/// commit through [`super::control::release`], and its storing stage
/// replaces the chunks.
async fn replace(
    s: &Services,
    tx: &mut sqlx::PgConnection,
    owner: Uuid,
    u: &Upload,
    dup: &Duplicate,
) -> Result<Stored, SubmitError> {
    let busy = || SubmitError::ReplaceBusy {
        name: u.name.clone(),
        document_id: dup.document_id,
        stage: "changing".into(),
    };
    // Processed from its bytes again, even if its last run was a re-embed.
    let attempt = db::requeue(&mut *tx, owner, &dup.job_id, Some(super::PROCESS_DOCUMENT))
        .await?
        .ok_or_else(busy)?;
    db::rename_document(tx, dup.document_id, &u.name).await?;
    let batch_id: Option<Uuid> = sqlx::query_scalar("SELECT batch_id FROM job_progress WHERE job_id = $1")
        .bind(&dup.job_id)
        .fetch_one(&mut *tx)
        .await?;
    let meta = JobMeta {
        job_id: dup.job_id.clone(),
        user_id: owner,
        document_id: Some(dup.document_id),
        batch_id,
        document_name: Some(u.name.clone()),
    };
    let event = s
        .events
        .record_in(
            tx,
            &meta,
            NewEvent::queued(
                attempt,
                "Re-processing queued (replaced by a new upload of the same file)",
                json!({ "replaced": true }),
            ),
        )
        .await?
        .ok_or_else(busy)?;
    Ok(Stored {
        meta,
        document_id: dup.document_id,
        event,
        size: u.content.as_ref().map_or(0, Vec::len),
        replaced: true,
    })
}
