//! The bounded pool argon2id checks run on: at most one blocking thread per CPU, with a wait
//! queue for gRPC logins and a smaller one of its own for console logins, so neither can fill
//! the other's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use strife_common::limits::{MAX_WAITING_CONSOLE_PASSWORD_CHECKS, MAX_WAITING_PASSWORD_CHECKS};
use strife_common::Failure;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Which wait queue a password check stands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Queue {
    Grpc,
    Console,
}

/// Runs argon2id checks on at most one thread per CPU, with bounded queues in front: one for
/// gRPC logins, a much smaller one for console logins, which also run on at most half the
/// CPUs (at least one), so console logins can neither fill the gRPC queue nor take every CPU.
pub(super) struct VerifyPool {
    permits: Arc<Semaphore>,
    console_permits: Arc<Semaphore>,
    pub(super) waiting: AtomicUsize,
    pub(super) console_waiting: AtomicUsize,
}

/// Leaves the wait queue when the waiter gets a permit or goes away.
pub(super) struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The right to run one argon2id check now (held until it is done).
pub(super) struct CheckPermit {
    _cpu: OwnedSemaphorePermit,
    _console: Option<OwnedSemaphorePermit>,
}

impl VerifyPool {
    pub(super) fn new() -> Self {
        Self::with_permits(
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        )
    }

    pub(super) fn with_permits(permits: usize) -> Self {
        VerifyPool {
            permits: Arc::new(Semaphore::new(permits)),
            console_permits: Arc::new(Semaphore::new((permits / 2).max(1))),
            waiting: AtomicUsize::new(0),
            console_waiting: AtomicUsize::new(0),
        }
    }

    pub(super) async fn acquire(&self, queue: Queue) -> Result<CheckPermit, Failure> {
        let (waiting, bound) = match queue {
            Queue::Grpc => (&self.waiting, MAX_WAITING_PASSWORD_CHECKS),
            Queue::Console => (&self.console_waiting, MAX_WAITING_CONSOLE_PASSWORD_CHECKS),
        };
        let mut console = match queue {
            Queue::Grpc => None,
            Queue::Console => Arc::clone(&self.console_permits).try_acquire_owned().ok(),
        };
        if queue == Queue::Grpc || console.is_some() {
            if let Ok(cpu) = Arc::clone(&self.permits).try_acquire_owned() {
                return Ok(CheckPermit {
                    _cpu: cpu,
                    _console: console,
                });
            }
        }
        waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |count| {
                (count < bound).then_some(count + 1)
            })
            .map_err(|_| {
                Failure::ResourceExhausted(
                    "the gateway is busy checking passwords; try again shortly".into(),
                )
            })?;
        let _waiting = Waiting(waiting);
        let closed = |error| Failure::internal("password check pool", error);
        if queue == Queue::Console && console.is_none() {
            console = Some(
                Arc::clone(&self.console_permits)
                    .acquire_owned()
                    .await
                    .map_err(closed)?,
            );
        }
        let cpu = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(closed)?;
        Ok(CheckPermit {
            _cpu: cpu,
            _console: console,
        })
    }
}
