//! Small pieces of process plumbing every server shares: running storage work on the
//! blocking pool, and waiting for a shutdown signal.

use std::sync::Arc;

use crate::Failure;

/// Runs `work` on tokio's blocking pool (SQLite fsyncs must not stall the async runtime).
pub async fn on_blocking_pool<S, T>(
    shared: &Arc<S>,
    work: impl FnOnce(&S) -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure>
where
    S: Send + Sync + 'static,
    T: Send + 'static,
{
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || work(&shared))
        .await
        .map_err(|error| Failure::internal("blocking worker", error))?
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Ports [`free_port_for_child`] picks from: below Linux's default ephemeral range
/// (32768–60999), where `bind(0)` listeners and outgoing connections take their ports.
const CHILD_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A loopback port that is free now, for a child process that cannot be handed a bound socket
/// (etcd). A port from the ephemeral range, released and bound again later by the child, can
/// meanwhile be taken by any outgoing connection on the machine; one below that range can only
/// be taken by someone else choosing the same way. Starts at a point that differs per process
/// and call, and tries a bounded number of ports.
pub fn free_port_for_child() -> std::io::Result<u16> {
    let span = u32::from(CHILD_PORTS.end - CHILD_PORTS.start);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    for attempt in 0..256 {
        let offset = seed.wrapping_add(attempt * 7_919) % span;
        let Ok(offset) = u16::try_from(offset) else {
            continue;
        };
        let port = CHILD_PORTS.start + offset;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
