use super::pool::*;
use super::throttle::*;
use super::*;
use std::sync::atomic::Ordering;
use strife_common::limits::{MAX_WAITING_CONSOLE_PASSWORD_CHECKS, MAX_WAITING_PASSWORD_CHECKS};
use strife_ledger::lockout::{ConsoleSpares, MAX_LOCKOUT};

fn policy() -> LockoutPolicy {
    LockoutPolicy {
        threshold: 3,
        duration: Duration::from_secs(30),
        console_spares: ConsoleSpares::Admin,
    }
}

#[test]
fn concurrent_tries_count_before_they_finish() {
    let mut throttle = Throttle::new(policy(), MAX_TRACKED_NAMES);
    let now = Instant::now();
    for _ in 0..3 {
        throttle.reserve("alice", now).unwrap();
    }
    assert_eq!(
        throttle.reserve("alice", now),
        Err(Refusal::TooManyTries),
        "a fourth guess in flight is never checked"
    );
    assert!(
        throttle.reserve("bob", now).is_ok(),
        "other names are apart"
    );
    assert_eq!(throttle.finish("alice", false, now), None);
    assert_eq!(throttle.finish("alice", false, now), None);
    assert_eq!(
        throttle.finish("alice", false, now),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        throttle.reserve("alice", now + Duration::from_secs(29)),
        Err(Refusal::Locked(Duration::from_secs(1)))
    );
}

#[test]
fn a_released_try_is_given_back() {
    let mut throttle = Throttle::new(policy(), MAX_TRACKED_NAMES);
    let now = Instant::now();
    for _ in 0..3 {
        throttle.reserve("alice", now).unwrap();
    }
    throttle.release("alice");
    assert!(throttle.reserve("alice", now).is_ok());
}

#[test]
fn consecutive_lockouts_double_up_to_the_cap_and_a_success_resets() {
    let mut throttle = Throttle::new(policy(), MAX_TRACKED_NAMES);
    let mut now = Instant::now();
    let mut locks = Vec::new();
    for _ in 0..8 {
        for _ in 0..3 {
            throttle.reserve("alice", now).unwrap();
        }
        let mut lock = None;
        for _ in 0..3 {
            lock = throttle.finish("alice", false, now).or(lock);
        }
        let lock = lock.unwrap();
        locks.push(lock.as_secs());
        assert!(throttle.locked("alice", now).is_some());
        now += lock;
        assert_eq!(throttle.locked("alice", now), None, "the lock expires");
    }
    assert_eq!(locks, [30, 60, 120, 240, 480, 900, 900, 900]);
    throttle.reserve("alice", now).unwrap();
    assert_eq!(throttle.finish("alice", true, now), None);
    for _ in 0..3 {
        throttle.reserve("alice", now).unwrap();
    }
    let mut lock = None;
    for _ in 0..3 {
        lock = throttle.finish("alice", false, now).or(lock);
    }
    assert_eq!(
        lock,
        Some(Duration::from_secs(30)),
        "back to the first step"
    );
}

#[test]
fn an_old_lockout_no_longer_doubles_the_next() {
    let mut throttle = Throttle::new(policy(), MAX_TRACKED_NAMES);
    let now = Instant::now();
    let lock_out = |throttle: &mut Throttle, at: Instant| {
        for _ in 0..3 {
            throttle.reserve("alice", at).unwrap();
        }
        (0..3)
            .filter_map(|_| throttle.finish("alice", false, at))
            .last()
            .unwrap()
    };
    assert_eq!(lock_out(&mut throttle, now), Duration::from_secs(30));
    let soon = now + Duration::from_secs(40);
    assert_eq!(lock_out(&mut throttle, soon), Duration::from_secs(60));
    let much_later = soon + Duration::from_secs(60) + MAX_LOCKOUT + Duration::from_secs(1);
    assert_eq!(lock_out(&mut throttle, much_later), Duration::from_secs(30));
}

#[test]
fn failures_are_counted_per_window() {
    let mut throttle = Throttle::new(policy(), MAX_TRACKED_NAMES);
    let now = Instant::now();
    for _ in 0..2 {
        throttle.reserve("alice", now).unwrap();
        assert_eq!(throttle.finish("alice", false, now), None);
    }
    let later = now + Duration::from_secs(31);
    for _ in 0..3 {
        throttle.reserve("alice", later).unwrap();
    }
    assert_eq!(throttle.reserve("alice", later), Err(Refusal::TooManyTries));
}

