//! The `strife client` binary against a real network: the CLI tour asserted on its `--json`
//! output, and the offline outbox (queue while the gateway is down, pay exactly once on
//! `sync`, even when the client is killed mid-sync).

mod cli;
mod listen;
mod offline;
