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
        crate::state_dir::create_private_dir(parent)?;
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
        crate::state_dir::durable_rename(&temporary, path)
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

/// Applies `schema` to the database on `connection` (at `path`) after checking, or creating,
/// its identity. `absent`: the file did not exist before this open ([`before_open`] has
/// already checked that a fresh start is allowed).
pub fn apply_schema_checked(
    connection: &Connection,
    path: &Path,
    schema: &Schema<'_>,
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
        return create(connection, path, schema.current, identity);
    }
    if !has_meta {
        // A database from before databases knew their identity (it has version 1's tables):
        // bring it to the current schema, then adopt it as ours.
        tracing::warn!(database = %path.display(), "database has no identity yet; recording this one");
        migrate(connection, path, schema, 1, identity.schema_version)?;
        return create(connection, path, schema.current, identity);
    }
    verify(connection, path, identity)?;
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .with_context(|| named("reading the schema version"))?;
    migrate(connection, path, schema, version, identity.schema_version)
}

/// A database's schema: the current one (for a new file; every statement `IF NOT EXISTS`)
/// and the ordered steps that bring an older file to it.
#[derive(Debug, Clone, Copy)]
pub struct Schema<'a> {
    pub current: &'a str,
    pub migrations: &'a [Migration],
}

/// One schema step: SQL that turns a version-`from_version` database into version
/// `from_version + 1`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub from_version: i64,
    pub sql: &'static str,
}

/// Runs every migration from `version` on, then the current schema (new tables and indexes),
/// and records `target` — all in one transaction, so a crash leaves the old version intact.
fn migrate(
    connection: &Connection,
    path: &Path,
    schema: &Schema<'_>,
    version: i64,
    target: i64,
) -> anyhow::Result<()> {
    let steps: Vec<&Migration> = schema
        .migrations
        .iter()
        .filter(|step| step.from_version >= version && step.from_version < target)
        .collect();
    let mut statements = String::from("BEGIN IMMEDIATE;\n");
    for step in &steps {
        statements.push_str(step.sql);
        statements.push('\n');
    }
    statements.push_str(schema.current);
    if version < target {
        statements.push_str(&format!("\nPRAGMA user_version = {target};"));
    }
    statements.push_str("\nCOMMIT;");
    if let Err(error) = connection.execute_batch(&statements) {
        let _ = connection.execute_batch("ROLLBACK");
        return Err(error).with_context(|| {
            format!(
                "migrating {} from schema version {version} to {target}",
                path.display()
            )
        });
    }
    if version < target {
        tracing::info!(database = %path.display(), from = version, to = target, "schema migrated");
    }
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
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .with_context(|| named("reading the schema version"))?;
    anyhow::ensure!(
        version <= identity.schema_version,
        "database {} has schema version {version}, newer than this strife knows \
         ({}); run the newer strife, or restore a backup made by this version",
        path.display(),
        identity.schema_version
    );
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
