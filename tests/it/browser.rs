//! A chromedriver process and one headless Chromium session (Debian's `chromium` and
//! `chromium-driver`, installed by scripts/services.sh), driven through the `fantoccini`
//! WebDriver client, for the tests of pages.

use crate::helpers::free_port;
use fantoccini::{elements::Element, Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::{
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The WebDriver key code of Enter.
pub const ENTER: &str = "\u{E007}";

/// A chromedriver process and one browser session; both go away on drop, also on failure.
pub struct Browser {
    client: Option<Client>,
    driver: Child,
    profile: PathBuf,
}

fn chromium_binary() -> &'static str {
    ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("Debian's chromium is installed (scripts/services.sh)")
}

impl Browser {
    pub async fn start() -> Browser {
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let profile = tmp.join(format!(
            "chromium-profile-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let port = free_port();
        std::fs::create_dir_all(tmp.join("logs")).unwrap();
        let log = std::fs::File::create(tmp.join("logs").join(format!("chromedriver-{port}.log")))
            .unwrap();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group, so that nothing it starts outlives the test.
            .process_group(0)
            .spawn()
            .expect("chromedriver is installed (Debian's chromium-driver; scripts/services.sh)");
        let mut browser = Browser {
            client: None,
            driver,
            profile,
        };
        let args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", browser.profile.display())])
        .collect();
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium_binary(), "args": args}),
        );
        // chromedriver takes a moment to listen.
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let tried = ClientBuilder::rustls()
                .expect("TLS roots")
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await;
            match tried {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no browser session: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        browser.client = Some(client);
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    pub async fn goto(&self, url: &str) {
        self.client().goto(url).await.unwrap();
    }

    pub async fn script(&self, script: &str) -> Value {
        self.client().execute(script, Vec::new()).await.unwrap()
    }

    pub async fn text(&self) -> String {
        self.script("return document.body ? document.body.innerText : ''")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits (bounded) until the page's text satisfies `ok`; returns the text.
    pub async fn wait_text(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.text().await;
            if ok(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{what}; the page shows:\n{text}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The element a CSS selector finds, waiting (bounded) for it to appear.
    pub async fn element(&self, css: &str) -> Element {
        self.client()
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css} on the page: {e}"))
    }

    /// Unfolds the page section whose heading starts with `title` (the UI folds some by
    /// default; a click on the heading slides it open) and waits until it is open.
    pub async fn unfold(&self, title: &str) {
        let heading = format!(
            "Array.from(document.querySelectorAll('h2')).find(h => h.innerText.startsWith({}))",
            Value::from(title)
        );
        self.script(&format!(
            "const h = {heading};
             if (h.parentElement.classList.contains('section-invisible')) h.click();"
        ))
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let open = self
                .script(&format!(
                    "const h = {heading};
                     return h.parentElement.classList.contains('section-visible')
                       && !$(h.nextElementSibling).is(':animated')
                       && h.nextElementSibling.offsetHeight > 0;"
                ))
                .await;
            if open == true {
                return;
            }
            assert!(Instant::now() < deadline, "section {title} did not open");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        self.element(css).await.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.element(css).await.click().await.unwrap();
    }

    pub async fn screenshot(&self, path: &PathBuf) {
        let bytes = self.client().screenshot().await.unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask chromedriver to close the browser, then make sure: kill every process that
        // runs with this session's profile directory, and chromedriver's process group.
        if let Some(client) = self.client.take() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
                });
            })
            .join();
        }
        let marker = format!("--user-data-dir={}", self.profile.display());
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if cmdline
                .split(|b| *b == 0)
                .any(|arg| arg == marker.as_bytes())
            {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        let pgid = self.driver.id().to_string();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
