//! Payment events (`WatchPayments`): a caller's payments as their decisions become durable,
//! in decision order, resumable from a cursor.
//!
//! The cursor is a payment's position in the decision order (`decision_seq`), which the store
//! assigns in the transaction that writes the decision — so it survives restarts, and every
//! replica sees the same order. It leaves the gateway sealed to its watcher
//! ([`crate::cursor`]), so the distance between two of a user's cursors says nothing about
//! other users' payments. A watcher walks positions one by one: it delivers a position
//! only after every earlier one has been seen (or has stayed missing for
//! [`EVENT_GAP_GRACE`], which only a rolled-back decision transaction can cause). That is what
//! makes a resumed watch have no gaps and no duplicates. PENDING payments are not events: a
//! PENDING record may vanish in a crash, a durable decision cannot.
//!
//! Bounded: [`MAX_WATCHES`] open watches per gateway and [`MAX_WATCHES_PER_USER`] per user;
//! each reads [`EVENT_PAGE`] decisions per query and sleeps between queries until this
//! replica writes a decision or [`EVENT_POLL_INTERVAL`] passes (other replicas' decisions).
//!
//! When the gateway starts draining (SIGTERM), every watch ends cleanly: an open stream would
//! otherwise hold its connection, and so the drain, to the drain limit. A client resumes from
//! its last cursor on another replica, or on this one after its restart.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;
use prometheus_client::metrics::gauge::Gauge;
use strife_common::limits::{
    EVENT_GAP_GRACE, EVENT_PAGE, EVENT_POLL_INTERVAL, MAX_WATCHES, MAX_WATCHES_PER_USER,
};
use strife_common::Failure;
use strife_proto::v1 as pb;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use super::cursor::{CursorKind, CursorSeal};
use crate::roles::Role;
use strife_ledger::records::PaymentRecord;
use strife_ledger::store::GatewayStore;

/// The stream a watch returns.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::PaymentEvent, Failure>> + Send>>;

/// Events already read but not yet taken by a slow client; past it, the watcher waits.
const BUFFERED_EVENTS: usize = 64;

/// Open watches, per user; bounded.
pub struct Events {
    store: Arc<dyn GatewayStore>,
    seal: Arc<CursorSeal>,
    decisions: Arc<Notify>,
    open: Arc<Mutex<HashMap<String, usize>>>,
    /// `strife_watches_open`.
    watches_open: Gauge,
    /// Turns true when the gateway starts draining: every watch ends then.
    draining: Option<watch::Receiver<bool>>,
}

/// Who watches: a user sees their own payments, the admin all.
#[derive(Debug, Clone)]
struct Watcher {
    username: String,
    all: bool,
}

impl Watcher {
    fn sees(&self, payment: &PaymentRecord) -> bool {
        self.all || payment.from.username == self.username || payment.to.username == self.username
    }
}

/// Where a watch by `owner` starts, from the request's `since`: `None` = from now.
pub fn parse_since(seal: &CursorSeal, owner: &str, since: &str) -> Result<Option<i64>, Failure> {
    if since.is_empty() {
        return Ok(None);
    }
    seal.open(CursorKind::Event, owner, since, "since")
        .map(Some)
}

impl Events {
    pub fn new(
        store: Arc<dyn GatewayStore>,
        seal: Arc<CursorSeal>,
        decisions: Arc<Notify>,
        watches_open: Gauge,
    ) -> Self {
        Events {
            store,
            seal,
            decisions,
            open: Arc::new(Mutex::new(HashMap::new())),
            watches_open,
            draining: None,
        }
    }

    /// Ends every watch, open or opened later, once `draining` turns true (or its sender is
    /// gone): the stream closes with OK and the client resumes from its last cursor.
    pub fn ending_on(mut self, draining: watch::Receiver<bool>) -> Self {
        self.draining = Some(draining);
        self
    }

