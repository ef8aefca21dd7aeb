//! The default provider: sentence-transformers/all-MiniLM-L6-v2 run by
//! candle on the CPU (crate `minilm`), from files `scripts/install-model.sh`
//! installed. No key, no network. Inference is CPU-bound and already uses
//! every core, so one batch runs at a time on a blocking thread.

use std::sync::Arc;

use super::{check_vectors, EmbedError, Embedder};
use crate::config::EmbeddingSettings;

pub struct LocalEmbedder {
    model: Arc<minilm::MiniLm>,
    name: String,
    batch_size: usize,
    /// One inference at a time: two would only fight over the same cores.
    gate: tokio::sync::Semaphore,
}

impl LocalEmbedder {
    pub fn load(settings: &EmbeddingSettings, name: String) -> anyhow::Result<Self> {
        let dir = &settings.model_dir;
        let model = minilm::MiniLm::load(dir, settings.max_seq_len).map_err(|e| {
            anyhow::anyhow!(
                "config: setting `embedding.model_dir`: cannot load the local model from {}: {e} (run scripts/install-model.sh)",
                dir.display()
            )
        })?;
        if settings.dimension != 0 && settings.dimension != model.dimension() {
            anyhow::bail!(
                "config: setting `embedding.dimension`: the local model has {} dimensions, not {}",
                model.dimension(),
                settings.dimension
            );
        }
        Ok(LocalEmbedder {
            model: Arc::new(model),
            name,
            batch_size: settings.batch_size,
            gate: tokio::sync::Semaphore::new(1),
        })
    }
}

#[async_trait::async_trait]
impl Embedder for LocalEmbedder {
    fn model(&self) -> &str {
        &self.name
    }
    fn dimension(&self) -> usize {
        self.model.dimension()
    }
    fn batch_size(&self) -> usize {
        self.batch_size
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let _permit = self
            .gate
            .acquire()
            .await
            .map_err(|_| EmbedError::Permanent("the local model was shut down".into()))?;
        let model = self.model.clone();
        let owned = texts.to_vec();
        let vectors = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
            model.embed(&refs)
        })
        .await
        .map_err(|e| {
            if e.is_panic() {
                // Let the document actor's supervisor see the panic like any other.
                std::panic::resume_unwind(e.into_panic());
            }
            EmbedError::Permanent("the local model was stopped".into())
        })?
        .map_err(|e| EmbedError::Permanent(format!("the local model failed: {e}")))?;
        check_vectors(&vectors, texts.len(), self.model.dimension())?;
        Ok(vectors)
    }
}
