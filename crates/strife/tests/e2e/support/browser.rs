//! Headless Chromium driven through WebDriver (chromedriver + `fantoccini`) for the web
//! console tests: one chromedriver per test on a free port, killed when the test ends, and
//! one browser session (its own profile, so its own cookies) per simulated person.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use super::free_port;

/// How long any page condition may take before the test fails.
pub const PAGE_LIMIT: Duration = Duration::from_secs(20);

/// A running chromedriver.
pub struct Chromedriver {
    child: Child,
    pub url: String,
}

impl Chromedriver {
    /// Starts chromedriver on a free loopback port and waits until it accepts connections.
    pub fn start() -> Self {
        let binary = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.is_file())
            .expect("chromedriver is not installed (scripts/test installs chromium-driver)");
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + PAGE_LIMIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(25));
        }
        driver
    }

    /// A new headless browser (its own profile and cookies), phone-or-desktop sized.
    pub async fn browser(&self) -> Client {
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|path| std::path::Path::new(path).is_file())
            .expect("chromium is not installed (scripts/test installs it)");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": binary,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    // The console's certificate chains to this network's own CA, which the
                    // test browser does not know; `served_certificate_chains_to` checks the
                    // chain with rustls instead.
                    "--ignore-certificate-errors",
                    "--window-size=1100,900",
                ],
            }),
        );
        let deadline = Instant::now() + PAGE_LIMIT;
        loop {
            match Client::with_capabilities_and_connector(
                &self.url,
                &capabilities,
                HttpConnector::new(),
            )
            .await
            {
                Ok(client) => return client,
                Err(error) if Instant::now() < deadline => {
                    eprintln!("browser session not ready yet: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("cannot start a browser session: {error}"),
            }
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where screenshots go: `target/console-screenshots/` of the workspace.
pub fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves what `browser` shows as `<name>.png`.
pub async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// The page's visible text (empty while a navigation replaces the document).
pub async fn page_text(browser: &Client) -> String {
    match browser.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until the page's text contains `needle` (reloading first when `reload`).
pub async fn wait_for_text(browser: &Client, needle: &str, reload: bool) -> String {
    let deadline = Instant::now() + PAGE_LIMIT;
    loop {
        if reload {
            browser.refresh().await.unwrap();
        }
        let text = page_text(browser).await;
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "page never showed {needle:?}; it shows:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(if reload { 250 } else { 50 })).await;
    }
}

/// Logs in through the login form.
pub async fn log_in(browser: &Client, console: &str, user: &str, password: &str) {
    browser.goto(&format!("{console}login")).await.unwrap();
    let form = browser.form(Locator::Id("login")).await.unwrap();
    form.set_by_name("username", user).await.unwrap();
    form.set_by_name("password", password).await.unwrap();
    form.submit().await.unwrap();
}
