//! Caps on open streaming calls, as one tower layer around every server (gateway and banks).
//!
//! A streaming call (a health `Watch`, a reflection session, `WatchPayments`) costs the server
//! memory for as long as the client keeps it open, and opening one costs the client nothing
//! after the handshake: an outside campaign held 8,000 health `Watch`es under one user
//! certificate without a password and grew a gateway from 53 to 137 MiB, and the connection
//! caps alone (256 connections × 1,024 streams per certificate) would have allowed ≈ 2.7 GiB.
//!
//! So every call to a method of [`STREAMING_METHODS`] takes a slot of its certificate
//! ([`MAX_STREAMS_PER_PEER`], over all its connections) and one of the server
//! ([`MAX_STREAMS`]) *before* the inner service runs, and holds both until the response body
//! is dropped: when the stream ends, the client goes away or the connection closes. Over a
//! cap the call is answered `RESOURCE_EXHAUSTED` (reason `resource_exhausted`: it may succeed
//! once the caller closes a stream). Unary calls are not counted: each ends by itself within
//! the server's request timeout.
//!
//! The certificate is the connection's verified peer (`connection::connection_identity`), the same
//! identity the per-certificate connection cap counts; a streaming call without one (a
//! revoked certificate) is refused `UNAUTHENTICATED` here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http_body_util::BodyExt;
use tonic::transport::server::TlsConnectInfo;

use crate::limits::{MAX_STREAMS, MAX_STREAMS_PER_PEER};
use crate::net::connection::{connection_identity, ConnectionInfo};
use crate::Failure;

/// Every streaming method a Strife server serves (client-, server- or bidirectional
/// streaming), by path. A unit test checks this table against the file descriptor sets of
/// `strife.v1`, `grpc.health.v1` and both reflection versions, so a new streaming RPC cannot
/// be served uncounted.
pub const STREAMING_METHODS: [&str; 4] = [
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/strife.v1.Gateway/WatchPayments",
];

/// Whether `path` names a streaming method (see [`STREAMING_METHODS`]).
pub fn is_streaming(path: &str) -> bool {
    STREAMING_METHODS.contains(&path)
}

/// The caps of one server.
#[derive(Debug, Clone, Copy)]
pub struct StreamCaps {
    /// Open streams one certificate may hold on this server.
    pub per_peer: usize,
    /// Open streams this server holds, all certificates together.
    pub total: usize,
}

impl Default for StreamCaps {
    fn default() -> Self {
        StreamCaps {
            per_peer: MAX_STREAMS_PER_PEER,
            total: MAX_STREAMS,
        }
    }
}

/// Open streams now: in all, and per certificate (only certificates holding one).
#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_peer: HashMap<String, usize>,
}

/// The counts of one server, shared by every clone of its layer.
#[derive(Debug)]
struct StreamTable {
    caps: StreamCaps,
    open: Mutex<Open>,
}

impl StreamTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // The counts stay consistent across a panic elsewhere (each change is one statement).
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a slot for `peer`, or says which cap is reached.
    fn reserve(self: &Arc<Self>, peer: String) -> Result<StreamSlot, Failure> {
        let mut open = self.lock();
        let mine = open.per_peer.get(&peer).copied().unwrap_or(0);
        if mine >= self.caps.per_peer {
            return Err(Failure::ResourceExhausted(format!(
                "too many open streams with this certificate (at most {}); close one first",
                self.caps.per_peer
            )));
        }
        if open.total >= self.caps.total {
            return Err(Failure::ResourceExhausted(format!(
                "the server holds at most {} open streams; try again later",
                self.caps.total
            )));
        }
        open.total += 1;
        open.per_peer.insert(peer.clone(), mine + 1);
        Ok(StreamSlot {
            table: Arc::clone(self),
            peer,
        })
    }

    fn release(&self, peer: &str) {
        let mut open = self.lock();
        open.total = open.total.saturating_sub(1);
        match open.per_peer.get_mut(peer) {
            Some(mine) if *mine > 1 => *mine -= 1,
            // The last one: forget the certificate, so the map holds only current holders.
            Some(_) => {
                open.per_peer.remove(peer);
            }
            None => {}
        }
    }
}

