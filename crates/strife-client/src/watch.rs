//! `strife client watch`: payments as their decisions become durable, printed as they come.
//! A dropped stream is resumed from the last cursor (on the next replica, if the current one
//! is gone), so nothing is missed or printed twice.

use std::time::Duration;

use serde_json::json;
use strife_proto::v1 as pb;
use tonic::{Code, Status};

use crate::args::{ClientArgs, FollowArgs};
use crate::render::{self, payment_json, timestamp};
use crate::session::Gateway;

const RECONNECT_START: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// What ends a watch (besides Ctrl-C).
#[derive(Debug, Clone, Copy)]
pub struct WatchBounds {
    pub max_events: Option<u64>,
    pub max_time: Duration,
}

impl WatchBounds {
    /// The bounds `--max-events` and `--max-seconds` set (no time bound: a year).
    pub fn of(follow: &FollowArgs) -> Self {
        WatchBounds {
            max_events: follow.max_events,
            max_time: Duration::from_secs(follow.max_seconds.unwrap_or(86_400 * 365)),
        }
    }
}

/// Whether a failed watch is worth reconnecting: the connection went away, not a refusal.
/// A broken HTTP/2 stream surfaces as UNKNOWN or INTERNAL without Strife's reason; an INTERNAL
/// the gateway itself answered carries one and is final.
fn is_transient(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::Cancelled | Code::Unknown | Code::Aborted => true,
        Code::Internal => strife_common::failure::reason_of(status).is_none(),
        _ => false,
    }
}

fn print_event(args: &ClientArgs, event: &pb::PaymentEvent) {
    let Some(payment) = &event.payment else {
        return;
    };
    if args.json {
        println!(
            "{}",
            json!({"cursor": event.cursor, "payment": payment_json(payment)})
        );
    } else {
        let reason = if payment.reason_code.is_empty() {
            String::new()
        } else {
            format!(" ({})", payment.reason_code)
        };
        println!(
            "{}  {} -> {}  {}  {}{}  {}  [cursor {}]",
            timestamp(payment.decided_unix_ms),
            payment.from_username,
            payment.to_username,
            render::money(payment.amount.as_ref()),
            render::status_name(payment.status),
            reason,
            payment.payment_id,
            event.cursor
        );
    }
}

/// What a follower does with each event, in order (the next waits for it).
pub trait OnEvent {
    fn on_event(&mut self, event: &pb::PaymentEvent) -> impl std::future::Future<Output = ()>;
}

/// `watch` prints each event.
struct Printer<'a> {
    args: &'a ClientArgs,
}

impl OnEvent for Printer<'_> {
    async fn on_event(&mut self, event: &pb::PaymentEvent) {
        print_event(self.args, event);
    }
}

/// Runs until a bound is reached (exit 0), a refusal (its error), or Ctrl-C.
pub async fn watch(
    args: &ClientArgs,
    gateway: &mut Gateway,
    since: Option<String>,
    bounds: WatchBounds,
) -> anyhow::Result<Result<(), Status>> {
    if !args.json {
        eprintln!("watching payments (Ctrl-C to stop)");
    }
    follow(gateway, since, bounds, &mut Printer { args }).await
}

/// Follows the caller's payment events from `since` (absent: from now), handing each to
/// `handler` in decision order, until a bound is reached (exit 0) or a refusal (its error).
/// A dropped stream is resumed after the last event handed over.
pub async fn follow(
    gateway: &mut Gateway,
    since: Option<String>,
    bounds: WatchBounds,
    handler: &mut impl OnEvent,
) -> anyhow::Result<Result<(), Status>> {
    let deadline = tokio::time::Instant::now() + bounds.max_time;
    let mut cursor = since.unwrap_or_default();
    let mut handled: u64 = 0;
    let mut backoff = RECONNECT_START;
    let run = async {
        loop {
            let opened = gateway
                .watch_payments(pb::WatchPaymentsRequest {
                    since: cursor.clone(),
                })
                .await;
            let failure = match opened {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(event)) => {
                                backoff = RECONNECT_START;
                                handler.on_event(&event).await;
                                cursor = event.cursor.clone();
                                handled += 1;
                                if bounds.max_events.is_some_and(|max| handled >= max) {
                                    return Ok(());
                                }
                            }
                            Ok(None) => break Status::unavailable("the gateway ended the watch"),
                            Err(status) => break status,
                        }
                    }
                }
                Err(status) => status,
            };
            if !is_transient(&failure) {
                return Err(failure);
            }
            // Resume from the last event seen: the first connection's "from now" becomes a
            // concrete cursor only once an event arrived, so before that a reconnect asks
            // "from now" again (nothing was handed over, so nothing can be handled twice).
            eprintln!(
                "watch interrupted ({}); resuming{} in {} ms",
                failure.message(),
                if cursor.is_empty() {
                    String::new()
                } else {
                    format!(" after cursor {cursor}")
                },
                backoff.as_millis()
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RECONNECT_MAX);
        }
    };
    match tokio::time::timeout_at(deadline, run).await {
        Ok(outcome) => Ok(outcome),
        Err(_) => Ok(Ok(())),
    }
}
