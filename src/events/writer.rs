//! Group commit for progress events: the [`Writer`] task takes the events
//! that emitters hand it while it is busy and writes them together, in one
//! statement (one round trip, one WAL flush) for up to [`MAX_BATCH`] jobs,
//! then publishes them in one Redis pipeline. Under load a batch holds
//! whatever arrived during the previous one, so the cost of a commit is
//! shared instead of paid per event; alone, an event is written at once.
//!
//! - **Same results as one by one**: each event is fenced by its attempt and
//!   numbered by its job's row, as [`crate::db::record_event`] does; a batch
//!   holds at most one event per job (a second one waits for the next
//!   batch), so each job's events keep their order and their seqs.
//! - **Never blocked by a busy job**: rows another transaction holds (a
//!   document being stored with its own event in its transaction) are
//!   skipped (`SKIP LOCKED`), and their events are handed back to be written
//!   alone by their emitter, who waits for the lock as before. A batch that
//!   fails is handed back the same way, so each event gets its own error.
//! - **Back-pressure**: emitters wait for room in a bounded queue
//!   ([`QUEUE`]); nothing grows without bound.

use std::collections::{HashSet, VecDeque};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{JobMeta, NewEvent, Publisher};
use crate::domain::ProgressEvent;

/// Events waiting for the writer; an emitter beyond that waits for room.
pub const QUEUE: usize = 4096;
/// Jobs written in one statement at most.
pub const MAX_BATCH: usize = 256;

/// One event handed to the writer.
pub(super) struct Write {
    pub meta: JobMeta,
    pub ev: NewEvent,
    pub timestamp: DateTime<Utc>,
    pub reply: oneshot::Sender<Outcome>,
}

/// What became of it.
pub(super) enum Outcome {
    /// Recorded and published.
    Written(ProgressEvent),
    /// The attempt no longer owns the job.
    Fenced,
    /// Not written here (its job's row was busy, or the batch failed): the
    /// emitter writes it alone.
    Alone(NewEvent),
}

/// The sending side: cheap to clone, shared by every clone of the sink.
#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Write>,
}

impl Writer {
    /// Starts the writer task (it ends when the last sender is dropped).
    pub fn spawn(db: PgPool, publisher: Publisher) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(db, publisher, rx));
        Writer { tx }
    }

    /// Hands the event over and waits for its outcome; `Alone` if the task
    /// is gone (the emitter then writes it itself).
    pub async fn write(&self, meta: &JobMeta, ev: NewEvent, timestamp: DateTime<Utc>) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let write = Write {
            meta: meta.clone(),
            ev,
            timestamp,
            reply,
        };
        if let Err(mpsc::error::SendError(w)) = self.tx.send(write).await {
            return Outcome::Alone(w.ev);
        }
        // The task never drops a write without answering; if it died
        // mid-batch the event may or may not be stored, and the emitter's
        // error says so.
        answer.await.unwrap_or(Outcome::Fenced)
    }
}

async fn run(db: PgPool, publisher: Publisher, mut rx: mpsc::Receiver<Write>) {
    let mut waiting: VecDeque<Write> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match rx.recv().await {
                Some(w) => waiting.push_back(w),
                None => return,
            }
        }
        while waiting.len() < 2 * MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => waiting.push_back(w),
                Err(_) => break,
            }
        }
        let batch = take_batch(&mut waiting);
        write_batch(&db, &publisher, batch).await;
    }
}

/// The first waiting event of each job, in arrival order, up to
/// [`MAX_BATCH`]; the others stay waiting, in order.
fn take_batch(waiting: &mut VecDeque<Write>) -> Vec<Write> {
    let mut jobs = HashSet::new();
    let mut batch = Vec::new();
    let mut rest = VecDeque::with_capacity(waiting.len());
    for w in waiting.drain(..) {
        if batch.len() < MAX_BATCH && jobs.insert(w.meta.job_id.clone()) {
            batch.push(w);
        } else {
            rest.push_back(w);
        }
    }
    *waiting = rest;
    batch
}

/// The statement: every event of the batch, fenced by attempt, numbered by
/// its job's row, skipping rows another transaction holds. One row out per
/// event in, in order: (seq if written, whether its row was taken).
const RECORD_MANY: &str = "\
WITH i AS ( \
  SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::float8[], $5::text[], $6::text[], $7::text[], \
                       $8::text[], $9::timestamptz[], $10::text[], $11::bool[]) WITH ORDINALITY \
    AS i(job_id, attempt, stage, progress, message, details, error, failed_stage, ts, kind, terminal, n)), \
l AS ( \
  SELECT j.job_id FROM job_progress j JOIN i ON i.job_id = j.job_id \
  ORDER BY j.job_id FOR UPDATE OF j SKIP LOCKED), \
upd AS ( \
  UPDATE job_progress j SET stage = i.stage, progress = i.progress, message = i.message, \
    details = i.details::jsonb, error = i.error, failed_stage = i.failed_stage, seq = j.seq + 1, \
    last_update = i.ts, completed_at = CASE WHEN i.terminal THEN i.ts ELSE NULL END \
  FROM i WHERE j.job_id = i.job_id AND j.attempt = i.attempt AND j.job_id IN (SELECT job_id FROM l) \
  RETURNING j.job_id, j.seq), \
ins AS ( \
  INSERT INTO job_progress_history (job_id, seq, attempt, event_type, stage, progress, message, details, error, timestamp) \
  SELECT i.job_id, upd.seq, i.attempt, i.kind, i.stage, i.progress, i.message, i.details::jsonb, i.error, i.ts \
  FROM upd JOIN i ON i.job_id = upd.job_id \
  RETURNING job_id, seq) \
SELECT ins.seq, l.job_id IS NOT NULL AS took \
FROM i LEFT JOIN l ON l.job_id = i.job_id LEFT JOIN ins ON ins.job_id = i.job_id \
ORDER BY i.n";

