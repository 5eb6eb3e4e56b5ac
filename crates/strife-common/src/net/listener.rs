//! The accept side of every Strife server, bounded (as mini-redis's `MAX_CONNECTIONS`): a
//! stranger needs no certificate to open TCP connections, so each connection must cost little
//! and go away by itself.
//!
//! - At most [`ListenerLimits::max_connections`] connections are open at once; past it a new
//!   one is closed at accept, so file descriptors stay bounded and served clients keep working.
//! - A new connection must send its first byte (the TLS ClientHello) within
//!   [`ListenerLimits::first_byte_timeout`], and at most [`ListenerLimits::max_silent`] may be
//!   waiting for it; past that the *oldest* waiting one is dropped, so a flood of silent
//!   connections cannot keep out a client that speaks at once.
//! - The TLS handshake is bounded by the server's TLS configuration (`tls.rs`).
//! - A connection on which nothing is read or written for [`ListenerLimits::idle_timeout`] is
//!   closed. Strife's own long-lived channels send HTTP/2 keep-alive pings well inside it.
//! - One certificate may hold at most [`ListenerLimits::max_per_peer`] connections: the
//!   server's auth layer attaches each connection to its verified peer on the first request
//!   ([`attach_peer`]); a connection past the cap gets `RESOURCE_EXHAUSTED` for every request.
//!   On such a server ([`ListenerLimits::first_request_timeout`]), a connection not attached
//!   within that time — it made no request, or only refused ones — is closed, so idle
//!   handshakes under one certificate cannot hold every slot.
//!
//! Opt-in, for the HTTP listeners (the web console and the metrics endpoint), which anyone who
//! reaches the port may use without a certificate:
//!
//! - **Shares per client address** ([`ListenerLimits::max_per_address`]; an address group is
//!   an IPv4 address or an IPv6 /64, [`AddressGroup`]).
//! - **Eviction of the stalest connection** ([`ListenerLimits::evict_stalest_after`]): a full
//!   listener makes room for a new connection by closing the connection that has waited
//!   longest — for its next request since its last response byte (an idle keep-alive), or for
//!   the rest of a request since that request's first byte (a slow body or slow headers) —
//!   instead of refusing the new one. A group under its share takes the place of the stalest
//!   connection of a group over its share, however fresh; otherwise (a group at its share:
//!   among its own; or no group over its share) the stalest connection that was never
//!   answered, or that has waited at least the minimum since its last answer, is closed — a
//!   working client's connection is never closed between its request and its answer. The
//!   attacker and the client may share an address (the same host, a NAT): what tells them
//!   apart is that a client's requests are answered at once, while a slow request's
//!   connection only ever grows staler. Without
//!   eviction, `max_per_address` is a hard cap: more are closed at accept. The evicted
//!   connection's task is woken (it may be waiting on a read) and its next read or write fails.
//! - **HTTP deadlines** ([`HttpStream`], wrapped around the plaintext above TLS): a whole
//!   request (headers and body) within [`HttpDeadlines::request`] of its first byte (else a
//!   best-effort `408` and the connection is closed), a response written within
//!   [`HttpDeadlines::response`] of its first byte (a client that does not read cannot hold
//!   the connection; a server-sent-events stream is exempt, [`ConnectionHandle::stream_response`]),
//!   and at most [`HttpDeadlines::idle`] waiting for the next request. These also keep each
//!   connection's staleness for the eviction above.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

use crate::net::connection::{ConnectionInfo, ParsedPeer};

/// The bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Open connections at most (served and waiting).
    pub max_connections: usize,
    /// Connections that have not sent a byte yet, at most (the oldest is dropped for a new
    /// one). Not used with [`Self::max_per_address`] or [`Self::evict_stalest_after`]: there
    /// the listener's eviction picks the silent connection to drop (of the address crowding
    /// it).
    pub max_silent: usize,
    /// How long a new connection may stay silent.
    pub first_byte_timeout: Duration,
    /// How long an established connection may carry no bytes either way.
    pub idle_timeout: Duration,
    /// Connections one peer certificate may hold open at once.
    pub max_per_peer: usize,
    /// On a server whose auth layer calls [`attach_peer`]: how long a connection may stay
    /// unattached before it is closed. `None`: never (servers that do not count peers).
    pub first_request_timeout: Option<Duration>,
    /// Connections one client address group ([`AddressGroup`]) is due. Without eviction a
    /// hard cap (more are closed at accept); with it, the share that decides whose
    /// connections give way when the listener is full. `None`: addresses are not counted
    /// (the gRPC ports, where certificates are).
    pub max_per_address: Option<usize>,
    /// Make room in a full listener by closing the stalest connection (see the module
    /// documentation); the value is how long a connection that has been answered must have
    /// waited (since its last answer, or since its current request began) before a newcomer
    /// of its own address group (or of any group, when none is over its share) may replace
    /// it. `None`: a full listener closes new connections at accept (the gRPC ports).
    pub evict_stalest_after: Option<Duration>,
}

use crate::limits::{
    FIRST_BYTE_TIMEOUT, IDLE_TIMEOUT, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_PEER,
    MAX_SILENT_CONNECTIONS,
};

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: MAX_CONNECTIONS,
            max_silent: MAX_SILENT_CONNECTIONS,
            first_byte_timeout: FIRST_BYTE_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_per_peer: MAX_CONNECTIONS_PER_PEER,
            first_request_timeout: None,
            max_per_address: None,
            evict_stalest_after: None,
        }
    }
}

/// Which peer each served connection belongs to, and how many each peer holds. One table per
/// process (a process runs one server).
struct PeerTable {
    max_per_peer: usize,
    next_id: u64,
    by_connection: HashMap<u64, Option<String>>,
    per_peer: HashMap<String, usize>,
}

fn peer_table() -> &'static Mutex<PeerTable> {
    static TABLE: OnceLock<Mutex<PeerTable>> = OnceLock::new();
    TABLE.get_or_init(|| {
        Mutex::new(PeerTable {
            max_per_peer: MAX_CONNECTIONS_PER_PEER,
            next_id: 0,
            by_connection: HashMap::new(),
            per_peer: HashMap::new(),
        })
    })
}

fn lock_table() -> std::sync::MutexGuard<'static, PeerTable> {
    peer_table()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Counts connection `connection_id` against `peer` (its verified identity) the first time it
