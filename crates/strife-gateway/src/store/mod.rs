//! The gateway's durable state behind one interface: users and their password hashes, linked
//! bank accounts, payments (the coordinator's log: every payment's decision and which legs
//! have acknowledged it) and idempotency records.
//!
//! Only this module and its backends know the gateway's schema. Everything else — the API,
//! the coordinator, `strife audit` — goes through [`GatewayStore`] (or, read-only,
//! [`GatewayLog`]). The rules a backend must keep, whatever its engine:
//!
//! - **Durable before reply**: a method that returns `Ok` after a write has committed it
//!   (fsynced or replicated as the engine defines it), except where a method's docs say the
//!   write is relaxed ([`GatewayStore::begin_payment`], [`GatewayStore::acknowledge`]).
//! - **Single assignment**: [`GatewayStore::decide`] changes a payment only while it is
//!   PENDING; every later caller gets the first decision back. This is what makes racing
//!   deciders (the payment's task, a bank's decision query, recovery, another replica) safe.
//! - **Idempotency inside the write**: [`GatewayStore::begin_payment`] reads what the key
//!   holds and applies [`crate::payment::begin`] in the same transaction that records the
//!   attempt, so two attempts under one key cannot both start.
//! - **Point lookups only** on a payment's path, so its cost does not grow with history.
//!
//! Backends: [`sqlite`] (embedded; the default under `--dir`) and [`postgres`] (a database
//! on a PostgreSQL server, which several gateway processes may share). [`StoreLocation`]
//! says which (`--store`), [`open`] and [`open_log`] open either.

pub mod postgres;
pub mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use strife_common::layout::Layout;
use strife_common::store_identity::StoreIdentity;
use strife_common::Failure;

use crate::lockout::SharedLogin;

pub use postgres::{PostgresGatewayLog, PostgresGatewayStore, PostgresLocation};
pub use sqlite::{SqliteGatewayLog, SqliteGatewayStore};

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

/// The schema version this binary writes; a database with a higher one was written by a
/// newer Strife and is refused.
pub const SCHEMA_VERSION: i64 = 2;

/// A payment's coordinator status; the codes match `strife.v1.PaymentStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Recorded, phase 1 running, no decision yet.
    Pending,
    Committed,
    Aborted,
}

impl PaymentStatus {
    pub fn code(self) -> i64 {
        match self {
            PaymentStatus::Pending => 1,
            PaymentStatus::Committed => 2,
            PaymentStatus::Aborted => 3,
        }
    }

    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(PaymentStatus::Pending),
            2 => Some(PaymentStatus::Committed),
            3 => Some(PaymentStatus::Aborted),
            _ => None,
        }
    }
}

/// One side of a payment: whose account at which bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    pub username: String,
    pub bank_id: String,
    pub account_number: String,
}

/// A payment as the coordinator logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    /// Position in the log; assigned by the store when the attempt is recorded.
    pub seq: i64,
    pub payment_id: String,
    pub idempotency_key: String,
    pub from: Party,
    pub to: Party,
    pub amount_minor: i64,
    pub currency: String,
    pub memo: String,
    pub status: PaymentStatus,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    pub debit_acked: bool,
    pub credit_acked: bool,
    pub decision_deadline_unix_ms: i64,
    pub created_unix_ms: i64,
    pub decided_unix_ms: Option<i64>,
    /// The replica that coordinates the payment until it is finished: the one that recorded
    /// it, or the survivor that claimed it after that one's etcd lease was gone.
    pub coordinator: String,
    /// Position in the decision order (what payment events are ordered by): assigned when
    /// the decision is written, in the order decisions commit; `None` while PENDING.
    pub decision_seq: Option<i64>,
}

/// What starting a payment under an idempotency key did ([`crate::payment::begin`] decided).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begun {
    /// A new attempt was recorded (PENDING); run it.
    Started(PaymentRecord),
    /// The key already has a final result; return it.
    Finished(PaymentRecord),
    /// The key's payment is still running.
    InFlight(PaymentRecord),
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub username: String,
    pub role: String,
    pub password_hash: String,
}

/// A bank account linked to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedAccount {
    pub username: String,
    pub bank_id: String,
    pub account_number: String,
    pub currency: String,
    pub holder_name: String,
}

/// How a login record changes, applied by the store to the record it read, in one write.
pub type LoginChange = Box<dyn FnOnce(Option<SharedLogin>) -> Option<SharedLogin> + Send>;

/// One consistent picture of the whole log, for reconciliation (`strife audit`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSnapshot {
    /// Every payment, in log order.
    pub payments: Vec<PaymentRecord>,
    /// Every linked account.
    pub links: Vec<LinkedAccount>,
}

