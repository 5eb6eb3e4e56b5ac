//! The client's durable offline outbox (SPEC §5). A payment is written here, with its
//! idempotency key, *before* it is first sent; so a crash at any moment leaves either an
//! unfinished entry (retried with the same key, which the gateway deduplicates) or a finished
//! one. Nothing is lost and nothing is paid twice.
//!
//! States ([`State`]):
//!
//! ```text
//! queued ──send──▶ succeeded | declined        (the gateway's final word)
//!   │  └─refused before recording (rate limit, login) ─▶ queued (back-off)
//!   └──no answer / UNAVAILABLE / INTERNAL / … ──▶ unknown (back-off)
//! unknown ──look up by key──▶ COMMITTED: succeeded · business ABORTED: declined
//!                           · never recorded or transient ABORTED: send again (same key)
//!                           · PENDING or lookup failed: unknown (back-off)
//! ```
//!
//! An entry is final only when the gateway said so; an unknown outcome is never given up on
//! (each `sync` run is bounded in time instead).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use strife_common::reason::TRANSIENT_ABORTS;
use strife_common::time::now_unix_ms;
use tonic::Code;

/// The schema version this client writes (`PRAGMA user_version`): 1 has the table below, 2
/// adds `metadata` to it.
const SCHEMA_VERSION: i64 = 2;

const CREATE_TABLE: &str = "
CREATE TABLE outbox (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key      TEXT NOT NULL UNIQUE,
    to_username          TEXT NOT NULL,
    amount_minor         INTEGER NOT NULL CHECK (amount_minor > 0),
    currency             TEXT NOT NULL,
    from_bank            TEXT NOT NULL,
    to_bank              TEXT NOT NULL,
    memo                 TEXT NOT NULL,
    state                TEXT NOT NULL CHECK (state IN ('queued', 'unknown', 'succeeded', 'declined')),
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_unix_ms INTEGER NOT NULL,
    last_error           TEXT,
    payment_id           TEXT,
    created_unix_ms      INTEGER NOT NULL,
    finished_unix_ms     INTEGER
);
";

const CREATE_INDEX: &str = "
CREATE INDEX outbox_pending ON outbox (next_attempt_unix_ms) WHERE state IN ('queued', 'unknown');
";

/// Where an outbox entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not known to have reached the gateway (never sent, or refused before anything was
    /// recorded): sent (again) with the same key.
    Queued,
    /// May have reached the gateway: its outcome is looked up by key before anything else.
    Unknown,
    /// The gateway committed it. Final.
    Succeeded,
    /// The gateway refused it for a reason of the payment itself. Final.
    Declined,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Unknown => "unknown",
            State::Succeeded => "succeeded",
            State::Declined => "declined",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "queued" => Some(State::Queued),
            "unknown" => Some(State::Unknown),
            "succeeded" => Some(State::Succeeded),
            "declined" => Some(State::Declined),
            _ => None,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, State::Succeeded | State::Declined)
    }
}

/// First retry delay; doubles per attempt up to [`BACKOFF_CAP`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest delay between two tries.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// A payment as the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxEntry {
    pub idempotency_key: String,
    pub to_username: String,
    pub amount_minor: i64,
    pub currency: String,
    pub from_bank: String,
    pub to_bank: String,
    pub memo: String,
    /// The payment's metadata (`--meta`), sent with every try: part of the request.
    pub metadata: BTreeMap<String, String>,
    pub state: String,
    pub attempts: u32,
    pub next_attempt_unix_ms: i64,
    pub last_error: Option<String>,
    pub payment_id: Option<String>,
    pub created_unix_ms: i64,
}

/// What one try of a payment (or one look-up of its key) amounted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TryOutcome {
    /// The gateway committed it.
    Succeeded { payment_id: String },
    /// Refused for a reason retrying cannot fix (insufficient funds, unknown user, …).
    Declined { message: String },
    /// Refused before the gateway recorded anything (a rate limit, a login problem).
    NotSent { message: String },
    /// No final answer: the gateway may or may not have recorded it.
    Unknown { message: String },
}

