//! The gateway store on PostgreSQL: the same tables, answers and rules as [`super::sqlite`],
//! in a database several gateway processes may share.
//!
//! # Connections
//!
//! Two pools (`deadpool-postgres` over `tokio-postgres`), told apart by a session setting
//! given at connection start (`-c synchronous_commit=…`, which beats any per-role or
//! per-database default, and is checked with `SHOW` when the store opens — nothing relies
//! on the server's defaults):
//!
//! - **durable** (`synchronous_commit = on`): decisions, users, links. A commit returns only
//!   once its WAL is flushed (and, if the operator configured synchronous standbys, confirmed
//!   by them), so "durable before reply" holds for every answer that follows it.
//! - **relaxed** (`synchronous_commit = off`): the two writes the trait allows to be relaxed —
//!   [`GatewayStore::begin_payment`] and [`GatewayStore::acknowledge`] — and the reads.
//!   Safe for the same reason as SQLite's `Durability::Relaxed`: such a commit is visible at
//!   once and reaches disk within PostgreSQL's `wal_writer_delay`, and since WAL is flushed
//!   in order, the flush of any later synchronous commit (every decision) also makes every
//!   relaxed commit before it durable. A decision can only be written after its PENDING
//!   record was committed (it updates that row), so a durable decision always has a durable
//!   record. Losing the newest relaxed commits in a server crash loses at most PENDING records
//!   (presumed abort: a bank asking about an unknown payment hears "abort", and the key's
//!   retry starts afresh) and acknowledgements (the retrier re-sends the decision).
//!
//! Every session runs READ COMMITTED (set the same way), which the concurrency arguments below
//! assume, and with `enable_seqscan = off` (see [`SESSION_DURABLE`]).
//!
//! # Concurrency, across transactions and across gateway replicas
//!
//! - **Single assignment**: `UPDATE payments … WHERE payment_id = $1 AND status = 1
//!   RETURNING …`. Two deciders racing for one PENDING row serialise on its row lock; the
//!   second one re-checks `status = 1` on the committed row (PostgreSQL's READ COMMITTED
//!   update rule), finds it decided, updates nothing and reads the first decision back in a
//!   new statement (whose snapshot includes it). So every decider, in any process, returns
//!   the first decision.
//! - **Idempotency**: the key is claimed with `INSERT INTO idempotency … ON CONFLICT DO
//!   NOTHING`, in the transaction that records the attempt (shared by concurrent attempts:
//!   `claims.rs`; a refund has a transaction of its own). A unique index makes the claim
//!   atomic: a concurrent claimer of the same key waits for the first one's transaction and
//!   then sees the conflict. Only a key that is already taken goes the long way, in one
//!   transaction: `SELECT … FOR UPDATE` on the key's row (so two retries of one key cannot
//!   both point it at a new attempt), the key's payment, [`payment::begin`]'s decision, and
//!   the writes it asks for. This was chosen over SERIALIZABLE because it never fails a
//!   correct request with a serialization error that would need a retry loop, and it takes
//!   no lock at all for new keys (the common case). The short path asks [`payment::begin`]
//!   too: its answer for an unused key (record it) is exactly what the claim does, and the
//!   `ON CONFLICT` makes "unused" true at the moment of the insert.
//! - **Links**: one `INSERT … ON CONFLICT DO UPDATE … WHERE accounts.username =
//!   excluded.username`, so an account can never be re-linked to another owner, however the
//!   calls race.
//! - **Settlement**: every settlement write locks what it reads in its own transaction, in one
//!   fixed order (open window, payment rows, positions, bilateral totals; `settle.rs`), so two
//!   payments can never both pass a cap or a refund limit on the same reading, and each
//!   decision lands in exactly one window. A cross-bank attempt's reservation is taken in
//!   the transaction that claims its key (for a whole batch of attempts at once: `claims.rs`),
//!   a refund's amount in one of its own. A deadlock PostgreSQL detects anyway is retried
//!   (`retry_conflicts` in `server.rs`).
//! - **Log order**: `seq` is an identity column. Values are handed out at insert time, so
//!   concurrent transactions may commit out of `seq` order; history paging (`seq <
//!   before_seq`) and the audit's snapshot (one REPEATABLE READ transaction) do not depend on
//!   commit order.
//!
//! # Batching
//!
//! Concurrent decisions share one transaction and one commit (one WAL flush): a writer task
//! collects whatever decisions are waiting and writes them with one `UPDATE … FROM unnest(…)`
//! (plus a few statements for the whole batch's settlement moves),
//! up to [`MAX_DECISIONS_PER_STATEMENT`], with up to [`DECISION_WRITERS`] such statements in
//! flight; an idle store writes a lone decision at once. PostgreSQL itself groups the WAL
//! flushes of concurrent commits from different connections.
//!
//! # Failures
//!
//! A server that is down, restarting, out of connections, read-only (a standby after a
//! failover), out of disk, or that does not answer within [`STORE_CALL_TIMEOUT`] answers a
//! transient `UNAVAILABLE` naming "the gateway's PostgreSQL store"; the details are logged
//! with the URL's password removed. A unique violation is `ALREADY_EXISTS`, as in SQLite.
//!
//! # Files
//!
//! Laid out as [`super::sqlite`] is, wherever a concept exists in both, and so that no two
//! files import each other, not even through others: each file below imports only files
//! listed after it (and of the store outside this directory, only its interface).
//!
//! - `mod.rs`: the pools' sessions, opening, and the [`GatewayStore`] methods, each one store
//!   call into the files below; and the writes with rules of their own: an attempt on a used
//!   key or a refund (one transaction each) and the decision writer;
//! - `snapshot.rs`: the audit's snapshot, one transaction over `read.rs`'s and `settle.rs`'s
//!   reads;
//! - `shared.rs` over `batch.rs`: user and account reads and acknowledgements that concurrent
//!   calls share, one statement per batch, and the batches of `claims.rs`;
//! - `claims.rs`: new attempts, one transaction per batch;
//! - `settle.rs`: settlement's reads and locked read-modify-writes, and their lock order;
//! - `read.rs`: row decoding, payment and login lookups;
//! - `schema.rs`: the tables as a history of versions, the database's identity, the
//!   advisory-locked migrations, [`SCHEMA_VERSION`];
//! - `server.rs`: what every file above builds on: the server and its pools, how failures are
//!   answered, the shape every store call takes (`Call`: a connection from one of the pools,
//!   maybe a transaction, retried or not, within a time limit);
//! - `batch.rs`: sharing one statement among concurrent calls;
//! - `location.rs`: the URL, TLS, and redaction.

