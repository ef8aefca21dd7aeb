//! The default provider: sentence-transformers/all-MiniLM-L6-v2 on the CPU
//! (crate `minilm`: OpenVINO in bf16 where it loads, else candle in fp32),
//! from files the setup scripts installed. No key, no network.
//!
//! One embedding pool serves every job and every search: one worker thread
//! per model lane (OpenVINO's infer requests, one per core here), fed from
//! a shared queue. A worker takes the next `sub_batch` texts from whichever
//! requests are waiting, so the chunks of several small documents share one
//! forward pass (continuous batching) and a lone big document keeps every
//! lane busy. Search queries wait in a lane of their own that workers serve
//! first. The document queue is bounded (`embedding.queue_capacity` texts):
//! a job whose batch does not fit waits for room.
//!
//! The workers are plain threads, not actors: they block on the CPU for
//! tens of milliseconds at a time. A panic inside the model fails the
//! requests of that batch and the worker goes on; nothing waits forever.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::{check_vectors, EmbedError, Embedder};
use crate::config::{EmbeddingSettings, LocalEngine, LocalPrecision};

/// Queries waiting at most (each is one short text).
const QUERY_CAPACITY: usize = 256;

pub struct LocalEmbedder {
    name: String,
    engine: String,
    dimension: usize,
    batch_size: usize,
    pool: Arc<Pool>,
    /// Room in the document queue, in texts (of `capacity`).
    room: Arc<Semaphore>,
    capacity: usize,
    query_room: Arc<Semaphore>,
}

/// What one model load says about itself, for the start-up log.
pub struct LoadReport {
    pub engine: String,
    pub lanes: usize,
    /// Why the engine running is not the one configured.
    pub fallback: Option<String>,
}

impl LocalEmbedder {
    pub fn load(settings: &EmbeddingSettings, name: String) -> anyhow::Result<(Self, LoadReport)> {
        let dir = &settings.model_dir;
        let options = minilm::Options {
            max_seq_len: settings.max_seq_len,
            engine: match settings.engine {
                LocalEngine::Auto => minilm::EngineChoice::Auto,
                LocalEngine::Openvino => minilm::EngineChoice::OpenVino,
                LocalEngine::Candle => minilm::EngineChoice::Candle,
            },
            precision: match settings.precision {
                LocalPrecision::Bf16 => minilm::Precision::Bf16,
                LocalPrecision::F32 => minilm::Precision::F32,
            },
            openvino_dir: settings.openvino_dir.clone(),
            cache_dir: None,
            threads: settings.threads,
        };
        let model = minilm::MiniLm::load(dir, &options).map_err(|e| match e {
            minilm::Error::OpenVino(reason) => anyhow::anyhow!(
                "config: setting `embedding.engine`: \"openvino\" cannot run: {reason} (run scripts/install-openvino.sh, or set engine = \"auto\")"
            ),
            e => anyhow::anyhow!(
                "config: setting `embedding.model_dir`: cannot load the local model from {}: {e} (run scripts/install-model.sh)",
                dir.display()
            ),
        })?;
        if settings.dimension != 0 && settings.dimension != model.dimension() {
            anyhow::bail!(
                "config: setting `embedding.dimension`: the local model has {} dimensions, not {}",
                model.dimension(),
                settings.dimension
            );
        }
        let report = LoadReport {
            engine: model.engine().label(),
            lanes: model.lanes(),
            fallback: model.fallback_reason().map(str::to_string),
        };
        let dimension = model.dimension();
        let engine = model.engine().label();
        let sub_batch = model.sub_batch();
        let pool = Pool::start(Arc::new(model), sub_batch);
        Ok((
            LocalEmbedder {
                name,
                engine,
                dimension,
                batch_size: settings.batch_size,
                pool,
                room: Arc::new(Semaphore::new(settings.queue_capacity)),
                capacity: settings.queue_capacity,
                query_room: Arc::new(Semaphore::new(QUERY_CAPACITY)),
            },
            report,
        ))
    }

