//! The JSON the HTTP API takes and gives, described for the OpenAPI document. Field names are
//! the `strife.v1` messages' own (an integrator using both transports sees one vocabulary,
//! and a refusal's `param` is the same path in both); money is always integer minor units
//! with its currency. Requests refuse unknown fields by name. Every answer is built from the
//! service's `strife.v1` message by a `From` here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strife_proto::v1 as pb;
use utoipa::ToSchema;

/// An amount of money: integer minor units (cents for USD) and an ISO 4217 code.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"amount_minor": 1250, "currency": "USD"}))]
pub struct Money {
    /// Minor units of `currency`; never fractional.
    pub amount_minor: i64,
    /// ISO 4217 code, upper case (`USD`, `EUR`, `JPY`).
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

impl From<Money> for pb::Money {
    fn from(money: Money) -> Self {
        pb::Money {
            amount_minor: money.amount_minor,
            currency: money.currency,
        }
    }
}

impl From<pb::Money> for Money {
    fn from(money: pb::Money) -> Self {
        Money {
            amount_minor: money.amount_minor,
            currency: money.currency,
        }
    }
}

fn money(money: Option<pb::Money>) -> Option<Money> {
    money.map(Money::from)
}

fn nonzero(value: i64) -> Option<i64> {
    (value != 0).then_some(value)
}

fn nonempty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// `POST /v1/payments`. The idempotency key travels in the `Idempotency-Key` header.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"to_username": "bob", "amount": {"amount_minor": 1250, "currency": "USD"}, "memo": "lunch", "metadata": {"order_id": "1001"}}))]
pub struct PayBody {
    /// Who is paid.
    pub to_username: String,
    pub amount: Money,
    /// Which of the payer's banks to pay from (default: the only or first account in the
    /// currency).
    #[serde(default)]
    pub from_bank_id: String,
    /// Which of the payee's banks to pay to.
    #[serde(default)]
    pub to_bank_id: String,
    /// At most 200 bytes, no control characters.
    #[serde(default)]
    pub memo: String,
    /// Your own references (order, invoice, customer…), stored and returned on every read
    /// and event, never interpreted. At most 50 entries; keys 1–40 bytes of letters, digits
    /// and `_ - . :`; values at most 500 bytes without control characters; 8 KiB in all.
    /// Part of the request: a retry with the same `Idempotency-Key` must carry the same map.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// `POST /v1/authorizations`: a payment whose funds are held until captured, voided or
/// expired. The idempotency key travels in the `Idempotency-Key` header (shared with
/// payments: a key used for a payment cannot authorize).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"to_username": "bob", "amount": {"amount_minor": 10000, "currency": "USD"}, "expires_in_seconds": 3600, "metadata": {"order": "1001"}}))]
pub struct AuthorizeBody {
    /// Who is to be paid (the merchant, who captures).
    pub to_username: String,
    pub amount: Money,
    /// How long the funds are held: 1 to 604800 seconds (7 days). Not part of the
    /// idempotency check; the first attempt's expiry stands.
    #[schema(minimum = 1, maximum = 604800)]
    pub expires_in_seconds: u32,
    #[serde(default)]
    pub from_bank_id: String,
    #[serde(default)]
    pub to_bank_id: String,
    #[serde(default)]
    pub memo: String,
    /// As a payment's metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// `POST /v1/payments/{payment_id}/capture` (a body is optional: none captures it all).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"amount": {"amount_minor": 3000, "currency": "USD"}}))]
pub struct CaptureBody {
    /// How much to move, at most the authorized amount (absent: all of it). The rest of the
    /// hold is released.
    #[serde(default)]
    pub amount: Option<Money>,
}

/// `POST /v1/payments/{payment_id}/refunds`. The idempotency key travels in the
/// `Idempotency-Key` header.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"amount": {"amount_minor": 250, "currency": "USD"}, "reason": "returned"}))]
pub struct RefundBody {
    /// Absent: everything not yet refunded.
    #[serde(default)]
    pub amount: Option<Money>,
    /// Stored as the refund's memo.
    #[serde(default)]
    pub reason: String,
    /// The refund's metadata, as a payment's.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A payment's state.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PaymentStatus {
    /// Recorded, no decision yet.
    Pending,
    /// Money moved.
    Committed,
    /// No money moved; `reason_code` says why (for an authorization, also
    /// `authorization_voided` or `authorization_expired`: its hold was released).
    Aborted,
    /// An authorization: the payer's funds are held until it is captured, voided or expires.
    Authorized,
}

/// One payment (or refund).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "payment_id": "0190f5c2-7d1e-7c3a-9a4b-3f1e2d4c5b6a", "idempotency_key": "order-1001",
    "from_username": "alice", "from_bank_id": "bank0", "from_account": "0000000001",
    "to_username": "bob", "to_bank_id": "bank1", "to_account": "0000000002",
    "amount": {"amount_minor": 1250, "currency": "USD"}, "status": "committed",
    "created_unix_ms": 1786000000000_i64, "decided_unix_ms": 1786000000004_i64, "memo": "lunch",
    "settlement_window_id": 1, "metadata": {"order_id": "1001"}
}))]
pub struct Payment {
    pub payment_id: String,
    pub idempotency_key: String,
    pub from_username: String,
    pub from_bank_id: String,
    pub from_account: String,
    pub to_username: String,
    pub to_bank_id: String,
    pub to_account: String,
    pub amount: Option<Money>,
    pub status: PaymentStatus,
    /// Why an aborted payment was refused (`insufficient_funds`, `bank_timeout`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_unix_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_unix_ms: Option<i64>,
    pub memo: String,
    /// On a refund: the payment it refunds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_of: Option<String>,
    /// On a refunded payment: what its committed refunds returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunded: Option<Money>,
    /// The settlement window open when the decision was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement_window_id: Option<u64>,
    /// What the payer attached (`{}` when nothing).
    pub metadata: BTreeMap<String, String>,
    /// On an authorization: it may be captured strictly before this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_unix_ms: Option<i64>,
    /// On an authorization: when its funds were held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorized_unix_ms: Option<i64>,
    /// On a captured authorization: the amount it held (`amount` is what was captured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorized: Option<Money>,
}

