//! The web console (`strife gateway --web-listen`, on in `strife dev`): headless Chromium
//! driven through WebDriver against a real `strife dev` network. Every test saves
//! screenshots under `target/console-screenshots/`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::{json, Value};
use strife_common::layout::Layout;

use crate::support::browser::{
    log_in, page_text, screenshot, wait_for_text, Chromedriver, PAGE_LIMIT,
};
use crate::support::dev::DevNetwork;
use crate::support::wait_until;

/// The console's base URL (`https://127.0.0.1:PORT/`) from the dev ready line.
fn console_url(network: &DevNetwork) -> String {
    let url = network.ready["console"]
        .as_str()
        .expect("strife dev prints the console URL")
        .to_owned();
    assert!(url.starts_with("https://") && url.ends_with('/'), "{url}");
    url
}

/// Fetches `/login` over TLS trusting only the project CA (rustls, no browser): the served
/// certificate must chain to it for `localhost`. Returns the response head.
fn served_certificate_chains_to(console: &str, ca: &Path) -> String {
    use rustls::pki_types::ServerName;
    let config = crate::support::trusting_only(ca);
    let mut connection =
        rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let address = console.trim_start_matches("https://").trim_end_matches('/');
    let mut socket = TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::Stream::new(&mut connection, &mut socket);
    tls.write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("TLS handshake with the project CA as the only root");
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tls.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => response.extend_from_slice(&buffer[..read]),
            // hyper may close without close_notify once the response is complete.
            Err(_) => break,
        }
    }
    let response = String::from_utf8_lossy(&response).into_owned();
    response
        .split_once("\r\n\r\n")
        .map(|(head, _)| head.to_owned())
        .unwrap_or(response)
}

/// Runs `script` in the page and returns its value (a returned promise is awaited).
async fn run(browser: &Client, script: &str) -> Value {
    browser.execute(script, vec![]).await.unwrap()
}

/// Marks the current document; [`still_marked`] then tells whether it was reloaded since.
async fn mark(browser: &Client) {
    run(
        browser,
        "document.body.dataset.notReloaded = 'yes'; return true;",
    )
    .await;
}

async fn still_marked(browser: &Client) -> bool {
    run(
        browser,
        "return document.body.dataset.notReloaded === 'yes';",
    )
    .await
        == json!(true)
}

/// Waits (without reloading) until the element `css` exists in the page.
async fn wait_for_element(browser: &Client, css: &str) {
    let appeared = wait_until(PAGE_LIMIT, || async {
        browser.find(Locator::Css(css)).await.is_ok()
    })
    .await;
    assert!(
        appeared,
        "{css} never appeared; the page shows:\n{}",
        page_text(browser).await
    );
}

/// The payment id of the payment page the browser is on.
async fn payment_id_on_page(browser: &Client) -> String {
    let url = browser.current_url().await.unwrap();
    let id = url
        .path()
        .strip_prefix("/payments/")
        .unwrap_or_else(|| panic!("not on a payment page: {url}"));
    id.to_owned()
}

/// Fills and submits the pay form on the home page.
async fn pay_with_form(browser: &Client, to: &str, amount: &str, memo: &str) {
    let form = browser.form(Locator::Id("pay")).await.unwrap();
    form.set_by_name("to", to).await.unwrap();
    form.set_by_name("amount", amount).await.unwrap();
    form.set_by_name("memo", memo).await.unwrap();
    form.submit().await.unwrap();
}

/// `fetch` from the page (same origin, the session cookie goes along); the HTTP status.
async fn fetch_status(browser: &Client, method: &str, path: &str, body: &str) -> u64 {
    let script = format!(
        "return fetch({path}, {{method: {method}, headers: {{'Content-Type': 'application/x-www-form-urlencoded'}}, {body} redirect: 'manual'}}).then(r => r.status);",
        path = json!(path),
        method = json!(method),
        body = if method == "GET" {
            String::new()
        } else {
            format!("body: {},", json!(body))
        },
    );
    run(browser, &script).await.as_u64().unwrap()
}

