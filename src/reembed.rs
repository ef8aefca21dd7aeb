//! Re-embedding after a change of model.
//!
//! Every document records the model search uses for it
//! (`documents.search_model_id`, set when a normal job stores its chunks).
//! When the configured model differs, [`start`] runs each such document's
//! own job again as `reembed_document`, through admission (fairness) like
//! any upload: the job reads the stored chunks, embeds them with the
//! configured model (progress in stage `embedding`, as any job) and stores
//! the new vectors *beside* the old ones. Search keeps answering each
//! document from the model its `search_model_id` names, embedding the query
//! with that model (the previous model's embedder is built at start-up, see
//! [`previous_embedders`]). When every document of a user has the new
//! vectors, [`switch_if_done`] moves all of them to the new model and drops
//! the old vectors in one transaction: a search sees either the old state
//! or the new one, never a user with nothing to search.
//!
//! Resumable: the jobs live in Postgres and the arq queue like any other; a
//! second [`start`] queues only what is neither done nor under way (and
//! re-runs re-embeds that failed).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::{Provider, Settings};
use crate::db;
use crate::events::{JobMeta, NewEvent};
use crate::jobs::admission::{self, Admission};
use crate::jobs::REEMBED_DOCUMENT;
use crate::pipeline::embed::{self, Embedder};
use crate::services::Services;

/// Embedders of earlier models, by `embedding_models.id`: they embed
/// queries for documents not yet moved to the configured model.
pub type PreviousEmbedders = HashMap<i32, Arc<dyn Embedder>>;

/// The provider a previous model runs on: as configured, else guessed from
/// its name.
fn previous_provider(settings: &Settings, name: &str) -> anyhow::Result<Provider> {
    Ok(match settings.reembed.previous_provider.as_str() {
        "local" => Provider::Local,
        "openai" => Provider::Openai,
        "ollama" => Provider::Ollama,
        "hash" => Provider::Hash,
        _ if name == "sentence-transformers/all-MiniLM-L6-v2" => Provider::Local,
        _ if name.starts_with("doculearn/feature-hash") => Provider::Hash,
        _ => match settings.embedding.provider {
            p @ (Provider::Openai | Provider::Ollama) => p,
            _ => anyhow::bail!(
                "its provider is unknown; set reembed.previous_provider (and previous_base_url/previous_api_key)"
            ),
        },
    })
}

fn build_previous(settings: &Settings, name: &str, dimension: usize) -> anyhow::Result<Arc<dyn Embedder>> {
    let mut s = settings.clone();
    s.embedding.provider = previous_provider(settings, name)?;
    s.embedding.model = name.to_string();
    s.embedding.dimension = dimension;
    if !settings.reembed.previous_base_url.is_empty() {
        s.embedding.base_url = settings.reembed.previous_base_url.clone();
    }
    if !secrecy::ExposeSecret::expose_secret(&settings.reembed.previous_api_key).is_empty() {
        s.embedding.api_key = settings.reembed.previous_api_key.clone();
    }
    let e = embed::build(&s)?;
    if e.dimension() != dimension {
        anyhow::bail!("it now gives {} dimensions, not {dimension}", e.dimension());
    }
    Ok(e)
}

/// Builds an embedder for every other model search still uses for some
/// document. One that cannot be built is one warning line: those documents
/// are then found by keyword only until they are re-embedded.
pub async fn previous_embedders(settings: &Settings, pool: &PgPool, current: i32) -> anyhow::Result<PreviousEmbedders> {
    let mut out = PreviousEmbedders::new();
    for (id, name, dimension) in db::search_models_in_use(pool).await? {
        if id == current {
            continue;
        }
        match build_previous(settings, &name, dimension as usize) {
            Ok(e) => {
                tracing::info!(model = %name, "documents embedded with a previous model: it answers their queries until they are re-embedded");
                out.insert(id, e);
            }
            Err(e) => tracing::warn!(
                model = %name,
                "documents embedded with {name} cannot be searched by meaning until they are re-embedded: {e:#}"
            ),
        }
    }
    Ok(out)
}

/// The models (and their embedders) search uses for this user's documents:
/// the configured one, and any previous one not yet switched from.
pub async fn query_models(s: &Services, user: Uuid) -> Result<Vec<(i32, Arc<dyn Embedder>)>, sqlx::Error> {
    let ids = db::user_search_models(&s.db, user).await?;
    if ids.is_empty() {
        return Ok(vec![(s.model_id, s.embedder.clone())]);
    }
    Ok(ids
        .into_iter()
        .filter_map(|id| {
            if id == s.model_id {
                Some((id, s.embedder.clone()))
            } else {
                s.previous_embedders.get(&id).map(|e| (id, e.clone()))
            }
        })
        .collect())
}