impl From<pb::Payment> for Payment {
    fn from(payment: pb::Payment) -> Self {
        let status = match pb::PaymentStatus::try_from(payment.status) {
            Ok(pb::PaymentStatus::Committed) => PaymentStatus::Committed,
            Ok(pb::PaymentStatus::Aborted) => PaymentStatus::Aborted,
            Ok(pb::PaymentStatus::Authorized) => PaymentStatus::Authorized,
            _ => PaymentStatus::Pending,
        };
        Payment {
            payment_id: payment.payment_id,
            idempotency_key: payment.idempotency_key,
            from_username: payment.from_username,
            from_bank_id: payment.from_bank_id,
            from_account: payment.from_account,
            to_username: payment.to_username,
            to_bank_id: payment.to_bank_id,
            to_account: payment.to_account,
            amount: money(payment.amount),
            status,
            reason_code: nonempty(payment.reason_code),
            reason: nonempty(payment.reason),
            created_unix_ms: payment.created_unix_ms,
            decided_unix_ms: nonzero(payment.decided_unix_ms),
            memo: payment.memo,
            refund_of: nonempty(payment.refund_of),
            refunded: money(payment.refunded),
            settlement_window_id: (payment.settlement_window_id != 0)
                .then_some(payment.settlement_window_id),
            metadata: payment.metadata.into_iter().collect(),
            expires_unix_ms: nonzero(payment.expires_unix_ms),
            authorized_unix_ms: nonzero(payment.authorized_unix_ms),
            authorized: money(payment.authorized),
        }
    }
}

/// A page of payments, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentList {
    pub data: Vec<Payment>,
    /// Whether another page follows; pass `next_cursor` as `starting_after` to get it.
    pub has_more: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl From<pb::ListHistoryResponse> for PaymentList {
    fn from(page: pb::ListHistoryResponse) -> Self {
        let next_cursor = nonempty(page.next_page_token);
        PaymentList {
            data: page.payments.into_iter().map(Payment::from).collect(),
            has_more: next_cursor.is_some(),
            next_cursor,
        }
    }
}

/// One account's balances.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountBalance {
    pub bank_id: String,
    pub account_number: String,
    pub balance: Option<Money>,
    /// Held by payments in flight.
    pub held: Option<Money>,
    /// What can be paid now: balance − held.
    pub available: Option<Money>,
}

/// `GET /v1/balances`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Balances {
    pub accounts: Vec<AccountBalance>,
}

impl From<pb::GetBalancesResponse> for Balances {
    fn from(balances: pb::GetBalancesResponse) -> Self {
        Balances {
            accounts: balances
                .accounts
                .into_iter()
                .map(|account| AccountBalance {
                    bank_id: account.bank_id,
                    account_number: account.account_number,
                    balance: money(account.balance),
                    held: money(account.held),
                    available: money(account.available),
                })
                .collect(),
        }
    }
}

/// `POST /v1/accounts/link`: link (or rename) one of the caller's bank accounts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"bank_id": "bank0", "account_number": "0000000001", "holder_name": "Alice"}))]
pub struct LinkAccountBody {
    pub bank_id: String,
    pub account_number: String,
    #[serde(default)]
    pub holder_name: String,
}

/// A bank account linked to a user.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkedAccount {
    pub username: String,
    pub bank_id: String,
    pub account_number: String,
    pub currency: String,
    pub holder_name: String,
}

