//! Takeover: which replica finishes whose payments.
//!
//! Every payment names its coordinator (the replica that recorded it). A replica finishes
//! only its own unfinished payments. When a replica's etcd lease is gone (it died, or lost
//! etcd for longer than its TTL), any survivor that notices claims all of its unfinished
//! payments in one atomic store write ([`GatewayStore::claim`]): one claimant gets them, the
//! others find nothing left to claim. The claimant then treats them as its own: an undecided
//! one is aborted once its decision deadline passes (nobody is running its phase 1 any more),
//! a decided one has its decision re-sent until both banks acknowledge.
//!
//! Why this cannot produce conflicting decisions, even with a replica that is cut off from
//! etcd but still reaches the database: ownership only decides who *works* on a payment,
//! never what is decided. The decision is single-assignment in the shared store
//! ([`GatewayStore::decide`] writes only over PENDING); every path — the payment's own task,
//! a bank's decision query, the claimant's abort — adopts whatever was written first, and no
//! phase-2 message is sent before the sender has read the stored decision back.

use std::collections::HashSet;
use std::time::Duration;

use strife_common::etcd::access::EtcdAccess;
use strife_common::etcd::discovery::live_gateways;
use strife_common::limits::MAX_GATEWAY_REPLICAS;

use strife_ledger::store::GatewayStore;

/// How a replica learns which other replicas are alive.
#[derive(Debug, Clone)]
pub enum Liveness {
    /// The store belongs to this process alone (SQLite under the data dir's `LOCK`): any other
    /// coordinator named in it is an earlier run of this gateway, so it is dead.
    Exclusive,
    /// Replicas share the store: alive means registered in etcd under a live lease.
    Etcd(EtcdAccess),
}

impl Liveness {
    /// The ids of the live replicas, or `None` when this cannot be known now (etcd
    /// unreachable): then nothing is claimed.
    async fn live(&self) -> Option<HashSet<String>> {
        match self {
            Liveness::Exclusive => Some(HashSet::new()),
            Liveness::Etcd(etcd) => match registered_replicas(etcd).await {
                Ok(live) => Some(live),
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "cannot read the live replicas; no takeover this round"
                    );
                    None
                }
            },
        }
    }
}

/// The replica ids registered in etcd now.
pub async fn registered_replicas(etcd: &EtcdAccess) -> anyhow::Result<HashSet<String>> {
    Ok(live_gateways(etcd, MAX_GATEWAY_REPLICAS as i64)
        .await?
        .into_iter()
        .map(|entry| entry.id)
        .collect())
}

/// Claims the unfinished payments of every replica that is not alive. Returns how many
/// payments moved to `me`.
pub async fn take_over(store: &dyn GatewayStore, liveness: &Liveness, me: &str) -> u64 {
    let Some(live) = liveness.live().await else {
        return 0;
    };
    let coordinators = match store.coordinators_with_unfinished().await {
        Ok(coordinators) => coordinators,
        Err(failure) => {
            tracing::warn!(%failure, "cannot list coordinators; no takeover this round");
            return 0;
        }
    };
    let mut claimed = 0;
    for dead in coordinators
        .iter()
        .filter(|coordinator| coordinator.as_str() != me && !live.contains(*coordinator))
    {
        match store.claim(dead, me).await {
            Ok(0) => {}
            Ok(moved) => {
                tracing::warn!(from = %dead, payments = moved, "took over the unfinished payments of a replica that is gone");
                claimed += moved;
            }
            Err(failure) => tracing::warn!(from = %dead, %failure, "takeover failed; will retry"),
        }
    }
    claimed
}

/// How often a replica looks for dead replicas' payments.
pub const TAKEOVER_INTERVAL: Duration = Duration::from_secs(1);
