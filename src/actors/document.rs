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

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::arq::wire::{cancelled_error, job_execution_failed, timeout_error};
use crate::arq::{now_ms, Claimed, JobDef, PyValue};
use crate::db::{self, DocumentSource};
use crate::domain::Stage;
use crate::events::JobMeta;
use crate::jobs;
use crate::jobs::{NOOP, PROCESS_DOCUMENT};
use crate::pipeline::chunk::{self, Chunk};
use crate::pipeline::embed::EmbedError;
use crate::pipeline::extract::{self, Extracted};
use crate::pipeline::{download, store, StageError};
use crate::progress::Reporter;
use crate::services::Services;

/// Embedding batches a document keeps submitted beyond the one it awaits.
const LOOKAHEAD: usize = 2;

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
    /// Content hash of the bytes: the stage cache's key.
    sha256: Option<String>,
    chunks: Vec<Chunk>,
    vectors: Vec<Vec<f32>>,
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
            sha256: None,
            chunks: Vec::new(),
            vectors: Vec::new(),
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
        services.faults.maybe_panic(step.stage(), &state.args.claimed.job_id);
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

/// The pre-run phase (reading the job, arq's checks) may take this long.
const PRERUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Decoding a job dict (bounded by the decoder's own limits) may take this long.
const DECODE_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What the pre-run checks decided.
enum Admitted {
    /// A `process_document` job to run.
    Run(JobDef),
    /// Ended already (failed with arq's reason, or a `noop` that completed).
    Ended,
}

/// arq's checks before a job runs (`spec/arq-wire.md` §6.3), in its order:
/// the job dict exists (ours are rebuilt from Postgres if their key
/// expired), decodes, was not aborted, names a known function, and has tries
/// left. A job that fails one ends here with arq's failed result and a
/// readable reason; the daemon carries on.
async fn prerun(s: &Services, claimed: &mut Claimed) -> Result<Admitted, StageError> {
    let fail = |claimed: &Claimed, job: Option<&JobDef>, reason: String, exception: PyValue| {
        let (claimed, job) = (claimed.clone(), job.cloned());
        async move {
            jobs::fail_without_actor(s, &claimed, job.as_ref(), &reason, exception).await;
            Ok(Admitted::Ended)
        }
    };
    let bytes = match &claimed.job_bytes {
        Some(b) => b.clone(),
        None => match jobs::restore_expired(s, &claimed.job_id).await {
            Some(b) => {
                claimed.job_bytes = Some(b.clone());
                b
            }
            None => return fail(claimed, None, "job expired".into(), job_execution_failed("job expired")).await,
        },
    };
    let serializer = s.queue.serializer;
    let decoded = tokio::time::timeout(
        DECODE_LIMIT,
        tokio::task::spawn_blocking(move || JobDef::decode(&bytes, serializer)),
    )
    .await;
    let job = match decoded {
        Ok(Ok(Ok(job))) => job,
        Ok(Ok(Err(reason))) => {
            let msg = format!("unable to deserialize job: {reason}");
            return fail(claimed, None, msg.clone(), job_execution_failed(msg)).await;
        }
        Ok(Err(_)) => {
            let msg = "unable to deserialize job: the decoder crashed on it".to_string();
            return fail(claimed, None, msg.clone(), job_execution_failed(msg)).await;
        }
        Err(_) => {
            let msg = format!(
                "unable to deserialize job: not done within {} s",
                DECODE_LIMIT.as_secs()
            );
            return fail(claimed, None, msg.clone(), job_execution_failed(msg)).await;
        }
    };
    if claimed.abort_requested {
        return fail(
            claimed,
            Some(&job),
            "cancelled before it started".into(),
            cancelled_error(),
        )
        .await;
    }
    let known = job.function == PROCESS_DOCUMENT || (job.function == NOOP && s.settings.queue.enable_noop);
    if !known {
        let msg = format!("function '{}' not found", job.function);
        return fail(claimed, Some(&job), msg.clone(), job_execution_failed(msg)).await;
    }
    // A `_job_try` given to enqueue_job raises the try count (arq §6.3 step 5).
    if let Some(t) = job.job_try.filter(|t| *t > claimed.job_try) {
        claimed.job_try = t;
        if let Err(e) = s.queue.set_try(&claimed.job_id, t).await {
            tracing::warn!(job_id = %claimed.job_id, error = %e, "cannot store the job's try count");
        }
    }
    let max_tries = s.settings.queue.max_tries;
    if claimed.job_try > max_tries as i64 {
        let msg = format!("max {max_tries} retries exceeded");
        return fail(claimed, Some(&job), msg, jobs::max_tries_exceeded(max_tries)).await;
    }
    if job.function == NOOP {
        jobs::arq_finish(s, claimed, Some(&job), now_ms(), true, PyValue::None).await;
        return Ok(Admitted::Ended);
    }
    Ok(Admitted::Run(job))
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
    let services = state.args.services.clone();
    let s = &services;
    let job_id = state.args.claimed.job_id.clone();
    match state.step {
        Step::Begin => {
            let prerun = tokio::time::timeout(PRERUN_LIMIT, prerun(s, &mut state.args.claimed));
            let job = match prerun.await {
                Ok(Ok(Admitted::Run(job))) => job,
                Ok(Ok(Admitted::Ended)) => return Ok(Next::Done),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(StageError::transient(format!(
                        "the job could not be read from the queue within {} s",
                        PRERUN_LIMIT.as_secs()
                    )))
                }
            };
            state.job = Some(job);
            let (document_id, user_id) = job_args(state.job.as_ref().expect("just set"))?;
            let source = db::document_source(&s.db, document_id).await?.ok_or_else(|| {
                StageError::permanent(format!("document {document_id} does not exist (was it deleted?)"))
            })?;
            if source.owner_id != user_id {
                return Err(StageError::permanent(format!(
                    "user {user_id} does not own document {document_id}"
                )));
            }
            db::ensure_job_row(&s.db, &job_id, document_id).await?;
            let start = db::begin_attempt(&s.db, &job_id)
                .await?
                .ok_or_else(|| StageError::permanent("the job's document was deleted"))?;
            // A crash after the job ended but before its arq result was
            // written leaves a terminal row: finish the arq side only, so
            // nobody sees a second `completed`.
            if start.stage.is_terminal() {
                let view = db::get_job(&s.db, start.user_id, &job_id).await?;
                let (success, r) = match view {
                    Some(v) if v.stage == "completed" => (true, success_result(document_id, &source, &v, s)),
                    Some(v) => (false, job_execution_failed(v.error.unwrap_or_else(|| "failed".into()))),
                    None => (false, job_execution_failed("the job's document was deleted")),
                };
                jobs::arq_finish(s, &state.args.claimed, state.job.as_ref(), state.start_ms, success, r).await;
                return Ok(Next::Done);
            }
            let meta = JobMeta {
                job_id: job_id.clone(),
                user_id: start.user_id,
                document_id: start.document_id,
                batch_id: start.batch_id,
                document_name: start.document_name.clone(),
            };
            let mut reporter = Reporter::new(s.events.clone(), meta, start.attempt, s.min_event_interval());
            tracing::info!(job_id = %job_id, document_id = %document_id, attempt = start.attempt, job_try = state.args.claimed.job_try, "job started");
            reporter
                .progress(Stage::Downloading, 0.05, "Fetching document from database", json!({}))
                .await?;
            s.faults.maybe_hang(Stage::Downloading, &job_id).await;
            state.reporter = Some(reporter);
            state.source = Some(source);
            Ok(Next::Go(Step::Download))
        }
        Step::Download => {
            let source = state.source.as_ref().expect("begin ran");
            let bytes = download::content(&s.db, source, &s.settings.pipeline).await?;
            let message = match &source.source_url {
                Some(url) => format!("Downloaded {} from {url}", human_bytes(bytes.len())),
                None => format!("Loaded file content ({})", human_bytes(bytes.len())),
            };
            reporter(state)
                .progress(Stage::Downloading, 0.15, message, json!({ "bytes": bytes.len() }))
                .await?;
            state.bytes = Some(bytes);
            Ok(Next::Go(Step::Extract))
        }
        Step::Extract => {
            let source = state.source.clone().expect("begin ran");
            reporter(state)
                .progress(
                    Stage::Extracting,
                    0.25,
                    format!("Extracting text from {}", source.name),
                    json!({}),
                )
                .await?;
            s.faults.maybe_hang(Stage::Extracting, &job_id).await;
            let bytes = state.bytes.take().expect("download ran");
            let sha = hex::encode(Sha256::digest(&bytes));
            let cached = match db::cached_extraction(&s.db, &sha, extract::EXTRACTOR).await {
                Ok(v) => v.and_then(|v| serde_json::from_value::<Extracted>(v).ok()),
                Err(e) => {
                    tracing::warn!(job_id = %job_id, error = %e, "stage cache unavailable");
                    None
                }
            };
            let from_cache = cached.is_some();
            let extracted = match cached {
                Some(ex) => ex,
                None => {
                    let ex = match &s.sandbox {
                        Some(sandbox) => {
                            extract::extract_sandboxed(sandbox, &bytes, &source.name, &source.content_type, &s.limits)
                                .await?
                        }
                        None => {
                            let limits = s.limits.clone();
                            let (name, ct) = (source.name.clone(), source.content_type.clone());
                            tokio::task::spawn_blocking(move || extract::extract_bytes(&bytes, &name, &ct, &limits))
                                .await
                                .map_err(|e| match e.try_into_panic() {
                                    Ok(p) => std::panic::resume_unwind(p),
                                    Err(_) => StageError::transient("extraction was interrupted"),
                                })?
                                .map_err(StageError::Permanent)?
                        }
                    };
                    if let Ok(v) = serde_json::to_value(&ex) {
                        if let Err(e) = db::cache_extraction(&s.db, &sha, extract::EXTRACTOR, &v).await {
                            tracing::warn!(job_id = %job_id, error = %e, "cannot cache the extracted text");
                        }
                    }
                    ex
                }
            };
            state.sha256 = Some(sha);
            db::set_detected_type(&s.db, source.id, &extracted.kind, extracted.pages.map(|p| p as i32)).await?;
            let chars = extracted.text.chars().count();
            let reused = if from_cache {
                " (reused from an earlier run of the same file)"
            } else {
                ""
            };
            let message = match extracted.pages {
                Some(p) => format!("Extracted {chars} characters from {p} pages{reused}"),
                None => format!("Extracted {chars} characters{reused}"),
            };
            let mut details = json!({ "characters": chars, "kind": extracted.kind, "cached": from_cache });
            if let Some(p) = extracted.pages {
                details["pages"] = json!(p);
            }
            if !extracted.page_errors.is_empty() {
                details["unreadable_pages"] = json!(extracted.page_errors.len());
                tracing::warn!(job_id = %job_id, pages = ?extracted.page_errors, "some pages could not be read");
            }
            reporter(state)
                .progress(Stage::Extracting, 0.30, message, details)
                .await?;
            state.extracted = Some(extracted);
            Ok(Next::Go(Step::Chunk))
        }
        Step::Chunk => {
            reporter(state)
                .progress(Stage::Chunking, 0.35, "Splitting document into chunks", json!({}))
                .await?;
            s.faults.maybe_hang(Stage::Chunking, &job_id).await;
            let extracted = state.extracted.as_ref().expect("extract ran");
            let p = &s.settings.pipeline;
            let sha = state.sha256.clone().expect("extract ran");
            let cached = db::cached_chunks(&s.db, &sha, extract::EXTRACTOR, p.chunk_size, p.chunk_overlap)
                .await
                .ok()
                .flatten()
                .and_then(|v| serde_json::from_value::<Vec<Chunk>>(v).ok());
            let chunks = match cached {
                Some(c) => c,
                None => {
                    let c = chunk::split(extracted, p.chunk_size, p.chunk_overlap);
                    if let Ok(v) = serde_json::to_value(&c) {
                        if let Err(e) =
                            db::cache_chunks(&s.db, &sha, extract::EXTRACTOR, p.chunk_size, p.chunk_overlap, &v).await
                        {
                            tracing::warn!(job_id = %job_id, error = %e, "cannot cache the chunks");
                        }
                    }
                    c
                }
            };
            if chunks.is_empty() {
                return Err(StageError::permanent("the document has no text to index"));
            }
            let n = chunks.len();
            state.chunks = chunks;
            reporter(state)
                .progress(
                    Stage::Chunking,
                    0.40,
                    format!("Created {n} chunks"),
                    json!({ "chunk_count": n }),
                )
                .await?;
            Ok(Next::Go(Step::Embed))
        }
        Step::Embed => {
            let total = state.chunks.len();
            reporter(state)
                .progress(
                    Stage::Embedding,
                    0.40,
                    "Starting embedding generation",
                    json!({ "chunk": 0, "chunks": total, "model": s.embedder.model(), "engine": s.embedder.engine() }),
                )
                .await?;
            s.faults.maybe_hang(Stage::Embedding, &job_id).await;
            let batch = s.embedder.batch_size().max(1);
            let mut vectors = Vec::with_capacity(total);
            let pieces: Vec<Vec<String>> = state
                .chunks
                .chunks(batch)
                .map(|piece| piece.iter().map(|c| c.text.clone()).collect())
                .collect();
            let max_retries = s.settings.embedding.max_retries;
            let submit = |piece: &Vec<String>| s.embedder.clone().submit(piece.clone());
            // Batches ahead: the local pool already holds the next ones
            // while this one is awaited, so its workers never wait for us.
            let mut ahead: std::collections::VecDeque<_> = pieces.iter().take(LOOKAHEAD).map(submit).collect();
            for (k, piece) in pieces.iter().enumerate() {
                let mut tries = 0u32;
                let mut pending = ahead.pop_front().expect("each batch is submitted before it is awaited");
                if let Some(next) = pieces.get(k + LOOKAHEAD) {
                    ahead.push_back(submit(next));
                }
                let out = loop {
                    let started = std::time::Instant::now();
                    let answer = pending.await;
                    crate::metrics::embedding(provider_label(s), started.elapsed().as_secs_f64(), piece.len());
                    match answer {
                        Ok(out) => break out,
                        Err(EmbedError::Permanent(reason)) => return Err(StageError::Permanent(reason)),
                        Err(EmbedError::Transient { reason, retry_after }) => {
                            tries += 1;
                            if tries > max_retries {
                                return Err(StageError::Transient { reason, retry_after });
                            }
                            let wait = retry_after.unwrap_or_else(|| jobs::backoff(tries as i64));
                            tracing::warn!(job_id = %job_id, tries, reason = %reason, wait_ms = wait.as_millis() as u64, "embedding provider unavailable; waiting");
                            let r = reporter(state);
                            let progress = r.last_progress();
                            r.progress(
                                Stage::Embedding,
                                progress,
                                format!(
                                    "Waiting for the embedding provider ({reason}); retrying in {:.0} s",
                                    wait.as_secs_f64().ceil()
                                ),
                                json!({ "waiting": true, "retry": tries, "retry_in_ms": wait.as_millis() as u64 }),
                            )
                            .await?;
                            tokio::time::sleep(wait).await;
                            pending = submit(piece);
                        }
                    }
                };
                vectors.extend(out);
                let done = vectors.len();
                let progress = 0.40 + 0.45 * (done as f64 / total as f64);
                let message = format!("Processing chunk {done}/{total}");
                let details = json!({ "chunk": done, "chunks": total });
                let r = reporter(state);
                if done == total {
                    // The last one always goes out, so the bar shows all chunks done.
                    r.progress(Stage::Embedding, progress, message, details).await?;
                } else {
                    r.throttled(Stage::Embedding, progress, message, details).await?;
                }
            }
            state.vectors = vectors;
            Ok(Next::Go(Step::Store))
        }
        Step::Store => {
            let n = state.chunks.len();
            reporter(state)
                .progress(
                    Stage::Storing,
                    0.85,
                    "Storing embeddings in database",
                    json!({ "chunks": n }),
                )
                .await?;
            s.faults.maybe_hang(Stage::Storing, &job_id).await;
            let document_id = state.source.as_ref().expect("begin ran").id;
            let pages = state.extracted.as_ref().and_then(|e| e.pages);
            let reporter = state.reporter.as_mut().expect("begin created the reporter");
            store::store(
                &s.db,
                reporter,
                document_id,
                s.model_ids(),
                &state.chunks,
                &state.vectors,
                pages,
            )
            .await?;
            Ok(Next::Go(Step::Complete))
        }
        Step::Complete => {
            let n = state.chunks.len();
            let pages = state.extracted.as_ref().and_then(|e| e.pages);
            let elapsed_ms = now_ms() - state.start_ms;
            reporter(state)
                .completed(
                    "Document processing completed successfully",
                    json!({ "chunks": n, "pages": pages, "elapsed_ms": elapsed_ms,
                            "model": s.embedder.model(), "engine": s.embedder.engine() }),
                )
                .await?;
            let document_id = state.source.as_ref().expect("begin ran").id;
            tracing::info!(job_id = %job_id, document_id = %document_id, chunks = n, elapsed_ms, "job completed");
            let r = result_dict(document_id, n as i64, pages.map(i64::from), s);
            jobs::arq_finish(s, &state.args.claimed, state.job.as_ref(), state.start_ms, true, r).await;
            Ok(Next::Done)
        }
    }
}