impl From<pb::LinkedAccount> for LinkedAccount {
    fn from(account: pb::LinkedAccount) -> Self {
        LinkedAccount {
            username: account.username,
            bank_id: account.bank_id,
            account_number: account.account_number,
            currency: account.currency,
            holder_name: account.holder_name,
        }
    }
}

/// One payment event: a payment whose decision became durable.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentEvent {
    /// Opaque; pass it as `after` to continue after this event.
    pub cursor: String,
    pub payment: Option<Payment>,
}

/// A payment event as a webhook delivery's body (and `strife client listen`'s): the event of
/// `GET /v1/events` with a stable id and a type, so a receiver can drop a duplicate and
/// route by type without reading the payment.
#[derive(Debug, Serialize)]
pub struct WebhookEvent {
    /// `evt_<payment id>_<outcome>`: the same for every delivery of this event.
    pub id: String,
    /// `payment.committed` or `payment.aborted`; for an authorization `payment.captured`,
    /// `payment.voided`, `payment.expired` (or `payment.aborted` when it was refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// When the decision was made.
    pub created_unix_ms: i64,
    /// The event's cursor (resume a watch or `listen --since` after it).
    pub cursor: String,
    pub data: WebhookData,
}

/// What a [`WebhookEvent`] is about.
#[derive(Debug, Serialize)]
pub struct WebhookData {
    pub payment: Payment,
}

/// The bytes of `event` as a webhook delivers it; `None` for an event without a payment.
pub fn webhook_body(event: &pb::PaymentEvent) -> Option<Vec<u8>> {
    let payment = event.payment.clone()?;
    let status = strife_present::event_outcome(&payment);
    let body = WebhookEvent {
        id: format!("evt_{}_{status}", payment.payment_id),
        kind: format!("payment.{status}"),
        created_unix_ms: payment.decided_unix_ms,
        cursor: event.cursor.clone(),
        data: WebhookData {
            payment: Payment::from(payment),
        },
    };
    serde_json::to_vec(&body).ok()
}

/// `GET /v1/events`: events after the cursor, in decision order.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub data: Vec<PaymentEvent>,
    /// The cursor to pass as `after` next: the last event's, or the one given when none came.
    pub next_cursor: String,
}

/// `POST /v1/api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"scopes": ["payments:write", "payments:read"], "description": "shop backend"}))]
pub struct CreateApiKeyBody {
    /// Absent: the caller. The admin may name any user.
    #[serde(default)]
    pub owner: String,
    /// `payments:write`, `payments:read`, `refunds:write`, `events:read`,
    /// `settlement:read`, `settlement:write`, `admin` (the last three for admin keys only).
    pub scopes: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// Absent or 0: the key does not expire. At most 3 years.
    #[serde(default)]
    pub expires_in_seconds: u64,
}

/// An API key, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKey {
    pub key_id: String,
    pub owner: String,
    pub scopes: Vec<String>,
    pub description: String,
    pub created_unix_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_unix_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_unix_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_unix_ms: Option<i64>,
}

impl From<pb::ApiKey> for ApiKey {
    fn from(key: pb::ApiKey) -> Self {
        ApiKey {
            key_id: key.key_id,
            owner: key.owner,
            scopes: key.scopes,
            description: key.description,
            created_unix_ms: key.created_unix_ms,
            expires_unix_ms: nonzero(key.expires_unix_ms),
            revoked_unix_ms: nonzero(key.revoked_unix_ms),
            last_used_unix_ms: nonzero(key.last_used_unix_ms),
        }
    }
}

/// A new key: `secret` is the whole key, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    pub key: Option<ApiKey>,
    /// `sk_<key_id>_<secret>`; send it as `Authorization: Bearer <secret>`.
    pub secret: String,
}

impl From<pb::CreatedApiKey> for CreatedApiKey {
    fn from(created: pb::CreatedApiKey) -> Self {
        CreatedApiKey {
            key: created.key.map(ApiKey::from),
            secret: created.secret,
        }
    }
}

/// `GET /v1/api-keys`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    pub data: Vec<ApiKey>,
}

/// `POST /v1/users` (admin).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"username": "carol", "password": "a long passphrase"}))]
pub struct RegisterUserBody {
    pub username: String,
    pub password: String,
}

/// A registered user.
#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    pub username: String,
    pub role: String,
}

impl From<pb::User> for User {
    fn from(user: pb::User) -> Self {
        User {
            username: user.username,
            role: user.role,
        }
    }
}

/// `POST /v1/accounts` (admin): open an account at a bank for a user. The optional
/// `Idempotency-Key` header makes a retry return the same account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"username": "carol", "bank_id": "bank1", "currency": "USD", "opening_deposit": {"amount_minor": 2000, "currency": "USD"}}))]
pub struct OpenAccountBody {
    pub username: String,
    pub bank_id: String,
    pub currency: String,
    #[serde(default)]
    pub opening_deposit: Option<Money>,
    #[serde(default)]
    pub holder_name: String,
}