/// is seen; false when that would put the peer over its cap. Connections not accepted through
/// [`bounded_incoming`] are not counted.
pub fn attach_peer(connection_id: u64, peer: &str) -> bool {
    let mut table = lock_table();
    let max_per_peer = table.max_per_peer;
    let held = table.per_peer.get(peer).copied().unwrap_or(0);
    let Some(slot) = table.by_connection.get_mut(&connection_id) else {
        return true;
    };
    match slot {
        Some(attached) => attached == peer,
        None if held >= max_per_peer => false,
        None => {
            *slot = Some(peer.to_owned());
            table.per_peer.insert(peer.to_owned(), held + 1);
            true
        }
    }
}

/// The per-peer cap in force (for messages).
pub fn max_connections_per_peer() -> usize {
    lock_table().max_per_peer
}

fn register_connection() -> u64 {
    let mut table = lock_table();
    table.next_id = table.next_id.wrapping_add(1);
    let id = table.next_id;
    table.by_connection.insert(id, None);
    id
}

fn unregister_connection(id: u64) {
    let mut table = lock_table();
    if let Some(Some(peer)) = table.by_connection.remove(&id) {
        let remaining = table
            .per_peer
            .get(&peer)
            .copied()
            .unwrap_or(0)
            .saturating_sub(1);
        if remaining == 0 {
            table.per_peer.remove(&peer);
        } else {
            table.per_peer.insert(peer, remaining);
        }
    }
}

/// A client address as the HTTP listeners and console logins count it: an IPv4 address, or
/// the /64 network of an IPv6 address (a host is typically given a whole /64, so counting
/// single IPv6 addresses would count nothing). An IPv4-mapped IPv6 address is its IPv4 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressGroup {
    V4(Ipv4Addr),
    /// The upper 64 bits.
    V6(u64),
}

