//! The PostgreSQL server a store talks to, and the shape of every call to it, which every
//! other file of the backend builds on: the connection pools ([`Server::pool`]) and the
//! session checks made when a store opens; how driver and pool errors are answered
//! ([`Server::failure`]: transient ones `UNAVAILABLE`, with the URL's password kept out of
//! logs and answers); [`Call`], one store call (a connection from a pool, maybe a
//! transaction, within a time limit); and [`retry_conflicts`], which tries a transaction
//! again when PostgreSQL aborts it in a lock conflict.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use strife_common::limits::STORE_CALL_TIMEOUT;
use strife_common::Failure;
use tokio_postgres::error::SqlState;

use super::location::{self, PostgresLocation};

/// How long opening the store may take (connecting, checking or migrating the schema).
pub(super) const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a whole-log read (recovery's list of unfinished payments, the audit's snapshot),
/// which grows with the log rather than being a point lookup.
pub(super) const SCAN_TIMEOUT: Duration = Duration::from_secs(120);

/// The server a store talks to, and how its failures are reported.
#[derive(Clone)]
pub(super) struct Server {
    pub(super) location: Arc<PostgresLocation>,
}

/// A driver error as the store call that met it answers ([`Server::failure`] with what the
/// call was doing), for `.map_err(failed)`. Every store call hands one to its work.
pub(super) type Failed<'a> = &'a (dyn Fn(tokio_postgres::Error) -> Failure + Sync + 'a);

/// [`Failed`] as a store call's work takes it: its two lifetimes apart (the borrow and what the
/// function borrows), or rustc cannot show that the call's future is `Send`.
pub(super) type FailedArg<'a, 'b> = &'a (dyn Fn(tokio_postgres::Error) -> Failure + Sync + 'b);

/// What a transaction sees.
#[derive(Debug, Clone, Copy)]
enum Isolation {
    /// READ COMMITTED, every session's (what the concurrency arguments in the module docs of
    /// [`super`] assume).
    ReadCommitted,
    /// REPEATABLE READ and read-only: every statement reads one state of the log.
    Snapshot,
}