/// A bank's standing against the switch in one currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct BankPosition {
    pub bank_id: String,
    /// Positive: the bank owes; negative: it is owed.
    pub position: Option<Money>,
    pub reserved: Option<Money>,
    /// Absent: no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headroom: Option<Money>,
}

/// `GET /v1/settlement/positions` (admin).
#[derive(Debug, Serialize, ToSchema)]
pub struct Positions {
    pub positions: Vec<BankPosition>,
}

impl From<pb::GetPositionsResponse> for Positions {
    fn from(positions: pb::GetPositionsResponse) -> Self {
        Positions {
            positions: positions
                .positions
                .into_iter()
                .map(|position| BankPosition {
                    bank_id: position.bank_id,
                    position: money(position.position),
                    reserved: money(position.reserved),
                    cap: money(position.cap),
                    headroom: money(position.headroom),
                })
                .collect(),
        }
    }
}

/// `PUT /v1/settlement/caps/{bank_id}/{currency}` (admin).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"cap_minor": 100000}))]
pub struct SetCapBody {
    /// Absent or null: no cap.
    #[serde(default)]
    pub cap_minor: Option<i64>,
}

/// The error every refusal answers with.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": {"type": "invalid_request_error", "code": strife_common::reason::INVALID_ARGUMENT, "message": "amount.amount_minor: must be positive", "param": "amount.amount_minor"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// The class: `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `conflict_error`, `payment_error`, `rate_limit_error`,
    /// `unavailable_error`, `api_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Strife's machine-readable reason (docs/SPEC.md §7): `insufficient_funds`, …
    pub code: String,
    pub message: String,
    /// The request field at fault (`amount.amount_minor`, `Idempotency-Key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// A refused payment's id (it was recorded; look it up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
}

/// A settlement window's state.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WindowState {
    Open,
    Closed,
    Settled,
}

/// A settlement window: payments whose decisions were written while it was open.
#[derive(Debug, Serialize, ToSchema)]
pub struct SettlementWindow {
    pub window_id: u64,
    pub state: WindowState,
    pub opened_unix_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_unix_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_unix_ms: Option<i64>,
}

impl From<pb::SettlementWindow> for SettlementWindow {
    fn from(window: pb::SettlementWindow) -> Self {
        let state = match pb::SettlementWindowState::try_from(window.state) {
            Ok(pb::SettlementWindowState::Settled) => WindowState::Settled,
            Ok(pb::SettlementWindowState::Closed) => WindowState::Closed,
            _ => WindowState::Open,
        };
        SettlementWindow {
            window_id: window.window_id,
            state,
            opened_unix_ms: window.opened_unix_ms,
            closed_unix_ms: nonzero(window.closed_unix_ms),
            settled_unix_ms: nonzero(window.settled_unix_ms),
        }
    }
}

/// `GET /v1/settlement/windows` (admin), newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct WindowList {
    pub data: Vec<SettlementWindow>,
    pub has_more: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl From<pb::ListSettlementWindowsResponse> for WindowList {
    fn from(page: pb::ListSettlementWindowsResponse) -> Self {
        let next_cursor = nonempty(page.next_page_token);
        WindowList {
            data: page
                .windows
                .into_iter()
                .map(SettlementWindow::from)
                .collect(),
            has_more: next_cursor.is_some(),
            next_cursor,
        }
    }
}

/// What one bank's customers paid another's in a window and currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct BilateralAmount {
    pub payer_bank_id: String,
    pub payee_bank_id: String,
    pub amount: Option<Money>,
    pub payments: u64,
}

/// One bank's net in a window: positive, it pays; negative, it receives.
#[derive(Debug, Serialize, ToSchema)]
pub struct NetAmount {
    pub bank_id: String,
    pub net: Option<Money>,
}

/// A window's settlement report (the open window's is provisional).
#[derive(Debug, Serialize, ToSchema)]
pub struct SettlementReport {
    pub window: Option<SettlementWindow>,
    pub bilateral: Vec<BilateralAmount>,
    pub nets: Vec<NetAmount>,
}

impl From<pb::SettlementReport> for SettlementReport {
    fn from(report: pb::SettlementReport) -> Self {
        SettlementReport {
            window: report.window.map(SettlementWindow::from),
            bilateral: report
                .bilateral
                .into_iter()
                .map(|amount| BilateralAmount {
                    payer_bank_id: amount.payer_bank_id,
                    payee_bank_id: amount.payee_bank_id,
                    amount: money(amount.amount),
                    payments: amount.payments,
                })
                .collect(),
            nets: report
                .nets
                .into_iter()
                .map(|net| NetAmount {
                    bank_id: net.bank_id,
                    net: money(net.net),
                })
                .collect(),
        }
    }
}
