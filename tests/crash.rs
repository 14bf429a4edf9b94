//! Crash safety of `POST /events`: every event the server acknowledged survives a
//! `kill -9` of the real `shoprank serve` process in the middle of a stream of requests.
//!
//! The demo catalog is indexed (no model) into a temp dir through the library; the binary
//! serves it on a free 127.0.0.1 port; a client thread streams small NDJSON batches over
//! raw HTTP/1.1 and records which ones got a 200; the server is killed with SIGKILL after
//! some acknowledgements, restarted on the same data dir, and every user's stored event
//! count is checked against what was acknowledged, over HTTP and in the redb file itself.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use shoprank::behavior::{self, EventStore, RedbStore};

/// Events the client tries to send, at most.
const EVENTS: usize = 2000;
/// Acknowledged batches before the kill.
const KILL_AFTER_BATCHES: usize = 25;
/// Users the events are spread over.
const USERS: usize = 8;
/// Product event types the client sends.
const KINDS: [&str; 4] = ["view", "click", "cart", "purchase"];
/// Health polls (100 ms apart) before giving up on a starting server.
const HEALTH_TRIES: usize = 600;

/// A running `shoprank serve`; killed (SIGKILL) and reaped when dropped, so a failing
/// assertion never leaves a server behind.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the binary on `data_dir` and waits until `/health` answers 200. Retries on a
    /// new port if the process exits early (another process took the free port).
    fn start(data_dir: &Path, name: &str) -> Server {
        let log = data_dir.with_extension(format!("{name}.log"));
        for _ in 0..5 {
            let addr = free_addr();
            let log_file = std::fs::File::create(&log).expect("server log file");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoprank"));
            cmd.current_dir(common::root())
                .arg("serve")
                .arg("--data-dir")
                .arg(data_dir)
                .arg("--addr")
                .arg(addr.to_string())
                .arg("--workers")
                .arg("2")
                .arg("--model-dir")
                .arg(data_dir.join("no-model-here"))
                .arg("--manifest")
                .arg(common::root().join("models/manifest.toml"))
                .env("RUST_LOG", "info,tantivy=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file);
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("SHOPRANK_") {
                    cmd.env_remove(key);
                }
            }
            let mut server = Server {
                child: cmd.spawn().expect("the shoprank binary starts"),
                addr,
                log: log.clone(),
            };
            for _ in 0..HEALTH_TRIES {
                if let Some(status) = server.child.try_wait().expect("try_wait") {
                    eprintln!("server exited early ({status}); retrying on another port");
                    eprintln!("{}", server.log_text());
                    break;
                }
                if matches!(http(addr, "GET", "/health", b""), Ok((200, _))) {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if server.child.try_wait().expect("try_wait").is_none() {
                panic!(
                    "server on {addr} never answered /health:\n{}",
                    server.log_text()
                );
            }
        }
        panic!(
            "the server did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A port nobody listens on right now.
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
}

/// One HTTP/1.1 request with `Connection: close`; returns the status code and the body.
/// Any I/O failure or an incomplete status line is an `Err` (the request is not known to
/// have been answered).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no complete response head"))?;
    let head = std::str::from_utf8(&response[..split]).map_err(|_| bad("head is not UTF-8"))?;
    let status_line = head.lines().next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let status = match (parts.next(), parts.next()) {
        (Some("HTTP/1.1"), Some(code)) => code.parse().map_err(|_| bad(status_line))?,
        _ => return Err(bad(status_line)),
    };
    Ok((status, response[split + 4..].to_vec()))
}

fn user(i: usize) -> String {
    format!("crash-{i}")
}

/// What the client saw, per user.
#[derive(Default)]
struct Sent {
    /// Events in batches that got a 200.
    acknowledged: BTreeMap<String, usize>,
    /// Events in every batch that was (at least partly) sent.
    attempted: BTreeMap<String, usize>,
    /// Batches answered with a status other than 200.
    refused: Vec<(u16, String)>,
    /// Whether the stream ended because the server went away (not because all was sent).
    cut_off: bool,
}

/// Streams batches of 1..=20 events until `EVENTS` are sent or the server stops answering.
fn stream_events(addr: SocketAddr, acked_batches: Arc<AtomicUsize>) -> Sent {
    let mut rng = shoprank::eval_personal::Rng(0x5eed_cafe_f00d);
    let mut out = Sent::default();
    let now = behavior::now();
    let mut sent = 0;
    while sent < EVENTS {
        let n = (1 + rng.below(20)).min(EVENTS - sent);
        let mut body = String::new();
        let mut batch: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..n {
            let u = user(rng.below(USERS));
            let ts = now - 1 - rng.below(3600) as i64;
            let e = match rng.below(5) {
                0 => json!({"user_id": u, "type": "search", "query": "口红", "ts": ts}),
                k => json!({
                    "user_id": u,
                    "type": KINDS[k - 1],
                    "product_id": format!("demo-{:03}", 1 + rng.below(120)),
                    "ts": ts,
                }),
            };
            body.push_str(&e.to_string());
            body.push('\n');
            *batch.entry(u).or_default() += 1;
        }
        for (u, k) in &batch {
            *out.attempted.entry(u.clone()).or_default() += k;
        }
        sent += n;
        match http(addr, "POST", "/events", body.as_bytes()) {
            Ok((200, reply)) => {
                let reply: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
                if reply["stored"] != n {
                    out.refused.push((200, format!("stored != {n}: {reply}")));
                    return out;
                }
                for (u, k) in batch {
                    *out.acknowledged.entry(u).or_default() += k;
                }
                acked_batches.fetch_add(1, Ordering::SeqCst);
            }
            Ok((status, reply)) => {
                out.refused
                    .push((status, String::from_utf8_lossy(&reply).into_owned()));
                return out;
            }
            Err(_) => {
                out.cut_off = true;
                return out;
            }
        }
    }
    out
}

/// Stored event count per user, read from the redb file.
fn stored_counts(store: &Path) -> BTreeMap<String, usize> {
    let store = RedbStore::open(store).expect("the event store opens after a crash");
    let mut counts = BTreeMap::new();
    store
        .scan(&mut |e| *counts.entry(e.user_id).or_default() += 1)
        .expect("the event store scans");
    counts
}

#[test]
fn acknowledged_events_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    common::build_index(&data, common::demo_products(), None);

    let server = Server::start(&data, "first");
    let acked_batches = Arc::new(AtomicUsize::new(0));
    let client = {
        let (addr, acked) = (server.addr, acked_batches.clone());
        std::thread::spawn(move || stream_events(addr, acked))
    };
    let mut waited = 0;
    while acked_batches.load(Ordering::SeqCst) < KILL_AFTER_BATCHES && !client.is_finished() {
        waited += 1;
        assert!(
            waited < 6000,
            "fewer than {KILL_AFTER_BATCHES} batches acknowledged in 60 s:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = server.log_text();
    server.kill();
    let sent = client.join().expect("the client thread finished");
    assert!(sent.refused.is_empty(), "{:?}\n{log}", sent.refused);
    let acked_total: usize = sent.acknowledged.values().sum();
    let attempted_total: usize = sent.attempted.values().sum();
    assert!(acked_total > 0, "nothing was acknowledged");
    if !sent.cut_off {
        eprintln!("note: the client sent everything before the kill");
    }
    eprintln!("acknowledged {acked_total} of {attempted_total} events sent before SIGKILL");

    // Restarted on the same data dir, the server rebuilds the profiles from the store.
    let server = Server::start(&data, "second");
    let mut served = BTreeMap::new();
    for i in 0..USERS {
        let u = user(i);
        let acked = sent.acknowledged.get(&u).copied().unwrap_or(0);
        let attempted = sent.attempted.get(&u).copied().unwrap_or(0);
        let (status, body) = http(server.addr, "GET", &format!("/users/{u}/profile"), b"")
            .expect("the restarted server answers");
        let count = match status {
            200 => {
                let p: Value = serde_json::from_slice(&body).expect("profile JSON");
                assert_eq!(p["user_id"], u.as_str());
                p["events"].as_u64().expect("events count") as usize
            }
            404 => 0,
            other => panic!("{u}: status {other}: {}", String::from_utf8_lossy(&body)),
        };
        assert!(
            count >= acked,
            "{u}: {count} events after the crash, {acked} were acknowledged"
        );
        assert!(
            count <= attempted,
            "{u}: {count} events stored, only {attempted} were sent"
        );
        served.insert(u, count);
    }
    // A personalized search works on the rebuilt profiles.
    let (status, body) = http(
        server.addr,
        "GET",
        "/search?q=%E5%8F%A3%E7%BA%A2&user=crash-0",
        b"",
    )
    .expect("search answers");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let res: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(res["personalized"], served["crash-0"] > 0, "{res}");
    server.kill();

    // The store itself holds exactly what the restarted server reported.
    let mut in_store = stored_counts(&data.join("events").join("events.redb"));
    in_store.retain(|_, n| *n > 0);
    served.retain(|_, n| *n > 0);
    assert_eq!(in_store, served);
}
