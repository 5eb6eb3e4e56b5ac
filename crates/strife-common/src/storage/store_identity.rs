//! A database knows whose it is, and the data dir remembers that it had one.
//!
//! Each store database carries a `meta` table: identity (`bank:<id>` or `gateway`), the
//! SHA-256 fingerprint of the CA it was created under, a random creation id, and its creation
//! time; its schema version is `PRAGMA user_version`. When a database is created, a marker is
//! also written *outside* its directory (`<dir>/state/<name>.created`). Together they catch the
//! operator mistakes that would otherwise misdirect money:
//!
//! - the database file is missing or emptied but the marker says it existed: starting fresh
//!   would reissue account numbers from `…-00000001` to new owners, so we refuse unless the
//!   operator says `--initialize`;
//! - the database belongs to another bank, another network (other CA) or another creation of
//!   this one (creation id differs from the marker): refused as foreign;
//! - the database was written by a newer Strife (higher schema version): refused.
//!
//! An older database is migrated when it is opened ([`apply_schema_migrating`]): the store's
//! ordered [`Migration`]s above the file's version, then the current schema, then the new
//! version, in one transaction. A file from before databases knew their identity (version 0,
//! no `meta`) is adopted: migrated, then given its identity.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// Who a database must belong to, and where its creation marker lives.
#[derive(Debug, Clone)]
pub struct StoreIdentity {
    /// `bank:<id>` or `gateway`.
    pub identity: String,
    /// How messages name the owner, e.g. "bank0" or "the gateway".
    pub display: String,
    /// SHA-256 (hex) of the CA certificate (DER) of this network.
    pub ca_fingerprint: String,
    /// The creation marker, outside the database's own directory.
    pub marker: PathBuf,
    /// The schema version this binary writes and understands.
    pub schema_version: i64,
    /// `--initialize`: a missing or empty database may be created although the marker says
    /// one existed before.
    pub initialize: bool,
    /// The flag that allows a fresh start, for the refusal message.
    pub initialize_hint: String,
    /// "bank" or "gateway", for the refusal message.
    pub kind: &'static str,
}

impl StoreIdentity {
    /// Bank `bank_id`'s database, in the data dir of `layout`.
    pub fn bank(
        layout: &crate::layout::Layout,
        bank_id: &str,
        ca_fingerprint: String,
        schema_version: i64,
        initialize: bool,
    ) -> Self {
        StoreIdentity {
            identity: format!("bank:{bank_id}"),
            display: bank_id.to_owned(),
            ca_fingerprint,
            marker: layout.bank_marker(bank_id),
            schema_version,
            initialize,
            initialize_hint: format!("`strife bank --id {bank_id} --initialize`"),
            kind: "bank",
        }
    }

    /// The gateway's database, in the data dir of `layout`.
    pub fn gateway(
        layout: &crate::layout::Layout,
        ca_fingerprint: String,
        schema_version: i64,
        initialize: bool,
    ) -> Self {
        StoreIdentity {
            identity: "gateway".to_owned(),
            display: "the gateway".to_owned(),
            ca_fingerprint,
            marker: layout.gateway_marker(),
            schema_version,
            initialize,
            initialize_hint: "`strife gateway --initialize`".to_owned(),
            kind: "gateway",
        }
    }
}

/// The marker's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreationMarker {
    pub identity: String,
    pub creation_id: String,
    pub created_unix_ms: i64,
    /// The same instant, readable (RFC 3339, UTC).
    pub created: String,
    pub database: String,
}

