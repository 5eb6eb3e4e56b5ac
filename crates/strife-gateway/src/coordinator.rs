//! The two-phase-commit coordinator. Its log is the `payments` table; its states are:
//!
//! ```text
//!   PENDING ──all YES──▶ COMMITTED ──every leg acknowledged──▶ (finished)
//!      │
//!      └─any NO / error / timeout, or deadline passed, or recovery──▶ ABORTED ──acks──▶ (finished)
//! ```
//!
//! An authorization (`Authorize`) stops between the votes and the decision: all YES makes it
//! AUTHORIZED (durable; the banks keep their legs PREPARED, told "still pending" when they
//! ask), and the decision is written later by a capture (COMMITTED), a void, or its expiry
//! (ABORTED, by the retrier of whichever replica coordinates it, at most one retry round
//! after `expires_unix_ms`). Recovery leaves AUTHORIZED payments alone: their votes are in.
//!
//! What is durable when: the PENDING record (with the idempotency key) before any prepare is
//! sent; the decision before any phase-2 message is sent; each leg's acknowledgement after
//! its bank answered. A decision is written once and never changes ([`GatewayStore::decide`]).
//! Phase 2 is retried by [`Coordinator::retry_unfinished`] until every bank acknowledges.
//! Each replica works only on the payments it coordinates; a dead replica's are claimed by a
//! survivor (`takeover.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strife_common::limits::{DECISION_GRACE, PHASE_TWO_CALL_TIMEOUT};
use strife_common::time::now_unix_ms;
use strife_common::Failure;
use strife_proto::v1 as pb;
use tokio::sync::{watch, Notify};

use crate::metrics::{GatewayMetrics, Phase, PrepareError};
use crate::registry::BankRegistry;
use crate::takeover::{take_over, Liveness, TAKEOVER_INTERVAL};
use strife_ledger::payment::{self, decide, Vote};
use strife_ledger::records::{PaymentRecord, PaymentStatus};
use strife_ledger::store::GatewayStore;

/// How often unfinished payments are retried.
const RETRY_INTERVAL: Duration = Duration::from_millis(250);
/// A freshly decided payment is left to its own task for this long before the retrier helps.
const RETRY_AFTER_DECISION_MS: i64 = 1_000;
const UNFINISHED_PER_ROUND: u32 = 256;

/// Where a test may make the gateway die on purpose (env `STRIFE_CRASH_AT`), to prove
/// recovery. Unset in normal runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Every leg voted YES; no decision written yet.
    AfterPrepare,
    /// The COMMIT decision (a payment's, or a capture's) is durable; no phase-2 message sent
    /// yet.
    AfterDecision,
}

impl CrashPoint {
    /// Reads `STRIFE_CRASH_AT` (`after_prepare` or `after_decision`).
    pub fn from_env() -> Option<Self> {
        match std::env::var("STRIFE_CRASH_AT").ok()?.as_str() {
            "after_prepare" => Some(CrashPoint::AfterPrepare),
            "after_decision" => Some(CrashPoint::AfterDecision),
            _ => None,
        }
    }
}

/// Which leg of a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    Debit,
    Credit,
}

impl Leg {
    fn role(self) -> pb::LegRole {
        match self {
            Leg::Debit => pb::LegRole::Debit,
            Leg::Credit => pb::LegRole::Credit,
        }
    }
}

/// Runs payments through 2PC and finishes what crashes left.
pub struct Coordinator {
    store: Arc<dyn GatewayStore>,
    registry: Arc<BankRegistry>,
    prepare_timeout: Duration,
    crash_at: Option<CrashPoint>,
    /// This replica's id: recorded on every payment it starts, and what it claims under.
    replica_id: String,
    liveness: Liveness,
    decisions: Arc<Notify>,
    in_flight: Arc<InFlightCount>,
    metrics: Arc<GatewayMetrics>,
}

/// Payments whose task is running, so a shutdown can wait for them.
#[derive(Default)]
struct InFlightCount {
    count: AtomicUsize,
    idle: Notify,
}

/// One running payment task; leaving (also by panic or cancellation) counts it out.
struct InFlight(Arc<InFlightCount>);