mod api_keys;
mod batch;
mod claims;
mod location;
mod read;
mod schema;
mod server;
mod settle;
mod shared;
mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool};
use strife_common::limits::STORE_CALL_TIMEOUT;
use strife_common::storage::store_identity::StoreIdentity;
use strife_common::time::now_unix_ms;
use strife_common::Failure;
use tokio::sync::{mpsc, oneshot, Semaphore};

pub use location::{PostgresLocation, PostgresTls};
pub use schema::{Migration, MIGRATIONS, SCHEMA_VERSION};

use super::interface::{GatewayLog, GatewayStore, LoginChange};
use crate::lockout::SharedLogin;
use crate::payment;
use crate::records::{
    metadata_to_json, ApiKeyRecord, Begun, LinkedAccount, LogSnapshot, PaymentFilter,
    PaymentRecord, PaymentStatus, PositionRecord, UserRecord, WindowRecord, WindowReport,
};
use read::{column, load_payment, payment_columns, payment_from_row, query_rows, read_login};
use server::{Call, Failed, Server, OPEN_TIMEOUT, SCAN_TIMEOUT};
use snapshot::read_snapshot;

/// Most decisions written by one statement.
pub const MAX_DECISIONS_PER_STATEMENT: usize = 256;
/// Decision statements in flight at once (each on its own connection). Two: each waits for
/// its WAL flush while the next gathers its batch; more made smaller batches and cost more
/// PostgreSQL CPU per payment at concurrency 256.
const DECISION_WRITERS: usize = 2;
/// Decisions waiting for a writer; callers wait (back-pressure) beyond it.
const MAX_QUEUED_DECISIONS: usize = 16_384;

/// Connections per pool: a few per core (a connection spends most of its time waiting for
/// the server, for its WAL flush or for the network), bounded so that several replicas fit
/// under a default `max_connections` of 100.
fn pool_size() -> usize {
    std::thread::available_parallelism()
        .map_or(2, usize::from)
        .saturating_mul(4)
        .clamp(4, 16)
}

/// Every session of a serving gateway: READ COMMITTED (the concurrency arguments above
/// assume it), and no sequential scans. Every query a serving gateway makes is an index
/// lookup by design (point lookups on a payment's path; history, the unfinished list and the
/// open window by index), but the planner does not know that a table which was empty a
/// minute ago is big now: statistics catch up only at the next autoanalyze, and a
/// statement's generic plan cached before then kept scanning the whole `payments` table on
/// every decision (measured on branch `pgstore`: most of PostgreSQL's CPU in a benchmark on
/// a fresh database). A query with no index to use still runs (the setting only makes a
/// sequential scan the planner's last resort).
const SESSION_DURABLE: &[(&str, &str)] = &[
    ("synchronous_commit", "on"),
    ("default_transaction_isolation", "read committed"),
    ("enable_seqscan", "off"),
];
const SESSION_RELAXED: &[(&str, &str)] = &[
    ("synchronous_commit", "off"),
    ("default_transaction_isolation", "read committed"),
    ("enable_seqscan", "off"),
];
const SESSION_READ_ONLY: &[(&str, &str)] = &[("default_transaction_read_only", "on")];

/// The gateway's PostgreSQL database.
pub struct PostgresGatewayStore {
    server: Server,
    durable: Pool,
    relaxed: Pool,
    decisions: mpsc::Sender<DecisionJob>,
    /// User and account reads and acknowledgements, shared among concurrent calls.
    shared: shared::Shared,
}

impl PostgresGatewayStore {
    /// Connects, then checks (or with `identity.initialize`, creates) and migrates the schema.
    pub async fn open(
        location: &PostgresLocation,
        identity: &StoreIdentity,
    ) -> anyhow::Result<Self> {
        Self::open_with_migrations(location, identity, MIGRATIONS).await
    }

    /// [`Self::open`] with another schema history: for tests of the migration machinery.
    #[doc(hidden)]
    pub async fn open_with_migrations(
        location: &PostgresLocation,
        identity: &StoreIdentity,
        migrations: &[Migration],
    ) -> anyhow::Result<Self> {
        let server = Server {
            location: Arc::new(location.clone()),
        };
        let durable = server.pool(SESSION_DURABLE, pool_size())?;
        let relaxed = server.pool(SESSION_RELAXED, pool_size())?;
        let mut client = server.check_session(&durable, SESSION_DURABLE).await?;
        drop(server.check_session(&relaxed, SESSION_RELAXED).await?);
        warn_if_not_durable(&server, &client).await;
        let transaction = client
            .transaction()
            .await
            .map_err(|error| server.open_error("starting the schema transaction", &error))?;
        let prepared = tokio::time::timeout(
            OPEN_TIMEOUT,
            schema::prepare(&transaction, location.redacted(), identity, migrations),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "checking the schema of the gateway's PostgreSQL store {} took longer than {} \
                 (another replica holding the schema lock?)",
                location.redacted(),
                humantime::format_duration(OPEN_TIMEOUT)
            )
        })?
        .map_err(|error| anyhow::anyhow!(location.scrub(&format!("{error:#}"))))?;
        transaction
            .commit()
            .await
            .map_err(|error| server.open_error("committing the schema", &error))?;
        drop(client);
        match prepared {
            schema::Prepared::Created { creation_id } => tracing::info!(
                store = %location.redacted(), %creation_id,
                "PostgreSQL store created (--initialize)"
            ),
            schema::Prepared::Migrated { from, to } => tracing::warn!(
                store = %location.redacted(), from, to, "PostgreSQL store schema migrated"
            ),
            schema::Prepared::Current => {
                tracing::info!(store = %location.redacted(), "PostgreSQL store opened")
            }
        }
        let (decisions, queue) = mpsc::channel(MAX_QUEUED_DECISIONS);
        tokio::spawn(write_decisions(server.clone(), durable.clone(), queue));
        let shared = shared::Shared::start(&server, &relaxed);
        Ok(PostgresGatewayStore {
            server,
            durable,
            relaxed,
            decisions,
            shared,
        })
    }
}

/// `fsync = off` makes every commit a promise PostgreSQL cannot keep after a power cut; the
/// gateway still runs (a test server may be set up so), but says so loudly.
async fn warn_if_not_durable(server: &Server, client: &deadpool_postgres::Object) {
    let fsync = client
        .query_one("SELECT current_setting('fsync')", &[])
        .await
        .ok()
        .and_then(|row| row.try_get::<_, String>(0).ok());
    if fsync.as_deref() == Some("off") {
        tracing::warn!(
            store = %server.location.redacted(),
            "PostgreSQL runs with fsync = off: commits are not durable across a power failure"
        );
    }
}

