//! Which store the gateway uses and opening it: [`StoreLocation`] (`--store`), [`open`],
//! [`open_log`], and the store's [`identity`]. The one file of the store that knows both
//! backends (they know only `interface.rs`).

use std::path::PathBuf;
use std::sync::Arc;

use strife_common::layout::Layout;
use strife_common::storage::store_identity::StoreIdentity;

use super::interface::{GatewayLog, GatewayStore};
use super::postgres::{PostgresGatewayLog, PostgresGatewayStore, PostgresLocation};
use super::sqlite::{self, SqliteGatewayLog, SqliteGatewayStore};

/// Where the gateway's store is: `--store sqlite` (the default: `gateway/gateway.db` under the
/// data dir) or `--store postgres://…` / `postgresql://…`.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    Postgres(Box<PostgresLocation>),
}

impl StoreLocation {
    /// The value `--store` takes when not given.
    pub const DEFAULT: &'static str = "sqlite";

    /// Parses a `--store` value. Errors never contain a password from the URL.
    pub fn parse(text: &str, layout: &Layout) -> anyhow::Result<Self> {
        let text = text.trim();
        if text == Self::DEFAULT {
            return Ok(StoreLocation::Sqlite(layout.gateway_db()));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres(Box::new(PostgresLocation::parse(
                text,
            )?)));
        }
        // Only the scheme is echoed: the rest may be a mistyped URL with a password in it.
        let scheme = text.split_once("://").map_or("", |(scheme, _)| scheme);
        anyhow::bail!(
            "--store must be `sqlite` (the data dir's gateway/gateway.db) or a postgres:// or \
             postgresql:// URL{}",
            if scheme.is_empty() {
                String::new()
            } else {
                format!(", not a {scheme}:// URL")
            }
        )
    }

    /// How messages and logs name the store (a PostgreSQL URL without its password).
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Sqlite(path) => path.display().to_string(),
            StoreLocation::Postgres(location) => location.redacted().to_owned(),
        }
    }

    /// Whether other processes may use the same store at the same time (a database server),
    /// as opposed to a file only this process may hold.
    pub fn is_shared(&self) -> bool {
        matches!(self, StoreLocation::Postgres(_))
    }
}

/// Opens the gateway's store for serving, checking (or, where allowed, creating) its identity
/// and schema.
pub async fn open(
    location: &StoreLocation,
    identity: &StoreIdentity,
) -> anyhow::Result<Arc<dyn GatewayStore>> {
    Ok(match location {
        StoreLocation::Sqlite(path) => Arc::new(SqliteGatewayStore::open(path, identity)?),
        StoreLocation::Postgres(location) => {
            Arc::new(PostgresGatewayStore::open(location, identity).await?)
        }
    })
}

/// Opens the gateway's log read-only (what `strife audit` reads), while a gateway may be
/// running on it. `None` for a SQLite database that does not exist (a gateway that never ran
/// logged nothing). A PostgreSQL database must be `identity`'s network's.
pub async fn open_log(
    location: &StoreLocation,
    identity: &StoreIdentity,
) -> anyhow::Result<Option<Arc<dyn GatewayLog>>> {
    Ok(match location {
        StoreLocation::Sqlite(path) => {
            SqliteGatewayLog::open_read_only(path)?.map(|log| Arc::new(log) as Arc<dyn GatewayLog>)
        }
        StoreLocation::Postgres(location) => Some(Arc::new(
            PostgresGatewayLog::open(location, identity).await?,
        )),
    })
}

/// The gateway store's identity in `layout`'s data dir: whose database it is (checked, or on
/// `initialize` created, when a store opens). The schema version in it is the SQLite file's;
/// PostgreSQL stamps its own in `strife_schema` ([`super::postgres::SCHEMA_VERSION`]): each
/// backend counts its versions, since the two schemas grew separately.
pub fn identity(layout: &Layout, ca_fingerprint: String, initialize: bool) -> StoreIdentity {
    StoreIdentity::gateway(layout, ca_fingerprint, sqlite::SCHEMA_VERSION, initialize)
}
