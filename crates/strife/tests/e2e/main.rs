//! Strife's end-to-end suite, one test binary (one link step on a 2-core machine) with a
//! module per area. Every test drives the real `strife` binary, real etcd, real TLS from
//! `strife setup` and real database files through [`support`]; nothing is mocked.

// Test code: a failed unwrap is the test failing, and the libc calls (signals, rlimits) that
// drive real processes have no safe wrapper.
#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)]

mod support;

mod audit_live;
mod bank_disk_full;
mod bank_etcd;
mod bank_in_doubt;
mod bank_mtls;
mod bank_participant;
mod bench_smoke;
mod chaos;
mod client_cli;
mod client_offline;
mod compression;
mod config;
mod connection_limits;
mod console;
mod console_attacks;
mod data_safety;
mod etcd_lockdown;
mod expired_certificates;
mod gateway_auth;
mod gateway_faults;
mod gateway_payments;
mod gateway_postgres;
mod gateway_recovery;
mod gateway_store;
mod metrics;
mod operations;
mod payment_events;
mod peer_pinning;
mod replicas;
mod replicas_on_postgres;
mod revocation;
mod security_matrix;
mod settlement;
mod status_codes;
mod streams;