/// Read-only access to a gateway's PostgreSQL log (what `strife audit` opens). It never
/// creates, migrates or writes, and its sessions are read-only.
pub struct PostgresGatewayLog {
    server: Server,
    pool: Pool,
}

impl PostgresGatewayLog {
    /// Connects and checks that the database is `identity`'s (same network) and not newer
    /// than this binary.
    pub async fn open(
        location: &PostgresLocation,
        identity: &StoreIdentity,
    ) -> anyhow::Result<Self> {
        let server = Server {
            location: Arc::new(location.clone()),
        };
        let pool = server.pool(SESSION_READ_ONLY, 2)?;
        let client = server.check_session(&pool, SESSION_READ_ONLY).await?;
        let row = schema::read(&**client)
            .await
            .map_err(|error| server.open_error("reading strife_schema", &error))?
            .with_context(|| {
                format!(
                    "the gateway's PostgreSQL store {} has no Strife schema (the gateway never \
                     ran on it, or the URL names another database)",
                    location.redacted()
                )
            })?;
        anyhow::ensure!(
            row.version <= SCHEMA_VERSION,
            "the gateway's PostgreSQL store {} has schema version {}, newer than this strife \
             knows ({}); use a newer strife",
            location.redacted(),
            row.version,
            SCHEMA_VERSION
        );
        // The log is read-only, so it cannot migrate; and an older schema lacks tables the
        // snapshot reads (settlement came with version 4).
        anyhow::ensure!(
            row.version == SCHEMA_VERSION,
            "the gateway's PostgreSQL store {} has schema version {}, older than this strife's              ({}); start this strife's gateway on it once (it migrates the schema), then audit",
            location.redacted(),
            row.version,
            SCHEMA_VERSION
        );
        schema::verify_owner(&row, location.redacted(), identity)?;
        drop(client);
        Ok(PostgresGatewayLog { server, pool })
    }
}

#[async_trait]
impl GatewayLog for PostgresGatewayLog {
    async fn snapshot(&self) -> Result<LogSnapshot, Failure> {
        read_snapshot(&self.server, &self.pool).await
    }
}

#[async_trait]
impl GatewayLog for PostgresGatewayStore {
    async fn snapshot(&self) -> Result<LogSnapshot, Failure> {
        read_snapshot(&self.server, &self.relaxed).await
    }
}

const INSERT_PAYMENT: &str = "
INSERT INTO payments (payment_id, idempotency_key, from_user, from_bank, from_account,
    to_user, to_bank, to_account, amount_minor, currency, memo, status,
    decision_deadline_unix_ms, created_unix_ms, coordinator, refund_of, metadata,
    expires_unix_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12, $13, $14, $15, $16, $17)
RETURNING seq";

/// Claims an unused key; no row when it is taken.
const CLAIM_KEY: &str = "
INSERT INTO idempotency (username, key, fingerprint, payment_id, created_unix_ms)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (username, key) DO NOTHING
RETURNING payment_id";

/// Inserts the (claimed) attempt as PENDING; returns it as stored.
async fn insert_payment<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    attempt: &PaymentRecord,
) -> Result<PaymentRecord, Failure> {
    let insert = client
        .prepare_cached(INSERT_PAYMENT)
        .await
        .map_err(failed)?;
    let row = client
        .query_one(
            &insert,
            &[
                &attempt.payment_id,
                &attempt.idempotency_key,
                &attempt.from.username,
                &attempt.from.bank_id,
                &attempt.from.account_number,
                &attempt.to.username,
                &attempt.to.bank_id,
                &attempt.to.account_number,
                &attempt.amount_minor,
                &attempt.currency,
                &attempt.memo,
                &attempt.decision_deadline_unix_ms,
                &attempt.created_unix_ms,
                &attempt.coordinator,
                &attempt.refund_of,
                &metadata_to_json(&attempt.metadata),
                &attempt.expires_unix_ms,
            ],
        )
        .await
        .map_err(failed)?;
    Ok(attempt.recorded_at(column(&row, 0)?))
}

impl PostgresGatewayStore {
    /// Queues `job` on the decision writer and waits for its answer, bounded like every
    /// store call.
    async fn send_decision(
        &self,
        job: DecisionJob,
        answer: oneshot::Receiver<Result<PaymentRecord, Failure>>,
    ) -> Result<PaymentRecord, Failure> {
        const DOING: &str = "writing a decision";
        self.server
            .bounded(DOING, STORE_CALL_TIMEOUT, async {
                self.decisions
                    .send(job)
                    .await
                    .map_err(|_| Failure::internal(DOING, "the decision writer has stopped"))?;
                answer.await.map_err(|_| {
                    Failure::internal(DOING, "the decision writer dropped a decision")
                })?
            })
            .await
    }

    /// A store call on the durable pool (`synchronous_commit = on`).
    fn on_durable<'a>(&'a self, doing: &'a str) -> Call<'a> {
        self.server.on(&self.durable, doing)
    }

    /// A store call on the relaxed pool (`synchronous_commit = off`; reads, and the writes
    /// that may be relaxed).
    fn on_relaxed<'a>(&'a self, doing: &'a str) -> Call<'a> {
        self.server.on(&self.relaxed, doing)
    }

    /// The key is taken: read what it holds under its row lock and do what
    /// [`payment::begin`] decides, in one transaction. `None` if the key turned out to be
    /// unused after all (only possible if keys are ever pruned): the caller claims it again.
    async fn begin_on_used_key(&self, attempt: &PaymentRecord) -> Result<Option<Begun>, Failure> {
        const DOING: &str = "recording a payment attempt";
        self.on_relaxed(DOING)
            .bounded_by_callers()
            .transaction(async |transaction, failed| {
                let statement = transaction
                    .prepare_cached(
                        "SELECT fingerprint, payment_id FROM idempotency
                 WHERE username = $1 AND key = $2 FOR UPDATE",
                    )
                    .await
                    .map_err(failed)?;
                let Some(key) = transaction
                    .query_opt(
                        &statement,
                        &[&attempt.from.username, &attempt.idempotency_key],
                    )
                    .await
                    .map_err(failed)?
                else {
                    return Ok(None);
                };
                let stored_fingerprint: String = column(&key, 0)?;
                let payment_id: String = column(&key, 1)?;
                let previous = load_payment(transaction, failed, &payment_id)
                    .await?
                    .ok_or_else(|| {
                        Failure::internal("idempotency", "record points at no payment")
                    })?;
                let stored = payment::Stored {
                    fingerprint: &stored_fingerprint,
                    payment: &previous,
                };
                let begun = match payment::begin(attempt, Some(stored))? {
                    payment::Begin::InFlight => Begun::InFlight(previous),
                    payment::Begin::Replay => Begun::Finished(previous),
                    payment::Begin::RecordAgain => {
                        let point = transaction
                            .prepare_cached(
                                "UPDATE idempotency SET payment_id = $3 WHERE username = $1 AND key = $2",
                            )
                            .await
                            .map_err(failed)?;
                        transaction
                            .execute(
                                &point,
                                &[
                                    &attempt.from.username,
                                    &attempt.idempotency_key,
                                    &attempt.payment_id,
                                ],
                            )
                            .await
                            .map_err(failed)?;
                        // After the key's row: the lock order of settle.rs. A refusal returns
                        // before the commit, so the transaction (the key's new payment too)
                        // rolls back.
                        let attempt =
                            settle::claim_for_attempt(transaction, failed, attempt.clone()).await?;
                        Begun::Started(insert_payment(transaction, failed, &attempt).await?)
                    }
                    payment::Begin::Record => {
                        return Err(Failure::internal(
                            "idempotency",
                            "Record with a stored payment",
                        ))
                    }
                };
                Ok(Some(begun))
            })
            .await
    }

