//! A bank's Prometheus metrics (docs/OPERATIONS.md lists them with their meaning): legs by the
//! state they entered, in-doubt resolver queries by outcome, and — read from the database on
//! each scrape, through the partial index of PREPARED legs — the holds and PREPARED legs
//! outstanding. The group-commit metrics of its database come from `strife_common::metrics`.
//!
//! Labels are `&'static str` (states, outcomes, currency codes from the fixed list); no label
//! carries an account, an owner or a payment id.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::participant::LegState;
use crate::store::{LegObserver, Store};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CurrencyLabels {
    currency: &'static str,
}

/// What one resolver query about an in-doubt leg came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolverOutcome {
    /// The coordinator said COMMIT.
    Commit,
    /// The coordinator said ABORT (or knew nothing: presumed abort).
    Abort,
    /// Not decided yet; asked again next round.
    Pending,
    /// The coordinator could not be asked (unreachable, error).
    Unreachable,
}

impl ResolverOutcome {
    const ALL: [ResolverOutcome; 4] = [
        ResolverOutcome::Commit,
        ResolverOutcome::Abort,
        ResolverOutcome::Pending,
        ResolverOutcome::Unreachable,
    ];

    fn label(self) -> &'static str {
        match self {
            ResolverOutcome::Commit => "commit",
            ResolverOutcome::Abort => "abort",
            ResolverOutcome::Pending => "pending",
            ResolverOutcome::Unreachable => "unreachable",
        }
    }
}

fn state_label(state: LegState) -> &'static str {
    match state {
        LegState::Prepared => "prepared",
        LegState::Committed => "committed",
        LegState::Aborted => "aborted",
    }
}

/// The counters a bank records as it works (the gauges are read at scrape time).
pub struct BankMetrics {
    legs: Family<StateLabels, Counter>,
    /// `legs`' handles: prepared, committed, aborted.
    leg_states: [Counter; 3],
    resolver_queries: Family<OutcomeLabels, Counter>,
    /// `resolver_queries`' handles, indexed like [`ResolverOutcome::ALL`].
    resolver_outcomes: [Counter; 4],
}

impl Default for BankMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl BankMetrics {
    pub fn new() -> Self {
        let legs = Family::<StateLabels, Counter>::default();
        let leg_states =
            [LegState::Prepared, LegState::Committed, LegState::Aborted].map(|state| {
                legs.get_or_create(&StateLabels {
                    state: state_label(state),
                })
                .clone()
            });
        let resolver_queries = Family::<OutcomeLabels, Counter>::default();
        let resolver_outcomes = ResolverOutcome::ALL.map(|outcome| {
            resolver_queries
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.label(),
                })
                .clone()
        });
        BankMetrics {
            legs,
            leg_states,
            resolver_queries,
            resolver_outcomes,
        }
    }

    /// The resolver asked the coordinator about one in-doubt leg.
    pub fn resolver_query(&self, outcome: ResolverOutcome) {
        let index = match outcome {
            ResolverOutcome::Commit => 0,
            ResolverOutcome::Abort => 1,
            ResolverOutcome::Pending => 2,
            ResolverOutcome::Unreachable => 3,
        };
        if let Some(counter) = self.resolver_outcomes.get(index) {
            counter.inc();
        }
    }

    /// Adds the counters, and the scrape-time gauges read from `store`, to `registry`.
    pub fn register(&self, registry: &mut Registry, store: Arc<Store>) {
        registry.register(
            "strife_bank_legs",
            "Legs this bank moved into each state since it started (prepared = YES vote and \
             hold placed; aborted includes NO votes and tombstones)",
            self.legs.clone(),
        );
        registry.register(
            "strife_bank_resolver_queries",
            "Decision queries the in-doubt resolver sent the coordinator, by outcome (commit, \
             abort, pending, unreachable)",
            self.resolver_queries.clone(),
        );
        registry.register_collector(Box::new(Outstanding { store }));
    }
}

/// The store reports each durable leg transition here (counted in `strife_bank_legs`).
impl LegObserver for BankMetrics {
    fn leg_entered(&self, state: LegState) {
        let index = match state {
            LegState::Prepared => 0,
            LegState::Committed => 1,
            LegState::Aborted => 2,
        };
        if let Some(counter) = self.leg_states.get(index) {
            counter.inc();
        }
    }
}

/// Reads the PREPARED legs' totals from the database on each scrape.
struct Outstanding {
    store: Arc<Store>,
}

impl std::fmt::Debug for Outstanding {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Outstanding")
            .finish_non_exhaustive()
    }
}

