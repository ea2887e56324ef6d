//! A small Chrome DevTools Protocol client over Debian's `chromium` (installed by
//! `deploy/local/stack`): launch it headless on a debugging port of its choosing, open the
//! page target's WebSocket, and call the few methods the console tests need (navigate,
//! evaluate, screenshot), collecting what the page reports as errors (exceptions,
//! `console.error`, and the browser's own log: failed loads, content-security-policy
//! refusals).
//!
//! Kept by hand rather than `chromiumoxide` (a generated client of the whole protocol) for
//! its build cost, measured on 2026-12-05 on the shared 2-core development box (load about
//! 7.5 from other builds): chromiumoxide 0.9.1 without default features (no browser
//! fetcher) adds 7 crates (async-tungstenite, chromiumoxide, chromiumoxide_cdp,
//! chromiumoxide_pdl, chromiumoxide_types, futures-timer, which); building just those took
//! 1 min 59 s (54 s of CPU), of which `chromiumoxide_cdp` alone 104 s and `chromiumoxide`
//! 29 s, one after the other, before the test binary can link; and the first
//! `cargo build --tests` after adding it took 12 min 3 s instead of 2 min 58 s, as it also
//! rebuilt diesel, redis, rustls and what depends on them. That is over the minute a
//! dependency of one test may cost, for about 300 lines that call eight protocol methods.
//! (`fantoccini` would need chromedriver, which the stack does not install.)
//!
//! A missing browser fails the test with a message saying how to install it: the console's
//! check must not pass by not running.

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

/// Width of the emulated screen.
pub const WIDTH: u64 = 1400;
/// How long one protocol call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The browser binary: `$CHROMIUM`, else `chromium` or `chromium-browser` on the `PATH`.
fn find_chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "chromium not found (looked for $CHROMIUM, then chromium and chromium-browser on PATH): the console's \
         browser test needs it. `deploy/local/stack up` installs Debian's `chromium` package (as does \
         `apt-get install chromium`); CHROMIUM=/path/to/chrome picks another build."
    );
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;
type WsSink = futures::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

