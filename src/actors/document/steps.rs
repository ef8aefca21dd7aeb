//! The steps of a document job, one short function each, run in order by
//! the actor: begin (pre-run checks, attempt), download, extract, chunk,
//! embed, store, complete. Stage work is in `crate::pipeline`; caching,
//! attempts and events go through the lifecycle layer (`crate::jobs`,
//! the attempt's `Reporter`). Every stage opens through [`open`], the one
//! place test fault injection (`[faults]`) can act.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::prerun::{prerun, Admitted, PRERUN_LIMIT};
use super::{human_bytes, job_args, result_dict, success_result, DocumentState, Next, Step};
use crate::arq::now_ms;
use crate::arq::wire::job_execution_failed;
use crate::db;
use crate::domain::Stage;
use crate::jobs::attempt::{self, Started};
use crate::jobs::{self, cache};
use crate::pipeline::embed::EmbedError;
use crate::pipeline::extract;
use crate::pipeline::{download, store, StageError};
use crate::progress::Reporter;

/// Embedding batches a document keeps submitted beyond the one it awaits.
const LOOKAHEAD: usize = 2;

fn reporter(state: &mut DocumentState) -> &mut Reporter {
    state.reporter.as_mut().expect("begin created the reporter")
}

/// Opens a stage: its first event, around the fault-injection seam (a no-op
/// unless a test setting asks for it: a panic entering the stage, before its
/// first event; a hang inside it, after).
async fn open(
    state: &mut DocumentState,
    stage: Stage,
    progress: f64,
    message: impl Into<String>,
    details: Value,
) -> Result<(), StageError> {
    let faults = state.args.services.clone();
    let job_id = state.args.claimed.job_id.clone();
    faults.faults.entering(stage, &job_id);
    reporter(state).progress(stage, progress, message, details).await?;
    faults.faults.inside(stage, &job_id).await;
    Ok(())
}