async fn record_many(db: &PgPool, batch: &[Write]) -> Result<Vec<(Option<i64>, bool)>, sqlx::Error> {
    let n = batch.len();
    let mut job_ids = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut stages = Vec::with_capacity(n);
    let mut progress = Vec::with_capacity(n);
    let mut messages = Vec::with_capacity(n);
    let mut details = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut failed = Vec::with_capacity(n);
    let mut stamps = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut terminal = Vec::with_capacity(n);
    for w in batch {
        job_ids.push(w.meta.job_id.as_str());
        attempts.push(w.ev.attempt);
        stages.push(w.ev.stage.as_str());
        progress.push(w.ev.progress);
        messages.push(w.ev.message.as_str());
        details.push(w.ev.details.to_string());
        errors.push(w.ev.error.as_deref());
        failed.push(w.ev.failed_stage.map(|s| s.as_str()));
        stamps.push(w.timestamp);
        kinds.push(w.ev.kind.as_str());
        terminal.push(w.ev.stage.is_terminal());
    }
    let rows: Vec<(Option<i64>, bool)> = sqlx::query_as(RECORD_MANY)
        .bind(&job_ids)
        .bind(&attempts)
        .bind(&stages)
        .bind(&progress)
        .bind(&messages)
        .bind(&details)
        .bind(&errors)
        .bind(&failed)
        .bind(&stamps)
        .bind(&kinds)
        .bind(&terminal)
        .fetch_all(db)
        .await?;
    if rows.len() != n {
        return Err(sqlx::Error::Protocol(format!("{} rows for {n} events", rows.len())));
    }
    Ok(rows)
}

async fn write_batch(db: &PgPool, publisher: &Publisher, batch: Vec<Write>) {
    crate::metrics::event_batch(batch.len());
    let rows = match record_many(db, &batch).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(events = batch.len(), error = %e, "progress batch not written; writing its events one by one");
            for w in batch {
                let _ = w.reply.send(Outcome::Alone(w.ev));
            }
            return;
        }
    };
    let mut written: Vec<(Uuid, ProgressEvent, oneshot::Sender<Outcome>)> = Vec::with_capacity(batch.len());
    for (w, (seq, took)) in batch.into_iter().zip(rows) {
        match (seq, took) {
            (Some(seq), _) => {
                let user = w.meta.user_id;
                let event = super::numbered(&w.meta, w.ev, seq, w.timestamp);
                written.push((user, event, w.reply));
            }
            (None, true) => {
                let _ = w.reply.send(Outcome::Fenced);
            }
            (None, false) => {
                let _ = w.reply.send(Outcome::Alone(w.ev));
            }
        }
    }
    let events: Vec<(Uuid, &ProgressEvent)> = written.iter().map(|(u, e, _)| (*u, e)).collect();
    publisher.publish_many(&events).await;
    for (_, event, reply) in written {
        let _ = reply.send(Outcome::Written(event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventType, Stage};

    fn write(job: &str, n: i32) -> Write {
        let (reply, _) = oneshot::channel();
        Write {
            meta: JobMeta {
                job_id: job.into(),
                user_id: Uuid::nil(),
                document_id: None,
                batch_id: None,
                document_name: None,
            },
            ev: NewEvent {
                attempt: n,
                kind: EventType::JobProgress,
                stage: Stage::Embedding,
                failed_stage: None,
                progress: 0.5,
                message: String::new(),
                details: serde_json::json!({}),
                error: None,
            },
            timestamp: Utc::now(),
            reply,
        }
    }

    fn names(ws: &[Write]) -> Vec<String> {
        ws.iter()
            .map(|w| format!("{}{}", w.meta.job_id, w.ev.attempt))
            .collect()
    }

    #[test]
    fn a_batch_takes_each_jobs_first_event_and_keeps_the_rest_in_order() {
        let mut waiting: VecDeque<Write> = [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("a", 3), ("b", 2)]
            .into_iter()
            .map(|(j, n)| write(j, n))
            .collect();
        let first = take_batch(&mut waiting);
        assert_eq!(names(&first), ["a1", "b1", "c1"]);
        let second = take_batch(&mut waiting);
        assert_eq!(names(&second), ["a2", "b2"]);
        let third = take_batch(&mut waiting);
        assert_eq!(names(&third), ["a3"]);
        assert!(waiting.is_empty());
    }

    #[test]
    fn a_batch_is_bounded() {
        let mut waiting: VecDeque<Write> = (0..MAX_BATCH + 10).map(|i| write(&format!("j{i}"), 1)).collect();
        assert_eq!(take_batch(&mut waiting).len(), MAX_BATCH);
        assert_eq!(waiting.len(), 10);
        assert_eq!(waiting[0].meta.job_id, format!("j{MAX_BATCH}"));
    }
}
