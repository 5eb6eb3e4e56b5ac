//! The web console and the metrics endpoint under the attacks of security round three
//! (docs/SECURITY.md, "Round three"), against a real gateway over real sockets: slow request
//! bodies filling the console, slow headers filling the metrics port, one user filling the
//! session table, and console guesses used to lock people (the admin included) out.
//!
//! The console is spoken to as a browser would, over TLS trusting only the project CA, from
//! chosen loopback addresses (127.0.0.0/8 is all loopback on Linux), so one test can be the
//! attacker, the victim and the bystander at once.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use strife_common::limits::{CONSOLE_MAX_CONNECTIONS, METRICS_MAX_CONNECTIONS};
use strife_proto::v1 as pb;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tonic::Code;

use crate::support::network::{ManualNetwork, NetworkOptions};
use crate::support::wait_until;

/// How long a legitimate client waits for one answer before counting the try as failed.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long an attacking connection waits before reconnecting once it is closed (or refused):
/// a slow-request tool's loop, not a tight spin.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// Tries of the legitimate client per attack, and the share of them that must succeed.
const TRIES: usize = 100;
const REQUIRED_PERCENT: usize = 99;

/// A network whose gateway serves the console and metrics; alice and bob are registered
/// (with an account each).
async fn console_network(extra: &[&str]) -> ManualNetwork {
    let mut gateway_args: Vec<String> = [
        "--web-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    gateway_args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    let options = NetworkOptions {
        gateway_args,
        ..NetworkOptions::default()
    };
    let network = ManualNetwork::start_with(&["bank0"], &["alice", "bob"], options).await;
    network.fund("alice", "bank0", "10.00").await;
    network.fund("bob", "bank0", "10.00").await;
    network
}

fn ready_address(network: &ManualNetwork, field: &str) -> SocketAddr {
    network.gateway_ready[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {}", network.gateway_ready))
        .parse()
        .unwrap()
}

/// TLS to the console as a browser that trusts only the project CA.
fn connector(network: &ManualNetwork) -> TlsConnector {
    TlsConnector::from(crate::support::trusting_only(
        &network.network.layout().ca().cert,
    ))
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
    socket.connect(to).await
}

async fn tls_from(
    connector: &TlsConnector,
    from: &str,
    to: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = connect_from(from, to).await?;
    let name = ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

/// One HTTP/1.1 answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    /// The value a `Set-Cookie` header gives cookie `name` (non-empty).
    fn cookie(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            if !key.eq_ignore_ascii_case("set-cookie") {
                return None;
            }
            let value = value.trim().strip_prefix(name)?.strip_prefix('=')?;
            let value = value.split(';').next()?.trim();
            (!value.is_empty()).then(|| value.to_owned())
        })
    }

    fn location(&self) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case("location").then(|| value.trim())
        })
    }
}

