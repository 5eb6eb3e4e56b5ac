//! SQLite helpers shared by the stores: how every database is opened (WAL,
//! `synchronous=FULL`), cached statements, the background WAL checkpointer, and a store's
//! connections opened together ([`open_store`]).

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
        crate::storage::state_dir::create_private_dir(parent)?;
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
///
/// A failed checkpoint (disk full, I/O error) drops its connection and the next round opens
/// a fresh one, so no state a failure left in the old connection can keep checkpoints failing
/// once the disk is healthy again.
pub struct Checkpointer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Checkpointer {
    fn start(path: &std::path::Path, what: &str) -> anyhow::Result<Self> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let running = std::sync::Arc::clone(&stop);
        let mut connection = Some(open_connection(path, what)?);
        let path = path.to_owned();
        let what = what.to_owned();
        std::thread::Builder::new()
            .name(format!("{what}-checkpoint"))
            .spawn(move || {
                let mut failing = false;
                while !running.load(Ordering::Relaxed) {
                    std::thread::sleep(CHECKPOINT_INTERVAL);
                    if connection.is_none() {
                        connection = open_connection(&path, &what).ok();
                    }
                    let Some(open) = connection.as_ref() else {
                        continue;
                    };
                    // PASSIVE never blocks writers or readers; what it cannot copy now it
                    // copies next time.
                    match open.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                        row.get::<_, i64>(0)
                    }) {
                        Ok(_) if failing => {
                            failing = false;
                            tracing::info!(database = %path.display(), "WAL checkpoints work again");
                        }
                        Ok(_) => {}
                        Err(error) => {
                            // Logged once per bad spell, not every 500 ms.
                            if !failing {
                                tracing::warn!(database = %path.display(), %error, "WAL checkpoint failed; retrying on a fresh connection");
                            }
                            failing = true;
                            connection = None;
                        }
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

/// Whether the database behind `writer` takes a durable write now (readiness): one small row
/// in `meta`, written and fsynced like any state change, so a full disk or a failing device
/// shows up here before a payment meets it. `file` names the database in the failure.
pub async fn probe_write(
    writer: &crate::storage::group_commit::GroupCommit,
    file: &'static str,
) -> Result<(), crate::Failure> {
    writer
        .run(move |transaction| {
            transaction
                .execute_cached(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('probed_unix_ms', ?1)",
                    [crate::time::now_unix_ms().to_string()],
                )
                .map_err(|error| crate::storage::storage_failure(file, error))?;
            Ok(())
        })
        .await
}

/// A store's connections: the writer (schema applied, behind a
/// [`GroupCommit`](crate::storage::group_commit::GroupCommit) thread), a reader for committed
/// state, and the background checkpointer. The database's identity is checked (or, for a new
/// database, recorded) first: see [`crate::storage::store_identity`].
pub fn open_store(
    path: &std::path::Path,
    what: &str,
    schema: &str,
    identity: &crate::storage::store_identity::StoreIdentity,
) -> anyhow::Result<(
    crate::storage::group_commit::GroupCommit,
    Connection,
    Checkpointer,
)> {
    open_store_migrating(path, what, schema, &[], identity)
}

/// [`open_store`] for a store with migration steps: an older file is brought to
/// `identity.schema_version` by `migrations` (see [`crate::storage::store_identity::Migration`]).
pub fn open_store_migrating(
    path: &std::path::Path,
    what: &str,
    schema: &str,
    migrations: &[crate::storage::store_identity::Migration],
    identity: &crate::storage::store_identity::StoreIdentity,
) -> anyhow::Result<(
    crate::storage::group_commit::GroupCommit,
    Connection,
    Checkpointer,
)> {
    let absent = crate::storage::store_identity::before_open(path, identity)?;
    let writer = open_connection(path, what)?;
    if !absent {
        quick_check(&writer, path)?;
    }
    crate::storage::store_identity::apply_schema_migrating(
        &writer, path, schema, migrations, identity, absent,
    )?;
    let reader = open_connection(path, what)?;
    let checkpointer = Checkpointer::start(path, what)?;
    let file = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| what.to_owned());
    Ok((
        crate::storage::group_commit::GroupCommit::start_observed(
            writer,
            what,
            &file,
            identity.kind,
        )?,
        reader,
        checkpointer,
    ))
}
