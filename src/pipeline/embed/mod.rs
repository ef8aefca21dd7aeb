//! The embedding stage behind one trait, with its providers: `local`
//! (all-MiniLM-L6-v2 on the CPU; the default, no key and no network),
//! `openai` and `ollama` (OpenAI-compatible APIs through async-openai), and
//! `hash` (instant feature hashing for tests and benchmarks; not semantic).

mod hash;
mod local;
mod remote;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::config::{Provider, Settings};

pub use hash::HashEmbedder;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// Worth retrying later: timeouts, 5xx, 429, connection refused.
    #[error("{reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Retrying will not help: bad key, unknown model, wrong dimension.
    #[error("{0}")]
    Permanent(String),
}

/// Turns texts into vectors of one fixed dimension.
#[async_trait::async_trait]
pub trait Embedder: Send + Sync {
    /// Model name stored with every vector.
    fn model(&self) -> &str;
    /// What computed the vectors and at which precision, e.g.
    /// "openvino-2026.4.1/bf16"; recorded with every vector.
    fn engine(&self) -> &str;
    fn dimension(&self) -> usize;
    /// How many texts one `embed` call should carry.
    fn batch_size(&self) -> usize;
    /// One vector per text, in order. For a single short request (a search query).
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// A document's batch. An embedder that queues work (the local pool)
    /// queues it before returning, so a caller can submit its next batch
    /// while awaiting this one; by default nothing happens until awaited.
    fn submit(self: Arc<Self>, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, EmbedError>>
    where
        Self: 'static,
    {
        Box::pin(async move { self.embed(&texts).await })
    }
}

/// Builds the configured provider. Fails (with a line naming the setting)
/// when the local model's files are missing.
pub fn build(settings: &Settings) -> anyhow::Result<Arc<dyn Embedder>> {
    let e = &settings.embedding;
    let model = settings.embedding_model();
    Ok(match e.provider {
        Provider::Hash => Arc::new(HashEmbedder::new(
            model,
            if e.dimension == 0 { 384 } else { e.dimension },
            e.batch_size,
        )),
        Provider::Local => {
            let started = std::time::Instant::now();
            let (embedder, report) = local::LocalEmbedder::load(e, model)?;
            if let Some(reason) = &report.fallback {
                // The one line an operator needs when the fast path is off.
                tracing::warn!(engine = %report.engine, "local model: {reason}; embedding with {} instead", report.engine);
            }
            tracing::info!(
                engine = %report.engine,
                lanes = report.lanes,
                load_ms = started.elapsed().as_millis() as u64,
                "local model ready"
            );
            Arc::new(embedder)
        }
        Provider::Openai | Provider::Ollama => Arc::new(remote::RemoteEmbedder::new(settings, model)?),
    })
}

/// Checks a provider's answer before anything is stored.
pub(crate) fn check_vectors(vectors: &[Vec<f32>], expected: usize, dimension: usize) -> Result<(), EmbedError> {
    if vectors.len() != expected {
        return Err(EmbedError::Permanent(format!(
            "the embedding provider returned {} vectors for {expected} texts",
            vectors.len()
        )));
    }
    if let Some(v) = vectors.iter().find(|v| v.len() != dimension) {
        return Err(EmbedError::Permanent(format!(
            "the embedding provider returned {}-dimensional vectors; embedding.dimension is {dimension}",
            v.len()
        )));
    }
    if vectors.iter().flatten().any(|x| !x.is_finite()) {
        return Err(EmbedError::Permanent(
            "the embedding provider returned NaN or infinite values".into(),
        ));
    }
    Ok(())
}
