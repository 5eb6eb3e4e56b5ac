//! The live map of banks: an etcd watch on `/strife/v1/banks/` keeps `bank_id → address`
//! current, so a payment never reads etcd. Each bank gets one long-lived channel over mutual
//! TLS (made lazily, reconnecting by itself), replaced only when the bank's address changes.
//! A bank whose lease expires disappears from the map and is `UNAVAILABLE` from then on.
//!
//! The registry also remembers every bank id it has seen registered since the gateway started
//! ([`BankRegistry::ever_registered`]): with the banks the gateway has accounts linked at,
//! that is how a bank that is down (`UNAVAILABLE`, retry) is told from a bank id the network
//! never had (`NOT_FOUND`, reason `unknown_bank`).
//!
//! etcd is not trusted to say who a bank is: an entry counts only when its key is
//! `/strife/v1/banks/<id>` and its value claims that same id (`discovery::bank_entry_from_kv`),
//! the map is keyed by that id, a deleted key removes exactly the entry it added, and every
//! channel is pinned to the bank's certificate (`ExpectedPeer::Bank(id)`), so an entry
//! pointing a bank id at someone else's server gets a refused TLS handshake, never a prepare.
//!
//! The coordinator's prepares and phase-2 decisions go through a per-bank batcher: concurrent
//! payments' legs for the same bank, of both kinds, travel in one `LegBatch` RPC (and so one
//! group commit at the bank), which is what lets throughput grow past one RPC per leg. A bank
//! from before `LegBatch` gets the same work as `PrepareBatch` and `FinishBatch` ([`Protocol`]),
//! so banks and gateway can be upgraded in either order.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_client::{EventType, WatchOptions};
use strife_common::etcd::access::EtcdAccess;
use strife_common::etcd::discovery::{
    bank_entry_from_kv, bank_snapshot, ServiceEntry, MAX_BANK_ENTRIES,
};
use strife_common::etcd::keys::BANKS_PREFIX;
use strife_common::limits::{BANK_CALL_TIMEOUT, ETCD_CALL_TIMEOUT, GATEWAY_BATCH_ITEMS};
use strife_common::net::tls::{ExpectedPeer, TlsMaterial};
use strife_common::Failure;
use strife_proto::v1::{self as pb, bank_client::BankClient};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::Channel;
use tonic::{Code, Status};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A bank's work queue: both kinds of leg work go out together ([`LegWork`]).
type WorkQueue = mpsc::Sender<LegWork>;

struct BankHandle {
    address: String,
    channel: Channel,
    work: WorkQueue,
}

/// Work waiting for a bank's batcher before callers feel back-pressure.
const BATCH_QUEUE: usize = 8_192;

type Reply<T> = oneshot::Sender<Result<T, Status>>;

/// One leg's work for a bank and where its answer goes.
enum LegWork {
    Prepare(pb::PrepareRequest, Reply<pb::PrepareResponse>),
    Decide(pb::LegDecision, Reply<pb::LegStatus>),
}

/// One item's answer: its value, or its failure as the single call would have said it.
fn item_result<T>(value: Option<T>, error: Option<pb::ItemError>) -> Result<T, Status> {
    match (value, error) {
        (_, Some(error)) => Err(item_status(error)),
        (Some(value), None) => Ok(value),
        (None, None) => Err(Failure::internal("bank batch", "an empty batch result").into()),
    }
}

/// The answer to a caller whose batched call never came back (the batcher went away).
fn went_away(bank_id: &str) -> Status {
    Failure::Unavailable(format!("bank {bank_id} went away")).into()
}

/// A per-item failure as the bank reported it inside a batch, read back into the `Status`
/// the single call would have returned (the bank's answer as the gateway sees it; it is never
/// sent on: callers turn it into a vote, or into a [`Failure`] with [`bank_failure`]).
fn item_status(error: pb::ItemError) -> Status {
    let mut status = Status::new(Code::from_i32(error.code), error.message);
    if let (false, Ok(value)) = (error.reason_code.is_empty(), error.reason_code.parse()) {
        status
            .metadata_mut()
            .insert(strife_common::failure::REASON_METADATA_KEY, value);
    }
    status
}

/// What a bank's batcher sends next: every prepare and decision queued for it (up to
/// [`GATEWAY_BATCH_ITEMS`] together), with their callers.
#[derive(Default)]
struct Batch {
    prepares: Vec<pb::PrepareRequest>,
    prepare_replies: Vec<Reply<pb::PrepareResponse>>,
    decisions: Vec<pb::LegDecision>,
    decision_replies: Vec<Reply<pb::LegStatus>>,
}