    /// Payments read on the relaxed pool by one cached statement that selects
    /// `payment_columns!()`, within `limit`: the shape of every payment listing.
    async fn read_payments(
        &self,
        doing: &str,
        limit: Duration,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<PaymentRecord>, Failure> {
        self.on_relaxed(doing)
            .within(limit)
            .call(async |client, failed| {
                query_rows(client, failed, sql, params, payment_from_row).await
            })
            .await
    }

    /// Claims an unused key, takes what the attempt claims ([`settle::claim_for_attempt`])
    /// and records it, in one transaction; `None` if the key is taken. A refusal rolls it all
    /// back, the key's claim too. For refunds (new payments go through `claims.rs`).
    async fn claim_key_and_settlement(
        &self,
        attempt: &PaymentRecord,
    ) -> Result<Option<Begun>, Failure> {
        const DOING: &str = "recording a payment attempt";
        self.on_relaxed(DOING)
            .bounded_by_callers()
            .transaction(async |transaction, failed| {
                let claim = transaction
                    .prepare_cached(CLAIM_KEY)
                    .await
                    .map_err(failed)?;
                let claimed = transaction
                    .query_opt(
                        &claim,
                        &[
                            &attempt.from.username,
                            &attempt.idempotency_key,
                            &payment::fingerprint(attempt),
                            &attempt.payment_id,
                            &now_unix_ms(),
                        ],
                    )
                    .await
                    .map_err(failed)?;
                if claimed.is_none() {
                    return Ok(None);
                }
                let attempt =
                    settle::claim_for_attempt(transaction, failed, attempt.clone()).await?;
                let recorded = insert_payment(transaction, failed, &attempt).await?;
                Ok(Some(Begun::Started(recorded)))
            })
            .await
    }
}

#[async_trait]
impl GatewayStore for PostgresGatewayStore {
    async fn secret(&self, name: &str) -> Result<[u8; 32], Failure> {
        const DOING: &str = "reading a shared secret";
        self.on_durable(DOING)
            .call(async |client, failed| {
                let fresh: [u8; 32] = rand::random();
                // Two statements, each its own snapshot: of replicas racing to create it, one
                // insert wins, and the read that follows (a newer snapshot) sees the winner's.
                client
                    .execute(
                        "INSERT INTO secrets (name, value) VALUES ($1, $2)
                         ON CONFLICT (name) DO NOTHING",
                        &[&name, &fresh.as_slice()],
                    )
                    .await
                    .map_err(failed)?;
                let row = client
                    .query_one("SELECT value FROM secrets WHERE name = $1", &[&name])
                    .await
                    .map_err(failed)?;
                let stored: Vec<u8> = row.get(0);
                <[u8; 32]>::try_from(stored.as_slice()).map_err(|_| {
                    Failure::internal("secret", format!("secret {name} is not 32 bytes"))
                })
            })
            .await
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), Failure> {
        self.on_durable("creating an API key")
            .call(async |client, failed| api_keys::insert(client, failed, key).await)
            .await
    }

    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, Failure> {
        self.on_relaxed("reading an API key")
            .call(async |client, failed| api_keys::read(client, failed, key_id).await)
            .await
    }

    async fn api_keys(&self, owner: Option<&str>) -> Result<Vec<ApiKeyRecord>, Failure> {
        self.on_relaxed("listing API keys")
            .call(async |client, failed| api_keys::list(client, failed, owner).await)
            .await
    }

    async fn revoke_api_key(
        &self,
        key_id: &str,
        now_unix_ms: i64,
    ) -> Result<Option<ApiKeyRecord>, Failure> {
        self.on_durable("revoking an API key")
            .call(async |client, failed| {
                api_keys::revoke(client, failed, key_id, now_unix_ms).await
            })
            .await
    }

    async fn touch_api_key(&self, key_id: &str, now_unix_ms: i64) -> Result<(), Failure> {
        self.on_relaxed("recording an API key's use")
            .call(async |client, failed| api_keys::touch(client, failed, key_id, now_unix_ms).await)
            .await
    }

    async fn insert_user(
        &self,
        username: &str,
        role: &str,
        password_hash: &str,
    ) -> Result<(), Failure> {
        const DOING: &str = "creating a user";
        self.on_durable(DOING)
            .call(async |client, failed| {
                let statement = client
                    .prepare_cached(
                        "INSERT INTO users (username, role, password_hash, created_unix_ms)
                         VALUES ($1, $2, $3, $4) ON CONFLICT (username) DO NOTHING",
                    )
                    .await
                    .map_err(failed)?;
                let inserted = client
                    .execute(
                        &statement,
                        &[&username, &role, &password_hash, &now_unix_ms()],
                    )
                    .await
                    .map_err(failed)?;
                if inserted == 0 {
                    return Err(Failure::AlreadyExists(format!(
                        "user {username} already exists"
                    )));
                }
                Ok(())
            })
            .await
    }

    async fn user(&self, username: &str) -> Result<Option<UserRecord>, Failure> {
        self.server
            .bounded(
                "reading a user",
                STORE_CALL_TIMEOUT,
                self.shared.users.call(username.to_owned()),
            )
            .await
    }

