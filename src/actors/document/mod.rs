//! One `DocumentActor` per claimed job. It first reads the job as arq left
//! it in Redis (the job dict, undecoded until now) and runs arq's pre-run
//! checks, under a time limit, so a job that is expired, undecodable, for an
//! unknown function, aborted or out of tries fails itself and nobody else;
//! then it steps through the stages with one `Advance` message per stage
//! (downloading, extracting, chunking, embedding, storing, completed),
//! reporting progress at the seed plan's marks, and ends the job on both
//! records (Postgres event, arq result). Expected failures stay inside the
//! actor; a panic is a bug and goes to the supervisor, which restarts the job
//! as a new attempt (the old attempt's writes are fenced).

mod prerun;
mod steps;

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::arq::wire::{cancelled_error, job_execution_failed, timeout_error};
use crate::arq::{now_ms, Claimed, JobDef, PyValue};
use crate::db::{self, DocumentSource};
use crate::domain::Stage;
use crate::jobs;
use crate::pipeline::chunk::Chunk;
use crate::pipeline::extract::Extracted;
use crate::pipeline::StageError;
use crate::progress::Reporter;
use crate::services::Services;

/// Everything needed to (re)start the actor; the supervisor keeps a copy to
/// restart it after a crash.
#[derive(Clone)]
pub struct DocumentArgs {
    pub services: Arc<Services>,
    /// As the poller claimed it: the job dict is decoded by the actor.
    pub claimed: Claimed,
    pub cancel: CancellationToken,
    /// The job's time limit (arq's job timeout), fixed at claim time.
    pub deadline: Instant,
}

pub enum DocumentMsg {
    /// Run the next stage.
    Advance,
}

/// Where the actor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Begin,
    Download,
    Extract,
    Chunk,
    Embed,
    Store,
    Complete,
}

impl Step {
    /// The user-visible stage this step belongs to.
    fn stage(self) -> Stage {
        match self {
            Step::Begin | Step::Download => Stage::Downloading,
            Step::Extract => Stage::Extracting,
            Step::Chunk => Stage::Chunking,
            Step::Embed => Stage::Embedding,
            Step::Store | Step::Complete => Stage::Storing,
        }
    }
}

pub struct DocumentState {
    args: DocumentArgs,
    /// The decoded job dict, once the pre-run checks passed.
    job: Option<JobDef>,
    step: Step,
    start_ms: i64,
    reporter: Option<Reporter>,
    source: Option<DocumentSource>,
    bytes: Option<Vec<u8>>,
    extracted: Option<Extracted>,
    /// Where the stage cache keeps this file's outputs (owner, content hash, extractor).
    cache_key: Option<crate::jobs::cache::Key>,
    chunks: Vec<Chunk>,
    vectors: Vec<Vec<f32>>,
    /// A `reembed_document` job: the stored chunks get the configured
    /// model's vectors beside the ones search uses (see `crate::reembed`).
    reembed: bool,
}

impl std::fmt::Debug for DocumentMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Advance")
    }
}

pub struct DocumentActor;

/// What a finished step asks for next.
enum Next {
    Go(Step),
    /// The job ended (completed, or found already ended).
    Done,
}

impl Actor for DocumentActor {
    type Msg = DocumentMsg;
    type State = DocumentState;
    type Arguments = DocumentArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: DocumentArgs,
    ) -> Result<DocumentState, ActorProcessingErr> {
        Ok(DocumentState {
            args,
            job: None,
            step: Step::Begin,
            start_ms: now_ms(),
            reporter: None,
            source: None,
            bytes: None,
            extracted: None,
            cache_key: None,
            chunks: Vec::new(),
            vectors: Vec::new(),
            reembed: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut DocumentState,
    ) -> Result<(), ActorProcessingErr> {
        myself.cast(DocumentMsg::Advance)?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        _msg: DocumentMsg,
        state: &mut DocumentState,
    ) -> Result<(), ActorProcessingErr> {
        let step = state.step;
        let cancel = state.args.cancel.clone();
        let deadline = state.args.deadline;
        let services = state.args.services.clone();
        let span = tracing::info_span!(
            "job",
            job_id = %state.args.claimed.job_id,
            document_id = tracing::field::Empty,
            stage = %step.stage(),
            attempt = tracing::field::Empty,
        );
        if let Some(r) = &state.reporter {
            span.record("attempt", r.attempt);
            if let Some(d) = r.document_id() {
                span.record("document_id", tracing::field::display(d));
            }
        }
        let outcome = tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(StageError::Cancelled),
            r = tokio::time::timeout_at(deadline, tracing::Instrument::instrument(run_step(state), span)) => match r {
                Ok(r) => r,
                Err(_) => Err(StageError::TimedOut(services.settings.queue.job_timeout())),
            },
        };
        match outcome {
            Ok(Next::Go(next)) => {
                state.step = next;
                myself.cast(DocumentMsg::Advance)?;
            }
            Ok(Next::Done) => myself.stop(None),
            Err(e) => {
                conclude_error(state, step.stage(), e).await;
                myself.stop(None);
            }
        }
        Ok(())
    }
}

fn parse_uuid_arg(v: Option<&PyValue>, what: &str) -> Result<Uuid, StageError> {
    match v {
        Some(PyValue::Str(s)) => Uuid::parse_str(s)
            .map_err(|_| StageError::permanent(format!("process_document's {what} must be a UUID, got “{s}”"))),
        Some(other) => Err(StageError::permanent(format!(
            "process_document's {what} must be a UUID string, got a {}",
            other.type_name()
        ))),
        None => Err(StageError::permanent(format!(
            "process_document needs a {what} argument"
        ))),
    }
}

