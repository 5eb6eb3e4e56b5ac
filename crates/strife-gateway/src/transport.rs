//! Transports the gateway process serves beside gRPC — the web console (`strife-console`),
//! and the HTTP API next — each its own crate over the same [`Service`]. The `strife` binary
//! hands [`crate::run`] a [`SideTransportPlan`] per transport; the gateway binds each where it
//! bound the console before (after its own lock, TLS and store checks, before its ready line,
//! so a bad address or certificate stops the start), serves them once the service is up and
//! names them in its ready line. The gateway knows no transport crate; they know the service.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use strife_common::layout::Layout;
use strife_common::net::listener::ListenerLimits;
use tokio::sync::watch;

use crate::auth::Authenticator;
use crate::service::Service;

/// What a side transport gets to serve with.
pub struct ServiceHandles {
    /// The one service every transport calls.
    pub service: Arc<Service>,
    /// Password checks and lockout, for transports whose users log in without a certificate.
    pub authenticator: Arc<Authenticator>,
    /// The gateway's own listener bounds (idle timeout, silent connections), which a
    /// transport narrows to its own caps.
    pub listener_limits: ListenerLimits,
}

/// How the ready line names a side transport.
pub struct Announcement {
    /// Its key in the JSON ready line (`web_address`).
    pub json_key: &'static str,
    pub address: SocketAddr,
    /// Its words in the plain ready line (`console at https://127.0.0.1:8443/`).
    pub text: String,
}

/// A transport to serve: what to bind, given the data dir (its certificate lives there).
#[async_trait]
pub trait SideTransportPlan: Send {
    async fn bind(self: Box<Self>, layout: &Layout) -> anyhow::Result<Box<dyn SideTransport>>;
}

/// A bound transport, waiting to be served.
pub trait SideTransport: Send {
    fn announcement(&self) -> Announcement;

    /// Serves until `shutdown` turns true.
    fn serve(self: Box<Self>, handles: ServiceHandles, shutdown: watch::Receiver<bool>);
}
