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

use std::collections::HashMap;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Open connections at most (served and waiting).
    pub max_connections: usize,
    /// Connections that have not sent a byte yet, at most.
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

/// What tonic records about a connection accepted here (request extensions, inside
/// `TlsConnectInfo`): its TCP addresses, its id in the per-peer table, and its peer's
/// certificate as read once for all its requests (`tls::connection_identity`).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub tcp: TcpConnectInfo,
    pub id: u64,
    pub(crate) peer: Arc<OnceLock<crate::tls::ParsedPeer>>,
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
    let silent: SilentQueue = Arc::new(Mutex::new(VecDeque::new()));
    let mut next_id: u64 = 0;
    let mut refused_since_log: u64 = 0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = ready.closed() => return,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning on the error.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            refused_since_log += 1;
            if refused_since_log.is_power_of_two() {
                tracing::warn!(
                    refused = refused_since_log,
                    limit = limits.max_connections,
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
        let (evict, evicted) = oneshot::channel();
        {
            let mut waiting = silent
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            waiting.push_back((id, evict));
            while waiting.len() > limits.max_silent {
                if let Some((_, oldest)) = waiting.pop_front() {
                    let _ = oldest.send(());
                }
            }
        }
        let silent = Arc::clone(&silent);
        let ready = ready.clone();
        tokio::spawn(async move {
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
                let mut connection = LimitedStream::new(stream, permit, limits.idle_timeout);
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
    _slot: Option<OwnedSemaphorePermit>,
    idle_timeout: Duration,
    /// Last read or write that moved bytes. The timer is not re-armed on every one (that was
    /// two timer-wheel operations per request): it fires at most once per `idle_timeout` and
    /// then checks this.
    last_activity: Instant,
    idle_deadline: Pin<Box<Sleep>>,
    /// Until the connection is attached to its peer: when it is closed if it has not been.
    attach_deadline: Option<Pin<Box<Sleep>>>,
    peer: Arc<OnceLock<crate::tls::ParsedPeer>>,
}

impl<S> LimitedStream<S> {
    fn new(inner: S, slot: OwnedSemaphorePermit, idle_timeout: Duration) -> Self {
        let mut stream = Self::with_optional_slot(inner, Some(slot), idle_timeout);
        stream.id = register_connection();
        stream
    }

    fn with_optional_slot(
        inner: S,
        slot: Option<OwnedSemaphorePermit>,
        idle_timeout: Duration,
    ) -> Self {
        LimitedStream {
            inner,
            id: 0,
            _slot: slot,
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

impl<S: AsyncRead + Unpin> AsyncRead for LimitedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.unattached_too_long(context) {
            return Poll::Ready(Err(unattached_error()));
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
        let written = Pin::new(&mut self.inner).poll_write(context, data);
        if matches!(written, Poll::Ready(Ok(count)) if count > 0) {
            self.touch();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
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
}
