//! arq 0.28 compatibility: the wire format (pickle and JSON dicts) and the
//! Redis queue protocol, so a Python backend's `enqueue_job` drives our workers
//! unchanged and arq's client can read our results.

pub mod pickle;
pub mod queue;
pub mod wire;

pub use pickle::PyValue;
pub use queue::{now_ms, ArqQueue, Claimed, QueueError};
pub use wire::{JobDef, JobResult};