/// Read-only access to the whole log: what `strife audit` needs, and all it may use.
#[async_trait]
pub trait GatewayLog: Send + Sync {
    /// Every payment and every link, as of one point in time (one read transaction).
    async fn snapshot(&self) -> Result<LogSnapshot, Failure>;
}

/// The gateway's database. See the module docs for the rules every backend keeps.
#[async_trait]
pub trait GatewayStore: GatewayLog {
    /// A durable write that changes nothing a request can see: `Ok` while the store takes
    /// writes (readiness, checked every second).
    async fn probe(&self) -> Result<(), Failure>;

    /// Creates a user; `ALREADY_EXISTS` if the name is taken.
    async fn insert_user(
        &self,
        username: &str,
        role: &str,
        password_hash: &str,
    ) -> Result<(), Failure>;

    async fn user(&self, username: &str) -> Result<Option<UserRecord>, Failure>;

    /// `username`'s shared failed-login record ([`crate::lockout`]), if any.
    async fn login(&self, username: &str) -> Result<Option<SharedLogin>, Failure>;

    /// Replaces `username`'s login record with `change(current)` (`None` deletes it), read and
    /// written in one atomic step, so failures reported by several replicas at once all
    /// count. May be relaxed: a lost update forgets at most one failure.
    async fn update_login(
        &self,
        username: &str,
        change: LoginChange,
    ) -> Result<Option<SharedLogin>, Failure>;

    /// Links an account to its owner (or updates its holder name). An account already linked
    /// to someone else is `ALREADY_EXISTS`.
    async fn link_account(&self, account: &LinkedAccount) -> Result<(), Failure>;

    /// Whether any account is linked at `bank_id` (a bank the network has had, even if it is
    /// not registered now). A point lookup on the primary key's prefix.
    async fn has_accounts_at(&self, bank_id: &str) -> Result<bool, Failure>;

    /// A user's linked accounts, oldest link first.
    async fn accounts_of(&self, username: &str) -> Result<Vec<LinkedAccount>, Failure>;

    /// Records a payment attempt under `(from user, key)`, or reports what the key already
    /// has. May return before the record is durable: until a decision is written (always
    /// durable, which makes this record durable too), losing it is harmless — the banks' legs
    /// of an unknown payment are aborted by presumption, and a retry of the key starts afresh.
    /// `attempt` is the new attempt to record if one is needed; whether it is, is
    /// [`crate::payment::begin`]'s decision, made inside this write on what the key holds.
    async fn begin_payment(&self, attempt: &PaymentRecord) -> Result<Begun, Failure>;

    /// Writes the decision, once: a payment already decided keeps its first decision, which
    /// is returned instead. `NOT_FOUND` if the payment was never recorded.
    async fn decide(
        &self,
        payment_id: &str,
        status: PaymentStatus,
        reason_code: Option<&str>,
        reason: Option<&str>,
    ) -> Result<PaymentRecord, Failure>;

    /// Records which legs' banks acknowledged phase 2 (a flag already set stays set). May be
    /// relaxed: a lost acknowledgement only makes the retrier re-send a decision.
    async fn acknowledge(&self, payment_id: &str, debit: bool, credit: bool)
        -> Result<(), Failure>;

    async fn payment(&self, payment_id: &str) -> Result<Option<PaymentRecord>, Failure>;

    /// The latest attempt `username` made under idempotency key `key`, if any.
    async fn payment_by_key(
        &self,
        username: &str,
        key: &str,
    ) -> Result<Option<PaymentRecord>, Failure>;

    /// `coordinator`'s payments with no decision or with a leg that has not acknowledged it,
    /// oldest first.
    async fn unfinished(
        &self,
        coordinator: &str,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, Failure>;

    /// Decided payments with `decision_seq > after_decision_seq`, in decision order. Positions
    /// become visible in order, except that a decision transaction that rolled back may leave
    /// a position that is never filled (watchers wait `EVENT_GAP_GRACE` for it).
    async fn decided_after(
        &self,
        after_decision_seq: i64,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, Failure>;

    /// The highest decision position written so far (0 when nothing is decided).
    async fn decision_head(&self) -> Result<i64, Failure>;

    /// Every replica that coordinates at least one unfinished payment.
    async fn coordinators_with_unfinished(&self) -> Result<Vec<String>, Failure>;

    /// Moves every unfinished payment of replica `from` to replica `to`, durably, and says
    /// how many moved. Atomic: of two survivors claiming one dead replica, one gets them all
    /// and the other none.
    async fn claim(&self, from: &str, to: &str) -> Result<u64, Failure>;

    /// A user's payments (sent or received) with `seq < before_seq`, newest first.
    async fn history(
        &self,
        username: &str,
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, Failure>;
}
