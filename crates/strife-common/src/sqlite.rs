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
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let connection =
        Connection::open(path).with_context(|| format!("opening {what} {}", path.display()))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}

/// A store's two connections: the writer (schema applied, behind a [`GroupCommit`] thread)
/// and a reader for committed state.
pub fn open_store(
    path: &std::path::Path,
    what: &str,
    schema: &str,
) -> anyhow::Result<(crate::group_commit::GroupCommit, Connection)> {
    let writer = open_connection(path, what)?;
    writer.execute_batch(schema)?;
    let reader = open_connection(path, what)?;
    Ok((
        crate::group_commit::GroupCommit::start(writer, what)?,
        reader,
    ))
}
