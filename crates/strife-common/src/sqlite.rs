//! SQLite helpers shared by the stores.

use rusqlite::{Connection, Params, Row};

/// Statements prepared once per connection and reused: the hot paths run the same few SQL
/// texts thousands of times a second, and parsing them each time showed in profiles.
pub trait CachedStatements {
    fn execute_cached<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn query_row_cached<T, P: Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        read: F,
    ) -> rusqlite::Result<T>;
}

impl CachedStatements for Connection {
    fn execute_cached<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn query_row_cached<T, P: Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        read: F,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, read)
    }
}

/// Opens `path` (creating its folder) the way every Strife database is opened: WAL, with
/// `synchronous=FULL` so a commit is fsynced before it returns and a crash at any instant
/// leaves the last committed state; foreign keys on; a bounded busy wait; room for the
/// statements the stores cache. `what` names the database in errors.
pub fn open_connection(path: &std::path::Path, what: &str) -> anyhow::Result<Connection> {
    use anyhow::Context;
    if let Some(parent) = path.parent() {
        crate::state_dir::create_private_dir(parent)?;
    }
    // Every error names the file: "file is not a database" alone does not say which one.
    let named = || format!("opening {what} {}", path.display());
    let connection = Connection::open(path).with_context(named)?;
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .with_context(named)?;
    connection
        .pragma_update(None, "synchronous", "FULL")
        .with_context(named)?;
    connection
        .pragma_update(None, "foreign_keys", "ON")
        .with_context(named)?;
    connection
        .busy_timeout(std::time::Duration::from_secs(5))
        .with_context(named)?;
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}

/// How many problems `quick_check` reports at most; the first few say enough.
const QUICK_CHECK_LINES: u32 = 5;

/// Refuses a database whose pages are damaged (`PRAGMA quick_check`: b-tree structure,
/// record formats, NOT NULL/CHECK constraints — not index contents, which the full
/// `integrity_check` compares and which costs several times more). Serving from a corrupt
/// page could answer with wrong balances; refusing to start makes the operator restore it.
pub fn quick_check(connection: &Connection, path: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let started = std::time::Instant::now();
    let problems: Vec<String> = connection
        .prepare(&format!("PRAGMA quick_check({QUICK_CHECK_LINES})"))
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .with_context(|| {
            format!(
                "integrity check of {} failed; restore it from backup",
                path.display()
            )
        })?;
    if problems.len() == 1 && problems[0] == "ok" {
        tracing::info!(database = %path.display(), elapsed_ms = started.elapsed().as_millis() as u64, "integrity check passed");
        return Ok(());
    }
    anyhow::bail!(
        "database {} is damaged (PRAGMA quick_check): {}; restore it from backup",
        path.display(),
        problems.join("; ")
    )
}

/// How often the background checkpointer folds the WAL back into the database file.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs WAL checkpoints on its own thread and connection. SQLite's automatic checkpoint runs
/// inside the commit that crosses its threshold (it showed as p99 spikes); with this thread
/// copying frames in the background, that in-commit checkpoint finds almost nothing left to
/// copy, and still restarts the WAL so the file stays small. Stops when dropped.
pub struct Checkpointer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Checkpointer {
    fn start(connection: Connection, what: &str) -> std::io::Result<Self> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let running = std::sync::Arc::clone(&stop);
        std::thread::Builder::new()
            .name(format!("{what}-checkpoint"))
            .spawn(move || {
                while !running.load(Ordering::Relaxed) {
                    std::thread::sleep(CHECKPOINT_INTERVAL);
                    // PASSIVE never blocks writers or readers; what it cannot copy now it
                    // copies next time.
                    if let Err(error) =
                        connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(%error, "WAL checkpoint failed");
                    }
                }
            })?;
        Ok(Checkpointer { stop })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A store's connections: the writer (schema applied, behind a [`GroupCommit`] thread), a
/// reader for committed state, and the background checkpointer. The database's identity is
/// checked (or, for a new database, recorded) first: see [`crate::store_identity`].
pub fn open_store(
    path: &std::path::Path,
    what: &str,
    schema: &str,
    identity: &crate::store_identity::StoreIdentity,
) -> anyhow::Result<(crate::group_commit::GroupCommit, Connection, Checkpointer)> {
    let absent = crate::store_identity::before_open(path, identity)?;
    let writer = open_connection(path, what)?;
    if !absent {
        quick_check(&writer, path)?;
    }
    crate::store_identity::apply_schema_checked(&writer, path, schema, identity, absent)?;
    let reader = open_connection(path, what)?;
    let checkpointer = Checkpointer::start(open_connection(path, what)?, what)?;
    Ok((
        crate::group_commit::GroupCommit::start(writer, what)?,
        reader,
        checkpointer,
    ))
}
