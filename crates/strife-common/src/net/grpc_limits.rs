//! gRPC's own status table for requests that are too big, malformed or go nowhere, as one
//! tower layer around every server (gateway and banks), outermost:
//!
//! - metadata over [`MAX_METADATA_BYTES`] is answered `RESOURCE_EXHAUSTED` (reason
//!   `too_large`) before anything else runs (HTTP/2 itself accepts up to
//!   [`MAX_HEADER_LIST_BYTES`], so a client gets a gRPC status instead of a bare HTTP 431 or a
//!   GOAWAY for anything up to [`ANSWERED_METADATA_BYTES`]);
//! - a message over the server's decoding limit, which tonic's decoder reports as
//!   `OUT_OF_RANGE`, leaves as `RESOURCE_EXHAUSTED` (reason `too_large`: gRPC's code for "too
//!   large", and what a foreign client expects). Strife's own handlers never answer
//!   `OUT_OF_RANGE`. So does a compressed message that decompresses past that limit (tonic
//!   stops decompressing there and says bare `RESOURCE_EXHAUSTED`);
//! - a request body tonic cannot read — a corrupt compressed message, a compressed-flag
//!   without an encoding, a truncated frame, bytes that are no protobuf message — is the
//!   client's mistake: `INVALID_ARGUMENT` (tonic says `INTERNAL`, which must never answer a
//!   client's mistake: clients treat it as an unknown outcome);
//! - tonic's own `UNIMPLEMENTED` leaves with Strife's details (`ErrorInfo` reason
//!   `unimplemented`), like every other refusal: for a method or service the server does not
//!   have (tonic's bare one, no message) as "no method …"; for a `grpc-encoding` the server
//!   does not accept with tonic's own message and its `grpc-accept-encoding` header, which
//!   tells the client what to send instead;
//! - every response advertises the encodings servers accept ([`ACCEPTED_ENCODINGS`], gRPC's
//!   `grpc-accept-encoding`), which tonic sends only with that refusal.
//!
//! The statuses themselves are built by [`crate::failure`], like every other.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::Code;

#[cfg(doc)]
use crate::limits::{ANSWERED_METADATA_BYTES, MAX_HEADER_LIST_BYTES};
use crate::limits::{MAX_MESSAGE_BYTES, MAX_METADATA_BYTES};
use crate::Failure;

/// The `grpc-accept-encoding` every response carries: what every service of both servers is
/// built to accept (`accept_compressed(Gzip)`), and `identity` (no compression).
pub const ACCEPTED_ENCODINGS: &str = "gzip,identity";

/// gRPC's header naming the encodings a peer accepts.
const ACCEPT_ENCODING_HEADER: &str = "grpc-accept-encoding";

/// How tonic's decoder begins the messages of its errors about a request body it could not
/// read (tonic 0.14: `codec/decode.rs`; tonic-prost's decode error is prost's
/// `DecodeError`). Matched on the message because tonic gives these no other mark.
const UNREADABLE_BODY_MESSAGES: [&str; 5] = [
    "Error decompressing",
    "protocol error: received message with",
    "Unexpected EOF decoding stream",
    "Missing request message",
    "failed to decode Protobuf message",
];

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

/// The status of a trailers-only response (where an early failure's status lives), unless
/// the response already carries Strife's details.
fn bare_status<B>(response: &http::Response<B>) -> Option<tonic::Status> {
    let headers = response.headers();
    if headers.contains_key("grpc-status-details-bin") {
        return None;
    }
    tonic::Status::from_header_map(headers)
}

/// A status tonic made itself → the same class of refusal, as Strife states it (see the
/// module doc). `path` is the request's.
fn fix_tonic_status(response: &mut http::Response<tonic::body::Body>, path: &str) {
    let Some(status) = bare_status(response) else {
        return;
    };
    let message = status.message();
    let mut keep_accept_encoding = false;
    let failure = match status.code() {
        Code::OutOfRange if message.contains("message length too large") => Failure::TooLarge(
            format!("request message is larger than {MAX_MESSAGE_BYTES} bytes"),
        ),
        Code::ResourceExhausted if message.starts_with("Error decompressing") => Failure::TooLarge(
            format!("request message is larger than {MAX_MESSAGE_BYTES} bytes once decompressed"),
        ),
        Code::Internal
            if UNREADABLE_BODY_MESSAGES
                .iter()
                .any(|start| message.starts_with(start)) =>
        {
            // tonic's text says what was wrong with the bytes; it names nothing of ours.
            Failure::InvalidArgument(format!("the request body cannot be read: {message}"))
        }
        // tonic's router (and a generated service) answers an unknown path with no message.
        Code::Unimplemented if message.is_empty() => {
            Failure::Unimplemented(format!("no method {path}"))
        }
        // Anything else tonic refuses as UNIMPLEMENTED is about the request (an encoding it
        // does not accept): keep its words, and the header that says what it does accept.
        Code::Unimplemented => {
            keep_accept_encoding = true;
            Failure::Unimplemented(message.to_owned())
        }
        _ => return,
    };
    let accept_encoding = response.headers().get(ACCEPT_ENCODING_HEADER).cloned();
    *response = tonic::Status::from(failure).into_http();
    if let (true, Some(value)) = (keep_accept_encoding, accept_encoding) {
        response.headers_mut().insert(ACCEPT_ENCODING_HEADER, value);
    }
}

