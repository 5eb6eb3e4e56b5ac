//! The web console (`strife gateway --web-listen`): server-rendered HTML over HTTPS, for
//! people with a browser instead of the CLI.
//!
//! It sits inside the gateway process and calls the gateway's own `strife.v1.Gateway`
//! handlers ([`GatewayApi`]) with the [`Caller`] the gRPC auth layer would have put on the
//! request, after the same role table ([`crate::roles`]) allowed the method — so validation,
//! idempotency, scoping and refusals are exactly those of gRPC. Logins go through the same
//! [`Authenticator`] (argon2id and the shared lockout, in the name's console scope, behind a
//! per-client-address throttle: [`Authenticator::authenticate_console`]); browsers have no
//! client certificate, so the role comes from the user's record in the store.
//!
//! The HTTPS listener has caps of its own (per client address too), evicts its stalest
//! connection for a newcomer when full, and holds every connection to the HTTP deadlines of
//! [`strife_common::net::listener::HttpStream`]; each request carries its client's address
//! (`ConnectInfo`) and its connection's handle.
//!
//! - [`session`]: server-side sessions (random id in an `HttpOnly; Secure; SameSite=Strict`
//!   cookie), one CSRF token per session.
//! - [`html`]: escaping, the page frame, money and refusals as the CLI words them.
//! - [`payer`]: login, balances, pay, history, payment detail, refunds.
//! - [`operator`]: network, live payments, settlement (SVG chart), users and accounts.
//! - [`events`]: server-sent events from the payment events stream.

mod events;
mod html;
mod operator;
mod payer;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use strife_common::layout::KeyPairPaths;
use strife_common::limits::{
    CONSOLE_MAX_CONNECTIONS, CONSOLE_MAX_CONNECTIONS_PER_ADDRESS, CONSOLE_REQUEST_TIMEOUT,
    EVICTION_MIN_STALE, HTTP_IDLE_TIMEOUT, HTTP_RESPONSE_TIMEOUT, TLS_HANDSHAKE_TIMEOUT,
};
use strife_common::net::connection::{PeerIdentity, PeerRole};
use strife_common::net::listener::{bounded_incoming, HttpDeadlines, HttpStream, ListenerLimits};
use strife_common::Failure;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::{Request, Status};

use crate::auth::Authenticator;
use crate::grpc::gateway::GatewayGrpc as GatewayApi;
use crate::metrics::GatewayMetrics;
use crate::registry::BankRegistry;
use crate::request::Caller;
use crate::roles::{allowed_roles, Role};
use session::{cookie_value, Session, Sessions, SESSION_COOKIE};
use strife_ledger::store::GatewayStore;

/// Largest request body (forms are a few fields).
const MAX_BODY_BYTES: usize = 16 * 1024;
/// The deadlines of a console connection: a whole request (headers and body) within 10 s,
/// each answer (but the event stream) taken within 10 s, at most 30 s between requests.
const HTTP_DEADLINES: HttpDeadlines = HttpDeadlines {
    request: CONSOLE_REQUEST_TIMEOUT,
    response: HTTP_RESPONSE_TIMEOUT,
    idle: HTTP_IDLE_TIMEOUT,
};

/// What the console pages need from the gateway.
pub struct Console {
    api: Arc<GatewayApi>,
    authenticator: Arc<Authenticator>,
    registry: Arc<BankRegistry>,
    metrics: Arc<GatewayMetrics>,
    store: Arc<dyn GatewayStore>,
    /// This replica's coordinator id: its unfinished payments are the legs in doubt.
    replica: String,
    sessions: Sessions,
}

impl Console {
    pub fn new(
        api: Arc<GatewayApi>,
        authenticator: Arc<Authenticator>,
        registry: Arc<BankRegistry>,
        metrics: Arc<GatewayMetrics>,
        store: Arc<dyn GatewayStore>,
        replica: String,
    ) -> Self {
        Console {
            api,
            authenticator,
            registry,
            metrics,
            store,
            replica,
            sessions: Sessions::default(),
        }
    }
}

/// A gRPC request from the logged-in user, carrying what the auth layer would have attached,
/// once the role table allows `method` (`"Pay"`, `"GetPositions"`, …) for their role.
pub fn grpc_request<T>(session: &Session, method: &str, body: T) -> Result<Request<T>, Status> {
    let path = format!("/strife.v1.Gateway/{method}");
    let allowed = allowed_roles(&path).unwrap_or(&[]);
    if !allowed.contains(&session.role) {
        return Err(Failure::PermissionDenied(format!(
            "{} may not call {path}",
            session.role.as_str()
        ))
        .into());
    }
    let mut request = Request::new(body);
    request.extensions_mut().insert(Caller {
        username: session.username.clone(),
        role: session.role,
        peer: PeerIdentity {
            role: PeerRole::User,
            name: session.username.clone(),
        },
    });
    Ok(request)
}

