//! The client-facing `strife.v1.Gateway` service. Authentication and the role check already
//! happened in the auth layer; handlers validate input, scope data to the caller, and call
//! banks or the coordinator.

use std::sync::Arc;
use std::time::Instant;

use strife_common::failure::payment_refusal;
use strife_common::layout::validate_name;
use strife_common::limits::{validate_id, MAX_TEXT_BYTES};
use strife_common::money::{self, Amount};
use strife_common::password::check_password;
use strife_common::time::now_unix_ms;
use strife_common::Failure;
use strife_proto::v1::{self as pb, bank_client::BankClient, gateway_server::Gateway};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::auth::{hash_password, Caller};
use crate::coordinator::Coordinator;
use crate::cursor::{CursorKind, CursorSeal};
use crate::events::{EventStream, Events};
use crate::metrics::Phase;
use crate::refusals::{Attempt, RefusalLimiter};
use crate::registry::{bank_failure, BankRegistry};
use crate::request_log::RequestLogSlot;
use crate::roles::Role;
use strife_ledger::payment;
use strife_ledger::records::{
    Begun, LinkedAccount, Party, PaymentRecord, PaymentStatus, PositionRecord, WindowRecord,
    WindowReport,
};
use strife_ledger::settlement::{self, WindowState};
use strife_ledger::store::GatewayStore;

const DEFAULT_PAGE_SIZE: u32 = 20;
const MAX_PAGE_SIZE: u32 = 100;

/// The gateway's client API.
pub struct GatewayApi {
    store: Arc<dyn GatewayStore>,
    registry: Arc<BankRegistry>,
    coordinator: Arc<Coordinator>,
    refusals: Arc<RefusalLimiter>,
    events: Events,
    /// Seals the cursors and page tokens handed out (`crate::cursor`).
    seal: Arc<CursorSeal>,
}