/// One open stream's slots (its certificate's and the server's), given back when dropped.
#[derive(Debug)]
struct StreamSlot {
    table: Arc<StreamTable>,
    peer: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.table.release(&self.peer);
    }
}

/// The tower layer (see the module doc). Clones share one table: build one per server.
#[derive(Debug, Clone)]
pub struct StreamLimitsLayer {
    table: Arc<StreamTable>,
}

impl StreamLimitsLayer {
    /// A layer with the default caps ([`MAX_STREAMS_PER_PEER`], [`MAX_STREAMS`]).
    pub fn new() -> Self {
        Self::with_caps(StreamCaps::default())
    }

    /// A layer with other caps (tests).
    pub fn with_caps(caps: StreamCaps) -> Self {
        StreamLimitsLayer {
            table: Arc::new(StreamTable {
                caps,
                open: Mutex::new(Open::default()),
            }),
        }
    }

    /// Streams open now through this layer (tests, diagnostics).
    pub fn open_streams(&self) -> usize {
        self.table.lock().total
    }
}

impl Default for StreamLimitsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> tower::Layer<S> for StreamLimitsLayer {
    type Service = StreamLimits<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StreamLimits {
            inner,
            table: Arc::clone(&self.table),
        }
    }
}

/// The service [`StreamLimitsLayer`] wraps around a server.
#[derive(Debug, Clone)]
pub struct StreamLimits<S> {
    inner: S,
    table: Arc<StreamTable>,
}

/// Whom a streaming call on a listener without client certificates is counted against (an
/// API key), put in the request's extensions by that listener's auth layer, which runs first.
#[derive(Debug, Clone)]
pub struct StreamOwner(pub String);

/// The certificate (or [`StreamOwner`]) a streaming call is counted against.
fn peer_key<B>(request: &http::Request<B>) -> Result<String, Failure> {
    if let Some(StreamOwner(owner)) = request.extensions().get::<StreamOwner>() {
        return Ok(owner.clone());
    }
    let info = request
        .extensions()
        .get::<TlsConnectInfo<ConnectionInfo>>()
        .ok_or(Failure::Unauthenticated)?;
    connection_identity(info).map(|peer| peer.to_string())
}