/// Sends `request` (which asks for `Connection: close`) and reads the whole answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &str,
) -> Result<Answer, String> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| format!("write: {error}"))?;
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) => break,
            Ok(read) => bytes.extend_from_slice(&buffer[..read]),
            // The server may close without a TLS close_notify once the answer is complete.
            Err(_) if !bytes.is_empty() => break,
            Err(error) => return Err(format!("read: {error}")),
        }
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status: {head:?}"))?;
    Ok(Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// One HTTPS request to the console from `from`, within [`PATIENCE`].
async fn https(
    connector: &TlsConnector,
    console: SocketAddr,
    from: &str,
    request: &str,
) -> Result<Answer, String> {
    let attempt = async {
        let mut tls = tls_from(connector, from, console)
            .await
            .map_err(|error| format!("connect: {error}"))?;
        exchange(&mut tls, request).await
    };
    tokio::time::timeout(PATIENCE, attempt)
        .await
        .unwrap_or_else(|_| Err("no answer in time".into()))
}

/// One plain HTTP request to the metrics endpoint from `from`, within [`PATIENCE`].
async fn http(metrics: SocketAddr, from: &str, request: &str) -> Result<Answer, String> {
    let attempt = async {
        let mut tcp = connect_from(from, metrics)
            .await
            .map_err(|error| format!("connect: {error}"))?;
        exchange(&mut tcp, request).await
    };
    tokio::time::timeout(PATIENCE, attempt)
        .await
        .unwrap_or_else(|_| Err("no answer in time".into()))
}

fn get(path: &str, cookie: Option<&str>) -> String {
    let cookie = cookie
        .map(|cookie| format!("Cookie: {cookie}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{cookie}Connection: close\r\n\r\n")
}

/// `application/x-www-form-urlencoded` for one value.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A console login from `from`, as the login form does it: fetch the form (its CSRF cookie),
/// then post the name and password with it.
async fn console_login(
    connector: &TlsConnector,
    console: SocketAddr,
    from: &str,
    user: &str,
    password: &str,
) -> Answer {
    let form = https(connector, console, from, &get("/login", None))
        .await
        .unwrap();
    assert_eq!(form.status, 200, "{form:?}");
    let token = form
        .cookie("__Host-strife-login")
        .expect("the login form sets its CSRF cookie");
    let body = format!(
        "username={}&password={}&csrf={token}",
        form_encode(user),
        form_encode(password)
    );
    let request = format!(
        "POST /login HTTP/1.1\r\nHost: localhost\r\nCookie: __Host-strife-login={token}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    https(connector, console, from, &request).await.unwrap()
}

/// Asserts a refused login page: `status`, with `text` on it.
fn assert_refused(answer: &Answer, status: u16, text: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert!(
        answer.body.contains(text),
        "{text:?} not in {}",
        answer.body
    );
}

/// A value of the gateway's metrics (0 if absent).
async fn metric(metrics: SocketAddr, name: &str) -> f64 {
    let answer = http(metrics, "127.0.0.1", &get("/metrics", None))
        .await
        .unwrap();
    answer
        .body
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Connections that send a request's start and then one byte a second, for ever; each one
/// closed (or refused) is opened again after [`RECONNECT_PAUSE`].
struct SlowRequests {
    stop: Arc<AtomicBool>,
    /// Connections open now that have sent their request's start.
    holding: Arc<AtomicUsize>,
    /// Connections opened (handshake done, request started) since the attack began.
    opened: Arc<AtomicUsize>,
    /// Connections the server ended with `408 Request Timeout` (the whole-request deadline).
    timed_out: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How an attacking connection reaches its server.
#[derive(Clone)]
enum Target {
    Console(TlsConnector),
    Metrics,
}

impl SlowRequests {
    /// `connections` attackers from `from`, each starting with `start` and then trickling.
    fn start(target: Target, to: SocketAddr, from: &'static str, connections: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let holding = Arc::new(AtomicUsize::new(0));
        let opened = Arc::new(AtomicUsize::new(0));
        let timed_out = Arc::new(AtomicUsize::new(0));
        let tasks = (0..connections)
            .map(|_| {
                let (target, stop, holding, opened, timed_out) = (
                    target.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&holding),
                    Arc::clone(&opened),
                    Arc::clone(&timed_out),
                );
                let counters = Counters {
                    stop,
                    holding,
                    opened,
                    timed_out,
                };
                tokio::spawn(async move {
                    while !counters.stop.load(Ordering::Relaxed) {
                        match &target {
                            Target::Console(connector) => {
                                if let Ok(Ok(tls)) =
                                    tokio::time::timeout(PATIENCE, tls_from(connector, from, to))
                                        .await
                                {
                                    trickle(
                                        tls,
                                        "POST /login HTTP/1.1\r\nHost: localhost\r\n\
                                         Content-Type: application/x-www-form-urlencoded\r\n\
                                         Content-Length: 4096\r\n\r\n",
                                        &counters,
                                    )
                                    .await;
                                }
                            }
                            Target::Metrics => {
                                if let Ok(tcp) = connect_from(from, to).await {
                                    trickle(
                                        tcp,
                                        "GET /metrics HTTP/1.1\r\nHost: strife\r\nX-Slow: ",
                                        &counters,
                                    )
                                    .await;
                                }
                            }
                        }
                        tokio::time::sleep(RECONNECT_PAUSE).await;
                    }
                })
            })
            .collect();
        SlowRequests {
            stop,
            holding,
            opened,
            timed_out,
            tasks,
        }
    }

    fn timed_out(&self) -> usize {
        self.timed_out.load(Ordering::Relaxed)
    }

    fn holding(&self) -> usize {
        self.holding.load(Ordering::Relaxed)
    }

    fn opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// One attacking task's view of the attack's counters.
struct Counters {
    stop: Arc<AtomicBool>,
    holding: Arc<AtomicUsize>,
    opened: Arc<AtomicUsize>,
    timed_out: Arc<AtomicUsize>,
}

/// Sends `start`, then one byte a second until the server closes (a write or a read fails,
/// or it answers: only ever to end the request).
async fn trickle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    start: &str,
    counters: &Counters,
) {
    if stream.write_all(start.as_bytes()).await.is_err() {
        return;
    }
    counters.holding.fetch_add(1, Ordering::Relaxed);
    counters.opened.fetch_add(1, Ordering::Relaxed);
    let mut answer = [0u8; 512];
    while !counters.stop.load(Ordering::Relaxed) {
        if stream.write_all(b"a").await.is_err() || stream.flush().await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut answer)).await {
            Err(_) => continue,
            Ok(Ok(read)) if answer[..read].starts_with(b"HTTP/1.1 408 ") => {
                counters.timed_out.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Ok(_) => break,
        }
    }
    counters.holding.fetch_sub(1, Ordering::Relaxed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_slow_bodies_do_not_keep_a_browser_out() {
    let network = console_network(&[]).await;
    let console = ready_address(&network, "web_address");
    let metrics = ready_address(&network, "metrics_address");
    let connector = connector(&network);
    // From another address, then from the browser's own (the same host, or a NAT).
    for attacker in ["127.0.0.2", "127.0.0.1"] {
        let started = Instant::now();
        let attack = SlowRequests::start(
            Target::Console(connector.clone()),
            console,
            attacker,
            CONSOLE_MAX_CONNECTIONS,
        );
        let full = wait_until(Duration::from_secs(30), || async {
            attack.holding() >= CONSOLE_MAX_CONNECTIONS - 4
        })
        .await;
        assert!(
            full,
            "the attack never filled the console: {} connections held",
            attack.holding()
        );
        let held = attack.holding();
        let mut failures = Vec::new();
        let mut answered = 0;
        for index in 0..TRIES {
            // Metrics stay served while the console is attacked (their own listener).
            if index % 10 == 0 {
                let scraped = http(metrics, "127.0.0.1", &get("/metrics", None)).await;
                assert!(
                    matches!(scraped, Ok(ref answer) if answer.status == 200),
                    "{scraped:?}"
                );
            }
            match https(&connector, console, "127.0.0.1", &get("/login", None)).await {
                Ok(answer) if answer.status == 200 => answered += 1,
                other if failures.len() < 5 => failures.push(format!("{other:?}")),
                // The first few are enough to tell why.
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let reopened = attack.opened();
        let still_held = attack.holding();
        let timed_out = attack.timed_out();
        attack.stop().await;
        eprintln!(
            "console, slow bodies from {attacker}: GET /login answered {answered}/{TRIES} \
             ({:.1} %) while the attack held {held}..{still_held} connections \
             ({reopened} opened in {:.0?}, {timed_out} ended by 408 at the request deadline); \
             failures: {failures:?}",
            answered as f64 * 100.0 / TRIES as f64,
            started.elapsed()
        );
        assert!(
            answered * 100 >= TRIES * REQUIRED_PERCENT,
            "from {attacker}: {answered}/{TRIES}; failures: {failures:?}"
        );
        // A body still arriving after 10 s is answered 408 and its connection closed.
        assert!(timed_out > 0, "no slow body was ended at its deadline");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_slow_headers_do_not_keep_a_scraper_out() {
    let network = console_network(&[]).await;
    let metrics = ready_address(&network, "metrics_address");
    // The scraper's own address filling the endpoint, then another address with twice that.
    for (attacker, connections) in [
        ("127.0.0.1", METRICS_MAX_CONNECTIONS),
        ("127.0.0.2", 2 * METRICS_MAX_CONNECTIONS),
    ] {
        let attack = SlowRequests::start(Target::Metrics, metrics, attacker, connections);
        let full = wait_until(Duration::from_secs(20), || async {
            attack.holding() >= METRICS_MAX_CONNECTIONS - 2
        })
        .await;
        assert!(
            full,
            "the attack never filled the endpoint: {}",
            attack.holding()
        );
        let held = attack.holding();
        let mut failures = Vec::new();
        let mut scraped = 0;
        for _ in 0..TRIES {
            match http(metrics, "127.0.0.1", &get("/metrics", None)).await {
                Ok(answer) if answer.status == 200 && answer.body.contains("strife_") => {
                    scraped += 1
                }
                other if failures.len() < 5 => failures.push(format!("{other:?}")),
                // The first few are enough to tell why.
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let reopened = attack.opened();
        let timed_out = attack.timed_out();
        attack.stop().await;
        eprintln!(
            "metrics, {connections} slow headers from {attacker}: {scraped}/{TRIES} scrapes \
             ({:.1} %) with {held} connections held ({reopened} opened, {timed_out} ended by \
             408 at the request deadline); failures: {failures:?}",
            scraped as f64 * 100.0 / TRIES as f64
        );
        if attacker == "127.0.0.1" {
            // Headers still arriving after 5 s are answered 408 and the connection closed.
            assert!(timed_out > 0, "no slow request was ended at its deadline");
        }
        assert!(
            scraped * 100 >= TRIES * REQUIRED_PERCENT,
            "from {attacker}: {scraped}/{TRIES}; failures: {failures:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_logging_in_again_and_again_holds_at_most_eight_sessions() {
    const LOGINS: usize = 12;
    const PER_USER: usize = strife_common::limits::MAX_CONSOLE_SESSIONS_PER_USER;
    let network = console_network(&[]).await;
    let console = ready_address(&network, "web_address");
    let metrics = ready_address(&network, "metrics_address");
    let connector = connector(&network);
    let checks = "strife_console_password_checks_total";
    let before = metric(metrics, checks).await;
    let password = network.password("bob");
    let mut sessions = Vec::new();
    let started = Instant::now();
    for _ in 0..LOGINS {
        let answer = console_login(&connector, console, "127.0.0.1", "bob", &password).await;
        assert_eq!(answer.status, 303, "{answer:?}");
        sessions.push(answer.cookie("__Host-strife-session").unwrap());
    }
    let per_login = started.elapsed() / LOGINS as u32;
    // bob holds the newest eight; the oldest went first.
    let mut live = Vec::new();
    for session in &sessions {
        let cookie = format!("__Host-strife-session={session}");
        let page = https(
            &connector,
            console,
            "127.0.0.3",
            &get("/history", Some(&cookie)),
        )
        .await
        .unwrap();
        live.push(page.status == 200);
    }
    let expected: Vec<bool> = (0..LOGINS)
        .map(|login| login >= LOGINS - PER_USER)
        .collect();
    assert_eq!(live, expected, "which of bob's sessions still work");
    // Everyone else still gets in: alice and the admin.
    let alice = console_login(
        &connector,
        console,
        "127.0.0.4",
        "alice",
        &network.password("alice"),
    )
    .await;
    assert_eq!(alice.status, 303, "{alice:?}");
    let admin = console_login(
        &connector,
        console,
        "127.0.0.4",
        "admin",
        &network.password("admin"),
    )
    .await;
    assert_eq!(admin.location(), Some("/ops/network"), "{admin:?}");
    // Every login ran argon2id: none was answered from a remembered password.
    let ran = metric(metrics, checks).await - before;
    assert_eq!(ran, (LOGINS + 2) as f64);
    // And one address gets 20 logins a minute, whatever their outcome.
    for _ in LOGINS..20 {
        let answer = console_login(&connector, console, "127.0.0.1", "bob", &password).await;
        assert_eq!(answer.status, 303, "{answer:?}");
    }
    let refused = console_login(&connector, console, "127.0.0.1", "bob", &password).await;
    assert_refused(&refused, 429, "too many logins from your address");
    assert_eq!(
        metric(metrics, checks).await - before,
        22.0,
        "no check for it"
    );
    eprintln!(
        "console logins: {LOGINS} in a row by one user took {per_login:.0?} each; \
         {} password checks for {} logins",
        ran,
        LOGINS + 2
    );
}

/// `user`'s own gRPC call (certificate + password).
async fn grpc_balances(network: &ManualNetwork, user: &str) -> Result<(), tonic::Status> {
    network
        .gateway_client(user)
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_guesses_lock_console_logins_never_the_admins_certificate() {
    let mut network = console_network(&[]).await;
    let console = ready_address(&network, "web_address");
    let connector = connector(&network);
    // Five wrong console logins for the admin, each from an address of its own, so the
    // per-address throttle does not stop them first.
    for last in 2..=6 {
        let from = format!("127.0.0.{last}");
        let answer =
            console_login(&connector, console, &from, "admin", "wrong-password-12345").await;
        assert_refused(&answer, 401, "Wrong user name or password.");
    }
    let locked = console_login(
        &connector,
        console,
        "127.0.0.7",
        "admin",
        &network.password("admin"),
    )
    .await;
    assert_refused(&locked, 429, "too many failed logins for this name");
    // The admin's certificate + password still works (spared by default).
    grpc_balances(&network, "admin")
        .await
        .expect("a console lock must not lock the admin out of gRPC");
    // bob is not spared: his console lock blocks his gRPC logins too.
    for last in 10..=14 {
        let from = format!("127.0.0.{last}");
        let answer = console_login(&connector, console, &from, "bob", "wrong-password-12345").await;
        assert_refused(&answer, 401, "Wrong user name or password.");
    }
    let refused = grpc_balances(&network, "bob").await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("locked"), "{refused:?}");
    // With --console-lockout-spares all, the same (shared, stored) console lock no longer
    // blocks bob's gRPC, and still blocks his console logins.
    network.stop_gateway();
    network
        .gateway_args
        .extend(["--console-lockout-spares".into(), "all".into()]);
    network.start_gateway(&[]);
    let console = ready_address(&network, "web_address");
    grpc_balances(&network, "bob")
        .await
        .expect("with `all`, a console lock never blocks gRPC");
    let locked = console_login(
        &connector,
        console,
        "127.0.0.15",
        "bob",
        &network.password("bob"),
    )
    .await;
    assert_refused(&locked, 429, "too many failed logins for this name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_lock_a_name_and_grpc_guesses_still_lock_both() {
    let network = console_network(&[]).await;
    let console = ready_address(&network, "web_address");
    let connector = connector(&network);
    let attacker = "127.0.0.2";
    // threshold − 1 = 4 failures from one address, then that address is refused first.
    for _ in 0..4 {
        let answer = console_login(
            &connector,
            console,
            attacker,
            "alice",
            "wrong-password-12345",
        )
        .await;
        assert_refused(&answer, 401, "Wrong user name or password.");
    }
    for password in ["wrong-password-12345".to_owned(), network.password("alice")] {
        let answer = console_login(&connector, console, attacker, "alice", &password).await;
        assert_refused(&answer, 429, "too many failed logins from your address");
    }
    // alice is not locked: she logs in from her own address, and over gRPC.
    let alice = console_login(
        &connector,
        console,
        "127.0.0.3",
        "alice",
        &network.password("alice"),
    )
    .await;
    assert_eq!(alice.status, 303, "{alice:?}");
    grpc_balances(&network, "alice").await.unwrap();
    // Guesses with bob's certificate lock bob's gRPC logins as before, and his console ones.
    let guessing = network.gateway_client_as("bob", "bob", "not-the-password");
    for _ in 0..5 {
        let refused = guessing
            .clone()
            .get_balances(pb::GetBalancesRequest::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
    let locked = grpc_balances(&network, "bob").await.unwrap_err();
    assert_eq!(locked.code(), Code::ResourceExhausted, "{locked:?}");
    let console_locked = console_login(
        &connector,
        console,
        "127.0.0.4",
        "bob",
        &network.password("bob"),
    )
    .await;
    assert_refused(&console_locked, 429, "too many failed logins for this name");
}
