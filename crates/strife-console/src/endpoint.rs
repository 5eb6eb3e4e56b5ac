//! The console's HTTPS listener: its own caps (per client address too), the stalest
//! connection evicted for a newcomer when full, every connection held to the HTTP deadlines
//! of [`HttpStream`]; each request carries its client's address (`ConnectInfo`) and its
//! connection's handle. A [`SideTransport`] of the gateway process.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use strife_common::layout::KeyPairPaths;
use strife_common::limits::{
    CONSOLE_MAX_CONNECTIONS, CONSOLE_MAX_CONNECTIONS_PER_ADDRESS, CONSOLE_REQUEST_TIMEOUT,
    HTTP_IDLE_TIMEOUT, HTTP_RESPONSE_TIMEOUT, TLS_HANDSHAKE_TIMEOUT,
};
use strife_common::net::listener::{HttpDeadlines, HttpStream, LimitedStream, ListenerLimits};
use strife_common::net::side_http::{accept_loop, side_limits};
use strife_gateway::transport::{Announcement, ServiceHandles, SideTransport, SideTransportPlan};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::routes::{router, MAX_BODY_BYTES};
use crate::state::Console;

/// The deadlines of a console connection: a whole request (headers and body) within 10 s,
/// each answer (but the event stream) taken within 10 s, at most 30 s between requests.
const HTTP_DEADLINES: HttpDeadlines = HttpDeadlines {
    request: CONSOLE_REQUEST_TIMEOUT,
    response: HTTP_RESPONSE_TIMEOUT,
    idle: HTTP_IDLE_TIMEOUT,
};

/// The console's HTTPS listener, bound before the gateway announces itself.
pub struct WebEndpoint {
    listener: TcpListener,
    address: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
}

impl WebEndpoint {
    /// Binds `address` and loads the console certificate (`strife setup` issues it).
    pub async fn bind(address: SocketAddr, identity: &KeyPairPaths) -> anyhow::Result<Self> {
        strife_common::net::tls::check_key_is_private(&identity.key)?;
        let chain = CertificateDer::pem_file_iter(&identity.cert)
            .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
            .with_context(|| {
                format!(
                    "cannot read the console certificate {}; run `strife setup` (it issues it)",
                    identity.cert.display()
                )
            })?;
        let key = PrivateKeyDer::from_pem_file(&identity.key)
            .with_context(|| format!("cannot read the console key {}", identity.key.display()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the console certificate and key do not match")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen for the web console on {address}"))?;
        let address = listener.local_addr()?;
        Ok(WebEndpoint {
            listener,
            address,
            tls: Arc::new(config),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves `console` until `shutdown` turns true.
    fn serve_console(
        self,
        console: Arc<Console>,
        server_limits: ListenerLimits,
        shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        // Its own caps, apart from the gRPC port's and the metrics endpoint's, so an attack on
        // one leaves the others alone; shared fairly between client addresses, and a full
        // console makes room for a newcomer by closing its stalest connection.
        let limits = side_limits(
            server_limits,
            CONSOLE_MAX_CONNECTIONS,
            CONSOLE_MAX_CONNECTIONS_PER_ADDRESS,
        );
        let app = router(console);
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls);
        tracing::info!(address = %self.address, "serving the web console at https://{}/", self.address);
        accept_loop("console", self.listener, limits, shutdown, move |stream| {
            serve_connection(stream, acceptor.clone(), app.clone())
        })
    }
}

/// The console to serve at an address: bound by the gateway when it starts.
pub struct ConsolePlan {
    pub address: SocketAddr,
}

#[async_trait::async_trait]
impl SideTransportPlan for ConsolePlan {
    async fn bind(
        self: Box<Self>,
        layout: &strife_common::layout::Layout,
    ) -> anyhow::Result<Box<dyn SideTransport>> {
        let endpoint = WebEndpoint::bind(self.address, &layout.web_identity()).await?;
        Ok(Box::new(endpoint))
    }
}

impl SideTransport for WebEndpoint {
    fn announcement(&self) -> Announcement {
        Announcement {
            json_key: "web_address",
            address: self.address,
            text: format!("console at https://{}/", self.address),
        }
    }

    fn serve(self: Box<Self>, handles: ServiceHandles, shutdown: watch::Receiver<bool>) {
        let console = Console::new(handles.service, handles.authenticator);
        // The accept loop runs until shutdown; nothing waits on its handle.
        drop((*self).serve_console(Arc::new(console), handles.listener_limits, shutdown));
    }
}

/// One console connection: its TLS handshake (bounded), then HTTP/1.1 under the console's
/// deadlines. Every request carries its client's address (the login throttle counts by it)
/// and the connection's handle (the event stream marks its response as one without an end).
async fn serve_connection(
    stream: LimitedStream<TcpStream>,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
) {
    let connection = stream.handle();
    let client = connection.as_ref().map(|handle| handle.peer_address());
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let stream = match handshake.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%error, "console TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let stream = HttpStream::new(stream, connection.clone(), HTTP_DEADLINES);
    let app = tower::ServiceExt::map_request(
        app,
        move |mut request: axum::http::Request<hyper::body::Incoming>| {
            if let Some(client) = client {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(client));
            }
            if let Some(connection) = &connection {
                request.extensions_mut().insert(connection.clone());
            }
            request
        },
    );
    let service = hyper_util::service::TowerToHyperService::new(app);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(CONSOLE_REQUEST_TIMEOUT)
        .max_buf_size(MAX_BODY_BYTES * 4)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(error) = connection.await {
        tracing::debug!(%error, "console connection ended");
    }
}
