//! Prometheus metrics, the parts every process shares: the `--metrics-listen` HTTP endpoint
//! (`GET /metrics` in the Prometheus text exposition format, version 0.0.4), the histogram
//! buckets, the bounded set of payment reason labels, and the group-commit metrics of
//! [`crate::storage::group_commit`]. The gateway's and the banks' own metrics live in their crates
//! (`strife_gateway::metrics`, `strife_bank::metrics`); docs/OPERATIONS.md lists them all.
//!
//! Recording is never fallible and never blocks on I/O: counters and gauges are atomics, a
//! histogram observation takes one short uncontended lock (`prometheus-client`'s), and label
//! sets are small structs of `&'static str` (or handles made once per bank), so the hot path
//! allocates nothing. A metric cannot fail a payment. Rendering happens only on a scrape, on
//! the blocking pool.
//!
//! The endpoint is plain HTTP without authentication: it is meant for loopback or an operations
//! network. It accepts through [`crate::net::listener::bounded_incoming`] like the gRPC servers, with
//! a small connection cap of its own (independent of the gRPC port's and the console's),
//! shared fairly between client addresses, the stalest connection evicted for a new one when
//! full, the HTTP deadlines of [`crate::net::listener::HttpStream`] (whole request, response, idle)
//! and a small request buffer — so a few slow clients cannot keep a scraper out.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_stream::StreamExt;

use crate::limits::{
    EVICTION_MIN_STALE, HTTP_IDLE_TIMEOUT, HTTP_RESPONSE_TIMEOUT, METRICS_MAX_CONNECTIONS,
    METRICS_MAX_CONNECTIONS_PER_ADDRESS, METRICS_REQUEST_TIMEOUT,
};
use crate::net::listener::{
    bounded_incoming, HttpDeadlines, HttpStream, LimitedStream, ListenerLimits,
};

/// The one path served; every other path answers 404.
pub const METRICS_PATH: &str = "/metrics";

/// The content type of the Prometheus text exposition format (version 0.0.4).
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// hyper's read buffer: a scrape request is a few hundred bytes (8 KiB is hyper's minimum).
const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// A histogram family whose histograms share one set of buckets.
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Upper bounds in seconds for latencies: 0.5 ms doubling to ≈ 8.2 s (a payment must end
/// within the client's 10 s call timeout), plus `+Inf`.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// Upper bounds for batch sizes: 1 doubling to 512 (the largest group-commit batch).
pub fn batch_size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

/// The label for a payment's reason code: itself if it is one of [`crate::reason::ABORTS`], `none`
/// when there is none, `other` otherwise. Never allocates.
pub fn reason_label(code: Option<&str>) -> &'static str {
    match code {
        None | Some("") => "none",
        Some(code) => crate::reason::ABORTS
            .iter()
            .find(|known| **known == code)
            .copied()
            .unwrap_or("other"),
    }
}

/// The `store` label of the group-commit metrics: `gateway` or `bank`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabel {
    pub store: &'static str,
}

/// Group-commit metrics of every database writer in the process (one per process in
/// practice). Process-wide, because the writers are started deep inside store constructors;
/// they are always recorded (a few atomics per batch) and shown when the process serves
/// metrics.
pub struct GroupCommitMetrics {
    batch_size: HistogramFamily<StoreLabel>,
    duration: HistogramFamily<StoreLabel>,
}

/// The process's group-commit metrics.
pub fn group_commit() -> &'static GroupCommitMetrics {
    static METRICS: OnceLock<GroupCommitMetrics> = OnceLock::new();
    METRICS.get_or_init(|| GroupCommitMetrics {
        batch_size: Family::new_with_constructor(batch_size_histogram),
        duration: Family::new_with_constructor(latency_histogram),
    })
}

impl GroupCommitMetrics {
    /// The handles one writer records into, labelled `store`.
    pub fn observer(&self, store: &'static str) -> GroupCommitObserver {
        let label = StoreLabel { store };
        GroupCommitObserver {
            batch_size: self.batch_size.get_or_create(&label).clone(),
            duration: self.duration.get_or_create(&label).clone(),
        }
    }

    /// Adds both families to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "strife_group_commit_batch_size",
            "Writes committed together in one SQLite transaction (one fsync), per batch",
            self.batch_size.clone(),
        );
        registry.register(
            "strife_group_commit_duration_seconds",
            "Time from BEGIN to the end of COMMIT (including the fsync) of one group-commit batch",
            self.duration.clone(),
        );
    }
}

/// One writer's handles (see [`GroupCommitMetrics::observer`]).
#[derive(Clone, Debug)]
pub struct GroupCommitObserver {
    batch_size: Histogram,
    duration: Histogram,
}

impl GroupCommitObserver {
    /// Records one batch of `writes` that took `took` from BEGIN to COMMIT.
    pub fn batch(&self, writes: usize, took: Duration) {
        self.batch_size.observe(writes as f64);
        self.duration.observe(took.as_secs_f64());
    }
}

/// `registry` in the Prometheus text exposition format.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
    Ok(text)
}

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
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let limits = ListenerLimits {
            max_connections: METRICS_MAX_CONNECTIONS,
            // No peers are attached here (plain HTTP): no first-request deadline.
            first_request_timeout: None,
            max_per_address: Some(METRICS_MAX_CONNECTIONS_PER_ADDRESS),
            evict_stalest_after: Some(EVICTION_MIN_STALE),
            ..server_limits
        };
        let registry = Arc::new(registry);
        tracing::info!(address = %self.address, "serving metrics at http://{}{METRICS_PATH}", self.address);
        tokio::spawn(async move {
            let mut incoming = bounded_incoming(self.listener, limits);
            loop {
                let next = tokio::select! {
                    next = incoming.next() => next,
                    _ = shutdown.wait_for(|stop| *stop) => return,
                };
                match next {
                    Some(Ok(stream)) => {
                        tokio::spawn(serve_connection(stream, Arc::clone(&registry)));
                    }
                    Some(Err(error)) => tracing::debug!(%error, "metrics accept failed"),
                    None => return,
                }
            }
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn reason_labels_are_bounded() {
        assert_eq!(reason_label(None), "none");
        assert_eq!(reason_label(Some("")), "none");
        assert_eq!(
            reason_label(Some("insufficient_funds")),
            "insufficient_funds"
        );
        assert_eq!(reason_label(Some("alice's secret")), "other");
        for transient in crate::reason::TRANSIENT_ABORTS {
            assert_eq!(reason_label(Some(transient)), *transient);
        }
    }

    #[test]
    fn group_commit_batches_render_with_their_store_label() {
        let observer = group_commit().observer("unit-test");
        observer.batch(3, Duration::from_millis(2));
        let mut registry = Registry::default();
        group_commit().register(&mut registry);
        let text = render(&registry).unwrap();
        assert!(
            text.contains("# TYPE strife_group_commit_batch_size histogram"),
            "{text}"
        );
        assert!(
            text.contains("strife_group_commit_batch_size_bucket{store=\"unit-test\",le=\"4\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("strife_group_commit_batch_size_sum{store=\"unit-test\"} 3.0\n"),
            "{text}"
        );
        assert!(
            text.contains("strife_group_commit_duration_seconds_count{store=\"unit-test\"} 1"),
            "{text}"
        );
    }

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
