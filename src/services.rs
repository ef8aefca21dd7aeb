//! What every actor and handler shares, built once at start-up: settings,
//! the Postgres pool, the Redis connection and queue, the progress publisher,
//! the embedder, and the extraction sandbox.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use sqlx::PgPool;

use crate::arq::ArqQueue;
use crate::config::Settings;
use crate::domain::Stage;
use crate::events::EventSink;
use crate::pipeline::embed::Embedder;
use crate::pipeline::extract::budget::MemoryBudget;
use crate::pipeline::extract::{Limits, Sandbox};

pub struct Services {
    pub settings: Settings,
    pub db: PgPool,
    /// A small pool of its own for socket `resume`s, so replaying history to
    /// many reconnecting sockets never starves progress writes.
    pub history_db: PgPool,
    pub redis: ConnectionManager,
    pub queue: ArqQueue,
    /// Records, publishes and moves batches: every event leaves through it.
    pub events: EventSink,
    pub embedder: Arc<dyn Embedder>,
    /// `embedding_models.id` of the configured model.
    pub model_id: i32,
    /// Earlier models that still answer queries for documents not yet
    /// re-embedded (see `crate::reembed`).
    pub previous_embedders: crate::reembed::PreviousEmbedders,
    /// `embedding_engines.id` of what computes its vectors here.
    pub engine_id: i32,
    /// `None`: extract in-process (tests of the stage itself, benchmarks).
    pub sandbox: Option<Sandbox>,
    pub limits: Limits,
    /// Memory shared by the extractions this process runs at once.
    pub extract_budget: MemoryBudget,
    /// Pages OCR'd at once in this process (`pipeline.ocr_concurrency`).
    pub ocr_slots: Arc<tokio::sync::Semaphore>,
    pub faults: Faults,
    pub stats: Stats,
    /// Background work that must finish before the process exits (hand-backs,
    /// final writes, releases of held jobs): shutdown waits for it.
    pub tasks: tokio_util::task::TaskTracker,
    /// This very value, for tasks spawned from code that only has `&Services`.
    pub me: std::sync::Weak<Services>,
}

/// Job outcome counters of this process (arq's health-check line shows them).
#[derive(Default)]
pub struct Stats {
    pub complete: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
    pub retried: std::sync::atomic::AtomicU64,
}

impl Services {
    /// An owning handle on these services (for spawned tasks).
    pub fn myself(&self) -> Option<Arc<Services>> {
        self.me.upgrade()
    }

    pub fn model_ids(&self) -> crate::pipeline::store::ModelIds {
        crate::pipeline::store::ModelIds {
            model_id: self.model_id,
            engine_id: self.engine_id,
        }
    }

    /// The embedding provider's name, as metrics label it.
    pub fn provider_label(&self) -> &'static str {
        match self.settings.embedding.provider {
            crate::config::Provider::Local => "local",
            crate::config::Provider::Openai => "openai",
            crate::config::Provider::Ollama => "ollama",
            crate::config::Provider::Hash => "hash",
        }
    }

    pub fn min_event_interval(&self) -> Duration {
        Duration::from_millis(self.settings.progress.min_event_interval_ms)
    }
}

/// Test-only fault injection (`[faults]` in config): panic inside a stage a
/// limited number of times per process.
pub struct Faults {
    panic_in: Option<Stage>,
    remaining: AtomicU32,
    hang_in: Option<Stage>,
    hang: Duration,
    /// Hangs left (`u32::MAX`: unlimited).
    hangs_left: AtomicU32,
    freeze_supervisor_after: Option<Duration>,
    fail_upload_at_file: usize,
    upload_failures_left: AtomicU32,
}

impl Faults {
    pub fn from_settings(settings: &Settings) -> Self {
        Faults {
            panic_in: Stage::parse(&settings.faults.panic_in_stage),
            remaining: AtomicU32::new(settings.faults.panic_times),
            hang_in: Stage::parse(&settings.faults.hang_in_stage),
            hang: Duration::from_secs(settings.faults.hang_secs),
            hangs_left: AtomicU32::new(match settings.faults.hang_times {
                0 => u32::MAX,
                n => n,
            }),
            freeze_supervisor_after: (settings.faults.freeze_supervisor_after_secs > 0)
                .then(|| Duration::from_secs(settings.faults.freeze_supervisor_after_secs)),
            fail_upload_at_file: settings.faults.fail_upload_at_file,
            upload_failures_left: AtomicU32::new(settings.faults.fail_upload_times),
        }
    }

    /// Whether storing file `k` (1-based) of an upload should fail now.
    pub fn fail_upload_at(&self, k: usize) -> bool {
        k == self.fail_upload_at_file
            && self
                .upload_failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }

    /// When the supervisor should stop handling messages (a frozen tree, for liveness tests).
    pub fn freeze_supervisor_after(&self) -> Option<Duration> {
        self.freeze_supervisor_after
    }

    /// Sleeps when configured to hang in this stage (a stuck stage, for
    /// tests); called where a stage opens, after its first event.
    pub async fn inside(&self, stage: Stage, job_id: &str) {
        if self.hang_in == Some(stage) && !self.hang.is_zero() {
            let took = self
                .hangs_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                    u32::MAX => Some(n),
                    0 => None,
                    n => Some(n - 1),
                })
                .is_ok();
            if !took {
                return;
            }
            tracing::warn!(job_id, %stage, secs = self.hang.as_secs(), "injected fault: hanging");
            tokio::time::sleep(self.hang).await;
        }
    }

    /// Panics when configured to for this stage and the budget is not spent;
    /// called where a stage opens, before its first event.
    pub fn entering(&self, stage: Stage, job_id: &str) {
        if self.panic_in != Some(stage) {
            return;
        }
        let took = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if took {
            panic!("injected fault: panic in {stage} of {job_id}");
        }
    }
}
