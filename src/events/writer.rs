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
//!   alone by their emitter, who waits for the lock as before; so are events
//!   of a stale attempt (the emitter's own write finds them fenced) and the
//!   events of a batch that failed (each gets its own error).
//! - **Batches in flight** ([`IN_FLIGHT`], two today), each on its own
//!   connection; a job with an event in flight has its next one wait, so
//!   order holds however many there are.
//! - **Back-pressure**: emitters wait for room in a bounded queue
//!   ([`QUEUE`]); nothing grows without bound.
//! - **Planned once**: the writer has connections of its own, on which the
//!   statement runs with a generic plan (`plan_cache_mode`) and without
//!   sequential scans (`enable_seqscan`). Left to choose, Postgres planned
//!   it anew for every batch (a custom plan looks cheaper for a handful of
//!   rows), and that planning was most of Postgres's CPU at 1,000 events/s
//!   (measured with `perf` during the fan-out bench). The generic plan alone
//!   scans all of `job_progress` while the table is small (it guesses ten
//!   rows from the arrays); without sequential scans it is the index lookups
//!   and nested loops a large table gets, whatever the table's size. Those
//!   connections run nothing else.

use std::collections::{HashMap, HashSet, VecDeque};

use futures::stream::{FuturesUnordered, StreamExt};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{JobMeta, NewEvent, Publisher};
use crate::domain::ProgressEvent;

/// Events waiting for the writer; an emitter beyond that waits for room.
pub const QUEUE: usize = 4096;
/// Jobs written in one statement at most.
pub const MAX_BATCH: usize = 256;
/// Batches being written at once (each on its own connection). Two: an
/// event that arrives while a batch commits starts at once instead of
/// waiting for that commit. With the statement planned once, the fan-out
/// bench measured Postgres at the same CPU as with one (0.31 against 0.29
/// CPU-seconds a second at 1,000 events/s) and the write's p99 at 2,000
/// events/s went from 37–51 ms to 3–25 ms. (While every batch was planned
/// anew, two cost a fifth more CPU and gained nothing.)
pub const IN_FLIGHT: usize = 2;

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
    /// Not written here (its job's row was busy, its attempt is not the
    /// job's, or the batch failed): the emitter writes it alone, which waits
    /// for the row, or finds the attempt fenced, or gets its own error.
    Alone(NewEvent),
    /// The writer stopped while the event was in its hands (it may or may
    /// not be stored).
    Lost,
}

/// The sending side: cheap to clone, shared by every clone of the sink.
#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Write>,
}

impl Writer {
    /// Starts the writer task (it ends when the last sender is dropped),
    /// with [`IN_FLIGHT`] connections of its own to `db`'s database (opened
    /// when first needed).
    pub fn spawn(db: &PgPool, publisher: Publisher) -> Self {
        let options = (*db.connect_options())
            .clone()
            .options([("plan_cache_mode", "force_generic_plan"), ("enable_seqscan", "off")]);
        let own = PgPoolOptions::new()
            .max_connections(IN_FLIGHT as u32)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_lazy_with(options);
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(own, publisher, rx));
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
        // The task answers every write; only if it died mid-batch is there
        // no answer.
        answer.await.unwrap_or(Outcome::Lost)
    }
}

async fn run(db: PgPool, publisher: Publisher, mut rx: mpsc::Receiver<Write>) {
    let mut waiting: VecDeque<Write> = VecDeque::new();
    let mut in_flight = FuturesUnordered::new();
    // Jobs with an event in a batch being written: their next one waits.
    let mut busy: HashSet<String> = HashSet::new();
    let mut closed = false;
    loop {
        while waiting.len() < 2 * MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => waiting.push_back(w),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        while in_flight.len() < IN_FLIGHT {
            let batch = take_batch(&mut waiting, &busy);
            if batch.is_empty() {
                break;
            }
            busy.extend(batch.iter().map(|w| w.meta.job_id.clone()));
            in_flight.push(write_batch(db.clone(), publisher.clone(), batch));
        }
        if closed && waiting.is_empty() && in_flight.is_empty() {
            return;
        }
        tokio::select! {
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                for job in done {
                    busy.remove(&job);
                }
            }
            w = rx.recv(), if !closed && waiting.len() < 2 * MAX_BATCH => match w {
                Some(w) => waiting.push_back(w),
                None => closed = true,
            },
        }
    }
}

/// The first waiting event of each job not being written now, in arrival
/// order, up to [`MAX_BATCH`]; the others stay waiting, in order.
fn take_batch(waiting: &mut VecDeque<Write>, busy: &HashSet<String>) -> Vec<Write> {
    let mut jobs = HashSet::new();
    let mut batch = Vec::new();
    let mut rest = VecDeque::with_capacity(waiting.len());
    for w in waiting.drain(..) {
        if batch.len() < MAX_BATCH && !busy.contains(&w.meta.job_id) && jobs.insert(w.meta.job_id.clone()) {
            batch.push(w);
        } else {
            rest.push_back(w);
        }
    }
    *waiting = rest;
    batch
}

