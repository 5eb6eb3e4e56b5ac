//! The etcd key space Strife uses to find its processes. Banks put
//! `/strife/v1/banks/<bank_id>` under a lease; every gateway replica puts
//! `/strife/v1/gateways/<replica_id>` under its own lease, so banks can find a live replica
//! for decision queries (and a survivor can tell which replicas are gone). Values are JSON
//! `discovery::ServiceEntry`s. The lock-down grants each etcd user exactly its part of it
//! (`access::lock_down`).

/// Prefix under which every live bank has one key.
pub const BANKS_PREFIX: &str = "/strife/v1/banks/";
/// Prefix under which every live gateway replica has one key.
pub const GATEWAYS_PREFIX: &str = "/strife/v1/gateways/";

/// The etcd key of one bank.
pub fn bank_key(bank_id: &str) -> String {
    format!("{BANKS_PREFIX}{bank_id}")
}

/// The etcd key of one gateway replica.
pub fn gateway_key(replica_id: &str) -> String {
    format!("{GATEWAYS_PREFIX}{replica_id}")
}