#[test]
fn a_success_clears_failures_but_other_tries_still_count() {
    let mut throttle = Throttle::new(policy(), MAX_TRACKED_NAMES);
    let now = Instant::now();
    throttle.reserve("alice", now).unwrap();
    throttle.finish("alice", false, now);
    throttle.reserve("alice", now).unwrap();
    throttle.reserve("alice", now).unwrap();
    assert_eq!(throttle.finish("alice", true, now), None);
    // One still in flight, none failed: two more fit.
    throttle.reserve("alice", now).unwrap();
    throttle.reserve("alice", now).unwrap();
    assert_eq!(throttle.reserve("alice", now), Err(Refusal::TooManyTries));
}

#[tokio::test]
async fn the_verify_pool_queues_a_bounded_number_and_refuses_the_rest_at_once() {
    let pool = Arc::new(VerifyPool::with_permits(1));
    let held = pool.acquire(Queue::Grpc).await.unwrap();
    let waiters: Vec<_> = (0..MAX_WAITING_PASSWORD_CHECKS)
        .map(|_| {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.acquire(Queue::Grpc).await.map(drop) })
        })
        .collect();
    let queued = tokio::time::timeout(Duration::from_secs(5), async {
        while pool.waiting.load(Ordering::SeqCst) < MAX_WAITING_PASSWORD_CHECKS {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(queued.is_ok(), "the waiters never queued");
    let refused = tokio::time::timeout(Duration::from_secs(1), pool.acquire(Queue::Grpc))
        .await
        .expect("refused at once, not queued");
    assert!(matches!(refused, Err(Failure::ResourceExhausted(_))));
    drop(held);
    for waiter in waiters {
        waiter.await.unwrap().unwrap();
    }
    assert_eq!(pool.waiting.load(Ordering::SeqCst), 0, "the queue drains");
}

async fn store_with(users: &[(&str, Role)]) -> (tempfile::TempDir, Arc<dyn GatewayStore>) {
    let dir = tempfile::tempdir().unwrap();
    let identity = strife_common::storage::store_identity::StoreIdentity::gateway(
        &strife_common::layout::Layout::new(dir.path()),
        "ca".into(),
        strife_ledger::store::sqlite::SCHEMA_VERSION,
        false,
    );
    let store: Arc<dyn GatewayStore> = Arc::new(
        strife_ledger::store::sqlite::SqliteGatewayStore::open(
            &dir.path().join("gateway.db"),
            &identity,
        )
        .unwrap(),
    );
    for (name, role) in users {
        store
            .insert_user(
                name,
                role.as_str(),
                &hash_password(&password_of(name)).unwrap(),
            )
            .await
            .unwrap();
    }
    (dir, store)
}

fn password_of(name: &str) -> String {
    format!("right horse battery {}", name.len())
}

/// A client address of its own for each call (127.0.0.x), so the per-address throttle
/// stays out of the way of a test about names.
fn address(index: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, index])
}

fn user_peer(name: &str) -> PeerIdentity {
    PeerIdentity {
        role: PeerRole::User,
        name: name.to_owned(),
    }
}

async fn grpc(
    authenticator: &Arc<Authenticator>,
    name: &str,
    password: &str,
) -> Result<Caller, Failure> {
    authenticator
        .authenticate(user_peer(name), Some(name.into()), Some(password.into()))
        .await
}

#[tokio::test]
async fn only_names_that_exist_leave_a_shared_login_record() {
    let (_dir, store) = store_with(&[("alice", Role::Client)]).await;
    let authenticator = Arc::new(Authenticator::new(Arc::clone(&store), policy()).unwrap());
    for (index, name) in ["alice", "ghost"].into_iter().enumerate() {
        let refused = authenticator
            .authenticate_console(name, "wrong guess", address(index as u8 + 2))
            .await
            .unwrap_err();
        assert_eq!(refused, Failure::Unauthenticated, "{name}");
    }
    assert!(store.login("console:alice").await.unwrap().is_some());
    assert!(
        store.login("alice").await.unwrap().is_none(),
        "a console failure counts in the console scope only"
    );
    assert!(store.login("console:ghost").await.unwrap().is_none());
    assert!(store.login("ghost").await.unwrap().is_none());
    // The made-up name is still locked by this replica after the threshold.
    for index in 1..policy().threshold {
        let _ = authenticator
            .authenticate_console("ghost", "wrong", address(10 + index as u8))
            .await;
    }
    let locked = authenticator
        .authenticate_console("ghost", "wrong", address(20))
        .await
        .unwrap_err();
    assert!(
        matches!(locked, Failure::ResourceExhausted(ref message) if message.contains("this name")),
        "{locked:?}"
    );
}