impl InFlight {
    fn enter(count: &Arc<InFlightCount>) -> Self {
        count.count.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Coordinator {
    pub fn new(
        store: Arc<dyn GatewayStore>,
        registry: Arc<BankRegistry>,
        prepare_timeout: Duration,
        crash_at: Option<CrashPoint>,
        replica_id: String,
        liveness: Liveness,
    ) -> Self {
        Coordinator {
            store,
            registry,
            prepare_timeout,
            crash_at,
            replica_id,
            liveness,
            decisions: Arc::new(Notify::new()),
            in_flight: Arc::new(InFlightCount::default()),
            metrics: Arc::new(GatewayMetrics::new()),
        }
    }

    /// Records into `metrics` (shared with the API and the auth layer) instead of its own.
    pub fn with_metrics(mut self, metrics: Arc<GatewayMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &Arc<GatewayMetrics> {
        &self.metrics
    }

    /// The id this replica records on the payments it coordinates.
    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }

    pub fn prepare_timeout(&self) -> Duration {
        self.prepare_timeout
    }

    /// The decision deadline a payment started now gets.
    pub fn decision_deadline_unix_ms(&self) -> i64 {
        let window = self.prepare_timeout + DECISION_GRACE;
        now_unix_ms().saturating_add(i64::try_from(window.as_millis()).unwrap_or(i64::MAX))
    }

    /// Runs a recorded (PENDING) payment to its decision and a first round of phase 2. It
    /// runs on its own task, so a client that hangs up cannot leave it half done.
    pub async fn execute(
        self: &Arc<Self>,
        record: PaymentRecord,
    ) -> Result<PaymentRecord, Failure> {
        let coordinator = Arc::clone(self);
        let running = InFlight::enter(&self.in_flight);
        let in_flight = self.metrics.payment_started();
        tokio::spawn(async move {
            let _running = running;
            let _in_flight = in_flight;
            coordinator.run(record).await
        })
        .await
        .map_err(|error| Failure::internal("payment task", error))?
    }

    /// At shutdown, after the server stopped taking requests: waits until every payment
    /// still running has its decision written and a first phase-2 round sent, at most
    /// `limit` (each is bounded by the prepare timeout plus one phase-2 round anyway).
    /// Returns how many were still running when the wait ended.
    pub async fn finish_in_flight(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let idle = self.in_flight.idle.notified();
            let running = self.in_flight.count.load(Ordering::SeqCst);
            if running == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.in_flight.count.load(Ordering::SeqCst);
            }
        }
    }

    async fn run(&self, record: PaymentRecord) -> Result<PaymentRecord, Failure> {
        let phase_started = Instant::now();
        let (debit, credit) = tokio::join!(
            self.prepare(&record, Leg::Debit),
            self.prepare(&record, Leg::Credit)
        );
        self.metrics.phase(Phase::Prepare, phase_started.elapsed());
        let (status, reason) = decide(
            &record.from.bank_id,
            &debit,
            &record.to.bank_id,
            &credit,
            self.prepare_timeout,
        );
        if status == PaymentStatus::Committed {
            self.crash_if(CrashPoint::AfterPrepare);
            if record.is_authorization() {
                return self.record_authorized(&record.payment_id).await;
            }
        }
        let phase_started = Instant::now();
        let decided = self
            .write_decision(&record.payment_id, status, reason)
            .await
            .map_err(|failure| match failure {
                // The PENDING record this task started from is gone, which only a store that
                // lost its newest relaxed commits does (a database server that crashed): no
                // decision was written, so nothing moved — the banks' legs abort by
                // presumption, and the key's record went with it, so a retry starts afresh.
                Failure::NotFound(_) => Failure::Unavailable(format!(
                    "payment {} lost its record before a decision (the gateway's store \
                     restarted); nothing moved; retry with the same idempotency key",
                    record.payment_id
                )),
                other => other,
            })?;
        self.metrics
            .phase(Phase::DecisionWrite, phase_started.elapsed());
        // Once per attempt, with what is stored (the retrier may have aborted it meanwhile).
        self.metrics.payment_decided(&decided);
        if decided.status == PaymentStatus::Committed {
            self.crash_if(CrashPoint::AfterDecision);
        }
        tracing::debug!(payment_id = %decided.payment_id, status = ?decided.status, "decided");
        // The answer waits for phase 2 at most one prepare timeout: a bank that is down must
        // not hold up a payment that is already decided; the retrier finishes it.
        let phase_started = Instant::now();
        let _ = tokio::time::timeout(self.prepare_timeout, self.phase_two(&decided)).await;
        self.metrics.phase(Phase::Finish, phase_started.elapsed());
        Ok(decided)
    }

