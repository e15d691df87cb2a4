//! A real headless Chromium, driven over WebDriver (chromedriver started as
//! a child process). Both come from Debian's `chromium` and
//! `chromium-driver` packages, which `scripts/test` installs; a missing driver is
//! a test failure, never a skip.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::process::{Child, Command};

use crate::common::PATIENCE;

pub struct Browser {
    pub client: Client,
    /// chromedriver, leader of a process group of its own: Chromium runs in
    /// that group, and dropping the browser kills the group (killing the
    /// driver alone left a headless Chromium behind after every test run).
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Browser {
    pub async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .expect("chromedriver must be installed (Debian: apt-get install chromium chromium-driver)");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--disable-quic", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Browser { client, driver, _profile: profile }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Click; retried if the element was replaced meanwhile (a live region
    /// refresh or a navigation can swap it between finding and clicking).
    pub async fn click(&self, css: &str) {
        for _ in 0..20 {
            if self.find(css).await.click().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("could not click {css}");
    }

    /// The page's visible text (retried across navigations).
    pub async fn text(&self) -> String {
        for _ in 0..20 {
            if let Ok(text) = self.find("body").await.text().await {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("could not read the page");
    }

    /// Wait until the page's text contains `needle` (live regions update
    /// on their own; nothing reloads the page here).
    pub async fn wait_for_text(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let text = self.text().await;
            if text.contains(needle) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page never showed {needle:?}; it shows:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Text of the element matching `css`, waiting until it contains `needle`.
    pub async fn wait_for_in(&self, css: &str, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = el.text().await
                && text.contains(needle)
            {
                return text;
            }
            assert!(tokio::time::Instant::now() < deadline, "{css} never showed {needle:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// Save a PNG of the viewport: under `target/screenshots/`, or with
    /// `HOOKLINE_UPDATE_SCREENSHOTS=1`, into `docs/screenshots/` (the ones
    /// the README shows).
    pub async fn screenshot(&self, name: &str) {
        let tidy = "window.scrollTo(0, 0); var t = document.getElementById('toast'); if (t) t.classList.remove('show');";
        self.client.execute(tidy, vec![]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let png = self.client.screenshot().await.unwrap();
        save_screenshot(name, png);
    }

    /// Save a PNG of one element (scrolled into view), as [`Browser::screenshot`].
    pub async fn screenshot_of(&self, name: &str, css: &str) {
        let el = self.find(css).await;
        self.client
            .execute("arguments[0].scrollIntoView({block: 'center'});", vec![json!(el)])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        save_screenshot(name, el.screenshot().await.unwrap());
    }

    /// Mark the current document; `still_marked` tells whether the page was
    /// reloaded since.
    pub async fn mark(&self) {
        self.client.execute("window.__hookline_mark = 42;", vec![]).await.unwrap();
    }

    pub async fn still_marked(&self) -> bool {
        self.client.execute("return window.__hookline_mark === 42;", vec![]).await.unwrap() == json!(true)
    }
}

/// Under `target/screenshots/`, or with `HOOKLINE_UPDATE_SCREENSHOTS=1`,
/// into `docs/screenshots/` (the ones the README shows).
fn save_screenshot(name: &str, png: Vec<u8>) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = match std::env::var("HOOKLINE_UPDATE_SCREENSHOTS").as_deref() {
        Ok("1") => root.join("docs/screenshots"),
        _ => root.join("target/screenshots"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}
