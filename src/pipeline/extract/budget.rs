//! One memory budget for every extraction this daemon runs at once.
//!
//! Each extraction child is given a memory limit (its data segment: heap and
//! anonymous mappings) and that limit is first reserved from the budget, so
//! the children together never hold more than `extract_memory_budget_mb`
//! whatever they are fed. A job whose share is not free waits for it; it
//! never runs with less than it reserved, and never over the budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What any extraction reserves at least (the reader, one inflated stream of
/// up to `max_stream_mb` with its growth, fonts and the page's text).
pub const BASE_MIB: u64 = 96;
/// Per MiB of the file: the file itself, lopdf's object model of it, and
/// the text it yields.
pub const PER_FILE_MIB: u64 = 3;

#[derive(Debug, Clone)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    reserved: Arc<AtomicU64>,
    total_mib: u64,
    per_child_mib: u64,
}

/// A share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    reserved: Arc<AtomicU64>,
    pub mib: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let now = self.reserved.fetch_sub(self.mib, Ordering::Relaxed) - self.mib;
        crate::metrics::extraction_memory(now);
    }
}

impl MemoryBudget {
    /// `per_child_mib` is capped at the budget: one extraction can always run.
    pub fn new(total_mib: u64, per_child_mib: u64) -> Self {
        let total_mib = total_mib.clamp(1, u32::MAX as u64);
        MemoryBudget {
            permits: Arc::new(Semaphore::new(total_mib as usize)),
            reserved: Arc::new(AtomicU64::new(0)),
            total_mib,
            per_child_mib: per_child_mib.clamp(1, total_mib),
        }
    }

    /// The share an extraction of a file of `file_bytes` reserves.
    pub fn need_mib(&self, file_bytes: usize) -> u64 {
        let file_mib = (file_bytes as u64).div_ceil(1 << 20);
        (BASE_MIB + PER_FILE_MIB * file_mib).min(self.per_child_mib)
    }

    pub fn total_mib(&self) -> u64 {
        self.total_mib
    }

    /// MiB reserved by running extractions now.
    pub fn reserved_mib(&self) -> u64 {
        self.reserved.load(Ordering::Relaxed)
    }

    /// The share at once, or `None` when it is not free now.
    pub fn try_reserve(&self, mib: u64) -> Option<Reservation> {
        let permit = self.permits.clone().try_acquire_many_owned(mib as u32).ok()?;
        Some(self.granted(permit, mib))
    }

    /// Waits until the share is free. Waiters are served in order, so a
    /// large share is not starved by small ones.
    pub async fn reserve(&self, mib: u64) -> Reservation {
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(mib as u32)
            .await
            .expect("the budget's semaphore is never closed");
        self.granted(permit, mib)
    }

    fn granted(&self, permit: OwnedSemaphorePermit, mib: u64) -> Reservation {
        let now = self.reserved.fetch_add(mib, Ordering::Relaxed) + mib;
        crate::metrics::extraction_memory(now);
        Reservation {
            _permit: permit,
            reserved: self.reserved.clone(),
            mib,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn shares_grow_with_the_file_up_to_the_child_limit() {
        let b = MemoryBudget::new(384, 256);
        assert_eq!(b.need_mib(10_000), 96 + 3);
        assert_eq!(b.need_mib(20 << 20), 96 + 60);
        assert_eq!(b.need_mib(200 << 20), 256);
        // A child limit above the budget is capped: one extraction always fits.
        assert_eq!(MemoryBudget::new(100, 256).need_mib(50 << 20), 100);
    }

    #[tokio::test]
    async fn a_share_waits_until_others_give_theirs_back() {
        let b = MemoryBudget::new(200, 200);
        let first = b.try_reserve(120).expect("free");
        assert!(b.try_reserve(100).is_none(), "over the budget");
        assert_eq!(b.reserved_mib(), 120);
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { b.reserve(100).await.mib }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "must wait while 120 of 200 MiB are held");
        drop(first);
        assert_eq!(waiting.await.unwrap(), 100);
        assert_eq!(b.reserved_mib(), 0, "both shares were given back");
    }
}