/// Adds [`ACCEPTED_ENCODINGS`] to a response that does not say already.
fn advertise_encodings<B>(response: &mut http::Response<B>) {
    response
        .headers_mut()
        .entry(ACCEPT_ENCODING_HEADER)
        .or_insert(http::HeaderValue::from_static(ACCEPTED_ENCODINGS));
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
            let mut response = status.into_http();
            advertise_encodings(&mut response);
            return Box::pin(async move { Ok(response) });
        }
        // Path only (never the query): it is echoed in an UNIMPLEMENTED message.
        let path = request.uri().path().to_owned();
        // The clone is not ready; swap it in so the ready one handles this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut response = inner.call(request).await?;
            fix_tonic_status(&mut response, &path);
            advertise_encodings(&mut response);
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
    fn a_message_too_large_once_decompressed_is_too_large() {
        let status = fixed(tonic::Status::resource_exhausted(
            "Error decompressing: size limit, of 65536 bytes, exceeded while decompressing message",
        ));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.get_details_error_info().unwrap().reason, "too_large");
        assert!(status.message().contains("once decompressed"), "{status:?}");
        // A resource_exhausted of tonic's that is not about decompressing is left alone.
        let status = fixed(tonic::Status::resource_exhausted("something else"));
        assert_eq!(status.message(), "something else");
    }

    #[test]
    fn a_body_tonic_cannot_read_is_the_clients_mistake_not_internal() {
        for message in [
            "Error decompressing: invalid gzip header, while sending request",
            "protocol error: received message with compressed-flag but no grpc-encoding was specified",
            "protocol error: received message with invalid compression flag: 7 (valid flags are 0 and 1), while sending request",
            "Unexpected EOF decoding stream.",
            "Missing request message.",
            "failed to decode Protobuf message: invalid wire type value: 7",
        ] {
            let status = fixed(tonic::Status::internal(message));
            assert_eq!(status.code(), Code::InvalidArgument, "{message}");
            assert_eq!(
                status.get_details_error_info().unwrap().reason,
                "invalid_argument"
            );
            assert!(status.message().contains(message), "{status:?}");
        }
        // Any other INTERNAL of tonic's stays what it is.
        let status = fixed(tonic::Status::internal("h2 protocol error"));
        assert_eq!(status.code(), Code::Internal);
    }

    #[test]
    fn an_unaccepted_encoding_keeps_tonics_words_and_the_accepted_list() {
        let mut refusal = tonic::Status::unimplemented(
            "Content is compressed with `deflate` which isn't supported",
        );
        refusal.metadata_mut().insert(
            "grpc-accept-encoding",
            tonic::metadata::MetadataValue::from_static("gzip,identity"),
        );
        let mut response = refusal.into_http::<tonic::body::Body>();
        fix_tonic_status(&mut response, "/strife.v1.Gateway/GetBalances");
        assert_eq!(response.headers()["grpc-accept-encoding"], "gzip,identity");
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::Unimplemented);
        assert_eq!(
            status.message(),
            "Content is compressed with `deflate` which isn't supported"
        );
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "unimplemented"
        );
    }

    #[test]
    fn every_response_advertises_the_accepted_encodings() {
        let mut response = http::Response::new(());
        advertise_encodings(&mut response);
        assert_eq!(
            response.headers()["grpc-accept-encoding"],
            ACCEPTED_ENCODINGS
        );
        // One that says already keeps its own.
        let mut response = http::Response::new(());
        response
            .headers_mut()
            .insert("grpc-accept-encoding", "identity".parse().unwrap());
        advertise_encodings(&mut response);
        assert_eq!(response.headers()["grpc-accept-encoding"], "identity");
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