    async fn link_account(&self, account: &LinkedAccount) -> Result<(), Failure> {
        const DOING: &str = "linking an account";
        self.on_durable(DOING)
            .call(async |client, failed| {
                // The WHERE on the conflict branch keeps an account with its first owner:
                // linking it to anyone else updates nothing and returns no row.
                let statement = client
                    .prepare_cached(
                        "INSERT INTO accounts (bank_id, account_number, username, currency,
                             holder_name, linked_unix_ms)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (bank_id, account_number)
                         DO UPDATE SET holder_name = excluded.holder_name
                         WHERE accounts.username = excluded.username",
                    )
                    .await
                    .map_err(failed)?;
                let written = client
                    .execute(
                        &statement,
                        &[
                            &account.bank_id,
                            &account.account_number,
                            &account.username,
                            &account.currency,
                            &account.holder_name,
                            &now_unix_ms(),
                        ],
                    )
                    .await
                    .map_err(failed)?;
                if written == 0 {
                    return Err(Failure::AlreadyExists(
                        "account is linked to another user".into(),
                    ));
                }
                Ok(())
            })
            .await
    }

    async fn accounts_of(&self, username: &str) -> Result<Vec<LinkedAccount>, Failure> {
        self.server
            .bounded(
                "reading a user's accounts",
                STORE_CALL_TIMEOUT,
                self.shared.accounts.call(username.to_owned()),
            )
            .await
    }

    /// Records a payment attempt under `(from user, key)`, or reports what the key already
    /// has; relaxed (see the module docs). An unused key is claimed and the attempt recorded,
    /// with its reservation, in one transaction shared with concurrent attempts
    /// (`claims.rs`) — a refund in one of its own that locks its original; a used key goes
    /// through [`payment::begin`] under the key's row lock.
    ///
    /// Relaxed even when it takes a reservation or a refund claim, as in SQLite: they are in
    /// the same transaction as the PENDING record, so a server crash that loses the record
    /// loses them with it (the positions and refund amounts still equal their derivation from
    /// the payments), and the payment's decision — durable, and only ever written after this
    /// commit, in later WAL — makes all three durable before anyone hears of the payment.
    async fn begin_payment(&self, attempt: &PaymentRecord) -> Result<Begun, Failure> {
        const DOING: &str = "recording a payment attempt";
        self.server
            .bounded(DOING, STORE_CALL_TIMEOUT, async {
                // Claiming is what `begin` decides for an unused key; asked here so the policy
                // stays in one place even for the one-statement path.
                if payment::begin(attempt, None)? != payment::Begin::Record {
                    return Err(Failure::internal(
                        "idempotency",
                        "an unused key not recorded",
                    ));
                }
                // Twice at most: a key seen taken and then unused again means keys are being
                // pruned under us, and one more claim settles it.
                for _ in 0..2 {
                    let claimed = if attempt.refund_of.is_some() {
                        self.claim_key_and_settlement(attempt).await?
                    } else {
                        // Shared with concurrent attempts: one transaction per batch.
                        self.shared
                            .claims
                            .call(attempt.clone())
                            .await?
                            .map(Begun::Started)
                    };
                    if let Some(begun) = claimed {
                        return Ok(begun);
                    }
                    if let Some(begun) = self.begin_on_used_key(attempt).await? {
                        return Ok(begun);
                    }
                }
                Err(self
                    .server
                    .unavailable(DOING, "the key kept changing hands; retry"))
            })
            .await
    }

    /// Writes the decision once (see the module docs); through the decision writer, which
    /// shares statements and commits among concurrent decisions.
    async fn decide(
        &self,
        payment_id: &str,
        status: PaymentStatus,
        reason_code: Option<&str>,
        reason: Option<&str>,
    ) -> Result<PaymentRecord, Failure> {
        let (reply, answer) = oneshot::channel();
        let job = DecisionJob {
            payment_id: payment_id.to_owned(),
            status: i32::try_from(status.stored_code()).unwrap_or_default(),
            reason_code: reason_code.map(str::to_owned),
            reason: reason.map(str::to_owned),
            decided_unix_ms: now_unix_ms(),
            captured_minor: None,
            reply,
        };
        self.send_decision(job, answer).await
    }

    /// A capture goes through the decision writer like any decision, with its amount.
    async fn capture(&self, payment_id: &str, amount_minor: i64) -> Result<PaymentRecord, Failure> {
        let (reply, answer) = oneshot::channel();
        let job = DecisionJob {
            payment_id: payment_id.to_owned(),
            status: i32::try_from(PaymentStatus::Committed.code()).unwrap_or_default(),
            reason_code: None,
            reason: None,
            decided_unix_ms: now_unix_ms(),
            captured_minor: Some(amount_minor),
            reply,
        };
        self.send_decision(job, answer).await
    }

    /// Marks an authorization AUTHORIZED, durably (`synchronous_commit = on`); the payment as
    /// stored afterwards, read in a new statement so a decision that won the row is seen.
    async fn authorize(&self, payment_id: &str) -> Result<PaymentRecord, Failure> {
        const DOING: &str = "recording an authorization";
        self.on_durable(DOING)
            .call(async |client, failed| {
                client
                    .execute(
                        "UPDATE payments SET authorized_unix_ms = $2
                         WHERE payment_id = $1 AND status = 1 AND expires_unix_ms IS NOT NULL
                             AND authorized_unix_ms IS NULL",
                        &[&payment_id, &now_unix_ms()],
                    )
                    .await
                    .map_err(failed)?;
                load_payment(client, failed, payment_id)
                    .await?
                    .ok_or_else(|| {
                        Failure::NotFound(format!("payment {payment_id} does not exist"))
                    })
            })
            .await
    }

    /// Records which legs acknowledged; relaxed (see the module docs). Shared with
    /// concurrent acknowledgements (one statement, rows locked in payment-id order).
    async fn acknowledge(
        &self,
        payment_id: &str,
        debit: bool,
        credit: bool,
    ) -> Result<(), Failure> {
        self.server
            .bounded(
                "recording acknowledgements",
                STORE_CALL_TIMEOUT,
                self.shared.acks.call(shared::Ack {
                    payment_id: payment_id.to_owned(),
                    debit,
                    credit,
                }),
            )
            .await
    }

    async fn payment(&self, payment_id: &str) -> Result<Option<PaymentRecord>, Failure> {
        const DOING: &str = "reading a payment";
        self.on_relaxed(DOING)
            .call(async |client, failed| load_payment(client, failed, payment_id).await)
            .await
    }

