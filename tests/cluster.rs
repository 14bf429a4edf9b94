//! Replicas sharing state through a real Redis (Debian's `redis-server`, appendonly with an
//! fsync per write), as real `shoprank serve` processes on loopback:
//!
//! - an event posted to one replica personalizes the next search on the others, and an
//!   erasure on one reaches all;
//! - a product written on one replica is searchable on the others within 2 s;
//! - profiles, rules and API keys edited on one replica are live on all;
//! - `kill -9` of one replica under search load through HAProxy fails no search;
//! - `kill -9` of Redis and a restart lose no acknowledged event or product write;
//! - a replica started later with an empty data directory copies the published
//!   generation, catches up with the logs and serves the same top 10.
//!
//! Without `redis-server` (or `haproxy`) on the PATH the tests print a notice and pass,
//! unless `SHOPRANK_REQUIRE_CLUSTER=1` (CI sets it after installing both).

mod common;
#[path = "common/process.rs"]
mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use process::{free_addr, http, http_with, without_shoprank_env};

const MASTER: &str = "cluster-test-master-key-0123456789";

/// One cluster at a time: each test runs Redis and several servers, and the deadlines
/// they check (1 s, 2 s) are about propagation, not about sharing 2 cores with another test.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `program` is on the PATH; otherwise a notice (or a failure when required).
fn have(program: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("SHOPRANK_REQUIRE_CLUSTER").as_deref() != Ok("1"),
            "{program} is not installed (apt-get install {program})"
        );
        eprintln!("notice: {program} is not installed; skipping this cluster test");
    }
    found
}

/// A child process killed (SIGKILL) and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Redis server with its data in `dir`.
struct Redis {
    proc: Option<Proc>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start(dir: &Path) -> Redis {
        let mut r = Redis {
            proc: None,
            port: free_addr().port(),
            dir: dir.to_path_buf(),
        };
        r.restart();
        r
    }