    /// Starts a watch for `username` (with `role`) after `since`.
    pub async fn watch(
        &self,
        username: &str,
        role: Role,
        since: &str,
    ) -> Result<EventStream, Failure> {
        let start = match parse_since(&self.seal, username, since)? {
            Some(cursor) => cursor,
            None => self.store.decision_head().await?,
        };
        let slot = self.reserve(username)?;
        let watcher = Watcher {
            username: username.to_owned(),
            all: role == Role::Admin,
        };
        let (sender, receiver) = mpsc::channel(BUFFERED_EVENTS);
        let store = Arc::clone(&self.store);
        let seal = Arc::clone(&self.seal);
        let decisions = Arc::clone(&self.decisions);
        let draining = self.draining.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                _ = follow(store, seal, decisions, watcher, start, sender) => {}
                _ = drain_begins(draining) => {
                    tracing::debug!("payment watch ended: the gateway is draining");
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        )))
    }

    fn reserve(&self, username: &str) -> Result<WatchSlot, Failure> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let total: usize = open.values().sum();
        let mine = open.get(username).copied().unwrap_or(0);
        if total >= MAX_WATCHES {
            return Err(Failure::ResourceExhausted(format!(
                "the gateway serves at most {MAX_WATCHES} watches at once; try again later"
            )));
        }
        if mine >= MAX_WATCHES_PER_USER {
            return Err(Failure::ResourceExhausted(format!(
                "at most {MAX_WATCHES_PER_USER} open watches per user; close one first"
            )));
        }
        *open.entry(username.to_owned()).or_default() += 1;
        self.watches_open.inc();
        Ok(WatchSlot {
            open: Arc::clone(&self.open),
            username: username.to_owned(),
            watches_open: self.watches_open.clone(),
        })
    }
}

/// Completes when draining begins (or can no longer be signalled); never without `draining`.
async fn drain_begins(draining: Option<watch::Receiver<bool>>) {
    match draining {
        Some(mut draining) => {
            let _ = draining.wait_for(|began| *began).await;
        }
        None => std::future::pending().await,
    }
}

/// One open watch's place under the limits; given back when the watch ends.
struct WatchSlot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    username: String,
    watches_open: Gauge,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        self.watches_open.dec();
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.username) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.username);
            }
        }
    }
}

/// Where a watcher is in the decision order.
#[derive(Debug)]
struct Position {
    /// Every position up to here has been handled (delivered, not the watcher's, or given up).
    cursor: i64,
    /// Since when the next position has been missing while a later one was visible.
    gap_since: Option<Instant>,
}

impl Position {
    /// Walks `page` (ascending positions after `cursor`) and returns the payments to deliver,
    /// stopping at a gap younger than the grace period.
    fn advance(&mut self, page: Vec<PaymentRecord>, now: Instant) -> Vec<(i64, PaymentRecord)> {
        let mut ready = Vec::new();
        for payment in page {
            let Some(position) = payment.decision_seq else {
                continue;
            };
            if position <= self.cursor {
                continue;
            }
            if position > self.cursor + 1 {
                let since = *self.gap_since.get_or_insert(now);
                if now.duration_since(since) < EVENT_GAP_GRACE {
                    break;
                }
                tracing::warn!(
                    missing_from = self.cursor + 1,
                    next = position,
                    "decision positions never filled (a rolled-back decision write); skipping"
                );
            }
            self.gap_since = None;
            self.cursor = position;
            ready.push((position, payment));
        }
        ready
    }
}

