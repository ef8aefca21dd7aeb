//! all-MiniLM-L6-v2 (sentence-transformers) on the CPU: a 6-layer, 384-wide
//! BERT encoder run with candle, followed by attention-masked mean pooling
//! and L2 normalisation, as the model card prescribes. Loads from a
//! directory holding `model.safetensors`, `tokenizer.json` and `config.json`
//! (no network, no hub); `scripts/install-model.sh` puts them there.
//!
//! The encoder is written here over candle-core/candle-nn rather than taken
//! from candle-transformers: it is ~100 lines, keeps the build small, and
//! lets inference pad each sub-batch only to its own longest input.

mod bert;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

pub use bert::Config;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} is missing (run scripts/install-model.sh)")]
    Missing { path: String },
    #[error("cannot read {path}: {reason}")]
    BadFile { path: String, reason: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("inference: {0}")]
    Inference(#[from] candle_core::Error),
}

/// The loaded model. `Send + Sync`: share one instance behind an `Arc`.
pub struct MiniLm {
    model: bert::Bert,
    tokenizer: Tokenizer,
    device: Device,
    dimension: usize,
    /// Inputs per forward pass (inputs are sorted by length first, so a
    /// sub-batch pads only to its own longest member).
    sub_batch: usize,
}

const MODEL_NAME: &str = "sentence-transformers/all-MiniLM-L6-v2";

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    if !path.exists() {
        return Err(Error::Missing {
            path: path.display().to_string(),
        });
    }
    std::fs::read(path).map_err(|e| Error::BadFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

impl MiniLm {
    /// Loads from a directory holding model.safetensors, tokenizer.json, config.json.
    /// Inputs longer than `max_seq_len` tokens (the model's own limit is 256) are truncated.
    pub fn load(dir: &Path, max_seq_len: usize) -> Result<Self, Error> {
        let device = Device::Cpu;
        let config_path = dir.join("config.json");
        let config: Config = serde_json::from_slice(&read(&config_path)?).map_err(|e| Error::BadFile {
            path: config_path.display().to_string(),
            reason: e.to_string(),
        })?;
        let weights_path = dir.join("model.safetensors");
        let weights = read(&weights_path)?;
        let tensors = candle_core::safetensors::load_buffer(&weights, &device).map_err(|e| Error::BadFile {
            path: weights_path.display().to_string(),
            reason: e.to_string(),
        })?;
        let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model = bert::Bert::load(vb, &config).map_err(|e| Error::BadFile {
            path: weights_path.display().to_string(),
            reason: e.to_string(),
        })?;
        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_bytes(read(&tokenizer_path)?).map_err(|e| Error::BadFile {
            path: tokenizer_path.display().to_string(),
            reason: e.to_string(),
        })?;
        let max_len = max_seq_len.clamp(8, config.max_position_embeddings);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        // We pad per sub-batch ourselves.
        tokenizer.with_padding(None);
        Ok(MiniLm {
            dimension: config.hidden_size,
            model,
            tokenizer,
            device,
            sub_batch: 8,
        })
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    pub fn model_name(&self) -> &str {
        MODEL_NAME
    }

    /// Sets how many inputs one forward pass carries (default 8: fastest on 2 cores here).
    pub fn set_sub_batch(&mut self, n: usize) {
        self.sub_batch = n.max(1);
    }

    /// One L2-normalised vector per text, in order. Blocking and CPU-bound.
    /// An empty text embeds as `[CLS] [SEP]` (a valid, normalised vector).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for group in order.chunks(self.sub_batch) {
            let len = group.iter().map(|&i| encodings[i].get_ids().len()).max().unwrap_or(2);
            let mut ids = Vec::with_capacity(group.len() * len);
            let mut mask = Vec::with_capacity(group.len() * len);
            for &i in group {
                let e = encodings[i].get_ids();
                ids.extend(e.iter().copied());
                ids.extend(std::iter::repeat_n(0u32, len - e.len()));
                mask.extend(std::iter::repeat_n(1f32, e.len()));
                mask.extend(std::iter::repeat_n(0f32, len - e.len()));
            }
            let ids = Tensor::from_vec(ids, (group.len(), len), &self.device)?;
            let mask = Tensor::from_vec(mask, (group.len(), len), &self.device)?;
            let hidden = self.model.forward(&ids, &mask)?; // [b, len, dim]
                                                           // Mean over real tokens, then L2 normalise.
            let m = mask.unsqueeze(2)?; // [b, len, 1]
            let summed = hidden.broadcast_mul(&m)?.sum(1)?; // [b, dim]
            let counts = m.sum(1)?.clamp(1e-9, f32::MAX)?; // [b, 1]
            let mean = summed.broadcast_div(&counts)?;
            let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
            let normed = mean.broadcast_div(&norm)?;
            for (row, &i) in normed.to_vec2::<f32>()?.into_iter().zip(group) {
                out[i] = row;
            }
        }
        Ok(out)
    }
}