/// A logged-in user (any role). Without a live session: a redirect to the login page.
pub struct LoggedIn {
    pub session: Session,
}

impl<S> FromRequestParts<S> for LoggedIn
where
    Arc<Console>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let console = Arc::<Console>::from_ref(state);
        let session = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find_map(|cookies| cookie_value(cookies, SESSION_COOKIE))
            .and_then(|id| console.sessions.get(id));
        match session {
            Some(session) => Ok(LoggedIn { session }),
            None => Err(Redirect::to("/login").into_response()),
        }
    }
}

/// A logged-in admin; anyone else gets 403.
pub struct Operator {
    pub session: Session,
}

impl<S> FromRequestParts<S> for Operator
where
    Arc<Console>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let LoggedIn { session } = LoggedIn::from_request_parts(parts, state).await?;
        if session.role != Role::Admin {
            return Err(html::Page::new(
                "Forbidden",
                Some(&session),
                html::notice("error", "Operator pages are for the admin only."),
            )
            .with_status(StatusCode::FORBIDDEN)
            .into_response());
        }
        Ok(Operator { session })
    }
}

/// The CSRF check every POST makes before anything else: the 403 page when the form's token
/// is not the session's.
pub fn csrf_refusal(session: &Session, given: &str) -> Option<Response> {
    (!session::tokens_match(given, &session.csrf)).then(|| forbidden_form(Some(session)))
}

fn forbidden_form(session: Option<&Session>) -> Response {
    html::Page::new(
        "Forbidden",
        session,
        html::notice(
            "error",
            "This form is stale or did not come from this console (CSRF check failed). Reload the page and try again.",
        ),
    )
    .with_status(StatusCode::FORBIDDEN)
    .into_response()
}

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}

/// Headers on every answer: no inline script or style (so injected markup cannot run), no
/// framing, no caching of pages with balances, HTTPS only.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(
        headers,
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=31536000",
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

/// One log line per console request: method, path, status and time. Never the query string,
/// a cookie or a form body (where the password, session id and CSRF token travel).
async fn log_request(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        %method,
        path = %path.escape_debug(),
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "console request"
    );
    response
}

async fn not_found() -> Response {
    html::Page::new(
        "Not found",
        None,
        html::notice("error", "There is no such page. Go to the home page: /"),
    )
    .with_status(StatusCode::NOT_FOUND)
    .into_response()
}

