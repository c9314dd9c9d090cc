//! The bounded hand-over between the tracing thread and the export thread,
//! with the counters that account for every item.
//!
//! Full queue: the OLDEST item is dropped. When the backend is down for long,
//! what is kept (and flushed when it returns) is the most recent activity,
//! which is what someone looking at a dashboard after an outage wants; the
//! tracing thread never waits.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

/// Counters of one signal. At exit `produced = exported + failed + dropped`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Items handed to the exporter.
    pub produced: AtomicU64,
    /// Items the backend accepted.
    pub exported: AtomicU64,
    /// Items in requests that failed for good (non-retryable error, rejected
    /// in a partial success, or still failing when the exit deadline passed).
    pub failed: AtomicU64,
    /// Items thrown away without an export attempt: the queue was full, or
    /// they were still queued when the exit deadline passed.
    pub dropped: AtomicU64,
    /// Export requests that failed (each retry counts).
    pub failed_requests: AtomicU64,
    /// Export requests that succeeded.
    pub requests: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignalStats {
    /// Items handed to the exporter.
    pub produced: u64,
    /// Items the backend accepted.
    pub exported: u64,
    /// Items whose export failed for good.
    pub failed: u64,
    /// Items dropped without an export attempt.
    pub dropped: u64,
    /// Export requests that failed (retries included).
    pub failed_requests: u64,
    /// Export requests that succeeded.
    pub requests: u64,
    /// Items waiting in the queue now.
    pub queued: u64,
}

impl SignalStats {
    /// Items not yet accounted for as exported, failed or dropped (queued or
    /// in flight); zero after a complete shutdown.
    pub fn pending(&self) -> u64 {
        self.produced
            .saturating_sub(self.exported + self.failed + self.dropped)
    }
}

/// A bounded FIFO that drops its oldest item when full.
#[derive(Debug)]
pub struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    capacity: usize,
    batch: usize,
    /// Woken when a batch is ready.
    pub ready: Notify,
    /// The counters.
    pub counters: Counters,
}

impl<T> Queue<T> {
    /// A queue of at most `capacity` items, waking the exporter every `batch`.
    pub fn new(capacity: usize, batch: usize) -> Queue<T> {
        Queue {
            items: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity: capacity.max(1),
            batch: batch.max(1),
            ready: Notify::new(),
            counters: Counters::default(),
        }
    }

    /// Adds an item; never blocks for longer than the lock (which the export
    /// thread only holds to move a batch out).
    pub fn push(&self, item: T) {
        let len = {
            let mut q = self.items.lock().unwrap_or_else(PoisonError::into_inner);
            if q.len() >= self.capacity {
                q.pop_front();
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(item);
            q.len()
        };
        self.counters.produced.fetch_add(1, Ordering::Relaxed);
        if len == self.batch {
            self.ready.notify_one();
        }
    }

    /// Takes up to `max` of the oldest items.
    pub fn pop_batch(&self, max: usize) -> Vec<T> {
        let mut q = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        let n = q.len().min(max);
        q.drain(..n).collect()
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Throws everything still queued away, counting it as dropped.
    pub fn drop_all(&self) -> u64 {
        let n = {
            let mut q = self.items.lock().unwrap_or_else(PoisonError::into_inner);
            let n = q.len();
            q.clear();
            n as u64
        };
        self.counters.dropped.fetch_add(n, Ordering::Relaxed);
        n
    }

    /// The counters now.
    pub fn stats(&self) -> SignalStats {
        let c = &self.counters;
        SignalStats {
            produced: c.produced.load(Ordering::Relaxed),
            exported: c.exported.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed_requests: c.failed_requests.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            queued: self.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_the_oldest_and_counts_it() {
        let q = Queue::new(3, 2);
        for i in 0..5 {
            q.push(i);
        }
        let s = q.stats();
        assert_eq!((s.produced, s.dropped, s.queued), (5, 2, 3));
        assert_eq!(q.pop_batch(2), vec![2, 3]);
        assert_eq!(q.pop_batch(9), vec![4]);
        assert_eq!(q.len(), 0);
        q.push(9);
        assert_eq!(q.drop_all(), 1);
        let s = q.stats();
        assert_eq!(s.dropped, 3);
        // Popped items are in flight: pending until exported or failed.
        assert_eq!(s.pending(), 3);
    }
}