impl Batch {
    fn len(&self) -> usize {
        self.prepares.len() + self.decisions.len()
    }

    fn push(&mut self, work: LegWork) {
        match work {
            LegWork::Prepare(request, reply) => {
                self.prepares.push(request);
                self.prepare_replies.push(reply);
            }
            LegWork::Decide(request, reply) => {
                self.decisions.push(request);
                self.decision_replies.push(reply);
            }
        }
    }

    /// Sends the batch the way `protocol` says the bank understands, learning from the answer:
    /// one `LegBatch` RPC, or (a bank from before it) `PrepareBatch` and `FinishBatch`.
    async fn send(self, client: &mut BankClient<Channel>, bank_id: &str, protocol: &mut Protocol) {
        if protocol.separate_now() {
            return self.send_separately(client).await;
        }
        // Asking a bank whose protocol is not known yet keeps the items, so that a bank that
        // turns out not to serve `LegBatch` (which then ran none of them) gets them again the
        // old way. Once the bank has answered a `LegBatch`, nothing is copied.
        let probe = (*protocol != Protocol::LegBatch).then(|| self.clone_items());
        let Batch {
            prepares,
            prepare_replies,
            decisions,
            decision_replies,
        } = self;
        match client
            .leg_batch(pb::LegBatchRequest {
                prepares,
                decisions,
            })
            .await
        {
            Ok(response) => {
                *protocol = Protocol::LegBatch;
                let response = response.into_inner();
                answer(prepare_replies, response.prepares, |result| {
                    item_result(result.response, result.error)
                });
                answer(decision_replies, response.decisions, |result| {
                    item_result(result.status, result.error)
                });
            }
            Err(status) if status.code() == Code::Unimplemented => {
                if !matches!(protocol, Protocol::Separate { .. }) {
                    tracing::warn!(bank = bank_id, "bank does not serve LegBatch; sending PrepareBatch and FinishBatch until it is upgraded to the gateway's version");
                }
                *protocol = Protocol::Separate {
                    since: Instant::now(),
                };
                match probe {
                    Some((prepares, decisions)) => {
                        Batch {
                            prepares,
                            prepare_replies,
                            decisions,
                            decision_replies,
                        }
                        .send_separately(client)
                        .await
                    }
                    // A bank that served `LegBatch` a moment ago and does not now (replaced
                    // by an older build) ran none of these: a transient failure, retried.
                    None => fail_all(
                        prepare_replies,
                        decision_replies,
                        &Failure::Unavailable(format!(
                            "bank {bank_id} stopped serving LegBatch; retry"
                        ))
                        .into(),
                    ),
                }
            }
            Err(status) => fail_all(prepare_replies, decision_replies, &status),
        }
    }

    fn clone_items(&self) -> (Vec<pb::PrepareRequest>, Vec<pb::LegDecision>) {
        (self.prepares.clone(), self.decisions.clone())
    }

    /// The batch as a bank from before `LegBatch` takes it: its prepares in one
    /// `PrepareBatch` and its decisions in one `FinishBatch`, both at once.
    async fn send_separately(self, client: &BankClient<Channel>) {
        let Batch {
            prepares,
            prepare_replies,
            decisions,
            decision_replies,
        } = self;
        let mut prepare_client = client.clone();
        let mut finish_client = client.clone();
        let prepared = answer_call(
            prepare_replies,
            prepare_client.prepare_batch(pb::PrepareBatchRequest { prepares }),
            |response| response.results,
            |result| item_result(result.response, result.error),
        );
        let finished = answer_call(
            decision_replies,
            finish_client.finish_batch(pb::FinishBatchRequest { decisions }),
            |response| response.results,
            |result| item_result(result.status, result.error),
        );
        tokio::join!(prepared, finished);
    }
}

/// Which batch RPCs a bank serves, as its batcher has learnt from its answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// Not asked yet.
    Unknown,
    /// It answered a `LegBatch`.
    LegBatch,
    /// It answered `UNIMPLEMENTED` to `LegBatch` (a bank from before it) `since` then: the
    /// batcher sends `PrepareBatch` and `FinishBatch` instead.
    Separate { since: Instant },
}

/// How long a bank that did not serve `LegBatch` gets the old RPCs before the batcher asks
/// again (the bank may have been upgraded in place, under the same address).
const PROTOCOL_RECHECK: Duration = Duration::from_secs(30);

impl Protocol {
    /// Whether this batch goes out the old way without asking `LegBatch` first.
    fn separate_now(&self) -> bool {
        matches!(self, Protocol::Separate { since } if since.elapsed() < PROTOCOL_RECHECK)
    }
}