impl AddressGroup {
    pub fn of(address: IpAddr) -> Self {
        match address.to_canonical() {
            IpAddr::V4(v4) => AddressGroup::V4(v4),
            IpAddr::V6(v6) => AddressGroup::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

impl fmt::Display for AddressGroup {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressGroup::V4(v4) => write!(formatter, "{v4}"),
            AddressGroup::V6(prefix) => {
                write!(
                    formatter,
                    "{}/64",
                    Ipv6Addr::from(u128::from(*prefix) << 64)
                )
            }
        }
    }
}

/// Milliseconds on a process-wide monotonic clock: what connections' staleness is kept in
/// (an atomic, so the accept loop reads it without locking each connection).
fn clock_ms() -> u64 {
    static EPOCH: OnceLock<tokio::time::Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(tokio::time::Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What an HTTP listener knows about one of its connections, shared by the accept loop (which
/// picks whom to evict) and the connection's own stream wrappers.
#[derive(Debug)]
struct Activity {
    peer: SocketAddr,
    /// Since when ([`clock_ms`]) the connection has been waiting: for its next request since
    /// its last response byte (or since it opened), or for the rest of a request since its
    /// first byte.
    stale_since_ms: AtomicU64,
    evicted: AtomicBool,
    /// The task that last read or wrote the connection, woken on eviction.
    waker: AtomicWaker,
    /// A response byte has been written on it (it is a client the server has answered).
    answered: AtomicBool,
    /// The response being written is a stream without an end (server-sent events).
    streaming: AtomicBool,
}

impl Activity {
    fn new(peer: SocketAddr) -> Self {
        Activity {
            peer,
            stale_since_ms: AtomicU64::new(clock_ms()),
            evicted: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            answered: AtomicBool::new(false),
            streaming: AtomicBool::new(false),
        }
    }

    fn refresh(&self) {
        self.stale_since_ms.store(clock_ms(), Ordering::Relaxed);
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Registers the caller for a wake-up on eviction; true if evicted already.
    fn poll_evicted(&self, context: &Context<'_>) -> bool {
        self.waker.register(context.waker());
        self.evicted.load(Ordering::Acquire)
    }

    /// Resolves once the connection is evicted.
    async fn evicted(&self) {
        futures::future::poll_fn(|context| {
            if self.poll_evicted(context) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

/// A handle on one connection of an HTTP listener, for the code serving it.
#[derive(Debug, Clone)]
pub struct ConnectionHandle(Arc<Activity>);

impl ConnectionHandle {
    /// The client's address.
    pub fn peer_address(&self) -> SocketAddr {
        self.0.peer
    }

    /// Marks a request's start on a connection no [`HttpStream`] watches (HTTP/2): the
    /// connection is busy, not stale, from now on, for the listener's eviction.
    pub fn request_began(&self) {
        self.0.answered.store(true, Ordering::Relaxed);
        self.0.refresh();
    }

    /// Marks the response being written as a stream without an end (server-sent events): it
    /// is not held to [`HttpDeadlines::response`] (the idle timeout and its keep-alives bound
    /// it), until the next request on the connection.
    pub fn stream_response(&self) {
        self.0.streaming.store(true, Ordering::Relaxed);
    }
}

/// One open connection of a listener that shares its slots between address groups.
#[derive(Debug)]
struct SharedEntry {
    group: AddressGroup,
    activity: Arc<Activity>,
    evicted: bool,
}

/// What a full listener does with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Admit,
    /// Admit it and evict this connection.
    Evict(u64),
    Refuse,
}

/// The open connections of one listener with [`ListenerLimits::max_per_address`] or
/// [`ListenerLimits::evict_stalest_after`], by address group.
#[derive(Debug)]
struct SharedTable {
    max_connections: usize,
    max_per_address: Option<usize>,
    evict_stalest_after: Option<Duration>,
    next_id: u64,
    /// Every open connection, evicted ones included until their task drops them.
    entries: HashMap<u64, SharedEntry>,
    /// Connections not evicted, in all and per group.
    live: usize,
    per_group: HashMap<AddressGroup, usize>,
}

impl SharedTable {
    fn new(limits: &ListenerLimits) -> Self {
        SharedTable {
            max_connections: limits.max_connections,
            max_per_address: limits.max_per_address,
            evict_stalest_after: limits.evict_stalest_after,
            next_id: 0,
            entries: HashMap::new(),
            live: 0,
            per_group: HashMap::new(),
        }
    }

    fn held(&self, group: &AddressGroup) -> usize {
        self.per_group.get(group).copied().unwrap_or(0)
    }

    /// The live connection that has waited longest among those `eligible` (given each
    /// entry and how long it has waited).
    fn stalest(
        &self,
        now_ms: u64,
        eligible: impl Fn(&SharedEntry, Duration) -> bool,
    ) -> Option<u64> {
        self.entries
            .iter()
            .filter(|(_, entry)| !entry.evicted)
            .map(|(id, entry)| {
                let since = entry.activity.stale_since_ms.load(Ordering::Relaxed);
                (
                    *id,
                    entry,
                    Duration::from_millis(now_ms.saturating_sub(since)),
                )
            })
            .filter(|(_, entry, stale)| eligible(entry, *stale))
            // Equally stale (the same millisecond): the older connection.
            .max_by_key(|(id, _, stale)| (*stale, std::cmp::Reverse(*id)))
            .map(|(id, _, _)| id)
    }

    /// The decision for a new connection from `group` (see the module documentation).
    fn decide(&self, group: &AddressGroup, now_ms: u64) -> Admission {
        let held = self.held(group);
        let at_share = self.max_per_address.is_some_and(|share| held >= share);
        // Evicted connections hold a descriptor until their task notices: never more of them
        // than there are live ones.
        if self.entries.len() >= self.max_connections.saturating_mul(2) {
            return Admission::Refuse;
        }
        let Some(min_stale) = self.evict_stalest_after else {
            return if self.live < self.max_connections && !at_share {
                Admission::Admit
            } else {
                Admission::Refuse
            };
        };
        if self.live < self.max_connections {
            return Admission::Admit;
        }
        if let (Some(share), false) = (self.max_per_address, at_share) {
            // Under its share: a group over its share gives way, its stalest first, however
            // fresh (that group holds more than it is due).
            let over = |entry: &SharedEntry, _| self.held(&entry.group) > share;
            if let Some(victim) = self.stalest(now_ms, over) {
                return Admission::Evict(victim);
            }
        }
        // Otherwise (at its share: only among its own) the stalest connection that was never
        // answered — a slow first request, a handshake — or that has waited at least the
        // minimum since its last answer: a working client's connection is never closed
        // between its request and its answer, while a wave of fresh slow requests (all
        // reopened at once after their deadline) still gives way to a newcomer.
        let eligible = |entry: &SharedEntry, stale: Duration| {
            (!at_share || entry.group == *group)
                && (!entry.activity.answered.load(Ordering::Relaxed) || stale >= min_stale)
        };
        match self.stalest(now_ms, eligible) {
            Some(victim) => Admission::Evict(victim),
            None => Admission::Refuse,
        }
    }

    /// Admits a connection from `group` if [`Self::decide`] allows, evicting whom it names;
    /// its id in the table, or `None` if refused.
    fn admit(&mut self, group: AddressGroup, activity: &Arc<Activity>) -> Option<u64> {
        match self.decide(&group, clock_ms()) {
            Admission::Refuse => return None,
            Admission::Evict(victim) => self.evict(victim),
            Admission::Admit => {}
        }
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        self.entries.insert(
            id,
            SharedEntry {
                group,
                activity: Arc::clone(activity),
                evicted: false,
            },
        );
        self.live += 1;
        *self.per_group.entry(group).or_insert(0) += 1;
        Some(id)
    }

    fn forget_live(&mut self, group: AddressGroup) {
        self.live = self.live.saturating_sub(1);
        if let Some(held) = self.per_group.get_mut(&group) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.per_group.remove(&group);
            }
        }
    }

    fn evict(&mut self, id: u64) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if entry.evicted {
            return;
        }
        entry.evicted = true;
        entry.activity.evict();
        let group = entry.group;
        self.forget_live(group);
    }

    fn remove(&mut self, id: u64) {
        if let Some(entry) = self.entries.remove(&id) {
            if !entry.evicted {
                self.forget_live(entry.group);
            }
        }
    }
}

type SharedSlots = Arc<Mutex<SharedTable>>;

fn lock_slots(slots: &SharedSlots) -> std::sync::MutexGuard<'_, SharedTable> {
    slots
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A connection's place in its listener's [`SharedTable`], given up when it is dropped.
struct SharedSlot {
    slots: SharedSlots,
    id: u64,
}

impl Drop for SharedSlot {
    fn drop(&mut self) {
        lock_slots(&self.slots).remove(self.id);
    }
}

/// How a connection holds its place under its listener's cap (given back when dropped).
// The fields are only ever dropped, never read.
#[allow(dead_code)]
enum Slot {
    Permit(OwnedSemaphorePermit),
    Shared(SharedSlot),
}

/// Connections waiting for their first byte, oldest first, each with its eviction switch.
type SilentQueue = Arc<Mutex<VecDeque<(u64, oneshot::Sender<()>)>>>;

/// Accepts on `listener` under `limits`; yields connections that have spoken. Stops when the
/// returned stream is dropped (server shutdown).
pub fn bounded_incoming(
    listener: TcpListener,
    limits: ListenerLimits,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<LimitedStream<TcpStream>>> {
    lock_table().max_per_peer = limits.max_per_peer;
    let (ready, incoming) = mpsc::channel(limits.max_silent.max(1));
    tokio::spawn(accept_loop(listener, limits, ready));
    tokio_stream::wrappers::ReceiverStream::new(incoming)
}

async fn accept_loop(
    listener: TcpListener,
    limits: ListenerLimits,
    ready: mpsc::Sender<io::Result<LimitedStream<TcpStream>>>,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    // Listeners that count addresses or evict keep their connections in a table instead.
    let shared: Option<SharedSlots> = (limits.max_per_address.is_some()
        || limits.evict_stalest_after.is_some())
    .then(|| Arc::new(Mutex::new(SharedTable::new(&limits))));
    let silent: SilentQueue = Arc::new(Mutex::new(VecDeque::new()));
    let mut next_id: u64 = 0;
    let mut refused_since_log: u64 = 0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = ready.closed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning on the error.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let admitted = match &shared {
            None => Arc::clone(&open)
                .try_acquire_owned()
                .ok()
                .map(|permit| (Slot::Permit(permit), None)),
            Some(slots) => {
                let activity = Arc::new(Activity::new(peer));
                let id = lock_slots(slots).admit(AddressGroup::of(peer.ip()), &activity);
                id.map(|id| {
                    let slot = SharedSlot {
                        slots: Arc::clone(slots),
                        id,
                    };
                    (Slot::Shared(slot), Some(activity))
                })
            }
        };
        let Some((slot, activity)) = admitted else {
            refused_since_log += 1;
            if refused_since_log.is_power_of_two() {
                tracing::warn!(
                    refused = refused_since_log,
                    limit = limits.max_connections,
                    per_address = limits.max_per_address,
                    "connection limit reached; closing new connections"
                );
            }
            continue;
        };
        // tonic's `tcp_nodelay` applies only to listeners it binds itself; without it small
        // replies wait on Nagle + delayed ACK (~40 ms).
        let _ = stream.set_nodelay(true);
        next_id = next_id.wrapping_add(1);
        let id = next_id;
        // Connections that have not spoken yet: at most `max_silent`, the oldest dropped
        // first. On a listener with a table, the table's eviction does this instead (a silent
        // connection is the first to go, but only one of the group crowding the listener).
        let evicted = match &activity {
            Some(_) => None,
            None => {
                let (evict, evicted) = oneshot::channel();
                let mut waiting = silent
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                waiting.push_back((id, evict));
                while waiting.len() > limits.max_silent {
                    if let Some((_, oldest)) = waiting.pop_front() {
                        let _ = oldest.send(());
                    }
                }
                Some(evicted)
            }
        };
        let silent = Arc::clone(&silent);
        let ready = ready.clone();
        tokio::spawn(async move {
            let evicted = async {
                match (evicted, &activity) {
                    (Some(evicted), _) => {
                        let _ = evicted.await;
                    }
                    (None, Some(activity)) => activity.evicted().await,
                    (None, None) => futures::future::pending().await,
                }
            };
            let spoke = tokio::select! {
                peeked = tokio::time::timeout(limits.first_byte_timeout, first_byte(&stream)) => {
                    matches!(peeked, Ok(Ok(true)))
                }
                _ = evicted => false,
            };
            silent
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .retain(|(waiting_id, _)| *waiting_id != id);
            if spoke {
                let mut connection = LimitedStream::new(stream, slot, limits.idle_timeout);
                connection.activity = activity;
                if let Some(limit) = limits.first_request_timeout {
                    connection.attach_deadline = Some(Box::pin(tokio::time::sleep(limit)));
                }
                let _ = ready.send(Ok(connection)).await;
            }
        });
    }
}

/// Waits until the peer has sent something (true) or closed (false), consuming nothing.
async fn first_byte(stream: &TcpStream) -> io::Result<bool> {
    let mut byte = [0u8; 1];
    Ok(stream.peek(&mut byte).await? > 0)
}

/// A connection that holds its slot under the connection cap and closes itself when idle.
pub struct LimitedStream<S> {
    inner: S,
    /// Id in the per-peer table (0: not counted).
    id: u64,
    _slot: Option<Slot>,
    /// On an HTTP listener (shares or eviction): what the listener knows of this connection.
    activity: Option<Arc<Activity>>,
    idle_timeout: Duration,
    /// Last read or write that moved bytes. The timer is not re-armed on every one (that was
    /// two timer-wheel operations per request): it fires at most once per `idle_timeout` and
    /// then checks this.
    last_activity: Instant,
    idle_deadline: Pin<Box<Sleep>>,
    /// Until the connection is attached to its peer: when it is closed if it has not been.
    attach_deadline: Option<Pin<Box<Sleep>>>,
    peer: Arc<OnceLock<ParsedPeer>>,
}

impl<S> LimitedStream<S> {
    fn new(inner: S, slot: Slot, idle_timeout: Duration) -> Self {
        let mut stream = Self::with_optional_slot(inner, Some(slot), idle_timeout);
        stream.id = register_connection();
        stream
    }

    fn with_optional_slot(inner: S, slot: Option<Slot>, idle_timeout: Duration) -> Self {
        LimitedStream {
            inner,
            id: 0,
            _slot: slot,
            activity: None,
            idle_timeout,
            last_activity: Instant::now(),
            idle_deadline: Box::pin(tokio::time::sleep(idle_timeout)),
            attach_deadline: None,
            peer: Arc::default(),
        }
    }

    fn touch(&mut self) {
        self.last_activity = Instant::now();
    }

    /// On an HTTP listener: the handle its server uses to serve this connection.
    pub fn handle(&self) -> Option<ConnectionHandle> {
        self.activity
            .as_ref()
            .map(|activity| ConnectionHandle(Arc::clone(activity)))
    }

    /// True once the listener evicted this connection (the caller is woken when it is).
    fn evicted(&self, context: &Context<'_>) -> bool {
        self.activity
            .as_ref()
            .is_some_and(|activity| activity.poll_evicted(context))
    }

    /// True once `idle_timeout` has passed since the last activity. When the timer fires
    /// early (activity since it was armed), it is re-armed for the real deadline.
    fn idle_expired(&mut self, context: &mut Context<'_>) -> bool {
        loop {
            if self.idle_deadline.as_mut().poll(context).is_pending() {
                return false;
            }
            let due = self.last_activity + self.idle_timeout;
            if due <= Instant::now() {
                return true;
            }
            self.idle_deadline.as_mut().reset(due);
        }
    }

    /// True once the first-request deadline has passed with the connection still not attached
    /// to a peer. The table is read once, when the deadline fires.
    fn unattached_too_long(&mut self, context: &mut Context<'_>) -> bool {
        let Some(deadline) = self.attach_deadline.as_mut() else {
            return false;
        };
        if deadline.as_mut().poll(context).is_pending() {
            return false;
        }
        if is_attached(self.id) {
            self.attach_deadline = None;
            return false;
        }
        true
    }
}

fn is_attached(connection_id: u64) -> bool {
    matches!(
        lock_table().by_connection.get(&connection_id),
        Some(Some(_))
    )
}

fn unattached_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "connection closed: no accepted request within the first-request timeout",
    )
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "idle connection closed")
}

fn evicted_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection closed to make room for a new one (the listener is full)",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for LimitedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.unattached_too_long(context) {
            return Poll::Ready(Err(unattached_error()));
        }
        if self.evicted(context) {
            return Poll::Ready(Err(evicted_error()));
        }
        let before = buffer.filled().len();
        match Pin::new(&mut self.inner).poll_read(context, buffer) {
            Poll::Ready(Ok(())) => {
                if buffer.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending if self.idle_expired(context) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LimitedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.evicted(context) {
            return Poll::Ready(Err(evicted_error()));
        }
        let written = Pin::new(&mut self.inner).poll_write(context, data);
        if matches!(written, Poll::Ready(Ok(count)) if count > 0) {
            self.touch();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.evicted(context) {
            return Poll::Ready(Err(evicted_error()));
        }
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

impl<S> Drop for LimitedStream<S> {
    fn drop(&mut self) {
        if self.id != 0 {
            unregister_connection(self.id);
        }
    }
}

/// The deadlines of an HTTP connection (see [`HttpStream`]).
#[derive(Debug, Clone, Copy)]
pub struct HttpDeadlines {
    /// A whole request (headers and body) must have arrived, and its answer begun, within
    /// this of its first byte.
    pub request: Duration,
    /// A response must be written within this of its first byte (except a stream marked with
    /// [`ConnectionHandle::stream_response`]).
    pub response: Duration,
    /// How long the connection may wait for its next (or first) request.
    pub idle: Duration,
}

/// Where an HTTP connection stands, as seen from its bytes (HTTP/1.1: one request, then its
/// response, then the next request).
#[derive(Debug, Clone, Copy)]
enum HttpPhase {
    /// Waiting for a request since the last response byte (or since the start).
    Waiting { since: Instant },
    /// A request began (its first byte arrived) and no response byte has been written since.
    Reading { started: Instant },
}

/// An HTTP/1.1 connection's plaintext (above TLS, if any) held to [`HttpDeadlines`]: a read
/// past the request deadline answers `408` (best effort) and fails; a read waiting longer than
/// the idle deadline ends the connection (end of file); a write still blocked past the
/// response deadline fails. It also tells the listener how stale the connection is (for
/// eviction): from its last response byte, or from the first byte of the request it is in.
pub struct HttpStream<S> {
    inner: S,
    activity: Option<Arc<Activity>>,
    deadlines: HttpDeadlines,
    phase: HttpPhase,
    /// When the response to the current request began (its first write).
    response_started: Option<Instant>,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
}

impl<S> HttpStream<S> {
    pub fn new(inner: S, connection: Option<ConnectionHandle>, deadlines: HttpDeadlines) -> Self {
        let now = Instant::now();
        let activity = connection.map(|handle| handle.0);
        if let Some(activity) = &activity {
            activity.refresh();
        }
        HttpStream {
            inner,
            activity,
            deadlines,
            phase: HttpPhase::Waiting { since: now },
            response_started: None,
            read_timer: Box::pin(tokio::time::sleep_until(now + deadlines.idle)),
            write_timer: Box::pin(tokio::time::sleep_until(now + deadlines.request)),
        }
    }

    fn streaming(&self) -> bool {
        self.activity
            .as_ref()
            .is_some_and(|activity| activity.streaming.load(Ordering::Relaxed))
    }

    /// A pending write or flush: fails once the response has taken longer than its deadline,
    /// else waits (with a timer for that deadline).
    fn blocked_write<T>(&mut self, context: &mut Context<'_>) -> Poll<io::Result<T>> {
        if self.streaming() {
            return Poll::Pending;
        }
        let Some(started) = self.response_started else {
            return Poll::Pending;
        };
        let deadline = started + self.deadlines.response;
        if Instant::now() >= deadline {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "response not taken by the client within the response deadline",
            )));
        }
        self.write_timer.as_mut().reset(deadline);
        if self.write_timer.as_mut().poll(context).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "response not taken by the client within the response deadline",
            )));
        }
        Poll::Pending
    }

    fn wrote(&mut self) {
        self.phase = HttpPhase::Waiting {
            since: Instant::now(),
        };
        if let Some(activity) = &self.activity {
            activity.refresh();
            activity.answered.store(true, Ordering::Relaxed);
        }
    }
}