/// How a gRPC failure of `Pay` leaves a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The gateway's final word on this payment.
    Declined,
    /// Refused before anything was recorded; sending again is the same as sending first.
    NotSent,
    /// Anything else: the payment may exist. `INTERNAL` is here too (a full disk after the
    /// record was written answers `INTERNAL`), as are timeouts and lost connections.
    Unknown,
}

/// Classifies a failed `Pay`. Only statuses the gateway gives *about the payment* are final.
pub fn classify(code: Code) -> FailureClass {
    match code {
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::OutOfRange => FailureClass::Declined,
        // Refused by the login or rate-limit checks, which run before anything is stored.
        Code::ResourceExhausted | Code::Unauthenticated => FailureClass::NotSent,
        _ => FailureClass::Unknown,
    }
}

/// [`classify`] with the refusal's reason code: a payment refused over its bank's net debit
/// cap was not recorded at all (docs/SPEC.md §9), so it stays queued and is sent again, with
/// the same key, until the cap allows it — like a payment queued for liquidity.
pub fn classify_refusal(code: Code, reason_code: Option<&str>) -> FailureClass {
    if code == Code::FailedPrecondition
        && reason_code == Some(strife_common::reason::NET_DEBIT_CAP_EXCEEDED)
    {
        return FailureClass::NotSent;
    }
    classify(code)
}

/// Whether a gRPC failure leaves the outcome open (so the same call may be repeated with the
/// same key): everything that is not a final refusal.
pub fn is_retryable(code: Code) -> bool {
    classify(code) != FailureClass::Declined
}

/// A payment as the gateway reports it when looked up by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub payment_id: String,
    /// `COMMITTED`, `ABORTED` or `PENDING`.
    pub status: &'static str,
    pub reason_code: String,
    pub reason: String,
}

/// What to do after looking an unknown entry up by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The gateway has a final outcome.
    Final(TryOutcome),
    /// The gateway never recorded the key, or aborted the attempt for a transient reason
    /// (no money moved): send again with the same key.
    SendAgain,
    /// Still open (PENDING, or the look-up itself failed): try later.
    StillUnknown { message: String },
}

/// Decides an unknown entry from the look-up by key: `Ok(payment)` or the failure's code and
/// message.
pub fn resolve(lookup: Result<Reported, (Code, String)>) -> Resolution {
    match lookup {
        Ok(payment) => match payment.status {
            "COMMITTED" => Resolution::Final(TryOutcome::Succeeded {
                payment_id: payment.payment_id,
            }),
            "ABORTED" if TRANSIENT_ABORTS.contains(&payment.reason_code.as_str()) => {
                Resolution::SendAgain
            }
            "ABORTED" => Resolution::Final(TryOutcome::Declined {
                message: if payment.reason.is_empty() {
                    format!("refused: {}", payment.reason_code)
                } else {
                    format!("refused: {}", payment.reason)
                },
            }),
            _ => Resolution::StillUnknown {
                message: format!("payment {} is still in progress", payment.payment_id),
            },
        },
        Err((Code::NotFound, _)) => Resolution::SendAgain,
        Err((_, message)) => Resolution::StillUnknown { message },
    }
}

/// The state an entry moves to after `outcome`. An unknown entry never goes back to queued:
/// a refusal of the *resend* says nothing about an earlier send that may still be in flight.
pub fn next_state(current: State, outcome: &TryOutcome) -> State {
    match outcome {
        TryOutcome::Succeeded { .. } => State::Succeeded,
        TryOutcome::Declined { .. } => State::Declined,
        TryOutcome::Unknown { .. } => State::Unknown,
        TryOutcome::NotSent { .. } => match current {
            State::Unknown => State::Unknown,
            _ => State::Queued,
        },
    }
}

