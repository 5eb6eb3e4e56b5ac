//! What every Strife process shares: money in minor units ([`money`]), the one mapping from
//! failures to gRPC statuses ([`failure`]), the data-directory layout ([`layout`]), SQLite
//! storage ([`storage`]) and log setup ([`logging`]).
//!
//! The transport is optional, so the ledger core links none of it: feature `grpc` adds `net`
//! (TLS configuration and peer identity, the bounded listener, the gRPC tower layers, health,
//! failover, revocation, the metrics endpoint) and the gRPC status of a `Failure`; feature
//! `etcd` adds `etcd` (access, lock-down, key space, discovery, registration).

pub mod admin;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod failure;
pub mod keys;
pub mod layout;
pub mod limits;
pub mod logging;
pub mod metadata;
pub mod metrics;
pub mod money;
#[cfg(feature = "grpc")]
pub mod net;
pub mod password;
pub mod reason;
pub mod runtime;
pub mod setup_manifest;
pub mod storage;
pub mod time;

pub use failure::Failure;