/// Fails every caller of a batch with `status`.
fn fail_all(
    prepare_replies: Vec<Reply<pb::PrepareResponse>>,
    decision_replies: Vec<Reply<pb::LegStatus>>,
    status: &Status,
) {
    fail(prepare_replies, status);
    fail(decision_replies, status);
}

fn fail<T>(replies: Vec<Reply<T>>, status: &Status) {
    for reply in replies {
        let _ = reply.send(Err(status.clone()));
    }
}

/// Makes one batch `call` for `replies`' items (none when there are none) and hands each
/// caller its own answer, or the call's failure.
async fn answer_call<T, Item, Body>(
    replies: Vec<Reply<T>>,
    call: impl std::future::Future<Output = Result<tonic::Response<Body>, Status>>,
    results: impl FnOnce(Body) -> Vec<Item>,
    read: impl Fn(Item) -> Result<T, Status>,
) {
    if replies.is_empty() {
        return;
    }
    match call.await {
        Ok(response) => answer(replies, results(response.into_inner()), read),
        Err(status) => fail(replies, &status),
    }
}

/// Hands each caller its item's answer, in order; a bank that answered a different number of
/// items than it was sent gets all of them failed (which answer is whose is unknown).
fn answer<Item, T>(
    replies: Vec<Reply<T>>,
    results: Vec<Item>,
    read: impl Fn(Item) -> Result<T, Status>,
) {
    if results.len() != replies.len() {
        for reply in replies {
            let _ = reply.send(Err(Failure::internal(
                "bank batch",
                "the bank answered with the wrong number of results",
            )
            .into()));
        }
        return;
    }
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(read(result));
    }
}

/// Runs a bank's batcher until its handle (the last sender) is dropped. One batch is in flight
/// at a time; while it is, new work queues and goes out together in the next — so batches grow
/// with load and add no wait when idle. Prepares and decisions travel in the same batch
/// because every batch costs the bank a commit and its fsync (≈ a quarter of a bank's CPU on
/// this VM): one stream of batches instead of one per kind halves them (docs/BENCHMARKS.md).
fn spawn_batcher(mut queue: mpsc::Receiver<LegWork>, channel: &Channel, bank_id: String) {
    let mut client = BankClient::new(channel.clone());
    tokio::spawn(async move {
        let mut protocol = Protocol::Unknown;
        while let Some(first) = queue.recv().await {
            let mut batch = Batch::default();
            batch.push(first);
            while batch.len() < GATEWAY_BATCH_ITEMS {
                match queue.try_recv() {
                    Ok(work) => batch.push(work),
                    Err(_) => break,
                }
            }
            batch.send(&mut client, &bank_id, &mut protocol).await;
        }
    });
}

fn start_batcher(channel: &Channel, bank_id: &str) -> WorkQueue {
    let (work, queue) = mpsc::channel(BATCH_QUEUE);
    spawn_batcher(queue, channel, bank_id.to_owned());
    work
}

/// Most bank ids remembered as "registered at some point" ([`BankRegistry::ever_registered`]);
/// past it, every bank id counts as possibly known (so the answer errs towards a retry).
const MAX_REMEMBERED_BANKS: usize = 4 * MAX_BANK_ENTRIES;

/// Banks currently registered in etcd, with a reusable channel to each.
pub struct BankRegistry {
    tls: TlsMaterial,
    banks: RwLock<HashMap<String, BankHandle>>,
    /// Every bank id seen registered since this process started (bounded).
    seen: RwLock<HashSet<String>>,
    /// Whether the first etcd snapshot has been read: before it, no bank id can be called
    /// unknown.
    synced: AtomicBool,
}

impl BankRegistry {
    pub fn new(tls: TlsMaterial) -> Self {
        BankRegistry {
            tls,
            banks: RwLock::new(HashMap::new()),
            seen: RwLock::new(HashSet::new()),
            synced: AtomicBool::new(false),
        }
    }

    /// Whether `bank_id` is registered now or was registered at some point since this
    /// process started — or the registry cannot tell (etcd not read yet, too many ids to
    /// remember). `false` means: as far as etcd has shown, the network never had this bank.
    pub fn ever_registered(&self, bank_id: &str) -> bool {
        if !self.synced.load(Ordering::Acquire) {
            return true;
        }
        let seen = self
            .seen
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.contains(bank_id) || seen.len() >= MAX_REMEMBERED_BANKS
    }

