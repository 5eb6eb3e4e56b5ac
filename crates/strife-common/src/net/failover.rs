//! A gRPC channel over several gateway replicas that tries the next one when a call cannot
//! reach the current one.
//!
//! Any replica can answer any request (they share one database), so a client given
//! `--gateway a,b,c` keeps working while one replica is down. A call goes to the replica that
//! last answered; when the transport fails (connection refused or reset, TLS failure — the
//! channel's own error, never a status a replica answered with), the *same request bytes*
//! are sent to the next replica. Every request a client sends is safe to resend: payments
//! and account openings carry an idempotency key, links and reads are idempotent, and a
//! repeated registration answers `ALREADY_EXISTS` rather than creating a second user.
//!
//! Request bodies are buffered to be resendable; the server bounds a message at
//! `limits::MAX_MESSAGE_BYTES`, so this costs at most one small copy per call. Only unary
//! calls are meant to go through this channel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http_body_util::BodyExt;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::{Service, ServiceExt};

/// The error a [`Failover`] call ends with: the last replica's transport error, unchanged, so
/// tonic turns it into the same status a single channel would (`UNAVAILABLE` and its cause).
pub type FailoverError = Box<dyn std::error::Error + Send + Sync>;

/// A channel per replica and which one answered last.
#[derive(Clone)]
pub struct Failover {
    replicas: Arc<[(String, Channel)]>,
    preferred: Arc<AtomicUsize>,
}

impl Failover {
    /// `replicas` are `(address, channel)` pairs, tried in this order after the preferred one.
    pub fn new(replicas: Vec<(String, Channel)>) -> anyhow::Result<Self> {
        anyhow::ensure!(!replicas.is_empty(), "no gateway address given");
        Ok(Failover {
            replicas: replicas.into(),
            preferred: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The address of the replica that answered last (where the next call goes first).
    pub fn current_address(&self) -> &str {
        let index = self.preferred.load(Ordering::Relaxed) % self.replicas.len();
        &self.replicas[index].0
    }
}

/// Splits `--gateway a,b,c` into addresses (trimmed, empty parts dropped).
pub fn parse_addresses(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Service<http::Request<Body>> for Failover {
    type Response = http::Response<Body>;
    type Error = FailoverError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each replica's channel is made ready inside `call`, where a failure can move on.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let replicas = Arc::clone(&self.replicas);
        let preferred = Arc::clone(&self.preferred);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let start = preferred.load(Ordering::Relaxed);
            let mut last_error: Option<FailoverError> = None;
            for step in 0..replicas.len() {
                let index = (start + step) % replicas.len();
                let (address, channel) = &replicas[index];
                let mut attempt =
                    http::Request::new(Body::new(http_body_util::Full::new(bytes.clone())));
                *attempt.method_mut() = parts.method.clone();
                *attempt.uri_mut() = parts.uri.clone();
                *attempt.version_mut() = parts.version;
                *attempt.headers_mut() = parts.headers.clone();
                *attempt.extensions_mut() = parts.extensions.clone();
                let mut channel = channel.clone();
                let outcome = match channel.ready().await {
                    Ok(ready) => ready.call(attempt).await,
                    Err(error) => Err(error),
                };
                match outcome {
                    Ok(response) => {
                        preferred.store(index, Ordering::Relaxed);
                        return Ok(response);
                    }
                    Err(error) => {
                        tracing::debug!(%address, %error, "gateway replica unreachable; trying the next");
                        last_error = Some(Box::new(error));
                    }
                }
            }
            Err(last_error.unwrap_or_else(|| "no gateway replica".into()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_on_commas_and_drop_blanks() {
        assert_eq!(
            parse_addresses(" a:1, b:2 ,,c:3 "),
            vec!["a:1".to_owned(), "b:2".to_owned(), "c:3".to_owned()]
        );
        assert!(parse_addresses(" , ").is_empty());
    }
}
