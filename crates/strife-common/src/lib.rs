//! What every Strife process shares: money in minor units ([`money`]), the one mapping from
//! failures to gRPC statuses ([`failure`]), TLS configuration and peer identity ([`tls`]),
//! the data-directory layout ([`layout`]) and log setup ([`logging`]).

pub mod admin;
pub mod discovery;
pub mod etcd;
pub mod failover;
pub mod failure;
pub mod group_commit;
pub mod grpc_limits;
pub mod keys;
pub mod layout;
pub mod limits;
pub mod listener;
pub mod logging;
pub mod metadata;
pub mod metrics;
pub mod money;
pub mod operations;
pub mod password;
pub mod reason;
pub mod registration;
pub mod revocation;
pub mod runtime;
pub mod setup_manifest;
pub mod sqlite;
pub mod state_dir;
pub mod store_identity;
pub mod stream_limits;
pub mod time;
pub mod tls;

pub use failure::Failure;
