//! The HTTP API's HTTPS listener: the shared web listener of `strife_common::net::https_side`
//! under the API's own caps and deadlines. A [`SideTransport`] of the gateway process.

use std::net::SocketAddr;

use strife_common::layout::Layout;
use strife_common::limits::{
    HTTP_API_MAX_CONNECTIONS, HTTP_API_MAX_CONNECTIONS_PER_ADDRESS, HTTP_API_MAX_HEADER_LIST_BYTES,
    HTTP_API_MAX_STREAMS_PER_CONNECTION, HTTP_API_REQUEST_TIMEOUT, HTTP_API_RESPONSE_TIMEOUT,
    HTTP_IDLE_TIMEOUT,
};
use strife_common::net::https_side::{Http2Limits, HttpsEndpoint, HttpsPolicy};
use strife_common::net::listener::HttpDeadlines;
use strife_gateway::transport::{Announcement, ServiceHandles, SideTransport, SideTransportPlan};
use tokio::sync::watch;

use crate::extract::{Api, MAX_BODY_BYTES};
use crate::routes::router;

/// The API's caps and deadlines: a whole request within 10 s, each answer written within
/// 15 s of its first byte (a long poll waits at most 8 s), at most 30 s between requests
/// (HTTP/1.1); over HTTP/2, 32 requests at once per connection, each body read within 10 s
/// (`routes::read_whole_body`).
const POLICY: HttpsPolicy = HttpsPolicy {
    what: "HTTP API",
    max_connections: HTTP_API_MAX_CONNECTIONS,
    max_per_address: HTTP_API_MAX_CONNECTIONS_PER_ADDRESS,
    deadlines: HttpDeadlines {
        request: HTTP_API_REQUEST_TIMEOUT,
        response: HTTP_API_RESPONSE_TIMEOUT,
        idle: HTTP_IDLE_TIMEOUT,
    },
    max_buf_size: MAX_BODY_BYTES * 4,
    http2: Some(Http2Limits {
        max_concurrent_streams: HTTP_API_MAX_STREAMS_PER_CONNECTION,
        max_header_list_bytes: HTTP_API_MAX_HEADER_LIST_BYTES,
    }),
};

/// The HTTP API to serve at an address: bound by the gateway when it starts.
pub struct HttpApiPlan {
    pub address: SocketAddr,
}

#[async_trait::async_trait]
impl SideTransportPlan for HttpApiPlan {
    async fn bind(self: Box<Self>, layout: &Layout) -> anyhow::Result<Box<dyn SideTransport>> {
        let endpoint = HttpsEndpoint::bind(self.address, &layout.web_identity(), POLICY).await?;
        Ok(Box::new(HttpApiEndpoint(endpoint)))
    }
}

struct HttpApiEndpoint(HttpsEndpoint);

impl SideTransport for HttpApiEndpoint {
    fn announcement(&self) -> Announcement {
        let address = self.0.address();
        Announcement {
            json_key: "http_address",
            address,
            text: format!("HTTP API at https://{address}/v1/"),
        }
    }

    fn serve(self: Box<Self>, handles: ServiceHandles, shutdown: watch::Receiver<bool>) {
        let app = router(Api::new(handles.service));
        // The accept loop runs until shutdown; nothing waits on its handle.
        drop(self.0.serve(app, handles.listener_limits, shutdown));
    }
}
