//! The ledger core of Strife's gateway: what a payment *is* and which rules it obeys, with no
//! transport in sight (no gRPC, HTTP or etcd: the gateway's service and its transports sit on
//! top of this crate, and `strife audit` reads the log through it).
//!
//! - [`records`]: payments, links, positions and windows as plain values.
//! - [`payment`]: a payment's lifecycle as pure decisions: the idempotency policy, votes →
//!   decision, overdue and restart aborts, stored payment → answer.
//! - [`settlement`]: positions, net debit caps, settlement windows and refunds as pure
//!   decisions, all arithmetic checked.
//! - [`lockout`]: failed-login counting and locks as pure transitions.
//! - [`store`]: the durable log behind one interface ([`store::GatewayStore`]; read-only
//!   [`store::GatewayLog`]), with its SQLite and PostgreSQL backends, which execute the pure
//!   rules' decisions inside their transactions.

pub mod lockout;
pub mod payment;
pub mod records;
pub mod settlement;
pub mod store;
