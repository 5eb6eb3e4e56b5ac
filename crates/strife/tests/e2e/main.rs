//! Strife's end-to-end suite, one test binary (one link step on a 2-core machine) with a
//! folder per thing it drives: a bank, the gateway, the client, the web console, a whole
//! network, the refusals of every process (security), the gateway's store. The tests drive the
//! real `strife` binary (the store suite: the store library), real etcd, real TLS from
//! `strife setup` and real database files through [`support`]; nothing is mocked. A test's
//! name starts with its folder and file: `gateway::payments::…`.

// Test code: a failed unwrap is the test failing, and the libc calls (signals, rlimits) that
// drive real processes have no safe wrapper.
#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)]

mod support;

// One folder per thing the tests drive; each folder's mod.rs says what it holds.
mod bank;
mod client;
mod console;
mod gateway;
mod http;
mod network;
mod security;
mod store;