/// Delay before try number `attempts + 1`: exponential from [`BACKOFF_BASE`], capped, plus up
/// to 50 % random jitter so many clients coming back online do not retry in lockstep.
pub fn backoff(attempts: u32, jitter_source: impl FnOnce(u64) -> u64) -> Duration {
    let exponent = attempts.min(16);
    let base_ms = BACKOFF_BASE.as_millis() as u64;
    let delay_ms = base_ms
        .saturating_mul(1u64 << exponent)
        .min(BACKOFF_CAP.as_millis() as u64);
    let jitter_ms = jitter_source(delay_ms / 2 + 1);
    Duration::from_millis(delay_ms + jitter_ms)
}

/// The outbox database of one user.
pub struct Outbox {
    connection: Connection,
}

impl Outbox {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let mut connection = strife_common::storage::sqlite::open_connection(path, "outbox")?;
        migrate(&mut connection, path)
            .with_context(|| format!("preparing the outbox database {}", path.display()))?;
        Ok(Outbox { connection })
    }

    /// Records a payment before its first try. The same key with the same parameters is the
    /// same payment (returned as is); with other parameters it is an error.
    pub fn enqueue(&self, entry: &OutboxEntry) -> anyhow::Result<OutboxEntry> {
        if let Some(existing) = self.entry(&entry.idempotency_key)? {
            let same = existing.to_username == entry.to_username
                && existing.amount_minor == entry.amount_minor
                && existing.currency == entry.currency
                && existing.from_bank == entry.from_bank
                && existing.to_bank == entry.to_bank
                && existing.memo == entry.memo
                && existing.metadata == entry.metadata;
            anyhow::ensure!(
                same,
                "key {:?} was already used for a different payment",
                entry.idempotency_key
            );
            return Ok(existing);
        }
        self.connection.execute(
            "INSERT INTO outbox (idempotency_key, to_username, amount_minor, currency, from_bank,
                 to_bank, memo, state, next_attempt_unix_ms, created_unix_ms, metadata)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?8, ?9)",
            params![
                entry.idempotency_key,
                entry.to_username,
                entry.amount_minor,
                entry.currency,
                entry.from_bank,
                entry.to_bank,
                entry.memo,
                now_unix_ms(),
                serde_json::to_string(&entry.metadata)?
            ],
        )?;
        self.entry(&entry.idempotency_key)?
            .context("queued entry vanished")
    }

    /// Records the outcome of one try; returns the entry as it now stands.
    pub fn record(&self, key: &str, outcome: &TryOutcome) -> anyhow::Result<OutboxEntry> {
        let now = now_unix_ms();
        let current = self.entry(key)?.context("no such outbox entry")?;
        let current_state = State::parse(&current.state).context("unknown outbox state")?;
        if current_state.is_final() {
            // Final is final: a late answer (another sync running) cannot reopen it.
            return Ok(current);
        }
        let state = next_state(current_state, outcome);
        let attempts = current.attempts.saturating_add(1);
        match outcome {
            TryOutcome::Succeeded { payment_id } => self.connection.execute(
                "UPDATE outbox SET state = ?2, attempts = ?3, payment_id = ?4,
                     last_error = NULL, finished_unix_ms = ?5 WHERE idempotency_key = ?1",
                params![key, state.as_str(), attempts, payment_id, now],
            )?,
            TryOutcome::Declined { message } => self.connection.execute(
                "UPDATE outbox SET state = ?2, attempts = ?3, last_error = ?4,
                     finished_unix_ms = ?5 WHERE idempotency_key = ?1",
                params![key, state.as_str(), attempts, message, now],
            )?,
            TryOutcome::NotSent { message } | TryOutcome::Unknown { message } => {
                let delay = backoff(attempts, |bound| rand::random_range(0..bound));
                let next = now.saturating_add(delay.as_millis() as i64);
                self.connection.execute(
                    "UPDATE outbox SET state = ?2, attempts = ?3, last_error = ?4,
                         next_attempt_unix_ms = ?5 WHERE idempotency_key = ?1",
                    params![key, state.as_str(), attempts, message, next],
                )?
            }
        };
        self.entry(key)?.context("no such outbox entry")
    }

    pub fn entry(&self, key: &str) -> anyhow::Result<Option<OutboxEntry>> {
        Ok(self
            .connection
            .query_row(
                &format!("{COLUMNS} WHERE idempotency_key = ?1"),
                [key],
                entry_from_row,
            )
            .optional()?)
    }

    /// Unfinished (queued or unknown) entries, oldest first; with `due_at`, only those whose
    /// next try is due.
    pub fn pending(&self, due_at: Option<i64>) -> anyhow::Result<Vec<OutboxEntry>> {
        let mut statement = self.connection.prepare(&format!(
            "{COLUMNS} WHERE state IN ('queued', 'unknown') AND next_attempt_unix_ms <= ?1
             ORDER BY seq"
        ))?;
        let rows = statement.query_map([due_at.unwrap_or(i64::MAX)], entry_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every entry, newest first (at most `limit`).
    pub fn all(&self, limit: u32) -> anyhow::Result<Vec<OutboxEntry>> {
        let mut statement = self
            .connection
            .prepare(&format!("{COLUMNS} ORDER BY seq DESC LIMIT ?1"))?;
        let rows = statement.query_map([limit], entry_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When the next unfinished entry is due, if any.
    pub fn next_due_unix_ms(&self) -> anyhow::Result<Option<i64>> {
        Ok(self.connection.query_row(
            "SELECT MIN(next_attempt_unix_ms) FROM outbox WHERE state IN ('queued', 'unknown')",
            [],
            |row| row.get(0),
        )?)
    }
}

/// Brings an outbox database to [`SCHEMA_VERSION`], in one transaction.
///
/// Version 0 is either a new file or an outbox written by an older client, whose states were
/// `queued` (also after failed tries with an unknown outcome), `succeeded`, `declined` and
/// `gave_up` (tries exhausted, outcome unknown). The table is rebuilt (SQLite cannot change a
/// CHECK constraint): `gave_up`, and `queued` with tries behind it, become `unknown`, so the
/// next `sync` looks them up by key instead of forgetting them.
///
/// An outbox written by a newer client (a higher version) is refused: its states may mean
/// something this client would misread, and a misread entry could be paid twice or dropped.
fn migrate(connection: &mut Connection, path: &Path) -> anyhow::Result<()> {
    let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    anyhow::ensure!(
        version <= SCHEMA_VERSION,
        "outbox {} has schema version {version}, newer than this strife knows \
         ({SCHEMA_VERSION}); use the newer strife client",
        path.display()
    );
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    // IMMEDIATE, and the version read again inside: two clients opening an old outbox at once
    // migrate it once.
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = transaction.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    if version < 1 {
        rebuild_version_zero(&transaction)?;
    }
    // 1 → 2: payment metadata; earlier entries have none.
    transaction
        .execute_batch("ALTER TABLE outbox ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}'")?;
    transaction.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    transaction.commit()?;
    Ok(())
}

/// 0 → 1 (a new file, or an older client's table, see [`migrate`]): the version-1 table.
fn rebuild_version_zero(transaction: &Connection) -> rusqlite::Result<()> {
    let old_table: bool = transaction.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'outbox'",
        [],
        |row| row.get(0),
    )?;
    if old_table {
        transaction.execute_batch(
            "DROP INDEX IF EXISTS outbox_queued;
             ALTER TABLE outbox RENAME TO outbox_v0;",
        )?;
    }
    transaction.execute_batch(CREATE_TABLE)?;
    transaction.execute_batch(CREATE_INDEX)?;
    if old_table {
        transaction.execute_batch(
            "INSERT INTO outbox (seq, idempotency_key, to_username, amount_minor, currency,
                 from_bank, to_bank, memo, state, attempts, next_attempt_unix_ms, last_error,
                 payment_id, created_unix_ms, finished_unix_ms)
             SELECT seq, idempotency_key, to_username, amount_minor, currency, from_bank,
                 to_bank, memo,
                 CASE WHEN state = 'gave_up' THEN 'unknown'
                      WHEN state = 'queued' AND attempts > 0 THEN 'unknown'
                      ELSE state END,
                 attempts, next_attempt_unix_ms, last_error, payment_id, created_unix_ms,
                 CASE WHEN state = 'gave_up' THEN NULL ELSE finished_unix_ms END
             FROM outbox_v0;
             DROP TABLE outbox_v0;",
        )?;
    }
    Ok(())
}

const COLUMNS: &str =
    "SELECT idempotency_key, to_username, amount_minor, currency, from_bank, to_bank,
    memo, state, attempts, next_attempt_unix_ms, last_error, payment_id, created_unix_ms, metadata
    FROM outbox";

fn entry_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxEntry> {
    Ok(OutboxEntry {
        idempotency_key: row.get(0)?,
        to_username: row.get(1)?,
        amount_minor: row.get(2)?,
        currency: row.get(3)?,
        from_bank: row.get(4)?,
        to_bank: row.get(5)?,
        memo: row.get(6)?,
        state: row.get(7)?,
        attempts: row.get(8)?,
        next_attempt_unix_ms: row.get(9)?,
        last_error: row.get(10)?,
        payment_id: row.get(11)?,
        created_unix_ms: row.get(12)?,
        metadata: serde_json::from_str(&row.get::<_, String>(13)?).map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(13, rusqlite::types::Type::Text, error.into())
        })?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, amount_minor: i64) -> OutboxEntry {
        OutboxEntry {
            idempotency_key: key.into(),
            to_username: "bob".into(),
            amount_minor,
            currency: "USD".into(),
            from_bank: String::new(),
            to_bank: String::new(),
            memo: String::new(),
            metadata: Default::default(),
            state: "queued".into(),
            attempts: 0,
            next_attempt_unix_ms: 0,
            last_error: None,
            payment_id: None,
            created_unix_ms: 0,
        }
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_within_half() {
        assert_eq!(backoff(0, |_| 0), Duration::from_millis(200));
        assert_eq!(backoff(1, |_| 0), Duration::from_millis(400));
        assert_eq!(backoff(3, |_| 0), Duration::from_millis(1_600));
        assert_eq!(backoff(30, |_| 0), BACKOFF_CAP);
        assert_eq!(backoff(0, |bound| bound - 1), Duration::from_millis(300));
    }

    #[test]
    fn only_the_gateways_word_about_the_payment_is_final() {
        for code in [
            Code::FailedPrecondition,
            Code::NotFound,
            Code::InvalidArgument,
            Code::PermissionDenied,
        ] {
            assert_eq!(classify(code), FailureClass::Declined, "{code:?}");
            assert_eq!(
                classify_refusal(code, Some("insufficient_funds")),
                FailureClass::Declined,
                "{code:?}"
            );
        }
        for code in [Code::ResourceExhausted, Code::Unauthenticated] {
            assert_eq!(classify(code), FailureClass::NotSent, "{code:?}");
        }
        // Over a net debit cap: never recorded, so sent again (same key) until it fits.
        assert_eq!(
            classify_refusal(Code::FailedPrecondition, Some("net_debit_cap_exceeded")),
            FailureClass::NotSent
        );
        for code in [
            Code::Internal,
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Unknown,
            Code::Cancelled,
            Code::Aborted,
            Code::DataLoss,
        ] {
            assert_eq!(classify(code), FailureClass::Unknown, "{code:?}");
            assert!(is_retryable(code));
        }
    }

    fn reported(status: &'static str, reason_code: &str) -> Reported {
        Reported {
            payment_id: "p1".into(),
            status,
            reason_code: reason_code.into(),
            reason: format!("because {reason_code}"),
        }
    }

    #[test]
    fn an_unknown_entry_is_resolved_by_its_key() {
        assert_eq!(
            resolve(Ok(reported("COMMITTED", ""))),
            Resolution::Final(TryOutcome::Succeeded {
                payment_id: "p1".into()
            })
        );
        assert!(matches!(
            resolve(Ok(reported("ABORTED", "insufficient_funds"))),
            Resolution::Final(TryOutcome::Declined { message }) if message.contains("insufficient_funds")
        ));
        for transient in TRANSIENT_ABORTS {
            assert_eq!(
                resolve(Ok(reported("ABORTED", transient))),
                Resolution::SendAgain,
                "{transient}"
            );
        }
        assert!(matches!(
            resolve(Ok(reported("PENDING", ""))),
            Resolution::StillUnknown { .. }
        ));
        assert_eq!(
            resolve(Err((Code::NotFound, "never used".into()))),
            Resolution::SendAgain
        );
        for code in [Code::Unavailable, Code::Internal, Code::DeadlineExceeded] {
            assert!(matches!(
                resolve(Err((code, "down".into()))),
                Resolution::StillUnknown { .. }
            ));
        }
    }

    #[test]
    fn transitions_never_leave_unknown_except_on_a_final_answer() {
        let unknown = TryOutcome::Unknown {
            message: "timeout".into(),
        };
        let not_sent = TryOutcome::NotSent {
            message: "rate limited".into(),
        };
        let done = TryOutcome::Succeeded {
            payment_id: "p".into(),
        };
        let declined = TryOutcome::Declined {
            message: "poor".into(),
        };
        assert_eq!(next_state(State::Queued, &not_sent), State::Queued);
        assert_eq!(next_state(State::Queued, &unknown), State::Unknown);
        assert_eq!(next_state(State::Unknown, &not_sent), State::Unknown);
        assert_eq!(next_state(State::Unknown, &unknown), State::Unknown);
        assert_eq!(next_state(State::Unknown, &done), State::Succeeded);
        assert_eq!(next_state(State::Unknown, &declined), State::Declined);
    }

    #[test]
    fn entries_survive_reopen_and_keep_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        Outbox::open(&path)
            .unwrap()
            .enqueue(&entry("k1", 500))
            .unwrap();
        let outbox = Outbox::open(&path).unwrap();
        let queued = outbox.pending(None).unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].idempotency_key, "k1");
        assert!(
            outbox.enqueue(&entry("k1", 501)).is_err(),
            "same key, other amount"
        );
        assert_eq!(
            outbox.enqueue(&entry("k1", 500)).unwrap().idempotency_key,
            "k1"
        );
    }

    #[test]
    fn unknowns_back_off_forever_and_only_a_final_answer_ends_them() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        outbox.enqueue(&entry("k1", 500)).unwrap();
        let unknown = TryOutcome::Unknown {
            message: "internal error".into(),
        };
        let after_one = outbox.record("k1", &unknown).unwrap();
        assert_eq!(
            (after_one.state.as_str(), after_one.attempts),
            ("unknown", 1)
        );
        assert!(after_one.next_attempt_unix_ms > now_unix_ms());
        assert!(
            outbox.pending(Some(now_unix_ms())).unwrap().is_empty(),
            "not due yet"
        );
        for _ in 0..200 {
            outbox.record("k1", &unknown).unwrap();
        }
        let still = outbox.entry("k1").unwrap().unwrap();
        assert_eq!((still.state.as_str(), still.attempts), ("unknown", 201));
        assert_eq!(outbox.pending(None).unwrap().len(), 1, "never given up");
        let done = outbox
            .record(
                "k1",
                &TryOutcome::Succeeded {
                    payment_id: "p1".into(),
                },
            )
            .unwrap();
        assert_eq!(done.state, "succeeded");
        let late = outbox.record("k1", &unknown).unwrap();
        assert_eq!(late.state, "succeeded", "final stays final");

        outbox.enqueue(&entry("k2", 500)).unwrap();
        let declined = outbox
            .record(
                "k2",
                &TryOutcome::Declined {
                    message: "poor".into(),
                },
            )
            .unwrap();
        assert_eq!(declined.state, "declined");
        assert!(outbox.pending(None).unwrap().is_empty());
    }

    #[test]
    fn an_old_outbox_is_migrated_and_gave_up_becomes_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        {
            // The schema and states an older client wrote.
            let connection = Connection::open(&path).unwrap();
            connection
                .execute_batch(
                    "CREATE TABLE outbox (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT,
                        idempotency_key TEXT NOT NULL UNIQUE,
                        to_username TEXT NOT NULL,
                        amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
                        currency TEXT NOT NULL,
                        from_bank TEXT NOT NULL,
                        to_bank TEXT NOT NULL,
                        memo TEXT NOT NULL,
                        state TEXT NOT NULL CHECK (state IN ('queued', 'succeeded', 'declined', 'gave_up')),
                        attempts INTEGER NOT NULL DEFAULT 0,
                        next_attempt_unix_ms INTEGER NOT NULL,
                        last_error TEXT,
                        payment_id TEXT,
                        created_unix_ms INTEGER NOT NULL,
                        finished_unix_ms INTEGER
                    );
                    CREATE INDEX outbox_queued ON outbox (next_attempt_unix_ms) WHERE state = 'queued';
                    INSERT INTO outbox (idempotency_key, to_username, amount_minor, currency, from_bank,
                        to_bank, memo, state, attempts, next_attempt_unix_ms, created_unix_ms, finished_unix_ms)
                    VALUES ('fresh', 'bob', 1, 'USD', '', '', '', 'queued', 0, 0, 1, NULL),
                           ('tried', 'bob', 2, 'USD', '', '', '', 'queued', 3, 0, 2, NULL),
                           ('gave', 'bob', 333, 'USD', '', '', '', 'gave_up', 50, 0, 3, 9),
                           ('paid', 'bob', 4, 'USD', '', '', '', 'succeeded', 1, 0, 4, 9),
                           ('poor', 'bob', 5, 'USD', '', '', '', 'declined', 1, 0, 5, 9);",
                )
                .unwrap();
        }
        let outbox = Outbox::open(&path).unwrap();
        let state = |key: &str| outbox.entry(key).unwrap().unwrap().state;
        assert_eq!(state("fresh"), "queued");
        assert_eq!(state("tried"), "unknown");
        assert_eq!(state("gave"), "unknown");
        assert_eq!(state("paid"), "succeeded");
        assert_eq!(state("poor"), "declined");
        assert_eq!(outbox.pending(None).unwrap().len(), 3);
        drop(outbox);
        // Opening again is a no-op, and new entries keep counting up.
        let outbox = Outbox::open(&path).unwrap();
        assert_eq!(outbox.pending(None).unwrap().len(), 3);
        outbox.enqueue(&entry("new", 7)).unwrap();
        assert_eq!(outbox.all(10).unwrap()[0].idempotency_key, "new");
    }

    /// The outbox table as the previous release wrote it (version 0, before `unknown`).
    const VERSION_ZERO: &str = "CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            idempotency_key TEXT NOT NULL UNIQUE,
            to_username TEXT NOT NULL,
            amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
            currency TEXT NOT NULL,
            from_bank TEXT NOT NULL,
            to_bank TEXT NOT NULL,
            memo TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('queued', 'succeeded', 'declined', 'gave_up')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_unix_ms INTEGER NOT NULL,
            last_error TEXT,
            payment_id TEXT,
            created_unix_ms INTEGER NOT NULL,
            finished_unix_ms INTEGER
        );
        CREATE INDEX outbox_queued ON outbox (next_attempt_unix_ms) WHERE state = 'queued';";

    #[test]
    fn a_version_zero_outbox_keeps_every_row_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        {
            let connection = Connection::open(&path).unwrap();
            connection.execute_batch(VERSION_ZERO).unwrap();
            connection
                .execute_batch(
                    "INSERT INTO outbox (idempotency_key, to_username, amount_minor, currency,
                        from_bank, to_bank, memo, state, attempts, next_attempt_unix_ms,
                        last_error, payment_id, created_unix_ms, finished_unix_ms)
                     VALUES ('a', 'bob', 1250, 'EUR', 'bank0', 'bank1', 'rent März', 'succeeded',
                             2, 100, 'timed out', 'p-a', 10, 20),
                            ('b', 'carol', 7, 'JPY', '', '', '', 'declined', 1, 200,
                             'insufficient funds', NULL, 11, 21),
                            ('c', 'dave', 99, 'USD', '', 'bank1', 'x', 'queued', 0, 300,
                             NULL, NULL, 12, NULL);",
                )
                .unwrap();
            let version: i64 = connection
                .query_row("PRAGMA user_version", [], |row| row.get(0))
                .unwrap();
            assert_eq!(version, 0);
        }
        let outbox = Outbox::open(&path).unwrap();
        let version: i64 = outbox
            .connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let mut all = outbox.all(10).unwrap();
        all.sort_by(|a, b| a.idempotency_key.cmp(&b.idempotency_key));
        let expected = [
            OutboxEntry {
                idempotency_key: "a".into(),
                to_username: "bob".into(),
                amount_minor: 1250,
                currency: "EUR".into(),
                from_bank: "bank0".into(),
                to_bank: "bank1".into(),
                memo: "rent März".into(),
                metadata: Default::default(),
                state: "succeeded".into(),
                attempts: 2,
                next_attempt_unix_ms: 100,
                last_error: Some("timed out".into()),
                payment_id: Some("p-a".into()),
                created_unix_ms: 10,
            },
            OutboxEntry {
                idempotency_key: "b".into(),
                to_username: "carol".into(),
                amount_minor: 7,
                currency: "JPY".into(),
                from_bank: String::new(),
                to_bank: String::new(),
                memo: String::new(),
                metadata: Default::default(),
                state: "declined".into(),
                attempts: 1,
                next_attempt_unix_ms: 200,
                last_error: Some("insufficient funds".into()),
                payment_id: None,
                created_unix_ms: 11,
            },
            OutboxEntry {
                idempotency_key: "c".into(),
                to_username: "dave".into(),
                amount_minor: 99,
                currency: "USD".into(),
                from_bank: String::new(),
                to_bank: "bank1".into(),
                memo: "x".into(),
                metadata: Default::default(),
                state: "queued".into(),
                attempts: 0,
                next_attempt_unix_ms: 300,
                last_error: None,
                payment_id: None,
                created_unix_ms: 12,
            },
        ];
        assert_eq!(all, expected);
        let finished: Vec<Option<i64>> = outbox
            .connection
            .prepare("SELECT finished_unix_ms FROM outbox ORDER BY idempotency_key")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(finished, [Some(20), Some(21), None]);
    }

    #[test]
    fn an_outbox_from_a_newer_client_is_refused_naming_the_file_and_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        drop(Outbox::open(&path).unwrap());
        {
            let connection = Connection::open(&path).unwrap();
            connection
                .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        let error = Outbox::open(&path).err().unwrap();
        let message = format!("{error:#}");
        assert!(
            message.contains(&path.display().to_string())
                && message.contains(&format!("schema version {}", SCHEMA_VERSION + 1))
                && message.contains(&format!("({SCHEMA_VERSION})")),
            "{message}"
        );
    }
}
