//! Request logging as one tower layer: exactly one line per request with the method, the
//! caller (certificate subject and user name), payment id and amount where the handler
//! recorded them, the gRPC status, the latency and the error. Credentials are never read
//! here, so they cannot be logged.

use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;

use crate::request::RequestLogSlot;

/// The logging layer; wrap it outside [`crate::auth::AuthLayer`] so refused requests are
/// logged too.
#[derive(Clone, Default)]
pub struct RequestLogLayer;

impl<S> tower::Layer<S> for RequestLogLayer {
    type Service = RequestLogService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLogService { inner }
    }
}

/// See [`RequestLogLayer`].
#[derive(Clone)]
pub struct RequestLogService<S> {
    inner: S,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for RequestLogService<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let slot = RequestLogSlot::default();
        request.extensions_mut().insert(slot.clone());
        let method = request.uri().path().to_owned();
        let started = Instant::now();
        Box::pin(async move {
            let response = inner.call(request).await;
            let latency_us = started.elapsed().as_micros() as u64;
            let fields = slot.snapshot();
            let (code, message) = match &response {
                Ok(response) => {
                    let headers = response.headers();
                    let code = headers
                        .get("grpc-status")
                        .and_then(|value| value.to_str().ok())
                        .and_then(|value| value.parse::<i32>().ok())
                        .unwrap_or(0);
                    let message = headers
                        .get("grpc-message")
                        .and_then(|value| value.to_str().ok())
                        .map(percent_decode);
                    (tonic::Code::from_i32(code), message)
                }
                Err(_) => (tonic::Code::Unknown, Some("transport error".to_owned())),
            };
            tracing::info!(
                target: "strife::request",
                method,
                peer = fields.peer.as_deref().unwrap_or("-"),
                user = fields.username.as_deref().unwrap_or("-"),
                // An API key's caller (the port of gRPC with API keys): its id, never the key.
                key_id = fields.key_id.as_deref().unwrap_or("-"),
                payment_id = fields.payment_id.as_deref().unwrap_or("-"),
                amount = fields.amount.as_deref().unwrap_or("-"),
                replayed = fields.replayed,
                status = ?code,
                latency_us,
                error = message.as_deref().unwrap_or(""),
                "request"
            );
            response
        })
    }
}

/// grpc-message is percent-encoded on the wire; decode the common escapes for the log.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&text[index + 1..index + 3], 16) {
                decoded.push(byte);
                index += 3;
                continue;
            }
        }
        decoded.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}
