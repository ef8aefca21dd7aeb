//! Typed settings and their loading: `config/default.toml` (compiled in) <
//! `--config FILE` < `DOCULEARN_*` environment variables. Any unknown, missing
//! or invalid setting becomes one [`ConfigError`] line naming the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use uuid::Uuid;

/// The defaults, compiled into the binary so it runs from any directory.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub websocket: WebSocketSettings,
    pub log: LogSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub queue: QueueSettings,
    pub progress: ProgressSettings,
    pub watchdog: WatchdogSettings,
    pub auth: AuthSettings,
    pub pipeline: PipelineSettings,
    pub embedding: EmbeddingSettings,
    pub reembed: ReembedSettings,
    pub indexing: IndexingSettings,
    pub faults: FaultSettings,
}

/// Re-embedding after a change of `embedding` settings (see `crate::reembed`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReembedSettings {
    /// Queue the re-embed of every document on another model at start-up.
    pub on_start: bool,
    /// How to reach the model documents were embedded with before, to
    /// answer queries with until the switch: "" guesses from its name (the
    /// local model and the feature hash need nothing; a remote model is
    /// assumed to be on the configured provider).
    pub previous_provider: String,
    pub previous_base_url: String,
    pub previous_api_key: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexingSettings {
    pub interval_ms: u64,
    pub batch_rows: u32,
    pub max_pending_rows: u32,
    pub max_delay_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    pub max_upload_bytes: u64,
    pub max_request_bytes: u64,
    pub dev_mode: bool,
    /// The user `/dev/token` mints for in dev mode.
    pub dev_user_id: Uuid,
    pub uploads_per_minute: u32,
    pub allowed_origins: Vec<String>,
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSettings {
    pub max_sockets_per_user: usize,
    /// Lifetime of a socket's lease in Redis (the cluster-wide limit).
    pub socket_lease_secs: u64,
    pub max_message_bytes: usize,
    pub max_messages_per_sec: u32,
    pub max_events_per_job_per_sec: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    ES256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub filter: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    pub create_if_missing: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: SecretString,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Serializer {
    Pickle,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    pub name: String,
    pub serializer: Serializer,
    pub job_expires_secs: u64,
    pub max_jobs: usize,
    pub fair_share: bool,
    pub per_user_active_jobs: u32,
    /// Fair-share weights by user id (a user not named weighs 1).
    pub user_weights: std::collections::HashMap<String, f64>,
    pub poll_interval_ms: u64,
    pub job_timeout_secs: u64,
    pub lease_secs: u64,
    pub max_tries: u32,
    pub keep_result_secs: u64,
    pub health_check_interval_secs: u64,
    pub shutdown_grace_secs: u64,
    pub enable_noop: bool,
}

impl QueueSettings {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
    pub fn job_timeout(&self) -> Duration {
        Duration::from_secs(self.job_timeout_secs)
    }
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressSettings {
    pub channel: String,
    pub min_event_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogSettings {
    pub interval_secs: u64,
    pub reconcile_after_secs: u64,
    pub downloading_secs: u64,
    pub extracting_secs: u64,
    pub chunking_secs: u64,
    pub embedding_secs: u64,
    pub storing_secs: u64,
}

impl WatchdogSettings {
    /// The budget of a running stage (`None` for stages that are not running).
    pub fn budget(&self, stage: crate::domain::Stage) -> Option<Duration> {
        use crate::domain::Stage;
        let secs = match stage {
            Stage::Downloading => self.downloading_secs,
            Stage::Extracting => self.extracting_secs,
            Stage::Chunking => self.chunking_secs,
            Stage::Embedding => self.embedding_secs,
            Stage::Storing => self.storing_secs,
            _ => return None,
        };
        Some(Duration::from_secs(secs))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub algorithm: JwtAlgorithm,
    pub jwt_secret: SecretString,
    pub public_key_file: PathBuf,
    pub private_key_file: PathBuf,
    pub issuer: String,
    pub audience: String,
    pub token_ttl_secs: u64,
    pub service_token: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSettings {
    pub chunk_size: usize,
    pub chunk_overlap: usize,
    pub extract_in_subprocess: bool,
    pub extract_memory_mb: u64,
    pub extract_memory_budget_mb: u64,
    pub extract_timeout_secs: u64,
    pub max_pdf_pages: usize,
    pub max_decompressed_mb: u64,
    pub max_stream_mb: u64,
    pub max_pdf_objects: usize,
    pub max_nesting_depth: usize,
    pub max_text_chars: usize,
    /// OCR of pages without a text layer and of images (Tesseract).
    pub ocr: bool,
    pub ocr_languages: String,
    pub ocr_dpi: u32,
    pub ocr_page_timeout_secs: u64,
    pub ocr_max_pages: usize,
    pub ocr_memory_mb: u64,
    pub ocr_concurrency: usize,
    pub download_timeout_secs: u64,
    pub max_download_bytes: u64,
    pub url_allow_private: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Local,
    Openai,
    Ollama,
    Hash,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingSettings {
    pub provider: Provider,
    pub model: String,
    pub dimension: usize,
    pub batch_size: usize,
    pub base_url: String,
    pub api_key: SecretString,
    pub request_timeout_secs: u64,
    pub max_retries: u32,
    pub model_dir: PathBuf,
    pub max_seq_len: usize,
    pub engine: LocalEngine,
    pub precision: LocalPrecision,
    pub openvino_dir: PathBuf,
    pub threads: usize,
    pub queue_capacity: usize,
}

/// What runs the local model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalEngine {
    /// OpenVINO when its runtime loads, else candle (said at start-up).
    Auto,
    Openvino,
    Candle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalPrecision {
    Bf16,
    F32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSettings {
    pub panic_in_stage: String,
    pub panic_times: u32,
    pub hang_in_stage: String,
    pub hang_secs: u64,
    pub hang_times: u32,
    pub freeze_supervisor_after_secs: u64,
    pub fail_upload_at_file: usize,
    pub fail_upload_times: u32,
}

/// A setting that stops start-up. `Display` is the one line an operator reads.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("config: setting `{setting}`: {reason}")]
    Setting { setting: String, reason: String },
}

fn invalid(setting: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Setting {
        setting: setting.to_string(),
        reason: reason.into(),
    }
}

/// Environment variables with our prefix that belong to scripts and tests, not
/// to the daemon (`ingest` reads DOCULEARN_SERVER and DOCULEARN_TOKEN); they
/// are ignored rather than reported as unknown settings.
const SCRIPT_ONLY_ENV: &[&str] = &[
    "corpus",
    "model_dir",
    "openvino_dir",
    "data_dir",
    "test_log",
    "server",
    "token",
];

impl Settings {
    /// Loads defaults < optional file < environment, then validates.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_from(file, Env::prefixed("DOCULEARN_"))
    }

    /// The address a client (`ingest`, `search`) talks to when no
    /// `--server` is given: `http.listen` from the same layers as the
    /// daemon's settings, without reading or checking anything else (a
    /// client has no database URL or JWT secret, and needs none).
    pub fn client_listen(file: Option<&Path>) -> Result<String, ConfigError> {
        let figment = Self::layers(file, Env::prefixed("DOCULEARN_"))?;
        figment
            .extract_inner::<String>("http.listen")
            .map_err(|e| invalid("http.listen", e.to_string()))
    }

    fn layers(file: Option<&Path>, env: Env) -> Result<Figment, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            figment = figment.merge(Toml::string(&text));
        }
        let env = env.ignore(SCRIPT_ONLY_ENV).map(|key| {
            let key = key.as_str().to_ascii_lowercase();
            match key.as_str() {
                "database_url" => "database.url".into(),
                "redis_url" => "redis.url".into(),
                _ => key.replace("__", ".").into(),
            }
        });
        Ok(figment.merge(env))
    }

    fn load_from(file: Option<&Path>, env: Env) -> Result<Settings, ConfigError> {
        let figment = Self::layers(file, env)?;
        let settings: Settings = figment.extract().map_err(|e| {
            // figment reports the first error with the path to the offending key.
            let mut path = e.path.join(".");
            let reason = match &e.kind {
                figment::error::Kind::UnknownField(field, _) => {
                    if !path.ends_with(field.as_str()) {
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(field);
                    }
                    "unknown setting (check the spelling against config/default.toml)".to_string()
                }
                figment::error::Kind::MissingField(field) => {
                    if !path.ends_with(field.as_ref()) {
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(field);
                    }
                    "missing".to_string()
                }
                other => other.to_string(),
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            invalid(&path, format!("{reason}{source}"))
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks that values make sense together; names the first bad setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.auth.algorithm {
            JwtAlgorithm::HS256 if self.auth.jwt_secret.expose_secret().len() < 32 => {
                return Err(invalid(
                    "auth.jwt_secret",
                    "must be set to at least 32 characters (DOCULEARN_AUTH__JWT_SECRET); scripts/dev.sh generates one",
                ));
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 if self.auth.public_key_file.as_os_str().is_empty() => {
                return Err(invalid(
                    "auth.public_key_file",
                    "must name a PEM public key for RS256/ES256",
                ));
            }
            _ => {}
        }
        if self.http.dev_mode && !self.http.listen.ip().is_loopback() {
            return Err(invalid(
                "http.dev_mode",
                "hands out tokens without a password, so it is allowed only on a loopback http.listen address",
            ));
        }
        for p in &self.http.trusted_proxies {
            if crate::cidr::Cidr::parse(p).is_none() {
                return Err(invalid(
                    "http.trusted_proxies",
                    format!("“{p}” is not an address or CIDR range"),
                ));
            }
        }
        if !(1..=3600).contains(&self.websocket.socket_lease_secs) {
            return Err(invalid("websocket.socket_lease_secs", "must be between 1 and 3600"));
        }
        if self.websocket.max_sockets_per_user == 0 {
            return Err(invalid("websocket.max_sockets_per_user", "must be at least 1"));
        }
        if self.websocket.max_message_bytes < 64 {
            return Err(invalid("websocket.max_message_bytes", "must be at least 64"));
        }
        if self.websocket.max_messages_per_sec == 0 || self.websocket.max_events_per_job_per_sec == 0 {
            return Err(invalid(
                "websocket",
                "message and event rates must be at least 1 per second",
            ));
        }
        let db = self.database.url.expose_secret();
        if !(db.starts_with("postgres://") || db.starts_with("postgresql://")) {
            return Err(invalid("database.url", "must be a postgres:// URL"));
        }
        let redis = self.redis.url.expose_secret();
        if !(redis.starts_with("redis://") || redis.starts_with("rediss://")) {
            return Err(invalid("redis.url", "must be a redis:// URL"));
        }
        if self.queue.name.trim().is_empty() {
            return Err(invalid("queue.name", "must not be empty"));
        }
        if self.queue.max_jobs == 0 {
            return Err(invalid("queue.max_jobs", "must be at least 1"));
        }
        if self.queue.max_tries == 0 {
            return Err(invalid("queue.max_tries", "must be at least 1"));
        }
        if self.queue.lease_secs < 3 {
            return Err(invalid("queue.lease_secs", "must be at least 3"));
        }
        if self.queue.poll_interval_ms == 0 {
            return Err(invalid("queue.poll_interval_ms", "must be at least 1"));
        }
        if self.pipeline.chunk_size < 50 {
            return Err(invalid("pipeline.chunk_size", "must be at least 50"));
        }
        if self.pipeline.chunk_overlap >= self.pipeline.chunk_size {
            return Err(invalid(
                "pipeline.chunk_overlap",
                "must be smaller than pipeline.chunk_size",
            ));
        }
        if self.embedding.batch_size == 0 || self.embedding.batch_size > 2048 {
            return Err(invalid("embedding.batch_size", "must be between 1 and 2048"));
        }
        match self.embedding.provider {
            Provider::Openai if self.embedding.api_key.expose_secret().is_empty() => {
                return Err(invalid(
                    "embedding.api_key",
                    "must be set when embedding.provider is \"openai\"",
                ));
            }
            Provider::Local if self.embedding.max_seq_len == 0 || self.embedding.max_seq_len > 512 => {
                return Err(invalid("embedding.max_seq_len", "must be between 1 and 512"));
            }
            Provider::Local if self.embedding.queue_capacity < self.embedding.batch_size => {
                return Err(invalid(
                    "embedding.queue_capacity",
                    "must be at least embedding.batch_size",
                ));
            }
            Provider::Local if self.embedding.threads > 1024 => {
                return Err(invalid("embedding.threads", "must be between 0 (every core) and 1024"));
            }
            _ => {}
        }
        for (user, w) in &self.queue.user_weights {
            if Uuid::parse_str(user).is_err() {
                return Err(invalid(
                    "queue.user_weights",
                    format!("“{user}” is not a user id (UUID)"),
                ));
            }
            if !(0.01..=1000.0).contains(w) {
                return Err(invalid(
                    "queue.user_weights",
                    format!("the weight of {user} must be between 0.01 and 1000"),
                ));
            }
        }
        if !["", "local", "openai", "ollama", "hash"].contains(&self.reembed.previous_provider.as_str()) {
            return Err(invalid(
                "reembed.previous_provider",
                "must be \"\" (guess from the model's name), \"local\", \"openai\", \"ollama\" or \"hash\"",
            ));
        }
        for (setting, value) in [
            ("faults.panic_in_stage", &self.faults.panic_in_stage),
            ("faults.hang_in_stage", &self.faults.hang_in_stage),
        ] {
            if !value.is_empty()
                && !["downloading", "extracting", "chunking", "embedding", "storing"].contains(&value.as_str())
            {
                return Err(invalid(
                    setting,
                    "must be one of downloading, extracting, chunking, embedding, storing",
                ));
            }
        }
        if self.indexing.interval_ms == 0 || self.indexing.batch_rows == 0 {
            return Err(invalid("indexing", "interval_ms and batch_rows must be at least 1"));
        }
        if self.watchdog.interval_secs == 0 {
            return Err(invalid("watchdog.interval_secs", "must be at least 1"));
        }
        let service = self.auth.service_token.expose_secret();
        if !service.is_empty() && service.len() < 32 {
            return Err(invalid(
                "auth.service_token",
                "must be at least 32 characters (or empty to disable)",
            ));
        }
        Ok(())
    }

    /// Effective model name for the configured provider.
    pub fn embedding_model(&self) -> String {
        if !self.embedding.model.is_empty() {
            return self.embedding.model.clone();
        }
        match self.embedding.provider {
            Provider::Local => "sentence-transformers/all-MiniLM-L6-v2".into(),
            Provider::Openai => "text-embedding-3-small".into(),
            Provider::Ollama => "nomic-embed-text".into(),
            Provider::Hash => "doculearn/feature-hash".into(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment's large error
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn defaults_need_a_secret_and_say_which_setting() {
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            out = Some(Settings::load(None).unwrap_err().to_string());
            Ok(())
        });
        let line = out.unwrap();
        assert!(line.contains("`auth.jwt_secret`"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn env_overrides_and_names_bad_values() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("DOCULEARN_AUTH__JWT_SECRET", SECRET);
            jail.set_env("DOCULEARN_DATABASE_URL", "postgres://x@127.0.0.1/y");
            jail.set_env("DOCULEARN_QUEUE__MAX_JOBS", "7");
            let s = Settings::load(None).expect("valid");
            assert_eq!(s.queue.max_jobs, 7);
            assert_eq!(s.database.url.expose_secret(), "postgres://x@127.0.0.1/y");

            jail.set_env("DOCULEARN_QUEUE__MAX_JOBS", "many");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("`queue.max_jobs`"), "{err}");

            jail.set_env("DOCULEARN_QUEUE__MAX_JOBS", "2");
            jail.set_env("DOCULEARN_QUEUE__MAX_JOBZ", "2");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("`queue.max_jobz`"), "{err}");
            assert!(err.contains("unknown setting"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn file_layer_sits_between_defaults_and_env() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "over.toml",
                &format!("[auth]\njwt_secret = \"{SECRET}\"\n[pipeline]\nchunk_size = 500\nchunk_overlap = 100\n"),
            )?;
            let s = Settings::load(Some(Path::new("over.toml"))).expect("valid");
            assert_eq!(s.pipeline.chunk_size, 500);
            jail.set_env("DOCULEARN_PIPELINE__CHUNK_OVERLAP", "600");
            let err = Settings::load(Some(Path::new("over.toml"))).unwrap_err().to_string();
            assert!(err.contains("`pipeline.chunk_overlap`"), "{err}");
            let err = Settings::load(Some(Path::new("missing.toml"))).unwrap_err().to_string();
            assert!(err.contains("missing.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn wrong_enum_value_is_named() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("DOCULEARN_AUTH__JWT_SECRET", SECRET);
            jail.set_env("DOCULEARN_EMBEDDING__PROVIDER", "gpt");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("`embedding.provider`"), "{err}");
            Ok(())
        });
    }
}
