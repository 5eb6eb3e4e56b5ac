//! `strife client`: what a person touches. Every command talks to the gateway over mutual TLS
//! with the user's certificate and password; `pay` goes through the durable [`outbox`] so a
//! payment made while the gateway is unreachable is kept and sent later, exactly once.
//!
//! - [`args`]: the command line.
//! - [`session`]: password, TLS and the authenticated gateway client.
//! - [`commands`]: one function per command.
//! - [`render`]: what every command prints through: human tables and `--json` documents,
//!   sentences for errors, the exit status of a failure. It depends on no command module, so
//!   the commands form no cycle: `commands` → `settlement` → `render`, `commands` → `render`.
//! - [`outbox`]: the offline outbox and its retry policy.
//! - [`api_keys`]: `api-key create|list|revoke`.
//! - [`authorizations`]: `authorize`, `capture`, `void`.
//! - [`search`]: `payments`' filters as a `ListPayments` request.
//! - [`settlement`]: `refund` and the admin's `settlement` commands, and the settlement
//!   statement.
//! - [`watch`]: following payment events; [`listen`] forwards them to a local webhook
//!   receiver, signed as [`webhook`] says (and as a receiver in Rust verifies them).

pub mod api_keys;
pub mod args;
pub mod authorizations;
pub mod commands;
pub mod listen;
pub mod outbox;
pub mod render;
pub mod search;
pub mod session;
pub mod settlement;
pub mod watch;
pub mod webhook;

pub use args::ClientArgs;

/// Runs one client command; returns the process exit status. `event_body` is how `listen`
/// writes an event as a webhook body (the HTTP API's JSON, which this crate does not own).
pub fn run(args: ClientArgs, event_body: listen::EventBody) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(commands::dispatch(args, event_body))
}
