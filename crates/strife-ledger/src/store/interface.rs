//! The interface every backend implements: [`GatewayStore`] (the gateway's database) and its
//! read-only part [`GatewayLog`] (what `strife audit` reads), and [`LoginChange`]. The rules
//! every backend keeps are in the [store's module docs](crate::store). Only this file, of the
//! store, is imported by both backends.

use async_trait::async_trait;
use strife_common::Failure;

use crate::lockout::SharedLogin;
use crate::records::{
    ApiKeyRecord, Begun, LinkedAccount, LogSnapshot, PaymentFilter, PaymentRecord, PaymentStatus,
    PositionRecord, UserRecord, WindowRecord, WindowReport,
};

/// How a login record changes, applied by the store to the record it read, in one write.
pub type LoginChange = Box<dyn FnOnce(Option<SharedLogin>) -> Option<SharedLogin> + Send>;

/// Read-only access to the whole log: what `strife audit` needs, and all it may use.
#[async_trait]
pub trait GatewayLog: Send + Sync {
    /// Every payment, link, position and window, as of one point in time (one read
    /// transaction).
    async fn snapshot(&self) -> Result<LogSnapshot, Failure>;
}

/// The gateway's database. See the [store's module docs](crate::store) for the rules every
/// backend keeps.
#[async_trait]
pub trait GatewayStore: GatewayLog {
    /// A durable write that changes nothing a request can see: `Ok` while the store takes
    /// writes (readiness, checked every second).
    async fn probe(&self) -> Result<(), Failure>;

    /// The 32-byte secret stored under `name`, created (random) by the first replica that
    /// asks and the same for every replica after: keys that every replica must share, such
    /// as the one that seals cursors (`crate::cursor`). Durable before it is returned.
    async fn secret(&self, name: &str) -> Result<[u8; 32], Failure>;

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

