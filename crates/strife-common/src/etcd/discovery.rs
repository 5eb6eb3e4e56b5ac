//! Finding Strife's processes in etcd: the entries under the key space of [`super::keys`]
//! (JSON [`ServiceEntry`]s, each filed under its own id), and the one bounded read of the bank
//! list ([`live_banks`]; [`bank_snapshot`] adds the revision a watch starts from) and of the
//! gateway replicas ([`live_gateways`]); and where a running local network can be reached
//! ([`NetworkInfo`], `network.json`).

use serde::{Deserialize, Serialize};

use crate::etcd::access::EtcdAccess;
use crate::etcd::keys::{BANKS_PREFIX, GATEWAYS_PREFIX};

/// Default etcd endpoint (loopback).
pub const DEFAULT_ETCD: &str = "https://127.0.0.1:2379";

/// What a process announces about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// The bank id, or the gateway replica's id.
    pub id: String,
    /// `host:port` to dial over mutual TLS.
    pub address: String,
}

/// Most bank entries a reader of etcd keeps; past it, entries are ignored (and logged), so a
/// flood of bogus keys cannot grow the gateway without bound.
pub const MAX_BANK_ENTRIES: usize = 1_024;
/// Longest address accepted from an entry.
const MAX_ADDRESS_LEN: usize = 256;

/// Reads one bank entry from etcd: the key must be `BANKS_PREFIX<id>`, the value's `id` must
/// be that same id (a valid bank name), and the address bounded. An entry whose key and id
/// disagree is refused, so nobody can route a bank id through another key; the peer's
/// certificate is then pinned to the id on every connection (`tls::ExpectedPeer`), so even a
/// well-formed entry cannot send a bank's traffic to someone else.
pub fn bank_entry_from_kv(key: &[u8], value: &[u8]) -> Result<ServiceEntry, String> {
    entry_from_kv(BANKS_PREFIX, "bank", key, value)
}

/// Reads one gateway replica's entry, with the same rules as [`bank_entry_from_kv`]. Every
/// replica presents the one gateway certificate, so the entry only says where to dial.
pub fn gateway_entry_from_kv(key: &[u8], value: &[u8]) -> Result<ServiceEntry, String> {
    entry_from_kv(GATEWAYS_PREFIX, "replica", key, value)
}

fn entry_from_kv(
    prefix: &str,
    kind: &str,
    key: &[u8],
    value: &[u8],
) -> Result<ServiceEntry, String> {
    let key = std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_owned())?;
    let key_id = key
        .strip_prefix(prefix)
        .ok_or_else(|| format!("key {key:?} is outside {prefix}"))?;
    let entry: ServiceEntry = serde_json::from_slice(value)
        .map_err(|error| format!("key {key:?}: value is not a service entry: {error}"))?;
    crate::layout::validate_name(kind, key_id).map_err(|error| format!("key {key:?}: {error}"))?;
    if entry.id != key_id {
        return Err(format!(
            "key {key:?} names {kind} {key_id:?} but its entry claims {:?}",
            entry.id.escape_debug().to_string()
        ));
    }
    if entry.address.is_empty()
        || entry.address.len() > MAX_ADDRESS_LEN
        || entry.address.chars().any(char::is_control)
    {
        return Err(format!("key {key:?}: bad address"));
    }
    Ok(entry)
}

/// Every gateway replica registered in etcd now (at most `limit`), read with one prefix get
/// bounded by [`crate::limits::ETCD_CALL_TIMEOUT`]. Entries that break the key rules are
/// skipped with a warning. Banks use it for decision queries, replicas for takeover.
pub async fn live_gateways(etcd: &EtcdAccess, limit: i64) -> anyhow::Result<Vec<ServiceEntry>> {
    let mut client = etcd.connect().await?;
    let (entries, _) = read_entries(
        &mut client,
        GATEWAYS_PREFIX,
        limit,
        gateway_entry_from_kv,
        "gateway replica",
    )
    .await?;
    Ok(entries)
}

/// Every bank registered in etcd now: the one read of the bank list (the audit finds the
/// banks it reconciles with it, `strife bench` the bank it probes). Bounded twice: one
/// prefix get within [`crate::limits::ETCD_CALL_TIMEOUT`], at most [`MAX_BANK_ENTRIES`]
/// entries. Entries that break the key rules ([`bank_entry_from_kv`]) are skipped with a
/// warning.
pub async fn live_banks(etcd: &EtcdAccess) -> anyhow::Result<Vec<ServiceEntry>> {
    let mut client = etcd.connect().await?;
    Ok(bank_snapshot(&mut client).await?.banks)
}

