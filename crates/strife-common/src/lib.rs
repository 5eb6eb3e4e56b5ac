//! What every Strife process shares: money in minor units ([`money`]), the one mapping from
//! failures to gRPC statuses ([`failure`]), TLS configuration and peer identity ([`tls`]),
//! the data-directory layout ([`layout`]) and log setup ([`logging`]).

pub mod discovery;
pub mod failure;
pub mod group_commit;
pub mod layout;
pub mod logging;
pub mod metadata;
pub mod money;
pub mod password;
pub mod registration;
pub mod runtime;
pub mod sqlite;
pub mod time;
pub mod tls;

pub use failure::Failure;