fn provider_label(s: &Services) -> &'static str {
    match s.settings.embedding.provider {
        crate::config::Provider::Local => "local",
        crate::config::Provider::Openai => "openai",
        crate::config::Provider::Ollama => "ollama",
        crate::config::Provider::Hash => "hash",
    }
}

fn reporter(state: &mut DocumentState) -> &mut Reporter {
    state.reporter.as_mut().expect("begin created the reporter")
}

/// The job's return value as arq's client sees it: a plain dict.
fn result_dict(document_id: Uuid, chunks: i64, pages: Option<i64>, s: &Services) -> PyValue {
    PyValue::Dict(vec![
        (PyValue::str("document_id"), PyValue::Str(document_id.to_string())),
        (PyValue::str("chunks"), PyValue::Int(chunks)),
        (PyValue::str("pages"), pages.map(PyValue::Int).unwrap_or(PyValue::None)),
        (PyValue::str("model"), PyValue::str(s.embedder.model())),
        (PyValue::str("engine"), PyValue::str(s.embedder.engine())),
    ])
}

fn success_result(document_id: Uuid, source: &DocumentSource, view: &db::JobView, s: &Services) -> PyValue {
    let chunks = view
        .details
        .as_ref()
        .and_then(|d| d.get("chunks"))
        .and_then(|c| c.as_i64())
        .unwrap_or(0);
    let pages = view
        .details
        .as_ref()
        .and_then(|d| d.get("pages"))
        .and_then(|p| p.as_i64());
    let _ = source;
    result_dict(document_id, chunks, pages, s)
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