impl CreationMarker {
    fn read(path: &Path) -> anyhow::Result<Option<CreationMarker>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("creation marker {} is not valid JSON", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Written to a temporary file, fsynced, then renamed over the old one, so the marker is
    /// either the old or the new one after a crash, never half of each.
    fn write(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let parent = path
            .parent()
            .with_context(|| format!("{} has no parent directory", path.display()))?;
        crate::storage::state_dir::create_private_dir(parent)?;
        let temporary = path.with_extension("created.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("writing {}", temporary.display()))?;
        file.write_all(&serde_json::to_vec_pretty(self)?)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", temporary.display()))?;
        crate::storage::state_dir::durable_rename(&temporary, path)
    }
}

/// Whether `path` holds no database at all (missing or zero bytes), checked before SQLite
/// opens it (opening creates the file).
pub fn is_absent(path: &Path) -> anyhow::Result<bool> {
    match std::fs::metadata(path) {
        Ok(metadata) => Ok(metadata.len() == 0),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// Refuses a fresh start where a database existed before, unless `--initialize`.
fn refuse_if_ran_before(path: &Path, identity: &StoreIdentity) -> anyhow::Result<()> {
    let Some(marker) = CreationMarker::read(&identity.marker)? else {
        return Ok(());
    };
    if !identity.initialize {
        anyhow::bail!(
            "{}'s database {} is missing or empty but {} has run before (created {}, \
             marker {}); restore it from backup, or start a new {} with {}",
            identity.display,
            path.display(),
            identity.display,
            marker.created,
            identity.marker.display(),
            identity.kind,
            identity.initialize_hint,
        );
    }
    tracing::warn!(
        database = %path.display(),
        previous_creation = %marker.created,
        "--initialize: starting a new, empty database where one existed before"
    );
    Ok(())
}

/// Called before SQLite opens `path` (opening creates the file): refuses a missing database
/// that existed before (unless `--initialize`), and removes `-wal`/`-shm` files left by the
/// lost one, which SQLite would otherwise read into the new database. Returns whether the
/// database is absent (missing or zero bytes).
pub fn before_open(path: &Path, identity: &StoreIdentity) -> anyhow::Result<bool> {
    if !is_absent(path)? {
        return Ok(false);
    }
    refuse_if_ran_before(path, identity)?;
    for suffix in ["-wal", "-shm"] {
        let mut stale = path.as_os_str().to_owned();
        stale.push(suffix);
        let stale = PathBuf::from(stale);
        match std::fs::remove_file(&stale) {
            Ok(()) => {
                tracing::warn!(file = %stale.display(), "removed a stale file of a missing database")
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(error).with_context(|| format!("removing stale {}", stale.display()))
            }
        }
    }
    Ok(true)
}

const META_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;";

/// One step of a database's schema history: the SQL that takes a file at version
/// `to_version - 1` to `to_version`. A store lists its steps in order; the current schema
/// (`CREATE … IF NOT EXISTS`) runs after them, so a step only changes what exists.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub to_version: i64,
    pub sql: &'static str,
}

/// [`apply_schema_migrating`] for a store without migration steps (every older version
/// differs from the current one only by what `schema` creates).
pub fn apply_schema_checked(
    connection: &Connection,
    path: &Path,
    schema: &str,
    identity: &StoreIdentity,
    absent: bool,
) -> anyhow::Result<()> {
    apply_schema_migrating(connection, path, schema, &[], identity, absent)
}

/// Applies `schema` to the database on `connection` (at `path`) after checking, or creating,
/// its identity; an older file is migrated first (`migrations` above its version, in order),
/// a newer one refused. `absent`: the file did not exist before this open ([`before_open`]
/// has already checked that a fresh start is allowed).
pub fn apply_schema_migrating(
    connection: &Connection,
    path: &Path,
    schema: &str,
    migrations: &[Migration],
    identity: &StoreIdentity,
    absent: bool,
) -> anyhow::Result<()> {
    let named = |what: &str| format!("{what} in {}", path.display());
    let tables: i64 = connection
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |row| row.get(0),
        )
        .with_context(|| named("reading the schema"))?;
    let has_meta: bool = connection
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |row| row.get::<_, i64>(0),
        )
        .with_context(|| named("reading the schema"))?
        > 0;
    if tables == 0 {
        // A valid SQLite file without a single table is as empty as a missing one.
        if !absent {
            refuse_if_ran_before(path, identity)?;
        }
        return create(connection, path, schema, identity);
    }
    let version = schema_version(connection, path)?;
    refuse_newer(path, version, identity)?;
    if has_meta {
        verify(connection, path, identity)?;
    }
    migrate(
        connection,
        path,
        schema,
        migrations,
        version,
        identity.schema_version,
    )?;
    if !has_meta {
        // A database from before databases knew their identity: adopt it as ours.
        tracing::warn!(database = %path.display(), "database has no identity yet; recording this one");
        return create(connection, path, schema, identity);
    }
    Ok(())
}

fn schema_version(connection: &Connection, path: &Path) -> anyhow::Result<i64> {
    connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .with_context(|| format!("reading the schema version in {}", path.display()))
}

/// Refuses a database written by a newer Strife: its tables may mean something this binary
/// does not know.
fn refuse_newer(path: &Path, version: i64, identity: &StoreIdentity) -> anyhow::Result<()> {
    anyhow::ensure!(
        version <= identity.schema_version,
        "database {} has schema version {version}, newer than this strife knows \
         ({}); run the newer strife, or restore a backup made by this version",
        path.display(),
        identity.schema_version
    );
    Ok(())
}

/// Brings a database at `version` to `target`: every step of `migrations` above `version`
/// (up to `target`) in order, then `schema`, then `PRAGMA user_version = target`, all in one
/// transaction, so a crash leaves the old version or the new one. At `target` already, only
/// `schema` runs (it creates nothing that exists).
fn migrate(
    connection: &Connection,
    path: &Path,
    schema: &str,
    migrations: &[Migration],
    version: i64,
    target: i64,
) -> anyhow::Result<()> {
    if version >= target {
        return connection
            .execute_batch(schema)
            .with_context(|| format!("applying the schema in {}", path.display()));
    }
    let result = (|| -> rusqlite::Result<()> {
        connection.execute_batch("BEGIN IMMEDIATE")?;
        let mut steps: Vec<&Migration> = migrations
            .iter()
            .filter(|step| step.to_version > version && step.to_version <= target)
            .collect();
        steps.sort_by_key(|step| step.to_version);
        for step in steps {
            connection.execute_batch(step.sql)?;
        }
        connection.execute_batch(schema)?;
        connection.pragma_update(None, "user_version", target)?;
        connection.execute_batch("COMMIT")
    })();
    if let Err(error) = result {
        let _ = connection.execute_batch("ROLLBACK");
        return Err(error).with_context(|| {
            format!(
                "migrating {} from schema version {version} to {target}",
                path.display()
            )
        });
    }
    tracing::info!(database = %path.display(), from = version, to = target, "database migrated");
    Ok(())
}

fn create(
    connection: &Connection,
    path: &Path,
    schema: &str,
    identity: &StoreIdentity,
) -> anyhow::Result<()> {
    let now = crate::time::now_unix_ms();
    let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    // Random (v4), not `keys::new_key`: a creation id is written once per database and is no
    // index key, so time order buys nothing; all 122 bits random tell apart two databases
    // created in the same millisecond (the creation time is stored beside it anyway).
    let creation_id = uuid::Uuid::new_v4().to_string();
    let statements = format!(
        "BEGIN IMMEDIATE;
         {schema}
         {META_SCHEMA}
         PRAGMA user_version = {};",
        identity.schema_version
    );
    let result = (|| -> rusqlite::Result<()> {
        connection.execute_batch(&statements)?;
        let mut insert =
            connection.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
        for (key, value) in [
            ("identity", identity.identity.as_str()),
            ("ca_fingerprint", identity.ca_fingerprint.as_str()),
            ("creation_id", creation_id.as_str()),
            ("created", created.as_str()),
        ] {
            insert.execute([key, value])?;
        }
        drop(insert);
        connection.execute_batch("COMMIT")
    })();
    if let Err(error) = result {
        let _ = connection.execute_batch("ROLLBACK");
        return Err(error).with_context(|| format!("creating {}", path.display()));
    }
    CreationMarker {
        identity: identity.identity.clone(),
        creation_id,
        created_unix_ms: now,
        created,
        database: path.display().to_string(),
    }
    .write(&identity.marker)?;
    tracing::info!(database = %path.display(), marker = %identity.marker.display(), "database created");
    Ok(())
}

fn verify(connection: &Connection, path: &Path, identity: &StoreIdentity) -> anyhow::Result<()> {
    let named = |what: &str| format!("{what} in {}", path.display());
    let meta = |key: &str| -> anyhow::Result<String> {
        connection
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()
            .with_context(|| named("reading meta"))?
            .with_context(|| format!("database {} has no {key} in its meta table", path.display()))
    };
    let stored_identity = meta("identity")?;
    anyhow::ensure!(
        stored_identity == identity.identity,
        "database {} belongs to {stored_identity}, not {}: it is a foreign database \
         (copied from another process's directory?); put the right file back",
        path.display(),
        identity.identity
    );
    let stored_ca = meta("ca_fingerprint")?;
    anyhow::ensure!(
        stored_ca == identity.ca_fingerprint,
        "database {} was created under another CA (fingerprint {stored_ca}, this network's \
         is {}): it is a foreign database from another network; put the right file back",
        path.display(),
        identity.ca_fingerprint
    );
    let creation_id = meta("creation_id")?;
    match CreationMarker::read(&identity.marker)? {
        Some(marker) if marker.creation_id != creation_id => anyhow::bail!(
            "database {} (creation {creation_id}) is not the one {} records \
             (creation {}, created {}): it is a foreign database, e.g. another copy of \
             {}; put the right file back",
            path.display(),
            identity.marker.display(),
            marker.creation_id,
            marker.created,
            identity.display,
        ),
        Some(_) => {}
        None => {
            // The state dir was lost but the database is ours: remember it again.
            let created = meta("created").unwrap_or_default();
            CreationMarker {
                identity: identity.identity.clone(),
                creation_id,
                created_unix_ms: 0,
                created,
                database: path.display().to_string(),
            }
            .write(&identity.marker)?;
            tracing::warn!(marker = %identity.marker.display(), "creation marker was missing; written again");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(dir: &tempfile::TempDir, schema_version: i64) -> StoreIdentity {
        StoreIdentity::gateway(
            &crate::layout::Layout::new(dir.path()),
            "ca".into(),
            schema_version,
            false,
        )
    }

    const SCHEMA_V1: &str = "CREATE TABLE IF NOT EXISTS t (a INTEGER PRIMARY KEY);";
    const SCHEMA_V3: &str = "CREATE TABLE IF NOT EXISTS t (
            a INTEGER PRIMARY KEY,
            b TEXT NOT NULL DEFAULT 'two'
        );
        CREATE INDEX IF NOT EXISTS t_by_b ON t (b);";
    /// Listed out of order on purpose: they run by version.
    const STEPS: &[Migration] = &[
        Migration {
            to_version: 3,
            sql: "UPDATE t SET b = b || '+3';",
        },
        Migration {
            to_version: 2,
            sql: "ALTER TABLE t ADD COLUMN b TEXT NOT NULL DEFAULT 'two';",
        },
    ];

    /// A version-1 database with rows 1..=3.
    fn version_one(dir: &tempfile::TempDir) -> (PathBuf, Connection) {
        let path = dir.path().join("db.sqlite");
        let connection = Connection::open(&path).unwrap();
        apply_schema_migrating(&connection, &path, SCHEMA_V1, &[], &identity(dir, 1), true)
            .unwrap();
        connection
            .execute_batch("INSERT INTO t (a) VALUES (1), (2), (3);")
            .unwrap();
        (path, connection)
    }

    fn version(connection: &Connection) -> i64 {
        connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn an_older_database_runs_its_steps_in_order_and_keeps_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let (path, connection) = version_one(&dir);
        apply_schema_migrating(
            &connection,
            &path,
            SCHEMA_V3,
            STEPS,
            &identity(&dir, 3),
            false,
        )
        .unwrap();
        assert_eq!(version(&connection), 3);
        let rows: Vec<(i64, String)> = connection
            .prepare("SELECT a, b FROM t ORDER BY a")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (1, "two+3".into()),
                (2, "two+3".into()),
                (3, "two+3".into())
            ]
        );
        // Opening again at the current version changes nothing.
        apply_schema_migrating(
            &connection,
            &path,
            SCHEMA_V3,
            STEPS,
            &identity(&dir, 3),
            false,
        )
        .unwrap();
        let b: String = connection
            .query_row("SELECT b FROM t WHERE a = 1", [], |row| row.get(0))
            .unwrap();
        assert_eq!(b, "two+3");
    }