impl GatewayApi {
    /// `seal` must be made from the store's shared cursor secret, so every replica opens the
    /// cursors every other one gave out.
    pub fn new(
        store: Arc<dyn GatewayStore>,
        registry: Arc<BankRegistry>,
        coordinator: Arc<Coordinator>,
        seal: Arc<CursorSeal>,
    ) -> Self {
        GatewayApi {
            events: Events::new(
                Arc::clone(&store),
                Arc::clone(&seal),
                coordinator.decisions(),
                coordinator.metrics().watches_open(),
            ),
            seal,
            store,
            registry,
            coordinator,
            refusals: Arc::default(),
        }
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

impl GatewayApi {
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
        refund_of: Option<String>,
    ) -> PaymentRecord {
        PaymentRecord {
            seq: 0,
            // Time-ordered (v7), so the payment and leg indexes at the gateway and the banks
            // grow at their right edge instead of dirtying a random page per payment.
            payment_id: uuid::Uuid::now_v7().to_string(),
            idempotency_key,
            from,
            to,
            amount_minor,
            currency: currency.to_owned(),
            memo,
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
    ) -> Result<Response<pb::Payment>, Status> {
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
            Begun::Finished(record) | Begun::InFlight(record) => record,
        };
        log.set_payment(&record.payment_id, None);
        pay_outcome(&record).map(Response::new)
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

fn caller<T>(request: &Request<T>) -> Result<Caller, Failure> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Failure::internal("auth", "request reached a handler without a caller"))
}

fn log_slot<T>(request: &Request<T>) -> RequestLogSlot {
    request
        .extensions()
        .get::<RequestLogSlot>()
        .cloned()
        .unwrap_or_default()
}

/// Bidirectional formatting characters: not control characters to `char::is_control`, but
/// they reorder how the text around them is displayed, so a memo could make a statement or a
/// terminal show something other than what was stored ("Trojan Source").
fn is_bidi_control(character: char) -> bool {
    matches!(
        character,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
    )
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), Failure> {
    if value.len() > max {
        return Err(Failure::invalid_field(
            field,
            format!("{field} must be at most {max} bytes"),
        ));
    }
    if value
        .chars()
        .any(|character| character.is_control() || is_bidi_control(character))
    {
        return Err(Failure::invalid_field(
            field,
            format!("{field} must not contain control or bidirectional formatting characters"),
        ));
    }
    Ok(())
}

/// A user or bank name in request field `field`; `kind` ("user", "bank") says which.
fn check_name(field: &str, kind: &str, value: &str) -> Result<(), Failure> {
    validate_name(kind, value).map_err(|problem| Failure::invalid_field(field, problem))
}

/// A currency code in request field `field`.
fn check_currency(field: &str, code: &str) -> Result<money::Currency, Failure> {
    if code.is_empty() {
        return Err(Failure::invalid_field(field, format!("{field} is empty")));
    }
    money::currency(code).map_err(|error| Failure::invalid_field(field, error.to_string()))
}

/// Validates the money in request field `field` (`amount`, `opening_deposit`); `allow_zero`
/// for opening deposits.
fn check_money(
    field: &str,
    money: Option<&pb::Money>,
    allow_zero: bool,
) -> Result<Amount, Failure> {
    let money =
        money.ok_or_else(|| Failure::invalid_field(field, format!("{field} is required")))?;
    let currency = check_currency(&format!("{field}.currency"), &money.currency)?;
    let smallest = if allow_zero { 0 } else { 1 };
    if money.amount_minor < smallest {
        let amount_field = format!("{field}.amount_minor");
        let rule = if allow_zero {
            "must not be negative"
        } else {
            "must be greater than zero"
        };
        return Err(Failure::invalid_field(
            &amount_field,
            format!("{amount_field} {rule}"),
        ));
    }
    Ok(Amount {
        amount_minor: money.amount_minor,
        currency,
    })
}

fn money_proto(amount_minor: i64, currency: &str) -> Option<pb::Money> {
    Some(pb::Money {
        amount_minor,
        currency: currency.to_owned(),
    })
}

fn linked_proto(account: &LinkedAccount) -> pb::LinkedAccount {
    pb::LinkedAccount {
        username: account.username.clone(),
        bank_id: account.bank_id.clone(),
        account_number: account.account_number.clone(),
        currency: account.currency.clone(),
        holder_name: account.holder_name.clone(),
    }
}

pub(crate) fn payment_proto(record: &PaymentRecord) -> pb::Payment {
    let status = match record.status {
        PaymentStatus::Pending => pb::PaymentStatus::Pending,
        PaymentStatus::Committed => pb::PaymentStatus::Committed,
        PaymentStatus::Aborted => pb::PaymentStatus::Aborted,
    };
    pb::Payment {
        payment_id: record.payment_id.clone(),
        idempotency_key: record.idempotency_key.clone(),
        from_username: record.from.username.clone(),
        from_bank_id: record.from.bank_id.clone(),
        from_account: record.from.account_number.clone(),
        to_username: record.to.username.clone(),
        to_bank_id: record.to.bank_id.clone(),
        to_account: record.to.account_number.clone(),
        amount: money_proto(record.amount_minor, &record.currency),
        status: status as i32,
        reason_code: record.reason_code.clone().unwrap_or_default(),
        reason: record.reason.clone().unwrap_or_default(),
        created_unix_ms: record.created_unix_ms,
        decided_unix_ms: record.decided_unix_ms.unwrap_or(0),
        memo: record.memo.clone(),
        refund_of: record.refund_of.clone().unwrap_or_default(),
        refunded: (record.refunded_minor > 0)
            .then(|| money_proto(record.refunded_minor, &record.currency))
            .flatten(),
        settlement_window_id: record
            .window_id
            .and_then(|window| u64::try_from(window).ok())
            .unwrap_or(0),
    }
}

fn position_proto(position: &PositionRecord) -> pb::BankPosition {
    let money = |amount_minor| money_proto(amount_minor, &position.currency);
    pb::BankPosition {
        bank_id: position.bank_id.clone(),
        position: money(position.position_minor),
        reserved: money(position.reserved_minor),
        cap: position.cap_minor.and_then(money),
        headroom: settlement::headroom(position).and_then(money),
    }
}

fn window_proto(window: &WindowRecord) -> pb::SettlementWindow {
    let state = match settlement::window_state(window) {
        WindowState::Open => pb::SettlementWindowState::Open,
        WindowState::Closed => pb::SettlementWindowState::Closed,
        WindowState::Settled => pb::SettlementWindowState::Settled,
    };
    pb::SettlementWindow {
        window_id: u64::try_from(window.window_id).unwrap_or(0),
        state: state as i32,
        opened_unix_ms: window.opened_unix_ms,
        closed_unix_ms: window.closed_unix_ms.unwrap_or(0),
        settled_unix_ms: window.settled_unix_ms.unwrap_or(0),
    }
}

/// A window's report: its bilateral totals and the net amounts they come to.
fn report_proto(report: &WindowReport) -> Result<pb::SettlementReport, Failure> {
    let nets = settlement::nets(&report.totals)?;
    Ok(pb::SettlementReport {
        window: Some(window_proto(&report.window)),
        bilateral: report
            .totals
            .iter()
            .map(|total| pb::BilateralAmount {
                payer_bank_id: total.payer_bank.clone(),
                payee_bank_id: total.payee_bank.clone(),
                amount: money_proto(total.amount_minor, &total.currency),
                payments: u64::try_from(total.payments).unwrap_or(0),
            })
            .collect(),
        nets: nets
            .iter()
            .map(|net| pb::NetAmount {
                bank_id: net.bank_id.clone(),
                net: money_proto(net.net_minor, &net.currency),
            })
            .collect(),
    })
}

/// A window id from a request: 0 (unset) is `None`; one past i64 cannot exist.
fn window_id(field: &str, value: u64) -> Result<Option<i64>, Failure> {
    if value == 0 {
        return Ok(None);
    }
    i64::try_from(value)
        .map(Some)
        .map_err(|_| Failure::NotFound(format!("settlement window {value} not found ({field})")))
}

fn required_window_id(value: u64) -> Result<i64, Failure> {
    window_id("window_id", value)?
        .ok_or_else(|| Failure::InvalidArgument("window_id is required (1 or more)".into()))
}

/// The answer `Pay` gives for a stored payment ([`payment::outcome`] decides which; the
/// status, with the payment id and abort reason, is built by `strife_common::failure`).
fn pay_outcome(record: &PaymentRecord) -> Result<pb::Payment, Status> {
    match payment::outcome(record) {
        Ok(()) => Ok(payment_proto(record)),
        Err(failure) => Err(payment_refusal(
            failure,
            &record.payment_id,
            record.reason_code.as_deref(),
        )),
    }
}

/// Checks a `Pay` request on its own (no storage): amount, key, names, memo, not to self.
/// Public so the fuzz targets exercise exactly what the handler runs.
pub fn validate_pay(caller: &str, body: &pb::PayRequest) -> Result<Amount, Failure> {
    let amount = check_money("amount", body.amount.as_ref(), false)?;
    validate_id("idempotency_key", &body.idempotency_key)?;
    check_name("to_username", "user", &body.to_username)?;
    check_text("memo", &body.memo, MAX_TEXT_BYTES)?;
    for (field, bank) in [
        ("from_bank_id", &body.from_bank_id),
        ("to_bank_id", &body.to_bank_id),
    ] {
        if !bank.is_empty() {
            check_name(field, "bank", bank)?;
        }
    }
    if body.to_username == caller {
        return Err(Failure::invalid_field(
            "to_username",
            "to_username is yourself; you cannot pay yourself",
        ));
    }
    Ok(amount)
}

/// Picks the account a payment uses: the one at `bank_id` (if named) in `currency`.
fn pick_account(
    accounts: &[LinkedAccount],
    username: &str,
    bank_id: &str,
    currency: &str,
) -> Result<LinkedAccount, Failure> {
    let at_bank: Vec<&LinkedAccount> = accounts
        .iter()
        .filter(|account| bank_id.is_empty() || account.bank_id == bank_id)
        .collect();
    if at_bank.is_empty() {
        let place = if bank_id.is_empty() {
            String::new()
        } else {
            format!(" at {bank_id}")
        };
        return Err(Failure::NotFound(format!(
            "{username} has no account{place}"
        )));
    }
    at_bank
        .iter()
        .find(|account| account.currency == currency)
        .map(|account| (*account).clone())
        .ok_or_else(|| {
            Failure::precondition(
                "currency_mismatch",
                format!("{username} has no {currency} account"),
            )
        })
}

#[tonic::async_trait]
impl Gateway for GatewayApi {
    type WatchPaymentsStream = EventStream;

