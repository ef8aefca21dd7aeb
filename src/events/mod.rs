//! The one way an event leaves: [`EventSink`] records it in Postgres
//! (`job_progress` + `job_progress_history`, fenced by attempt), publishes it
//! on the Redis channel every instance listens to, and moves the job's batch
//! when the job changed stage or ended. Postgres is the record; pub/sub is
//! the fast path, and `resume` replays what it dropped. Workers (through the
//! per-attempt `Reporter`), uploads, retries, cancels, recovery and external
//! workers all use it, so their events cannot differ in what they update.
//! Events written on their own (not inside a caller's transaction) go
//! through the [`writer`]'s group commit: many jobs' events in one statement
//! and one Redis pipeline.

mod writer;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{self, EventRecord};
use crate::domain::{EventType, ProgressEvent, Stage};
use writer::{Outcome, Writer};

/// What travels on the channel ([`crate::domain::Envelope`]'s JSON), borrowed.
#[derive(serde::Serialize)]
struct EnvelopeRef<'a> {
    user_id: Uuid,
    event: &'a ProgressEvent,
}

/// Publishes events on the shared channel.
#[derive(Clone)]
pub struct Publisher {
    redis: ConnectionManager,
    channel: String,
}

impl Publisher {
    pub fn new(redis: ConnectionManager, channel: impl Into<String>) -> Self {
        Publisher {
            redis,
            channel: channel.into(),
        }
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Best effort: the event is already stored, so a Redis outage only
    /// delays it until the client's `resume`.
    pub async fn publish(&self, user_id: Uuid, event: &ProgressEvent) {
        self.publish_many(&[(user_id, event)]).await;
    }

    /// Publishes several events in one pipeline (one round trip), in order.
    pub async fn publish_many(&self, events: &[(Uuid, &ProgressEvent)]) {
        if events.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (user_id, event) in events {
            match serde_json::to_string(&EnvelopeRef {
                user_id: *user_id,
                event,
            }) {
                Ok(payload) => {
                    pipe.publish(&self.channel, payload).ignore();
                }
                Err(e) => tracing::error!(job_id = %event.job_id, error = %e, "cannot encode progress event"),
            }
        }
        let mut con = self.redis.clone();
        if let Err(e) = pipe.query_async::<()>(&mut con).await {
            let first = events.first().map(|(_, e)| (e.job_id.as_str(), e.seq));
            tracing::warn!(events = events.len(), ?first, error = %e, "progress not published; clients will catch up on resume");
        }
    }
}

/// An event with its number: what every channel carries.
fn numbered(meta: &JobMeta, ev: NewEvent, seq: i64, timestamp: DateTime<Utc>) -> ProgressEvent {
    ProgressEvent {
        kind: ev.kind,
        job_id: meta.job_id.clone(),
        document_id: meta.document_id,
        batch_id: meta.batch_id,
        stage: ev.stage,
        progress: ev.progress,
        message: ev.message,
        details: ev.details,
        error: ev.error,
        seq,
        attempt: ev.attempt,
        timestamp,
        document_name: meta.document_name.clone(),
    }
}

/// Whom a job's events are for and how they are shown.
#[derive(Debug, Clone)]
pub struct JobMeta {
    pub job_id: String,
    pub user_id: Uuid,
    pub document_id: Option<Uuid>,
    pub batch_id: Option<Uuid>,
    pub document_name: Option<String>,
}

impl JobMeta {
    /// The job an attempt just started on.
    pub fn of_attempt(job_id: &str, start: &db::JobStart) -> Self {
        JobMeta {
            job_id: job_id.to_string(),
            user_id: start.user_id,
            document_id: start.document_id,
            batch_id: start.batch_id,
            document_name: start.document_name.clone(),
        }
    }
}

/// An event before it has a number.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub attempt: i32,
    pub kind: EventType,
    pub stage: Stage,
    /// The stage a failure happened in (only with `Stage::Failed`).
    pub failed_stage: Option<Stage>,
    pub progress: f64,
    pub message: String,
    pub details: serde_json::Value,
    pub error: Option<String>,
}

impl NewEvent {
    /// A `job_queued` event at progress 0.
    pub fn queued(attempt: i32, message: impl Into<String>, details: serde_json::Value) -> Self {
        NewEvent {
            attempt,
            kind: EventType::JobQueued,
            stage: Stage::Queued,
            failed_stage: None,
            progress: 0.0,
            message: message.into(),
            details,
            error: None,
        }
    }