/// Pre-run checks, the document, a new attempt.
pub async fn begin(state: &mut DocumentState) -> Result<Next, StageError> {
    let s = state.args.services.clone();
    let job = match tokio::time::timeout(PRERUN_LIMIT, prerun(&s, &mut state.args.claimed)).await {
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
    let (document_id, user_id) = job_args(&job)?;
    state.job = Some(job);
    let job_id = state.args.claimed.job_id.clone();
    let source = db::document_source(&s.db, document_id)
        .await?
        .ok_or_else(|| StageError::permanent(format!("document {document_id} does not exist (was it deleted?)")))?;
    if source.owner_id != user_id {
        return Err(StageError::permanent(format!(
            "user {user_id} does not own document {document_id}"
        )));
    }
    let reporter = match attempt::start(&s, &job_id, document_id).await? {
        Started::Run(r) => r,
        Started::AlreadyEnded(view) => {
            let (success, r) = match view {
                Some(v) if v.stage == "completed" => (true, success_result(document_id, &v, &s)),
                Some(v) => (false, job_execution_failed(v.error.unwrap_or_else(|| "failed".into()))),
                None => (false, job_execution_failed("the job's document was deleted")),
            };
            jobs::arq_finish(&s, &state.args.claimed, state.job.as_ref(), state.start_ms, success, r).await;
            return Ok(Next::Done);
        }
    };
    tracing::info!(job_id = %job_id, document_id = %document_id, attempt = reporter.attempt, job_try = state.args.claimed.job_try, "job started");
    state.reporter = Some(reporter);
    state.source = Some(source);
    if state.job.as_ref().is_some_and(|j| j.function == jobs::REEMBED_DOCUMENT) {
        return reembed_begin(state, document_id).await;
    }
    open(
        state,
        Stage::Downloading,
        0.05,
        "Fetching document from database",
        json!({}),
    )
    .await?;
    Ok(Next::Go(Step::Download))
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A re-embed starts from the chunks stored for the model search uses for
/// the document now, and goes straight to embedding them.
async fn reembed_begin(state: &mut DocumentState, document_id: Uuid) -> Result<Next, StageError> {
    let s = state.args.services.clone();
    state.reembed = true;
    let Some((from, from_name)) = db::document_search_model(&s.db, document_id).await? else {
        return Err(StageError::permanent(
            "the document has no stored chunks to re-embed; retry its processing instead",
        ));
    };
    state.chunks = db::model_chunks(&s.db, document_id, from).await?;
    if state.chunks.is_empty() {
        return Err(StageError::permanent(format!(
            "the document has no stored chunks of {from_name} to re-embed"
        )));
    }
    tracing::info!(job_id = %state.args.claimed.job_id, from = %from_name, to = %s.embedder.model(), chunks = state.chunks.len(), "re-embedding");
    if from == s.model_id {
        // Processed again with the configured model meanwhile: nothing to do.
        return Ok(Next::Go(Step::Complete));
    }
    Ok(Next::Go(Step::Embed))
}

pub async fn download(state: &mut DocumentState) -> Result<Next, StageError> {
    let s = state.args.services.clone();
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

pub async fn extract(state: &mut DocumentState) -> Result<Next, StageError> {
    let s = state.args.services.clone();
    let source = state.source.clone().expect("begin ran");
    open(
        state,
        Stage::Extracting,
        0.25,
        format!("Extracting text from {}", source.name),
        json!({}),
    )
    .await?;
    let bytes = state.bytes.take().expect("download ran");
    let sha = hex::encode(Sha256::digest(&bytes));
    let kind = extract::sniff::sniff(&bytes, &source.name, &source.content_type);
    let key = cache::Key::new(&s.settings.pipeline, source.owner_id, sha, kind);
    let job_id = state.args.claimed.job_id.clone();
    let events = state.reporter.as_mut().expect("begin created the reporter");
    let run = async {
        // Only a fresh extraction (not a cached one) needs memory.
        let share = reserve_memory(&s, events, &job_id, bytes.len()).await?;
        let mut extracted = match &s.sandbox {
            Some(sandbox) => {
                extract::extract_sandboxed(
                    sandbox,
                    share.mib,
                    &bytes,
                    &source.name,
                    &source.content_type,
                    &s.limits,
                )
                .await
            }
            None => {
                let limits = s.limits.clone();
                let (name, ct, bytes) = (source.name.clone(), source.content_type.clone(), bytes.clone());
                tokio::task::spawn_blocking(move || extract::extract_bytes(&bytes, &name, &ct, &limits))
                    .await
                    .map_err(|e| match e.try_into_panic() {
                        Ok(p) => std::panic::resume_unwind(p),
                        Err(_) => StageError::transient("extraction was interrupted"),
                    })?
                    .map_err(StageError::Permanent)
            }
        }?;
        drop(share);
        if !extracted.ocr_pages.is_empty() {
            ocr_pages(&s, events, &job_id, &source, &bytes, &mut extracted).await?;
        }
        Ok(extracted)
    };
    let (extracted, from_cache) = cache::extraction(&s, &key, run).await?;
    state.cache_key = Some(key);
    db::set_extraction(
        &s.db,
        source.id,
        &extracted.kind,
        extracted.pages.map(|p| p as i32),
        &extracted.warnings,
        extracted.ocr.as_ref(),
    )
    .await?;
    let chars = extracted.text.chars().count();
    let reused = if from_cache {
        " (reused from an earlier run of the same file)"
    } else {
        ""
    };
    let mut message = match extracted.pages {
        Some(p) => format!("Extracted {chars} characters from {p} pages{reused}"),
        None => format!("Extracted {chars} characters{reused}"),
    };
    for w in &extracted.warnings {
        message.push_str("; ");
        message.push_str(w);
    }
    let mut details = json!({ "characters": chars, "kind": extracted.kind, "cached": from_cache });
    if let Some(p) = extracted.pages {
        details["pages"] = json!(p);
    }
    if let Some(enc) = &extracted.encoding {
        details["encoding"] = json!(enc);
    }
    if let Some(ocr) = extracted.ocr.as_ref().filter(|o| !o.pages.is_empty()) {
        details["ocr_pages"] = json!(ocr.pages);
        details["ocr_confidence"] = json!(ocr.mean_confidence);
        message.push_str(&format!(
            " ({} {} by OCR, mean confidence {:.0} %)",
            ocr.pages.len(),
            if ocr.pages.len() == 1 { "page" } else { "pages" },
            ocr.mean_confidence.unwrap_or(0.0)
        ));
    }
    if !extracted.page_errors.is_empty() {
        details["unreadable_pages"] = json!(extracted.page_errors.len());
        tracing::warn!(job_id = %state.args.claimed.job_id, pages = ?extracted.page_errors, "some pages could not be read");
    }
    if !extracted.warnings.is_empty() {
        details["warnings"] = json!(extracted.warnings);
        tracing::warn!(job_id = %state.args.claimed.job_id, warnings = ?extracted.warnings, "text was lost in extraction");
    }
    reporter(state)
        .progress(Stage::Extracting, 0.30, message, details)
        .await?;
    state.extracted = Some(extracted);
    Ok(Next::Go(Step::Chunk))
}

/// OCRs the pages the reader found no text on, one child per page, in
/// order, saying "OCR page k of n" before each; a page that times out or
/// fails is named in a warning and the rest goes on.
async fn ocr_pages(
    s: &crate::services::Services,
    reporter: &mut Reporter,
    job_id: &str,
    source: &db::DocumentSource,
    bytes: &[u8],
    ex: &mut extract::Extracted,
) -> Result<(), StageError> {
    use extract::ocr::{OcrJob, PageFailure};
    let settings = &s.settings.pipeline;
    let mut pages = std::mem::take(&mut ex.ocr_pages);
    let beyond: Vec<usize> = pages
        .iter()
        .skip(settings.ocr_max_pages)
        .map(|p| *p as usize - 1)
        .collect();
    pages.truncate(settings.ocr_max_pages);
    let mut texts = extract::ocr::page_texts(ex);
    let n = pages.len();
    let (mut done, mut timed_out, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut confidence, mut words) = (0f64, 0usize);
    let kind = if ex.kind == "image" { "image" } else { "pdf" };
    let memory = settings.ocr_memory_mb.min(s.extract_budget.total_mib());
    for (k, &page) in pages.iter().enumerate() {
        let image_pages = ex.pages.unwrap_or(1);
        let message = if kind == "image" && image_pages > 1 {
            format!("OCR of the image's {image_pages} pages")
        } else if kind == "image" {
            "OCR page 1 of 1".to_string()
        } else {
            format!("OCR page {} of {n}", k + 1)
        };
        let progress = 0.25 + 0.05 * k as f64 / n.max(1) as f64;
        reporter
            .progress(
                Stage::Extracting,
                progress,
                message,
                json!({ "ocr_page": page, "ocr_pages": n }),
            )
            .await?;
        let _slot = s.ocr_slots.acquire().await.expect("the OCR semaphore is never closed");
        let _memory = s.extract_budget.reserve(memory).await;
        let job = OcrJob {
            kind: kind.into(),
            page,
            languages: settings.ocr_languages.clone(),
            dpi: settings.ocr_dpi,
            // A multi-page image is read in one run: its pages' time.
            timeout_secs: settings.ocr_page_timeout_secs * if kind == "image" { image_pages as u64 } else { 1 },
        };
        let started = std::time::Instant::now();
        let exe = s.sandbox.as_ref().map(|sb| sb.exe.as_path());
        match extract::ocr::page(exe, bytes, &job, memory).await {
            Ok(read) => {
                tracing::info!(job_id, page, words = read.words, confidence = ?read.confidence, ms = started.elapsed().as_millis() as u64, "OCR page done");
                if let Some(c) = read.confidence {
                    confidence += c as f64 * read.words as f64;
                    words += read.words;
                }
                if read.by_page.len() > 1 {
                    // Every page of a multi-page image, in order.
                    done.extend(1..=read.by_page.len() as u32);
                    texts = read.by_page;
                    ex.pages = Some(texts.len() as u32);
                } else {
                    if let Some(slot) = texts.get_mut(page as usize - 1) {
                        *slot = read.text;
                    }
                    done.push(page);
                }
            }
            Err(PageFailure::TimedOut) => {
                tracing::warn!(job_id, page, "OCR page timed out");
                timed_out.push(page as usize - 1);
            }
            Err(PageFailure::Failed(reason)) => {
                tracing::warn!(job_id, page, reason, "OCR page failed");
                failed.push((page as usize - 1, reason));
            }
        }
    }
    extract::ocr::join_pages(ex, &texts);
    let total = ex.pages.unwrap_or(1);
    if !timed_out.is_empty() {
        ex.warnings.push(format!(
            "OCR of {} took longer than {} s and was skipped",
            extract::pdf::page_list(&timed_out),
            settings.ocr_page_timeout_secs
        ));
    }
    if let Some((_, reason)) = failed.first() {
        let list: Vec<usize> = failed.iter().map(|(p, _)| *p).collect();
        ex.warnings
            .push(format!("OCR failed on {} ({reason})", extract::pdf::page_list(&list)));
    }
    if !beyond.is_empty() {
        ex.warnings.push(format!(
            "{} of {total} pages were not OCR'd: at most {} pages of a document are (pipeline.ocr_max_pages)",
            beyond.len(),
            settings.ocr_max_pages
        ));
    }
    ex.ocr = Some(extract::OcrSummary {
        pages: done,
        mean_confidence: (words > 0).then(|| (confidence / words as f64) as f32),
    });
    if ex.text.trim().is_empty() {
        let slow = format!("took longer than {} s a page", settings.ocr_page_timeout_secs);
        return Err(StageError::Permanent(match &ex.image {
            // An image: say what the file is (and what it was said to be).
            Some(image) => {
                let name = &source.name;
                let what = match extract::sniff::claimed_kind(name, &source.content_type) {
                    Some(claimed) => format!("“{name}” is {image}, not {claimed}"),
                    None => format!("“{name}” is {image}"),
                };
                match failed.first() {
                    _ if !timed_out.is_empty() => format!("{what}, and its OCR {slow}, so no text was read"),
                    Some((_, reason)) => format!("{what}, and OCR could not read it: {reason}"),
                    None => {
                        format!("{what}, and OCR found no text in it (a picture without words, or too faint to read)")
                    }
                }
            }
            None => match failed.first() {
                _ if !timed_out.is_empty() => format!("OCR of the scanned pages {slow}, so no text was read"),
                Some((_, reason)) => format!("OCR could not read the scanned pages: {reason}"),
                None => {
                    "OCR found no text in the scanned pages (they may be pictures without words, or too faint to read)"
                        .into()
                }
            },
        }));
    }
    Ok(())
}

/// How often a job waiting for extraction memory says it still waits (well
/// inside the extracting stage's stall budget).
const MEMORY_WAIT_REPORT: std::time::Duration = std::time::Duration::from_secs(60);

/// This extraction's share of the memory budget, waiting for it (and saying
/// so on the job) while other documents are being read.
async fn reserve_memory(
    s: &crate::services::Services,
    reporter: &mut Reporter,
    job_id: &str,
    file_bytes: usize,
) -> Result<extract::budget::Reservation, StageError> {
    let budget = &s.extract_budget;
    let need = budget.need_mib(file_bytes);
    if let Some(share) = budget.try_reserve(need) {
        return Ok(share);
    }
    crate::metrics::extraction_memory_waited();
    tracing::info!(
        job_id,
        need_mib = need,
        reserved_mib = budget.reserved_mib(),
        total_mib = budget.total_mib(),
        "waiting for extraction memory"
    );
    let wait = budget.reserve(need);
    tokio::pin!(wait);
    loop {
        let message = format!(
            "Waiting for memory to read the file: other documents are being read ({} of {} MiB in use, this one needs {need} MiB)",
            budget.reserved_mib(),
            budget.total_mib()
        );
        let details = json!({ "waiting": true, "memory_mib": need });
        let progress = reporter.last_progress();
        reporter.progress(Stage::Extracting, progress, message, details).await?;
        tokio::select! {
            share = &mut wait => return Ok(share),
            _ = tokio::time::sleep(MEMORY_WAIT_REPORT) => {}
        }
    }
}

pub async fn chunk(state: &mut DocumentState) -> Result<Next, StageError> {
    let s = state.args.services.clone();
    open(
        state,
        Stage::Chunking,
        0.35,
        "Splitting document into chunks",
        json!({}),
    )
    .await?;
    let key = state.cache_key.clone().expect("extract ran");
    let chunks = cache::chunks(&s, &key, state.extracted.as_ref().expect("extract ran")).await;
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

/// Batches through the embedder, "Processing chunk i/n" as each comes back;
/// passing provider failures are waited out in place, with the job saying so.
pub async fn embed(state: &mut DocumentState) -> Result<Next, StageError> {
    let s = state.args.services.clone();
    let total = state.chunks.len();
    let mut details =
        json!({ "chunk": 0, "chunks": total, "model": s.embedder.model(), "engine": s.embedder.engine() });
    let message = if state.reembed {
        details["reembed"] = json!(true);
        format!(
            "Re-embedding {total} chunk{} with {}",
            plural(total),
            s.embedder.model()
        )
    } else {
        "Starting embedding generation".to_string()
    };
    open(state, Stage::Embedding, 0.40, message, details).await?;
    let job_id = state.args.claimed.job_id.clone();
    let batch = s.embedder.batch_size().max(1);
    let pieces: Vec<Vec<String>> = state
        .chunks
        .chunks(batch)
        .map(|piece| piece.iter().map(|c| c.text.clone()).collect())
        .collect();
    let max_retries = s.settings.embedding.max_retries;
    let submit = |piece: &Vec<String>| s.embedder.clone().submit(piece.clone());
    // Batches ahead: the local pool already holds the next ones while this
    // one is awaited, so its workers never wait for us.
    let mut ahead: std::collections::VecDeque<_> = pieces.iter().take(LOOKAHEAD).map(submit).collect();
    let mut vectors = Vec::with_capacity(total);
    for (k, piece) in pieces.iter().enumerate() {
        let mut tries = 0u32;
        let mut pending = ahead.pop_front().expect("each batch is submitted before it is awaited");
        if let Some(next) = pieces.get(k + LOOKAHEAD) {
            ahead.push_back(submit(next));
        }
        let out = loop {
            let started = std::time::Instant::now();
            let answer = pending.await;
            crate::metrics::embedding(s.provider_label(), started.elapsed().as_secs_f64(), piece.len());
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
                    let message = format!(
                        "Waiting for the embedding provider ({reason}); retrying in {:.0} s",
                        wait.as_secs_f64().ceil()
                    );
                    let details = json!({ "waiting": true, "retry": tries, "retry_in_ms": wait.as_millis() as u64 });
                    r.progress(Stage::Embedding, progress, message, details).await?;
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

pub async fn store(state: &mut DocumentState) -> Result<Next, StageError> {
    let s = state.args.services.clone();
    let n = state.chunks.len();
    open(
        state,
        Stage::Storing,
        0.85,
        "Storing embeddings in database",
        json!({ "chunks": n }),
    )
    .await?;
    let document_id = state.source.as_ref().expect("begin ran").id;
    let reporter = state.reporter.as_mut().expect("begin created the reporter");
    if state.reembed {
        store::store_beside(
            &s.db,
            reporter,
            document_id,
            s.model_ids(),
            &state.chunks,
            &state.vectors,
        )
        .await?;
        return Ok(Next::Go(Step::Complete));
    }
    store::store(
        &s.db,
        reporter,
        document_id,
        s.model_ids(),
        &state.chunks,
        &state.vectors,
        state.extracted.as_ref(),
    )
    .await?;
    Ok(Next::Go(Step::Complete))
}

pub async fn complete(state: &mut DocumentState) -> Result<Next, StageError> {
    let s = state.args.services.clone();
    let n = state.chunks.len();
    let pages = state.extracted.as_ref().and_then(|e| e.pages);
    let elapsed_ms = now_ms() - state.start_ms;
    let warnings = state.extracted.as_ref().map(|e| e.warnings.clone()).unwrap_or_default();
    let mut details = json!({ "chunks": n, "pages": pages, "elapsed_ms": elapsed_ms,
                          "model": s.embedder.model(), "engine": s.embedder.engine() });
    let message = if state.reembed {
        details["reembed"] = json!(true);
        format!("Re-embedded {n} chunk{} with {}", plural(n), s.embedder.model())
    } else if warnings.is_empty() {
        "Document processing completed successfully".to_string()
    } else {
        details["warnings"] = json!(warnings);
        let what = if warnings.len() == 1 { "a warning" } else { "warnings" };
        format!("Document processing completed with {what}: {}", warnings.join("; "))
    };
    reporter(state).completed(message, details).await?;
    let document_id: Uuid = state.source.as_ref().expect("begin ran").id;
    tracing::info!(job_id = %state.args.claimed.job_id, document_id = %document_id, chunks = n, elapsed_ms, "job completed");
    if state.reembed {
        // The user's last document done: search moves to the new vectors.
        let owner = state.source.as_ref().expect("begin ran").owner_id;
        if let Err(e) = crate::reembed::switch_if_done(&s, owner).await {
            tracing::warn!(job_id = %state.args.claimed.job_id, error = %e, "cannot switch search to the new model now; the next re-embed start does");
        }
    }
    let r = result_dict(document_id, n as i64, pages.map(i64::from), &warnings, &s);
    jobs::arq_finish(&s, &state.args.claimed, state.job.as_ref(), state.start_ms, true, r).await;
    Ok(Next::Done)
}
