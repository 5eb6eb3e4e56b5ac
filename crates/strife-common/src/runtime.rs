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

/// Accepted connections of `listener` with `TCP_NODELAY` set. Servers bind their own
/// listener (to report the port), and tonic's `tcp_nodelay` only applies to listeners it
/// binds itself; without this, small replies wait on Nagle + delayed ACK (~40 ms).
pub fn incoming_nodelay(
    listener: tokio::net::TcpListener,
) -> impl futures_core::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}
