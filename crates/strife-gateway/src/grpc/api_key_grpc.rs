//! `strife.v1.Gateway` over gRPC for callers with an API key instead of a client certificate
//! (`--grpc-api-key-listen ADDR`): server-authenticated TLS with the web certificate
//! (`pki/web.crt`, as the HTTP API), the key in the `authorization: Bearer sk_…` metadata.
//! It is the same [`GatewayGrpc`] over the same [`Service`] as the certificate port, so the
//! role table, the key's scopes, its owner's money, rate limits and every refusal are the
//! service's; what differs is only who the caller is and how the listener is bounded:
//!
//! - only `strife.v1.Gateway` is served (no `Coordinator`, no health or reflection: those
//!   are for the network's own certificates), and any other method is `UNIMPLEMENTED` before
//!   a key is looked at;
//! - connections are capped in all and per client address (no certificate names the caller
//!   before its first request), lower than the HTTP API's since an HTTP/2 connection holds a
//!   partial message per stream: [`GRPC_API_KEY_MAX_CONNECTIONS`], each with at most
//!   [`GRPC_API_KEY_MAX_STREAMS_PER_CONNECTION`] concurrent calls and a small header list
//!   (limits.rs bounds the memory they can hold);
//! - open `WatchPayments` streams are counted per key ([`StreamOwner`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use futures::future::BoxFuture;
use strife_common::layout::Layout;
use strife_common::limits::{
    GRPC_API_KEY_MAX_CONNECTIONS, GRPC_API_KEY_MAX_CONNECTIONS_PER_ADDRESS,
    GRPC_API_KEY_MAX_HEADER_LIST_BYTES, GRPC_API_KEY_MAX_STREAMS_PER_CONNECTION, MAX_MESSAGE_BYTES,
    SERVER_REQUEST_TIMEOUT,
};
use strife_common::net::grpc_limits::GrpcLimitsLayer;
use strife_common::net::listener::{bounded_incoming, ListenerLimits};
use strife_common::net::stream_limits::{StreamLimitsLayer, StreamOwner};
use strife_common::Failure;
use strife_proto::v1::gateway_server::GatewayServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Identity, ServerTlsConfig};

use super::gateway::GatewayGrpc;
use super::request_log::RequestLogLayer;
use crate::request::RequestLogSlot;
use crate::service::Service;
use crate::transport::{Announcement, ServiceHandles, SideTransport, SideTransportPlan};

/// The only service this port serves; every path outside it is `UNIMPLEMENTED`.
const SERVED_PREFIX: &str = "/strife.v1.Gateway/";

/// gRPC with API keys, to bind at `address` when the gateway starts.
pub struct ApiKeyGrpcPlan {
    pub address: SocketAddr,
}

#[async_trait::async_trait]
impl SideTransportPlan for ApiKeyGrpcPlan {
    async fn bind(self: Box<Self>, layout: &Layout) -> anyhow::Result<Box<dyn SideTransport>> {
        let paths = layout.web_identity();
        strife_common::net::tls::check_key_is_private(&paths.key)?;
        let certificate = std::fs::read(&paths.cert).with_context(|| {
            format!(
                "cannot read the web certificate {} (gRPC with API keys uses it); run `strife setup`",
                paths.cert.display()
            )
        })?;
        let key = std::fs::read(&paths.key)
            .with_context(|| format!("cannot read the web key {}", paths.key.display()))?;
        let listener = TcpListener::bind(self.address)
            .await
            .with_context(|| format!("cannot listen for gRPC with API keys on {}", self.address))?;
        let address = listener.local_addr()?;
        Ok(Box::new(ApiKeyGrpc {
            listener,
            address,
            identity: Identity::from_pem(certificate, key),
        }))
    }
}

struct ApiKeyGrpc {
    listener: TcpListener,
    address: SocketAddr,
    identity: Identity,
}

impl SideTransport for ApiKeyGrpc {
    fn announcement(&self) -> Announcement {
        Announcement {
            json_key: "grpc_api_key_address",
            address: self.address,
            text: format!("gRPC with API keys at {}", self.address),
        }
    }

