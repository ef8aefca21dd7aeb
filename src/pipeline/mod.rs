//! The stages of a document's processing, as plain functions with no actor
//! code: download, extract, chunk, embed, store. Each returns a
//! [`StageError`] that says whether trying again could help.

pub mod chunk;
pub mod download;
pub mod embed;
pub mod extract;
pub mod store;

use std::time::Duration;

/// Why a stage did not finish.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The input cannot be processed; retrying will not help. The text is
    /// shown to the user as the job's error.
    #[error("{0}")]
    Permanent(String),
    /// A dependency failed (database, Redis, embedding provider); the job is
    /// handed back and tried again later.
    #[error("{reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// A newer attempt owns the job; this one stops without writing.
    #[error("superseded by a newer attempt of the same job")]
    Fenced,
    /// The user or an operator cancelled the job.
    #[error("cancelled")]
    Cancelled,
    /// The stage ran past its time limit.
    #[error("took longer than {0:?}")]
    TimedOut(Duration),
}

impl StageError {
    pub fn permanent(msg: impl Into<String>) -> Self {
        StageError::Permanent(msg.into())
    }

    pub fn transient(msg: impl Into<String>) -> Self {
        StageError::Transient {
            reason: msg.into(),
            retry_after: None,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, StageError::Transient { .. })
    }
}

/// Is this database error one that goes away by itself (connection lost,
/// server restarting, serialization conflict, resources exhausted)?
pub fn db_error_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            ["08", "40", "53", "57", "58"]
                .iter()
                .any(|class| code.starts_with(class))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

impl From<sqlx::Error> for StageError {
    fn from(e: sqlx::Error) -> Self {
        if db_error_is_transient(&e) {
            tracing::warn!(error = %e, "database unavailable in a stage");
            StageError::transient("the database is unavailable")
        } else {
            // A query the database rejects is a bug here, not the document's fault.
            tracing::error!(error = %e, "database error in a stage");
            StageError::permanent("internal error while saving progress (the server log has details)")
        }
    }
}

impl From<redis::RedisError> for StageError {
    fn from(e: redis::RedisError) -> Self {
        tracing::warn!(error = %e, "redis error in a stage");
        StageError::transient("redis is unavailable")
    }
}

impl From<crate::progress::ProgressError> for StageError {
    fn from(e: crate::progress::ProgressError) -> Self {
        match e {
            crate::progress::ProgressError::Fenced(_) => StageError::Fenced,
            crate::progress::ProgressError::Db(e) => e.into(),
        }
    }
}