    /// Queues `texts` once there is room for them; the future resolves when
    /// all are embedded. When there is room now, they are queued before this
    /// returns, so they wait their turn while the caller does other work.
    fn submit_to(&self, texts: Vec<String>, lane: Lane) -> BoxFuture<'static, Result<Vec<Vec<f32>>, EmbedError>> {
        if texts.is_empty() {
            return futures::future::ready(Ok(Vec::new())).boxed();
        }
        let (room, capacity) = match lane {
            Lane::Query => (self.query_room.clone(), QUERY_CAPACITY),
            Lane::Document => (self.room.clone(), self.capacity),
        };
        // A request larger than the whole queue needs only all of it.
        let need = texts.len().min(capacity) as u32;
        let (n, dimension) = (texts.len(), self.dimension);
        match room.clone().try_acquire_many_owned(need) {
            Ok(permit) => {
                let rx = self.pool.push(texts, lane, Some(permit));
                finish(rx, n, dimension).boxed()
            }
            Err(_) => {
                let pool = self.pool.clone();
                async move {
                    let permit = room.acquire_many_owned(need).await.map_err(|_| stopped())?;
                    finish(pool.push(texts, lane, Some(permit)), n, dimension).await
                }
                .boxed()
            }
        }
    }
}

fn stopped() -> EmbedError {
    EmbedError::Permanent("the local model was stopped".into())
}

async fn finish(rx: Answer, n: usize, dimension: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
    let vectors = rx
        .await
        .map_err(|_| stopped())?
        .map_err(|e| EmbedError::Permanent(format!("the local model failed: {e}")))?;
    check_vectors(&vectors, n, dimension)?;
    Ok(vectors)
}

#[async_trait::async_trait]
impl Embedder for LocalEmbedder {
    fn model(&self) -> &str {
        &self.name
    }
    fn engine(&self) -> &str {
        &self.engine
    }
    fn dimension(&self) -> usize {
        self.dimension
    }
    fn batch_size(&self) -> usize {
        self.batch_size
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.submit_to(texts.to_vec(), Lane::Query).await
    }
    fn submit(self: Arc<Self>, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, EmbedError>> {
        self.submit_to(texts, Lane::Document)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Query,
    Document,
}

type Reply = oneshot::Sender<Result<Vec<Vec<f32>>, String>>;
/// Where a request's vectors (or the reason there are none) arrive.
type Answer = oneshot::Receiver<Result<Vec<Vec<f32>>, String>>;

/// One caller's texts, embedded piece by piece by any worker.
struct Request {
    texts: Vec<String>,
    /// Texts handed to workers so far (a prefix).
    taken: usize,
    /// Texts whose vectors are back.
    done: usize,
    vectors: Vec<Vec<f32>>,
    reply: Option<Reply>,
    /// Room in the queue, given back when the request ends.
    _permit: Option<OwnedSemaphorePermit>,
}

#[derive(Default)]
struct Queue {
    requests: HashMap<u64, Request>,
    /// Requests with texts not yet taken, in arrival order, per lane.
    queries: VecDeque<u64>,
    documents: VecDeque<u64>,
    next_id: u64,
    waiting_texts: usize,
    closed: bool,
}

struct Pool {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// A worker's share: (request id, index in the request, text).
type Piece = Vec<(u64, usize, String)>;

impl Pool {
    fn start(model: Arc<minilm::MiniLm>, sub_batch: usize) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        });
        for lane in 0..model.lanes() {
            let (pool, model) = (pool.clone(), model.clone());
            std::thread::Builder::new()
                .name(format!("embed-{lane}"))
                .spawn(move || pool.work(lane, &model, sub_batch))
                .expect("spawn an embedding worker");
        }
        pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, texts: Vec<String>, lane: Lane, permit: Option<OwnedSemaphorePermit>) -> Answer {
        let (tx, rx) = oneshot::channel();
        let mut q = self.lock();
        let id = q.next_id;
        q.next_id += 1;
        q.waiting_texts += texts.len();
        crate::metrics::embedding_queue(q.waiting_texts);
        let n = texts.len();
        q.requests.insert(
            id,
            Request {
                texts,
                taken: 0,
                done: 0,
                vectors: vec![Vec::new(); n],
                reply: Some(tx),
                _permit: permit,
            },
        );
        match lane {
            Lane::Query => q.queries.push_back(id),
            Lane::Document => q.documents.push_back(id),
        }
        drop(q);
        self.ready.notify_one();
        rx
    }

    /// Takes up to `n` texts: queries first, then documents in arrival
    /// order, skipping requests whose caller has gone (a cancelled job).
    fn take(q: &mut Queue, n: usize) -> Piece {
        let mut piece = Vec::new();
        for lane in [Lane::Query, Lane::Document] {
            while piece.len() < n {
                let order = match lane {
                    Lane::Query => &mut q.queries,
                    Lane::Document => &mut q.documents,
                };
                let Some(&id) = order.front() else { break };
                let Some(r) = q.requests.get_mut(&id) else {
                    order.pop_front();
                    continue;
                };
                if r.reply.as_ref().is_none_or(|tx| tx.is_closed()) {
                    let left = r.texts.len() - r.taken;
                    order.pop_front();
                    q.requests.remove(&id);
                    q.waiting_texts -= left;
                    continue;
                }
                while piece.len() < n && r.taken < r.texts.len() {
                    let i = r.taken;
                    piece.push((id, i, std::mem::take(&mut r.texts[i])));
                    r.taken += 1;
                }
                if r.taken == r.texts.len() {
                    order.pop_front();
                }
            }
        }
        q.waiting_texts -= piece.len();
        crate::metrics::embedding_queue(q.waiting_texts);
        piece
    }

