//! `strife bank`: one bank server. It holds accounts in its own SQLite database and takes part
//! in the gateway's two-phase commit as a durable participant.
//!
//! - [`participant`]: the per-leg state machine (pure, no I/O).
//! - [`store`]: accounts, legs and journal in SQLite; each step one fsynced transaction.
//! - [`service`]: the `strife.v1.Bank` gRPC service: validation, then a store call.
//! - [`gateway_only`]: the interceptor that admits only the gateway's certificate.
//! - `strife_common::etcd::registration`: the etcd lease, keep-alive and re-registration.
//! - [`resolver`]: asks the coordinator about legs PREPARED past their deadline.
//! - [`metrics`]: the bank's Prometheus metrics (served on `--metrics-listen`).
//! - [`server`]: wires it all together and handles shutdown.

pub mod gateway_only;
pub mod metrics;
pub mod participant;
pub mod resolver;
pub mod server;
pub mod service;
pub mod store;

pub use server::{run, BankConfig};
