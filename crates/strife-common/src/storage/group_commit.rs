//! Group commit for SQLite: one writer thread owns the write connection and runs every
//! pending write of a moment in one transaction, so many concurrent state changes share one
//! fsync instead of paying one each.
//!
//! Each write runs inside its own SAVEPOINT: a write that fails (or panics) is rolled back
//! alone and gets its error, the others still commit. Every caller's answer is sent only after
//! the shared COMMIT returned, so "durable before reply" holds for each of them. A write sees
//! the effects of the writes before it in the same batch, exactly as if they had committed
//! one by one in that order — which keeps single-writer reasoning (e.g. holds never exceeding
//! the available balance) true.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::metrics::GroupCommitObserver;
use crate::Failure;

/// Most writes sharing one transaction.
const MAX_BATCH: usize = 512;
/// Most writes waiting for the writer; callers block (back-pressure) beyond it.
const MAX_QUEUED: usize = 16_384;

/// Whether a write's caller must wait for the fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The answer waits until the write is on disk (the default for every state change).
    Fsync,
    /// The answer waits until the write is committed (visible, and safe from a process
    /// crash) but not for the fsync; the next fsynced commit makes it durable too, since the
    /// WAL is written in order. Only for writes whose loss on power failure is harmless.
    Relaxed,
}

trait Job: Send {
    fn durability(&self) -> Durability;
    /// Runs the write; true if it succeeded (and so must be committed).
    fn run(&mut self, connection: &Connection) -> bool;
    /// Delivers the outcome once the batch's COMMIT is known.
    fn finish(self: Box<Self>, committed: Result<(), Failure>);
}

type Reply<T> = Box<dyn FnOnce(Result<T, Failure>) + Send>;

struct TypedJob<T, F> {
    durability: Durability,
    work: Option<F>,
    outcome: Option<Result<T, Failure>>,
    reply: Reply<T>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, Failure> + Send,
{
    fn durability(&self) -> Durability {
        self.durability
    }

    fn run(&mut self, connection: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| work(connection)))
            .unwrap_or_else(|_| Err(Failure::internal("storage write", "the write panicked")));
        let succeeded = outcome.is_ok();
        self.outcome = Some(outcome);
        succeeded
    }

    fn finish(self: Box<Self>, committed: Result<(), Failure>) {
        let result = match (self.outcome, committed) {
            // A failed write was rolled back to its savepoint: its own error stands.
            (Some(Err(failure)), _) => Err(failure),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Ok(_)), Err(failure)) | (None, Err(failure)) => Err(failure),
            (None, Ok(())) => Err(Failure::internal("storage write", "write was never run")),
        };
        (self.reply)(result);
    }
}

/// The handle to a database's single writer.
pub struct GroupCommit {
    sender: mpsc::SyncSender<Box<dyn Job>>,
}

impl GroupCommit {
    /// Starts the writer thread on `connection` (which it owns from now on); `file` names
    /// the database in storage failures. Its batches are recorded in the group-commit
    /// metrics under `store="other"`; see [`GroupCommit::start_observed`].
    pub fn start(connection: Connection, name: &str, file: &str) -> std::io::Result<Self> {
        Self::start_observed(connection, name, file, "other")
    }

    /// [`GroupCommit::start`], recording each batch's size and commit time in the
    /// process's group-commit metrics ([`crate::metrics::group_commit`]) labelled
    /// `store` (`gateway`, `bank`).
    pub fn start_observed(
        connection: Connection,
        name: &str,
        file: &str,
        store: &'static str,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::sync_channel::<Box<dyn Job>>(MAX_QUEUED);
        let file = file.to_owned();
        let observer = crate::metrics::group_commit().observer(store);
        std::thread::Builder::new()
            .name(format!("{name}-writer"))
            .spawn(move || write_loop(&connection, &receiver, &file, &observer))?;
        Ok(GroupCommit { sender })
    }

