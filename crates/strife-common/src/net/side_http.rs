//! The one accept loop of the plain HTTP(S) listeners a process serves beside its gRPC port —
//! the web console and the metrics endpoint. They take no client certificate, so anyone who
//! reaches them may connect: each has caps of its own (in all and per client address),
//! independent of the gRPC port's and of each other's, and makes room for a newcomer by
//! evicting its stalest connection (`listener.rs`). What each serves on a connection (TLS or
//! not, which routes) is its own.

use std::future::Future;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_stream::StreamExt;

use crate::limits::EVICTION_MIN_STALE;
use crate::net::listener::{bounded_incoming, LimitedStream, ListenerLimits};

/// The bounds of a side listener: `max_connections` in all, `max_per_address` due to each
/// client address, the stalest connection evicted for a newcomer; the rest (idle timeout,
/// silent connections) as the process's gRPC listener. No first-request deadline: no peers
/// are attached here (no certificates).
pub fn side_limits(
    server_limits: ListenerLimits,
    max_connections: usize,
    max_per_address: usize,
) -> ListenerLimits {
    ListenerLimits {
        max_connections,
        first_request_timeout: None,
        max_per_address: Some(max_per_address),
        evict_stalest_after: Some(EVICTION_MIN_STALE),
        ..server_limits
    }
}

/// Accepts on `listener` under `limits` until `shutdown` turns true, serving each connection
/// with `serve` on a task of its own. `what` names the listener in logs.
pub fn accept_loop<F, Fut>(
    what: &'static str,
    listener: TcpListener,
    limits: ListenerLimits,
    mut shutdown: watch::Receiver<bool>,
    serve: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(LimitedStream<TcpStream>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut incoming = bounded_incoming(listener, limits);
        loop {
            let next = tokio::select! {
                next = incoming.next() => next,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            match next {
                Some(Ok(stream)) => {
                    tokio::spawn(serve(stream));
                }
                Some(Err(error)) => tracing::debug!(%error, "{what} accept failed"),
                None => return,
            }
        }
    })
}
