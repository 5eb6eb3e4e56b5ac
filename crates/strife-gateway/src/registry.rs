//! The live map of banks: an etcd watch on `/strife/v1/banks/` keeps `bank_id → address`
//! current, so a payment never reads etcd. Each bank gets one long-lived channel over mutual
//! TLS (made lazily, reconnecting by itself), replaced only when the bank's address changes.
//! A bank whose lease expires disappears from the map and is `UNAVAILABLE` from then on.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use anyhow::Context;
use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use strife_common::discovery::{ServiceEntry, BANKS_PREFIX};
use strife_common::tls::TlsMaterial;
use strife_common::Failure;
use strife_proto::v1::bank_client::BankClient;
use tokio::sync::watch;
use tonic::transport::Channel;

const ETCD_CALL_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Bound on any single call to a bank made through these channels.
const BANK_CALL_TIMEOUT: Duration = Duration::from_secs(10);

struct BankHandle {
    address: String,
    channel: Channel,
}

/// Banks currently registered in etcd, with a reusable channel to each.
pub struct BankRegistry {
    tls: TlsMaterial,
    banks: RwLock<HashMap<String, BankHandle>>,
}

impl BankRegistry {
    pub fn new(tls: TlsMaterial) -> Self {
        BankRegistry {
            tls,
            banks: RwLock::new(HashMap::new()),
        }
    }

    /// A client for `bank_id`, or `UNAVAILABLE` if it is not registered.
    pub fn client(&self, bank_id: &str) -> Result<BankClient<Channel>, Failure> {
        let banks = self
            .banks
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        banks
            .get(bank_id)
            .map(|handle| BankClient::new(handle.channel.clone()))
            .ok_or_else(|| {
                Failure::Unavailable(format!(
                    "bank {bank_id} is not available (not registered in etcd)"
                ))
            })
    }

    /// Ids of the banks registered now, sorted.
    pub fn bank_ids(&self) -> Vec<String> {
        let banks = self
            .banks
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut ids: Vec<String> = banks.keys().cloned().collect();
        ids.sort();
        ids
    }

    fn upsert(&self, entry: ServiceEntry) {
        let mut banks = self
            .banks
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if banks
            .get(&entry.id)
            .is_some_and(|handle| handle.address == entry.address)
        {
            return;
        }
        match self.tls.endpoint(&entry.address, BANK_CALL_TIMEOUT) {
            Ok(endpoint) => {
                tracing::info!(bank_id = %entry.id, address = %entry.address, "bank available");
                let channel = endpoint.connect_lazy();
                banks.insert(
                    entry.id,
                    BankHandle {
                        address: entry.address,
                        channel,
                    },
                );
            }
            Err(error) => {
                tracing::warn!(bank_id = %entry.id, error = format!("{error:#}"), "ignoring bank with a bad address")
            }
        }
    }

    fn remove(&self, bank_id: &str) {
        let mut banks = self
            .banks
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if banks.remove(bank_id).is_some() {
            tracing::warn!(bank_id, "bank unavailable (left etcd)");
        }
    }

    fn replace_all(&self, entries: Vec<ServiceEntry>) {
        let wanted: Vec<String> = entries.iter().map(|entry| entry.id.clone()).collect();
        for id in self.bank_ids() {
            if !wanted.contains(&id) {
                self.remove(&id);
            }
        }
        for entry in entries {
            self.upsert(entry);
        }
    }

    /// Follows etcd until shutdown: a snapshot, then a watch from the snapshot's revision;
    /// after any error, a fresh snapshot (so nothing missed while disconnected is lost).
    pub async fn follow(&self, endpoints: Vec<String>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_START;
        loop {
            tokio::select! {
                result = self.follow_once(&endpoints) => {
                    if let Err(error) = result {
                        tracing::warn!(error = format!("{error:#}"), "bank registry watch lost; resyncing");
                    }
                }
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn follow_once(&self, endpoints: &[String]) -> anyhow::Result<()> {
        let mut client = tokio::time::timeout(ETCD_CALL_TIMEOUT, Client::connect(endpoints, None))
            .await
            .context("connecting to etcd timed out")??;
        let snapshot = tokio::time::timeout(
            ETCD_CALL_TIMEOUT,
            client.get(BANKS_PREFIX, Some(GetOptions::new().with_prefix())),
        )
        .await
        .context("listing banks timed out")??;
        let revision = snapshot
            .header()
            .map(|header| header.revision())
            .unwrap_or(0);
        let entries = snapshot
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice::<ServiceEntry>(kv.value()).ok())
            .collect();
        self.replace_all(entries);
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut stream =
            tokio::time::timeout(ETCD_CALL_TIMEOUT, client.watch(BANKS_PREFIX, Some(options)))
                .await
                .context("starting the watch timed out")??;
        while let Some(response) = stream.message().await? {
            anyhow::ensure!(!response.canceled(), "watch canceled by etcd");
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => match serde_json::from_slice::<ServiceEntry>(kv.value()) {
                        Ok(entry) => self.upsert(entry),
                        Err(error) => tracing::warn!(%error, "ignoring malformed bank entry"),
                    },
                    EventType::Delete => {
                        let key = String::from_utf8_lossy(kv.key());
                        if let Some(bank_id) = key.strip_prefix(BANKS_PREFIX) {
                            self.remove(bank_id);
                        }
                    }
                }
            }
        }
        anyhow::bail!("etcd closed the watch")
    }
}
