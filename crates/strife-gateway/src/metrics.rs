//! The gateway's Prometheus metrics (docs/OPERATIONS.md lists them with their meaning):
//! payments by outcome and reason, whole-payment and per-phase latency, payments in flight
//! and in doubt, per-bank prepare latency and errors, failed logins and lockouts, open payment
//! watches and payments taken over from replicas that are gone. The
//! group-commit metrics of its database come from `strife_common::metrics`.
//!
//! Recording never fails and never allocates on the payment path: outcome, reason, phase and
//! kind labels are `&'static str`, and each bank's handles are made once (the registry holds at
//! most `MAX_BANK_ENTRIES` banks; ids past that many are counted as `other`). No label ever
//! carries a user name, an account number or a payment id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use strife_common::etcd::discovery::MAX_BANK_ENTRIES;
use strife_common::metrics::{latency_histogram, reason_label, HistogramFamily};

use strife_ledger::payment;
use strife_ledger::records::{PaymentRecord, PaymentStatus};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PaymentLabels {
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BankLabels {
    bank: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BankErrorLabels {
    bank: String,
    kind: &'static str,
}

/// The steps of one payment whose latency is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The idempotency check and the PENDING record, one transaction.
    Begin,
    /// Phase 1: both banks' votes (in parallel).
    Prepare,
    /// The durable decision.
    DecisionWrite,
    /// The first round of phase 2 (bounded; the retrier finishes what it leaves).
    Finish,
}

impl Phase {
    const ALL: [Phase; 4] = [
        Phase::Begin,
        Phase::Prepare,
        Phase::DecisionWrite,
        Phase::Finish,
    ];

    fn label(self) -> &'static str {
        match self {
            Phase::Begin => "begin",
            Phase::Prepare => "prepare",
            Phase::DecisionWrite => "decision_write",
            Phase::Finish => "phase_two",
        }
    }
}

/// How a bank's prepare went wrong, as the coordinator saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrepareError {
    /// The bank voted NO.
    No,
    /// No vote within the prepare timeout.
    Timeout,
    /// The call failed (bank unreachable, refused, broken answer).
    Error,
}

/// One bank's handles, made once.
struct BankHandles {
    prepare_duration: Histogram,
    no: Counter,
    timeout: Counter,
    error: Counter,
    /// Plain totals for the web console's network page (a histogram's sum is not readable
    /// back through prometheus-client).
    votes: AtomicU64,
    failed_votes: AtomicU64,
    vote_micros: AtomicU64,
}

/// One bank's prepare record since this process started, for the console.
#[derive(Debug, Clone, PartialEq)]
pub struct BankPrepareSummary {
    pub bank_id: String,
    pub prepares: u64,
    /// Votes that were NO, timed out or failed.
    pub failed: u64,
    pub mean_latency: Duration,
}

