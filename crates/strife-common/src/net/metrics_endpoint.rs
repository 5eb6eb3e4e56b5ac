//! The `--metrics-listen` endpoint: `GET /metrics` in the Prometheus text exposition format
//! (version 0.0.4, rendered by [`crate::metrics::render`]), over plain HTTP/1.1 (hyper).
//!
//! The endpoint is plain HTTP without authentication: it is meant for loopback or an operations
//! network. It accepts through [`crate::net::listener::bounded_incoming`] like the gRPC servers, with
//! a small connection cap of its own (independent of the gRPC port's and the console's),
//! shared fairly between client addresses, the stalest connection evicted for a new one when
//! full, the HTTP deadlines of [`crate::net::listener::HttpStream`] (whole request, response, idle)
//! and a small request buffer — so a few slow clients cannot keep a scraper out.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::limits::{
    HTTP_IDLE_TIMEOUT, HTTP_RESPONSE_TIMEOUT, METRICS_MAX_CONNECTIONS,
    METRICS_MAX_CONNECTIONS_PER_ADDRESS, METRICS_REQUEST_TIMEOUT,
};
use crate::metrics::{render, TEXT_CONTENT_TYPE};
use crate::net::listener::{HttpDeadlines, HttpStream, LimitedStream, ListenerLimits};
use crate::net::side_http::{accept_loop, side_limits};

/// The one path served; every other path answers 404.
pub const METRICS_PATH: &str = "/metrics";

/// hyper's read buffer: a scrape request is a few hundred bytes (8 KiB is hyper's minimum).
const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// A bound, not yet serving, metrics listener: bound first so the process can print its
/// address (port 0 picks one) in its ready line.
pub struct MetricsEndpoint {
    listener: TcpListener,
    address: SocketAddr,
}

impl MetricsEndpoint {
    /// Binds `address` (e.g. `127.0.0.1:9464`).
    pub async fn bind(address: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen for metrics on {address}"))?;
        let address = listener.local_addr()?;
        Ok(MetricsEndpoint { listener, address })
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves `GET /metrics` from `registry` until `shutdown` turns true. `server_limits` are
    /// the process's gRPC listener limits: the idle timeout (and the process-wide per-peer cap
    /// `bounded_incoming` sets) are taken from them; the connection caps (in all and per
    /// client address) and the eviction of the stalest connection are the endpoint's own.
    pub fn serve(
        self,
        registry: Registry,
        server_limits: ListenerLimits,
        shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let limits = side_limits(
            server_limits,
            METRICS_MAX_CONNECTIONS,
            METRICS_MAX_CONNECTIONS_PER_ADDRESS,
        );
        let registry = Arc::new(registry);
        tracing::info!(address = %self.address, "serving metrics at http://{}{METRICS_PATH}", self.address);
        accept_loop("metrics", self.listener, limits, shutdown, move |stream| {
            serve_connection(stream, Arc::clone(&registry))
        })
    }
}

/// The deadlines of a metrics connection: a scrape request within 5 s, its answer taken within
/// 10 s, at most 30 s between scrapes on one connection.
const HTTP_DEADLINES: HttpDeadlines = HttpDeadlines {
    request: METRICS_REQUEST_TIMEOUT,
    response: HTTP_RESPONSE_TIMEOUT,
    idle: HTTP_IDLE_TIMEOUT,
};

async fn serve_connection(stream: LimitedStream<TcpStream>, registry: Arc<Registry>) {
    let service = hyper::service::service_fn(move |request| answer(request, Arc::clone(&registry)));
    let handle = stream.handle();
    let stream = HttpStream::new(stream, handle, HTTP_DEADLINES);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(METRICS_REQUEST_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(error) = connection.await {
        tracing::debug!(%error, "metrics connection ended");
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `GET`/`HEAD /metrics` → the rendered registry; another method → 405; another path → 404.
async fn answer(
    request: Request<Incoming>,
    registry: Arc<Registry>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != METRICS_PATH {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        ));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    // Collectors may read a database: off the async threads.
    let rendered = tokio::task::spawn_blocking(move || render(&registry)).await;
    Ok(match rendered {
        Ok(Ok(text)) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_CONTENT_TYPE));
            response
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "cannot render metrics");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n")
        }
        Err(error) => {
            tracing::error!(%error, "metrics rendering task failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn http(address: SocketAddr, request: &str) -> (String, String) {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        (head.to_owned(), body.to_owned())
    }

    #[tokio::test]
    async fn serves_metrics_and_nothing_else() {
        let counter: Counter = Counter::default();
        counter.inc_by(7);
        let mut registry = Registry::default();
        registry.register("strife_test_things", "Things", counter.clone());
        let endpoint = MetricsEndpoint::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let address = endpoint.address();
        let (stop, shutdown) = watch::channel(false);
        let server = endpoint.serve(registry, ListenerLimits::default(), shutdown);

        let (head, body) = http(
            address,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(body.contains("strife_test_things_total 7\n"), "{body}");

        let (head, _) = http(
            address,
            "GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        let (head, _) = http(
            address,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 405"), "{head}");

        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }
}