    fn restart(&mut self) {
        std::fs::create_dir_all(&self.dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.proc = Some(Proc(child));
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        for _ in 0..100 {
            if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                use std::io::{Read, Write};
                let mut buf = [0u8; 64];
                s.set_read_timeout(Some(Duration::from_secs(1))).ok();
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read(&mut buf)
                        .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not answer PING");
    }

    /// SIGKILL: no shutdown save; only the append-only file survives.
    fn kill(&mut self) {
        self.proc = None;
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

/// A `shoprank serve` replica.
struct Replica {
    proc: Option<Proc>,
    addr: SocketAddr,
    data: PathBuf,
    log: PathBuf,
}

impl Replica {
    fn start(data: &Path, redis: &Redis, shared: &Path, env: &[(&str, &str)]) -> Replica {
        let log = data.with_extension("log");
        let addr = free_addr();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoprank"));
        cmd.current_dir(common::root())
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .arg("--addr")
            .arg(addr.to_string())
            .args(["--redis", &redis.url()])
            .arg("--shared-dir")
            .arg(shared)
            .args(["--commit-interval-ms", "100"])
            .arg("--model-dir")
            .arg(data.with_extension("no-model-here"))
            .env("RUST_LOG", "info,tantivy=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        without_shoprank_env(&mut cmd);
        cmd.envs(env.iter().copied());
        let r = Replica {
            proc: Some(Proc(cmd.spawn().expect("shoprank starts"))),
            addr,
            data: data.to_path_buf(),
            log,
        };
        r.wait_ready();
        r
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if matches!(http(self.addr, "GET", "/ready", b""), Ok((200, _))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "replica {} never got ready:\n{}",
            self.data.display(),
            self.log_text()
        );
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        self.proc = None;
    }

    fn call(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        self.call_as(method, path, body, None)
    }

    fn call_as(&self, method: &str, path: &str, body: &str, key: Option<&str>) -> (u16, Value) {
        let auth = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let (status, bytes) = http_with(self.addr, method, path, body.as_bytes(), &headers)
            .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", self.addr));
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn search(&self, q: &str, extra: &str) -> Value {
        let (s, b) = self.call(
            "GET",
            &format!("/search?q={}{extra}", common::urlencode(q)),
            "",
        );
        assert_eq!(s, 200, "{b}");
        b
    }

    fn top_ids(&self, q: &str) -> Vec<String> {
        ids(&self.search(q, "&size=10"))
    }
}

fn ids(res: &Value) -> Vec<String> {
    (res["hits"].as_array().into_iter().flatten())
        .map(|h| h["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Polls `check` until it holds or `within` passes; returns how long it took.
fn until(within: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if check() {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Redis and replicas: `a` on an index of the demo catalog, the others empty.
struct Cluster {
    dir: TempDir,
    redis: Redis,
    replicas: Vec<Replica>,
}

impl Cluster {
    fn start(n: usize, env: &[(&str, &str)]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let redis = Redis::start(&dir.path().join("redis"));
        let a = dir.path().join("a");
        common::build_index(&a, common::demo_products(), None);
        let mut c = Cluster {
            redis,
            replicas: Vec::new(),
            dir,
        };
        for i in 0..n {
            let name = ["a", "b", "c", "d"][i];
            c.add(name, env);
        }
        c
    }

    fn shared(&self) -> PathBuf {
        self.dir.path().join("shared")
    }

    fn add(&mut self, name: &str, env: &[(&str, &str)]) {
        let data = self.dir.path().join(name);
        let r = Replica::start(&data, &self.redis, &self.shared(), env);
        self.replicas.push(r);
    }
}

#[test]
fn an_event_on_one_replica_personalizes_the_others_and_an_erasure_reaches_all() {
    let _serial = serial();
    if !have("redis-server") {
        return;
    }
    let c = Cluster::start(3, &[]);
    let (a, b, cc) = (&c.replicas[0], &c.replicas[1], &c.replicas[2]);
    assert_eq!(b.search("口红", "&user=fan")["personalized"], false);
    let events = json!([
        {"user_id": "fan", "type": "view", "product_id": "demo-064"},
        {"user_id": "fan", "type": "cart", "product_id": "demo-065"},
        {"user_id": "fan", "type": "click", "product_id": "demo-067"}
    ]);
    let (s, body) = a.call("POST", "/events", &events.to_string());
    assert_eq!(s, 200, "{body}");
    for r in [b, cc] {
        let took = until(
            Duration::from_secs(1),
            "the event personalizes another replica",
            || r.search("口红", "&user=fan")["personalized"] == true,
        );
        eprintln!("event visible on {} after {took:?}", r.addr);
    }
    // The same ranking everywhere once they hold the same events.
    assert_eq!(
        ids(&a.search("口红", "&user=fan")),
        ids(&b.search("口红", "&user=fan"))
    );
    // Erased on c: gone on a and b, and from Redis.
    let (s, body) = cc.call("DELETE", "/users/fan", "");
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["deleted_events"], 3);
    for r in [a, b] {
        until(
            Duration::from_secs(1),
            "the erasure reaches another replica",
            || r.call("GET", "/users/fan/profile", "").0 == 404,
        );
        assert_eq!(r.call("GET", "/users/fan/export", "").0, 404);
        assert_eq!(r.search("口红", "&user=fan")["personalized"], false);
    }
}

#[test]
fn a_product_written_on_one_replica_is_searchable_on_the_others() {
    let _serial = serial();
    if !have("redis-server") {
        return;
    }
    let c = Cluster::start(3, &[]);
    let (a, b, cc) = (&c.replicas[0], &c.replicas[1], &c.replicas[2]);
    let t = shoprank::util::now() - 3600;
    let product = json!({"id": "shared-1", "title": "星空蓝莓味儿童牙膏", "brand": "测试", "category": "个护/牙膏", "price": 12.5, "updated_at": t});
    let (s, body) = b.call("PUT", "/products", &product.to_string());
    assert_eq!(s, 200, "{body}");
    for r in [a, cc] {
        let took = until(Duration::from_secs(2), "a PUT on b is searchable", || {
            r.top_ids("蓝莓味儿童牙膏")
                .contains(&"shared-1".to_string())
        });
        eprintln!("write visible on {} after {took:?}", r.addr);
    }
    let patch = json!({"price": 8.0, "updated_at": t + 100});
    let (s, body) = cc.call("PATCH", "/products/shared-1", &patch.to_string());
    assert_eq!(s, 200, "{body}");
    until(Duration::from_secs(2), "a PATCH on c reaches a", || {
        a.call("GET", "/products/shared-1", "").1["price"] == 8.0
    });
    // An older write is stale everywhere, so replicas agree whatever the arrival order.
    let old = json!({"id": "shared-1", "title": "旧标题", "updated_at": t - 100});
    let (_, body) = a.call("PUT", "/products", &old.to_string());
    assert_eq!(body["stale"], 1, "{body}");
    let (s, _) = a.call(
        "DELETE",
        &format!("/products/shared-1?updated_at={}", t + 200),
        "",
    );
    assert_eq!(s, 200);
    for r in [b, cc] {
        until(
            Duration::from_secs(2),
            "a DELETE on a reaches the others",
            || r.call("GET", "/products/shared-1", "").0 == 404,
        );
    }
}

#[test]
fn profiles_rules_and_keys_edited_on_one_replica_are_live_on_all() {
    let _serial = serial();
    if !have("redis-server") {
        return;
    }
    let c = Cluster::start(3, &[("SHOPRANK_MASTER_KEY", MASTER)]);
    let (a, b, cc) = (&c.replicas[0], &c.replicas[1], &c.replicas[2]);
    let m = Some(MASTER);
    let (s, body) = a.call_as("PUT", "/profiles/pop", "[weights]\npopularity = 1.0\n", m);
    assert_eq!(s, 200, "{body}");
    for r in [b, cc] {
        until(
            Duration::from_secs(2),
            "a profile saved on a is live on the others",
            || {
                let (s, body) = r.call_as("GET", "/search?q=%E5%8F%A3%E7%BA%A2&profile=pop", "", m);
                s == 200 && body["profile"] == "pop"
            },
        );
    }
    let rule = "[when]\nquery_equals = [\"口红\"]\n[[then.pin]]\nid = \"demo-068\"\nposition = 1\n";
    let (s, body) = b.call_as("PUT", "/rules/pin", rule, m);
    assert_eq!(s, 200, "{body}");
    until(
        Duration::from_secs(2),
        "a rule saved on b acts on c",
        || {
            let (_, body) = cc.call_as("GET", "/search?q=%E5%8F%A3%E7%BA%A2", "", m);
            ids(&body).first().map(String::as_str) == Some("demo-068")
        },
    );
    let (s, body) = cc.call_as("POST", "/keys", r#"{"actions": ["search"]}"#, m);
    assert_eq!(s, 201, "{body}");
    let key = body["key"].as_str().unwrap().to_string();
    until(Duration::from_secs(3), "a key made on c works on a", || {
        a.call_as("GET", "/search?q=x", "", Some(&key)).0 == 200
    });
    let (s, _) = a.call_as(
        "DELETE",
        &format!("/keys/{}", body["id"].as_str().unwrap()),
        "",
        m,
    );
    assert_eq!(s, 200);
    until(
        Duration::from_secs(3),
        "a key revoked on a stops working on c",
        || cc.call_as("GET", "/search?q=x", "", Some(&key)).0 == 401,
    );
}

#[test]
fn killing_a_replica_under_load_through_haproxy_fails_no_search() {
    let _serial = serial();
    if !have("redis-server") || !have("haproxy") {
        return;
    }
    let mut c = Cluster::start(3, &[]);
    let front = free_addr();
    let cfg = c.dir.path().join("haproxy.cfg");
    let servers: String = (c.replicas.iter().enumerate())
        .map(|(i, r)| format!("  server r{i} {} check\n", r.addr))
        .collect();
    std::fs::write(
        &cfg,
        format!(
            "defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n  retries 3\n  option redispatch\n  retry-on conn-failure empty-response response-timeout\nfrontend f\n  bind {front}\n  default_backend replicas\nbackend replicas\n  balance roundrobin\n  option httpchk GET /ready\n  http-check expect status 200\n  default-server inter 300ms fall 2 rise 1\n{servers}"
        ),
    )
    .unwrap();
    let _haproxy = Proc(
        Command::new("haproxy")
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy starts"),
    );
    until(Duration::from_secs(10), "haproxy answers", || {
        matches!(http(front, "GET", "/health", b""), Ok((200, _)))
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let queries = ["口红", "面霜", "手机壳", "蓝牙耳机", "跑步鞋", "洗面奶"];
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let q = queries[i % queries.len()];
                    i += 1;
                    match http(
                        front,
                        "GET",
                        &format!("/search?q={}", common::urlencode(q)),
                        b"",
                    ) {
                        Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("failed search: {:?}", other.map(|(s, _)| s));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    c.replicas[1].kill();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{ok} searches answered, {failed} failed, one replica killed midway");
    assert!(ok > 100, "the load ran: {ok}");
    assert_eq!(failed, 0, "searches failed while a replica died");
}

#[test]
fn redis_kill_9_and_restart_loses_no_acknowledged_write() {
    let _serial = serial();
    if !have("redis-server") {
        return;
    }
    let mut c = Cluster::start(2, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    // Events and product writes stream into replica a; each acknowledged one is noted.
    let addr = c.replicas[0].addr;
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut events, mut products) = (Vec::new(), Vec::new());
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let e = json!({"user_id": format!("s{}", i % 5), "type": "click", "product_id": "demo-001"});
                if matches!(
                    http(addr, "POST", "/events", e.to_string().as_bytes()),
                    Ok((200, _))
                ) {
                    events.push(i);
                }
                let p = json!({"id": format!("k{i}"), "title": format!("耐用钥匙扣{i}号")});
                if matches!(
                    http(addr, "PUT", "/products", p.to_string().as_bytes()),
                    Ok((200, _))
                ) {
                    products.push(i);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (events, products)
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    c.redis.kill();
    std::thread::sleep(Duration::from_millis(500));
    c.redis.restart();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let (events, products) = writer.join().unwrap();
    assert!(!events.is_empty() && !products.is_empty());
    eprintln!(
        "{} events and {} product writes acknowledged around the Redis kill",
        events.len(),
        products.len()
    );
    // Every acknowledged event is in Redis (a user's export reads the store) ...
    let b = &c.replicas[1];
    let mut stored = 0;
    for u in 0..5 {
        let (s, body) = b.call("GET", &format!("/users/s{u}/export"), "");
        if s == 200 {
            stored += body["events"].as_array().map_or(0, Vec::len);
        }
    }
    assert!(
        stored >= events.len(),
        "{stored} events stored, {} acknowledged",
        events.len()
    );
    // ... and every acknowledged product is on the other replica.
    for i in &products {
        until(
            Duration::from_secs(5),
            "an acknowledged product reaches replica b",
            || b.call("GET", &format!("/products/k{i}"), "").0 == 200,
        );
    }
    // A replica restarted now reads the same events from Redis.
    c.replicas[1].kill();
    let data = c.replicas[1].data.clone();
    let b = Replica::start(&data, &c.redis, &c.shared(), &[]);
    let (_, body) = b.call("GET", "/users/s1/export", "");
    assert!(
        body["events"].as_array().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
}

#[test]
fn a_new_replica_catches_up_from_the_published_generation() {
    let _serial = serial();
    if !have("redis-server") {
        return;
    }
    let mut c = Cluster::start(2, &[]);
    let a = &c.replicas[0];
    for i in 0..20 {
        let p = json!({"id": format!("late-{i}"), "title": format!("晚到的保温杯{i} 不锈钢"), "category": "家居/水杯", "price": 30 + i, "sales": 100 * i});
        assert_eq!(a.call("PUT", "/products", &p.to_string()).0, 200);
    }
    let (s, _) = a.call("PATCH", "/products/demo-001", r#"{"price": 1.0}"#);
    assert_eq!(s, 200);
    a.call(
        "POST",
        "/events",
        r#"{"user_id": "late-fan", "type": "cart", "product_id": "late-3"}"#,
    );
    c.add("c", &[]);
    let (a, d) = (&c.replicas[0], &c.replicas[2]);
    assert!(d.data.join("generations").is_dir());
    for q in ["保温杯", "手机壳", "口红", "面霜"] {
        until(
            Duration::from_secs(2),
            "the new replica serves the same top 10",
            || a.top_ids(q) == d.top_ids(q),
        );
    }
    assert!(d.top_ids("保温杯").iter().any(|id| id.starts_with("late-")));
    assert_eq!(d.call("GET", "/products/demo-001", "").1["price"], 1.0);
    assert_eq!(d.search("保温杯", "&user=late-fan")["personalized"], true);
}

#[test]
fn a_rebuild_on_one_replica_is_published_and_followed_by_the_others() {
    let _serial = serial();
    if !have("redis-server") {
        return;
    }
    let c = Cluster::start(2, &[]);
    let (a, b) = (&c.replicas[0], &c.replicas[1]);
    let before = a.call("GET", "/health", "").1["generation"].clone();
    // A catalog with one product more, in a's import folder.
    let mut catalog = std::fs::read_to_string(common::fixture("demo_catalog.jsonl")).unwrap();
    catalog.push_str(
        &json!({"id": "rebuilt-1", "title": "重建目录新增紫砂茶壶", "category": "家居/茶具", "price": 199})
            .to_string(),
    );
    catalog.push('\n');
    let import = a.data.join("import");
    std::fs::create_dir_all(&import).unwrap();
    std::fs::write(import.join("next.jsonl"), catalog).unwrap();
    let (s, job) = a.call("POST", "/admin/reindex", r#"{"catalog": "next.jsonl"}"#);
    assert_eq!(s, 202, "{job}");
    // A write acknowledged around the rebuild is kept on both.
    let (s, _) = b.call(
        "PUT",
        "/products",
        &json!({"id": "during-1", "title": "重建期间写入的竹制砧板"}).to_string(),
    );
    assert_eq!(s, 200);
    let id = job["id"].as_str().unwrap().to_string();
    until(Duration::from_secs(30), "the rebuild succeeds", || {
        a.call("GET", &format!("/admin/jobs/{id}"), "").1["state"] == "succeeded"
    });
    let after = a.call("GET", "/health", "").1["generation"].clone();
    assert_ne!(before, after);
    until(
        Duration::from_secs(5),
        "b switches to the rebuilt generation",
        || b.call("GET", "/health", "").1["generation"] == after,
    );
    for r in [a, b] {
        until(
            Duration::from_secs(3),
            "the new product and the write made meanwhile",
            || {
                r.top_ids("紫砂茶壶").contains(&"rebuilt-1".to_string())
                    && r.top_ids("竹制砧板").contains(&"during-1".to_string())
            },
        );
    }
    assert_eq!(a.top_ids("手机壳"), b.top_ids("手机壳"));
}
