//! The ledger's records: what the gateway's log holds, as plain values. The pure rules
//! ([`crate::payment`], [`crate::settlement`]) decide on these, and the stores
//! ([`crate::store`]) read and write them; neither depends on the other.

use std::collections::BTreeMap;

use strife_common::Failure;

/// A payment's metadata: keys the payer chose to their values, stored and returned as given,
/// never interpreted (checked by the gateway against `strife_common::limits`). Ordered by key,
/// so its stored form ([`metadata_to_json`]) is canonical: the same map, the same text.
pub type Metadata = BTreeMap<String, String>;

/// The stored form of `metadata`: a JSON object, keys in order (`{}` when empty).
pub fn metadata_to_json(metadata: &Metadata) -> String {
    if metadata.is_empty() {
        return "{}".to_owned();
    }
    // A map of strings always serializes; the fallback is unreachable, not a silent loss.
    serde_json::to_string(metadata).unwrap_or_else(|_| "{}".to_owned())
}

/// Reads metadata as [`metadata_to_json`] stored it.
pub fn metadata_from_json(stored: &str) -> Result<Metadata, Failure> {
    if stored == "{}" {
        return Ok(Metadata::new());
    }
    serde_json::from_str(stored)
        .map_err(|error| Failure::internal("decoding payment metadata", error))
}

/// A payment's coordinator status; the codes match `strife.v1.PaymentStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Recorded, phase 1 running, no decision yet.
    Pending,
    Committed,
    Aborted,
    /// An authorization whose legs both voted YES: the payer's funds are held and the payee's
    /// credit announced until it is captured (COMMITTED), voided or expired (ABORTED). Still
    /// undecided, so stores keep it with PENDING's stored code (1) and tell it apart by
    /// `authorized_unix_ms` ([`PaymentStatus::stored`]).
    Authorized,
}

impl PaymentStatus {
    pub fn code(self) -> i64 {
        match self {
            PaymentStatus::Pending => 1,
            PaymentStatus::Committed => 2,
            PaymentStatus::Aborted => 3,
            PaymentStatus::Authorized => 4,
        }
    }

    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(PaymentStatus::Pending),
            2 => Some(PaymentStatus::Committed),
            3 => Some(PaymentStatus::Aborted),
            4 => Some(PaymentStatus::Authorized),
            _ => None,
        }
    }

    /// The status a store row means: its stored code (1 = undecided, 2, 3) and whether the
    /// row was authorized. An undecided row is PENDING until its legs are held, AUTHORIZED
    /// after; keeping both under one stored code keeps "undecided" one condition in every
    /// index and single-assignment write.
    pub fn stored(code: i64, authorized: bool) -> Option<Self> {
        match (Self::from_code(code)?, authorized) {
            (PaymentStatus::Pending, true) => Some(PaymentStatus::Authorized),
            (status, _) => Some(status),
        }
    }

    /// The code a store keeps for this status (AUTHORIZED is kept as undecided, 1).
    pub fn stored_code(self) -> i64 {
        match self {
            PaymentStatus::Authorized => PaymentStatus::Pending.code(),
            status => status.code(),
        }
    }

    /// True once the coordinator's decision is written (COMMITTED or ABORTED).
    pub fn is_decided(self) -> bool {
        matches!(self, PaymentStatus::Committed | PaymentStatus::Aborted)
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
    /// What the payer attached (empty when nothing): part of the request, so of its
    /// idempotency fingerprint.
    pub metadata: Metadata,
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
    /// On a refund: the payment it refunds. A refund attempt may carry `amount_minor` 0,
    /// meaning "what is left of the original", resolved in the write that records it.
    pub refund_of: Option<String>,
    /// On a refunded payment: the total of its COMMITTED refunds.
    pub refunded_minor: i64,
    /// On a refunded payment: the total of its refunds still PENDING (reserved against what
    /// is left to refund, released if they abort).
    pub refund_pending_minor: i64,
    /// The settlement window that was open when the decision was written; `None` while
    /// PENDING.
    pub window_id: Option<i64>,
    /// On an authorization (`Authorize`): when it expires. It may be captured only before
    /// this instant, and is voided by the coordinator at or after it. `None` on a payment.
    pub expires_unix_ms: Option<i64>,
    /// On an authorization: when both legs were held and it became AUTHORIZED.
    pub authorized_unix_ms: Option<i64>,
    /// On a captured authorization: the amount it held (`amount_minor` is then what the
    /// capture moved, at most this; the rest was released). Written by the capture.
    pub authorized_minor: Option<i64>,
}

impl PaymentRecord {
    /// True for an authorization (made by `Authorize`, whatever became of it).
    pub fn is_authorization(&self) -> bool {
        self.expires_unix_ms.is_some()
    }
}