impl Collector for Outstanding {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let summary = match self.store.outstanding() {
            Ok(summary) => summary,
            Err(failure) => {
                // A scrape must not fail because the database is busy or sick: the gauges are
                // left out of this one (and the failure logged).
                tracing::warn!(%failure, "cannot read outstanding holds for metrics");
                return Ok(());
            }
        };
        let holds = ConstGauge::new(summary.holds);
        holds.encode(encoder.encode_descriptor(
            "strife_bank_holds_outstanding",
            "Holds on accounts now: debit legs PREPARED and not yet committed or aborted.",
            None,
            MetricType::Gauge,
        )?)?;
        // A family without series is left out (no holds, no currency to show).
        if !summary.held_minor.is_empty() {
            let mut minor = encoder.encode_descriptor(
                "strife_bank_holds_outstanding_minor",
                "Money held by those holds, in minor units (cents), by currency.",
                None,
                MetricType::Gauge,
            )?;
            for &(currency, held_minor) in &summary.held_minor {
                ConstGauge::new(held_minor)
                    .encode(minor.encode_family(&CurrencyLabels { currency })?)?;
            }
        }
        ConstGauge::new(summary.prepared_legs).encode(encoder.encode_descriptor(
            "strife_bank_legs_prepared",
            "Legs PREPARED now (debits and credits) awaiting the coordinator's decision.",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::participant::{PrepareIntent, Role};
    use crate::store::NewAccount;
    use strife_common::reason;

    #[test]
    fn every_bank_reason_code_is_a_payment_reason_label() {
        for code in [
            reason::ACCOUNT_NOT_FOUND,
            reason::CURRENCY_MISMATCH,
            reason::INSUFFICIENT_FUNDS,
            reason::BALANCE_OVERFLOW,
            reason::ACCOUNT_OWNER_MISMATCH,
            reason::ABORTED_BY_COORDINATOR,
            reason::ABORTED_BEFORE_PREPARE,
        ] {
            assert_eq!(strife_common::metrics::reason_label(Some(code)), code);
        }
    }

    #[test]
    fn counters_render() {
        let metrics = BankMetrics::new();
        metrics.leg_entered(LegState::Prepared);
        metrics.leg_entered(LegState::Prepared);
        metrics.leg_entered(LegState::Committed);
        metrics.resolver_query(ResolverOutcome::Unreachable);
        let mut registry = Registry::default();
        registry.register("strife_bank_legs", "legs", metrics.legs.clone());
        registry.register(
            "strife_bank_resolver_queries",
            "queries",
            metrics.resolver_queries.clone(),
        );
        let text = strife_common::metrics::render(&registry).unwrap();
        for line in [
            "strife_bank_legs_total{state=\"prepared\"} 2\n",
            "strife_bank_legs_total{state=\"committed\"} 1\n",
            "strife_bank_legs_total{state=\"aborted\"} 0\n",
            "strife_bank_resolver_queries_total{outcome=\"unreachable\"} 1\n",
            "strife_bank_resolver_queries_total{outcome=\"commit\"} 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
    }

    /// The scrape-time gauges are read from the store, and the counters follow what the store
    /// reports (an idempotent repeat is not counted twice).
    #[tokio::test]
    async fn gauges_and_counters_follow_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let identity = strife_common::storage::store_identity::StoreIdentity::bank(
            &strife_common::layout::Layout::new(dir.path()),
            "bank0",
            "ca".into(),
            crate::store::SCHEMA_VERSION,
            false,
        );
        let metrics = Arc::new(BankMetrics::new());
        let store = Arc::new(
            Store::open(
                &dir.path().join("bank.db"),
                "bank0",
                &identity,
                Arc::clone(&metrics) as Arc<dyn LegObserver>,
            )
            .unwrap(),
        );
        let render = || {
            let mut registry = Registry::default();
            metrics.register(&mut registry, Arc::clone(&store));
            strife_common::metrics::render(&registry).unwrap()
        };
        let account = store
            .open_account(
                &NewAccount {
                    request_id: "r1".into(),
                    owner: "alice".into(),
                    holder_name: "Alice".into(),
                    currency: "USD".into(),
                    opening_deposit_minor: 1_000,
                },
                "test",
            )
            .await
            .unwrap();
        let intent = |amount_minor| PrepareIntent {
            account_number: account.account_number.clone(),
            amount_minor,
            currency: "USD".into(),
            decision_deadline_unix_ms: strife_common::time::now_unix_ms() + 60_000,
            owner: String::new(),
        };
        for (payment, amount) in [("p1", 300), ("p2", 200), ("p3", 10_000)] {
            store
                .prepare(payment, Role::Debit, &intent(amount), "gw")
                .await
                .unwrap();
        }
        let text = render();
        for line in [
            "strife_bank_holds_outstanding 2\n",
            "strife_bank_holds_outstanding_minor{currency=\"USD\"} 500\n",
            "strife_bank_legs_prepared 2\n",
            "strife_bank_legs_total{state=\"prepared\"} 2\n",
            "strife_bank_legs_total{state=\"aborted\"} 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
        store.commit("p1", Role::Debit, 0, "gw").await.unwrap();
        store.abort("p2", Role::Debit, "gw").await.unwrap();
        store.commit("p1", Role::Debit, 0, "gw").await.unwrap();
        let text = render();
        for line in [
            "strife_bank_holds_outstanding 0\n",
            "strife_bank_legs_prepared 0\n",
            "strife_bank_legs_total{state=\"committed\"} 1\n",
            "strife_bank_legs_total{state=\"aborted\"} 2\n",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
        assert!(!text.contains("alice") && !text.contains("p1"), "{text}");
        assert!(!text.contains("holds_outstanding_minor{"), "{text}");
    }
}