#[tokio::test]
async fn console_and_certificate_scopes_lock_as_the_lockout_table_says() {
    let (_dir, store) = store_with(&[
        ("admin", Role::Admin),
        ("alice", Role::Client),
        ("bob", Role::Client),
        ("carol", Role::Client),
    ])
    .await;
    let authenticator = Arc::new(Authenticator::new(Arc::clone(&store), policy()).unwrap());
    let threshold = policy().threshold;
    let is_locked = |result: &Result<Caller, Failure>| matches!(result, Err(Failure::ResourceExhausted(message)) if message.contains("locked"));
    // Console guesses at the admin and alice, each from an address of its own.
    for name in ["admin", "alice"] {
        for index in 0..threshold {
            let refused = authenticator
                .authenticate_console(name, "wrong guess", address(30 + index as u8))
                .await;
            assert_eq!(refused.unwrap_err(), Failure::Unauthenticated, "{name}");
        }
        let right = authenticator
            .authenticate_console(name, &password_of(name), address(40))
            .await;
        assert!(
            is_locked(&right),
            "{name}'s console scope is locked: {right:?}"
        );
    }
    // The admin's certificate + password still works; alice's gRPC is blocked by her
    // console lock (only the admin is spared by default).
    grpc(&authenticator, "admin", &password_of("admin"))
        .await
        .unwrap();
    assert!(is_locked(
        &grpc(&authenticator, "alice", &password_of("alice")).await
    ));
    // Sparing everyone: the same shared console lock no longer blocks alice's gRPC.
    let spare_all = LockoutPolicy {
        console_spares: ConsoleSpares::All,
        ..policy()
    };
    let sparing = Arc::new(Authenticator::new(Arc::clone(&store), spare_all).unwrap());
    grpc(&sparing, "alice", &password_of("alice"))
        .await
        .unwrap();
    assert!(is_locked(
        &sparing
            .authenticate_console("alice", &password_of("alice"), address(41))
            .await
    ));
    // gRPC failures lock gRPC, and count in the console scope too.
    for _ in 0..threshold {
        assert_eq!(
            grpc(&sparing, "bob", "wrong guess").await.unwrap_err(),
            Failure::Unauthenticated
        );
    }
    assert!(is_locked(&grpc(&sparing, "bob", &password_of("bob")).await));
    assert!(store
        .login("console:bob")
        .await
        .unwrap()
        .is_some_and(|login| login.locked_for(now_unix_ms()).is_some()));
    assert!(is_locked(
        &sparing
            .authenticate_console("bob", &password_of("bob"), address(42))
            .await
    ));
    // A lock of the certificate scope alone (as another replica may have stored it)
    // refuses console logins too.
    let now = now_unix_ms();
    store
        .update_login(
            "carol",
            Box::new(move |_| {
                Some(SharedLogin {
                    failures: 0,
                    window_start_unix_ms: now,
                    locked_until_unix_ms: now + 60_000,
                    lockouts: 1,
                })
            }),
        )
        .await
        .unwrap();
    assert!(is_locked(
        &sparing
            .authenticate_console("carol", &password_of("carol"), address(43))
            .await
    ));
}

#[tokio::test]
async fn one_address_fails_one_time_fewer_than_the_threshold_and_is_refused_first() {
    let (_dir, store) = store_with(&[("alice", Role::Client), ("bob", Role::Client)]).await;
    let authenticator = Arc::new(Authenticator::new(Arc::clone(&store), policy()).unwrap());
    let attacker = address(50);
    let budget = policy().address_budget();
    for index in 0..budget {
        let name = if index % 2 == 0 { "alice" } else { "bob" };
        let refused = authenticator
            .authenticate_console(name, "wrong guess", attacker)
            .await;
        assert_eq!(refused.unwrap_err(), Failure::Unauthenticated);
    }
    // Refused before any check, even with the right password, and not counted.
    let refused = authenticator
        .authenticate_console("alice", &password_of("alice"), attacker)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Failure::ResourceExhausted(ref message) if message.contains("your address")),
        "{refused:?}"
    );
    let before = store.login("console:alice").await.unwrap();
    for _ in 0..5 {
        let _ = authenticator
            .authenticate_console("alice", "wrong guess", attacker)
            .await;
    }
    assert_eq!(store.login("console:alice").await.unwrap(), before);
    // The name is not locked: alice logs in from elsewhere.
    authenticator
        .authenticate_console("alice", &password_of("alice"), address(51))
        .await
        .unwrap();
    // The same /64 is the same address.
    let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
    for _ in 0..budget {
        let _ = authenticator
            .authenticate_console("bob", "wrong guess", v6(1))
            .await;
    }
    assert!(matches!(
        authenticator
            .authenticate_console("bob", &password_of("bob"), v6(2))
            .await,
        Err(Failure::ResourceExhausted(_))
    ));
}