/// Keeps the in-flight gauge up while a payment runs; lowers it when dropped.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Every metric of the gateway (cheap to clone handles inside; share it in an `Arc`).
pub struct GatewayMetrics {
    payments: Family<PaymentLabels, Counter>,
    payment_duration: Histogram,
    phase_duration: HistogramFamily<PhaseLabels>,
    /// `phase_duration`'s handles, indexed like [`Phase::ALL`].
    phases: [Histogram; 4],
    in_flight: Gauge,
    in_doubt: Gauge,
    prepare_errors: Family<BankErrorLabels, Counter>,
    prepare_duration: HistogramFamily<BankLabels>,
    banks: RwLock<HashMap<String, Arc<BankHandles>>>,
    login_failures: Counter,
    lockouts: Counter,
    console_password_checks: Counter,
    console_address_lockouts: Counter,
    watches_open: Gauge,
    takeover_claimed: Counter,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let phase_duration: HistogramFamily<PhaseLabels> =
            Family::new_with_constructor(latency_histogram);
        let phases = Phase::ALL.map(|phase| {
            phase_duration
                .get_or_create(&PhaseLabels {
                    phase: phase.label(),
                })
                .clone()
        });
        let payments = Family::<PaymentLabels, Counter>::default();
        // Present (at 0) from the start, so rates work before the first payment.
        drop(payments.get_or_create(&PaymentLabels {
            outcome: "committed",
            reason: "none",
        }));
        GatewayMetrics {
            payments,
            payment_duration: latency_histogram(),
            phase_duration,
            phases,
            in_flight: Gauge::default(),
            in_doubt: Gauge::default(),
            prepare_errors: Family::default(),
            prepare_duration: Family::new_with_constructor(latency_histogram),
            banks: RwLock::new(HashMap::new()),
            login_failures: Counter::default(),
            lockouts: Counter::default(),
            console_password_checks: Counter::default(),
            console_address_lockouts: Counter::default(),
            watches_open: Gauge::default(),
            takeover_claimed: Counter::default(),
        }
    }

    /// Adds every gateway metric to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "strife_payments",
            "Payments decided by this gateway, by outcome (committed; refused for a reason of the \
             payment itself; aborted for a transient reason) and reason code",
            self.payments.clone(),
        );
        registry.register(
            "strife_payment_duration_seconds",
            "Time from the idempotency check to the answer of a payment this gateway ran \
             (decision and first phase-2 round included)",
            self.payment_duration.clone(),
        );
        registry.register(
            "strife_payment_phase_duration_seconds",
            "Time of each step of a payment: begin (idempotency + PENDING write), prepare (both \
             votes), decision_write, phase_two (first round)",
            self.phase_duration.clone(),
        );
        registry.register(
            "strife_payments_in_flight",
            "Payments recorded PENDING and being run through two-phase commit now",
            self.in_flight.clone(),
        );
        registry.register(
            "strife_payments_in_doubt",
            "Payments the phase-2 retrier found unfinished in its latest round (every 250 ms): \
             decided but not acknowledged by both banks a second after the decision, or PENDING \
             past the decision deadline; at most 256",
            self.in_doubt.clone(),
        );
        registry.register(
            "strife_bank_prepare_errors",
            "Prepares that did not get a YES vote, by bank and kind (no, timeout, error)",
            self.prepare_errors.clone(),
        );
        registry.register(
            "strife_bank_prepare_duration_seconds",
            "Time for one bank's vote on one leg (YES, NO, error or timeout), by bank",
            self.prepare_duration.clone(),
        );
        registry.register(
            "strife_login_failures",
            "Password checks that failed (wrong password or unknown user name)",
            self.login_failures.clone(),
        );
        registry.register(
            "strife_lockouts",
            "Lockouts of a user name after too many failed password checks (in the scope the \
             check was made in: certificate for gRPC, console for the web console)",
            self.lockouts.clone(),
        );
        registry.register(
            "strife_console_password_checks",
            "Password checks (argon2id) run for web console logins: every console login that \
             was not refused first",
            self.console_password_checks.clone(),
        );
        registry.register(
            "strife_console_address_lockouts",
            "Client addresses locked out of console logins after too many failed ones",
            self.console_address_lockouts.clone(),
        );
        registry.register(
            "strife_watches_open",
            "WatchPayments streams open on this gateway now",
            self.watches_open.clone(),
        );
        registry.register(
            "strife_takeover_claimed",
            "Unfinished payments this gateway took over from replicas that are gone (an earlier \
             run of its own included)",
            self.takeover_claimed.clone(),
        );
    }

    /// A payment starts running through 2PC; the gauge goes down when the guard is dropped.
    pub fn payment_started(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// One step of a payment took `took`.
    pub fn phase(&self, phase: Phase, took: Duration) {
        let index = match phase {
            Phase::Begin => 0,
            Phase::Prepare => 1,
            Phase::DecisionWrite => 2,
            Phase::Finish => 3,
        };
        if let Some(histogram) = self.phases.get(index) {
            histogram.observe(took.as_secs_f64());
        }
    }

    /// A payment this gateway ran was answered after `took`.
    pub fn payment_answered(&self, took: Duration) {
        self.payment_duration.observe(took.as_secs_f64());
    }

    /// A payment was decided (`record` holds the decision).
    pub fn payment_decided(&self, record: &PaymentRecord) {
        let outcome = match record.status {
            PaymentStatus::Committed => "committed",
            PaymentStatus::Aborted if payment::is_business_refusal(record) => "refused",
            PaymentStatus::Aborted => "aborted",
            PaymentStatus::Pending | PaymentStatus::Authorized => return,
        };
        let reason = match record.status {
            PaymentStatus::Committed => "none",
            _ => reason_label(record.reason_code.as_deref()),
        };
        self.payments
            .get_or_create(&PaymentLabels { outcome, reason })
            .inc();
    }

    /// The retrier's latest count of unfinished payments (see the metric's help).
    pub fn set_in_doubt(&self, payments: usize) {
        self.in_doubt
            .set(i64::try_from(payments).unwrap_or(i64::MAX));
    }

    fn bank(&self, bank_id: &str) -> Arc<BankHandles> {
        {
            let banks = self
                .banks
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(handles) = banks.get(bank_id) {
                return Arc::clone(handles);
            }
        }
        let mut banks = self
            .banks
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Past the registry's cap the ids cannot all be real banks at once; keep the label
        // set bounded anyway.
        let label = if banks.len() >= MAX_BANK_ENTRIES && !banks.contains_key(bank_id) {
            "other"
        } else {
            bank_id
        };
        if let Some(handles) = banks.get(label) {
            return Arc::clone(handles);
        }
        let errors = |kind| {
            self.prepare_errors
                .get_or_create(&BankErrorLabels {
                    bank: label.to_owned(),
                    kind,
                })
                .clone()
        };
        let handles = Arc::new(BankHandles {
            prepare_duration: self
                .prepare_duration
                .get_or_create(&BankLabels {
                    bank: label.to_owned(),
                })
                .clone(),
            no: errors("no"),
            timeout: errors("timeout"),
            error: errors("error"),
            votes: AtomicU64::new(0),
            failed_votes: AtomicU64::new(0),
            vote_micros: AtomicU64::new(0),
        });
        banks.insert(label.to_owned(), Arc::clone(&handles));
        handles
    }

    /// One bank voted (or failed to) on one leg after `took`.
    pub fn prepare_voted(&self, bank_id: &str, took: Duration, error: Option<PrepareError>) {
        let bank = self.bank(bank_id);
        bank.prepare_duration.observe(took.as_secs_f64());
        bank.votes.fetch_add(1, AtomicOrdering::Relaxed);
        bank.vote_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            AtomicOrdering::Relaxed,
        );
        if error.is_some() {
            bank.failed_votes.fetch_add(1, AtomicOrdering::Relaxed);
        }
        match error {
            None => {}
            Some(PrepareError::No) => {
                bank.no.inc();
            }
            Some(PrepareError::Timeout) => {
                bank.timeout.inc();
            }
            Some(PrepareError::Error) => {
                bank.error.inc();
            }
        }
    }

    /// Each bank's prepares so far (sorted by bank id), for the console's network page.
    pub fn bank_prepare_summaries(&self) -> Vec<BankPrepareSummary> {
        let banks = self
            .banks
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut summaries: Vec<BankPrepareSummary> = banks
            .iter()
            .map(|(bank_id, handles)| {
                let prepares = handles.votes.load(AtomicOrdering::Relaxed);
                let micros = handles.vote_micros.load(AtomicOrdering::Relaxed);
                BankPrepareSummary {
                    bank_id: bank_id.clone(),
                    prepares,
                    failed: handles.failed_votes.load(AtomicOrdering::Relaxed),
                    mean_latency: Duration::from_micros(micros.checked_div(prepares).unwrap_or(0)),
                }
            })
            .collect();
        summaries.sort_by(|a, b| a.bank_id.cmp(&b.bank_id));
        summaries
    }

    /// Payments the phase-2 retrier last found unfinished.
    pub fn in_doubt(&self) -> i64 {
        self.in_doubt.get()
    }

    /// A password check failed.
    pub fn login_failed(&self) {
        self.login_failures.inc();
    }

    /// A user name was locked.
    pub fn locked_out(&self) {
        self.lockouts.inc();
    }

    /// A console login's password was checked (argon2id ran).
    pub fn console_password_checked(&self) {
        self.console_password_checks.inc();
    }

    /// A client address was locked out of console logins.
    pub fn console_address_locked(&self) {
        self.console_address_lockouts.inc();
    }

    /// The gauge of open payment watches (raised and lowered by the watches themselves).
    pub fn watches_open(&self) -> Gauge {
        self.watches_open.clone()
    }

    /// `payments` unfinished payments were claimed from replicas that are gone.
    pub fn taken_over(&self, payments: u64) {
        if payments > 0 {
            self.takeover_claimed.inc_by(payments);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strife_ledger::records::Party;

    fn record(status: PaymentStatus, reason_code: Option<&str>) -> PaymentRecord {
        let party = |name: &str| Party {
            username: name.into(),
            bank_id: "bank0".into(),
            account_number: format!("{name}-1"),
        };
        PaymentRecord {
            seq: 1,
            payment_id: "0190-secret-payment".into(),
            idempotency_key: "key".into(),
            from: party("alice"),
            to: party("bob"),
            amount_minor: 100,
            currency: "USD".into(),
            memo: String::new(),
            metadata: Default::default(),
            status,
            reason_code: reason_code.map(str::to_owned),
            reason: None,
            debit_acked: false,
            credit_acked: false,
            decision_deadline_unix_ms: 0,
            created_unix_ms: 0,
            coordinator: "gw-1".into(),
            decision_seq: None,
            decided_unix_ms: None,
            refund_of: None,
            refunded_minor: 0,
            refund_pending_minor: 0,
            window_id: None,
            expires_unix_ms: None,
            authorized_unix_ms: None,
            authorized_minor: None,
        }
    }

    fn rendered(metrics: &GatewayMetrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        strife_common::metrics::render(&registry).unwrap()
    }

    #[test]
    fn outcomes_and_reasons_are_counted_with_bounded_labels() {
        let metrics = GatewayMetrics::new();
        metrics.payment_decided(&record(PaymentStatus::Committed, None));
        metrics.payment_decided(&record(PaymentStatus::Committed, None));
        metrics.payment_decided(&record(PaymentStatus::Aborted, Some("insufficient_funds")));
        metrics.payment_decided(&record(PaymentStatus::Aborted, Some("bank_timeout")));
        metrics.payment_decided(&record(PaymentStatus::Aborted, Some("made up by a bank")));
        metrics.payment_decided(&record(PaymentStatus::Pending, None));
        let text = rendered(&metrics);
        for line in [
            "strife_payments_total{outcome=\"committed\",reason=\"none\"} 2\n",
            "strife_payments_total{outcome=\"refused\",reason=\"insufficient_funds\"} 1\n",
            "strife_payments_total{outcome=\"aborted\",reason=\"bank_timeout\"} 1\n",
            "strife_payments_total{outcome=\"refused\",reason=\"other\"} 1\n",
            "# TYPE strife_payments_total counter\n",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
        for private in ["alice", "bob", "secret", "made up"] {
            assert!(!text.contains(private), "{private} leaked into\n{text}");
        }
    }

    #[test]
    fn phases_banks_gauges_and_logins_render() {
        let metrics = GatewayMetrics::new();
        {
            let _running = metrics.payment_started();
            let _second = metrics.payment_started();
            assert!(rendered(&metrics).contains("strife_payments_in_flight 2\n"));
        }
        for phase in Phase::ALL {
            metrics.phase(phase, Duration::from_millis(3));
        }
        metrics.payment_answered(Duration::from_millis(12));
        metrics.prepare_voted("bank0", Duration::from_millis(1), None);
        metrics.prepare_voted("bank0", Duration::from_millis(1), Some(PrepareError::No));
        metrics.prepare_voted("bank1", Duration::from_secs(2), Some(PrepareError::Timeout));
        metrics.set_in_doubt(3);
        metrics.login_failed();
        metrics.login_failed();
        metrics.locked_out();
        metrics.console_password_checked();
        metrics.console_address_locked();
        metrics.taken_over(0);
        metrics.taken_over(3);
        let watches = metrics.watches_open();
        watches.inc();
        watches.inc();
        watches.dec();
        let text = rendered(&metrics);
        for line in [
            "strife_payments_in_flight 0\n",
            "strife_payments_in_doubt 3\n",
            "strife_payment_duration_seconds_count 1\n",
            "strife_payment_phase_duration_seconds_count{phase=\"begin\"} 1\n",
            "strife_payment_phase_duration_seconds_count{phase=\"prepare\"} 1\n",
            "strife_payment_phase_duration_seconds_count{phase=\"decision_write\"} 1\n",
            "strife_payment_phase_duration_seconds_count{phase=\"phase_two\"} 1\n",
            "strife_payment_phase_duration_seconds_bucket{phase=\"begin\",le=\"0.004\"} 1\n",
            "strife_bank_prepare_duration_seconds_count{bank=\"bank0\"} 2\n",
            "strife_bank_prepare_errors_total{bank=\"bank0\",kind=\"no\"} 1\n",
            "strife_bank_prepare_errors_total{bank=\"bank0\",kind=\"timeout\"} 0\n",
            "strife_bank_prepare_errors_total{bank=\"bank1\",kind=\"timeout\"} 1\n",
            "strife_login_failures_total 2\n",
            "strife_lockouts_total 1\n",
            "strife_console_password_checks_total 1\n",
            "strife_console_address_lockouts_total 1\n",
            "strife_takeover_claimed_total 3\n",
            "strife_watches_open 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
    }

    #[test]
    fn bank_labels_stay_bounded() {
        let metrics = GatewayMetrics::new();
        for bank in 0..MAX_BANK_ENTRIES + 10 {
            metrics.prepare_voted(&format!("bank{bank}"), Duration::ZERO, None);
        }
        let banks = metrics
            .banks
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        assert_eq!(banks.len(), MAX_BANK_ENTRIES + 1);
        assert!(banks.contains_key("other"));
    }
}