async fn follow(
    store: Arc<dyn GatewayStore>,
    seal: Arc<CursorSeal>,
    decisions: Arc<Notify>,
    watcher: Watcher,
    start: i64,
    sender: mpsc::Sender<Result<pb::PaymentEvent, Failure>>,
) {
    let mut position = Position {
        cursor: start,
        gap_since: None,
    };
    loop {
        // Registered before the read, so a decision written during it still wakes us.
        let woken = decisions.notified();
        let page = match store.decided_after(position.cursor, EVENT_PAGE).await {
            Ok(page) => page,
            Err(failure) => {
                let _ = sender.send(Err(failure)).await;
                return;
            }
        };
        let full_page = page.len() == EVENT_PAGE as usize;
        for (cursor, payment) in position.advance(page, Instant::now()) {
            if !watcher.sees(&payment) {
                continue;
            }
            let event = pb::PaymentEvent {
                cursor: seal.seal(CursorKind::Event, &watcher.username, cursor),
                payment: Some(super::convert::payment_proto(&payment)),
            };
            if sender.send(Ok(event)).await.is_err() {
                return; // The caller hung up.
            }
        }
        if full_page && position.gap_since.is_none() {
            continue; // More to catch up on.
        }
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep(EVENT_POLL_INTERVAL) => {}
            _ = sender.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(position: i64) -> PaymentRecord {
        PaymentRecord {
            seq: position,
            payment_id: format!("p-{position}"),
            idempotency_key: format!("k-{position}"),
            from: strife_ledger::records::Party {
                username: "alice".into(),
                bank_id: "bank0".into(),
                account_number: "a".into(),
            },
            to: strife_ledger::records::Party {
                username: "bob".into(),
                bank_id: "bank1".into(),
                account_number: "b".into(),
            },
            amount_minor: 100,
            currency: "USD".into(),
            memo: String::new(),
            metadata: Default::default(),
            status: strife_ledger::records::PaymentStatus::Committed,
            reason_code: None,
            reason: None,
            debit_acked: true,
            credit_acked: true,
            decision_deadline_unix_ms: 0,
            created_unix_ms: 0,
            decided_unix_ms: Some(0),
            coordinator: "gw".into(),
            decision_seq: Some(position),
            refund_of: None,
            refunded_minor: 0,
            refund_pending_minor: 0,
            window_id: None,
            expires_unix_ms: None,
            authorized_unix_ms: None,
            authorized_minor: None,
        }
    }

    fn positions(ready: &[(i64, PaymentRecord)]) -> Vec<i64> {
        ready.iter().map(|(position, _)| *position).collect()
    }

    #[test]
    fn contiguous_positions_are_delivered_in_order_and_not_again() {
        let mut position = Position {
            cursor: 3,
            gap_since: None,
        };
        let now = Instant::now();
        let ready = position.advance(vec![decided(4), decided(5)], now);
        assert_eq!(positions(&ready), vec![4, 5]);
        let again = position.advance(vec![decided(5), decided(6)], now);
        assert_eq!(positions(&again), vec![6], "no duplicates on a re-read");
    }

    #[test]
    fn a_gap_holds_later_positions_back_until_the_grace_period_ends() {
        let mut position = Position {
            cursor: 0,
            gap_since: None,
        };
        let start = Instant::now();
        let ready = position.advance(vec![decided(1), decided(3)], start);
        assert_eq!(positions(&ready), vec![1], "3 waits for 2");
        let ready = position.advance(vec![decided(3)], start + EVENT_GAP_GRACE / 2);
        assert!(ready.is_empty(), "still within the grace period");
        // 2 shows up late (a slow commit): delivered in order.
        let ready = position.advance(vec![decided(2), decided(3)], start + EVENT_GAP_GRACE / 2);
        assert_eq!(positions(&ready), vec![2, 3]);
        // A position that never comes is given up after the grace period.
        let ready = position.advance(vec![decided(5)], start + EVENT_GAP_GRACE);
        assert!(ready.is_empty());
        let later = start + EVENT_GAP_GRACE * 3;
        let ready = position.advance(vec![decided(5)], later);
        assert_eq!(positions(&ready), vec![5]);
    }

    #[tokio::test]
    async fn watches_end_when_the_drain_begins_and_only_then() {
        let short = std::time::Duration::from_millis(20);
        let never = tokio::time::timeout(short, drain_begins(None)).await;
        assert!(never.is_err(), "without a drain signal a watch runs on");
        let (began, draining) = watch::channel(false);
        let ending = tokio::spawn(drain_begins(Some(draining.clone())));
        let early = tokio::time::timeout(short, drain_begins(Some(draining.clone()))).await;
        assert!(early.is_err(), "not before the drain");
        began.send(true).unwrap();
        tokio::time::timeout(short * 50, ending)
            .await
            .expect("ends once the drain begins")
            .unwrap();
        // A watch opened during the drain ends at once.
        tokio::time::timeout(short, drain_begins(Some(draining)))
            .await
            .expect("ends at once");
    }

    #[test]
    fn since_is_empty_zero_or_a_cursor_sealed_to_the_watcher() {
        let seal = CursorSeal::new(&[1u8; 32]);
        assert_eq!(parse_since(&seal, "alice", ""), Ok(None));
        assert_eq!(parse_since(&seal, "alice", "0"), Ok(Some(0)));
        let cursor = seal.seal(CursorKind::Event, "alice", 42);
        assert_eq!(parse_since(&seal, "alice", &cursor), Ok(Some(42)));
        for (owner, bad) in [
            ("bob", cursor.as_str()),
            ("alice", "-1"),
            ("alice", "abc"),
            ("alice", "1.5"),
            ("alice", " 3"),
        ] {
            assert_eq!(
                parse_since(&seal, owner, bad).map_err(|failure| failure.code()),
                Err(tonic::Code::InvalidArgument),
                "{owner} {bad}"
            );
        }
    }
}
