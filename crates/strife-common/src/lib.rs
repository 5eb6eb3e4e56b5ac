//! What every Strife process shares: money in minor units ([`money`]), the one mapping from
//! failures to gRPC statuses ([`failure`]), TLS configuration and peer identity ([`net::tls`]),
//! the data-directory layout ([`layout`]) and log setup ([`logging`]).

pub mod admin;
pub mod etcd;
pub mod failure;
pub mod keys;
pub mod layout;
pub mod limits;
pub mod logging;
pub mod metadata;
pub mod metrics;
pub mod money;
pub mod net;
pub mod password;
pub mod reason;
pub mod runtime;
pub mod setup_manifest;
pub mod storage;
pub mod time;

pub use failure::Failure;
