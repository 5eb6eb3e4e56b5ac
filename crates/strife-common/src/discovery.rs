//! The etcd key space Strife uses to find its processes. Banks put
//! `/strife/v1/banks/<bank_id>` under a lease; the gateway puts `/strife/v1/gateway` so banks
//! can find it for decision queries. Values are JSON [`ServiceEntry`]s.

use serde::{Deserialize, Serialize};

/// Prefix under which every live bank has one key.
pub const BANKS_PREFIX: &str = "/strife/v1/banks/";
/// Key of the live gateway's address.
pub const GATEWAY_KEY: &str = "/strife/v1/gateway";
/// Default etcd endpoint (loopback).
pub const DEFAULT_ETCD: &str = "http://127.0.0.1:2379";

/// The etcd key of one bank.
pub fn bank_key(bank_id: &str) -> String {
    format!("{BANKS_PREFIX}{bank_id}")
}

/// What a process announces about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// The bank id, or `gateway`.
    pub id: String,
    /// `host:port` to dial over mutual TLS.
    pub address: String,
}

/// Where a running local network (`strife dev`) can be reached; written to
/// `<dir>/network.json` so other commands (`bench`, `audit`) find it without flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub etcd: String,
    pub gateway: String,
}

impl NetworkInfo {
    /// Reads `<dir>/network.json`, if a dev network wrote one.
    pub fn load(layout: &crate::layout::Layout) -> Option<Self> {
        let bytes = std::fs::read(layout.network_file()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}
