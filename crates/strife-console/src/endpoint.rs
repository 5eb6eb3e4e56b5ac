//! The console's HTTPS listener: the shared web listener of `strife_common::net::https_side`
//! under the console's own caps (per client address too) and deadlines. A [`SideTransport`]
//! of the gateway process.

use std::net::SocketAddr;
use std::sync::Arc;

use strife_common::limits::{
    CONSOLE_MAX_CONNECTIONS, CONSOLE_MAX_CONNECTIONS_PER_ADDRESS, CONSOLE_REQUEST_TIMEOUT,
    HTTP_IDLE_TIMEOUT, HTTP_RESPONSE_TIMEOUT,
};
use strife_common::net::https_side::{HttpsEndpoint, HttpsPolicy};
use strife_common::net::listener::HttpDeadlines;
use strife_gateway::transport::{Announcement, ServiceHandles, SideTransport, SideTransportPlan};
use tokio::sync::watch;

use crate::routes::{router, MAX_BODY_BYTES};
use crate::state::Console;

/// The console's caps and deadlines: a whole request (headers and body) within 10 s, each
/// answer (but the event stream) taken within 10 s, at most 30 s between requests.
const POLICY: HttpsPolicy = HttpsPolicy {
    what: "web console",
    max_connections: CONSOLE_MAX_CONNECTIONS,
    max_per_address: CONSOLE_MAX_CONNECTIONS_PER_ADDRESS,
    deadlines: HttpDeadlines {
        request: CONSOLE_REQUEST_TIMEOUT,
        response: HTTP_RESPONSE_TIMEOUT,
        idle: HTTP_IDLE_TIMEOUT,
    },
    max_buf_size: MAX_BODY_BYTES * 4,
    http2: None,
};

/// The console's HTTPS listener, bound before the gateway announces itself.
pub struct WebEndpoint(HttpsEndpoint);

impl WebEndpoint {
    /// Binds `address` and loads the console certificate (`strife setup` issues it).
    pub async fn bind(
        address: SocketAddr,
        identity: &strife_common::layout::KeyPairPaths,
    ) -> anyhow::Result<Self> {
        Ok(WebEndpoint(
            HttpsEndpoint::bind(address, identity, POLICY).await?,
        ))
    }

    pub fn address(&self) -> SocketAddr {
        self.0.address()
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
            address: self.address(),
            text: format!("console at https://{}/", self.address()),
        }
    }

    fn serve(self: Box<Self>, handles: ServiceHandles, shutdown: watch::Receiver<bool>) {
        let console = Console::new(handles.service, handles.authenticator);
        let app = router(Arc::new(console));
        // The accept loop runs until shutdown; nothing waits on its handle.
        drop(self.0.serve(app, handles.listener_limits, shutdown));
    }
}