impl<S, B> tower::Service<http::Request<B>> for StreamLimits<S>
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
        // The clone is not ready; swap it in so the ready one handles this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if !is_streaming(request.uri().path()) {
            return Box::pin(inner.call(request));
        }
        let slot = match peer_key(&request).and_then(|peer| self.table.reserve(peer)) {
            Ok(slot) => slot,
            Err(failure) => {
                return Box::pin(async move { Ok(tonic::Status::from(failure).into_http()) })
            }
        };
        Box::pin(async move {
            // A call dropped before it answers drops `slot` with this future.
            let response = inner.call(request).await?;
            // The slot lives in the body: it goes when the stream ends or is dropped.
            Ok(response.map(|body| {
                tonic::body::Body::new(body.map_frame(move |frame| {
                    let _held = &slot;
                    frame
                }))
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Message;
    use tonic::Code;
    use tonic_types::StatusExt;

    use super::*;

    /// Every streaming method in `sets` (encoded `FileDescriptorSet`s), as paths.
    fn streaming_paths(sets: &[&[u8]]) -> BTreeSet<String> {
        let mut paths = BTreeSet::new();
        for set in sets {
            let set = prost_types::FileDescriptorSet::decode(*set).unwrap();
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        if method.client_streaming() || method.server_streaming() {
                            paths.insert(format!(
                                "/{}.{}/{}",
                                file.package(),
                                service.name(),
                                method.name()
                            ));
                        }
                    }
                }
            }
        }
        paths
    }

    #[test]
    fn the_table_names_exactly_the_streaming_methods_served() {
        let served = streaming_paths(&[
            strife_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]);
        let table: BTreeSet<String> = STREAMING_METHODS.iter().map(|p| p.to_string()).collect();
        assert_eq!(table, served);
        assert!(is_streaming("/grpc.health.v1.Health/Watch"));
        assert!(!is_streaming("/grpc.health.v1.Health/Check"));
        assert!(!is_streaming("/strife.v1.Gateway/Pay"));
    }

    fn table(per_peer: usize, total: usize) -> Arc<StreamTable> {
        Arc::new(StreamTable {
            caps: StreamCaps { per_peer, total },
            open: Mutex::new(Open::default()),
        })
    }

    fn refusal(result: Result<StreamSlot, Failure>) -> String {
        match result {
            Err(failure @ Failure::ResourceExhausted(_)) => {
                let status = tonic::Status::from(failure);
                assert_eq!(status.code(), Code::ResourceExhausted);
                let reason = status.get_details_error_info().unwrap().reason;
                assert_eq!(reason, "resource_exhausted");
                status.message().to_owned()
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_certificate_holds_at_most_its_share_and_a_dropped_slot_frees_it() {
        let streams = table(3, 100);
        let mine: Vec<StreamSlot> = (0..3)
            .map(|_| streams.reserve("strife-user/alice".into()).unwrap())
            .collect();
        let message = refusal(streams.reserve("strife-user/alice".into()));
        assert!(
            message.contains("this certificate (at most 3)"),
            "{message}"
        );
        let theirs = streams.reserve("strife-user/bob".into()).unwrap();
        drop(mine);
        assert_eq!(streams.lock().total, 1);
        assert!(!streams.lock().per_peer.contains_key("strife-user/alice"));
        let _again = streams.reserve("strife-user/alice".into()).unwrap();
        drop(theirs);
        assert_eq!(streams.lock().per_peer.len(), 1);
    }

    #[test]
    fn the_server_holds_at_most_its_total_whoever_asks() {
        let streams = table(2, 5);
        let held: Vec<StreamSlot> = (0..5)
            .map(|index| {
                streams
                    .reserve(format!("strife-user/u{}", index / 2))
                    .unwrap()
            })
            .collect();
        let message = refusal(streams.reserve("strife-user/someone-new".into()));
        assert!(message.contains("at most 5 open streams"), "{message}");
        drop(held);
        assert_eq!(streams.lock().total, 0);
        assert!(streams.lock().per_peer.is_empty());
        assert!(streams.reserve("strife-user/someone-new".into()).is_ok());
    }

    /// A stand-in server that counts the calls it gets.
    #[derive(Clone)]
    struct Counting {
        calls: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl tower::Service<http::Request<()>> for Counting {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move { Ok(http::Response::new(tonic::body::Body::default())) })
        }
    }

    /// A request on `path` from a connection without TLS information.
    fn request(path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).body(()).unwrap()
    }

    #[tokio::test]
    async fn unary_calls_pass_and_streams_without_a_verified_peer_are_refused() {
        use tower::{Layer, ServiceExt};
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let layer = StreamLimitsLayer::with_caps(StreamCaps {
            per_peer: 1,
            total: 1,
        });
        let service = layer.layer(Counting {
            calls: Arc::clone(&calls),
        });
        let unary = service
            .clone()
            .oneshot(request("/grpc.health.v1.Health/Check"))
            .await
            .unwrap();
        assert!(unary.headers().get("grpc-status").is_none());
        assert_eq!(layer.open_streams(), 0, "unary calls are not counted");
        let refused = service
            .oneshot(request("/grpc.health.v1.Health/Watch"))
            .await
            .unwrap();
        let status = tonic::Status::from_header_map(refused.headers()).unwrap();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