/// The banks in etcd at one revision: what a reader that then watches the prefix (the
/// gateway's bank registry) starts from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BankSnapshot {
    /// As [`live_banks`] returns them.
    pub banks: Vec<ServiceEntry>,
    /// The etcd revision the list was read at: a watch from `revision + 1` misses no change
    /// after it.
    pub revision: i64,
}

/// [`live_banks`] on a client already connected (a watch that follows can share it), with
/// the revision of the read.
pub async fn bank_snapshot(client: &mut etcd_client::Client) -> anyhow::Result<BankSnapshot> {
    let (banks, revision) = read_entries(
        client,
        BANKS_PREFIX,
        MAX_BANK_ENTRIES as i64,
        bank_entry_from_kv,
        "bank",
    )
    .await?;
    Ok(BankSnapshot { banks, revision })
}

/// One bounded prefix read: at most `limit` keys, within the etcd call timeout; entries
/// `parse` refuses are logged and skipped. Returns the entries and the read's revision.
async fn read_entries(
    client: &mut etcd_client::Client,
    prefix: &str,
    limit: i64,
    parse: fn(&[u8], &[u8]) -> Result<ServiceEntry, String>,
    kind: &str,
) -> anyhow::Result<(Vec<ServiceEntry>, i64)> {
    use anyhow::Context;
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_limit(limit);
    let response = tokio::time::timeout(
        crate::limits::ETCD_CALL_TIMEOUT,
        client.get(prefix, Some(options)),
    )
    .await
    .with_context(|| format!("etcd read of the {kind} entries timed out"))??;
    if response.more() {
        tracing::warn!(
            kind,
            limit,
            "more entries in etcd than a reader keeps; the rest are ignored"
        );
    }
    let revision = response.header().map_or(0, |header| header.revision());
    let entries = response
        .kvs()
        .iter()
        .filter_map(|kv| match parse(kv.key(), kv.value()) {
            Ok(entry) => Some(entry),
            Err(error) => {
                tracing::warn!(kind, %error, "ignoring an entry in etcd");
                None
            }
        })
        .collect();
    Ok((entries, revision))
}

/// Where a running local network (`strife dev`) can be reached; written to
/// `<dir>/network.json` so other commands (`bench`, `audit`) find it without flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub etcd: String,
    /// Every gateway replica's address, comma-separated (what `--gateway` takes).
    pub gateway: String,
    /// The gateways' store when it is not the data dir's SQLite file (a PostgreSQL URL, with
    /// its password: the file is private, like the demo passwords beside it), so `strife
    /// audit` and `strife bench` find it without flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// The web console's URL (`https://…/`), when the first gateway serves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<String>,
    /// The first gateway's HTTP API base URL (`https://…/v1/`), when it serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
}

impl NetworkInfo {
    /// Reads `<dir>/network.json`, if a dev network wrote one.
    pub fn load(layout: &crate::layout::Layout) -> Option<Self> {
        let bytes = std::fs::read(layout.network_file()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(id: &str) -> Vec<u8> {
        serde_json::to_vec(&ServiceEntry {
            id: id.into(),
            address: "127.0.0.1:1".into(),
        })
        .unwrap_or_default()
    }

    #[test]
    fn a_bank_entry_must_be_filed_under_its_own_id() {
        assert!(bank_entry_from_kv(b"/strife/v1/banks/bank0", &value("bank0")).is_ok());
        for (key, id) in [
            ("/strife/v1/banks/zz-shadow", "bank0"),
            ("/strife/v1/banks/bank0", "bank1"),
            ("/strife/v1/banks/bank0/x", "bank0/x"),
            ("/strife/v1/gateway", "gateway"),
            ("/strife/v1/banks/", ""),
        ] {
            assert!(
                bank_entry_from_kv(key.as_bytes(), &value(id)).is_err(),
                "{key}"
            );
        }
        assert!(bank_entry_from_kv(b"/strife/v1/banks/bank0", b"not json").is_err());
    }

    #[test]
    fn a_replica_entry_must_be_filed_under_its_own_id() {
        assert!(gateway_entry_from_kv(b"/strife/v1/gateways/gw1", &value("gw1")).is_ok());
        for (key, id) in [
            ("/strife/v1/gateways/gw1", "gw2"),
            ("/strife/v1/banks/gw1", "gw1"),
            ("/strife/v1/gateways/", ""),
        ] {
            assert!(
                gateway_entry_from_kv(key.as_bytes(), &value(id)).is_err(),
                "{key}"
            );
        }
    }
}
