//! The HTTP/JSON API (`strife gateway --http-listen`, on in `strife dev`) driven by `curl`, a
//! client we did not write, over real TLS against a real `strife dev` network: the money paths
//! (pay, replay by key, across transports, refunds), keys and scopes, revocation on every
//! replica, events, and the served OpenAPI document; and gRPC with API keys
//! (`--grpc-api-key-listen`) from a tonic client without a certificate.

mod api;
mod grpc_api_keys;
mod matrix;
