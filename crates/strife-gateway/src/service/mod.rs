//! The gateway's one service: every request of every transport (gRPC in `crate::grpc`, the
//! web console, the coming HTTP API) is a call of one [`Service`] method with the [`Call`]
//! its transport verified. The method checks the role table, validates the request
//! ([`validate`]), scopes data to the caller, and calls the store, the banks or the
//! coordinator; answers are built by [`convert`]. A transport only translates: its request
//! in, its status or page out.
//!
//! - [`accounts`]: users, accounts, links and balances.
//! - [`api_keys`]: API keys, and the caller a presented key stands for.
//! - [`payments`]: pay, refund, history, look-ups and payment events.
//! - [`search`]: payments by filter (`ListPayments`).
//! - [`settling`]: net debit caps, positions and settlement windows (admin).
//! - [`events`], [`cursor`]: payment events and the sealed cursors they resume from.
//! - [`rate`]: requests per second per user and per API key.
//! - [`refusals`]: how many refused payments one user can make the gateway store.
//! - [`network`]: what this replica sees of the banks (the operator's network page).

mod accounts;
pub mod api_keys;
pub mod convert;
pub mod cursor;
pub mod events;
pub mod key_hash;
pub mod network;
mod payments;
pub mod rate;
pub mod refusals;
mod search;
mod settling;
pub mod validate;

use std::sync::Arc;
use std::time::Instant;

use strife_common::failure::PaymentRefusal;
use strife_common::time::now_unix_ms;
use strife_common::Failure;
use strife_ledger::payment;
use strife_ledger::records::{Begun, Metadata, Party, PaymentRecord, PaymentStatus};
use strife_ledger::store::GatewayStore;
use strife_proto::v1::{self as pb, bank_client::BankClient};
use tonic::transport::Channel;

use crate::coordinator::Coordinator;
use crate::metrics::Phase;
use crate::registry::BankRegistry;
use crate::request::{Call, RequestLogSlot};
use crate::roles::allowed_roles;
use crate::scopes::scope_needed;
use convert::payment_proto;
use cursor::CursorSeal;
use events::Events;
use key_hash::ApiKeyHasher;
use rate::RateLimiter;
use refusals::{Attempt, RefusalLimiter};

/// Page sizes of every listing (history, settlement windows).
const DEFAULT_PAGE_SIZE: u32 = 20;
const MAX_PAGE_SIZE: u32 = 100;

/// The gateway's service: every request of every transport is a call of one of its methods.
pub struct Service {
    store: Arc<dyn GatewayStore>,
    registry: Arc<BankRegistry>,
    coordinator: Arc<Coordinator>,
    refusals: Arc<RefusalLimiter>,
    rates: RateLimiter,
    events: Events,
    /// Seals the cursors and page tokens handed out (`crate::cursor`).
    seal: Arc<CursorSeal>,
    api_key_hasher: Arc<ApiKeyHasher>,
}

impl Service {
    /// `seal` and `api_key_hasher` must be made from the store's shared secrets, so every
    /// replica opens the cursors, and accepts the API keys, every other one gave out.
    pub fn new(
        store: Arc<dyn GatewayStore>,
        registry: Arc<BankRegistry>,
        coordinator: Arc<Coordinator>,
        seal: Arc<CursorSeal>,
        api_key_hasher: Arc<ApiKeyHasher>,
    ) -> Self {
        Service {
            events: Events::new(
                Arc::clone(&store),
                Arc::clone(&seal),
                coordinator.decisions(),
                coordinator.metrics().watches_open(),
            ),
            seal,
            api_key_hasher,
            store,
            registry,
            coordinator,
            refusals: Arc::default(),
            rates: RateLimiter::default(),
        }
    }

