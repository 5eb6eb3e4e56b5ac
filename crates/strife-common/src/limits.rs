//! Every limit Strife enforces, in one place, with the relationships between them asserted at
//! compile time. A limit that two processes must agree on (the gateway's batch and the bank's,
//! a client's patience and the server's work) cannot drift when both read it from here.
//!
//! Invariant: **only this module defines a limit that two modules or processes share, or that
//! must relate to another limit**; elsewhere a limit is imported, never restated. (A module's
//! private tunables — queue depths, retry intervals, cache sizes — stay beside their code.)

use std::time::Duration;

use crate::Failure;

// ── Sizes of identifiers and text ───────────────────────────────────────────────────────────

/// Longest id a client or the gateway may send: idempotency key, payment id, account number.
pub const MAX_ID_BYTES: usize = 128;
/// Longest user or bank name (`layout::validate_name`); names become file and etcd paths.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest request id a bank accepts for `OpenAccount`: the gateway sends
/// `<admin name>/<idempotency key>`, so it is sized to hold exactly that.
pub const MAX_REQUEST_ID_BYTES: usize = MAX_NAME_BYTES + 1 + MAX_ID_BYTES;
/// Longest free text: a memo, an account holder's name.
pub const MAX_TEXT_BYTES: usize = 200;
/// Most entries in a payment's metadata (a map the payer chooses, stored and returned, never
/// interpreted): Stripe's bound, enough for order, invoice and customer references.
pub const MAX_PAYMENT_METADATA_ENTRIES: usize = 50;
/// Longest metadata key (letters, digits, `_ - . :`).
pub const MAX_PAYMENT_METADATA_KEY_BYTES: usize = 40;
/// Longest metadata value (text as a memo's: no control or bidirectional characters).
pub const MAX_PAYMENT_METADATA_VALUE_BYTES: usize = 500;
/// Most bytes of metadata (keys plus values) one payment carries: it is stored with every
/// payment row and returned with every read and event, so it stays well below a request.
pub const MAX_PAYMENT_METADATA_BYTES: usize = 8 * 1024;
/// The shortest and longest an authorization may hold funds (`expires_in_seconds`). A week
/// is what card networks commonly honour; longer holds belong to escrow, not authorizations.
pub const MIN_AUTHORIZATION_SECONDS: u32 = 1;
pub const MAX_AUTHORIZATION_SECONDS: u32 = 7 * 24 * 60 * 60;
/// Shortest password accepted (`password::check_password`).
pub const MIN_PASSWORD_BYTES: usize = 12;
/// Longest password accepted (argon2id hashes any length; this only bounds the work).
pub const MAX_PASSWORD_BYTES: usize = 256;

// ── Messages ────────────────────────────────────────────────────────────────────────────────

/// Largest request message a server (gateway or bank) decodes; every request is small.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Largest response a bank encodes (a journal page or the account list can be long).
pub const MAX_ENCODED_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Most metadata (header names + values) a request may carry (`grpc_limits`).
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
/// The largest metadata a client is promised a gRPC status for (`RESOURCE_EXHAUSTED`,
/// `too_large`) rather than an HTTP/2 error: what a foreign client plausibly sends by mistake
/// (a pasted file as a password). Beyond [`MAX_HEADER_LIST_BYTES`] there is no such promise.
pub const ANSWERED_METADATA_BYTES: usize = 1024 * 1024;
/// The HTTP/2 header-list limit servers set (SETTINGS_MAX_HEADER_LIST_SIZE). Far above
/// [`MAX_METADATA_BYTES`], so that `grpc_limits` answers anything up to
/// [`ANSWERED_METADATA_BYTES`] with a status: h2 allows a header block 1.25 × this in
/// CONTINUATION frames (at 16 KiB each) before it sends GOAWAY `too_many_continuations`, and
/// answers a list over this HTTP 431 + REFUSED_STREAM, which gRPC clients read as
/// `UNAVAILABLE`/`UNKNOWN` ("retry"). The cost: one partly received header block per
/// connection at a time (HTTP/2 allows no other frame in between), at its peak ≈ 3.25 × this
/// = 6.5 MiB (the raw block, ≤ 1.25 × this, plus the value being decoded, which Huffman code
/// can make 8/5 of its raw size) — a tenth of what a connection may already hold in partial
/// messages ([`MAX_CONCURRENT_STREAMS`] × [`MAX_MESSAGE_BYTES`] = 64 MiB); docs/OPERATIONS.md
/// ("Memory bounds") has the worst case.
pub const MAX_HEADER_LIST_BYTES: u32 = 2 * 1024 * 1024;
/// Concurrent HTTP/2 streams per connection a server allows.
pub const MAX_CONCURRENT_STREAMS: u32 = 1_024;

