//! Writes that concurrent payments share: phase-2 acknowledgements go to the writer as one
//! write for all that are waiting (PostgreSQL's `shared.rs` does the same with one statement
//! per batch). Users and accounts need no sharing here: they are read from memory
//! ([`super::directory`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Phase-2 acknowledgements waiting for the writer. Concurrent payments' acknowledgements are
/// written by one write (one job, one savepoint) instead of one each: a write is queued only
/// when none is queued yet, and it takes everything waiting when it runs.
#[derive(Default)]
pub(super) struct AckQueue {
    waiting: Mutex<Vec<(String, bool, bool)>>,
    write_queued: AtomicBool,
}

impl AckQueue {
    /// Adds one; true if the caller must queue the write that takes it.
    pub(super) fn push(&self, payment_id: String, debit: bool, credit: bool) -> bool {
        self.lock().push((payment_id, debit, credit));
        !self.write_queued.swap(true, Ordering::AcqRel)
    }

    /// Everything waiting, for the write now running. The flag is cleared first, so an
    /// acknowledgement added after this never waits for a write that will not come.
    fn take(&self) -> Vec<(String, bool, bool)> {
        self.write_queued.store(false, Ordering::Release);
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(String, bool, bool)>> {
        // A push or take cannot leave the list half changed.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Owned by the queued acknowledgement write: if the write is dropped without running (its
/// batch failed before it), the next acknowledgement queues a new one.
pub(super) struct AckWriteQueued {
    queue: Arc<AckQueue>,
    taken: bool,
}

impl AckWriteQueued {
    /// Called by whoever [`AckQueue::push`] told to queue the write.
    pub(super) fn new(queue: &Arc<AckQueue>) -> Self {
        AckWriteQueued {
            queue: Arc::clone(queue),
            taken: false,
        }
    }

    pub(super) fn take(&mut self) -> Vec<(String, bool, bool)> {
        self.taken = true;
        self.queue.take()
    }
}

impl Drop for AckWriteQueued {
    fn drop(&mut self) {
        if !self.taken {
            self.queue.write_queued.store(false, Ordering::Release);
        }
    }
}