/// Every route of the console.
pub fn router(console: Arc<Console>) -> Router {
    use axum::routing::{get, post};
    Router::new()
        .route("/", get(payer::home))
        .route("/login", get(payer::login_form).post(payer::login))
        .route("/logout", post(payer::logout))
        .route("/pay", post(payer::pay))
        .route("/history", get(payer::history))
        .route("/payments/{payment_id}", get(payer::payment))
        .route("/payments/{payment_id}/refund", post(payer::refund))
        .route("/events", get(events::payment_events))
        .route("/ops/network", get(operator::network))
        .route("/ops/payments", get(operator::payments))
        .route("/ops/settlement", get(operator::settlement))
        .route("/ops/settlement/close", post(operator::close_window))
        .route("/ops/settlement/cap", post(operator::set_cap))
        .route("/ops/windows/{window_id}", get(operator::window_report))
        .route(
            "/ops/windows/{window_id}/settle",
            post(operator::mark_settled),
        )
        .route("/ops/users", get(operator::users))
        .route("/ops/users/register", post(operator::register_user))
        .route("/ops/users/open-account", post(operator::open_account))
        .route(
            "/static/console.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/static/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(console)
}

/// The console's HTTPS listener, bound before the gateway announces itself.
pub struct WebEndpoint {
    listener: TcpListener,
    address: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
}

impl WebEndpoint {
    /// Binds `address` and loads the console certificate (`strife setup` issues it).
    pub async fn bind(address: SocketAddr, identity: &KeyPairPaths) -> anyhow::Result<Self> {
        strife_common::net::tls::check_key_is_private(&identity.key)?;
        let chain = CertificateDer::pem_file_iter(&identity.cert)
            .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
            .with_context(|| {
                format!(
                    "cannot read the console certificate {}; run `strife setup` (it issues it)",
                    identity.cert.display()
                )
            })?;
        let key = PrivateKeyDer::from_pem_file(&identity.key)
            .with_context(|| format!("cannot read the console key {}", identity.key.display()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the console certificate and key do not match")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen for the web console on {address}"))?;
        let address = listener.local_addr()?;
        Ok(WebEndpoint {
            listener,
            address,
            tls: Arc::new(config),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves `console` until `shutdown` turns true.
    pub fn serve(
        self,
        console: Arc<Console>,
        server_limits: ListenerLimits,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        // Its own caps, apart from the gRPC port's and the metrics endpoint's, so an attack on
        // one leaves the others alone; shared fairly between client addresses, and a full
        // console makes room for a newcomer by closing its stalest connection.
        let limits = ListenerLimits {
            max_connections: CONSOLE_MAX_CONNECTIONS,
            // No peers are attached here (no certificates): no first-request deadline.
            first_request_timeout: None,
            max_per_address: Some(CONSOLE_MAX_CONNECTIONS_PER_ADDRESS),
            evict_stalest_after: Some(EVICTION_MIN_STALE),
            ..server_limits
        };
        let app = router(console);
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls);
        tracing::info!(address = %self.address, "serving the web console at https://{}/", self.address);
        tokio::spawn(async move {
            let mut incoming = bounded_incoming(self.listener, limits);
            loop {
                let next = tokio::select! {
                    next = incoming.next() => next,
                    _ = shutdown.wait_for(|stop| *stop) => return,
                };
                match next {
                    Some(Ok(stream)) => {
                        let acceptor = acceptor.clone();
                        let app = app.clone();
                        tokio::spawn(async move {
                            let connection = stream.handle();
                            let client = connection.as_ref().map(|handle| handle.peer_address());
                            let handshake = tokio::time::timeout(
                                TLS_HANDSHAKE_TIMEOUT,
                                acceptor.accept(stream),
                            );
                            let stream = match handshake.await {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(error)) => {
                                    tracing::debug!(%error, "console TLS handshake failed");
                                    return;
                                }
                                Err(_) => return,
                            };
                            let stream =
                                HttpStream::new(stream, connection.clone(), HTTP_DEADLINES);
                            // Every request carries its client's address (the login throttle
                            // counts by it) and the connection's handle (the event stream
                            // marks its response as one without an end).
                            let app = tower::ServiceExt::map_request(
                                app,
                                move |mut request: axum::http::Request<hyper::body::Incoming>| {
                                    if let Some(client) = client {
                                        request
                                            .extensions_mut()
                                            .insert(axum::extract::ConnectInfo(client));
                                    }
                                    if let Some(connection) = &connection {
                                        request.extensions_mut().insert(connection.clone());
                                    }
                                    request
                                },
                            );
                            let service = hyper_util::service::TowerToHyperService::new(app);
                            let connection = hyper::server::conn::http1::Builder::new()
                                .timer(TokioTimer::new())
                                .header_read_timeout(CONSOLE_REQUEST_TIMEOUT)
                                .max_buf_size(MAX_BODY_BYTES * 4)
                                .serve_connection(TokioIo::new(stream), service);
                            if let Err(error) = connection.await {
                                tracing::debug!(%error, "console connection ended");
                            }
                        });
                    }
                    Some(Err(error)) => tracing::debug!(%error, "console accept failed"),
                    None => return,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(role: Role) -> Session {
        Sessions::default()
            .open("alice", role)
            .map(|(_, session)| session)
            .unwrap()
    }

    #[test]
    fn the_role_table_decides_what_a_session_may_call() {
        let payer = session(Role::Client);
        let status = grpc_request(&payer, "GetPositions", ()).unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        let request = grpc_request(&payer, "Pay", ()).unwrap();
        let caller = request.extensions().get::<Caller>().unwrap();
        assert_eq!(caller.username, "alice");
        assert_eq!(caller.role, Role::Client);
        assert!(grpc_request(&session(Role::Admin), "CloseSettlementWindow", ()).is_ok());
        assert!(grpc_request(&session(Role::Admin), "NoSuchMethod", ()).is_err());
    }

    #[test]
    fn a_stale_or_missing_csrf_token_is_refused() {
        let payer = session(Role::Client);
        assert!(csrf_refusal(&payer, &payer.csrf).is_none());
        let refused = csrf_refusal(&payer, "").unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(csrf_refusal(&payer, "0000").is_some());
    }

    #[test]
    fn the_positions_chart_is_an_svg_bar_per_bank_with_the_cap_drawn() {
        use strife_proto::v1 as pb;
        let usd = |amount_minor| {
            Some(pb::Money {
                amount_minor,
                currency: "USD".into(),
            })
        };
        let chart = operator::positions_chart(&[
            pb::BankPosition {
                bank_id: "bank0".into(),
                position: usd(1250),
                reserved: usd(0),
                cap: usd(5000),
                headroom: usd(3750),
            },
            pb::BankPosition {
                bank_id: "<b>".into(),
                position: usd(-1250),
                reserved: usd(0),
                cap: None,
                headroom: None,
            },
        ]);
        assert!(chart.starts_with("<svg"));
        assert_eq!(chart.matches("class=\"position\"").count(), 2);
        assert_eq!(chart.matches("class=\"cap\"").count(), 1);
        assert!(chart.contains("25 % used"));
        assert!(chart.contains("&lt;b&gt;") && !chart.contains("<b>"));
    }
}