    async fn payment_by_key(
        &self,
        username: &str,
        key: &str,
    ) -> Result<Option<PaymentRecord>, Failure> {
        let found = self
            .read_payments(
                "reading a payment by key",
                STORE_CALL_TIMEOUT,
                concat!(
                    "SELECT ",
                    payment_columns!(),
                    " FROM payments WHERE payment_id = (
                         SELECT payment_id FROM idempotency WHERE username = $1 AND key = $2)"
                ),
                &[&username, &key],
            )
            .await?;
        Ok(found.into_iter().next())
    }

    async fn unfinished(
        &self,
        coordinator: &str,
        due_at_unix_ms: i64,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, Failure> {
        // The same predicate as the partial index `payments_unfinished_by_coordinator`, so
        // the planner uses it; open authorizations not yet due are filtered on that scan.
        self.read_payments(
            "listing unfinished payments",
            SCAN_TIMEOUT,
            concat!(
                "SELECT ",
                payment_columns!(),
                " FROM payments WHERE coordinator = $1
                     AND (status = 1 OR NOT debit_acked OR NOT credit_acked)
                     AND NOT (status = 1 AND authorized_unix_ms IS NOT NULL
                              AND expires_unix_ms > $3)
                 ORDER BY coordinator, seq LIMIT $2"
            ),
            &[&coordinator, &i64::from(limit), &due_at_unix_ms],
        )
        .await
    }

    /// One statement on the durable pool (no read, so no lock to order).
    async fn set_net_debit_cap(
        &self,
        bank_id: &str,
        currency: &str,
        cap_minor: Option<i64>,
    ) -> Result<PositionRecord, Failure> {
        const DOING: &str = "setting a net debit cap";
        crate::settlement::check_cap(cap_minor)?;
        self.on_durable(DOING)
            .call(async |client, failed| {
                settle::set_cap(client, failed, bank_id, currency, cap_minor).await
            })
            .await
    }

    async fn positions(&self) -> Result<Vec<PositionRecord>, Failure> {
        const DOING: &str = "reading positions";
        self.on_relaxed(DOING)
            .call(async |client, failed| settle::read_positions(client, failed).await)
            .await
    }

    async fn windows(
        &self,
        before_window_id: i64,
        limit: u32,
    ) -> Result<Vec<WindowRecord>, Failure> {
        const DOING: &str = "reading settlement windows";
        self.on_relaxed(DOING)
            .call(async |client, failed| {
                settle::read_windows(client, failed, before_window_id, i64::from(limit)).await
            })
            .await
    }

    /// The window and its totals in one REPEATABLE READ transaction: from the same state.
    async fn window_report(&self, window_id: i64) -> Result<Option<WindowReport>, Failure> {
        const DOING: &str = "reading a settlement window";
        self.on_relaxed(DOING)
            .snapshot(async |transaction, failed| {
                settle::read_report(transaction, failed, window_id, false).await
            })
            .await
    }

    /// One transaction on the durable pool, holding the open window's row `FOR UPDATE`.
    async fn close_window(&self, expected: Option<i64>) -> Result<WindowReport, Failure> {
        const DOING: &str = "closing a settlement window";
        self.on_durable(DOING)
            .transaction(async |transaction, failed| {
                settle::close_window(transaction, failed, expected, now_unix_ms()).await
            })
            .await
    }

    /// One transaction on the durable pool: the window's row, then the positions it moves.
    async fn settle_window(&self, window_id: i64) -> Result<WindowReport, Failure> {
        const DOING: &str = "settling a settlement window";
        self.on_durable(DOING)
            .transaction(async |transaction, failed| {
                settle::settle_window(transaction, failed, window_id, now_unix_ms()).await
            })
            .await
    }

    async fn coordinators_with_unfinished(&self) -> Result<Vec<String>, Failure> {
        const DOING: &str = "listing coordinators";
        self.on_relaxed(DOING)
            .within(SCAN_TIMEOUT)
            .call(async |client, failed| {
                query_rows(
                    client,
                    failed,
                    "SELECT DISTINCT coordinator FROM payments
                         WHERE status = 1 OR NOT debit_acked OR NOT credit_acked",
                    &[],
                    |row| column(row, 0),
                )
                .await
            })
            .await
    }

    /// One statement: the rows it moves are locked by it, so a second claimant of the same
    /// replica waits, then re-checks `coordinator = from` on the moved rows and moves none.
    async fn claim(&self, from: &str, to: &str) -> Result<u64, Failure> {
        const DOING: &str = "claiming a replica's payments";
        self.on_durable(DOING)
            .call(async |client, failed| {
                let statement = client
                    .prepare_cached(
                        "UPDATE payments SET coordinator = $2
                         WHERE coordinator = $1
                             AND (status = 1 OR NOT debit_acked OR NOT credit_acked)",
                    )
                    .await
                    .map_err(failed)?;
                client
                    .execute(&statement, &[&from, &to])
                    .await
                    .map_err(failed)
            })
            .await
    }

    async fn decided_after(
        &self,
        after_decision_seq: i64,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, Failure> {
        self.read_payments(
            "reading decided payments",
            STORE_CALL_TIMEOUT,
            concat!(
                "SELECT ",
                payment_columns!(),
                " FROM payments WHERE decision_seq > $1 ORDER BY decision_seq LIMIT $2"
            ),
            &[&after_decision_seq, &i64::from(limit)],
        )
        .await
    }

    async fn decision_head(&self) -> Result<i64, Failure> {
        const DOING: &str = "reading the decision head";
        self.on_relaxed(DOING)
            .call(async |client, failed| {
                let row = client
                    .query_one(
                        "SELECT COALESCE(MAX(decision_seq), 0) FROM payments
                         WHERE decision_seq IS NOT NULL",
                        &[],
                    )
                    .await
                    .map_err(failed)?;
                column(&row, 0)
            })
            .await
    }

    async fn has_accounts_at(&self, bank_id: &str) -> Result<bool, Failure> {
        const DOING: &str = "looking up a bank's accounts";
        self.on_relaxed(DOING)
            .call(async |client, failed| {
                let statement = client
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM accounts WHERE bank_id = $1)")
                    .await
                    .map_err(failed)?;
                let row = client
                    .query_one(&statement, &[&bank_id])
                    .await
                    .map_err(failed)?;
                column(&row, 0)
            })
            .await
    }

    async fn probe(&self) -> Result<(), Failure> {
        const DOING: &str = "probing";
        self.on_durable(DOING)
            .call(async |client, failed| {
                let statement = client
                    .prepare_cached(
                        "INSERT INTO probes (probed_unix_ms) VALUES ($1)
                         ON CONFLICT (singleton) DO UPDATE SET probed_unix_ms = excluded.probed_unix_ms",
                    )
                    .await
                    .map_err(failed)?;
                client
                    .execute(&statement, &[&now_unix_ms()])
                    .await
                    .map_err(failed)?;
                Ok(())
            })
            .await
    }

    async fn login(&self, username: &str) -> Result<Option<SharedLogin>, Failure> {
        const DOING: &str = "reading a login record";
        self.on_relaxed(DOING)
            .call(async |client, failed| read_login(client, failed, username, false).await)
            .await
    }

    /// The row is created if missing and then locked (`FOR UPDATE`), so concurrent updates
    /// from several replicas apply one after the other, each to the other's result.
    async fn update_login(
        &self,
        username: &str,
        change: LoginChange,
    ) -> Result<Option<SharedLogin>, Failure> {
        const DOING: &str = "updating a login record";
        self.on_relaxed(DOING)
            .transaction_once(async |transaction, failed| {
                transaction
                    .execute(
                        "INSERT INTO logins (username, failures, window_start_unix_ms,
                             locked_until_unix_ms, lockouts) VALUES ($1, 0, 0, 0, 0)
                         ON CONFLICT (username) DO NOTHING",
                        &[&username],
                    )
                    .await
                    .map_err(failed)?;
                let current = read_login(transaction, failed, username, true)
                    .await?
                    .filter(|login| *login != SharedLogin::default());
                let next = change(current);
                match next {
                    Some(login) => {
                        transaction
                            .execute(
                                "UPDATE logins SET failures = $2, window_start_unix_ms = $3,
                                 locked_until_unix_ms = $4, lockouts = $5
                             WHERE username = $1",
                                &[
                                    &username,
                                    &i32::try_from(login.failures).unwrap_or(i32::MAX),
                                    &login.window_start_unix_ms,
                                    &login.locked_until_unix_ms,
                                    &i32::try_from(login.lockouts).unwrap_or(i32::MAX),
                                ],
                            )
                            .await
                    }
                    None => {
                        transaction
                            .execute("DELETE FROM logins WHERE username = $1", &[&username])
                            .await
                    }
                }
                .map_err(failed)?;
                Ok(next)
            })
            .await
    }

    async fn list_payments(
        &self,
        filter: &PaymentFilter,
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, Failure> {
        let status = filter
            .status
            .map(|status| i32::try_from(status.code()).unwrap_or_default());
        let stored_status = filter
            .status
            .map(|status| i32::try_from(status.stored_code()).unwrap_or_default());
        let (metadata_key, metadata_value) = filter.metadata.clone().unzip();
        self.read_payments(
            "searching payments",
            SCAN_TIMEOUT,
            concat!(
                "SELECT ",
                payment_columns!(),
                " FROM payments WHERE seq < $1
                   AND ($2::text IS NULL
                        OR ($3::integer <> 1 AND from_user = $2
                            AND ($4::text IS NULL OR to_user = $4))
                        OR ($3::integer <> 2 AND to_user = $2
                            AND ($4::text IS NULL OR from_user = $4)))
                   AND ($2::text IS NOT NULL OR $4::text IS NULL
                        OR from_user = $4 OR to_user = $4)
                   AND ($5::integer IS NULL OR (status = $6
                        AND ($5 <> 4 OR authorized_unix_ms IS NOT NULL)
                        AND ($5 <> 1 OR authorized_unix_ms IS NULL)))
                   AND ($7::bigint IS NULL OR created_unix_ms >= $7)
                   AND ($8::bigint IS NULL OR created_unix_ms < $8)
                   AND ($9::bigint IS NULL OR amount_minor >= $9)
                   AND ($10::bigint IS NULL OR amount_minor <= $10)
                   AND ($11::text IS NULL OR currency = $11)
                   AND ($12::text IS NULL OR (metadata::jsonb ->> $12) = $13)
                 ORDER BY seq DESC LIMIT $14"
            ),
            &[
                &before_seq,
                &filter.username,
                &filter.direction.code(),
                &filter.counterparty,
                &status,
                &stored_status,
                &filter.created_from_unix_ms,
                &filter.created_before_unix_ms,
                &filter.min_amount_minor,
                &filter.max_amount_minor,
                &filter.currency,
                &metadata_key,
                &metadata_value,
                &i64::from(limit),
            ],
        )
        .await
    }

    async fn refunds_of(
        &self,
        payment_id: &str,
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, Failure> {
        self.read_payments(
            "listing refunds",
            STORE_CALL_TIMEOUT,
            concat!(
                "SELECT ",
                payment_columns!(),
                " FROM payments WHERE refund_of = $1 AND seq < $2
                 ORDER BY refund_of, seq DESC LIMIT $3"
            ),
            &[&payment_id, &before_seq, &i64::from(limit)],
        )
        .await
    }

    async fn history(
        &self,
        username: &str,
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, Failure> {
        // Each side takes at most `limit` from its own index, newest first.
        self.read_payments(
            "reading history",
            STORE_CALL_TIMEOUT,
            concat!(
                "SELECT ",
                payment_columns!(),
                " FROM payments WHERE seq IN (
                     (SELECT seq FROM payments WHERE from_user = $1 AND seq < $2
                      ORDER BY seq DESC LIMIT $3)
                     UNION
                     (SELECT seq FROM payments WHERE to_user = $1 AND seq < $2
                      ORDER BY seq DESC LIMIT $3)
                 ) ORDER BY seq DESC LIMIT $3"
            ),
            &[&username, &before_seq, &i64::from(limit)],
        )
        .await
    }
}

/// A decision waiting for the writer.
struct DecisionJob {
    payment_id: String,
    status: i32,
    reason_code: Option<String>,
    reason: Option<String>,
    decided_unix_ms: i64,
    /// A capture's amount (`GatewayStore::capture`).
    captured_minor: Option<i64>,
    reply: oneshot::Sender<Result<PaymentRecord, Failure>>,
}

/// Takes whatever decisions are queued (at most [`MAX_DECISIONS_PER_STATEMENT`]) and writes
/// them with one statement, up to [`DECISION_WRITERS`] statements at once. Runs until the
/// store is dropped.
async fn write_decisions(server: Server, pool: Pool, mut queue: mpsc::Receiver<DecisionJob>) {
    let writers = Arc::new(Semaphore::new(DECISION_WRITERS));
    while let Some(first) = queue.recv().await {
        let Ok(permit) = Arc::clone(&writers).acquire_owned().await else {
            return;
        };
        // Taken only once a writer is free, so decisions queue up while all are busy and the
        // next statement carries all of them.
        let mut batch = vec![first];
        while batch.len() < MAX_DECISIONS_PER_STATEMENT {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let server = server.clone();
        let pool = pool.clone();
        tokio::spawn(async move {
            let _permit = permit;
            write_decision_batch(&server, &pool, batch).await;
        });
    }
}

/// Writes a batch of decisions; each caller gets its payment as stored afterwards (its own
/// decision, or the first one if the payment was already decided).
async fn write_decision_batch(server: &Server, pool: &Pool, batch: Vec<DecisionJob>) {
    let mut pending = batch;
    while !pending.is_empty() {
        // One payment decided twice in one batch: the later call must see the earlier one's
        // result, as it would one statement later, so it waits for the next statement.
        let mut seen = std::collections::HashSet::new();
        let (mut now, later): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|job| seen.insert(job.payment_id.clone()));
        // Rows are locked in this order (lock order of settle.rs).
        now.sort_by(|a, b| a.payment_id.cmp(&b.payment_id));
        let mut answers = decide_batch_or_each(server, pool, &now).await;
        for job in now {
            let answer = answers.remove(&job.payment_id).unwrap_or_else(|| {
                Err(Failure::NotFound(format!(
                    "payment {} does not exist",
                    job.payment_id
                )))
            });
            let _ = job.reply.send(answer);
        }
        pending = later;
    }
}

/// Each payment's answer: the batch in one transaction; if settlement refused it (an
/// overflow, or an inconsistency it detected), each payment alone, so that one payment's
/// refusal does not fail the decisions that share its batch.
async fn decide_batch_or_each(
    server: &Server,
    pool: &Pool,
    batch: &[DecisionJob],
) -> std::collections::HashMap<String, Result<PaymentRecord, Failure>> {
    match decide_all(server, pool, batch).await {
        Ok(stored) => stored
            .into_iter()
            .map(|(id, record)| (id, Ok(record)))
            .collect(),
        Err(failure) if batch.len() > 1 && !matches!(failure, Failure::Unavailable(_)) => {
            let mut answers = std::collections::HashMap::with_capacity(batch.len());
            for job in batch {
                let answer = decide_all(server, pool, std::slice::from_ref(job))
                    .await
                    .and_then(|mut stored| {
                        stored.remove(&job.payment_id).ok_or_else(|| {
                            Failure::NotFound(format!("payment {} does not exist", job.payment_id))
                        })
                    });
                answers.insert(job.payment_id.clone(), answer);
            }
            answers
        }
        Err(failure) => batch
            .iter()
            .map(|job| (job.payment_id.clone(), Err(failure.clone())))
            .collect(),
    }
}

/// The decisions in one transaction: the open window held `FOR SHARE` (a close waits for
/// this transaction, and this one for a close, so each decision lands in exactly one window);
/// one `UPDATE … FROM unnest(…)` (single assignment: only PENDING rows change, stamped with
/// that window); what those rows move in settlement ([`settle::apply_decisions`]); then one
/// read of the payments it did not change (decided before, by anyone), in a new statement so
/// its snapshot includes every decision committed before ours. Tried again if PostgreSQL
/// aborts it in a lock conflict.
async fn decide_all(
    server: &Server,
    pool: &Pool,
    batch: &[DecisionJob],
) -> Result<std::collections::HashMap<String, PaymentRecord>, Failure> {
    const DOING: &str = "writing a decision";
    server
        .on(pool, DOING)
        .bounded_by_callers()
        .transaction(async |transaction, failed| {
            let window = settle::lock_open_window(transaction, failed, settle::Hold::Share).await?;
            let ids: Vec<&str> = batch.iter().map(|job| job.payment_id.as_str()).collect();
            let statuses: Vec<i32> = batch.iter().map(|job| job.status).collect();
            let codes: Vec<Option<&str>> =
                batch.iter().map(|job| job.reason_code.as_deref()).collect();
            let reasons: Vec<Option<&str>> =
                batch.iter().map(|job| job.reason.as_deref()).collect();
            let times: Vec<i64> = batch.iter().map(|job| job.decided_unix_ms).collect();
            let captured: Vec<Option<i64>> = batch.iter().map(|job| job.captured_minor).collect();
            let update = transaction
                .prepare_cached(concat!(
            // Each decided row takes the next position in the decision order. Positions are
            // handed out before commit, so they may become visible out of order; watchers
            // wait for a missing one (events.rs), which is why this is not a plain `seq`.
            "UPDATE payments AS p SET status = d.status, reason_code = d.reason_code,
                 reason = d.reason, decided_unix_ms = d.decided_unix_ms,
                 decision_seq = nextval('payments_decision_seq'), window_id = $6,
                 amount_minor = COALESCE(d.captured, p.amount_minor),
                 authorized_minor = CASE WHEN d.captured IS NULL THEN p.authorized_minor
                                         ELSE p.amount_minor END
             FROM unnest($1::text[], $2::integer[], $3::text[], $4::text[], $5::bigint[],
                         $7::bigint[])
                 AS d (payment_id, status, reason_code, reason, decided_unix_ms, captured)
             WHERE p.payment_id = d.payment_id AND p.status = 1
                 AND (d.status <> 2 OR p.expires_unix_ms IS NULL
                      OR (p.authorized_unix_ms IS NOT NULL
                          AND d.decided_unix_ms < p.expires_unix_ms))
                 AND (d.captured IS NULL
                      OR (p.expires_unix_ms IS NOT NULL AND d.captured <= p.amount_minor))
             RETURNING ",
            "p.seq, p.payment_id, p.idempotency_key, p.from_user, p.from_bank, p.from_account,
             p.to_user, p.to_bank, p.to_account, p.amount_minor, p.currency, p.memo, p.status,
             p.reason_code, p.reason, p.debit_acked, p.credit_acked,
             p.decision_deadline_unix_ms, p.created_unix_ms, p.decided_unix_ms,
             p.coordinator, p.decision_seq, p.refund_of, p.refunded_minor,
             p.refund_pending_minor, p.window_id, p.metadata, p.expires_unix_ms,
             p.authorized_unix_ms, p.authorized_minor"
        ))
                .await
                .map_err(failed)?;
            let mut decided = transaction
                .query(
                    &update,
                    &[
                        &ids,
                        &statuses,
                        &codes,
                        &reasons,
                        &times,
                        &window.window_id,
                        &captured,
                    ],
                )
                .await
                .map_err(failed)?
                .iter()
                .map(payment_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            decided.sort_by_key(|record| record.decision_seq);
            // Only these rows changed from PENDING in this write: settlement moves for them alone.
            settle::apply_decisions(transaction, failed, window.window_id, &decided).await?;
            let mut stored: std::collections::HashMap<String, PaymentRecord> = decided
                .into_iter()
                .map(|record| (record.payment_id.clone(), record))
                .collect();
            let unchanged: Vec<&str> = ids
                .iter()
                .copied()
                .filter(|id| !stored.contains_key(*id))
                .collect();
            if !unchanged.is_empty() {
                let select = transaction
                    .prepare_cached(concat!(
                        "SELECT ",
                        payment_columns!(),
                        " FROM payments WHERE payment_id = ANY($1::text[])"
                    ))
                    .await
                    .map_err(failed)?;
                for row in transaction
                    .query(&select, &[&unchanged])
                    .await
                    .map_err(failed)?
                {
                    let record = payment_from_row(&row)?;
                    stored.insert(record.payment_id.clone(), record);
                }
            }
            Ok(stored)
        })
        .await
}