    /// Every bank id seen registered since this process started, sorted (the console lists
    /// them as up or down).
    pub fn seen_bank_ids(&self) -> Vec<String> {
        let seen = self
            .seen
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut ids: Vec<String> = seen.iter().cloned().collect();
        ids.sort();
        ids
    }

    fn remember(&self, bank_id: &str) {
        let mut seen = self
            .seen
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.len() < MAX_REMEMBERED_BANKS {
            seen.insert(bank_id.to_owned());
        }
    }

    /// A client for `bank_id`, or `UNAVAILABLE` if it is not registered now. (Whether an
    /// unregistered id is a bank that is down or one the network never had is the caller's
    /// question: see [`BankRegistry::ever_registered`].)
    pub fn client(&self, bank_id: &str) -> Result<BankClient<Channel>, Failure> {
        let banks = self
            .banks
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        banks
            .get(bank_id)
            .map(|handle| BankClient::new(handle.channel.clone()))
            .ok_or_else(|| {
                Failure::Unavailable(format!(
                    "bank {bank_id} is not available (not registered in etcd)"
                ))
            })
    }

    fn handle<T>(&self, bank_id: &str, pick: impl FnOnce(&BankHandle) -> T) -> Result<T, Failure> {
        let banks = self
            .banks
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        banks.get(bank_id).map(pick).ok_or_else(|| {
            Failure::Unavailable(format!(
                "bank {bank_id} is not available (not registered in etcd)"
            ))
        })
    }

    /// Phase 1 for one leg, batched with whatever else is going to the same bank.
    pub async fn prepare(
        &self,
        bank_id: &str,
        request: pb::PrepareRequest,
    ) -> Result<pb::PrepareResponse, Status> {
        self.queue_for(bank_id, |reply| LegWork::Prepare(request, reply))
            .await
    }

    /// Phase 2 for one leg (`commit` or abort), batched per bank.
    pub async fn finish(
        &self,
        bank_id: &str,
        leg: pb::LegRequest,
        commit: bool,
    ) -> Result<pb::LegStatus, Status> {
        let request = pb::LegDecision {
            leg: Some(leg),
            commit,
        };
        self.queue_for(bank_id, |reply| LegWork::Decide(request, reply))
            .await
    }

    /// Queues one leg's work for `bank_id`'s batcher and waits for its own answer.
    async fn queue_for<T>(
        &self,
        bank_id: &str,
        work: impl FnOnce(Reply<T>) -> LegWork,
    ) -> Result<T, Status> {
        let queue = self.handle(bank_id, |handle| handle.work.clone())?;
        let (reply, answer) = oneshot::channel();
        queue
            .send(work(reply))
            .await
            .map_err(|_| went_away(bank_id))?;
        answer.await.map_err(|_| went_away(bank_id))?
    }

    /// Ids of the banks registered now, sorted.
    pub fn bank_ids(&self) -> Vec<String> {
        let banks = self
            .banks
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut ids: Vec<String> = banks.keys().cloned().collect();
        ids.sort();
        ids
    }

    fn upsert(&self, entry: ServiceEntry) {
        let mut banks = self
            .banks
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if banks
            .get(&entry.id)
            .is_some_and(|handle| handle.address == entry.address)
        {
            return;
        }
        if !banks.contains_key(&entry.id) && banks.len() >= MAX_BANK_ENTRIES {
            tracing::warn!(bank_id = %entry.id, limit = MAX_BANK_ENTRIES, "ignoring bank entry: too many banks registered");
            return;
        }
        self.remember(&entry.id);
        let expected = ExpectedPeer::Bank(entry.id.clone());
        match self
            .tls
            .endpoint(&entry.address, &expected, BANK_CALL_TIMEOUT)
        {
            Ok(endpoint) => {
                tracing::info!(bank_id = %entry.id, address = %entry.address, "bank available");
                let channel = endpoint.connect_lazy();
                let work = start_batcher(&channel, &entry.id);
                banks.insert(
                    entry.id,
                    BankHandle {
                        address: entry.address,
                        channel,
                        work,
                    },
                );
            }
            Err(error) => {
                tracing::warn!(bank_id = %entry.id, error = format!("{error:#}"), "ignoring bank with a bad address")
            }
        }
    }

    fn remove(&self, bank_id: &str) {
        let mut banks = self
            .banks
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if banks.remove(bank_id).is_some() {
            tracing::warn!(bank_id, "bank unavailable (left etcd)");
        }
    }

