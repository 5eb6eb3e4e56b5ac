//! The gateway (`strife gateway`) with real banks and etcd behind it, driven through its
//! gRPC API: authentication, payments and idempotency, broken banks, its own crash recovery,
//! settlement and refunds, payment events, metrics, health and drain, the PostgreSQL store,
//! and several replicas (on SQLite and on a shared PostgreSQL).

mod auth;
mod authorizations;
mod faults;
mod metrics;
mod operations;
mod payment_events;
mod payments;
mod postgres;
mod recovery;
mod replicas;
mod replicas_on_postgres;
mod settlement;