/// `process_document(document_id, user_id)`, positionally or by keyword.
fn job_args(job: &JobDef) -> Result<(Uuid, Uuid), StageError> {
    let kw = |name: &str| job.kwargs.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let document = parse_uuid_arg(
        job.args.first().or_else(|| kw("document_id")).or_else(|| kw("pdf_id")),
        "document_id",
    )?;
    let user = parse_uuid_arg(job.args.get(1).or_else(|| kw("user_id")), "user_id")?;
    Ok((document, user))
}

async fn run_step(state: &mut DocumentState) -> Result<Next, StageError> {
    match state.step {
        Step::Begin => steps::begin(state).await,
        Step::Download => steps::download(state).await,
        Step::Extract => steps::extract(state).await,
        Step::Chunk => steps::chunk(state).await,
        Step::Embed => steps::embed(state).await,
        Step::Store => steps::store(state).await,
        Step::Complete => steps::complete(state).await,
    }
}

/// The job's return value as arq's client sees it: a plain dict.
fn result_dict(document_id: Uuid, chunks: i64, pages: Option<i64>, warnings: &[String], s: &Services) -> PyValue {
    PyValue::Dict(vec![
        (PyValue::str("document_id"), PyValue::Str(document_id.to_string())),
        (PyValue::str("chunks"), PyValue::Int(chunks)),
        (PyValue::str("pages"), pages.map(PyValue::Int).unwrap_or(PyValue::None)),
        (PyValue::str("model"), PyValue::str(s.embedder.model())),
        (PyValue::str("engine"), PyValue::str(s.embedder.engine())),
        (
            PyValue::str("warnings"),
            PyValue::List(warnings.iter().map(|w| PyValue::Str(w.clone())).collect()),
        ),
    ])
}

fn success_result(document_id: Uuid, view: &db::JobView, s: &Services) -> PyValue {
    let details = view.details.as_ref();
    let chunks = details
        .and_then(|d| d.get("chunks"))
        .and_then(|c| c.as_i64())
        .unwrap_or(0);
    let pages = details.and_then(|d| d.get("pages")).and_then(|p| p.as_i64());
    result_dict(document_id, chunks, pages, &view.warnings, s)
}

fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MB", n as f64 / (1 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KB", n as f64 / (1 << 10) as f64)
    } else {
        format!("{n} bytes")
    }
}

/// Ends the job after a stage error: records it where users and arq's client
/// will look, or hands the job back when trying again can help.
async fn conclude_error(state: &mut DocumentState, stage: Stage, error: StageError) {
    let services = state.args.services.clone();
    let s = &services;
    let claimed = state.args.claimed.clone();
    let job = state.job.clone();
    let job_id = claimed.job_id.clone();
    let max_tries = s.settings.queue.max_tries as i64;

    let error_type = match &error {
        StageError::Permanent(_) => "invalid_input",
        StageError::Transient { .. } => "dependency",
        StageError::TimedOut(_) => "timeout",
        StageError::Cancelled => "cancelled",
        StageError::Fenced => "fenced",
    };
    let (reason, exception) = match error {
        StageError::Fenced => {
            tracing::warn!(job_id = %job_id, "a newer attempt owns this job; this attempt stops without writing");
            return;
        }
        StageError::Transient { reason, retry_after } if claimed.job_try < max_tries => {
            let defer = retry_after.unwrap_or_else(|| jobs::backoff(claimed.job_try));
            tracing::warn!(job_id = %job_id, %stage, job_try = claimed.job_try, reason = %reason, defer_ms = defer.as_millis() as u64, "transient failure, retrying");
            if let Some(r) = state.reporter.as_mut() {
                let message = format!("Waiting to retry ({reason}); next try in {} s", defer.as_secs().max(1));
                let progress = r.last_progress();
                if let Err(crate::progress::ProgressError::Fenced(_)) = r
                    .progress(
                        stage,
                        progress,
                        message,
                        json!({ "retry_in_ms": defer.as_millis() as u64, "waiting": true }),
                    )
                    .await
                {
                    return;
                }
            }
            jobs::arq_retry(s, &claimed, defer).await;
            return;
        }
        StageError::Transient { reason, .. } => {
            let msg = format!("gave up after {} tries: {reason}", claimed.job_try);
            (msg.clone(), job_execution_failed(msg))
        }
        StageError::Permanent(reason) => (reason.clone(), job_execution_failed(reason)),
        StageError::Cancelled => (jobs::CANCELLED.to_string(), cancelled_error()),
        StageError::TimedOut(limit) => (
            format!("processing took longer than the limit of {} s", limit.as_secs()),
            timeout_error(),
        ),
    };
    tracing::warn!(job_id = %job_id, %stage, reason = %reason, "job failed");
    crate::metrics::job_error(stage, error_type);
    if let Some(r) = state.reporter.as_mut() {
        match r.failed(stage, &reason).await {
            Ok(_) => {}
            Err(crate::progress::ProgressError::Fenced(_)) => return,
            Err(e) => {
                // Postgres is the record: without it the failure is not
                // recorded, so let a later attempt record it.
                tracing::error!(job_id = %job_id, error = %e, "cannot record the failure; handing the job back");
                jobs::arq_retry(s, &claimed, jobs::backoff(claimed.job_try)).await;
                return;
            }
        }
    }
    jobs::arq_finish(s, &claimed, job.as_ref(), state.start_ms, false, exception).await;
}