    #[test]
    fn a_failing_step_leaves_the_database_at_its_old_version() {
        let dir = tempfile::tempdir().unwrap();
        let (path, connection) = version_one(&dir);
        let broken = [Migration {
            to_version: 2,
            sql: "ALTER TABLE no_such_table ADD COLUMN c TEXT;",
        }];
        let error = apply_schema_migrating(
            &connection,
            &path,
            SCHEMA_V1,
            &broken,
            &identity(&dir, 2),
            false,
        )
        .unwrap_err();
        let message = format!("{error:#}");
        assert!(
            message.contains(&path.display().to_string())
                && message.contains("from schema version 1 to 2"),
            "{message}"
        );
        assert_eq!(version(&connection), 1);
        let rows: i64 = connection
            .query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 3);
    }

    #[test]
    fn a_newer_database_is_refused_naming_the_file_and_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let (path, connection) = version_one(&dir);
        connection.pragma_update(None, "user_version", 7).unwrap();
        let error = apply_schema_migrating(
            &connection,
            &path,
            SCHEMA_V1,
            &[],
            &identity(&dir, 1),
            false,
        )
        .unwrap_err();
        let message = format!("{error:#}");
        assert!(
            message.contains(&path.display().to_string())
                && message.contains("schema version 7")
                && message.contains("(1)"),
            "{message}"
        );
        assert_eq!(version(&connection), 7, "left as it was");
    }

    #[test]
    fn a_version_zero_file_without_identity_is_migrated_and_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let connection = Connection::open(&path).unwrap();
        connection
            .execute_batch("CREATE TABLE t (a INTEGER PRIMARY KEY); INSERT INTO t VALUES (9);")
            .unwrap();
        apply_schema_migrating(
            &connection,
            &path,
            SCHEMA_V3,
            STEPS,
            &identity(&dir, 3),
            false,
        )
        .unwrap();
        assert_eq!(version(&connection), 3);
        let b: String = connection
            .query_row("SELECT b FROM t WHERE a = 9", [], |row| row.get(0))
            .unwrap();
        assert_eq!(b, "two+3");
        let owner: String = connection
            .query_row("SELECT value FROM meta WHERE key = 'identity'", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(owner, "gateway");
        assert!(dir.path().join("state").join("gateway.created").exists());
    }
}
