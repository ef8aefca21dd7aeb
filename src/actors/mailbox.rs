//! Bounds on ractor's mailboxes, which are unbounded themselves. A sender
//! that can outrun its receiver (the relay feeding the session registry,
//! the registry feeding a user's session) counts what it has in flight: each
//! message carries a [`Ticket`] that gives its place back when the message
//! is handled or dropped. When the count reaches the limit the message is
//! not sent and the [`Overflow`] flag is raised, so the receiver, once it has
//! caught up, tells its clients to `resync` (they `resume` from Postgres,
//! which has every event): drop-with-resync, never unbounded memory.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// One message's place in a bounded mailbox; freed on drop.
#[derive(Debug)]
pub struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The in-flight count and overflow flag of one bounded mailbox.
#[derive(Debug, Clone)]
pub struct Bound {
    depth: Arc<AtomicUsize>,
    overflowed: Arc<AtomicBool>,
    limit: usize,
}

impl Bound {
    pub fn new(limit: usize) -> Self {
        Bound {
            depth: Arc::new(AtomicUsize::new(0)),
            overflowed: Arc::new(AtomicBool::new(false)),
            limit: limit.max(1),
        }
    }

    /// A ticket if there is room; otherwise records the overflow.
    pub fn take(&self) -> Option<Ticket> {
        let mut now = self.depth.load(Ordering::Acquire);
        loop {
            if now >= self.limit {
                self.overflowed.store(true, Ordering::Release);
                return None;
            }
            match self
                .depth
                .compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(Ticket(self.depth.clone())),
                Err(actual) => now = actual,
            }
        }
    }

    /// Messages in flight.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    /// True once after messages were dropped, when the receiver is empty
    /// again (call it from the receiver, after it let go of its ticket).
    pub fn caught_up_after_overflow(&self) -> bool {
        self.depth() == 0 && self.overflowed.swap(false, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_bound_the_depth_and_overflow_is_reported_once_caught_up() {
        let b = Bound::new(2);
        let t1 = b.take().unwrap();
        let t2 = b.take().unwrap();
        assert!(b.take().is_none(), "full");
        assert_eq!(b.depth(), 2);
        assert!(!b.caught_up_after_overflow(), "not caught up yet");
        drop(t1);
        drop(t2);
        assert!(b.caught_up_after_overflow());
        assert!(!b.caught_up_after_overflow(), "reported once");
        assert!(b.take().is_some());
    }
}