    /// Refuses `call` unless the role table lets its caller's role call `method` (`"Pay"`,
    /// `"GetPositions"`, …). Every method checks first, whichever transport the call came by.
    fn authorize(&self, call: &Call, method: &str) -> Result<(), Failure> {
        let path = format!("/strife.v1.Gateway/{method}");
        let allowed = allowed_roles(&path).unwrap_or(&[]);
        if !allowed.contains(&call.caller.role) {
            return Err(Failure::PermissionDenied(format!(
                "{} may not call {path}",
                call.caller.role.as_str()
            )));
        }
        let key_id = call.caller.key.as_ref().map(|grant| grant.key_id.as_str());
        self.rates
            .admit(&call.caller.username, key_id, Instant::now())?;
        // A key's caller needs the method's scope as well: a key never grants more than its
        // owner's role, and only what it was given of that.
        if let Some(grant) = &call.caller.key {
            match scope_needed(method) {
                Some(scope) if grant.scopes.contains(scope) => {}
                Some(scope) => {
                    return Err(Failure::PermissionDenied(format!(
                        "API key {} lacks scope {scope} (needed for {method})",
                        grant.key_id
                    )))
                }
                None => {
                    return Err(Failure::PermissionDenied(format!(
                        "no API key may call {path}"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Ends every `WatchPayments` stream once `draining` turns true (see `events.rs`).
    pub fn ending_watches_on(mut self, draining: tokio::sync::watch::Receiver<bool>) -> Self {
        self.events = self.events.ending_on(draining);
        self
    }

    /// A client for the bank a request names: `NOT_FOUND` (`unknown_bank`) for a bank id the
    /// network never had, `UNAVAILABLE` for one of its banks that is not registered now.
    async fn bank_named(&self, bank_id: &str) -> Result<BankClient<Channel>, Failure> {
        match self.registry.client(bank_id) {
            Ok(client) => Ok(client),
            Err(unavailable) => {
                self.check_bank_known(bank_id).await?;
                Err(unavailable)
            }
        }
    }

    /// Refuses a bank id the network never had: not registered now, not registered at any
    /// time since this gateway started, and no account linked at it.
    async fn check_bank_known(&self, bank_id: &str) -> Result<(), Failure> {
        if self.registry.ever_registered(bank_id) || self.store.has_accounts_at(bank_id).await? {
            Ok(())
        } else {
            Err(Failure::UnknownBank(bank_id.to_owned()))
        }
    }
}

impl Service {
    /// A new PENDING attempt coordinated by this replica.
    #[allow(clippy::too_many_arguments)]
    fn new_attempt(
        &self,
        idempotency_key: String,
        from: Party,
        to: Party,
        amount_minor: i64,
        currency: &str,
        memo: String,
        metadata: Metadata,
        refund_of: Option<String>,
    ) -> PaymentRecord {
        PaymentRecord {
            seq: 0,
            // Time-ordered, so the payment and leg indexes at the gateway and the banks grow at
            // their right edge instead of dirtying a random page per payment.
            payment_id: strife_common::keys::new_key(),
            idempotency_key,
            from,
            to,
            amount_minor,
            currency: currency.to_owned(),
            memo,
            metadata,
            status: PaymentStatus::Pending,
            reason_code: None,
            reason: None,
            debit_acked: false,
            credit_acked: false,
            decision_deadline_unix_ms: self.coordinator.decision_deadline_unix_ms(),
            created_unix_ms: now_unix_ms(),
            coordinator: self.coordinator.replica_id().to_owned(),
            decision_seq: None,
            decided_unix_ms: None,
            refund_of,
            refunded_minor: 0,
            refund_pending_minor: 0,
            window_id: None,
            expires_unix_ms: None,
            authorized_unix_ms: None,
            authorized_minor: None,
        }
    }

    /// Records `attempt` under its key (or finds what the key holds) and runs it through 2PC:
    /// the one path of payments and refunds. `place` is the caller's place in its refusal
    /// budget (`crate::refusals`), kept for a window if the attempt is refused.
    async fn run_attempt(
        &self,
        attempt: &PaymentRecord,
        place: Attempt,
        log: &RequestLogSlot,
    ) -> Result<pb::Payment, PaymentRefusal> {
        let metrics = self.coordinator.metrics();
        let started = Instant::now();
        let begun = self.store.begin_payment(attempt).await;
        metrics.phase(Phase::Begin, started.elapsed());
        let record = match begun? {
            Begun::Started(record) => {
                log.set_payment(&record.payment_id, None);
                let record = self.coordinator.execute(record).await?;
                metrics.payment_answered(started.elapsed());
                if payment::is_business_refusal(&record) {
                    place.refused(Instant::now());
                }
                record
            }
            Begun::Finished(record) => {
                log.set_replayed();
                self.finish_before_replay(&record).await;
                record
            }
            Begun::InFlight(record) => {
                log.set_replayed();
                record
            }
        };
        log.set_payment(&record.payment_id, None);
        pay_outcome(&record)
    }

    /// Read-your-writes for a replay: the first attempt's phase 2 may still be on its way (its
    /// client gave up waiting, or its replica died after the decision), and a balance read
    /// right after a COMMITTED answer must not still show the hold. So the decision is sent to
    /// every leg not yet acknowledged before the stored answer is given, bounded like the
    /// first answer's own phase 2 by one prepare timeout (a bank that is down must not hold up
    /// an answer that is already decided; the retrier finishes it). Re-sending a decision is
    /// harmless: every bank step is idempotent.
    async fn finish_before_replay(&self, record: &PaymentRecord) {
        let legs_open = !(record.debit_acked && record.credit_acked);
        if record.status != PaymentStatus::Pending && legs_open {
            let timeout = self.coordinator.prepare_timeout();
            let _ = tokio::time::timeout(timeout, self.coordinator.phase_two(record)).await;
        }
    }

    /// Whether `bank_id` is part of the network: registered now, or already in the
    /// settlement records (a bank that is down keeps its cap). Otherwise `UnknownBank`.
    async fn known_bank(&self, bank_id: &str) -> Result<(), Failure> {
        if self.registry.client(bank_id).is_ok() {
            return Ok(());
        }
        let positions = self.store.positions().await?;
        if positions.iter().any(|position| position.bank_id == bank_id) {
            return Ok(());
        }
        self.check_bank_known(bank_id).await
    }
}

/// The answer `Pay` gives for a stored payment ([`payment::outcome`] decides which; the
/// status, with the payment id and abort reason, is built by `strife_common::failure`).
fn pay_outcome(record: &PaymentRecord) -> Result<pb::Payment, PaymentRefusal> {
    match payment::outcome(record) {
        Ok(()) => Ok(payment_proto(record)),
        Err(failure) => Err(PaymentRefusal {
            failure,
            payment_id: Some(record.payment_id.clone()),
            reason_code: record.reason_code.clone(),
        }),
    }
}
