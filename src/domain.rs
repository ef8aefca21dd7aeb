//! The words every layer shares: job ids, stages, and the progress event that
//! travels unchanged through Postgres, Redis pub/sub and the WebSocket.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The arq job id of a document's processing: `doc:{document_id}`.
pub fn job_id_for(document_id: Uuid) -> String {
    format!("doc:{document_id}")
}

/// Reads the document id back out of a `doc:{uuid}` job id.
pub fn document_id_of(job_id: &str) -> Option<Uuid> {
    job_id.strip_prefix("doc:").and_then(|s| Uuid::parse_str(s).ok())
}

/// Where a job is. Order matters: the UI ticks stages up to the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Queued,
    Downloading,
    Extracting,
    Chunking,
    Embedding,
    Storing,
    Completed,
    Failed,
    BatchProcessing,
}

impl Stage {
    pub const PIPELINE: [Stage; 5] = [
        Stage::Downloading,
        Stage::Extracting,
        Stage::Chunking,
        Stage::Embedding,
        Stage::Storing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Queued => "queued",
            Stage::Downloading => "downloading",
            Stage::Extracting => "extracting",
            Stage::Chunking => "chunking",
            Stage::Embedding => "embedding",
            Stage::Storing => "storing",
            Stage::Completed => "completed",
            Stage::Failed => "failed",
            Stage::BatchProcessing => "batch_processing",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        Some(match s {
            "queued" => Stage::Queued,
            "downloading" => Stage::Downloading,
            "extracting" => Stage::Extracting,
            "chunking" => Stage::Chunking,
            "embedding" => Stage::Embedding,
            "storing" => Stage::Storing,
            "completed" => Stage::Completed,
            "failed" => Stage::Failed,
            "batch_processing" => Stage::BatchProcessing,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Stage::Completed | Stage::Failed)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    JobQueued,
    JobProgress,
    JobCompleted,
    JobFailed,
    BatchProgress,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::JobQueued => "job_queued",
            EventType::JobProgress => "job_progress",
            EventType::JobCompleted => "job_completed",
            EventType::JobFailed => "job_failed",
            EventType::BatchProgress => "batch_progress",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        Some(match s {
            "job_queued" => EventType::JobQueued,
            "job_progress" => EventType::JobProgress,
            "job_completed" => EventType::JobCompleted,
            "job_failed" => EventType::JobFailed,
            "batch_progress" => EventType::BatchProgress,
            _ => return None,
        })
    }
}

/// One progress event, exactly as `spec/contract.md` shows it. Every channel
/// (history table, Redis, WebSocket, HTTP) carries this same JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProgressEvent {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub job_id: String,
    pub document_id: Option<Uuid>,
    pub batch_id: Option<Uuid>,
    pub stage: Stage,
    pub progress: f64,
    pub message: String,
    /// Stage-specific numbers (chunk i of n, pages, batch counts…).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub error: Option<String>,
    pub seq: i64,
    pub attempt: i32,
    #[serde(with = "millis_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: DateTime<Utc>,
    pub document_name: Option<String>,
}

/// What travels on the Redis channel: the event plus whom it is for (the
/// socket side routes by `user_id`; browsers receive only `event`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub user_id: Uuid,
    pub event: ProgressEvent,
}

/// Timestamps as `2026-11-28T16:00:00.123Z`, as the contract shows.
mod millis_rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_serializes_as_the_contract_shows() {
        let ev = ProgressEvent {
            kind: EventType::JobProgress,
            job_id: "doc:1".into(),
            document_id: None,
            batch_id: None,
            stage: Stage::Embedding,
            progress: 0.62,
            message: "Processing chunk 14/29".into(),
            details: serde_json::json!({"chunk": 14, "chunks": 29}),
            error: None,
            seq: 17,
            attempt: 1,
            timestamp: DateTime::parse_from_rfc3339("2026-11-28T16:00:00.123Z")
                .unwrap()
                .with_timezone(&Utc),
            document_name: Some("report.pdf".into()),
        };
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], "job_progress");
        assert_eq!(v["stage"], "embedding");
        assert_eq!(v["timestamp"], "2026-11-28T16:00:00.123Z");
        assert_eq!(v["batch_id"], serde_json::Value::Null);
        let back: ProgressEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn job_ids_round_trip() {
        let id = Uuid::new_v4();
        assert_eq!(document_id_of(&job_id_for(id)), Some(id));
        assert_eq!(document_id_of("other:1"), None);
    }
}