    fn enqueue<T, F>(&self, durability: Durability, work: F, reply: Reply<T>)
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
    {
        let job = Box::new(TypedJob {
            durability,
            work: Some(work),
            outcome: None,
            reply,
        });
        if let Err(mpsc::SendError(job)) = self.sender.send(job) {
            job.finish(Err(Failure::internal(
                "storage write",
                "the writer has stopped",
            )));
        }
    }

    /// Queues a write; the receiver yields its result after it is durable.
    pub fn submit<T, F>(&self, work: F) -> oneshot::Receiver<Result<T, Failure>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
    {
        self.submit_with(Durability::Fsync, work)
    }

    /// Queues a write with the given durability.
    pub fn submit_with<T, F>(
        &self,
        durability: Durability,
        work: F,
    ) -> oneshot::Receiver<Result<T, Failure>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        self.enqueue(
            durability,
            work,
            Box::new(move |result| {
                let _ = sender.send(result);
            }),
        );
        receiver
    }

    /// Runs a write and waits (asynchronously) until it is durable. The caller's task never
    /// occupies a thread while the write waits for its batch's fsync.
    pub async fn run<T, F>(&self, work: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
    {
        self.run_with(Durability::Fsync, work).await
    }

    /// Like [`GroupCommit::run`] with the given durability.
    pub async fn run_with<T, F>(&self, durability: Durability, work: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
    {
        self.submit_with(durability, work)
            .await
            .map_err(|_| Failure::internal("storage write", "the writer dropped the reply"))?
    }

    /// Runs a write and waits (blocking this thread) until it is durable. Safe to call from
    /// any thread, including one driving an async runtime at startup.
    pub fn write<T, F>(&self, work: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
    {
        let (sender, receiver) = mpsc::sync_channel(1);
        self.enqueue(
            Durability::Fsync,
            work,
            Box::new(move |result| {
                let _ = sender.send(result);
            }),
        );
        receiver
            .recv()
            .map_err(|_| Failure::internal("storage write", "the writer dropped the reply"))?
    }
}

fn write_loop(
    connection: &Connection,
    receiver: &mpsc::Receiver<Box<dyn Job>>,
    file: &str,
    observer: &GroupCommitObserver,
) {
    let storage = |error| crate::storage::storage_failure(file, error);
    let mut relaxed_now = false;
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // One fsync-requiring write makes the whole batch fsync.
        let relaxed = batch
            .iter()
            .all(|job| job.durability() == Durability::Relaxed);
        if relaxed != relaxed_now {
            let mode = if relaxed {
                "PRAGMA synchronous = NORMAL"
            } else {
                "PRAGMA synchronous = FULL"
            };
            match control(connection, mode) {
                Ok(()) => relaxed_now = relaxed,
                Err(error) => tracing::error!(%error, "cannot switch synchronous mode"),
            }
        }
        if relaxed_now && !relaxed {
            // The switch back to FULL failed: never commit an fsync write unsynced.
            for job in batch {
                job.finish(Err(Failure::internal(
                    "storage write",
                    "cannot restore synchronous=FULL",
                )));
            }
            continue;
        }
        if !connection.is_autocommit() {
            // A transaction left open by a failed COMMIT and ROLLBACK (e.g. disk full) would
            // make every later BEGIN fail; end it, so writes work again once the disk does.
            let _ = connection.execute_batch("ROLLBACK");
        }
        let began = Instant::now();
        if let Err(error) = control(connection, "BEGIN IMMEDIATE") {
            let failure = storage(error);
            for job in batch {
                job.finish(Err(failure.clone()));
            }
            continue;
        }
        let mut rolled_back = false;
        for job in batch.iter_mut() {
            if control(connection, "SAVEPOINT write").is_err() {
                continue;
            }
            let succeeded = job.run(connection);
            if connection.is_autocommit() {
                // SQLite rolled the whole transaction back itself (it may on SQLITE_FULL,
                // IOERR or NOMEM): every write of this batch so far is gone, and the writes
                // after it would run outside the batch's transaction. Fail them all.
                rolled_back = true;
                break;
            }
            let end = if succeeded {
                control(connection, "RELEASE write")
            } else {
                control(connection, "ROLLBACK TO write")
                    .and_then(|()| control(connection, "RELEASE write"))
            };
            if let Err(error) = end {
                tracing::error!(%error, "savepoint cleanup failed");
            }
        }
        if rolled_back {
            tracing::warn!(file, "storage failure rolled back a whole batch");
            let failure = Failure::Unavailable(format!("storage write failed at {file}; retry"));
            for job in batch {
                job.finish(Err(failure.clone()));
            }
            continue;
        }
        let committed = control(connection, "COMMIT").map_err(|error| {
            let _ = connection.execute_batch("ROLLBACK");
            storage(error)
        });
        observer.batch(batch.len(), began.elapsed());
        for job in batch {
            job.finish(committed.clone());
        }
    }
}

/// Runs one transaction-control statement (BEGIN, SAVEPOINT, RELEASE, COMMIT …) through the
/// connection's statement cache. Every write is wrapped in a savepoint, so these run several
/// times per write; `execute_batch` would parse and plan each of them every time, which was a
/// measurable share of the writer threads' CPU.
fn control(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> (tempfile::TempDir, GroupCommit, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        let connection = Connection::open(&path).unwrap();
        connection
            .execute_batch(
                "PRAGMA journal_mode=WAL; CREATE TABLE t (v INTEGER NOT NULL CHECK (v >= 0));",
            )
            .unwrap();
        (
            dir,
            GroupCommit::start(connection, "test", "test.db").unwrap(),
            path,
        )
    }

    fn count(path: &std::path::Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
            .unwrap()
    }

    /// Holds the writer thread inside a write until the returned sender is dropped or used,
    /// so everything submitted meanwhile is queued and goes out as the next batch, together.
    fn hold_writer(writer: &GroupCommit) -> (std::sync::mpsc::Sender<()>, GateReceiver) {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (entered, entered_receiver) = std::sync::mpsc::channel::<()>();
        let gate = writer.submit(move |_| {
            let _ = entered.send(());
            let _ = released.recv();
            Ok(())
        });
        entered_receiver.recv().unwrap();
        (release, gate)
    }

    type GateReceiver = oneshot::Receiver<Result<(), Failure>>;

    /// Rows in `t` as a separate connection sees them: committed rows only.
    fn committed(path: &std::path::Path) -> Result<i64, Failure> {
        Connection::open(path)
            .and_then(|reader| reader.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0)))
            .map_err(|e| Failure::internal("t", e))
    }

    fn own_count(connection: &Connection) -> Result<i64, Failure> {
        connection
            .query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
            .map_err(|e| Failure::internal("t", e))
    }

    #[test]
    fn a_failed_write_is_rolled_back_alone() {
        let (_dir, writer, path) = writer();
        let (release, gate) = hold_writer(&writer);
        let good = writer.submit(|connection| {
            connection
                .execute("INSERT INTO t VALUES (1)", [])
                .map_err(|e| Failure::internal("t", e))
        });
        let reader_path = path.clone();
        let bad = writer.submit(move |connection| {
            // Same batch, same transaction: the good write's row is visible here and not yet
            // committed. (An Ok(..) here would make the test fail below, not pass.)
            if own_count(connection)? != 1 || committed(&reader_path)? != 0 {
                return Ok(0);
            }
            connection
                .execute("INSERT INTO t VALUES (2)", [])
                .map_err(|e| Failure::internal("t", e))?;
            connection
                .execute("INSERT INTO t VALUES (-1)", [])
                .map_err(|e| Failure::internal("t", e))
        });
        drop(release);
        assert!(gate.blocking_recv().unwrap().is_ok());
        assert!(good.blocking_recv().unwrap().is_ok());
        let bad = bad.blocking_recv().unwrap();
        assert!(
            matches!(bad, Err(Failure::Internal(_))),
            "the bad write must fail its CHECK inside the good write's batch: {bad:?}"
        );
        assert_eq!(
            count(&path),
            1,
            "the failed write's first insert was rolled back too, the good one kept"
        );
    }

    #[test]
    fn concurrent_writes_share_one_commit() {
        const WRITES: i64 = 20;
        let (_dir, writer, path) = writer();
        let (release, gate) = hold_writer(&writer);
        let replies: Vec<_> = (0..WRITES)
            .map(|value| {
                let reader_path = path.clone();
                writer.submit(move |connection| {
                    connection
                        .execute("INSERT INTO t VALUES (?1)", [value])
                        .map_err(|e| Failure::internal("t", e))?;
                    // What this write's transaction sees, and what is committed meanwhile.
                    Ok((own_count(connection)?, committed(&reader_path)?))
                })
            })
            .collect();
        drop(release);
        assert!(gate.blocking_recv().unwrap().is_ok());
        for (index, reply) in (1..).zip(replies) {
            let (own, committed) = reply.blocking_recv().unwrap().unwrap();
            assert_eq!(own, index, "each write sees the writes queued before it");
            assert_eq!(
                committed, 0,
                "nothing of the batch is committed before its end"
            );
        }
        assert_eq!(count(&path), WRITES, "one commit made all of them durable");
    }

    #[test]
    fn a_panicking_write_fails_without_killing_the_writer() {
        let (_dir, writer, path) = writer();
        let panicking = writer.submit::<(), _>(|_| panic!("boom"));
        assert!(panicking.blocking_recv().unwrap().is_err());
        writer
            .write(|connection| {
                connection
                    .execute("INSERT INTO t VALUES (3)", [])
                    .map_err(|e| Failure::internal("t", e))
            })
            .unwrap();
        assert_eq!(count(&path), 1);
    }

    #[test]
    fn a_full_database_is_transient_and_the_writer_works_again_with_space() {
        let (_dir, writer, path) = writer();
        let file = "test.db";
        let storage = move |error| crate::storage::storage_failure(file, error);
        // max_page_count makes SQLite answer SQLITE_FULL exactly as a full disk does.
        writer
            .write(move |connection| {
                connection
                    .query_row("PRAGMA max_page_count = 4", [], |_| Ok(()))
                    .map_err(storage)
            })
            .unwrap();
        let mut refused = None;
        for value in 0..1_000 {
            let written = writer.write(move |connection| {
                connection
                    .execute(
                        "INSERT INTO t VALUES (?1 + 0 * length(zeroblob(3000)))",
                        [value],
                    )
                    .map_err(storage)?;
                connection
                    .execute("CREATE TABLE IF NOT EXISTS big (b BLOB)", [])
                    .map_err(storage)?;
                connection
                    .execute("INSERT INTO big VALUES (zeroblob(3000))", [])
                    .map_err(storage)
            });
            if let Err(failure) = written {
                refused = Some(failure);
                break;
            }
        }
        assert_eq!(
            refused,
            Some(Failure::Unavailable(
                "storage write failed at test.db; retry".into()
            ))
        );
        let before = count(&path);
        writer
            .write(move |connection| {
                connection
                    .query_row("PRAGMA max_page_count = 100000", [], |_| Ok(()))
                    .map_err(storage)
            })
            .unwrap();
        writer
            .write(move |connection| {
                connection
                    .execute("INSERT INTO t VALUES (7)", [])
                    .map_err(storage)
            })
            .unwrap();
        assert_eq!(count(&path), before + 1, "writes work again");
    }

    #[test]
    fn many_concurrent_writes_all_land() {
        let (_dir, writer, path) = writer();
        let writer = std::sync::Arc::new(writer);
        let threads: Vec<_> = (0..50)
            .map(|value| {
                let writer = std::sync::Arc::clone(&writer);
                std::thread::spawn(move || {
                    writer.write(move |connection| {
                        connection
                            .execute("INSERT INTO t VALUES (?1)", [value])
                            .map_err(|e| Failure::internal("t", e))
                    })
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap().unwrap();
        }
        assert_eq!(count(&path), 50);
    }
}
