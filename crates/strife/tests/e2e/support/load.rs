//! A concurrent payment load through the gateway's gRPC API, as real clients drive it: each
//! task pays in a loop with its own idempotency keys and, like the outbox, sends a key again
//! after a transient failure until the gateway answers it (or the load is stopped).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strife_proto::v1 as pb;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::{Code, Status};

use super::network::GatewayClient;

/// What a client got for one idempotency key: its last outcome.
#[derive(Debug)]
pub struct Answer {
    pub key: String,
    pub outcome: Result<pb::Payment, Status>,
}

impl Answer {
    /// Whether the gateway answered the key for good (a payment, or a refusal of it), as
    /// opposed to a failure a client retries (the last try before the load stopped).
    pub fn answered(&self) -> bool {
        match &self.outcome {
            Ok(_) => true,
            Err(status) => !is_transient(status),
        }
    }
}

/// Failures a client sends the same key again after: the gateway was not reached, went away,
/// or said "in progress" / "try again" (`UNAVAILABLE` with a transient abort reason).
pub fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Internal
    )
}

/// A running load; [`Load::stop`] ends it and hands back every key's answer.
pub struct Load {
    stop: watch::Sender<bool>,
    answered: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<Vec<Answer>>>,
}

impl Load {
    /// `tasks` tasks paying `to` 0.01 USD as `client`, keys `<prefix>-<task>-<n>`; each task
    /// makes `per_task` payments (`None`: until stopped).
    pub fn start(
        client: &GatewayClient,
        to: &str,
        tasks: usize,
        prefix: &str,
        per_task: Option<usize>,
    ) -> Load {
        let (stop, stopped) = watch::channel(false);
        let answered = Arc::new(AtomicUsize::new(0));
        let tasks = (0..tasks)
            .map(|task| {
                let client = client.clone();
                let stopped = stopped.clone();
                let answered = Arc::clone(&answered);
                let prefix = format!("{prefix}-{task}");
                let to = to.to_owned();
                tokio::spawn(pay_loop(client, to, prefix, per_task, stopped, answered))
            })
            .collect();
        Load {
            stop,
            answered,
            tasks,
        }
    }

    /// Keys the gateway has answered for good so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// Waits for every task to finish its payments (a load with `per_task`).
    pub async fn finish(self) -> Vec<Answer> {
        let mut answers = Vec::new();
        for task in self.tasks {
            answers.extend(task.await.unwrap());
        }
        answers
    }

    /// Stops every task (a try under way still gets its answer) and returns all answers.
    pub async fn stop(self) -> Vec<Answer> {
        let _ = self.stop.send(true);
        self.finish().await
    }
}

fn request(key: &str, to: &str) -> pb::PayRequest {
    pb::PayRequest {
        idempotency_key: key.to_owned(),
        to_username: to.to_owned(),
        amount: Some(pb::Money {
            amount_minor: 1,
            currency: "USD".into(),
        }),
        ..pb::PayRequest::default()
    }
}

async fn pay_loop(
    mut client: GatewayClient,
    to: String,
    prefix: String,
    per_task: Option<usize>,
    stopped: watch::Receiver<bool>,
    answered: Arc<AtomicUsize>,
) -> Vec<Answer> {
    let mut answers = Vec::new();
    for n in 0..per_task.unwrap_or(usize::MAX) {
        let key = format!("{prefix}-{n}");
        let mut failed = None;
        loop {
            let stop = *stopped.borrow();
            if stop {
                // A key tried without an answer is reported with its last failure.
                answers.extend(failed);
                return answers;
            }
            let outcome = client
                .pay(request(&key, &to))
                .await
                .map(|reply| reply.into_inner());
            let answer = Answer {
                key: key.clone(),
                outcome,
            };
            if !answer.answered() {
                failed = Some(answer);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            answered.fetch_add(1, Ordering::SeqCst);
            answers.push(answer);
            break;
        }
    }
    answers
}