impl PaymentRecord {
    /// A new attempt as a store records it: PENDING, nothing decided, acknowledged or
    /// refunded yet, at log position `seq` (which only the store knows).
    pub fn recorded_at(&self, seq: i64) -> PaymentRecord {
        PaymentRecord {
            seq,
            status: PaymentStatus::Pending,
            reason_code: None,
            reason: None,
            debit_acked: false,
            credit_acked: false,
            decided_unix_ms: None,
            decision_seq: None,
            refunded_minor: 0,
            refund_pending_minor: 0,
            window_id: None,
            authorized_unix_ms: None,
            authorized_minor: None,
            ..self.clone()
        }
    }
}

/// Which payments a search returns (`GatewayStore::list_payments`); every part is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaymentFilter {
    /// Only this user's payments (sent or received, as `direction` says); `None`: everyone's.
    pub username: Option<String>,
    pub direction: Direction,
    pub status: Option<PaymentStatus>,
    /// With `username`: only payments with this other party; without: with this party.
    pub counterparty: Option<String>,
    /// Created at or after this time.
    pub created_from_unix_ms: Option<i64>,
    /// Created before this time.
    pub created_before_unix_ms: Option<i64>,
    pub min_amount_minor: Option<i64>,
    pub max_amount_minor: Option<i64>,
    pub currency: Option<String>,
    /// A metadata entry that must be exactly this (key, value).
    pub metadata: Option<(String, String)>,
}

impl PaymentFilter {
    /// The user, when the filter is nothing but "this user's payments": the history, which
    /// the stores answer from their per-user indexes instead of a scan.
    pub fn only_user(&self) -> Option<&str> {
        let username = self.username.as_deref()?;
        let rest = PaymentFilter {
            username: None,
            ..self.clone()
        };
        (rest == PaymentFilter::default()).then_some(username)
    }
}

/// Which side of its payments a user's search looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Direction {
    #[default]
    Any,
    /// Payments the user received.
    Received,
    /// Payments the user sent.
    Sent,
}

impl Direction {
    /// The code the stores' queries take: 0 any, 1 received, 2 sent.
    pub fn code(self) -> i32 {
        match self {
            Direction::Any => 0,
            Direction::Received => 1,
            Direction::Sent => 2,
        }
    }
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

/// A bank's standing against the switch in one currency (see [`crate::settlement`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PositionRecord {
    pub bank_id: String,
    pub currency: String,
    /// Committed outgoing − committed incoming cross-bank payments in unsettled windows.
    pub position_minor: i64,
    /// Σ of this bank's PENDING outgoing cross-bank payments.
    pub reserved_minor: i64,
    /// The net debit cap; `None` = unlimited.
    pub cap_minor: Option<i64>,
}

/// A settlement window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRecord {
    pub window_id: i64,
    pub opened_unix_ms: i64,
    /// `None` while open.
    pub closed_unix_ms: Option<i64>,
    /// `None` until settled.
    pub settled_unix_ms: Option<i64>,
}

/// What one payer bank's customers paid one payee bank's customers in a window (committed
/// cross-bank payments), in one currency.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BilateralTotal {
    pub payer_bank: String,
    pub payee_bank: String,
    pub currency: String,
    pub amount_minor: i64,
    pub payments: i64,
}

/// A window and its bilateral totals (sorted by payer, payee, currency); the net amounts
/// follow from them ([`crate::settlement::nets`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowReport {
    pub window: WindowRecord,
    pub totals: Vec<BilateralTotal>,
}

/// One consistent picture of the whole log, for reconciliation (`strife audit`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSnapshot {
    /// Every payment, in log order (refund links and window stamps included).
    pub payments: Vec<PaymentRecord>,
    /// Every linked account.
    pub links: Vec<LinkedAccount>,
    /// Every bank position row (banks without one stand at zero with no cap).
    pub positions: Vec<PositionRecord>,
    /// Every settlement window with its totals, oldest first (never empty: a store always
    /// has its open window).
    pub windows: Vec<WindowReport>,
}

/// An API key (docs/SPEC.md §10): a bearer credential its owner hands to one integration,
/// with only the scopes it needs. The secret itself is never stored: only a keyed hash of it
/// ([`ApiKeyRecord::secret_hash`]), so a copy of the database cannot be used to call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// The public part of the key (`sk_<key_id>_<secret>`), how it is looked up and shown.
    pub key_id: String,
    pub owner: String,
    /// HMAC-SHA256 of the secret under the store's shared API-key secret.
    pub secret_hash: Vec<u8>,
    /// Scope names (`payments:write`, …), sorted, without repeats.
    pub scopes: Vec<String>,
    pub description: String,
    pub created_unix_ms: i64,
    pub expires_unix_ms: Option<i64>,
    pub revoked_unix_ms: Option<i64>,
    pub last_used_unix_ms: Option<i64>,
}