/// Queues the re-embed of every document (of `user`, or everyone's) whose
/// search model is not the configured one and that has no vectors of it
/// yet; answers what it found. Users whose documents are all done already
/// are switched here (a switch interrupted by a crash completes).
pub async fn start(s: &Services, user: Option<Uuid>) -> anyhow::Result<Value> {
    let candidates = db::reembed_candidates(&s.db, s.model_id, user).await?;
    let (mut queued, mut under_way, mut processing) = (0usize, 0usize, 0usize);
    for c in &candidates {
        match (c.stage.as_str(), c.function.as_str()) {
            ("completed" | "failed", _) => {}
            (_, REEMBED_DOCUMENT) => {
                under_way += 1;
                continue;
            }
            // A normal run now stores the configured model's vectors anyway.
            _ => {
                processing += 1;
                continue;
            }
        }
        let Some(attempt) = db::requeue(&s.db, c.owner_id, &c.job_id, Some(REEMBED_DOCUMENT)).await? else {
            continue;
        };
        let meta = JobMeta {
            job_id: c.job_id.clone(),
            user_id: c.owner_id,
            document_id: Some(c.document_id),
            batch_id: c.batch_id,
            document_name: Some(c.name.clone()),
        };
        let message = format!("Re-embedding queued: {} → {}", c.model, s.embedder.model());
        let details = json!({ "reembed": true, "from_model": c.model, "to_model": s.embedder.model() });
        s.events
            .emit(&meta, NewEvent::queued(attempt, message, details), true)
            .await?;
        // The finished run's arq result would make arq refuse the job id.
        s.queue.forget_result(&c.job_id).await?;
        match admission::admit(s, c.owner_id, &c.job_id, c.document_id).await {
            Ok(Admission::Enqueued) => {}
            Ok(Admission::Held) => tracing::info!(job_id = %c.job_id, "re-embed held back for fairness"),
            Err(e) => {
                tracing::warn!(job_id = %c.job_id, error = %e, "cannot enqueue the re-embed now; it waits in Postgres")
            }
        }
        queued += 1;
    }
    let mut switched = 0usize;
    for owner in db::users_off_model(&s.db, s.model_id, user).await? {
        if switch_if_done(s, owner).await?.is_some() {
            switched += 1;
        }
    }
    if queued > 0 {
        tracing::info!(queued, under_way, model = %s.embedder.model(), "re-embedding documents of a previous model");
    }
    Ok(json!({
        "model": s.embedder.model(),
        "queued": queued,
        "under_way": under_way,
        "processing": processing,
        "users_switched": switched,
    }))
}

/// Moves all of the user's documents to the configured model and drops the
/// other models' vectors, in one transaction, if every document has the
/// configured model's vectors; the number of vectors dropped, or `None`
/// when some document is not re-embedded yet (or nothing was to move).
pub async fn switch_if_done(s: &Services, user: Uuid) -> Result<Option<u64>, sqlx::Error> {
    let done = db::switch_search_model(&s.db, user, s.model_id).await?;
    if let Some((documents, dropped)) = done {
        tracing::info!(user_id = %user, model = %s.embedder.model(), documents, dropped, "search switched to the configured model; previous vectors dropped");
        return Ok(Some(dropped));
    }
    Ok(None)
}

/// Where re-embedding stands (for `GET /api/v1/admin/reembed` and
/// `doculearn reembed`): documents per search model, re-embeds pending and failed.
pub async fn status(s: &Services, user: Option<Uuid>) -> Result<Value, sqlx::Error> {
    let st = db::reembed_status(&s.db, s.model_id, user).await?;
    Ok(json!({
        "model": s.embedder.model(),
        "engine": s.embedder.engine(),
        "documents_by_model": st.by_model.iter().map(|(m, n)| json!({ "model": m, "documents": n })).collect::<Vec<_>>(),
        "on_configured_model": st.on_model,
        "remaining": st.remaining,
        "pending": st.pending,
        "failed": st.failed,
        "done": st.remaining == 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(provider: &str) -> Settings {
        use figment::providers::{Format, Toml};
        let mut s: Settings = figment::Figment::new()
            .merge(Toml::string(crate::config::DEFAULT_TOML))
            .extract()
            .expect("defaults parse");
        s.reembed.previous_provider = provider.into();
        s
    }

    #[test]
    fn the_previous_provider_is_guessed_from_the_name_or_taken_from_config() {
        let s = settings("");
        assert_eq!(
            previous_provider(&s, "sentence-transformers/all-MiniLM-L6-v2").unwrap(),
            Provider::Local
        );
        assert_eq!(previous_provider(&s, "doculearn/feature-hash").unwrap(), Provider::Hash);
        let err = previous_provider(&s, "text-embedding-3-small").unwrap_err().to_string();
        assert!(err.contains("reembed.previous_provider"), "{err}");
        let mut remote = settings("");
        remote.embedding.provider = Provider::Openai;
        assert_eq!(
            previous_provider(&remote, "text-embedding-3-small").unwrap(),
            Provider::Openai
        );
        assert_eq!(
            previous_provider(&settings("ollama"), "text-embedding-3-small").unwrap(),
            Provider::Ollama
        );
    }

    #[test]
    fn a_previous_hash_model_is_rebuilt_with_its_dimension() {
        let e = build_previous(&settings(""), "doculearn/feature-hash", 256).unwrap();
        assert_eq!(e.model(), "doculearn/feature-hash");
        assert_eq!(e.dimension(), 256);
    }
}