impl Server {
    pub(super) fn pool(&self, settings: &[(&str, &str)], size: usize) -> anyhow::Result<Pool> {
        let config = self.location.driver_config(settings);
        let manager_config = ManagerConfig {
            // `is_closed` only: a dead connection shows as an error on its next query, which
            // is answered UNAVAILABLE and retried; a test query per checkout would cost a
            // round trip on every store call.
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match self.location.connector()? {
            location::Connector::Plain => {
                Manager::from_config(config, tokio_postgres::NoTls, manager_config)
            }
            location::Connector::Tls(tls) => Manager::from_config(config, tls, manager_config),
        };
        Pool::builder(manager)
            .max_size(size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .context("building the PostgreSQL connection pool")
    }

    /// The transient refusal every storage outage becomes, after logging its detail.
    pub(super) fn unavailable(&self, doing: &str, detail: &str) -> Failure {
        tracing::warn!(
            store = %self.location.redacted(),
            doing,
            error = %self.location.scrub(detail),
            "PostgreSQL store call failed; answering UNAVAILABLE"
        );
        Failure::Unavailable("the gateway's PostgreSQL store is unavailable; retry".into())
    }

    /// What a driver error means for the caller.
    fn failure(&self, doing: &str, error: &tokio_postgres::Error) -> Failure {
        let detail = chain(error);
        match error.code() {
            Some(code)
                if *code == SqlState::T_R_DEADLOCK_DETECTED
                    || *code == SqlState::T_R_SERIALIZATION_FAILURE =>
            {
                // Retried by `retry_conflicts` around the transaction; a caller that still
                // sees it retries like any UNAVAILABLE.
                tracing::debug!(doing, error = %detail, "PostgreSQL lock conflict");
                Failure::Unavailable(LOCK_CONFLICT.into())
            }
            Some(code) if *code == SqlState::UNIQUE_VIOLATION => {
                Failure::AlreadyExists(format!("{doing}: already exists"))
            }
            Some(code) if is_transient(code) => self.unavailable(doing, &detail),
            Some(_) => Failure::internal(
                &format!("the gateway's PostgreSQL store ({doing})"),
                self.location.scrub(&detail),
            ),
            // No SQL state: the connection (I/O, TLS, closed, authentication, timeout) — or
            // a value that does not convert, which is a bug.
            None if is_conversion(error) => Failure::internal(
                &format!("the gateway's PostgreSQL store ({doing})"),
                self.location.scrub(&detail),
            ),
            None => self.unavailable(doing, &detail),
        }
    }

    fn pool_failure(&self, doing: &str, error: deadpool_postgres::PoolError) -> Failure {
        match error {
            deadpool_postgres::PoolError::Backend(error) => self.failure(doing, &error),
            other => self.unavailable(doing, &other.to_string()),
        }
    }

    async fn connection(
        &self,
        pool: &Pool,
        doing: &str,
    ) -> Result<deadpool_postgres::Object, Failure> {
        pool.get()
            .await
            .map_err(|error| self.pool_failure(doing, error))
    }

    /// Runs `work` within `limit`; past it the call is answered UNAVAILABLE (the connection
    /// it held goes back with a ROLLBACK queued, or is dropped).
    pub(super) async fn bounded<T>(
        &self,
        doing: &str,
        limit: Duration,
        work: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(self.unavailable(
                doing,
                &format!("no answer within {}", humantime::format_duration(limit)),
            )),
        }
    }

    /// What `doing` answers for a driver error ([`Failed`]).
    pub(super) fn failed<'a>(
        &'a self,
        doing: &'a str,
    ) -> impl Fn(tokio_postgres::Error) -> Failure + Sync + Copy + 'a {
        move |error| self.failure(doing, &error)
    }

    /// A store call doing `doing` on a connection from `pool`, within [`STORE_CALL_TIMEOUT`]
    /// unless told otherwise.
    pub(super) fn on<'a>(&'a self, pool: &'a Pool, doing: &'a str) -> Call<'a> {
        Call {
            server: self,
            pool,
            doing,
            limit: Some(STORE_CALL_TIMEOUT),
        }
    }

    /// Checks the session settings a pool's connections really have.
    pub(super) async fn check_session(
        &self,
        pool: &Pool,
        expected: &[(&str, &str)],
    ) -> anyhow::Result<deadpool_postgres::Object> {
        let client = self.connect_for_open(pool).await?;
        for (name, value) in expected {
            let row = client
                .query_one("SELECT current_setting($1)", &[name])
                .await
                .map_err(|error| self.open_error("reading the session settings", &error))?;
            let actual: String = row
                .try_get(0)
                .map_err(|error| self.open_error("reading the session settings", &error))?;
            anyhow::ensure!(
                actual == *value,
                "the gateway's PostgreSQL store {} runs sessions with {name} = {actual}, not \
                 {value} as the gateway asked (a connection pooler that drops startup \
                 options?); refusing to run with other durability or isolation",
                self.location.redacted()
            );
        }
        Ok(client)
    }

    async fn connect_for_open(&self, pool: &Pool) -> anyhow::Result<deadpool_postgres::Object> {
        match tokio::time::timeout(OPEN_TIMEOUT, pool.get()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(error)) => {
                let detail = match error {
                    deadpool_postgres::PoolError::Backend(error) => chain(&error),
                    other => other.to_string(),
                };
                anyhow::bail!(
                    "cannot reach the gateway's PostgreSQL store {}: {}",
                    self.location.redacted(),
                    self.location.scrub(&detail)
                )
            }
            Err(_) => anyhow::bail!(
                "the gateway's PostgreSQL store {} did not answer within {}",
                self.location.redacted(),
                humantime::format_duration(OPEN_TIMEOUT)
            ),
        }
    }

    pub(super) fn open_error(&self, doing: &str, error: &tokio_postgres::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "{doing} in the gateway's PostgreSQL store {}: {}",
            self.location.redacted(),
            self.location.scrub(&chain(error))
        )
    }
}

/// One store call, before it runs: the pool it takes a connection from, what it is doing
/// (for failures and logs) and how long it may take. Made by [`Server::on`] (or the store's
/// `on_durable` / `on_relaxed`), run by [`Call::call`], [`Call::transaction`],
/// [`Call::transaction_once`] or [`Call::snapshot`], which hand the work a [`Failed`] for its
/// `.map_err(failed)` — the preamble every store call used to write out.
#[derive(Clone, Copy)]
pub(super) struct Call<'a> {
    server: &'a Server,
    pool: &'a Pool,
    doing: &'a str,
    /// Past it the call is answered UNAVAILABLE ([`Server::bounded`]); `None`: see
    /// [`Call::bounded_by_callers`].
    limit: Option<Duration>,
}

impl<'a> Call<'a> {
    /// Within `limit` instead.
    pub(super) fn within(self, limit: Duration) -> Self {
        Call {
            limit: Some(limit),
            ..self
        }
    }

    /// No limit of its own: a step of a call that is bounded as a whole (an attempt inside
    /// [`crate::store::GatewayStore::begin_payment`]), or a batch whose callers each wait
    /// within their own (decisions, new attempts, shared reads).
    pub(super) fn bounded_by_callers(self) -> Self {
        Call {
            limit: None,
            ..self
        }
    }

    async fn bounded<T>(
        self,
        work: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        match self.limit {
            Some(limit) => self.server.bounded(self.doing, limit, work).await,
            None => work.await,
        }
    }

