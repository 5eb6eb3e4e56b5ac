//! Prometheus metrics, the parts every process shares: the histogram buckets, the bounded set
//! of payment reason labels, the group-commit metrics of [`crate::storage::group_commit`], and
//! rendering a registry in the Prometheus text exposition format (version 0.0.4). The gateway's
//! and the banks' own metrics live in their crates (`strife_gateway::metrics`,
//! `strife_bank::metrics`); docs/OPERATIONS.md lists them all. The `--metrics-listen` HTTP
//! endpoint that serves them is `net::metrics_endpoint`.
//!
//! Recording is never fallible and never blocks on I/O: counters and gauges are atomics, a
//! histogram observation takes one short uncontended lock (`prometheus-client`'s), and label
//! sets are small structs of `&'static str` (or handles made once per bank), so the hot path
//! allocates nothing. A metric cannot fail a payment. Rendering happens only on a scrape, on
//! the blocking pool.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of the Prometheus text exposition format (version 0.0.4).
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
