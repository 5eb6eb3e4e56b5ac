//! gRPC's own status table for requests that are too big, as one tower layer around every
//! server (gateway and banks), outermost:
//!
//! - metadata over [`MAX_METADATA_BYTES`] is answered `RESOURCE_EXHAUSTED` before anything
//!   else runs (HTTP/2 itself accepts up to [`MAX_HEADER_LIST_BYTES`], so a client gets a gRPC
//!   status instead of a bare HTTP 431 for anything in between);
//! - a message over the server's decoding limit, which tonic's decoder reports as
//!   `OUT_OF_RANGE`, leaves as `RESOURCE_EXHAUSTED` (gRPC's code for "too large", and what a
//!   foreign client expects). Strife's own handlers never answer `OUT_OF_RANGE`.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::HeaderValue;
use tonic::Code;

#[cfg(doc)]
use crate::limits::MAX_HEADER_LIST_BYTES;
use crate::limits::MAX_METADATA_BYTES;

/// The tower layer (see the module doc).
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcLimitsLayer;

impl<S> tower::Layer<S> for GrpcLimitsLayer {
    type Service = GrpcLimits<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcLimits { inner }
    }
}

/// The service [`GrpcLimitsLayer`] wraps around a server.
#[derive(Debug, Clone)]
pub struct GrpcLimits<S> {
    inner: S,
}

fn metadata_bytes<B>(request: &http::Request<B>) -> usize {
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

/// `OUT_OF_RANGE` from tonic's codec (message too large) → `RESOURCE_EXHAUSTED`, in a
/// trailers-only response (where an early failure's status lives).
fn fix_size_status<B>(response: &mut http::Response<B>) {
    let headers = response.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        == Some(Code::OutOfRange as i32);
    let too_large = headers
        .get("grpc-message")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|message| {
            message.contains("message%20length%20too%20large")
                || message.contains("message length too large")
        });
    if out_of_range && too_large {
        headers.insert(
            "grpc-status",
            HeaderValue::from(Code::ResourceExhausted as i32),
        );
    }
}

impl<S, B> tower::Service<http::Request<B>> for GrpcLimits<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if metadata_bytes(&request) > MAX_METADATA_BYTES {
            let status = tonic::Status::resource_exhausted(format!(
                "request metadata is larger than {MAX_METADATA_BYTES} bytes"
            ));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        // The clone is not ready; swap it in so the ready one handles this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut response = inner.call(request).await?;
            fix_size_status(&mut response);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_decoders_size_error_is_rewritten() {
        let too_large = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 2 bytes, the limit is: 1 bytes",
        );
        let mut response = too_large.into_http::<tonic::body::Body>();
        fix_size_status(&mut response);
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);

        let other = tonic::Status::out_of_range("page 9 of 3");
        let mut response = other.into_http::<tonic::body::Body>();
        fix_size_status(&mut response);
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::OutOfRange);
    }
}