    /// Both legs of an authorization are held: records it AUTHORIZED (durable before the
    /// answer). If another path decided it first (the retrier, past the decision deadline),
    /// that decision is the answer and its phase 2 is sent as for a payment.
    async fn record_authorized(&self, payment_id: &str) -> Result<PaymentRecord, Failure> {
        let stored = self.store.authorize(payment_id).await?;
        if stored.status.is_decided() {
            let _ = tokio::time::timeout(self.prepare_timeout, self.phase_two(&stored)).await;
        }
        Ok(stored)
    }

    /// Ends an AUTHORIZED payment: `capture_minor` (at most its amount) writes COMMITTED
    /// moving that much (only before its expiry, which the store judges in the same write; a
    /// capture too late writes the expiry's ABORT instead), `None` ABORTED as voided. Then a first round of phase 2, bounded like a
    /// payment's. Runs on its own task, like [`Coordinator::execute`]. Returns the payment
    /// as stored: a decision written first by another path stays.
    pub async fn end_authorization(
        self: &Arc<Self>,
        record: PaymentRecord,
        capture_minor: Option<i64>,
    ) -> Result<PaymentRecord, Failure> {
        let coordinator = Arc::clone(self);
        let running = InFlight::enter(&self.in_flight);
        tokio::spawn(async move {
            let _running = running;
            let payment_id = record.payment_id.as_str();
            let mut decided = if let Some(amount_minor) = capture_minor {
                let captured = coordinator.store.capture(payment_id, amount_minor).await?;
                // Durable now: wake this replica's watchers, as for every decision.
                coordinator.decisions.notify_waiters();
                captured
            } else {
                coordinator
                    .write_decision(payment_id, PaymentStatus::Aborted, Some(payment::voided()))
                    .await?
            };
            if let Some(reason) = payment::overdue(&decided, now_unix_ms()) {
                // A capture the store refused: the authorization expired before it.
                decided = coordinator
                    .write_decision(payment_id, PaymentStatus::Aborted, Some(reason))
                    .await?;
            }
            if decided.status == PaymentStatus::Committed {
                coordinator.crash_if(CrashPoint::AfterDecision);
            }
            if decided.status.is_decided() {
                coordinator.metrics.payment_decided(&decided);
                let timeout = coordinator.prepare_timeout;
                let _ = tokio::time::timeout(timeout, coordinator.phase_two(&decided)).await;
            }
            Ok(decided)
        })
        .await
        .map_err(|error| Failure::internal("authorization task", error))?
    }

    fn crash_if(&self, point: CrashPoint) {
        if self.crash_at == Some(point) {
            tracing::error!(
                ?point,
                "STRIFE_CRASH_AT reached; aborting the process on purpose"
            );
            std::process::abort();
        }
    }

    async fn write_decision(
        &self,
        payment_id: &str,
        status: PaymentStatus,
        reason: Option<(String, String)>,
    ) -> Result<PaymentRecord, Failure> {
        let (code, text) = reason.unzip();
        let decided = self
            .store
            .decide(payment_id, status, code.as_deref(), text.as_deref())
            .await?;
        if decided.status != status || decided.reason_code != code {
            // Another path (a bank's decision query, the retrier, a replica that claimed this
            // payment) wrote first: single assignment, so what is stored is what counts.
            tracing::info!(
                payment_id,
                wanted = ?status,
                stored = ?decided.status,
                stored_reason = decided.reason_code.as_deref().unwrap_or_default(),
                "the payment was already decided; adopting the stored decision"
            );
        }
        // Durable now: wake this replica's watchers (other replicas' poll for it).
        self.decisions.notify_waiters();
        Ok(decided)
    }

    /// Woken after every decision this replica writes (payment events).
    pub fn decisions(&self) -> Arc<Notify> {
        Arc::clone(&self.decisions)
    }