#[test]
fn an_address_gets_its_rate_of_attempts_and_its_failures_lock_it_with_doubling() {
    let policy = policy();
    let mut limits = AddressLimits::new(policy, 20);
    let now = Instant::now();
    for _ in 0..20 {
        limits.admit("10.0.0.1", now).unwrap();
        limits.released("10.0.0.1");
    }
    match limits.admit("10.0.0.1", now) {
        Err(Refusal::AddressRate(wait)) => assert_eq!(wait.as_secs_f64().round(), 3.0),
        other => panic!("{other:?}"),
    }
    assert!(
        limits.admit("10.0.0.2", now).is_ok(),
        "other addresses are apart"
    );
    limits.released("10.0.0.2");
    assert!(limits
        .admit("10.0.0.1", now + Duration::from_millis(3_100))
        .is_ok());
    limits.released("10.0.0.1");
    // Failures: the budget, then a lock that doubles like a name's.
    let mut locks = Vec::new();
    let mut at = now + Duration::from_secs(120);
    for _ in 0..3 {
        let mut lock = None;
        for _ in 0..policy.address_budget() {
            limits.admit("10.0.0.3", at).unwrap();
            lock = limits.failed("10.0.0.3", at).or(lock);
        }
        let lock = lock.unwrap();
        assert!(matches!(
            limits.admit("10.0.0.3", at),
            Err(Refusal::AddressLocked(_))
        ));
        locks.push(lock.as_secs());
        at += lock + Duration::from_secs(60);
    }
    assert_eq!(locks, [30, 60, 120]);
    // Checks in flight count against the budget.
    limits.admit("10.0.0.4", at).unwrap();
    limits.admit("10.0.0.4", at).unwrap();
    assert_eq!(limits.admit("10.0.0.4", at), Err(Refusal::AddressBusy));
}

#[tokio::test]
async fn console_checks_wait_in_a_queue_of_their_own() {
    let pool = Arc::new(VerifyPool::with_permits(1));
    let held = pool.acquire(Queue::Grpc).await.unwrap();
    let console: Vec<_> = (0..MAX_WAITING_CONSOLE_PASSWORD_CHECKS)
        .map(|_| {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.acquire(Queue::Console).await.map(drop) })
        })
        .collect();
    let queued = tokio::time::timeout(Duration::from_secs(5), async {
        while pool.console_waiting.load(Ordering::SeqCst) < MAX_WAITING_CONSOLE_PASSWORD_CHECKS {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(queued.is_ok(), "the console waiters never queued");
    let refused = tokio::time::timeout(Duration::from_secs(1), pool.acquire(Queue::Console))
        .await
        .expect("refused at once");
    assert!(matches!(refused, Err(Failure::ResourceExhausted(_))));
    // The gRPC queue is untouched: a gRPC check still waits for its turn.
    let grpc = {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move { pool.acquire(Queue::Grpc).await.map(drop) })
    };
    let waiting = tokio::time::timeout(Duration::from_secs(5), async {
        while pool.waiting.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(waiting.is_ok(), "the gRPC check was refused, not queued");
    drop(held);
    for waiter in console {
        waiter.await.unwrap().unwrap();
    }
    grpc.await.unwrap().unwrap();
}

#[test]
fn refusals_are_resource_exhausted() {
    let locked = Failure::from(Refusal::Locked(Duration::from_millis(10)));
    assert!(matches!(locked, Failure::ResourceExhausted(ref message) if message.contains("1 s")));
    assert!(matches!(
        Failure::from(Refusal::TooManyTries),
        Failure::ResourceExhausted(_)
    ));
}
