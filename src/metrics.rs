//! Prometheus metrics (`GET /metrics`), through the `metrics` facade. Label
//! values are stages, outcomes, error kinds and providers only: never a user
//! or a document (cardinality).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `document_processing_duration_seconds` | histogram | `stage` |
//! | `document_processing_errors_total` | counter | `stage`, `error_type` |
//! | `active_processing_jobs` | gauge | |
//! | `queue_depth` | gauge | |
//! | `jobs_total` | counter | `outcome` (completed, failed, retried) |
//! | `embedding_request_duration_seconds` | histogram | `provider` |
//! | `embedding_batch_size` | histogram | `provider` |
//! | `embedding_forward_duration_seconds` | histogram | |
//! | `embedding_forward_batch_size` | histogram | |
//! | `embedding_queue_texts` | gauge | |
//! | `index_backlog_rows` | gauge | |
//! | `extraction_memory_reserved_mib` | gauge | |
//! | `extraction_memory_waits_total` | counter | |
//! | `progress_events_dropped_total` | counter | `at` (registry, session): dropped under overload, followed by a resync |
//! | `websocket_connections` | gauge | |
//! | `websocket_messages_sent_total` | counter | |
//! | `websocket_connection_duration_seconds` | histogram | |
//! | `websocket_reconnections_total` | counter | |

use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::Stage;

/// Installs the process-wide recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("duration_seconds".into()),
                    &[
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
                        3600.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Suffix("batch_size".into()),
                        &[
                            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
                        ],
                    )
                })
                .expect("valid buckets")
                .install_recorder()
                .expect("one recorder per process");
            describe_histogram!(
                "document_processing_duration_seconds",
                Unit::Seconds,
                "Time spent in each stage of a document's processing"
            );
            describe_counter!(
                "document_processing_errors_total",
                "Jobs that failed, by the stage they failed in and why"
            );
            describe_gauge!("active_processing_jobs", "Jobs this process is running now");
            describe_gauge!("queue_depth", "Jobs in the arq queue (waiting, deferred and running)");
            describe_counter!("jobs_total", "Jobs ended or handed back, by outcome");
            describe_histogram!(
                "embedding_request_duration_seconds",
                Unit::Seconds,
                "Latency of one embedding request (a batch of a document's chunks, or a query)"
            );
            describe_histogram!("embedding_batch_size", "Texts per embedding request");
            describe_histogram!(
                "embedding_forward_duration_seconds",
                Unit::Seconds,
                "One forward pass of the local model (texts of one or several documents)"
            );
            describe_histogram!(
                "embedding_forward_batch_size",
                "Texts per forward pass of the local model"
            );
            describe_gauge!(
                "embedding_queue_texts",
                "Texts waiting for the local model, from all jobs and searches"
            );
            describe_gauge!(
                "index_backlog_rows",
                "Stored chunks not yet in the ANN index (search scans them exactly)"
            );
            describe_gauge!(
                "extraction_memory_reserved_mib",
                "Memory reserved by the extractions running now, of pipeline.extract_memory_budget_mb"
            );
            describe_counter!(
                "extraction_memory_waits_total",
                "Extractions that had to wait for their share of the memory budget"
            );
            describe_counter!(
                "progress_events_dropped_total",
                "Progress events dropped because a consumer fell behind (its sockets were told to resync)"
            );
            describe_histogram!(
                "progress_write_batch_size",
                "Progress events written together in one statement (group commit)"
            );
            describe_gauge!("websocket_connections", "Open progress sockets");
            describe_counter!("websocket_messages_sent_total", "Messages sent to progress sockets");
            describe_histogram!(
                "websocket_connection_duration_seconds",
                Unit::Seconds,
                "How long progress sockets stay open"
            );
            describe_counter!(
                "websocket_reconnections_total",
                "Sockets that resumed after a dropped connection"
            );
            handle
        })
        .clone()
}

pub fn stage_duration(stage: Stage, secs: f64) {
    histogram!("document_processing_duration_seconds", "stage" => stage.as_str()).record(secs);
}

pub fn job_error(stage: Stage, error_type: &'static str) {
    counter!("document_processing_errors_total", "stage" => stage.as_str(), "error_type" => error_type).increment(1);
}

pub fn job_outcome(outcome: &'static str) {
    counter!("jobs_total", "outcome" => outcome).increment(1);
}

pub fn active_jobs(n: usize) {
    gauge!("active_processing_jobs").set(n as f64);
}

pub fn queue_depth(n: i64) {
    gauge!("queue_depth").set(n as f64);
}

pub fn embedding(provider: &'static str, secs: f64, batch: usize) {
    histogram!("embedding_request_duration_seconds", "provider" => provider).record(secs);
    histogram!("embedding_batch_size", "provider" => provider).record(batch as f64);
}

/// One forward pass of the local model's pool.
pub fn embedding_forward(secs: f64, texts: usize) {
    histogram!("embedding_forward_duration_seconds").record(secs);
    histogram!("embedding_forward_batch_size").record(texts as f64);
}

pub fn embedding_queue(texts: usize) {
    gauge!("embedding_queue_texts").set(texts as f64);
}

pub fn events_dropped(at: &'static str) {
    counter!("progress_events_dropped_total", "at" => at).increment(1);
}

pub fn event_batch(events: usize) {
    histogram!("progress_write_batch_size").record(events as f64);
}

pub fn index_backlog(rows: i64) {
    gauge!("index_backlog_rows").set(rows as f64);
}

pub fn extraction_memory(reserved_mib: u64) {
    gauge!("extraction_memory_reserved_mib").set(reserved_mib as f64);
}

pub fn extraction_memory_waited() {
    counter!("extraction_memory_waits_total").increment(1);
}

pub fn socket_opened() {
    gauge!("websocket_connections").increment(1.0);
}

pub fn socket_closed(secs: f64) {
    gauge!("websocket_connections").decrement(1.0);
    histogram!("websocket_connection_duration_seconds").record(secs);
}

/// Called for every message to every socket: the handle is looked up once
/// (after [`install`], which the daemon calls before it serves).
pub fn socket_sent() {
    static SENT: OnceLock<metrics::Counter> = OnceLock::new();
    SENT.get_or_init(|| counter!("websocket_messages_sent_total"))
        .increment(1);
}

pub fn socket_resumed() {
    counter!("websocket_reconnections_total").increment(1);
}