/// What a client whose request took too long is told (no response byte has gone out yet, so
/// this is a well-formed answer), before the connection is closed.
const REQUEST_TIMEOUT_RESPONSE: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

impl<S: AsyncRead + AsyncWrite + Unpin> HttpStream<S> {
    /// Answers 408 if the bytes fit at once; the caller closes the connection either way.
    fn answer_request_timeout(&mut self, context: &mut Context<'_>) {
        if let Poll::Ready(Ok(_)) =
            Pin::new(&mut self.inner).poll_write(context, REQUEST_TIMEOUT_RESPONSE)
        {
            let _ = Pin::new(&mut self.inner).poll_flush(context);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for HttpStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            let deadline = match this.phase {
                HttpPhase::Waiting { since } => since + this.deadlines.idle,
                HttpPhase::Reading { started } => started + this.deadlines.request,
            };
            if Instant::now() >= deadline {
                return match this.phase {
                    // A quiet connection ends like one the client closed.
                    HttpPhase::Waiting { .. } => Poll::Ready(Ok(())),
                    HttpPhase::Reading { .. } => {
                        this.answer_request_timeout(context);
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "request not received within the request deadline",
                        )))
                    }
                };
            }
            let before = buffer.filled().len();
            match Pin::new(&mut this.inner).poll_read(context, buffer) {
                Poll::Ready(Ok(())) => {
                    if buffer.filled().len() > before {
                        if let HttpPhase::Waiting { .. } = this.phase {
                            this.phase = HttpPhase::Reading {
                                started: Instant::now(),
                            };
                            this.response_started = None;
                            if let Some(activity) = &this.activity {
                                activity.streaming.store(false, Ordering::Relaxed);
                                activity.refresh();
                            }
                        }
                    }
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    this.read_timer.as_mut().reset(deadline);
                    if this.read_timer.as_mut().poll(context).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for HttpStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.response_started.is_none() {
            self.response_started = Some(Instant::now());
        }
        match Pin::new(&mut self.inner).poll_write(context, data) {
            Poll::Ready(Ok(count)) => {
                if count > 0 {
                    self.wrote();
                }
                Poll::Ready(Ok(count))
            }
            Poll::Pending => self.blocked_write(context),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(context) {
            Poll::Pending => self.blocked_write(context),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(context) {
            Poll::Pending => self.blocked_write(context),
            other => other,
        }
    }
}

impl Connected for LimitedStream<TcpStream> {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnectionInfo {
            tcp: self.inner.connect_info(),
            id: self.id,
            peer: Arc::clone(&self.peer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = TcpStream::connect(address).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    /// A counted connection with a first-request deadline of `limit`.
    fn counted(server: TcpStream, limit: Duration) -> LimitedStream<TcpStream> {
        let mut stream = LimitedStream::with_optional_slot(server, None, IDLE_TIMEOUT);
        stream.id = register_connection();
        stream.attach_deadline = Some(Box::pin(tokio::time::sleep(limit)));
        stream
    }

    #[tokio::test]
    async fn a_connection_never_attached_to_a_peer_is_closed_at_its_first_request_deadline() {
        let limit = Duration::from_millis(300);
        // Traffic does not help a connection that never made an accepted request.
        let (mut client, server) = pair().await;
        let mut unattached = counted(server, limit);
        let started = Instant::now();
        let mut byte = [0u8; 1];
        let error = loop {
            client.write_all(b"x").await.unwrap();
            let read = tokio::time::timeout(Duration::from_secs(5), unattached.read(&mut byte))
                .await
                .expect("the deadline must end the read");
            match read {
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(error) => break error,
            }
        };
        assert!(started.elapsed() >= limit);
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(error.to_string().contains("first-request"), "{error}");

        // One attached in time stays open past the deadline and keeps reading.
        let (mut client, server) = pair().await;
        let mut attached = counted(server, limit);
        assert!(attach_peer(attached.id, "strife-user/deadline-test"));
        tokio::time::sleep(limit * 2).await;
        client.write_all(b"y").await.unwrap();
        attached.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"y");
    }

    #[tokio::test]
    async fn a_connection_that_stays_quiet_is_closed_and_traffic_keeps_it_open() {
        let (mut client, server) = pair().await;
        let idle = Duration::from_millis(300);
        let mut server = LimitedStream::with_optional_slot(server, None, idle);
        let started = Instant::now();
        // Traffic for longer than the idle timeout keeps the connection alive.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            client.write_all(b"x").await.unwrap();
            let mut byte = [0u8; 1];
            server.read_exact(&mut byte).await.unwrap();
        }
        assert!(started.elapsed() > idle);
        // Silence: the next read fails once the timeout passes.
        let mut byte = [0u8; 1];
        let error = tokio::time::timeout(Duration::from_secs(5), server.read(&mut byte))
            .await
            .expect("the idle timeout must end the read")
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn a_peer_holds_at_most_its_cap_and_a_closed_connection_frees_a_slot() {
        lock_table().max_per_peer = MAX_CONNECTIONS_PER_PEER;
        let ids: Vec<u64> = (0..MAX_CONNECTIONS_PER_PEER + 1)
            .map(|_| register_connection())
            .collect();
        let peer = "strife-user/cap-test";
        for id in &ids[..MAX_CONNECTIONS_PER_PEER] {
            assert!(attach_peer(*id, peer));
            assert!(
                attach_peer(*id, peer),
                "a second request on a counted connection"
            );
        }
        let last = ids[MAX_CONNECTIONS_PER_PEER];
        assert!(!attach_peer(last, peer), "one connection over the cap");
        assert!(attach_peer(last, "strife-user/someone-else"));
        unregister_connection(last);
        unregister_connection(ids[0]);
        let fresh = register_connection();
        assert!(
            attach_peer(fresh, peer),
            "a closed connection frees its slot"
        );
        assert!(
            attach_peer(424_242, peer),
            "unknown connections are not counted"
        );
        for id in ids[1..MAX_CONNECTIONS_PER_PEER].iter().chain([&fresh]) {
            unregister_connection(*id);
        }
    }

    #[tokio::test]
    async fn silent_connections_are_dropped_and_a_speaking_one_gets_through() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = ListenerLimits {
            max_connections: 64,
            max_silent: 8,
            first_byte_timeout: Duration::from_secs(30),
            idle_timeout: IDLE_TIMEOUT,
            max_per_peer: MAX_CONNECTIONS_PER_PEER,
            first_request_timeout: None,
            max_per_address: None,
            evict_stalest_after: None,
        };
        let mut incoming = bounded_incoming(listener, limits);
        // More silent connections than may wait: the oldest are evicted, never yielded.
        let mut silent = Vec::new();
        for _ in 0..40 {
            silent.push(TcpStream::connect(address).await.unwrap());
        }
        let mut speaker = TcpStream::connect(address).await.unwrap();
        speaker.write_all(b"hello").await.unwrap();
        let accepted = tokio::time::timeout(Duration::from_secs(5), async {
            use tokio_stream::StreamExt;
            incoming.next().await
        })
        .await
        .expect("the speaking connection must be yielded")
        .unwrap()
        .unwrap();
        let mut greeting = [0u8; 5];
        let mut accepted = accepted;
        accepted.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"hello");
        // The evicted silent connections were closed by the server.
        let mut closed = 0;
        for stream in &mut silent {
            let mut byte = [0u8; 1];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte)).await
            {
                closed += 1;
            }
        }
        assert!(
            closed >= 40 - 8,
            "only {closed} silent connections were closed"
        );
    }

    fn address(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn address_groups_are_ipv4_addresses_and_ipv6_slash_64s() {
        let group = |text: &str| AddressGroup::of(address(text));
        assert_eq!(group("127.0.0.1"), group("::ffff:127.0.0.1"));
        assert_ne!(group("127.0.0.1"), group("127.0.0.2"));
        assert_eq!(group("2001:db8:1:2::1"), group("2001:db8:1:2:ffff::9"));
        assert_ne!(group("2001:db8:1:2::1"), group("2001:db8:1:3::1"));
        assert_eq!(group("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(group("10.1.2.3").to_string(), "10.1.2.3");
    }

    fn sharing(max: usize, per_address: Option<usize>, evict: Option<Duration>) -> SharedTable {
        SharedTable::new(&ListenerLimits {
            max_connections: max,
            max_per_address: per_address,
            evict_stalest_after: evict,
            ..ListenerLimits::default()
        })
    }

    /// Puts a connection from `ip` into `table` that has been waiting `stale_ms` at `now_ms`,
    /// `answered` before or not.
    fn put(table: &mut SharedTable, ip: &str, stale_ms: u64, now_ms: u64, answered: bool) -> u64 {
        let activity = Arc::new(Activity::new(SocketAddr::new(address(ip), 1)));
        activity
            .stale_since_ms
            .store(now_ms - stale_ms, Ordering::Relaxed);
        activity.answered.store(answered, Ordering::Relaxed);
        table.next_id += 1;
        let id = table.next_id;
        let group = AddressGroup::of(address(ip));
        table.entries.insert(
            id,
            SharedEntry {
                group,
                activity,
                evicted: false,
            },
        );
        table.live += 1;
        *table.per_group.entry(group).or_insert(0) += 1;
        id
    }

    #[test]
    fn a_full_listener_picks_the_stalest_connection_never_answered_or_past_the_minimum() {
        let now = 1_000_000;
        let a = || AddressGroup::of(address("127.0.0.1"));
        let mut table = sharing(3, None, Some(Duration::from_secs(1)));
        assert_eq!(table.decide(&a(), now), Admission::Admit);
        put(&mut table, "127.0.0.1", 5_000, now, true);
        let stalest = put(&mut table, "127.0.0.1", 9_000, now, true);
        put(&mut table, "127.0.0.1", 20, now, true);
        assert_eq!(table.decide(&a(), now), Admission::Evict(stalest));
        // Once evicted it is not picked again; the next is only 5 s stale.
        table.evict(stalest);
        assert!(table.entries[&stalest]
            .activity
            .evicted
            .load(Ordering::Relaxed));
        assert_eq!(table.live, 2);
        put(&mut table, "127.0.0.1", 0, now, true);
        assert!(matches!(table.decide(&a(), now), Admission::Evict(id) if id != stalest));

        // Every answered connection fresher than the minimum: the newcomer is refused (a
        // working client is never closed between its request and its answer) ...
        let mut fresh = sharing(3, None, Some(Duration::from_secs(1)));
        put(&mut fresh, "127.0.0.1", 900, now, true);
        put(&mut fresh, "127.0.0.1", 10, now, true);
        let unanswered = put(&mut fresh, "127.0.0.1", 300, now, false);
        // ... but one never answered goes, however fresh: a wave of slow first requests
        // reopened together never keeps a newcomer out.
        assert_eq!(fresh.decide(&a(), now), Admission::Evict(unanswered));
        fresh.remove(unanswered);
        put(&mut fresh, "127.0.0.1", 0, now, true);
        assert_eq!(fresh.decide(&a(), now), Admission::Refuse);
        // Evicted connections still hold descriptors: never more of them than live ones.
        let mut lingering = sharing(1, None, Some(Duration::from_secs(1)));
        let old = put(&mut lingering, "127.0.0.1", 5_000, now, true);
        lingering.evict(old);
        let newer = put(&mut lingering, "127.0.0.1", 5_000, now, true);
        assert_eq!(lingering.decide(&a(), now), Admission::Refuse);
        lingering.remove(old);
        assert_eq!(lingering.decide(&a(), now), Admission::Evict(newer));
    }

    #[test]
    fn an_address_under_its_share_takes_the_place_of_one_over_it_however_fresh() {
        let now = 1_000_000;
        let group = |ip: &str| AddressGroup::of(address(ip));
        let mut table = sharing(4, Some(2), Some(Duration::from_secs(10)));
        let mut flood = Vec::new();
        for stale in [300, 200, 100] {
            flood.push(put(&mut table, "127.0.0.2", stale, now, true));
        }
        // Room left: anyone is admitted, even a group already past its share.
        assert_eq!(table.decide(&group("127.0.0.2"), now), Admission::Admit);
        put(&mut table, "127.0.0.2", 0, now, true);
        // Full. A newcomer under its share evicts the flood's stalest (300 ms, not 10 s),
        // answered or not.
        assert_eq!(
            table.decide(&group("127.0.0.1"), now),
            Admission::Evict(flood[0])
        );
        // The flood itself may only replace its own answered connections past the minimum:
        // none.
        assert_eq!(table.decide(&group("127.0.0.2"), now), Admission::Refuse);
        // A group at its share, with stale connections of its own, replaces those, never
        // another group's.
        let mut mixed = sharing(4, Some(2), Some(Duration::from_secs(1)));
        let own = put(&mut mixed, "127.0.0.1", 30_000, now, true);
        put(&mut mixed, "127.0.0.1", 10, now, true);
        put(&mut mixed, "127.0.0.3", 60_000, now, true);
        put(&mut mixed, "127.0.0.4", 60_000, now, false);
        assert_eq!(
            mixed.decide(&group("127.0.0.1"), now),
            Admission::Evict(own)
        );
        // No group over its share: the stalest of all.
        let stalest = mixed.decide(&group("127.0.0.5"), now);
        assert!(
            matches!(stalest, Admission::Evict(id) if mixed.entries[&id].group != group("127.0.0.1")),
            "{stalest:?}"
        );
    }

    #[test]
    fn without_eviction_an_address_past_its_cap_is_refused() {
        let now = 1_000_000;
        let group = |ip: &str| AddressGroup::of(address(ip));
        let mut table = sharing(8, Some(2), None);
        put(&mut table, "127.0.0.1", 60_000, now, true);
        put(&mut table, "127.0.0.1", 60_000, now, false);
        assert_eq!(table.decide(&group("127.0.0.1"), now), Admission::Refuse);
        assert_eq!(table.decide(&group("127.0.0.2"), now), Admission::Admit);
    }

    /// A client connected from `ip` (127.0.0.0/8 is all loopback on Linux).
    async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(address(ip), 0)).unwrap();
        socket.connect(to).await.unwrap()
    }

    /// Whether the server closed `client`'s connection within `limit`.
    async fn closed_by_server(client: &mut TcpStream, limit: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(limit, client.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    type Incoming = tokio_stream::wrappers::ReceiverStream<io::Result<LimitedStream<TcpStream>>>;

    async fn next(incoming: &mut Incoming) -> LimitedStream<TcpStream> {
        use tokio_stream::StreamExt;
        tokio::time::timeout(Duration::from_secs(5), incoming.next())
            .await
            .expect("a connection")
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn an_evicted_connection_is_woken_and_closed_and_the_newcomer_is_served() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = ListenerLimits {
            max_connections: 3,
            max_silent: 3,
            max_per_address: Some(2),
            evict_stalest_after: Some(Duration::from_millis(200)),
            ..ListenerLimits::default()
        };
        let mut incoming = bounded_incoming(listener, limits);
        // Three slow clients from 127.0.0.2 fill the listener; each server side waits in a
        // read, as a server waiting for the rest of a request does.
        let mut flood = Vec::new();
        let mut reads = Vec::new();
        for _ in 0..3 {
            let mut client = connect_from("127.0.0.2", address).await;
            client.write_all(b"P").await.unwrap();
            let mut server: LimitedStream<TcpStream> = next(&mut incoming).await;
            let mut byte = [0u8; 1];
            server.read_exact(&mut byte).await.unwrap();
            reads.push(tokio::spawn(async move {
                let mut byte = [0u8; 1];
                server.read(&mut byte).await
            }));
            flood.push(client);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A client from another address is let in at once, in place of the stalest.
        let mut newcomer = connect_from("127.0.0.1", address).await;
        newcomer.write_all(b"G").await.unwrap();
        let mut served = next(&mut incoming).await;
        let mut byte = [0u8; 1];
        served.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"G");
        // The first flood connection's pending read was woken and failed.
        let first = tokio::time::timeout(Duration::from_secs(5), reads.remove(0))
            .await
            .expect("the evicted connection's read must be woken")
            .unwrap();
        let error = first.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted, "{error}");
        drop(reads);
        assert!(closed_by_server(&mut flood[0], Duration::from_secs(5)).await);
        // The flood's address, at its share, can only replace its own stale connections: a
        // new connection of theirs closes their stalest, never the newcomer.
        let mut again = connect_from("127.0.0.2", address).await;
        again.write_all(b"P").await.unwrap();
        let _again = next(&mut incoming).await;
        served.write_all(b"still here").await.unwrap();
        assert!(closed_by_server(&mut flood[1], Duration::from_secs(5)).await);
    }

    fn deadlines(request_ms: u64, response_ms: u64, idle_ms: u64) -> HttpDeadlines {
        HttpDeadlines {
            request: Duration::from_millis(request_ms),
            response: Duration::from_millis(response_ms),
            idle: Duration::from_millis(idle_ms),
        }
    }

    #[tokio::test]
    async fn a_request_slower_than_its_deadline_is_answered_408_and_closed() {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut server = HttpStream::new(server, None, deadlines(300, 5_000, 5_000));
        let started = Instant::now();
        // One byte every 100 ms: the bytes keep coming, the request never ends.
        let trickle = tokio::spawn(async move {
            for byte in b"POST /login HTTP/1.1\r\nContent-Length: 999\r\n\r\nusername=" {
                if client.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
            answer
        });
        let mut buffer = [0u8; 64];
        let error = loop {
            match tokio::time::timeout(Duration::from_secs(5), server.read(&mut buffer))
                .await
                .expect("the request deadline must end the read")
            {
                Ok(0) => panic!("end of file instead of the request deadline"),
                Ok(_) => continue,
                Err(error) => break error,
            }
        };
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        drop(server);
        let answer = String::from_utf8(trickle.await.unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    }

    #[tokio::test]
    async fn a_quiet_connection_ends_at_the_idle_deadline_and_a_request_restarts_the_clock() {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut server = HttpStream::new(server, None, deadlines(5_000, 5_000, 300));
        // A request and its response, then silence.
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buffer = [0u8; 64];
        let read = server.read(&mut buffer).await.unwrap();
        assert!(read > 0);
        tokio::time::sleep(Duration::from_millis(400)).await;
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        let answered = Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(5), server.read(&mut buffer))
            .await
            .expect("the idle deadline must end the read")
            .unwrap();
        assert_eq!(read, 0, "a quiet connection ends like a closed one");
        assert!(answered.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn a_response_the_client_does_not_read_fails_unless_it_is_a_stream() {
        for streaming in [false, true] {
            // A 64-byte pipe: the client never reads, so writes block once it is full.
            let (mut client, server) = tokio::io::duplex(64);
            let activity = Arc::new(Activity::new("127.0.0.1:1".parse().unwrap()));
            let handle = ConnectionHandle(Arc::clone(&activity));
            let mut server =
                HttpStream::new(server, Some(handle.clone()), deadlines(5_000, 300, 60_000));
            client
                .write_all(b"GET /events HTTP/1.1\r\n\r\n")
                .await
                .unwrap();
            let mut buffer = [0u8; 64];
            assert!(server.read(&mut buffer).await.unwrap() > 0);
            if streaming {
                handle.stream_response();
            }
            let written =
                tokio::time::timeout(Duration::from_secs(2), server.write_all(&[b'x'; 4096])).await;
            if streaming {
                assert!(
                    written.is_err(),
                    "a stream waits for its reader: {written:?}"
                );
            } else {
                let error = written
                    .expect("the response deadline must end the write")
                    .unwrap_err();
                assert_eq!(error.kind(), io::ErrorKind::TimedOut);
            }
            drop(client);
        }
    }

    #[tokio::test]
    async fn a_connection_is_stale_from_its_request_or_its_last_response() {
        let (mut client, server) = tokio::io::duplex(4096);
        let activity = Arc::new(Activity::new("127.0.0.1:1".parse().unwrap()));
        activity.stale_since_ms.store(u64::MAX, Ordering::Relaxed);
        let handle = ConnectionHandle(Arc::clone(&activity));
        let mut server = HttpStream::new(server, Some(handle), deadlines(5_000, 5_000, 60_000));
        let stale_since = || activity.stale_since_ms.load(Ordering::Relaxed);
        let opened = stale_since();
        assert_ne!(opened, u64::MAX, "the HTTP stream starts the clock");
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buffer = [0u8; 16];
        server.read_exact(&mut buffer).await.unwrap();
        let requested = stale_since();
        assert!(
            requested >= opened + 40,
            "a request's first byte restarts it"
        );
        // More bytes of the same request do not.
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(b"\r\n").await.unwrap();
        server.read_exact(&mut buffer[..2]).await.unwrap();
        assert_eq!(stale_since(), requested);
        // A response byte does.
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        assert!(stale_since() >= requested + 40);
    }
}