/// Most journal rows one `Bank/ListJournal` returns (and what the audit asks for per page).
pub const MAX_JOURNAL_PAGE: u32 = 1_000;
/// Most PREPARED legs one `Bank/ListAccounts` lists.
pub const MAX_PREPARED_LISTED: u32 = 10_000;

// ── Batches ─────────────────────────────────────────────────────────────────────────────────

/// Most prepares (or decisions) the gateway puts in one `PrepareBatch` / `FinishBatch`.
pub const GATEWAY_BATCH_ITEMS: usize = 128;
/// Most items a bank accepts in one batch RPC; a larger batch is `INVALID_ARGUMENT`.
pub const BANK_BATCH_ITEMS: usize = 256;

// ── Time ────────────────────────────────────────────────────────────────────────────────────

/// Default `--prepare-timeout`: how long phase 1 waits for each bank's vote.
pub const DEFAULT_PREPARE_TIMEOUT: Duration = Duration::from_secs(2);
/// Shortest `--prepare-timeout` accepted.
pub const MIN_PREPARE_TIMEOUT: Duration = Duration::from_millis(10);
/// Longest `--prepare-timeout` accepted. A `Pay` runs phase 1 (≤ this), writes the decision
/// and waits for phase 2 (≤ [`PHASE_TWO_CALL_TIMEOUT`]); all of it must fit in what the client
/// waits ([`CLIENT_CALL_TIMEOUT`]) with room for the fsyncs, or a payment that would have
/// succeeded reaches its user as "unknown".
pub const MAX_PREPARE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on each phase-2 (commit / abort) call to a bank.
pub const PHASE_TWO_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a `Pay` leaves for its own storage work (the PENDING record, the decision's fsync)
/// beyond the bank calls: what [`CLIENT_CALL_TIMEOUT`] must keep in reserve.
pub const PAY_STORAGE_ALLOWANCE: Duration = Duration::from_secs(2);
/// Bound on each call the gateway makes to a store on another server (PostgreSQL), waiting
/// for a connection included: a server that hangs fails the request as `UNAVAILABLE` instead
/// of hanging it. A `Pay` makes two such calls (PENDING record, decision) within
/// [`PAY_STORAGE_ALLOWANCE`].
pub const STORE_CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// The channel-level bound on any call the gateway makes to a bank. Above the longest prepare
/// timeout, so a slow vote is ended by the coordinator's own timeout (a `bank_timeout` abort).
pub const BANK_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the `strife client` waits for one call before counting the gateway unreachable.
pub const CLIENT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a bank's resolver waits for the gateway's answer to a decision query.
pub const DECISION_QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `strife audit` waits for one call to a bank.
pub const AUDIT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `strife bench` waits for one call (it drives the gateway to saturation, where
/// queueing adds to every call).
pub const BENCH_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest any one request may run on a server (gateway or bank); the cap for callers that
/// send no deadline of their own.
pub const SERVER_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after its prepare deadline a payment's decision may still be pending; banks ask
/// for the decision of legs still PREPARED after this.
pub const DECISION_GRACE: Duration = Duration::from_secs(5);
/// Bound on one etcd call (lease grant, put, get, watch start) by a registration or watch.
pub const ETCD_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long shutdown waits for a server's etcd deregistration.
pub const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a gateway's shutdown waits, after the drain, for payments still running: a
/// payment's phase 1 is bounded by the longest prepare timeout, then one decision write and
/// one phase-2 round. With the drain ([`DRAIN_LIMIT`]) and the deregistration this
/// bounds how long a SIGTERMed gateway takes to exit (docs/OPERATIONS.md, "Shutdown").
pub const FINISH_IN_FLIGHT_LIMIT: Duration = Duration::from_millis(
    (MAX_PREPARE_TIMEOUT.as_millis()
        + PAY_STORAGE_ALLOWANCE.as_millis()
        + PHASE_TWO_CALL_TIMEOUT.as_millis()) as u64,
);
/// How long a graceful shutdown lets open streams (a health `Watch`, a slow call) finish
/// before the remaining connections are closed.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// Longest a SIGTERMed gateway takes to exit: the drain, then the payments still running
/// ([`FINISH_IN_FLIGHT_LIMIT`]), then the abort of payments recorded PENDING whose phase 1
/// never began (one storage write, [`PAY_STORAGE_ALLOWANCE`]), then its etcd deregistration.
/// What docs/OPERATIONS.md ("Health and shutdown") promises an orchestrator.
pub const GATEWAY_SHUTDOWN_LIMIT: Duration = plus(
    plus(DRAIN_LIMIT, FINISH_IN_FLIGHT_LIMIT),
    plus(PAY_STORAGE_ALLOWANCE, DEREGISTER_TIMEOUT),
);
/// Decision window a bank gives a prepare that names no deadline of its own.
pub const DEFAULT_DECISION_WINDOW: Duration = Duration::from_secs(30);

// ── Connections ─────────────────────────────────────────────────────────────────────────────

/// Default cap on open connections per server (`--max-connections`).
pub const MAX_CONNECTIONS: usize = 4_096;
/// Smallest `--max-connections` accepted.
pub const MIN_MAX_CONNECTIONS: usize = 16;
/// Default cap on connections that have not spoken yet.
pub const MAX_SILENT_CONNECTIONS: usize = 512;
/// Default cap on connections per certificate: far above what a client or the bench opens,
/// far below [`MAX_CONNECTIONS`], so one stolen certificate cannot take every slot.
pub const MAX_CONNECTIONS_PER_PEER: usize = 256;
const _: () = assert!(MAX_CONNECTIONS_PER_PEER < MAX_CONNECTIONS);
/// Default wait for a new connection's first byte.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(3);
/// Default idle timeout (`--idle-timeout`); well above the request timeout and the keep-alive
/// interval of Strife's own channels, so only connections that really went quiet are closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default wait, on a server that counts connections per certificate (the gateway), for a
/// connection's first request (`--first-request-timeout`): a certificate is counted against
/// its cap only from its first request, so a connection that never makes one must not hold a
/// slot for long (else one certificate could fill every slot with idle handshakes).
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const _: () = assert!(shorter(FIRST_BYTE_TIMEOUT, FIRST_REQUEST_TIMEOUT));
const _: () = assert!(shorter(FIRST_REQUEST_TIMEOUT, IDLE_TIMEOUT));
/// How often Strife's own channels ping an otherwise quiet connection.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a channel waits for the answer to its ping before it drops the connection.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a channel waits for a TCP connection to a server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a TLS handshake may take on a server.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most gateway replicas anyone reads from etcd (`discovery::live_gateways`), and so the
/// most a bank keeps a channel to for its decision queries (`strife-bank`'s resolver) and
/// the most a replica sees alive when it decides whose payments to take over
/// (`strife-gateway`'s takeover).
///
/// Two pulls: a bank holds one channel (a TLS connection with keep-alive pings) per replica
/// it has asked, so the value must stay small; takeover counts a replica missing from the
/// list as dead and claims its unfinished payments (harmless to outcomes, which ownership
/// never decides, but wasted work), so the value must exceed any real deployment. 128
/// serves both: replicas share one PostgreSQL database and each holds two pools of 4 to 16
/// connections, so 128 replicas would already need over 1,000 database connections, far
/// past what one PostgreSQL serves without a pooler (measured deployments run 1 to 3);
/// 128 mostly idle connections are a small cost to a bank.
pub const MAX_GATEWAY_REPLICAS: usize = 128;

// ── HTTP listeners: the web console and the metrics endpoint ────────────────────────────────
//
// Both accept through `listener::bounded_incoming` with their own caps (independent of each
// other and of the gRPC port), share them fairly between client addresses, and make room for
// a new connection by closing the stalest one (see `net/listener.rs`).

/// Open web console connections at most (browsers open several each).
pub const CONSOLE_MAX_CONNECTIONS: usize = 256;
/// The console connections one client address group (an IPv4 address, an IPv6 /64) is due
/// when the console is full: a group over it gives way first, to a group under it.
pub const CONSOLE_MAX_CONNECTIONS_PER_ADDRESS: usize = 32;
/// Open metrics connections at most: the endpoint serves scrapers, not clients, but a
/// connection costs little (no TLS), and an attacker on the scraper's own address can only be
/// told apart by eviction while its connections fit under this cap (see `net/listener.rs`).
pub const METRICS_MAX_CONNECTIONS: usize = 64;
/// The metrics connections one client address group is due (as for the console).
pub const METRICS_MAX_CONNECTIONS_PER_ADDRESS: usize = 4;
/// How long a connection that has been answered must have been waiting — for its next
/// request since its last response, or for the rest of a request since that request's first
/// byte — before a full listener may close it for a new connection from its own address (one
/// never answered may be closed whenever it is the stalest). A working client's next request
/// is answered in milliseconds, never that late.
pub const EVICTION_MIN_STALE: Duration = Duration::from_secs(1);
/// A whole console request — headers and body — must have arrived, and its answer begun,
/// this long after its first byte; else the connection is answered 408 and closed.
pub const CONSOLE_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The same for a request to the metrics endpoint (a scrape is a few hundred bytes).
pub const METRICS_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A response of the console or the metrics endpoint (except the console's event stream)
/// must be written within this from its first byte, so a client that reads slowly (or not at
/// all) cannot hold a connection.
pub const HTTP_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a console or metrics connection may wait for its next (or first) request.
pub const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the console's event stream sends a keep-alive comment: the only traffic of a
/// quiet stream, so well inside [`HTTP_IDLE_TIMEOUT`].
pub const CONSOLE_EVENTS_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Open HTTP API connections at most: integrations keep connections alive and open several.
pub const HTTP_API_MAX_CONNECTIONS: usize = 1_024;
/// The HTTP API connections one client address group is due when the listener is full.
pub const HTTP_API_MAX_CONNECTIONS_PER_ADDRESS: usize = 128;
/// A whole HTTP API request must have arrived, and its answer begun, this long after its
/// first byte (a long poll of `GET /v1/events` waits at most 8 s, inside it).
pub const HTTP_API_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request body the HTTP API reads.
pub const HTTP_API_MAX_BODY_BYTES: usize = 16 * 1024;
/// Concurrent requests (HTTP/2 streams) one HTTP API connection may carry over HTTP/2.
pub const HTTP_API_MAX_STREAMS_PER_CONNECTION: u32 = 32;
/// The HTTP/2 header list one HTTP API request may send (HTTP/1.1's headers are bounded by
/// the connection's read buffer instead).
pub const HTTP_API_MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// HTTP API requests one API key may have in flight on one replica.
pub const HTTP_API_MAX_IN_FLIGHT_PER_KEY: usize = 64;
/// Open connections of gRPC with API keys at most (`--grpc-api-key-listen`): like the HTTP
/// API's port it takes connections from anyone, and an HTTP/2 connection can hold partial
/// messages on every stream, so it is capped lower.
pub const GRPC_API_KEY_MAX_CONNECTIONS: usize = 256;
/// The connections of gRPC with API keys one client address group is due.
pub const GRPC_API_KEY_MAX_CONNECTIONS_PER_ADDRESS: usize = 32;
/// Concurrent calls (HTTP/2 streams) one connection of gRPC with API keys may carry.
pub const GRPC_API_KEY_MAX_STREAMS_PER_CONNECTION: u32 = 32;
/// The HTTP/2 header list a connection of gRPC with API keys may send: a key and the usual
/// gRPC headers need a few hundred bytes; more is refused by HTTP/2 itself.
pub const GRPC_API_KEY_MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// An HTTP API response must be written within this from its first byte.
pub const HTTP_API_RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);

// ── Request rates (token buckets per replica; `strife-gateway` service/rate.rs) ─────────────

/// Requests per second one user may make of one replica, over every transport: far above
/// what a person or a shop does, and what `strife bench` drives per payer (≈ 1,000 per s).
pub const RATE_PER_USER_PER_SECOND: u32 = 5_000;
/// The burst above that rate.
pub const RATE_PER_USER_BURST: u32 = 10_000;
/// Requests per second one API key may make of one replica.
pub const RATE_PER_KEY_PER_SECOND: u32 = 1_000;
pub const RATE_PER_KEY_BURST: u32 = 2_000;
/// Buckets kept at most; past it the full ones (callers quiet long enough) are forgotten.
pub const MAX_RATE_BUCKETS: usize = 100_000;

// ── Console logins and sessions ─────────────────────────────────────────────────────────────

/// Console sessions held at once (all users).
pub const MAX_CONSOLE_SESSIONS: usize = 10_000;
/// Console sessions one user holds at once; one more closes that user's oldest, so no user
/// can fill [`MAX_CONSOLE_SESSIONS`].
pub const MAX_CONSOLE_SESSIONS_PER_USER: usize = 8;
/// Console login attempts (any outcome) one client address group may make per minute: each
/// runs argon2id, so this bounds the CPU one address can spend on them.
pub const CONSOLE_LOGINS_PER_ADDRESS_PER_MINUTE: u32 = 20;
/// Password checks (argon2id, 19 MiB each) that may wait for a CPU; past it a login is refused
/// at once instead of queueing memory and threads without bound.
pub const MAX_WAITING_PASSWORD_CHECKS: usize = 64;
/// Console password checks that may wait, counted apart from (and far below) the gRPC ones,
/// so console logins can never fill the queue gRPC logins wait in.
pub const MAX_WAITING_CONSOLE_PASSWORD_CHECKS: usize = 8;
/// Client addresses the gateway tracks for console logins (failures, attempt rate); past it
/// the idle ones are forgotten first.
pub const MAX_TRACKED_ADDRESSES: usize = 10_000;

// ── Payment events (WatchPayments) ──────────────────────────────────────────────────────────

/// Open watches a gateway serves at once, and per user: each holds a task and a connection.
pub const MAX_WATCHES: usize = 1_024;
pub const MAX_WATCHES_PER_USER: usize = 8;

// ── Open streams (`stream_limits`) ──────────────────────────────────────────────────────────

/// Streaming calls (health `Watch`, reflection, `WatchPayments`) one certificate may hold open
/// on one server at once, over all its connections. A stream is cheap to open and lives until
/// the client ends it, so without this one certificate could hold
/// [`MAX_CONNECTIONS_PER_PEER`] × [`MAX_CONCURRENT_STREAMS`] of them. A probe or grpcurl
/// needs one or two, a client's `watch` one, the console's live pages none (in-process).
pub const MAX_STREAMS_PER_PEER: usize = 32;
/// Streaming calls one server holds open at once, all certificates together: what bounds the
/// memory streams can take (docs/OPERATIONS.md, "Memory bounds").
pub const MAX_STREAMS: usize = 2_048;
/// Measured resident memory one open health `Watch` stream costs a gateway (HTTP/2 stream,
/// hyper task, tonic's encoder and the health watcher), rounded up from 10.7 KiB:
/// [`MAX_STREAMS`] × this is the documented worst case, which the e2e test checks.
pub const STREAM_MEMORY_BOUND_BYTES: usize = 16 * 1024;
/// How long a watcher waits for a missing position in the decision order before it decides
/// the position will never be filled (a decision transaction that rolled back). Longer than
/// any decision write may take (storage allowance), so a slow commit is never skipped.
pub const EVENT_GAP_GRACE: Duration = Duration::from_secs(5);
/// How often a watcher looks for decisions written by other replicas (its own replica's wake
/// it at once).
pub const EVENT_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Decisions read per store query by one watcher.
pub const EVENT_PAGE: u32 = 256;

// ── Addresses ───────────────────────────────────────────────────────────────────────────────

/// Where the gateway listens, and where clients look for it, unless told otherwise.
pub const DEFAULT_GATEWAY_ADDRESS: &str = "127.0.0.1:50050";

// ── The relationships, checked by the compiler ──────────────────────────────────────────────

/// `a < b` for durations in a const context.
const fn shorter(a: Duration, b: Duration) -> bool {
    a.as_nanos() < b.as_nanos()
}

/// `a + b` for durations in a const context (whole milliseconds are enough here).
const fn plus(a: Duration, b: Duration) -> Duration {
    Duration::from_millis((a.as_millis() + b.as_millis()) as u64)
}

// A full gateway batch must be one the bank accepts.
const _: () = assert!(GATEWAY_BATCH_ITEMS <= BANK_BATCH_ITEMS);
// The largest metadata fits in a request on either transport, JSON's quotes and separators
// (6 bytes an entry) and other fields included.
const _: () = assert!(
    MAX_PAYMENT_METADATA_BYTES + 6 * MAX_PAYMENT_METADATA_ENTRIES + 2 * 1024
        <= HTTP_API_MAX_BODY_BYTES
);
const _: () = assert!(HTTP_API_MAX_BODY_BYTES <= MAX_MESSAGE_BYTES);
// What partial messages every connection of gRPC with API keys may hold at once, at most.
const _: () = assert!(
    GRPC_API_KEY_MAX_CONNECTIONS
        * GRPC_API_KEY_MAX_STREAMS_PER_CONNECTION as usize
        * MAX_MESSAGE_BYTES
        <= 512 * 1024 * 1024
);
const _: () = assert!(GRPC_API_KEY_MAX_HEADER_LIST_BYTES as usize >= 8 * MAX_METADATA_BYTES);
// What request bodies every HTTP API connection over HTTP/2 may hold at once, at most.
const _: () = assert!(
    HTTP_API_MAX_CONNECTIONS
        * HTTP_API_MAX_STREAMS_PER_CONNECTION as usize
        * HTTP_API_MAX_BODY_BYTES
        <= 512 * 1024 * 1024
);
// A decision write still in progress is never mistaken for a permanent gap.
const _: () = assert!(shorter(PAY_STORAGE_ALLOWANCE, EVENT_GAP_GRACE));
const _: () = assert!(MAX_WATCHES_PER_USER < MAX_WATCHES);
// A payment watch is a stream: a user's watches fit in its certificate's stream slots, and
// the gateway's in its server-wide ones, with room left for probes.
const _: () = assert!(MAX_WATCHES_PER_USER < MAX_STREAMS_PER_PEER);
const _: () = assert!(MAX_WATCHES < MAX_STREAMS);
// One certificate cannot take every stream, and its share fits on one connection.
const _: () = assert!(MAX_STREAMS_PER_PEER < MAX_STREAMS);
const _: () = assert!(MAX_STREAMS_PER_PEER <= MAX_CONCURRENT_STREAMS as usize);
// The worst case of open streams stays small next to the connections' own (flow-control
// windows of 1 MiB each): under 64 MiB.
const _: () = assert!(MAX_STREAMS * STREAM_MEMORY_BOUND_BYTES <= 64 * 1024 * 1024);
// Ids, request ids and text fit many times over in a message.
const _: () = assert!(MAX_ID_BYTES < MAX_REQUEST_ID_BYTES);
const _: () = assert!(MAX_REQUEST_ID_BYTES + MAX_TEXT_BYTES < MAX_MESSAGE_BYTES / 16);
const _: () = assert!(MAX_NAME_BYTES < MAX_ID_BYTES);
const _: () = assert!(MIN_PASSWORD_BYTES < MAX_PASSWORD_BYTES);
const _: () = assert!(MAX_PASSWORD_BYTES < MAX_METADATA_BYTES);
const _: () = assert!(MAX_METADATA_BYTES < ANSWERED_METADATA_BYTES);
// h2 counts 32 bytes per field plus names, pseudo-headers and the other metadata: a list
// with an answered value must stay under the HTTP/2 limit with room to spare.
const _: () = assert!(ANSWERED_METADATA_BYTES + 64 * 1024 <= MAX_HEADER_LIST_BYTES as usize);
const _: () = assert!(MAX_MESSAGE_BYTES < MAX_ENCODED_MESSAGE_BYTES);
// The prepare timeout's range is non-empty and contains its default.
const _: () = assert!(shorter(MIN_PREPARE_TIMEOUT, DEFAULT_PREPARE_TIMEOUT));
const _: () = assert!(!shorter(MAX_PREPARE_TIMEOUT, DEFAULT_PREPARE_TIMEOUT));
// The coordinator's prepare timeout, not the bank channel's, ends a slow vote.
const _: () = assert!(shorter(MAX_PREPARE_TIMEOUT, BANK_CALL_TIMEOUT));
const _: () = assert!(shorter(PHASE_TWO_CALL_TIMEOUT, BANK_CALL_TIMEOUT));
// A whole `Pay` (phase 1 + decision + one round of phase 2) ends before the client gives up…
const _: () = assert!(shorter(
    plus(
        plus(MAX_PREPARE_TIMEOUT, PHASE_TWO_CALL_TIMEOUT),
        PAY_STORAGE_ALLOWANCE
    ),
    CLIENT_CALL_TIMEOUT
));
// …with both of its store calls inside the storage allowance…
const _: () = assert!(!shorter(
    PAY_STORAGE_ALLOWANCE,
    plus(STORE_CALL_TIMEOUT, STORE_CALL_TIMEOUT)
));
// …and the client (and any gateway → bank call) gives up before a server's own cap, so the
// server's timeout only ever ends calls from clients that set no deadline.
const _: () = assert!(!shorter(SERVER_REQUEST_TIMEOUT, CLIENT_CALL_TIMEOUT));
const _: () = assert!(!shorter(SERVER_REQUEST_TIMEOUT, BANK_CALL_TIMEOUT));
const _: () = assert!(!shorter(SERVER_REQUEST_TIMEOUT, AUDIT_CALL_TIMEOUT));
const _: () = assert!(shorter(DECISION_QUERY_TIMEOUT, SERVER_REQUEST_TIMEOUT));
// A bank asks about an overdue leg well within the decision grace it was given.
const _: () = assert!(shorter(DECISION_QUERY_TIMEOUT, DECISION_GRACE));
// A bank asks for a decision only after the coordinator's own deadline has passed.
const _: () = assert!(shorter(
    plus(MAX_PREPARE_TIMEOUT, DECISION_GRACE),
    DEFAULT_DECISION_WINDOW
));
// Connections: the eviction queue is a part of all connections; a channel pings well inside
// the idle timeout; a request can finish inside it.
const _: () = assert!(MAX_SILENT_CONNECTIONS < MAX_CONNECTIONS);
const _: () = assert!(MIN_MAX_CONNECTIONS <= MAX_CONNECTIONS);
const _: () = assert!(shorter(FIRST_BYTE_TIMEOUT, IDLE_TIMEOUT));
const _: () = assert!(shorter(
    plus(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_INTERVAL),
    IDLE_TIMEOUT
));
const _: () = assert!(shorter(SERVER_REQUEST_TIMEOUT, IDLE_TIMEOUT));
const _: () = assert!(shorter(KEEP_ALIVE_TIMEOUT, KEEP_ALIVE_INTERVAL));
// A client gives up connecting before its call's own deadline would.
const _: () = assert!(shorter(CONNECT_TIMEOUT, CLIENT_CALL_TIMEOUT));
// HTTP listeners: an address's due share is a part of the cap; a connection is never evicted
// before a request could have been answered, nor a slow one kept past its deadline; a quiet
// event stream keeps its connection; the HTTP deadlines end before the server's idle timeout.
const _: () = assert!(CONSOLE_MAX_CONNECTIONS_PER_ADDRESS < CONSOLE_MAX_CONNECTIONS);
const _: () = assert!(HTTP_API_MAX_CONNECTIONS_PER_ADDRESS < HTTP_API_MAX_CONNECTIONS);
const _: () = assert!(shorter(HTTP_API_REQUEST_TIMEOUT, HTTP_IDLE_TIMEOUT));
const _: () = assert!(METRICS_MAX_CONNECTIONS_PER_ADDRESS < METRICS_MAX_CONNECTIONS);
const _: () = assert!(shorter(EVICTION_MIN_STALE, METRICS_REQUEST_TIMEOUT));
const _: () = assert!(!shorter(CONSOLE_REQUEST_TIMEOUT, METRICS_REQUEST_TIMEOUT));
const _: () = assert!(shorter(CONSOLE_REQUEST_TIMEOUT, HTTP_IDLE_TIMEOUT));
const _: () = assert!(!shorter(
    HTTP_IDLE_TIMEOUT,
    plus(CONSOLE_EVENTS_KEEP_ALIVE, CONSOLE_EVENTS_KEEP_ALIVE)
));
const _: () = assert!(shorter(HTTP_IDLE_TIMEOUT, IDLE_TIMEOUT));
const _: () = assert!(shorter(HTTP_RESPONSE_TIMEOUT, IDLE_TIMEOUT));
// Console logins: one user's sessions are a small part of all; the console's wait queue a
// small part of the gRPC one.
const _: () = assert!(MAX_CONSOLE_SESSIONS_PER_USER * 1_000 <= MAX_CONSOLE_SESSIONS);
const _: () = assert!(MAX_WAITING_CONSOLE_PASSWORD_CHECKS * 8 <= MAX_WAITING_PASSWORD_CHECKS);

// ── Validation ──────────────────────────────────────────────────────────────────────────────

/// The one id check (CLI, gateway and bank): 1 to [`MAX_ID_BYTES`] bytes of printable ASCII
/// without spaces. `kind` is the proto field it checks (`"idempotency_key"`): a refusal is
/// [`Failure::InvalidField`] for it.
pub fn validate_id(kind: &str, text: &str) -> Result<(), Failure> {
    validate_id_within(kind, text, MAX_ID_BYTES)
}

/// [`validate_id`] for a bank's `OpenAccount` request id (up to [`MAX_REQUEST_ID_BYTES`]).
pub fn validate_request_id(kind: &str, text: &str) -> Result<(), Failure> {
    validate_id_within(kind, text, MAX_REQUEST_ID_BYTES)
}

fn validate_id_within(kind: &str, text: &str, max_bytes: usize) -> Result<(), Failure> {
    if text.is_empty() {
        return Err(Failure::invalid_field(kind, format!("{kind} is empty")));
    }
    if text.len() > max_bytes {
        return Err(Failure::invalid_field(
            kind,
            format!("{kind} is longer than {max_bytes} bytes"),
        ));
    }
    // Printable ASCII only: ids end up in logs, file-free SQL keys and metadata; no byte of
    // them can reorder or hide text, and each has exactly one spelling.
    if !text.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(Failure::invalid_field(
            kind,
            format!("{kind} must be printable ASCII without spaces"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        match validate_id("idempotency_key", text) {
            Err(Failure::InvalidField { field, message }) => {
                assert_eq!(field, "idempotency_key");
                message
            }
            other => panic!("{text:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn a_gateway_exits_within_the_nineteen_seconds_the_operations_guide_promises() {
        // docs/OPERATIONS.md ("Health and shutdown") adds the parts up by hand: keep it true.
        assert_eq!(GATEWAY_SHUTDOWN_LIMIT, Duration::from_secs(19));
    }

    #[test]
    fn ids_are_one_to_max_bytes_of_printable_ascii() {
        assert_eq!(validate_id("payment_id", "a"), Ok(()));
        assert_eq!(validate_id("payment_id", &"x".repeat(MAX_ID_BYTES)), Ok(()));
        assert_eq!(refused(""), "idempotency_key is empty");
        assert!(refused(&"x".repeat(MAX_ID_BYTES + 1)).contains("longer than 128"));
        for bad in ["a b", "tab\there", "é", "\u{202E}x", "line\n"] {
            assert!(refused(bad).contains("printable ASCII"), "{bad:?}");
        }
    }

    #[test]
    fn a_request_id_holds_an_admin_name_and_the_longest_key() {
        let request_id = format!(
            "{}/{}",
            "a".repeat(MAX_NAME_BYTES),
            "k".repeat(MAX_ID_BYTES)
        );
        assert_eq!(validate_request_id("request_id", &request_id), Ok(()));
        assert!(validate_request_id("request_id", &format!("{request_id}k")).is_err());
    }
}