    /// Stores a new API key; `ALREADY_EXISTS` if its id is taken. Durable before it returns.
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), Failure>;

    /// The API key with this id, revoked or not.
    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, Failure>;

    /// `owner`'s API keys (every user's with `None`), oldest first, revoked ones included.
    async fn api_keys(&self, owner: Option<&str>) -> Result<Vec<ApiKeyRecord>, Failure>;

    /// Marks a key revoked at `now_unix_ms` (a key revoked before keeps its time) and returns
    /// it; `None` if there is no such key. Durable before it returns: every replica reads
    /// the key from the store on each request, so none accepts it afterwards.
    async fn revoke_api_key(
        &self,
        key_id: &str,
        now_unix_ms: i64,
    ) -> Result<Option<ApiKeyRecord>, Failure>;

    /// Records that a key was used. Relaxed: a lost update only makes "last used" older.
    async fn touch_api_key(&self, key_id: &str, now_unix_ms: i64) -> Result<(), Failure>;

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
    ///
    /// Atomic with recording a new attempt (all or nothing, in this one write):
    /// - a refund (`refund_of`) reads its original and claims the amount against what is left
    ///   to refund ([`crate::settlement::reserve_refund`], which also resolves amount 0 to
    ///   "the rest"), adding it to the original's `refund_pending_minor`;
    /// - a cross-bank payment reads the payer bank's position row and takes its reservation
    ///   ([`crate::settlement::reserve`]: the cap check and the reservation are one step, so
    ///   concurrent payments cannot all slip under a cap).
    ///
    /// A refusal of either returns its `Failure` and leaves nothing written (not even the
    /// idempotency key). Replays and in-flight answers touch neither.
    async fn begin_payment(&self, attempt: &PaymentRecord) -> Result<Begun, Failure>;

    /// Writes the decision, once: a payment already decided keeps its first decision, which
    /// is returned instead. `NOT_FOUND` if the payment was never recorded. An authorization
    /// is COMMITTED (captured) only while AUTHORIZED and strictly before its
    /// `expires_unix_ms`, judged at the decision's own time in the same write; otherwise
    /// nothing changes and the payment is returned as it stands.
    ///
    /// Atomic with the decision, and only in the write that changes the payment from PENDING:
    /// the payment is stamped with the open window; [`crate::settlement::on_decision`]'s
    /// position changes are applied (reservation released; on COMMIT the payer bank's position
    /// up and the payee bank's down); on a cross-bank COMMIT the open window's bilateral total
    /// for (payer bank, payee bank, currency) grows by the amount; on a refund, its original's
    /// `refund_pending_minor` gives the amount back and, on COMMIT, `refunded_minor` takes it
    /// ([`crate::settlement::refund_decided`]).
    async fn decide(
        &self,
        payment_id: &str,
        status: PaymentStatus,
        reason_code: Option<&str>,
        reason: Option<&str>,
    ) -> Result<PaymentRecord, Failure>;

    /// Marks an authorization whose legs both voted YES as AUTHORIZED, durably before it
    /// returns (the answer to `Authorize` promises the hold). Only an undecided authorization
    /// changes; the payment is returned as stored afterwards, so a decision written first
    /// (an abort by the retrier, say) is what the caller sees. `NOT_FOUND` if never recorded.
    async fn authorize(&self, payment_id: &str) -> Result<PaymentRecord, Failure>;

    /// Captures an authorization: [`GatewayStore::decide`] with COMMITTED, under the same
    /// rules (only while AUTHORIZED, strictly before its expiry), moving `amount_minor`: at
    /// most the authorized amount, which the payment keeps as `authorized_minor` while its
    /// `amount_minor` becomes what moved. Settlement moves by the captured amount and releases
    /// the whole reservation. A payment not capturable so is returned as it stands.
    async fn capture(&self, payment_id: &str, amount_minor: i64) -> Result<PaymentRecord, Failure>;

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
    /// oldest first, leaving out the AUTHORIZED ones that expire after `due_at_unix_ms` (an
    /// open authorization waits for its capture, void or expiry, and must not take the
    /// places of payments that need work).
    async fn unfinished(
        &self,
        coordinator: &str,
        due_at_unix_ms: i64,
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

    /// The payments `filter` matches with `seq < before_seq`, newest first. A scan in log
    /// order that stops at `limit` matches (no index per filter yet).
    async fn list_payments(
        &self,
        filter: &PaymentFilter,
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, Failure>;

    /// The refunds of `payment_id` (every attempt, whatever its status) with `seq <
    /// before_seq`, newest first: a scan of the `refund_of` index.
    async fn refunds_of(
        &self,
        payment_id: &str,
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, Failure>;

    /// Sets (`Some`) or removes (`None`) a bank's net debit cap in a currency, creating its
    /// position row at zero if it has none; one write that changes nothing else. Returns the
    /// row. Reservations already taken stand; the cap applies from the next payment.
    async fn set_net_debit_cap(
        &self,
        bank_id: &str,
        currency: &str,
        cap_minor: Option<i64>,
    ) -> Result<PositionRecord, Failure>;

    /// Every position row, by bank and currency (one read).
    async fn positions(&self) -> Result<Vec<PositionRecord>, Failure>;

    /// Windows with `window_id < before_window_id`, newest first.
    async fn windows(
        &self,
        before_window_id: i64,
        limit: u32,
    ) -> Result<Vec<WindowRecord>, Failure>;

    /// One window with its bilateral totals (one read), `None` if there is no such window.
    async fn window_report(&self, window_id: i64) -> Result<Option<WindowReport>, Failure>;

    /// Closes the open window and opens the next (id + 1), in one write, so that every
    /// decision lands in exactly one window and a closed one never changes. `expected`: the
    /// window the caller means to close; if it is not the open one, the refusal
    /// ([`crate::settlement::close`]) and nothing written. Returns the closed window's report.
    async fn close_window(&self, expected: Option<i64>) -> Result<WindowReport, Failure>;

    /// Marks a closed, unsettled window settled and reduces every bank's position by its net
    /// amount in that window ([`crate::settlement::settle`]), in one write. `NOT_FOUND` for an
    /// unknown window; a refusal (open, already settled) writes nothing.
    async fn settle_window(&self, window_id: i64) -> Result<WindowReport, Failure>;
}
