//! Starting an attempt of a document job: the job row exists (a job a
//! caller enqueued with its own arq client may have none yet), the attempt
//! number goes up (every later write of this worker is fenced by it), and
//! the attempt gets its reporter. A job whose row says it already ended (a
//! crash after the end but before the arq result) is reported as such, so
//! only the arq side is finished and nobody sees a second `completed`.

use uuid::Uuid;

use crate::db::{self, JobView};
use crate::events::JobMeta;
use crate::pipeline::StageError;
use crate::progress::Reporter;
use crate::services::Services;

pub enum Started {
    Run(Reporter),
    /// The job had ended already; its row as it stands.
    AlreadyEnded(Option<JobView>),
}

pub async fn start(s: &Services, job_id: &str, document_id: Uuid) -> Result<Started, StageError> {
    db::ensure_job_row(&s.db, job_id, document_id).await?;
    let start = db::begin_attempt(&s.db, job_id)
        .await?
        .ok_or_else(|| StageError::permanent("the job's document was deleted"))?;
    if start.stage.is_terminal() {
        return Ok(Started::AlreadyEnded(db::get_job(&s.db, start.user_id, job_id).await?));
    }
    Ok(Started::Run(Reporter::new(
        s.events.clone(),
        JobMeta::of_attempt(job_id, &start),
        start.attempt,
        s.min_event_interval(),
    )))
}