/// The statement: every event of the batch, fenced by attempt, numbered by
/// its job's row, skipping rows another transaction holds; returns the
/// (job, seq) of those written. Kept plain: planning it is most of its cost.
const RECORD_MANY: &str = "\
WITH i AS ( \
  SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::float8[], $5::text[], $6::text[], $7::text[], \
                       $8::text[], $9::timestamptz[], $10::text[], $11::bool[]) \
    AS i(job_id, attempt, stage, progress, message, details, error, failed_stage, ts, kind, terminal)), \
l AS (SELECT job_id FROM job_progress WHERE job_id = ANY($1) FOR UPDATE SKIP LOCKED), \
upd AS ( \
  UPDATE job_progress j SET stage = i.stage, progress = i.progress, message = i.message, \
    details = i.details::jsonb, error = i.error, failed_stage = i.failed_stage, seq = j.seq + 1, \
    last_update = i.ts, completed_at = CASE WHEN i.terminal THEN i.ts ELSE NULL END \
  FROM i WHERE j.job_id = i.job_id AND j.attempt = i.attempt AND j.job_id IN (SELECT job_id FROM l) \
  RETURNING j.job_id, j.seq) \
INSERT INTO job_progress_history (job_id, seq, attempt, event_type, stage, progress, message, details, error, timestamp) \
SELECT i.job_id, upd.seq, i.attempt, i.kind, i.stage, i.progress, i.message, i.details::jsonb, i.error, i.ts \
FROM upd JOIN i ON i.job_id = upd.job_id \
RETURNING job_id, seq";

async fn record_many(db: &PgPool, batch: &[Write]) -> Result<HashMap<String, i64>, sqlx::Error> {
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
    let rows: Vec<(String, i64)> = sqlx::query_as(RECORD_MANY)
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
    Ok(rows.into_iter().collect())
}

/// Writes and publishes one batch, answers its emitters; returns its jobs.
async fn write_batch(db: PgPool, publisher: Publisher, batch: Vec<Write>) -> Vec<String> {
    crate::metrics::event_batch(batch.len());
    let jobs: Vec<String> = batch.iter().map(|w| w.meta.job_id.clone()).collect();
    let mut seqs = match record_many(&db, &batch).await {
        Ok(seqs) => seqs,
        Err(e) => {
            tracing::warn!(events = batch.len(), error = %e, "progress batch not written; writing its events one by one");
            HashMap::new()
        }
    };
    let mut written: Vec<(Uuid, ProgressEvent, oneshot::Sender<Outcome>)> = Vec::with_capacity(batch.len());
    for w in batch {
        match seqs.remove(&w.meta.job_id) {
            Some(seq) => {
                let user = w.meta.user_id;
                let event = super::numbered(&w.meta, w.ev, seq, w.timestamp);
                written.push((user, event, w.reply));
            }
            // Its row was held by another transaction, or its attempt is
            // not the job's (the emitter's own write tells which).
            None => {
                let _ = w.reply.send(Outcome::Alone(w.ev));
            }
        }
    }
    let events: Vec<(Uuid, &ProgressEvent)> = written.iter().map(|(u, e, _)| (*u, e)).collect();
    publisher.publish_many(&events).await;
    for (_, event, reply) in written {
        let _ = reply.send(Outcome::Written(event));
    }
    jobs
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
        let none = HashSet::new();
        let first = take_batch(&mut waiting, &none);
        assert_eq!(names(&first), ["a1", "b1", "c1"]);
        let second = take_batch(&mut waiting, &none);
        assert_eq!(names(&second), ["a2", "b2"]);
        let third = take_batch(&mut waiting, &none);
        assert_eq!(names(&third), ["a3"]);
        assert!(waiting.is_empty());
    }

    #[test]
    fn a_job_being_written_waits_for_its_batch() {
        let mut waiting: VecDeque<Write> = [("a", 2), ("b", 1), ("a", 3)]
            .into_iter()
            .map(|(j, n)| write(j, n))
            .collect();
        let busy: HashSet<String> = ["a".to_string()].into();
        assert_eq!(names(&take_batch(&mut waiting, &busy)), ["b1"]);
        assert_eq!(names(&take_batch(&mut waiting, &HashSet::new())), ["a2"]);
        assert_eq!(names(&take_batch(&mut waiting, &HashSet::new())), ["a3"]);
    }

    #[test]
    fn a_batch_is_bounded() {
        let mut waiting: VecDeque<Write> = (0..MAX_BATCH + 10).map(|i| write(&format!("j{i}"), 1)).collect();
        assert_eq!(take_batch(&mut waiting, &HashSet::new()).len(), MAX_BATCH);
        assert_eq!(waiting.len(), 10);
        assert_eq!(waiting[0].meta.job_id, format!("j{MAX_BATCH}"));
    }
}
