//! The cluster-wide upload rate limit: a fixed one-minute window per user in
//! Redis, so every instance counts the same uploads.

use uuid::Uuid;

use crate::services::Services;

/// Over the limit: try again when the window turns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooManyUploads {
    pub limit: u32,
    pub retry_after_secs: u64,
}

impl std::fmt::Display for TooManyUploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "more than {} uploads in a minute; try again shortly", self.limit)
    }
}

/// Counts `n` uploads against the user's per-minute budget. Without Redis
/// the uploads are let through (they are stored, and queued once Redis is back).
pub async fn charge_uploads(services: &Services, user: Uuid, n: u32) -> Result<(), TooManyUploads> {
    let limit = services.settings.http.uploads_per_minute;
    if limit == 0 || n == 0 {
        return Ok(());
    }
    let now = chrono::Utc::now().timestamp();
    let window = now / 60;
    let key = format!("doculearn:ratelimit:uploads:{user}:{window}");
    let mut con = services.redis.clone();
    let used: Result<(u64, ()), _> = redis::pipe()
        .atomic()
        .incr(&key, n)
        .expire(&key, 120)
        .query_async(&mut con)
        .await;
    match used {
        Ok((used, ())) if used > limit as u64 => Err(TooManyUploads {
            limit,
            retry_after_secs: (60 - now % 60).max(1) as u64,
        }),
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "upload rate limit unavailable");
            Ok(())
        }
    }
}
