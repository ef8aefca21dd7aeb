//! The job lifecycle: the one place that submits, admits, retries, cancels,
//! finishes and fails a job, all through the one event sink every event
//! leaves through ([`crate::events`]). HTTP handlers authenticate, validate, call in here and map the
//! errors; actors and recovery use the same calls. The arq protocol itself
//! (keys, job and result dicts) lives in [`crate::arq`] alone.
//!
//! - [`submit`] — uploads and batches: every file stored and queued, or none; idempotency keys
//! - [`admission`] — per-user fairness between the database and the arq queue
//! - [`attempt`] — starting a worker's attempt (fencing) with its reporter
//! - [`cache`] — the stage cache of extraction and chunking, by content hash
//! - [`control`] — retry (through admission) and cancel (wherever the job runs)
//! - [`finish`] — ending a job on both records (Postgres event, arq result)
//! - [`limits`] — the cluster-wide upload rate limit

pub mod admission;
pub mod attempt;
pub mod cache;
pub mod control;
pub mod finish;
pub mod limits;
pub mod submit;

use uuid::Uuid;

use crate::arq::{now_ms, JobDef, PyValue};

pub use finish::{
    arq_finish, arq_retry, backoff, fail_without_actor, max_tries_exceeded, record_failure, restore_expired,
};

/// The function name doculearn's workers run.
pub const PROCESS_DOCUMENT: &str = "process_document";
/// The function a re-embed runs: the document's own job again, embedding
/// its stored chunks with the configured model (see [`crate::reembed`]).
pub const REEMBED_DOCUMENT: &str = "reembed_document";
/// A function that does nothing (returns None); a probe, when `queue.enable_noop`.
pub const NOOP: &str = "noop";
/// The reason a cancelled job ends with.
pub const CANCELLED: &str = "cancelled";

/// The job dict doculearn enqueues for one of its own documents: `function`
/// is the job row's (`process_document` or `reembed_document`).
pub fn job_def(function: &str, document_id: Uuid, user: Uuid) -> JobDef {
    JobDef {
        job_try: None,
        function: function.into(),
        args: vec![PyValue::Str(document_id.to_string()), PyValue::Str(user.to_string())],
        kwargs: vec![],
        enqueue_time_ms: now_ms(),
    }
}