    fn serve(self: Box<Self>, handles: ServiceHandles, mut shutdown: watch::Receiver<bool>) {
        let ApiKeyGrpc {
            listener,
            address,
            identity,
        } = *self;
        let limits = ListenerLimits {
            max_connections: GRPC_API_KEY_MAX_CONNECTIONS,
            max_per_address: Some(GRPC_API_KEY_MAX_CONNECTIONS_PER_ADDRESS),
            first_request_timeout: None,
            evict_stalest_after: None,
            ..handles.listener_limits
        };
        let service = handles.service;
        tokio::spawn(async move {
            let server = tonic::transport::Server::builder()
                .tls_config(ServerTlsConfig::new().identity(identity));
            let server = match server {
                Ok(server) => server,
                Err(error) => {
                    tracing::error!(%error, "gRPC with API keys: the web certificate is not usable");
                    return;
                }
            };
            let gateway = GatewayServer::new(GatewayGrpc::new(Arc::clone(&service)))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .accept_compressed(CompressionEncoding::Gzip);
            // Authentication comes before the stream cap: a stream is counted against its key.
            let layers = tower::ServiceBuilder::new()
                .layer(RequestLogLayer)
                .layer(GrpcLimitsLayer)
                .layer(ApiKeyAuthLayer { service })
                .layer(StreamLimitsLayer::new());
            tracing::info!(%address, "serving gRPC with API keys");
            let served = server
                .timeout(SERVER_REQUEST_TIMEOUT)
                .max_concurrent_streams(GRPC_API_KEY_MAX_STREAMS_PER_CONNECTION)
                .http2_max_header_list_size(GRPC_API_KEY_MAX_HEADER_LIST_BYTES)
                .tcp_nodelay(true)
                .layer(layers)
                .add_service(gateway)
                .serve_with_incoming_shutdown(bounded_incoming(listener, limits), async move {
                    let _ = shutdown.wait_for(|stop| *stop).await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "gRPC with API keys stopped");
            }
        });
    }
}

/// Authenticates every request by its API key and puts the [`crate::request::Caller`] (with
/// the key's grant) where [`GatewayGrpc`] reads it.
#[derive(Clone)]
struct ApiKeyAuthLayer {
    service: Arc<Service>,
}

impl<S> tower::Layer<S> for ApiKeyAuthLayer {
    type Service = ApiKeyAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKeyAuth {
            inner,
            service: Arc::clone(&self.service),
        }
    }
}

#[derive(Clone)]
struct ApiKeyAuth<S> {
    inner: S,
    service: Arc<Service>,
}

/// The key a request presents: `authorization: Bearer sk_…`.
fn presented_key(request: &http::Request<tonic::body::Body>) -> Option<String> {
    request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|key| key.trim().to_owned())
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for ApiKeyAuth<S>
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
        // The clone is not ready; swap it in so the ready one handles this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().to_owned();
        let served =
            path.starts_with(SERVED_PREFIX) && crate::roles::allowed_roles(&path).is_some();
        if !served {
            let failure = Failure::Unimplemented(format!("no method {path}"));
            return Box::pin(async move { Ok(tonic::Status::from(failure).into_http()) });
        }
        let presented = presented_key(&request);
        let log_slot = request.extensions().get::<RequestLogSlot>().cloned();
        let service = Arc::clone(&self.service);
        Box::pin(async move {
            let outcome = match presented {
                Some(presented) => service.caller_of_api_key(&presented).await,
                None => Err(Failure::Unauthenticated),
            };
            if let Some(slot) = log_slot {
                slot.set_caller(outcome.as_ref().ok());
            }
            match outcome {
                Ok(caller) => {
                    if let Some(grant) = &caller.key {
                        let owner = StreamOwner(format!("api-key/{}", grant.key_id));
                        request.extensions_mut().insert(owner);
                    }
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(failure) => Ok(tonic::Status::from(failure).into_http()),
            }
        })
    }
}