/// A headless chromium with one page; killed (and its profile removed) on drop.
pub struct Browser {
    child: tokio::process::Child,
    profile: PathBuf,
    sink: tokio::sync::Mutex<WsSink>,
    pending: Pending,
    events: Arc<Mutex<Vec<Value>>>,
    next_id: AtomicU64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    /// Starts chromium and attaches to its first page, with the runtime, log and page
    /// domains enabled so every error the page reports is collected.
    pub async fn launch() -> Self {
        let bin = find_chromium();
        let profile = std::env::temp_dir().join(format!("aliexpress-chromium-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&profile).expect("browser profile folder");
        let mut child = tokio::process::Command::new(&bin)
            .args([
                "--headless",
                // Tests run as root, where chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-port=0",
                &format!("--window-size={WIDTH},1000"),
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        // It prints `DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID` once up.
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let port = tokio::time::timeout(Duration::from_secs(60), async {
            let mut seen = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                    return rest.split('/').next().and_then(|p| p.parse::<u16>().ok());
                }
                seen.push(line);
            }
            panic!("{} exited before listening:\n{}", bin.display(), seen.join("\n"));
        })
        .await
        .expect("chromium listens within 60 s")
        .expect("chromium's debugging port");
        // Keep reading its stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let targets: Vec<Value> = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .expect("target list")
            .json()
            .await
            .expect("target list json");
        let ws_url = targets
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned();
        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .expect("page websocket");
        let (sink, mut stream) = ws.split();
        let pending: Pending = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (p, e) = (pending.clone(), events.clone());
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                match v["id"].as_u64() {
                    Some(id) => {
                        if let Some(tx) = p.lock().expect("pending").remove(&id) {
                            let _ = tx.send(v);
                        }
                    }
                    None => e.lock().expect("events").push(v),
                }
            }
        });
        let b = Self {
            child,
            profile,
            sink: tokio::sync::Mutex::new(sink),
            pending,
            events,
            next_id: AtomicU64::new(1),
        };
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            b.call(domain, json!({})).await;
        }
        b
    }

    /// Calls `method` and returns its `result`; a protocol error fails the test.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending").insert(id, tx);
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.sink
            .lock()
            .await
            .send(Message::Text(msg.into()))
            .await
            .expect("send to chromium");
        let v = tokio::time::timeout(CALL_TIMEOUT, rx)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer within {CALL_TIMEOUT:?}"))
            .expect("answer");
        assert!(v.get("error").is_none(), "{method}: {}", v["error"]);
        v["result"].clone()
    }

    /// Loads `url` and waits for its load event (`document.readyState == "complete"`).
    pub async fn navigate(&self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url})).await;
        assert!(r.get("errorText").is_none(), "navigating to {url}: {}", r["errorText"]);
        self.wait_for(
            &format!("loading {url}"),
            Duration::from_secs(30),
            "document.readyState === 'complete' && location.href !== 'about:blank'",
        )
        .await;
    }

    /// The value of a JavaScript expression (promises awaited); an exception fails the test.
    pub async fn eval(&self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expression}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Polls `expression` until it is truthy; fails with `what` and the last value past `deadline`.
    pub async fn wait_for(&self, what: &str, deadline: Duration, expression: &str) -> Value {
        let last = std::cell::RefCell::new(Value::Null);
        let truthy = crate::helpers::wait_until(deadline, || {
            let last = &last;
            async move {
                let v = self.eval(expression).await;
                let truthy = match &v {
                    Value::Null => false,
                    Value::Bool(b) => *b,
                    Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                    Value::String(s) => !s.is_empty(),
                    _ => true,
                };
                *last.borrow_mut() = v;
                truthy
            }
        })
        .await;
        let v = last.into_inner();
        if !truthy {
            let text = self.eval("document.body.innerText.slice(0, 3000)").await;
            panic!(
                "{what}: `{expression}` still {v} after {deadline:?}; page errors: {:?}; page text:\n{}",
                self.errors(),
                text.as_str().unwrap_or_default()
            );
        }
        v
    }

    /// Everything the page reported as an error so far: uncaught exceptions, `console.error`
    /// and `console.assert`, and browser log entries of level error (failed requests, CSP).
    pub fn errors(&self) -> Vec<String> {
        let events = self.events.lock().expect("events");
        events
            .iter()
            .filter_map(|e| {
                let p = &e["params"];
                match e["method"].as_str()? {
                    "Runtime.exceptionThrown" => Some(format!(
                        "exception: {}",
                        p["exceptionDetails"]["exception"]["description"]
                            .as_str()
                            .or(p["exceptionDetails"]["text"].as_str())
                            .unwrap_or_default()
                    )),
                    "Runtime.consoleAPICalled" if matches!(p["type"].as_str(), Some("error" | "assert")) => Some(
                        format!("console.{}: {}", p["type"].as_str().unwrap_or_default(), p["args"]),
                    ),
                    "Log.entryAdded" if p["entry"]["level"] == "error" => Some(format!(
                        "log ({}): {} {}",
                        p["entry"]["source"].as_str().unwrap_or_default(),
                        p["entry"]["text"].as_str().unwrap_or_default(),
                        p["entry"]["url"].as_str().unwrap_or_default()
                    )),
                    _ => None,
                }
            })
            .collect()
    }

    /// A PNG of the whole page (not only the window) written to `path`.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let height = self
            .eval("Math.ceil(Math.max(document.documentElement.scrollHeight, document.body.scrollHeight))")
            .await
            .as_u64()
            .unwrap_or(1000)
            .clamp(600, 6000);
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        self.call("Emulation.clearDeviceMetricsOverride", json!({})).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 png");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot folder");
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}
