//! The gateway's store used as a library, in-process, with no server around it: one
//! behaviour suite written against `&dyn GatewayStore` and run on SQLite and on a real
//! PostgreSQL, then what only PostgreSQL has (schema identity and migrations, two stores on
//! one database, outages, TLS and credentials).

mod gateway_store;
