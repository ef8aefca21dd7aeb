//! Processing analytics (seed plan 4.2), computed from the history table:
//! per stage, how many jobs went through it, the average and p95 time spent
//! in it, and how often jobs failed there; the same per content type. A
//! stage's time is from its first event (in an attempt) to the next first
//! event of the job ("queued" is the wait for a worker). The UI's ETA
//! uses these numbers.

use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct StageStats {
    pub stage: String,
    /// Spans measured (job attempts that left the stage).
    pub count: i64,
    pub avg_seconds: f64,
    pub p95_seconds: f64,
    /// Jobs that entered the stage.
    pub jobs: i64,
    /// Jobs that failed in the stage.
    pub errors: i64,
    /// errors / jobs.
    pub error_rate: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ContentTypeStats {
    pub content_type: String,
    pub stages: Vec<StageStats>,
}

const ORDER: &str =
    "array_position(ARRAY['queued','downloading','extracting','chunking','embedding','storing'], stage)";

/// Stats for one user's jobs (`Some`) or everyone's (`None`).
pub async fn processing(
    db: &PgPool,
    user: Option<Uuid>,
) -> Result<(Vec<StageStats>, Vec<ContentTypeStats>), sqlx::Error> {
    let sql = format!(
        "WITH ev AS ( \
           SELECT h.job_id, h.attempt, h.stage, h.timestamp, COALESCE(d.detected_type, 'unknown') AS ct \
           FROM job_progress_history h JOIN job_progress j ON j.job_id = h.job_id \
           JOIN documents d ON d.id = j.document_id \
           WHERE ($1::uuid IS NULL OR j.user_id = $1) AND h.event_type <> 'batch_progress'), \
         firsts AS (SELECT job_id, attempt, stage, ct, min(timestamp) AS t FROM ev GROUP BY job_id, attempt, stage, ct), \
         spans AS (SELECT job_id, stage, ct, EXTRACT(EPOCH FROM (lead(t) OVER (PARTITION BY job_id ORDER BY t) - t))::float8 AS s FROM firsts), \
         entered AS (SELECT stage, ct, count(DISTINCT job_id) AS jobs FROM ev GROUP BY stage, ct), \
         failures AS ( \
           SELECT j.failed_stage AS stage, COALESCE(d.detected_type, 'unknown') AS ct, count(*) AS errors \
           FROM job_progress j JOIN documents d ON d.id = j.document_id \
           WHERE j.stage = 'failed' AND ($1::uuid IS NULL OR j.user_id = $1) GROUP BY 1, 2), \
         by_ct AS ( \
           SELECT e.stage, e.ct, e.jobs, COALESCE(f.errors, 0) AS errors, \
                  count(sp.s) AS n, COALESCE(avg(sp.s), 0)::float8 AS avg_s, \
                  COALESCE(percentile_cont(0.95) WITHIN GROUP (ORDER BY sp.s), 0)::float8 AS p95 \
           FROM entered e \
           LEFT JOIN spans sp ON sp.stage = e.stage AND sp.ct = e.ct AND sp.s IS NOT NULL \
           LEFT JOIN failures f ON f.stage = e.stage AND f.ct = e.ct \
           WHERE e.stage IN ('queued','downloading','extracting','chunking','embedding','storing') \
           GROUP BY e.stage, e.ct, e.jobs, f.errors), \
         overall AS ( \
           SELECT sp.stage, count(sp.s) AS n, COALESCE(avg(sp.s), 0)::float8 AS avg_s, \
                  COALESCE(percentile_cont(0.95) WITHIN GROUP (ORDER BY sp.s), 0)::float8 AS p95 \
           FROM spans sp WHERE sp.s IS NOT NULL GROUP BY sp.stage) \
         SELECT * FROM ( \
         SELECT 'all' AS scope, b.stage, '' AS ct, sum(b.jobs)::int8 AS jobs, sum(b.errors)::int8 AS errors, \
                COALESCE(o.n, 0)::int8 AS n, COALESCE(o.avg_s, 0) AS avg_s, COALESCE(o.p95, 0) AS p95 \
         FROM by_ct b LEFT JOIN overall o ON o.stage = b.stage GROUP BY b.stage, o.n, o.avg_s, o.p95 \
         UNION ALL \
         SELECT 'ct', stage, ct, jobs::int8, errors::int8, n::int8, avg_s, p95 FROM by_ct) u \
         ORDER BY scope, ct, {ORDER}"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user).fetch_all(db).await?;
    let mut stages = Vec::new();
    let mut by_type: Vec<ContentTypeStats> = Vec::new();
    for r in rows {
        let jobs: i64 = r.try_get("jobs")?;
        let errors: i64 = r.try_get("errors")?;
        let stat = StageStats {
            stage: r.try_get("stage")?,
            count: r.try_get("n")?,
            avg_seconds: r.try_get("avg_s")?,
            p95_seconds: r.try_get("p95")?,
            jobs,
            errors,
            error_rate: if jobs > 0 { errors as f64 / jobs as f64 } else { 0.0 },
        };
        let scope: String = r.try_get("scope")?;
        if scope == "all" {
            stages.push(stat);
        } else {
            let ct: String = r.try_get("ct")?;
            match by_type.iter_mut().find(|c| c.content_type == ct) {
                Some(c) => c.stages.push(stat),
                None => by_type.push(ContentTypeStats {
                    content_type: ct,
                    stages: vec![stat],
                }),
            }
        }
    }
    Ok((stages, by_type))
}
