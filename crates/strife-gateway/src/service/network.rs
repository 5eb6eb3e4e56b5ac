//! What this replica sees of the network, for the operator: each bank's registration, its
//! prepare statistics since this gateway started, and the legs of this replica's unfinished
//! payments still waiting for that bank's acknowledgement. Not a network-wide aggregate: each
//! replica reports its own view.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use strife_common::time::now_unix_ms;
use strife_common::Failure;

use super::Service;
use crate::request::Call;
use crate::roles::Role;

/// Unfinished payments read to count legs in doubt per bank.
const IN_DOUBT_SCAN: u32 = 1_000;

/// One bank as this replica sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct BankView {
    pub bank_id: String,
    /// Registered in etcd now.
    pub up: bool,
    /// Prepares sent since this gateway started.
    pub prepares: u64,
    /// Of those, votes that were NO, timed out or failed.
    pub failed: u64,
    pub mean_prepare_latency: Duration,
    /// This replica's unfinished payments whose leg at this bank is not acknowledged yet.
    pub legs_in_doubt: usize,
}

/// The operator's network page.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkView {
    /// Every bank seen since start (registered now or before, or prepared to), by id.
    pub banks: Vec<BankView>,
    /// Payments the phase-2 retrier is still delivering.
    pub payments_in_doubt: i64,
    /// Why the legs in doubt could not be counted (the store did not answer), if so.
    pub legs_unknown: Option<Failure>,
}

impl Service {
    /// The banks registered in etcd now, by id (what a form offers to open an account at).
    pub fn registered_banks(&self) -> Vec<String> {
        let mut banks = self.registry.bank_ids();
        banks.sort_unstable();
        banks
    }

    /// The network as this replica sees it (admin only).
    pub async fn network_view(&self, call: &Call) -> Result<NetworkView, Failure> {
        if call.caller.role != Role::Admin {
            return Err(Failure::PermissionDenied(
                "only the admin sees the network".into(),
            ));
        }
        let metrics = self.coordinator.metrics();
        let up: BTreeSet<String> = self.registry.bank_ids().into_iter().collect();
        let mut ids: BTreeSet<String> = up.clone();
        ids.extend(self.registry.seen_bank_ids());
        let summaries: BTreeMap<String, _> = metrics
            .bank_prepare_summaries()
            .into_iter()
            .map(|summary| (summary.bank_id.clone(), summary))
            .collect();
        ids.extend(summaries.keys().cloned());
        let mut in_doubt: BTreeMap<String, usize> = BTreeMap::new();
        let unfinished = self
            .store
            .unfinished(self.coordinator.replica_id(), now_unix_ms(), IN_DOUBT_SCAN)
            .await;
        let legs_unknown = match unfinished {
            Ok(payments) => {
                for payment in payments {
                    if !payment.debit_acked {
                        *in_doubt.entry(payment.from.bank_id.clone()).or_default() += 1;
                    }
                    if !payment.credit_acked {
                        *in_doubt.entry(payment.to.bank_id.clone()).or_default() += 1;
                    }
                }
                None
            }
            Err(failure) => Some(failure),
        };
        let banks = ids
            .into_iter()
            .map(|bank_id| {
                let summary = summaries.get(&bank_id);
                BankView {
                    up: up.contains(&bank_id),
                    prepares: summary.map_or(0, |summary| summary.prepares),
                    failed: summary.map_or(0, |summary| summary.failed),
                    mean_prepare_latency: summary
                        .map_or(Duration::ZERO, |summary| summary.mean_latency),
                    legs_in_doubt: in_doubt.get(&bank_id).copied().unwrap_or(0),
                    bank_id,
                }
            })
            .collect();
        Ok(NetworkView {
            banks,
            payments_in_doubt: metrics.in_doubt(),
            legs_unknown,
        })
    }
}