    /// Statements without a transaction of their own (each commits alone).
    pub(super) async fn call<T>(
        self,
        work: impl AsyncFnOnce(&deadpool_postgres::Client, FailedArg<'_, '_>) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let failed = self.server.failed(self.doing);
        self.bounded(async {
            let client = self.server.connection(self.pool, self.doing).await?;
            work(&client, &failed).await
        })
        .await
    }

    /// One READ COMMITTED transaction: committed when `work` returns `Ok`, rolled back when it
    /// fails. Tried again from the start, on a new connection, while PostgreSQL aborts it in a
    /// lock conflict ([`retry_conflicts`]), each try with a copy of `work` (its captures are
    /// references and copies; taking it by `&mut` across tries instead leaves rustc unable to
    /// show the decision writer's and the claim batches' tasks `Send`).
    pub(super) async fn transaction<T>(
        self,
        work: impl AsyncFnOnce(&Transaction<'_>, FailedArg<'_, '_>) -> Result<T, Failure> + Clone,
    ) -> Result<T, Failure> {
        self.bounded(retry_conflicts(|| {
            self.run_transaction(Isolation::ReadCommitted, work.clone())
        }))
        .await
    }

    /// One READ COMMITTED transaction as [`Call::transaction`]'s, tried once (for `work` that
    /// can run only once).
    pub(super) async fn transaction_once<T>(
        self,
        work: impl AsyncFnOnce(&Transaction<'_>, FailedArg<'_, '_>) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        self.bounded(self.run_transaction(Isolation::ReadCommitted, work))
            .await
    }

    /// One read-only REPEATABLE READ transaction: every read in `work` from one state of the
    /// log.
    pub(super) async fn snapshot<T>(
        self,
        work: impl AsyncFnOnce(&Transaction<'_>, FailedArg<'_, '_>) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        self.bounded(self.run_transaction(Isolation::Snapshot, work))
            .await
    }

    /// Connection, transaction, `work`, commit: one try.
    async fn run_transaction<T>(
        self,
        isolation: Isolation,
        work: impl AsyncFnOnce(&Transaction<'_>, FailedArg<'_, '_>) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let failed = self.server.failed(self.doing);
        let mut client = self.server.connection(self.pool, self.doing).await?;
        let transaction = match isolation {
            Isolation::ReadCommitted => client.transaction().await,
            Isolation::Snapshot => {
                client
                    .build_transaction()
                    .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await
            }
        }
        .map_err(&failed)?;
        let value = work(&transaction, &failed).await?;
        transaction.commit().await.map_err(&failed)?;
        Ok(value)
    }
}

/// What a deadlock or serialization failure becomes: transient, and recognised by
/// [`retry_conflicts`].
const LOCK_CONFLICT: &str =
    "the gateway's PostgreSQL store aborted a write in a lock conflict with another; retry";

/// Transactions tried at most, when PostgreSQL aborts them for a deadlock (see the lock order
/// in `settle.rs`, which avoids them between settlement writes).
const CONFLICT_TRIES: usize = 3;

/// Runs the transaction `attempt` makes until it is not aborted by a lock conflict, at most
/// [`CONFLICT_TRIES`] times. An aborted transaction wrote nothing, so trying again is safe.
async fn retry_conflicts<T, F, Fut>(mut attempt: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(Failure::Unavailable(message))
                if message == LOCK_CONFLICT && tries < CONFLICT_TRIES =>
            {
                tries += 1;
            }
            result => return result,
        }
    }
}

/// The error and its causes on one line (the driver's own `Display` omits the cause).
pub(super) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// SQL states that say "not now" rather than "never": the server or its connection is going
/// away or overloaded, out of disk, read-only (a standby), or a lock or serialization conflict
/// that a retry resolves.
fn is_transient(code: &SqlState) -> bool {
    let code = code.code();
    [
        "08",    // connection exception
        "53",    // insufficient resources: disk full, out of memory, too many connections
        "57P",   // admin / crash shutdown, cannot connect now
        "58",    // system error (I/O)
        "40001", // serialization failure
        "40P01", // deadlock detected
        "25006", // read-only transaction: a standby, e.g. right after a failover
        "55P03", // lock not available
        "57014", // query canceled (statement timeout, an operator's cancel)
        "28",    // invalid authorization: the role or its password changed under us
        "3D000", // the database does not exist (dropped or renamed under us)
    ]
    .iter()
    .any(|prefix| code.starts_with(prefix))
}

/// A driver error about converting a value (a bug, not an outage).
fn is_conversion(error: &tokio_postgres::Error) -> bool {
    let text = error.to_string();
    [
        "error serializing",
        "error deserializing",
        "invalid column",
        "query returned an unexpected number",
        "expected ",
    ]
    .iter()
    .any(|prefix| text.starts_with(prefix))
}
