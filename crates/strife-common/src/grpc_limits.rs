//! gRPC's own status table for requests that are too big or go nowhere, as one tower layer
//! around every server (gateway and banks), outermost:
//!
//! - metadata over [`MAX_METADATA_BYTES`] is answered `RESOURCE_EXHAUSTED` (reason
//!   `too_large`) before anything else runs (HTTP/2 itself accepts up to
//!   [`MAX_HEADER_LIST_BYTES`], so a client gets a gRPC status instead of a bare HTTP 431 for
//!   anything in between);
//! - a message over the server's decoding limit, which tonic's decoder reports as
//!   `OUT_OF_RANGE`, leaves as `RESOURCE_EXHAUSTED` (reason `too_large`: gRPC's code for "too
//!   large", and what a foreign client expects). Strife's own handlers never answer
//!   `OUT_OF_RANGE`;
//! - tonic's own `UNIMPLEMENTED` for a method or service the server does not have leaves
//!   with Strife's details (`ErrorInfo` reason `unimplemented`), like every other refusal.
//!
//! The statuses themselves are built by [`crate::failure`], like every other.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::Code;

#[cfg(doc)]
use crate::limits::MAX_HEADER_LIST_BYTES;
use crate::limits::{MAX_MESSAGE_BYTES, MAX_METADATA_BYTES};
use crate::Failure;

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

/// The `grpc-status` of a trailers-only response (where an early failure's status lives),
/// unless the response already carries Strife's details.
fn bare_status<B>(response: &http::Response<B>) -> Option<Code> {
    let headers = response.headers();
    if headers.contains_key("grpc-status-details-bin") {
        return None;
    }
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map(Code::from_i32)
}

/// A status tonic made itself → the same class of refusal, as Strife states it:
/// `OUT_OF_RANGE` from tonic's codec (message too large) → `RESOURCE_EXHAUSTED`; a bare
/// `UNIMPLEMENTED` (no such method or service) → with its `ErrorInfo`. `path` is the request's.
fn fix_tonic_status(response: &mut http::Response<tonic::body::Body>, path: &str) {
    let failure = match bare_status(response) {
        Some(Code::OutOfRange) => {
            let too_large = response
                .headers()
                .get("grpc-message")
                .and_then(|value| value.to_str().ok())
                .is_some_and(|message| {
                    message.contains("message%20length%20too%20large")
                        || message.contains("message length too large")
                });
            if !too_large {
                return;
            }
            Failure::TooLarge(format!(
                "request message is larger than {MAX_MESSAGE_BYTES} bytes"
            ))
        }
        Some(Code::Unimplemented) => Failure::Unimplemented(format!("no method {path}")),
        _ => return,
    };
    *response = tonic::Status::from(failure).into_http();
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
            let status = tonic::Status::from(Failure::TooLarge(format!(
                "request metadata is larger than {MAX_METADATA_BYTES} bytes"
            )));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        // Path only (never the query): it is echoed in an UNIMPLEMENTED message.
        let path = request.uri().path().to_owned();
        // The clone is not ready; swap it in so the ready one handles this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut response = inner.call(request).await?;
            fix_tonic_status(&mut response, &path);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tonic_types::StatusExt;

    fn fixed(status: tonic::Status) -> tonic::Status {
        let mut response = status.into_http::<tonic::body::Body>();
        fix_tonic_status(&mut response, "/strife.v1.Bank/Nothing");
        tonic::Status::from_header_map(response.headers()).unwrap()
    }

    #[test]
    fn only_the_decoders_size_error_is_rewritten() {
        let status = fixed(tonic::Status::out_of_range(
            "Error, decoded message length too large: found 2 bytes, the limit is: 1 bytes",
        ));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.get_details_error_info().unwrap().reason, "too_large");

        let status = fixed(tonic::Status::out_of_range("page 9 of 3"));
        assert_eq!(status.code(), Code::OutOfRange);
    }

    #[test]
    fn tonics_bare_unimplemented_gets_strifes_details() {
        let status = fixed(tonic::Status::unimplemented(""));
        assert_eq!(status.code(), Code::Unimplemented);
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "unimplemented"
        );
        assert!(status.message().contains("/strife.v1.Bank/Nothing"));
        // A status that already has Strife's details is left alone.
        let ours = tonic::Status::from(Failure::Unimplemented("no method /x/Y".into()));
        assert_eq!(fixed(ours).message(), "no method /x/Y");
    }
}