    async fn watch_payments(
        &self,
        request: Request<pb::WatchPaymentsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = caller(&request)?;
        let since = request.into_inner().since;
        let stream = self
            .events
            .watch(&caller.username, caller.role, &since)
            .await?;
        Ok(Response::new(stream))
    }

    async fn register_user(
        &self,
        request: Request<pb::RegisterUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let body = request.into_inner();
        check_name("username", "user", &body.username)?;
        check_password(&body.username, &body.password)
            .map_err(|problem| Failure::invalid_field("password", problem))?;
        let username = body.username.clone();
        // argon2id is deliberately slow: hash on the blocking pool, then write.
        let password = body.password;
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|error| Failure::internal("password hashing", error))??;
        self.store
            .insert_user(&username, Role::Client.as_str(), &hash)
            .await?;
        tracing::info!(%username, "user registered");
        Ok(Response::new(pb::User {
            username,
            role: Role::Client.as_str().into(),
        }))
    }

    async fn open_account(
        &self,
        request: Request<pb::GatewayOpenAccountRequest>,
    ) -> Result<Response<pb::LinkedAccount>, Status> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        check_name("username", "user", &body.username)?;
        check_name("bank_id", "bank", &body.bank_id)?;
        check_text("holder_name", &body.holder_name, MAX_TEXT_BYTES)?;
        let currency = check_currency("currency", &body.currency)?;
        let deposit_minor = match body.opening_deposit.as_ref() {
            None => 0,
            Some(deposit) => {
                let amount = check_money("opening_deposit", Some(deposit), true)?;
                if amount.currency != currency {
                    return Err(Failure::invalid_field(
                        "opening_deposit.currency",
                        format!(
                            "opening_deposit.currency must be the account's currency ({})",
                            currency.code
                        ),
                    )
                    .into());
                }
                amount.amount_minor
            }
        };
        if !body.idempotency_key.is_empty() {
            validate_id("idempotency_key", &body.idempotency_key)?;
        }
        // The bank opens at most one account per request id, so a keyed retry (after a lost
        // reply, or a crash between the bank's answer and the link below) gets the same
        // account and deposit back, and finishes the link. Admin names contain no '/'.
        let request_id = if body.idempotency_key.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            format!("{}/{}", caller.username, body.idempotency_key)
        };
        let name = body.username.clone();
        if self.store.user(&name).await?.is_none() {
            return Err(Failure::NotFound(format!("user {} does not exist", body.username)).into());
        }
        let mut bank = self.bank_named(&body.bank_id).await?;
        let account = match bank
            .open_account(pb::OpenAccountRequest {
                request_id,
                owner: body.username.clone(),
                holder_name: body.holder_name.clone(),
                currency: currency.code.into(),
                opening_deposit_minor: deposit_minor,
            })
            .await
        {
            Ok(account) => account.into_inner(),
            // The request id is `<admin>/<key>`: the bank refusing it for another account is
            // the admin's key reused with other parameters.
            Err(status)
                if status.code() == tonic::Code::InvalidArgument
                    && !body.idempotency_key.is_empty() =>
            {
                return Err(Failure::invalid_field(
                    "idempotency_key",
                    format!(
                        "idempotency_key {:?} was already used to open a different account",
                        body.idempotency_key
                    ),
                )
                .into());
            }
            Err(status) => return Err(bank_failure(&body.bank_id, &status).into()),
        };
        let linked = LinkedAccount {
            username: body.username,
            bank_id: body.bank_id,
            account_number: account.account_number,
            currency: account.currency,
            holder_name: account.holder_name,
        };
        let stored = linked.clone();
        self.store.link_account(&stored).await?;
        tracing::info!(username = %linked.username, bank_id = %linked.bank_id, account = %linked.account_number, "account opened");
        Ok(Response::new(linked_proto(&linked)))
    }

    async fn link_account(
        &self,
        request: Request<pb::LinkAccountRequest>,
    ) -> Result<Response<pb::LinkedAccount>, Status> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        check_name("bank_id", "bank", &body.bank_id)?;
        validate_id("account_number", &body.account_number)?;
        check_text("holder_name", &body.holder_name, MAX_TEXT_BYTES)?;
        // Someone else's account answers exactly like one that does not exist, so account
        // numbers cannot be probed for existence.
        let not_found = || {
            Failure::NotFound(format!(
                "account {} not found at {}",
                body.account_number, body.bank_id
            ))
        };
        let mut bank = self.bank_named(&body.bank_id).await?;
        let account = match bank
            .get_balance(pb::GetBalanceRequest {
                account_number: body.account_number.clone(),
            })
            .await
        {
            Ok(account) => account.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => return Err(not_found().into()),
            Err(status) => return Err(bank_failure(&body.bank_id, &status).into()),
        };
        if account.owner != caller.username {
            return Err(not_found().into());
        }
        let holder_name = if body.holder_name.is_empty() {
            account.holder_name
        } else {
            bank.update_account_details(pb::UpdateAccountDetailsRequest {
                account_number: body.account_number.clone(),
                holder_name: body.holder_name.clone(),
            })
            .await
            .map_err(|status| bank_failure(&body.bank_id, &status))?
            .into_inner()
            .holder_name
        };
        let linked = LinkedAccount {
            username: caller.username,
            bank_id: body.bank_id,
            account_number: body.account_number,
            currency: account.currency,
            holder_name,
        };
        let stored = linked.clone();
        self.store.link_account(&stored).await?;
        Ok(Response::new(linked_proto(&linked)))
    }

    async fn get_balances(
        &self,
        request: Request<pb::GetBalancesRequest>,
    ) -> Result<Response<pb::GetBalancesResponse>, Status> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let target = if body.username.is_empty() {
            caller.username.clone()
        } else {
            check_name("username", "user", &body.username)?;
            body.username
        };
        if target != caller.username && caller.role != Role::Admin {
            return Err(
                Failure::PermissionDenied("you may only see your own balances".into()).into(),
            );
        }
        let name = target.clone();
        let user = self.store.user(&name).await?;
        let accounts = self.store.accounts_of(&name).await?;
        if user.is_none() {
            return Err(Failure::NotFound(format!("user {target} does not exist")).into());
        }
        let lookups = accounts.iter().map(|linked| {
            let registry = &self.registry;
            async move {
                // A linked account's bank is one the network has: not registered now means
                // down (UNAVAILABLE), never unknown.
                let mut bank = registry.client(&linked.bank_id)?;
                let account = bank
                    .get_balance(pb::GetBalanceRequest {
                        account_number: linked.account_number.clone(),
                    })
                    .await
                    .map_err(|status| bank_failure(&linked.bank_id, &status))?
                    .into_inner();
                Ok::<_, Failure>(pb::AccountBalance {
                    bank_id: linked.bank_id.clone(),
                    account_number: linked.account_number.clone(),
                    balance: money_proto(account.balance_minor, &account.currency),
                    held: money_proto(account.held_minor, &account.currency),
                    available: money_proto(account.available_minor, &account.currency),
                })
            }
        });
        let balances = futures::future::try_join_all(lookups).await?;
        Ok(Response::new(pb::GetBalancesResponse {
            accounts: balances,
        }))
    }

    async fn pay(&self, request: Request<pb::PayRequest>) -> Result<Response<pb::Payment>, Status> {
        let caller = caller(&request)?;
        let log = log_slot(&request);
        let body = request.into_inner();
        let amount = validate_pay(&caller.username, &body)?;
        log.set_amount(amount.to_string());
        // Independent reads, run together: one store round trip of latency instead of three
        // when the store is on another server.
        let (payee_user, payer_accounts, payee_accounts) = futures::try_join!(
            self.store.user(&body.to_username),
            self.store.accounts_of(&caller.username),
            self.store.accounts_of(&body.to_username),
        )?;
        if payee_user.is_none() {
            return Err(
                Failure::NotFound(format!("user {} does not exist", body.to_username)).into(),
            );
        }
        for bank_id in [&body.from_bank_id, &body.to_bank_id] {
            if !bank_id.is_empty() {
                self.check_bank_known(bank_id).await?;
            }
        }
        let currency = amount.currency.code;
        let from = pick_account(
            &payer_accounts,
            &caller.username,
            &body.from_bank_id,
            currency,
        )?;
        let to = pick_account(
            &payee_accounts,
            &body.to_username,
            &body.to_bank_id,
            currency,
        )?;
        let place = self.refusals.admit(&caller.username, Instant::now())?;
        // A bank that is not registered fails the request before anything is recorded, so the
        // same key simply works once the bank is back.
        self.registry.client(&from.bank_id)?;
        self.registry.client(&to.bank_id)?;

        let attempt = self.new_attempt(
            body.idempotency_key,
            Party {
                username: caller.username.clone(),
                bank_id: from.bank_id,
                account_number: from.account_number,
            },
            Party {
                username: body.to_username,
                bank_id: to.bank_id,
                account_number: to.account_number,
            },
            amount.amount_minor,
            currency,
            body.memo,
            None,
        );
        self.run_attempt(&attempt, place, &log).await
    }

    async fn refund(
        &self,
        request: Request<pb::RefundRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        let caller = caller(&request)?;
        let log = log_slot(&request);
        let body = request.into_inner();
        validate_id("payment_id", &body.payment_id)?;
        validate_id("idempotency_key", &body.idempotency_key)?;
        check_text("reason", &body.reason, MAX_TEXT_BYTES)?;
        let asked = match body.amount.as_ref() {
            Some(amount) => Some(check_money("amount", Some(amount), false)?),
            None => None,
        };
        // A payment the caller has no part in answers exactly like one that does not exist.
        let not_found = || Failure::NotFound(format!("payment {} not found", body.payment_id));
        let original = self
            .store
            .payment(&body.payment_id)
            .await?
            .ok_or_else(not_found)?;
        let is_admin = caller.role == Role::Admin;
        let involved =
            original.from.username == caller.username || original.to.username == caller.username;
        if !involved && !is_admin {
            return Err(not_found().into());
        }
        settlement::may_refund(&caller.username, is_admin, &original)?;
        if let Some(asked) = &asked {
            if asked.currency.code != original.currency {
                return Err(Failure::InvalidArgument(format!(
                    "amount.currency must be the payment's currency, {}",
                    original.currency
                ))
                .into());
            }
            log.set_amount(asked.to_string());
        }
        let place = self.refusals.admit(&caller.username, Instant::now())?;
        self.registry.client(&original.to.bank_id)?;
        self.registry.client(&original.from.bank_id)?;
        // The payee pays the payer back, between the same two accounts. Amount 0 = the rest,
        // resolved by the store in the write that claims it.
        let attempt = self.new_attempt(
            body.idempotency_key,
            original.to.clone(),
            original.from.clone(),
            asked.map_or(0, |asked| asked.amount_minor),
            &original.currency,
            body.reason,
            Some(original.payment_id.clone()),
        );
        self.run_attempt(&attempt, place, &log).await
    }

    async fn set_net_debit_cap(
        &self,
        request: Request<pb::SetNetDebitCapRequest>,
    ) -> Result<Response<pb::BankPosition>, Status> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        check_name("bank_id", "bank", &body.bank_id)?;
        let currency = money::currency(&body.currency)
            .map_err(|error| Failure::InvalidArgument(format!("currency: {error}")))?;
        settlement::check_cap(body.cap_minor)?;
        self.known_bank(&body.bank_id).await?;
        let position = self
            .store
            .set_net_debit_cap(&body.bank_id, currency.code, body.cap_minor)
            .await?;
        tracing::info!(admin = %caller.username, bank_id = %position.bank_id, currency = %position.currency, cap_minor = ?position.cap_minor, "net debit cap set");
        Ok(Response::new(position_proto(&position)))
    }

    async fn get_positions(
        &self,
        _request: Request<pb::GetPositionsRequest>,
    ) -> Result<Response<pb::GetPositionsResponse>, Status> {
        let positions = self.store.positions().await?;
        Ok(Response::new(pb::GetPositionsResponse {
            positions: positions.iter().map(position_proto).collect(),
        }))
    }

    async fn list_settlement_windows(
        &self,
        request: Request<pb::ListSettlementWindowsRequest>,
    ) -> Result<Response<pb::ListSettlementWindowsResponse>, Status> {
        let body = request.into_inner();
        let page_size = match body.page_size {
            0 => DEFAULT_PAGE_SIZE,
            asked => asked.min(MAX_PAGE_SIZE),
        };
        let before = if body.page_token.is_empty() {
            i64::MAX
        } else {
            body.page_token
                .parse::<i64>()
                .ok()
                .filter(|before| *before > 0)
                .ok_or_else(|| {
                    Failure::InvalidArgument("page_token is not one this server gave out".into())
                })?
        };
        let windows = self.store.windows(before, page_size).await?;
        let next_page_token = match windows.last() {
            Some(last) if windows.len() == page_size as usize => last.window_id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListSettlementWindowsResponse {
            windows: windows.iter().map(window_proto).collect(),
            next_page_token,
        }))
    }

    async fn close_settlement_window(
        &self,
        request: Request<pb::CloseSettlementWindowRequest>,
    ) -> Result<Response<pb::SettlementReport>, Status> {
        let caller = caller(&request)?;
        let expected = window_id("window_id", request.into_inner().window_id)?;
        let report = self.store.close_window(expected).await?;
        tracing::info!(admin = %caller.username, window_id = report.window.window_id, "settlement window closed");
        Ok(Response::new(report_proto(&report)?))
    }

    async fn get_settlement_report(
        &self,
        request: Request<pb::GetSettlementReportRequest>,
    ) -> Result<Response<pb::SettlementReport>, Status> {
        let window_id = required_window_id(request.into_inner().window_id)?;
        let report =
            self.store.window_report(window_id).await?.ok_or_else(|| {
                Failure::NotFound(format!("settlement window {window_id} not found"))
            })?;
        Ok(Response::new(report_proto(&report)?))
    }

    async fn mark_settled(
        &self,
        request: Request<pb::MarkSettledRequest>,
    ) -> Result<Response<pb::SettlementReport>, Status> {
        let caller = caller(&request)?;
        let window_id = required_window_id(request.into_inner().window_id)?;
        let report = self.store.settle_window(window_id).await?;
        tracing::info!(admin = %caller.username, window_id, "settlement window marked settled");
        Ok(Response::new(report_proto(&report)?))
    }

    async fn list_history(
        &self,
        request: Request<pb::ListHistoryRequest>,
    ) -> Result<Response<pb::ListHistoryResponse>, Status> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let page_size = match body.page_size {
            0 => DEFAULT_PAGE_SIZE,
            asked => asked.min(MAX_PAGE_SIZE),
        };
        let username = caller.username;
        // Sealed to the caller: a log position would count other users' payments.
        let before_seq = if body.page_token.is_empty() {
            i64::MAX
        } else {
            self.seal.open(
                CursorKind::HistoryPage,
                &username,
                &body.page_token,
                "page_token",
            )?
        };
        let page = self.store.history(&username, before_seq, page_size).await?;
        let next_page_token = match page.last() {
            Some(last) if page.len() == page_size as usize => {
                self.seal.seal(CursorKind::HistoryPage, &username, last.seq)
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::ListHistoryResponse {
            payments: page.iter().map(payment_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_payment(
        &self,
        request: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        validate_id("payment_id", &body.payment_id)?;
        // Someone else's payment answers exactly like one that does not exist, so ids cannot
        // be probed for existence.
        let not_found = || Failure::NotFound(format!("payment {} not found", body.payment_id));
        let record = self
            .store
            .payment(&body.payment_id)
            .await?
            .ok_or_else(not_found)?;
        let involved =
            record.from.username == caller.username || record.to.username == caller.username;
        if !involved && caller.role != Role::Admin {
            return Err(not_found().into());
        }
        Ok(Response::new(payment_proto(&record)))
    }

    async fn get_payment_by_key(
        &self,
        request: Request<pb::GetPaymentByKeyRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        let caller = caller(&request)?;
        let key = request.into_inner().idempotency_key;
        validate_id("idempotency_key", &key)?;
        // Keys are per user: only the caller's own keys are looked at, so another user's key
        // answers like an unused one.
        let record = self
            .store
            .payment_by_key(&caller.username, &key)
            .await?
            .ok_or_else(|| Failure::NotFound(format!("no payment with idempotency key {key:?}")))?;
        Ok(Response::new(payment_proto(&record)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memos_refuse_bidi_and_control_characters() {
        for bad in [
            "pay \u{202E}gnp.exe",
            "a\u{2066}b",
            "a\u{2069}b",
            "a\u{200E}b",
            "a\u{200F}b",
            "a\u{061C}b",
            "a\u{202A}b",
            "line\nbreak",
            "nul\0",
            "esc\u{1b}[31m",
            "c1\u{85}",
        ] {
            assert!(
                matches!(
                    check_text("memo", bad, MAX_TEXT_BYTES),
                    Err(Failure::InvalidField { ref field, .. }) if field == "memo"
                ),
                "{bad:?}"
            );
        }
        for good in ["rent for März", "عربى", "日本語 ok", ""] {
            assert_eq!(check_text("memo", good, MAX_TEXT_BYTES), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn every_pay_refusal_names_its_field() {
        let usd = |amount_minor: i64, currency: &str| {
            Some(pb::Money {
                amount_minor,
                currency: currency.into(),
            })
        };
        let good = pb::PayRequest {
            idempotency_key: "key-1".into(),
            to_username: "bob".into(),
            amount: usd(100, "USD"),
            ..pb::PayRequest::default()
        };
        assert!(validate_pay("alice", &good).is_ok());
        let with = |change: &dyn Fn(&mut pb::PayRequest)| {
            let mut request = good.clone();
            change(&mut request);
            request
        };
        let cases = [
            ("amount", with(&|r| r.amount = None)),
            ("amount.amount_minor", with(&|r| r.amount = usd(0, "USD"))),
            ("amount.amount_minor", with(&|r| r.amount = usd(-5, "USD"))),
            ("amount.currency", with(&|r| r.amount = usd(100, "XYZ"))),
            ("amount.currency", with(&|r| r.amount = usd(100, ""))),
            ("idempotency_key", with(&|r| r.idempotency_key.clear())),
            (
                "idempotency_key",
                with(&|r| r.idempotency_key = "a b".into()),
            ),
            ("to_username", with(&|r| r.to_username.clear())),
            ("to_username", with(&|r| r.to_username = "alice".into())),
            ("memo", with(&|r| r.memo = "\u{202E}gnp".into())),
            ("from_bank_id", with(&|r| r.from_bank_id = "../x".into())),
            ("to_bank_id", with(&|r| r.to_bank_id = "a b".into())),
        ];
        for (expected, request) in cases {
            match validate_pay("alice", &request) {
                Err(Failure::InvalidField { field, message }) => {
                    assert_eq!(field, expected, "{message}");
                    assert!(message.contains(expected), "{message}");
                    assert!(!message.contains("  "), "{message}");
                }
                other => panic!("{expected}: {other:?}"),
            }
        }
    }
}
