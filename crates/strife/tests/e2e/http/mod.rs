//! The HTTP/JSON API (`strife gateway --http-listen`, on in `strife dev`) driven by `curl`, a
//! client we did not write, over real TLS against a real `strife dev` network: the money paths
//! (pay, replay by key, across transports, refunds), keys and scopes, revocation on every
//! replica, events, and the served OpenAPI document.

mod api;
mod matrix;
