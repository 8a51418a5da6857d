//! A small Chrome DevTools Protocol client for the browser test: headless chromium started
//! as a real process, one page driven over its websocket (navigate, evaluate JavaScript,
//! wait for a condition with a deadline, capture a screenshot).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::support::{wait_blocking, Proc, TempDir};

/// The chromium binary, if installed.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STOCKSYNC_CHROMIUM") {
        return Some(p.into());
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.exists())
}

/// A headless chromium and a connection to its first page.
pub struct Browser {
    _proc: Proc,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Browser {
    pub fn start(chromium: &Path, dir: &TempDir) -> Browser {
        let profile = dir.join("chromium-profile");
        let proc = Proc::spawn(
            chromium,
            &[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                "--no-first-run",
                "--window-size=1366,900",
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ],
            dir.join("chromium.log"),
        );
        let mut port = None;
        wait_blocking(Duration::from_secs(30), || {
            port = proc.output().lines().find_map(|l| {
                let rest = l.split("DevTools listening on ws://127.0.0.1:").nth(1)?;
                rest.split('/').next()?.parse::<u16>().ok()
            });
            port.is_some()
        })
        .unwrap_or_else(|_| panic!("chromium did not start: {}", proc.output()));
        let port = port.unwrap();
        let mut page_ws = None;
        wait_blocking(Duration::from_secs(10), || {
            let Ok(mut r) = ureq::get(&format!("http://127.0.0.1:{port}/json/list")).call() else {
                return false;
            };
            let list: Value = r.body_mut().read_json().unwrap_or(Value::Null);
            page_ws = list.as_array().and_then(|l| {
                l.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(String::from))
            });
            page_ws.is_some()
        })
        .expect("chromium lists its page");
        let (ws, _) = tungstenite::connect(page_ws.unwrap()).expect("DevTools websocket");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        }
        Browser {
            _proc: proc,
            ws,
            next_id: 0,
        }
    }

    /// Sends one command and returns its result (events in between are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).expect("send to DevTools");
        loop {
            let msg = self.ws.read().expect("read from DevTools");
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            r["exceptionDetails"].is_null(),
            "{expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is true in the page, or panics with `what` after `timeout`.
    pub fn wait_until(&mut self, what: &str, timeout: Duration, expr: &str) {
        let deadline = Instant::now() + timeout;
        let guarded =
            format!("(() => {{ try {{ return !!({expr}); }} catch (e) {{ return false; }} }})()");
        while self.eval(&guarded) != Value::Bool(true) {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; page: {}",
                self.eval(
                    "document.querySelector('#page') && document.querySelector('#page').innerText"
                )
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let data = base64_decode(r["data"].as_str().expect("screenshot data"));
        assert!(data.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, data).expect("write screenshot");
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, c)| acc | val(*c) << (18 - 6 * i));
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
}
