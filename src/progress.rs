//! A worker's view of progress: the [`Reporter`] of one job attempt keeps
//! its progress monotonic, throttles per-chunk events, and emits through the
//! lifecycle layer's [`EventSink`] (record, publish, move the batch), fenced
//! by its attempt number.

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::domain::{EventType, ProgressEvent, Stage};
use crate::events::{EventSink, JobMeta, NewEvent};

#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    /// Another attempt owns the job now; this worker must stop writing.
    #[error("attempt {0} was superseded by a newer attempt")]
    Fenced(i32),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Records and publishes the events of one job attempt.
pub struct Reporter {
    sink: EventSink,
    meta: JobMeta,
    pub attempt: i32,
    last_progress: f64,
    last_stage: Stage,
    last_emit: Option<Instant>,
    /// When the current stage's first event went out (stage durations).
    stage_started: Instant,
    min_interval: Duration,
}

/// An event stored inside a caller's transaction but not yet sent.
#[must_use = "publish it once its transaction committed"]
pub struct Recorded {
    event: ProgressEvent,
    moves_batch: bool,
}

impl Reporter {
    pub fn new(sink: EventSink, meta: JobMeta, attempt: i32, min_interval: Duration) -> Self {
        Reporter {
            sink,
            meta,
            attempt,
            last_progress: 0.0,
            last_stage: Stage::Queued,
            last_emit: None,
            stage_started: Instant::now(),
            min_interval,
        }
    }

    pub fn job_id(&self) -> &str {
        &self.meta.job_id
    }

    pub fn user_id(&self) -> Uuid {
        self.meta.user_id
    }

    pub fn document_id(&self) -> Option<Uuid> {
        self.meta.document_id
    }

    pub fn last_progress(&self) -> f64 {
        self.last_progress
    }

    pub fn last_stage(&self) -> Stage {
        self.last_stage
    }

    /// A `job_progress` event.
    pub async fn progress(
        &mut self,
        stage: Stage,
        progress: f64,
        message: impl Into<String>,
        details: serde_json::Value,
    ) -> Result<(), ProgressError> {
        let ev = self.new_event(
            EventType::JobProgress,
            stage,
            None,
            progress,
            message.into(),
            details,
            None,
        );
        self.emit(ev).await.map(|_| ())
    }

    /// A per-item event (embedding chunk i of n): skipped when the previous
    /// event of the same stage was less than `min_interval` ago.
    pub async fn throttled(
        &mut self,
        stage: Stage,
        progress: f64,
        message: impl Into<String>,
        details: serde_json::Value,
    ) -> Result<(), ProgressError> {
        if stage == self.last_stage && self.last_emit.is_some_and(|t| t.elapsed() < self.min_interval) {
            return Ok(());
        }
        self.progress(stage, progress, message, details).await
    }

    pub async fn completed(
        &mut self,
        message: impl Into<String>,
        details: serde_json::Value,
    ) -> Result<ProgressEvent, ProgressError> {
        let ev = self.new_event(
            EventType::JobCompleted,
            Stage::Completed,
            None,
            1.0,
            message.into(),
            details,
            None,
        );
        self.emit(ev).await
    }

    /// A `job_failed` event: keeps the progress reached and names the stage.
    pub async fn failed(&mut self, in_stage: Stage, error: &str) -> Result<ProgressEvent, ProgressError> {
        let details = serde_json::json!({ "failed_stage": in_stage.as_str() });
        let ev = NewEvent::failed(self.attempt, in_stage, self.last_progress, error, details);
        self.emit(ev).await
    }

    /// A `job_progress` event written inside the caller's transaction, so it
    /// commits with the caller's writes or not at all. Send it with
    /// [`Reporter::publish`] once the transaction committed.
    pub async fn progress_in(
        &mut self,
        conn: &mut sqlx::PgConnection,
        stage: Stage,
        progress: f64,
        message: impl Into<String>,
        details: serde_json::Value,
    ) -> Result<Recorded, ProgressError> {
        let ev = self.new_event(
            EventType::JobProgress,
            stage,
            None,
            progress,
            message.into(),
            details,
            None,
        );
        let event = self
            .sink
            .record_in(conn, &self.meta, ev)
            .await?
            .ok_or(ProgressError::Fenced(self.attempt))?;
        let moves_batch = self.note(&event);
        Ok(Recorded { event, moves_batch })
    }

    /// Sends an event recorded with [`Reporter::progress_in`] (after its commit).
    pub async fn publish(&mut self, recorded: Recorded) -> ProgressEvent {
        self.sink.send(&self.meta, &recorded.event, recorded.moves_batch).await;
        recorded.event
    }

    #[allow(clippy::too_many_arguments)]
    fn new_event(
        &self,
        kind: EventType,
        stage: Stage,
        failed_stage: Option<Stage>,
        progress: f64,
        message: String,
        details: serde_json::Value,
        error: Option<String>,
    ) -> NewEvent {
        // Four decimals: enough for any bar, and 0.40 + 0.45 stays 0.85.
        let progress = ((progress.clamp(0.0, 1.0) * 10_000.0).round() / 10_000.0).max(self.last_progress);
        NewEvent {
            attempt: self.attempt,
            kind,
            stage,
            failed_stage,
            progress,
            message,
            details,
            error,
        }
    }

    async fn emit(&mut self, ev: NewEvent) -> Result<ProgressEvent, ProgressError> {
        let event = self
            .sink
            .record_and_publish(&self.meta, ev)
            .await?
            .ok_or(ProgressError::Fenced(self.attempt))?;
        if self.note(&event) {
            if let Some(batch) = self.meta.batch_id {
                self.sink.refresh_batch(batch).await;
            }
        }
        Ok(event)
    }

    /// Moves the attempt's state on past a recorded event; whether it moves its batch.
    fn note(&mut self, event: &ProgressEvent) -> bool {
        let previous_stage = self.last_stage;
        if event.stage != previous_stage {
            if Stage::PIPELINE.contains(&previous_stage) {
                crate::metrics::stage_duration(previous_stage, self.stage_started.elapsed().as_secs_f64());
            }
            self.stage_started = Instant::now();
        }
        self.last_progress = event.progress;
        self.last_stage = event.stage;
        self.last_emit = Some(Instant::now());
        event.stage != previous_stage || event.stage.is_terminal()
    }
}