    fn work(&self, lane: usize, model: &minilm::MiniLm, sub_batch: usize) {
        loop {
            let piece = {
                let mut q = self.lock();
                loop {
                    if q.closed {
                        return;
                    }
                    let piece = Self::take(&mut q, sub_batch);
                    if !piece.is_empty() {
                        break piece;
                    }
                    q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            let started = std::time::Instant::now();
            let texts: Vec<&str> = piece.iter().map(|(_, _, t)| t.as_str()).collect();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.embed_on(lane, &texts)));
            let outcome = match outcome {
                Ok(Ok(v)) if v.len() == piece.len() => Ok(v),
                Ok(Ok(v)) => Err(format!("{} vectors for {} texts", v.len(), piece.len())),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => {
                    tracing::error!(lane, "the local model panicked; failing the requests of this batch");
                    Err("the model crashed on this batch".to_string())
                }
            };
            crate::metrics::embedding_forward(started.elapsed().as_secs_f64(), piece.len());
            self.deliver(piece, outcome);
        }
    }

    fn deliver(&self, piece: Piece, outcome: Result<Vec<Vec<f32>>, String>) {
        let mut q = self.lock();
        match outcome {
            Ok(vectors) => {
                for ((id, i, _), v) in piece.into_iter().zip(vectors) {
                    let Some(r) = q.requests.get_mut(&id) else { continue };
                    r.vectors[i] = v;
                    r.done += 1;
                    if r.done == r.texts.len() {
                        let r = q.requests.remove(&id).expect("present");
                        if let Some(tx) = r.reply {
                            let _ = tx.send(Ok(r.vectors));
                        }
                    }
                }
            }
            Err(e) => {
                let mut failed: Vec<u64> = piece.iter().map(|(id, _, _)| *id).collect();
                failed.dedup();
                for id in failed {
                    if let Some(r) = q.requests.remove(&id) {
                        q.waiting_texts -= r.texts.len() - r.taken;
                        q.queries.retain(|x| *x != id);
                        q.documents.retain(|x| *x != id);
                        if let Some(tx) = r.reply {
                            let _ = tx.send(Err(e.clone()));
                        }
                    }
                }
            }
        }
    }
}

impl Drop for LocalEmbedder {
    fn drop(&mut self) {
        self.pool.lock().closed = true;
        self.pool.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue_with(requests: &[(Lane, usize)]) -> (Queue, Vec<Answer>) {
        let pool = Pool {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        };
        let receivers = requests
            .iter()
            .enumerate()
            .map(|(k, &(lane, n))| pool.push((0..n).map(|i| format!("r{k}t{i}")).collect(), lane, None))
            .collect();
        (pool.queue.into_inner().unwrap(), receivers)
    }

    #[test]
    fn a_batch_is_filled_from_several_documents() {
        let (mut q, _rx) = queue_with(&[(Lane::Document, 3), (Lane::Document, 2), (Lane::Document, 5)]);
        let piece = Pool::take(&mut q, 8);
        let texts: Vec<&str> = piece.iter().map(|(_, _, t)| t.as_str()).collect();
        assert_eq!(texts, ["r0t0", "r0t1", "r0t2", "r1t0", "r1t1", "r2t0", "r2t1", "r2t2"]);
        let rest = Pool::take(&mut q, 8);
        assert_eq!(rest.len(), 2);
        assert_eq!(q.waiting_texts, 0);
    }

    #[test]
    fn queries_go_first_and_abandoned_requests_are_skipped() {
        let (mut q, mut rx) = queue_with(&[(Lane::Document, 4), (Lane::Document, 4), (Lane::Query, 1)]);
        // The caller of the first document request went away (cancelled job).
        drop(rx.remove(0));
        let piece = Pool::take(&mut q, 3);
        let texts: Vec<&str> = piece.iter().map(|(_, _, t)| t.as_str()).collect();
        assert_eq!(texts, ["r2t0", "r1t0", "r1t1"]);
        assert_eq!(q.waiting_texts, 2);
    }
}
