//! The ractor supervision tree (see `actors.md` and `supervisor.rs`).

pub mod document;
pub mod indexer;
pub mod mailbox;
pub mod queue_poller;
pub mod registry;
pub mod relay;
pub mod session;
pub mod supervisor;
pub mod watchdog;

pub use supervisor::{Supervisor, SupervisorArgs, SupervisorMsg};