/// Payments of `amount_minor` in `user`'s history, through the gRPC API (the CLI).
fn payments_of(network: &DevNetwork, user: &str, amount_minor: i64) -> Vec<Value> {
    let (code, history) = network.client(user, &["history", "--limit", "100"]);
    assert_eq!(code, 0, "{history}");
    history["payments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|payment| payment["amount"]["amount_minor"] == json!(amount_minor))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_payer_pays_and_both_sessions_see_it_live() {
    let network = DevNetwork::start();
    let console = console_url(&network);
    let head = served_certificate_chains_to(&console, &Layout::new(network.dir()).ca().cert);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let driver = Chromedriver::start();

    let alice = driver.browser().await;
    log_in(&alice, &console, "alice", &network.password("alice")).await;
    let text = wait_for_text(&alice, "Balances", false).await;
    assert!(
        text.contains("100.00 USD"),
        "alice's balance as the CLI shows it:\n{text}"
    );
    mark(&alice).await;

    let bob = driver.browser().await;
    log_in(&bob, &console, "bob", &network.password("bob")).await;
    wait_for_text(&bob, "50.00 USD", false).await;
    mark(&bob).await;

    // Alice pays from a second tab; her first tab and bob's page are left alone.
    let first_tab = alice.window().await.unwrap();
    let second = alice.new_window(true).await.unwrap();
    alice.switch_to_window(second.handle).await.unwrap();
    alice.goto(&console).await.unwrap();
    pay_with_form(&alice, "bob", "12.50", "<i>lunch</i>").await;
    let text = wait_for_text(&alice, "COMMITTED", false).await;
    assert!(text.contains("12.50 USD"), "{text}");
    assert!(
        text.contains("<i>lunch</i>"),
        "a memo is shown as text, never as markup:\n{text}"
    );
    let payment_id = payment_id_on_page(&alice).await;
    screenshot(&alice, "payer-payment-detail").await;

    // Without a reload, both pages get the payment from the event stream.
    let row = format!("#p-{payment_id}");
    alice.switch_to_window(first_tab).await.unwrap();
    wait_for_element(&alice, &row).await;
    assert!(still_marked(&alice).await, "alice's page was reloaded");
    wait_for_element(&bob, &row).await;
    assert!(still_marked(&bob).await, "bob's page was reloaded");
    let row_text = bob
        .find(Locator::Css(&row))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        row_text.contains("12.50 USD") && row_text.contains("COMMITTED"),
        "{row_text}"
    );
    screenshot(&bob, "payer-bob-live").await;

    alice.refresh().await.unwrap();
    let text = wait_for_text(&alice, "87.50 USD", false).await;
    assert!(text.contains(&payment_id[..8]), "{text}");
    screenshot(&alice, "payer").await;
    // The same page at phone width.
    alice.set_window_size(390, 844).await.unwrap();
    screenshot(&alice, "payer-phone").await;

    // A refusal is a sentence on the page.
    alice.set_window_size(1100, 900).await.unwrap();
    alice.goto(&console).await.unwrap();
    pay_with_form(&alice, "bob", "5000.00", "").await;
    let text = wait_for_text(&alice, "insufficient funds", false).await;
    assert!(text.contains("Payment declined"), "{text}");
    alice.goto(&console).await.unwrap();
    pay_with_form(&alice, "nobody", "1.00", "").await;
    wait_for_text(&alice, "Unknown payee", false).await;
    screenshot(&alice, "payer-refusal").await;
    // bank0 owes 12.50 now; a cap of 13.00 leaves no room for 1.00 more.
    let (code, capped) = network.client(
        "admin",
        &["settlement", "cap", "--bank", "bank0", "--amount", "13.00"],
    );
    assert_eq!(code, 0, "{capped}");
    alice.goto(&console).await.unwrap();
    pay_with_form(&alice, "bob", "1.00", "").await;
    let text = wait_for_text(&alice, "net debit cap would be exceeded", false).await;
    assert!(
        !text.contains("panicked") && !text.contains("internal error"),
        "{text}"
    );
    alice.close().await.unwrap();
    bob.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pay_form_double_click_and_resubmit_pay_once() {
    let network = DevNetwork::start();
    let console = console_url(&network);
    let driver = Chromedriver::start();
    let alice = driver.browser().await;
    log_in(&alice, &console, "alice", &network.password("alice")).await;
    wait_for_text(&alice, "Balances", false).await;

    let form = alice.form(Locator::Id("pay")).await.unwrap();
    form.set_by_name("to", "bob").await.unwrap();
    form.set_by_name("amount", "3.21").await.unwrap();
    // What the browser would send again on a resubmit: the fields as drawn.
    let fields = run(
        &alice,
        "return Object.fromEntries(new FormData(document.getElementById('pay')));",
    )
    .await;
    assert!(
        fields["idempotency_key"].as_str().unwrap().len() >= 32,
        "{fields}"
    );
    run(
        &alice,
        "const button = document.getElementById('pay-button'); button.click(); button.click(); return true;",
    )
    .await;
    wait_for_text(&alice, "COMMITTED", false).await;
    let first = payment_id_on_page(&alice).await;

    // Resubmit the very form (same key) as a browser's "send again" does.
    let resubmit = format!(
        "const form = document.createElement('form'); form.method = 'post'; form.action = '/pay';\
         const fields = {fields};\
         for (const name in fields) {{ const input = document.createElement('input'); input.type = 'hidden';\
           input.name = name; input.value = fields[name]; form.appendChild(input); }}\
         document.body.appendChild(form); form.submit(); return true;"
    );
    alice.goto(&format!("{console}history")).await.unwrap();
    run(&alice, &resubmit).await;
    wait_for_text(&alice, "COMMITTED", false).await;
    assert_eq!(
        payment_id_on_page(&alice).await,
        first,
        "the resubmit found the same payment"
    );
    screenshot(&alice, "payer-resubmitted").await;

    let paid = payments_of(&network, "alice", 321);
    assert_eq!(
        paid.len(),
        1,
        "exactly one payment through the gRPC API: {paid:?}"
    );
    assert_eq!(paid[0]["payment_id"], json!(first));
    assert_eq!(network.available_minor("alice"), 10_000 - 321);
    alice.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_wrong_passwords_show_a_message_and_one_browser_cannot_lock_a_name() {
    let network = DevNetwork::start();
    let console = console_url(&network);
    let driver = Chromedriver::start();
    let browser = driver.browser().await;
    log_in(&browser, &console, "alice", "not-her-password").await;
    let text = wait_for_text(&browser, "Wrong user name or password.", false).await;
    assert!(!text.contains("Balances"), "{text}");
    screenshot(&browser, "login-wrong-password").await;
    // The gateway's threshold is 5; one client address may fail one time fewer (4) ...
    for _ in 0..3 {
        log_in(&browser, &console, "alice", "not-her-password").await;
        wait_for_text(&browser, "Wrong user name or password.", false).await;
    }
    // ... and is then refused before any password is checked, the right one included.
    for password in ["not-her-password".to_owned(), network.password("alice")] {
        log_in(&browser, &console, "alice", &password).await;
        let text = wait_for_text(&browser, "Locked out", false).await;
        assert!(
            text.contains("too many failed logins from your address"),
            "{text}"
        );
    }
    screenshot(&browser, "login-locked").await;
    // The name itself is not locked: alice still pays over gRPC (certificate + password).
    // (Five failures from five addresses do lock her console logins — and, not being the
    // admin, her gRPC ones: e2e console_attacks.)
    let (code, answer) = network.client("alice", &["balance"]);
    assert_eq!(code, 0, "{answer}");
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_refuses_forged_posts_and_keeps_roles_and_data_apart() {
    let network = DevNetwork::start();
    let console = console_url(&network);
    let head = served_certificate_chains_to(&console, &Layout::new(network.dir()).ca().cert);
    assert!(
        head.to_lowercase()
            .contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    let driver = Chromedriver::start();
    let alice = driver.browser().await;
    log_in(&alice, &console, "alice", &network.password("alice")).await;
    wait_for_text(&alice, "Balances", false).await;

    let cookie = alice
        .get_named_cookie("__Host-strife-session")
        .await
        .unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    assert!(cookie.expires().is_some(), "the session cookie expires");
    assert_eq!(cookie.value().len(), 64, "a 256-bit random id");

    // A POST without the CSRF token (or with another) is refused and pays nothing.
    let key = "csrf-probe-0001";
    let status = fetch_status(
        &alice,
        "POST",
        "/pay",
        &format!("to=bob&amount=1.11&idempotency_key={key}"),
    )
    .await;
    assert_eq!(status, 403);
    let status = fetch_status(
        &alice,
        "POST",
        "/pay",
        &format!("to=bob&amount=1.11&idempotency_key={key}&csrf=forged"),
    )
    .await;
    assert_eq!(status, 403);
    assert!(payments_of(&network, "alice", 111).is_empty());
    let status = fetch_status(&alice, "POST", "/logout", "").await;
    assert_eq!(status, 403, "logout needs the token too");

    // A payer cannot open an operator page.
    assert_eq!(
        fetch_status(&alice, "GET", "/ops/settlement", "").await,
        403
    );
    alice.goto(&format!("{console}ops/network")).await.unwrap();
    let text = page_text(&alice).await;
    assert!(text.contains("for the admin only"), "{text}");
    screenshot(&alice, "payer-forbidden").await;

    // Nor a payment she has no part in: bob pays carol.
    let (code, registered) = network.client_with_env(
        "admin",
        &["register", "carol"],
        &[("STRIFE_NEW_PASSWORD", "Xq7-pass-9f8e7d6c-long")],
    );
    assert_eq!(code, 0, "{registered}");
    let (code, opened) = network.client(
        "admin",
        &[
            "open-account",
            "--user",
            "carol",
            "--bank",
            "bank1",
            "--deposit",
            "1.00",
        ],
    );
    assert_eq!(code, 0, "{opened}");
    let (code, paid) = network.client("bob", &["pay", "--to", "carol", "--amount", "2.22"]);
    assert_eq!(code, 0, "{paid}");
    let theirs = payments_of(&network, "bob", 222)[0]["payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        fetch_status(&alice, "GET", &format!("/payments/{theirs}"), "").await,
        404
    );
    alice
        .goto(&format!("{console}payments/{theirs}"))
        .await
        .unwrap();
    let text = page_text(&alice).await;
    assert!(text.contains("Not found"), "{text}");
    assert!(!text.contains("2.22"), "{text}");

    // Neither the password nor the session id ever reaches the gateway's log.
    let log = std::fs::read_to_string(network.dir().join("logs/gateway.log")).unwrap();
    assert!(
        log.contains("console login"),
        "the log has the console's lines"
    );
    assert!(
        !log.contains(&network.password("alice")),
        "a password in the log"
    );
    assert!(!log.contains(cookie.value()), "a session id in the log");

    // Logging out ends the session.
    alice.goto(&console).await.unwrap();
    alice
        .find(Locator::Id("logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&alice, "Log in", false).await;
    assert_eq!(
        fetch_status(&alice, "GET", "/history", "").await,
        0,
        "redirected (opaque) to the login page"
    );
    alice.goto(&format!("{console}history")).await.unwrap();
    let text = page_text(&alice).await;
    assert!(
        text.contains("User name") && !text.contains("Newest"),
        "{text}"
    );
    alice.close().await.unwrap();
}

/// Resumes a stopped process when the test ends, however it ends.
struct Resume(libc::pid_t);

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid of our own test network.
        unsafe {
            libc::kill(self.0, libc::SIGCONT);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_operator_sees_the_network_and_settles_a_window() {
    let network = DevNetwork::start();
    let console = console_url(&network);
    let driver = Chromedriver::start();
    let admin = driver.browser().await;
    log_in(&admin, &console, "admin", &network.password("admin")).await;
    wait_for_text(&admin, "Legs in doubt", false).await;
    for bank in ["bank0", "bank1"] {
        let state = admin
            .find(Locator::Css(&format!("#bank-{bank} .state")))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(state, "up", "{bank}");
    }
    screenshot(&admin, "operator-network").await;

    // The live feed shows cross-bank payments as they are decided.
    admin.goto(&format!("{console}ops/payments")).await.unwrap();
    mark(&admin).await;
    for (from, to, amount) in [
        ("alice", "bob", "10.00"),
        ("alice", "bob", "5.00"),
        ("bob", "alice", "2.50"),
    ] {
        let (code, paid) = network.client(from, &["pay", "--to", to, "--amount", amount]);
        assert_eq!(code, 0, "{paid}");
    }
    let listed = wait_until(PAGE_LIMIT, || async {
        admin
            .find_all(Locator::Css("#payments tbody tr"))
            .await
            .unwrap()
            .len()
            >= 3
    })
    .await;
    assert!(listed, "{}", page_text(&admin).await);
    assert!(still_marked(&admin).await);
    screenshot(&admin, "operator-payments").await;

    // Settlement: positions as a chart, a cap, and closing the window from the page.
    admin
        .goto(&format!("{console}ops/settlement"))
        .await
        .unwrap();
    let form = admin.form(Locator::Id("cap")).await.unwrap();
    form.set_by_name("bank_id", "bank0").await.unwrap();
    form.set_by_name("cap", "50.00").await.unwrap();
    form.submit().await.unwrap();
    let text = wait_for_text(&admin, "Cap of bank0 set to 50.00 USD.", false).await;
    assert!(
        text.contains("12.50 USD"),
        "bank0 owes 10 + 5 - 2.50:\n{text}"
    );
    let bars = admin
        .find_all(Locator::Css("#positions-chart rect.position"))
        .await
        .unwrap();
    assert_eq!(bars.len(), 2, "one bar per bank");
    let chart = admin
        .find(Locator::Css("#positions-chart"))
        .await
        .unwrap()
        .html(false)
        .await
        .unwrap();
    assert!(
        chart.contains("class=\"cap\"") && chart.contains("25 % used"),
        "{chart}"
    );
    screenshot(&admin, "operator-settlement").await;
    admin
        .form(Locator::Id("close-window"))
        .await
        .unwrap()
        .submit()
        .await
        .unwrap();
    let text = wait_for_text(&admin, "CLOSED", false).await;
    assert!(
        text.contains("Net amounts") && text.contains("12.50 USD"),
        "{text}"
    );
    screenshot(&admin, "operator-window-report").await;
    // A window that is not a number is a page saying so, not a framework error.
    admin
        .goto(&format!("{console}ops/windows/not-a-number"))
        .await
        .unwrap();
    let text = page_text(&admin).await;
    assert!(
        text.contains("There is no such settlement window."),
        "{text}"
    );

    // Users and accounts.
    admin.goto(&format!("{console}ops/users")).await.unwrap();
    let form = admin.form(Locator::Id("register")).await.unwrap();
    form.set_by_name("username", "carol").await.unwrap();
    form.set_by_name("password", "Xq7-pass-9f8e7d6c-long")
        .await
        .unwrap();
    form.submit().await.unwrap();
    wait_for_text(&admin, "User carol registered.", false).await;
    let form = admin.form(Locator::Id("open-account")).await.unwrap();
    form.set_by_name("username", "carol").await.unwrap();
    form.set_by_name("deposit", "7.00").await.unwrap();
    form.submit().await.unwrap();
    let text = wait_for_text(&admin, "opened for carol", false).await;
    assert!(text.contains("7.00 USD"), "{text}");
    screenshot(&admin, "operator-users").await;

    // One bank stops answering (and so loses its etcd lease): the network page shows it down.
    let lock = std::fs::read_to_string(Layout::new(network.dir()).bank_lock("bank1")).unwrap();
    let pid: libc::pid_t = lock.split_whitespace().next().unwrap().parse().unwrap();
    let _resume = Resume(pid);
    // SAFETY: kill(2) on a pid of our own test network.
    unsafe {
        assert_eq!(libc::kill(pid, libc::SIGSTOP), 0);
    }
    admin.goto(&format!("{console}ops/network")).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = admin
            .find(Locator::Css("#bank-bank1 .state"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if state == "down" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bank1 never shown down"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        admin.refresh().await.unwrap();
    }
    let bank0 = admin
        .find(Locator::Css("#bank-bank0 .state"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(bank0, "up");
    screenshot(&admin, "operator-network-bank-down").await;
    admin.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_user_creates_a_scoped_api_key_sees_it_once_and_revokes_it() {
    let network = DevNetwork::start();
    let console = console_url(&network);
    let api = network.ready["http"][0].as_str().unwrap().to_owned();
    let driver = Chromedriver::start();
    let alice = driver.browser().await;
    log_in(&alice, &console, "alice", &network.password("alice")).await;
    wait_for_text(&alice, "Balances", false).await;
    alice.goto(&format!("{console}keys")).await.unwrap();
    wait_for_element(&alice, "#create-key").await;
    // A client is offered only a client's scopes.
    let offered = page_text(&alice).await;
    assert!(offered.contains("payments:read"), "{offered}");
    assert!(!offered.contains("settlement:write"), "{offered}");
    let form = alice.form(Locator::Id("create-key")).await.unwrap();
    form.set_by_name("description", "read-only from the console")
        .await
        .unwrap();
    alice
        .find(Locator::Css("input[name=scope_payments_read]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    form.submit().await.unwrap();
    wait_for_element(&alice, "#new-key").await;
    let key = alice
        .find(Locator::Id("new-key"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(key.starts_with("sk_"), "{key}");
    screenshot(&alice, "api-key-created").await;
    let curl = |method: &str, path: &str| -> u16 {
        let output = std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                method,
                "--cacert",
            ])
            .arg(network.dir().join("pki/ca.crt"))
            .args(["-H", &format!("Authorization: Bearer {key}")])
            .args([
                "-H",
                "Idempotency-Key: console-key",
                "-H",
                "Content-Type: application/json",
            ])
            .args([
                "--data-binary",
                r#"{"to_username":"bob","amount":{"amount_minor":1,"currency":"USD"}}"#,
            ])
            .arg(format!("{api}{path}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(curl("GET", "balances"), 200);
    assert_eq!(curl("POST", "payments"), 403, "a read-only key cannot pay");

    // Listed by id only; the secret is on no page but the one that made it.
    alice.goto(&format!("{console}keys")).await.unwrap();
    wait_for_element(&alice, "#api-keys").await;
    let listed = page_text(&alice).await;
    assert!(listed.contains("read-only from the console"), "{listed}");
    assert!(!listed.contains(&key), "the list never shows a secret");
    let key_id = key.split('_').nth(1).unwrap().to_owned();
    alice
        .find(Locator::Id(&format!("revoke-{key_id}")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&alice, "revoked", false).await;
    assert_eq!(curl("GET", "balances"), 401, "refused once revoked");
    alice.close().await.unwrap();
}

/// An authorization on the console: its payee sees the expiry, the time left and a Capture
/// button, its payer only Void; capturing moves the money, voiding releases the hold, and a
/// captured payment's refunds are listed on its page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_payee_captures_payer_voids_and_refunds_are_listed() {
    let network = DevNetwork::start();
    let console = console_url(&network);
    let authorize = |key: &str, amount: &str| {
        let (code, held) = network.client(
            "alice",
            &["authorize", "--to", "bob", "--amount", amount, "--key", key],
        );
        assert_eq!(code, 0, "{held}");
        held["payment"]["payment_id"].as_str().unwrap().to_owned()
    };
    let stay = authorize("console-stay", "20.00");
    let deposit = authorize("console-deposit", "5.00");
    let driver = Chromedriver::start();

    let bob = driver.browser().await;
    log_in(&bob, &console, "bob", &network.password("bob")).await;
    wait_for_text(&bob, "Balances", false).await;
    bob.goto(&format!("{console}payments/{stay}"))
        .await
        .unwrap();
    let text = wait_for_text(&bob, "AUTHORIZED", false).await;
    assert!(text.contains("Authorization expires"), "{text}");
    wait_for_element(&bob, "#time-left").await;
    screenshot(&bob, "payee-authorization").await;
    bob.form(Locator::Id("capture"))
        .await
        .unwrap()
        .submit()
        .await
        .unwrap();
    wait_for_text(&bob, "COMMITTED", false).await;

    let alice = driver.browser().await;
    log_in(&alice, &console, "alice", &network.password("alice")).await;
    wait_for_text(&alice, "Balances", false).await;
    alice
        .goto(&format!("{console}payments/{deposit}"))
        .await
        .unwrap();
    wait_for_text(&alice, "AUTHORIZED", false).await;
    assert!(
        alice.find(Locator::Id("capture")).await.is_err(),
        "the payer is offered no capture"
    );
    alice
        .form(Locator::Id("void"))
        .await
        .unwrap()
        .submit()
        .await
        .unwrap();
    let text = wait_for_text(&alice, "ABORTED", false).await;
    assert!(text.contains("authorization_voided"), "{text}");
    // 100.00 − 20.00 captured; the 5.00 hold is back.
    alice.goto(&console).await.unwrap();
    wait_for_text(&alice, "80.00 USD", false).await;

    let (code, refunded) = network.client("bob", &["refund", &stay, "--amount", "2.00"]);
    assert_eq!(code, 0, "{refunded}");
    alice
        .goto(&format!("{console}payments/{stay}"))
        .await
        .unwrap();
    wait_for_element(&alice, "#refunds").await;
    let refunds = alice
        .find(Locator::Id("refunds"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(refunds.contains("2.00 USD"), "{refunds}");
    alice.close().await.unwrap();
    bob.close().await.unwrap();
}
