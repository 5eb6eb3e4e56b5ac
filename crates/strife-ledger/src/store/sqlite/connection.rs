//! The SQLite connections' shared parts, which every other file of the backend builds on: the
//! read connection ([`Reader`]; the writer is `strife_common`'s `GroupCommit`) and how a
//! SQLite error is answered ([`storage`]).

use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;
use strife_common::Failure;

/// The read connection. Point lookups run on the caller's thread (they take microseconds, less
/// than a hand-off to the blocking pool); scans go to the blocking pool.
#[derive(Clone)]
pub(super) struct Reader(pub(super) Arc<Mutex<Connection>>);

impl Reader {
    pub(super) fn lock(&self) -> MutexGuard<'_, Connection> {
        // Reads change nothing, so a poisoned lock is still safe to use.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) async fn scan<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, Failure> {
        let reader = self.clone();
        tokio::task::spawn_blocking(move || work(&reader.lock()))
            .await
            .map_err(|error| Failure::internal("blocking worker", error))?
    }
}

/// Storage trouble (disk full, I/O error) is a transient `UNAVAILABLE`; anything else
/// `INTERNAL`.
pub(super) fn storage(error: rusqlite::Error) -> Failure {
    strife_common::storage::storage_failure("gateway.db", error)
}