    async fn prepare(&self, record: &PaymentRecord, leg: Leg) -> Vote {
        let party = match leg {
            Leg::Debit => &record.from,
            Leg::Credit => &record.to,
        };
        let request = pb::PrepareRequest {
            payment_id: record.payment_id.clone(),
            role: leg.role() as i32,
            account_number: party.account_number.clone(),
            amount: Some(pb::Money {
                amount_minor: record.amount_minor,
                currency: record.currency.clone(),
            }),
            // An authorization's legs stay PREPARED until its expiry: the bank need not ask
            // about them before.
            decision_deadline_unix_ms: record
                .expires_unix_ms
                .unwrap_or(record.decision_deadline_unix_ms),
            // The linked account's owner, as the gateway opened it at the bank: the bank
            // refuses if its account under this number belongs to someone else.
            owner: party.username.clone(),
        };
        let started = Instant::now();
        let vote = self.registry.prepare(&party.bank_id, request);
        let vote = match tokio::time::timeout(self.prepare_timeout, vote).await {
            Err(_) => Vote::TimedOut,
            Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => Vote::TimedOut,
            Ok(Err(status)) => Vote::Unreachable(status.message().to_owned()),
            Ok(Ok(response)) => {
                if response.vote_yes {
                    Vote::Yes
                } else {
                    Vote::No {
                        reason_code: response.reason_code,
                        reason: response.reason,
                    }
                }
            }
        };
        let error = match &vote {
            Vote::Yes => None,
            Vote::No { .. } => Some(PrepareError::No),
            Vote::TimedOut => Some(PrepareError::Timeout),
            Vote::Unreachable(_) => Some(PrepareError::Error),
        };
        self.metrics
            .prepare_voted(&party.bank_id, started.elapsed(), error);
        vote
    }

    /// Sends the decision to every leg not yet acknowledged, in parallel, then records the
    /// acknowledgements. The record is written in the background: it only spares the retrier
    /// work (re-sending a decision is harmless), so no answer waits for its fsync.
    pub async fn phase_two(&self, record: &PaymentRecord) {
        // An undecided payment (an open authorization) has no decision to send.
        if !record.status.is_decided() {
            return;
        }
        let debit = async { record.debit_acked || self.finish_leg(record, Leg::Debit).await };
        let credit = async { record.credit_acked || self.finish_leg(record, Leg::Credit).await };
        let (debit_acked, credit_acked) = tokio::join!(debit, credit);
        let newly_acked =
            (debit_acked && !record.debit_acked) || (credit_acked && !record.credit_acked);
        if newly_acked {
            let payment_id = record.payment_id.clone();
            let store = Arc::clone(&self.store);
            tokio::spawn(async move {
                let written = store
                    .acknowledge(&payment_id, debit_acked, credit_acked)
                    .await;
                if let Err(failure) = written {
                    tracing::error!(%failure, "could not record phase-2 acknowledgements");
                }
            });
        }
    }

    /// Sends the decision for one leg; true once the bank has acknowledged it.
    async fn finish_leg(&self, record: &PaymentRecord, leg: Leg) -> bool {
        let bank_id = match leg {
            Leg::Debit => &record.from.bank_id,
            Leg::Credit => &record.to.bank_id,
        };
        let request = pb::LegRequest {
            payment_id: record.payment_id.clone(),
            role: leg.role() as i32,
            settle_minor: settle_minor(record),
        };
        let commit = record.status == PaymentStatus::Committed;
        let call = self.registry.finish(bank_id, request, commit);
        match tokio::time::timeout(PHASE_TWO_CALL_TIMEOUT, call).await {
            Ok(Ok(_)) => true,
            Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition => {
                tracing::error!(
                    payment_id = %record.payment_id, bank_id, ?leg, message = status.message(),
                    "bank refused the decision: coordinator and bank disagree"
                );
                false
            }
            Ok(Err(status)) => {
                tracing::warn!(payment_id = %record.payment_id, bank_id, ?leg, message = status.message(), "phase 2 failed; will retry");
                false
            }
            Err(_) => {
                tracing::warn!(payment_id = %record.payment_id, bank_id, ?leg, "phase 2 timed out; will retry");
                false
            }
        }
    }

    /// On start: claims the payments of replicas that are gone (an earlier run of this one
    /// included, see [`takeover`]), then aborts every payment of ours left without a decision
    /// (presumed abort: the process that ran its phase 1 is gone); decided ones are finished
    /// by the retrier.
    pub async fn recover(&self) -> Result<usize, Failure> {
        self.take_over().await;
        self.abort_pending(payment::restarted()).await
    }

    /// Claims the unfinished payments of replicas that are gone (counted in the metrics).
    async fn take_over(&self) {
        let claimed = take_over(self.store.as_ref(), &self.liveness, &self.replica_id).await;
        self.metrics.taken_over(claimed);
    }

