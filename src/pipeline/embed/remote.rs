//! OpenAI and Ollama (OpenAI-compatible `/v1/embeddings`) through
//! async-openai, with our own timeout and error classification: 429, 5xx,
//! timeouts and refused connections are transient; a rejected key, an unknown
//! model or a malformed answer is permanent.

use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::embeddings::{CreateEmbeddingRequest, EmbeddingInput};
use async_openai::Client;
use secrecy::ExposeSecret;

use super::{check_vectors, EmbedError, Embedder};
use crate::config::{Provider, Settings};

pub struct RemoteEmbedder {
    client: Client<OpenAIConfig>,
    /// "openai-api" or "ollama-api": the provider computed the vectors.
    engine: &'static str,
    model: String,
    dimension: usize,
    batch_size: usize,
    /// Only OpenAI's text-embedding-3 models accept a `dimensions` parameter.
    send_dimensions: bool,
}

impl RemoteEmbedder {
    pub fn new(settings: &Settings, model: String) -> anyhow::Result<Self> {
        let e = &settings.embedding;
        let (default_base, default_dim) = match e.provider {
            Provider::Openai => ("https://api.openai.com/v1", 1536),
            _ => ("http://127.0.0.1:11434/v1", 768),
        };
        let base = if e.base_url.is_empty() {
            default_base
        } else {
            e.base_url.as_str()
        };
        let key = e.api_key.expose_secret();
        // Ollama ignores the key but async-openai sends the header; any value works.
        let key = if key.is_empty() { "ollama" } else { key };
        let config = OpenAIConfig::new().with_api_base(base).with_api_key(key);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(e.request_timeout_secs))
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(RemoteEmbedder {
            client: Client::build(http, config),
            engine: if e.provider == Provider::Openai {
                "openai-api"
            } else {
                "ollama-api"
            },
            send_dimensions: e.provider == Provider::Openai
                && e.dimension != 0
                && model.starts_with("text-embedding-3"),
            model,
            dimension: if e.dimension == 0 { default_dim } else { e.dimension },
            batch_size: e.batch_size,
        })
    }
}

fn classify(e: OpenAIError) -> EmbedError {
    match e {
        OpenAIError::ApiError(resp) => {
            let status = resp.status_code.as_u16();
            let msg = resp.api_error.message.clone();
            if status == 429 || status >= 500 || status == 408 {
                EmbedError::Transient {
                    reason: format!("the embedding provider is busy or unavailable (HTTP {status})"),
                    retry_after: None,
                }
            } else if status == 401 || status == 403 {
                EmbedError::Permanent(format!("the embedding provider rejected the API key (HTTP {status})"))
            } else {
                EmbedError::Permanent(format!(
                    "the embedding provider refused the request (HTTP {status}): {msg}"
                ))
            }
        }
        OpenAIError::Reqwest(e) => EmbedError::Transient {
            reason: if e.is_timeout() {
                "the embedding provider did not answer in time".into()
            } else {
                "the embedding provider cannot be reached".into()
            },
            retry_after: None,
        },
        OpenAIError::JSONDeserialize(..) => {
            EmbedError::Permanent("the embedding provider sent an answer we cannot read".into())
        }
        other => EmbedError::Permanent(format!("embedding request failed: {other}")),
    }
}

#[async_trait::async_trait]
impl Embedder for RemoteEmbedder {
    fn model(&self) -> &str {
        &self.model
    }
    fn engine(&self) -> &str {
        self.engine
    }
    fn dimension(&self) -> usize {
        self.dimension
    }
    fn batch_size(&self) -> usize {
        self.batch_size
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        // The API rejects empty strings; a lone space embeds as "nothing".
        let input: Vec<String> = texts
            .iter()
            .map(|t| {
                if t.trim().is_empty() {
                    " ".to_string()
                } else {
                    t.clone()
                }
            })
            .collect();
        let request = CreateEmbeddingRequest {
            model: self.model.clone(),
            input: EmbeddingInput::StringArray(input),
            encoding_format: None,
            user: None,
            dimensions: self.send_dimensions.then_some(self.dimension as u32),
        };
        let response = self.client.embeddings().create(request).await.map_err(classify)?;
        let mut data = response.data;
        data.sort_by_key(|d| d.index);
        let vectors: Vec<Vec<f32>> = data.into_iter().map(|d| d.embedding).collect();
        check_vectors(&vectors, texts.len(), self.dimension)?;
        Ok(vectors)
    }
}