    /// Forgets what the entry under `key` added: only `BANKS_PREFIX<id>` ever adds `id`.
    fn remove_key(&self, key: &[u8]) {
        let key = String::from_utf8_lossy(key);
        if let Some(bank_id) = key.strip_prefix(BANKS_PREFIX) {
            self.remove(bank_id);
        }
    }

    fn replace_all(&self, entries: Vec<ServiceEntry>) {
        let wanted: Vec<String> = entries.iter().map(|entry| entry.id.clone()).collect();
        for id in self.bank_ids() {
            if !wanted.contains(&id) {
                self.remove(&id);
            }
        }
        for entry in entries {
            self.upsert(entry);
        }
    }

    /// Follows etcd until shutdown: a snapshot, then a watch from the snapshot's revision;
    /// after any error, a fresh snapshot (so nothing missed while disconnected is lost).
    pub async fn follow(&self, etcd: EtcdAccess, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_START;
        loop {
            tokio::select! {
                result = self.follow_once(&etcd) => {
                    if let Err(error) = result {
                        tracing::warn!(error = format!("{error:#}"), "bank registry watch lost; resyncing");
                    }
                }
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn follow_once(&self, etcd: &EtcdAccess) -> anyhow::Result<()> {
        let mut client = etcd.connect().await?;
        // The one bounded read of the bank list (`live_banks` reads it the same way), then a
        // watch from just after it, on the same client.
        let snapshot = bank_snapshot(&mut client).await?;
        self.replace_all(snapshot.banks);
        self.synced.store(true, Ordering::Release);
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(snapshot.revision + 1);
        let mut stream =
            tokio::time::timeout(ETCD_CALL_TIMEOUT, client.watch(BANKS_PREFIX, Some(options)))
                .await
                .context("starting the watch timed out")??;
        while let Some(response) = stream.message().await? {
            anyhow::ensure!(!response.canceled(), "watch canceled by etcd");
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => match valid_entry(kv.key(), kv.value()) {
                        Some(entry) => self.upsert(entry),
                        // A key rewritten into something invalid no longer stands for its bank.
                        None => self.remove_key(kv.key()),
                    },
                    EventType::Delete => self.remove_key(kv.key()),
                }
            }
        }
        anyhow::bail!("etcd closed the watch")
    }
}

/// A bank entry as the registry accepts it, or `None` (logged) for anything else.
fn valid_entry(key: &[u8], value: &[u8]) -> Option<ServiceEntry> {
    match bank_entry_from_kv(key, value) {
        Ok(entry) => Some(entry),
        Err(problem) => {
            tracing::warn!(problem = %problem, "ignoring bank entry in etcd");
            None
        }
    }
}

/// What a bank's refusal of a call the gateway made on a client's behalf means to that client:
/// the gateway translates it (never passes a bank's status through), so the client hears
/// about the gateway's request, not the bank's. The bank's own `NOT_FOUND` is left to the
/// caller (it knows what was looked up); everything transient is `UNAVAILABLE` (retry).
pub fn bank_failure(bank_id: &str, status: &Status) -> Failure {
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Unknown => Failure::Unavailable(format!(
            "bank {bank_id} could not be reached ({}); retry",
            status.message()
        )),
        Code::NotFound => Failure::NotFound(format!("bank {bank_id}: {}", status.message())),
        Code::AlreadyExists => Failure::AlreadyExists(status.message().to_owned()),
        Code::FailedPrecondition => Failure::precondition(
            &strife_common::failure::reason_of(status)
                .unwrap_or_else(|| strife_common::reason::BANK_REFUSED.into()),
            status.message(),
        ),
        // Anything else is the gateway and the bank disagreeing about a request the gateway
        // validated (or about the gateway's certificate): ours to fix, not the client's.
        _ => Failure::internal(
            &format!("bank {bank_id} refused the gateway's call"),
            format!("{:?}: {}", status.code(), status.message()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_banks_refusal_is_translated_for_the_client() {
        let unreachable = bank_failure("bank1", &Status::unavailable("connection refused"));
        assert_eq!(unreachable.code(), Code::Unavailable);
        assert!(unreachable.to_string().contains("bank1"), "{unreachable}");
        assert_eq!(
            bank_failure("bank1", &Status::deadline_exceeded("slow")).code(),
            Code::Unavailable
        );
        assert_eq!(
            bank_failure("bank1", &Status::invalid_argument("request_id is empty")).code(),
            Code::Internal
        );
        assert_eq!(
            bank_failure("bank1", &Status::not_found("account x does not exist")).code(),
            Code::NotFound
        );
    }
}

#[cfg(test)]
#[path = "registry_protocol_tests.rs"]
mod protocol_tests;
