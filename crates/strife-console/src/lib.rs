//! The web console (`strife gateway --web-listen`): server-rendered HTML over HTTPS, for
//! people with a browser instead of the CLI. A transport of the gateway process: every page
//! calls the gateway's one service ([`strife_gateway::service::Service`]) with the caller its
//! session stands for, so validation, idempotency, scoping, the role table and refusals are
//! exactly gRPC's — and this crate does not depend on the ledger, so no page can reach the
//! store. Logins go through the gateway's authenticator (argon2id and the shared lockout, in
//! the name's console scope, behind a per-client-address throttle); browsers have no client
//! certificate, so the role comes from the user's record.
//!
//! - [`endpoint`]: the HTTPS listener (caps, eviction, deadlines); a `SideTransport`.
//! - [`routes`]: every route, the security headers, the request log.
//! - [`state`]: the console's state, the logged-in user, calls in their name, the CSRF check.
//! - [`form`]: reading posted forms.
//! - [`session`]: server-side sessions (random id in an `HttpOnly; Secure; SameSite=Strict`
//!   cookie), one CSRF token per session.
//! - [`html`]: escaping, the page frame, refusals worded as everywhere (`strife_present`).
//! - [`payer`]: login, balances, pay, history, payment detail, refunds.
//! - [`keys`]: API keys: list, create (shown once), revoke.
//! - [`operator`]: network, live payments, settlement (SVG chart), users and accounts.
//! - [`events`]: server-sent events from the payment events stream.

mod endpoint;
mod events;
mod form;
mod html;
mod keys;
mod operator;
mod payer;
mod routes;
mod session;
mod state;

pub use endpoint::{ConsolePlan, WebEndpoint};
pub use state::Console;
