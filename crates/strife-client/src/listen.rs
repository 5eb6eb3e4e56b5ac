//! `strife client listen --forward-to http://127.0.0.1:PORT/path`: for developing a webhook
//! receiver. It follows the caller's payment events (`WatchPayments`, resumed from its cursor
//! after a dropped stream, as `watch`) and POSTs each one to the receiver as a webhook
//! delivery would: the event's JSON body, signed in `Strife-Signature` ([`crate::webhook`])
//! with a secret of the session (`STRIFE_WEBHOOK_SECRET`, or a new one printed at the start).
//! One line per event says what the receiver answered. Each event is forwarded once, in
//! decision order: a receiver that is down misses it (the line says so, with the cursor to
//! rerun from with `--since`).
//!
//! Plain `http://` to a loopback address only: it is a development tool, and a signing
//! secret sent in the clear off the machine would be no secret.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::json;
use strife_proto::v1 as pb;
use tonic::Status;

use crate::args::ClientArgs;
use crate::render::{status_name, timestamp};
use crate::session::Gateway;
use crate::watch::{follow, OnEvent, WatchBounds};
use crate::webhook;

/// How an event becomes a delivery's JSON body. The `strife` binary passes the HTTP API's
/// event object (`strife_http::model::webhook_body`), so a receiver sees what a webhook and
/// `GET /v1/events` give.
pub type EventBody = fn(&pb::PaymentEvent) -> Option<Vec<u8>>;

/// The secret's environment variable: a flag would land in the shell's history.
pub const SECRET_ENV: &str = "STRIFE_WEBHOOK_SECRET";

/// How long one delivery may take, connection included.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a receiver's answer read (the rest is dropped with the connection).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Where deliveries go: a loopback address, a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    authority: String,
    path: String,
}

impl Target {
    /// `http://HOST:PORT/PATH` with a loopback HOST (`127.x.x.x`, `::1`, `localhost`).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: http::Uri = url
            .parse()
            .with_context(|| format!("--forward-to {url:?} is not a URL"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "--forward-to {url:?}: only http:// to this machine (a loopback address) is forwarded to"
        );
        let host = uri.host().unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|address| address.is_loopback());
        anyhow::ensure!(
            loopback,
            "--forward-to {url:?}: {host} is not a loopback address (127.0.0.1, ::1, localhost)"
        );
        let port = uri.port_u16().unwrap_or(80);
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let path = uri
            .path_and_query()
            .map_or("/".to_owned(), |path| path.as_str().to_owned());
        Ok(Target { authority, path })
    }

    fn url(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }
}

/// Follows the events and forwards each one, until a bound, a refusal or Ctrl-C.
pub async fn listen(
    args: &ClientArgs,
    gateway: &mut Gateway,
    target: Target,
    since: Option<String>,
    bounds: WatchBounds,
    event_body: EventBody,
) -> anyhow::Result<Result<(), Status>> {
    let secret = match std::env::var(SECRET_ENV) {
        Ok(secret) if !secret.is_empty() => secret,
        _ => webhook::new_secret(),
    };
    if args.json {
        println!(
            "{}",
            json!({"event": "ready", "forward_to": target.url(), "secret": secret})
        );
    } else {
        eprintln!(
            "Forwarding your payment events to {} (Ctrl-C to stop). Signing secret: {secret}",
            target.url()
        );
    }
    let mut forwarder = Forwarder {
        json: args.json,
        target,
        secret,
        event_body,
        connection: None,
    };
    follow(gateway, since, bounds, &mut forwarder).await
}

struct Forwarder {
    json: bool,
    target: Target,
    secret: String,
    event_body: EventBody,
    /// Kept alive between deliveries; opened again after a failure.
    connection: Option<SendRequest<Full<Bytes>>>,
}

impl OnEvent for Forwarder {
    async fn on_event(&mut self, event: &pb::PaymentEvent) {
        let Some(payment) = &event.payment else {
            return;
        };
        let Some(body) = (self.event_body)(event) else {
            return;
        };
        let started = Instant::now();
        let outcome = tokio::time::timeout(DELIVERY_TIMEOUT, self.deliver(body))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} s", DELIVERY_TIMEOUT.as_secs())));
        if outcome.is_err() {
            self.connection = None;
        }
        let latency_ms = started.elapsed().as_millis();
        let kind = event_type(payment);
        if self.json {
            let mut line = json!({
                "type": kind, "payment_id": payment.payment_id, "cursor": event.cursor,
                "latency_ms": latency_ms,
            });
            match &outcome {
                Ok(status) => line["status"] = (*status).into(),
                Err(error) => line["error"] = error.as_str().into(),
            }
            println!("{line}");
        } else {
            let answered = match &outcome {
                Ok(status) => format!("[{status}] in {latency_ms} ms"),
                Err(error) => format!(
                    "not delivered: {error} (rerun with --since {})",
                    event.cursor
                ),
            };
            println!(
                "{}  {kind}  {}  {}",
                timestamp(payment.decided_unix_ms),
                payment.payment_id,
                answered
            );
        }
    }
}

/// `payment.committed`, `payment.aborted`: the event's type as deliveries name it.
pub fn event_type(payment: &pb::Payment) -> String {
    format!(
        "payment.{}",
        status_name(payment.status).to_ascii_lowercase()
    )
}

impl Forwarder {
    /// One POST; the receiver's HTTP status, or what went wrong.
    async fn deliver(&mut self, body: Vec<u8>) -> Result<u16, String> {
        let now_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let signature = webhook::signature_header(&[&self.secret], now_secs, &body);
        let request = hyper::Request::post(&self.target.path)
            .header(hyper::header::HOST, &self.target.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "strife-listen")
            .header(webhook::SIGNATURE_HEADER, signature)
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| error.to_string())?;
        let connection = match self.connection.as_mut() {
            Some(connection) if !connection.is_closed() => connection,
            _ => self.connection.insert(self.connect().await?),
        };
        connection
            .ready()
            .await
            .map_err(|error| error.to_string())?;
        let response = connection
            .send_request(request)
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status().as_u16();
        // Read (a bounded part of) the answer, so the connection can carry the next one.
        if Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .is_err()
        {
            self.connection = None;
        }
        Ok(status)
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect(&self.target.authority)
            .await
            .map_err(|error| format!("cannot connect to {}: {error}", self.target.authority))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| error.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_to_loopback_is_a_target() {
        let target = Target::parse("http://127.0.0.1:4242/hooks/strife?x=1").unwrap();
        assert_eq!(target.url(), "http://127.0.0.1:4242/hooks/strife?x=1");
        assert_eq!(
            Target::parse("http://localhost:80").unwrap().url(),
            "http://localhost:80/"
        );
        assert_eq!(
            Target::parse("http://[::1]:9/").unwrap().url(),
            "http://[::1]:9/"
        );
        for refused in [
            "https://127.0.0.1:4242/",
            "http://10.0.0.1:4242/",
            "http://example.com/",
            "ftp://127.0.0.1/",
            "not a url",
        ] {
            assert!(Target::parse(refused).is_err(), "{refused}");
        }
    }
}
