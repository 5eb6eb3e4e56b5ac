//! The HTTPS listener of every web transport a gateway serves beside gRPC (the console, the
//! HTTP API): the certificate `strife setup` issues (`pki/web.crt`), no client certificate,
//! caps of its own (in all and per client address, the stalest connection evicted for a
//! newcomer; [`super::side_http`]), a bounded TLS handshake, then HTTP/1.1 under the
//! transport's [`HttpDeadlines`] (or, for a transport that offers it, HTTP/2 under its
//! [`Http2Limits`]). Each request carries its connection's [`ConnectionHandle`]
//! (the client's address, and how an endless response such as server-sent events marks
//! itself). What it serves is the transport's own router.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::layout::KeyPairPaths;
use crate::limits::TLS_HANDSHAKE_TIMEOUT;
use crate::net::listener::{HttpDeadlines, HttpStream, LimitedStream, ListenerLimits};
use crate::net::side_http::{accept_loop, side_limits};

/// How one web transport is served: its name in logs and errors, its caps and deadlines.
#[derive(Debug, Clone, Copy)]
pub struct HttpsPolicy {
    /// `"web console"`, `"HTTP API"`.
    pub what: &'static str,
    pub max_connections: usize,
    pub max_per_address: usize,
    pub deadlines: HttpDeadlines,
    /// The most hyper buffers of one request's head and body at once (HTTP/1.1).
    pub max_buf_size: usize,
    /// Offer HTTP/2 too (ALPN `h2`), under these bounds; `None`: HTTP/1.1 only.
    pub http2: Option<Http2Limits>,
}

/// The bounds of an HTTP/2 connection of a web transport. Its requests are not held to the
/// HTTP/1.1 [`HttpDeadlines`] (they are multiplexed over one byte stream): the transport
/// bounds each request's body read itself, the listener's idle timeout bounds a connection
/// with nothing in flight.
#[derive(Debug, Clone, Copy)]
pub struct Http2Limits {
    pub max_concurrent_streams: u32,
    pub max_header_list_bytes: u32,
}

/// A bound HTTPS listener, waiting to be served.
pub struct HttpsEndpoint {
    listener: TcpListener,
    address: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    policy: HttpsPolicy,
}

impl HttpsEndpoint {
    /// Binds `address` with the certificate and key at `identity`; every error names the
    /// file or address and what to do.
    pub async fn bind(
        address: SocketAddr,
        identity: &KeyPairPaths,
        policy: HttpsPolicy,
    ) -> anyhow::Result<Self> {
        let what = policy.what;
        crate::net::tls::check_key_is_private(&identity.key)?;
        let chain = CertificateDer::pem_file_iter(&identity.cert)
            .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
            .with_context(|| {
                format!(
                    "cannot read the {what} certificate {}; run `strife setup` (it issues it)",
                    identity.cert.display()
                )
            })?;
        let key = PrivateKeyDer::from_pem_file(&identity.key)
            .with_context(|| format!("cannot read the {what} key {}", identity.key.display()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| format!("the {what} certificate and key do not match"))?;
        config.alpn_protocols = match policy.http2 {
            Some(_) => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            None => vec![b"http/1.1".to_vec()],
        };
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen for the {what} on {address}"))?;
        let address = listener.local_addr()?;
        Ok(HttpsEndpoint {
            listener,
            address,
            tls: Arc::new(config),
            policy,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves `app` until `shutdown` turns true. `server_limits` are the process's own
    /// listener bounds (idle timeout, silent connections), narrowed to this policy's caps.
    pub fn serve<S, B>(
        self,
        app: S,
        server_limits: ListenerLimits,
        shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()>
    where
        S: tower::Service<
                http::Request<Incoming>,
                Response = http::Response<B>,
                Error = Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let policy = self.policy;
        let limits = side_limits(
            server_limits,
            policy.max_connections,
            policy.max_per_address,
        );
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls);
        tracing::info!(address = %self.address, "serving the {} at https://{}/", policy.what, self.address);
        accept_loop(
            policy.what,
            self.listener,
            limits,
            shutdown,
            move |stream| serve_connection(stream, acceptor.clone(), app.clone(), policy),
        )
    }
}

/// One connection: its TLS handshake (bounded), then HTTP/1.1 under the policy's deadlines,
/// or HTTP/2 under its limits when the client chose it.
async fn serve_connection<S, B>(
    stream: LimitedStream<TcpStream>,
    acceptor: tokio_rustls::TlsAcceptor,
    app: S,
    policy: HttpsPolicy,
) where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = stream.handle();
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let stream = match handshake.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%error, "{} TLS handshake failed", policy.what);
            return;
        }
        Err(_) => return,
    };
    let http2 = match policy.http2 {
        Some(limits) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => Some(limits),
        _ => None,
    };
    let handle = connection.clone();
    let app = tower::ServiceExt::map_request(app, move |mut request: http::Request<Incoming>| {
        if let Some(connection) = &handle {
            if http2.is_some() {
                // No HttpStream marks this connection's requests: each one does.
                connection.request_began();
            }
            request.extensions_mut().insert(connection.clone());
        }
        request
    });
    let service = hyper_util::service::TowerToHyperService::new(app);
    if let Some(limits) = http2 {
        let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_concurrent_streams)
            .max_header_list_size(limits.max_header_list_bytes)
            .serve_connection(TokioIo::new(stream), service);
        if let Err(error) = served.await {
            tracing::debug!(%error, "{} HTTP/2 connection ended", policy.what);
        }
        return;
    }
    let stream = HttpStream::new(stream, connection, policy.deadlines);
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout(policy.deadlines))
        .max_buf_size(policy.max_buf_size)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(error) = served.await {
        tracing::debug!(%error, "{} connection ended", policy.what);
    }
}

/// Headers must arrive within the whole request's deadline (the stream enforces the rest).
fn header_read_timeout(deadlines: HttpDeadlines) -> Duration {
    deadlines.request
}
