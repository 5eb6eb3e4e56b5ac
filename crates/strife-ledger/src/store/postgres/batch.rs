//! Sharing statements among concurrent store calls. Each kind of call (a user read, an
//! account list, claiming a key, a decision, an acknowledgement) has a queue and a task that
//! takes whatever is waiting — at most `max_items` — and runs it as ONE statement, with up to
//! `in_flight` such statements at once. A lone call goes out at once; under load, calls wait
//! only for a statement slot, and the next statement then carries all of them. PostgreSQL's
//! cost is mostly per statement (and per commit), not per row, so this is what keeps the
//! database's CPU per payment from growing with every lookup.
//!
//! A batch is answered item by item: each item carries its own reply channel, and the
//! batch's runner answers every one of them (a statement that fails answers each with the
//! same failure).

use std::future::Future;
use std::sync::Arc;

use strife_common::Failure;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Calls waiting for a statement; callers wait (back-pressure) beyond it.
const MAX_QUEUED: usize = 16_384;

/// One call in a batch: its input and where its answer goes.
pub struct Item<I, O> {
    pub input: I,
    pub reply: oneshot::Sender<Result<O, Failure>>,
}

impl<I, O> Item<I, O> {
    pub fn answer(self, result: Result<O, Failure>) {
        // The caller may have given up (its own timeout); the work is done either way.
        let _ = self.reply.send(result);
    }
}

/// The handle to one kind of call's queue; the task stops when this is dropped.
pub struct Batcher<I, O> {
    queue: mpsc::Sender<Item<I, O>>,
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the task. `run` executes one batch and answers every item in it.
    pub fn start<F, Fut>(max_items: usize, in_flight: usize, run: F) -> Self
    where
        F: Fn(Vec<Item<I, O>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (queue, mut receiver) = mpsc::channel::<Item<I, O>>(MAX_QUEUED);
        let run = Arc::new(run);
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(in_flight));
            while let Some(first) = receiver.recv().await {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                // Collected only once a slot is free, so calls queue up while every
                // statement is busy and the next one carries all of them.
                let mut batch = vec![first];
                while batch.len() < max_items {
                    match receiver.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                let run = Arc::clone(&run);
                tokio::spawn(async move {
                    let _slot = slot;
                    run(batch).await;
                });
            }
        });
        Batcher { queue }
    }

    /// Queues `input` and waits for its answer.
    pub async fn call(&self, input: I) -> Result<O, Failure> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Item { input, reply })
            .await
            .map_err(|_| Failure::internal("PostgreSQL store", "a batch queue has stopped"))?;
        answer
            .await
            .map_err(|_| Failure::internal("PostgreSQL store", "a batch dropped a call"))?
    }
}

/// Answers every item of a batch from the batch's `result`: each its own answer, which
/// `answer` picks from what the batch found, or each the batch's failure.
pub fn answer_each<I, O, F>(
    items: Vec<Item<I, O>>,
    result: Result<F, Failure>,
    mut answer: impl FnMut(&mut F, &I) -> Result<O, Failure>,
) {
    match result {
        Ok(mut found) => {
            for item in items {
                let answered = answer(&mut found, &item.input);
                item.answer(answered);
            }
        }
        Err(failure) => {
            for item in items {
                item.answer(Err(failure.clone()));
            }
        }
    }
}

/// Splits `items` into rounds in which no two items share a key (kept in arrival order):
/// where two calls touch the same row, the later one must see the earlier one's effect, as
/// it would one statement later.
pub fn rounds<I, O, K: Eq + std::hash::Hash>(
    items: Vec<Item<I, O>>,
    key: impl Fn(&I) -> K,
) -> Vec<Vec<Item<I, O>>> {
    /// The keys a round holds, and its items.
    type Round<K, I, O> = (std::collections::HashSet<K>, Vec<Item<I, O>>);
    let mut rounds: Vec<Round<K, I, O>> = Vec::new();
    for item in items {
        let item_key = key(&item.input);
        // The item goes after the last round holding its key (never before an earlier call
        // for the same row).
        let last_with_key = rounds
            .iter()
            .rposition(|(keys, _)| keys.contains(&item_key));
        let target = match last_with_key {
            Some(index) => index + 1,
            None => 0,
        };
        if target == rounds.len() {
            rounds.push((Default::default(), Vec::new()));
        }
        rounds[target].0.insert(item_key);
        rounds[target].1.push(item);
    }
    rounds.into_iter().map(|(_, items)| items).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(input: (&'static str, u32)) -> Item<(&'static str, u32), ()> {
        Item {
            input,
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn rounds_keep_each_key_once_and_in_order() {
        let items = vec![
            item(("a", 1)),
            item(("b", 2)),
            item(("a", 3)),
            item(("c", 4)),
            item(("a", 5)),
            item(("b", 6)),
        ];
        let rounds: Vec<Vec<u32>> = rounds(items, |input| input.0)
            .into_iter()
            .map(|round| round.into_iter().map(|item| item.input.1).collect())
            .collect();
        assert_eq!(rounds, vec![vec![1, 2, 4], vec![3, 6], vec![5]]);
    }

    #[tokio::test]
    async fn a_lone_call_goes_at_once_and_concurrent_calls_share_a_batch() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let batcher = Arc::new(Batcher::start(64, 1, move |items: Vec<Item<u32, u32>>| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(items.len());
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                for item in items {
                    let doubled = item.input * 2;
                    item.answer(Ok(doubled));
                }
            }
        }));
        assert_eq!(batcher.call(4).await, Ok(8));
        let calls: Vec<_> = (0..10)
            .map(|value| {
                let batcher = Arc::clone(&batcher);
                tokio::spawn(async move { batcher.call(value).await })
            })
            .collect();
        for (value, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap(), Ok(value as u32 * 2));
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes[0], 1);
        assert!(sizes.len() < 11, "calls shared statements: {sizes:?}");
    }
}