    /// A `job_failed` event that keeps the progress reached and names the stage.
    pub fn failed(attempt: i32, in_stage: Stage, progress: f64, reason: &str, details: serde_json::Value) -> Self {
        NewEvent {
            attempt,
            kind: EventType::JobFailed,
            stage: Stage::Failed,
            failed_stage: Some(in_stage),
            progress,
            message: format!("Processing failed in {in_stage}: {reason}"),
            details,
            error: Some(reason.to_string()),
        }
    }
}

/// Records, publishes, and moves batches.
#[derive(Clone)]
pub struct EventSink {
    db: PgPool,
    publisher: Publisher,
    writer: Writer,
}

impl EventSink {
    /// Starts the group-commit writer: call it inside the runtime.
    pub fn new(db: PgPool, publisher: Publisher) -> Self {
        let writer = Writer::spawn(&db, publisher.clone());
        EventSink { db, publisher, writer }
    }

    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    pub fn db(&self) -> &PgPool {
        &self.db
    }

    /// Writes the event in `conn` (a transaction of the caller's, so it
    /// commits with the caller's writes or not at all); `None` when the
    /// attempt no longer owns the job. Send it with [`EventSink::send`] after
    /// the commit.
    pub async fn record_in(
        &self,
        conn: &mut sqlx::PgConnection,
        meta: &JobMeta,
        ev: NewEvent,
    ) -> Result<Option<ProgressEvent>, sqlx::Error> {
        let timestamp = Utc::now();
        let seq = db::record_event(
            &mut *conn,
            &EventRecord {
                job_id: &meta.job_id,
                attempt: ev.attempt,
                kind: ev.kind,
                stage: ev.stage,
                failed_stage: ev.failed_stage,
                progress: ev.progress,
                message: &ev.message,
                details: &ev.details,
                error: ev.error.as_deref(),
                timestamp,
            },
        )
        .await?;
        Ok(seq.map(|seq| numbered(meta, ev, seq, timestamp)))
    }

    /// Publishes a recorded event; with `moves_batch` (the job changed stage
    /// or ended), its batch is recomputed and its own event sent too.
    pub async fn send(&self, meta: &JobMeta, event: &ProgressEvent, moves_batch: bool) {
        self.publisher.publish(meta.user_id, event).await;
        if moves_batch {
            if let Some(batch) = meta.batch_id {
                self.refresh_batch(batch).await;
            }
        }
    }

    /// Records and publishes an event on its own (batched with whatever
    /// other jobs' events are being written now); `None` when the attempt no
    /// longer owns the job. Does not move the batch: see [`EventSink::emit`].
    pub async fn record_and_publish(&self, meta: &JobMeta, ev: NewEvent) -> Result<Option<ProgressEvent>, sqlx::Error> {
        let timestamp = Utc::now();
        let ev = match self.writer.write(meta, ev, timestamp).await {
            Outcome::Written(event) => return Ok(Some(event)),
            Outcome::Lost => {
                return Err(sqlx::Error::Protocol(
                    "the progress writer stopped while writing this event".into(),
                ))
            }
            Outcome::Alone(ev) => ev,
        };
        // Its job's row is busy, its attempt stale, or the batch failed: alone.
        let mut conn = self.db.acquire().await?;
        let Some(event) = self.record_in(&mut conn, meta, ev).await? else {
            return Ok(None);
        };
        drop(conn);
        self.publisher.publish(meta.user_id, &event).await;
        Ok(Some(event))
    }

    /// Records and sends in one go; `None` when fenced.
    pub async fn emit(
        &self,
        meta: &JobMeta,
        ev: NewEvent,
        moves_batch: bool,
    ) -> Result<Option<ProgressEvent>, sqlx::Error> {
        let Some(event) = self.record_and_publish(meta, ev).await? else {
            return Ok(None);
        };
        if moves_batch {
            if let Some(batch) = meta.batch_id {
                self.refresh_batch(batch).await;
            }
        }
        Ok(Some(event))
    }

    /// Recomputes a batch and sends its `batch_progress` event (if it moved).
    pub async fn refresh_batch(&self, batch: Uuid) {
        match crate::batches::refresh(&self.db, batch).await {
            Ok(Some((owner, event))) => self.publisher.publish(owner, &event).await,
            Ok(None) => {}
            Err(e) => tracing::warn!(batch_id = %batch, error = %e, "cannot update the batch's progress"),
        }
    }
}