    /// Aborts every PENDING payment this replica coordinates, with `reason`.
    async fn abort_pending(&self, reason: (String, String)) -> Result<usize, Failure> {
        let unfinished = self
            .store
            .unfinished(&self.replica_id, now_unix_ms(), u32::MAX)
            .await?;
        let mut aborted = 0;
        for record in unfinished
            .into_iter()
            .filter(|record| record.status == PaymentStatus::Pending)
        {
            let decided = self
                .write_decision(
                    &record.payment_id,
                    PaymentStatus::Aborted,
                    Some(reason.clone()),
                )
                .await?;
            self.metrics.payment_decided(&decided);
            aborted += 1;
        }
        Ok(aborted)
    }

    /// At shutdown, after the server has stopped and [`Coordinator::finish_in_flight`] saw no
    /// payment task left: aborts the payments this replica recorded PENDING whose task never
    /// started (a request cut by the drain limit between its PENDING record and phase 1; no
    /// bank has a leg of them), so nothing this replica owns stays undecided after it exits
    /// and a retry of the key elsewhere runs at once. Does nothing while a task still runs.
    pub async fn abort_orphaned(&self) -> Result<usize, Failure> {
        if self.in_flight.count.load(Ordering::SeqCst) > 0 {
            return Ok(0);
        }
        self.abort_pending(payment::shut_down()).await
    }

    /// Until shutdown: finishes decided payments whose legs have not all acknowledged, and
    /// aborts pending ones whose decision deadline passed.
    pub async fn retry_unfinished(&self, mut shutdown: watch::Receiver<bool>) {
        let mut last_takeover = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RETRY_INTERVAL) => {}
                _ = shutdown.changed() => return,
            }
            if last_takeover.elapsed() >= TAKEOVER_INTERVAL {
                last_takeover = tokio::time::Instant::now();
                self.take_over().await;
            }
            let unfinished = match self
                .store
                .unfinished(&self.replica_id, now_unix_ms(), UNFINISHED_PER_ROUND)
                .await
            {
                Ok(unfinished) => unfinished,
                Err(failure) => {
                    tracing::error!(%failure, "cannot list unfinished payments");
                    continue;
                }
            };
            let now = now_unix_ms();
            let mut rounds = Vec::new();
            for record in unfinished {
                match (record.status, payment::overdue(&record, now)) {
                    (PaymentStatus::Pending | PaymentStatus::Authorized, Some(reason)) => {
                        if let Ok(decided) = self
                            .write_decision(
                                &record.payment_id,
                                PaymentStatus::Aborted,
                                Some(reason),
                            )
                            .await
                        {
                            rounds.push(decided);
                        }
                    }
                    (PaymentStatus::Pending | PaymentStatus::Authorized, None) => {}
                    _ if record.decided_unix_ms.unwrap_or(0) + RETRY_AFTER_DECISION_MS < now => {
                        rounds.push(record)
                    }
                    _ => {}
                }
            }
            self.metrics.set_in_doubt(rounds.len());
            futures::future::join_all(rounds.iter().map(|record| self.phase_two(record))).await;
        }
    }

    /// The answer to a bank's "what was decided for payment X?" (presumed abort), with how
    /// much moves on a COMMIT (`LegRequest.settle_minor`).
    pub async fn decision_for(&self, payment_id: &str) -> Result<(pb::Decision, i64), Failure> {
        let id = payment_id.to_owned();
        let Some(record) = self.store.payment(&id).await? else {
            return Ok((pb::Decision::Abort, 0));
        };
        let record = match payment::overdue(&record, now_unix_ms()) {
            Some(reason) => {
                self.write_decision(payment_id, PaymentStatus::Aborted, Some(reason))
                    .await?
            }
            None => record,
        };
        let decision = match record.status {
            PaymentStatus::Committed => pb::Decision::Commit,
            PaymentStatus::Aborted => pb::Decision::Abort,
            // An open authorization: its bank keeps the hold until it is decided.
            PaymentStatus::Pending | PaymentStatus::Authorized => pb::Decision::Pending,
        };
        Ok((decision, settle_minor(&record)))
    }
}

/// What a commit of `record`'s legs moves, as `LegRequest.settle_minor`: a captured
/// authorization's captured amount (its legs hold the authorized one), else 0 (the prepared
/// amount).
fn settle_minor(record: &PaymentRecord) -> i64 {
    match record.authorized_minor {
        Some(_) => record.amount_minor,
        None => 0,
    }
}
