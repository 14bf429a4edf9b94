#!/usr/bin/env python3
"""Cost of sharing state through Redis, measured over HTTP on loopback in one run.

    python3 benches/cluster.py [--bin target/release/shoprank] [--rounds 300]

Starts Redis (appendonly, `appendfsync always`), a standalone `shoprank serve` (events in
redb) and two replicas on Redis, all on the demo catalog without a model, then, in
alternating rounds:
- POST /events with one event: standalone (redb, fsync) vs replica (Redis XADD, fsync);
- GET /search (no user, and a user with events): standalone vs replica;
- propagation: a PUT /products acknowledged by replica A, then polled with GET /search on
  replica B until the product is found (commit interval 100 ms): ack -> visible.
Prints the CPU model and flags and a markdown table. Needs redis-server (Debian).
"""
import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_line():
    model, flags = "?", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    want = ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"]
    return f"{model}, {os.cpu_count()} vCPU, flags: " + " ".join(f for f in want if f in flags)


class Client:
    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method, path, body=None):
        headers = {"content-type": "application/json"} if body is not None else {}
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                res = self.conn.getresponse()
                data = res.read()
                return res.status, data
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise
        raise RuntimeError("unreachable")

    def timed(self, method, path, body=None):
        t = time.perf_counter()
        status, _ = self.call(method, path, body)
        assert status == 200, (method, path, status)
        return (time.perf_counter() - t) * 1000


def wait_ready(port, proc, log):
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"a server exited:\n{open(log).read()}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/ready")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"a server never got ready:\n{open(log).read()}")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/shoprank")
    ap.add_argument("--rounds", type=int, default=300)
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = os.path.abspath(a.bin)
    work = tempfile.mkdtemp(prefix="shoprank-cluster-bench-")
    procs = []
    try:
        redis_port = free_port()
        os.makedirs(f"{work}/redis")
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", f"{work}/redis",
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.5)
        for d in ["solo", "a"]:
            subprocess.run([binary, "index", "--catalog", f"{root}/fixtures/demo_catalog.jsonl",
                            "--data-dir", f"{work}/{d}", "--no-model"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
        ports = {}
        for name, extra in [("solo", []), ("a", ["--redis", f"redis://127.0.0.1:{redis_port}/0"]),
                            ("b", ["--redis", f"redis://127.0.0.1:{redis_port}/0"])]:
            ports[name] = free_port()
            log = f"{work}/{name}.log"
            p = subprocess.Popen([binary, "serve", "--data-dir", f"{work}/{name}", "--addr",
                                  f"127.0.0.1:{ports[name]}", "--shared-dir", f"{work}/shared",
                                  "--commit-interval-ms", "100", "--model-dir", f"{work}/none", *extra],
                                 stdout=subprocess.DEVNULL, stderr=open(log, "w"), cwd=root)
            procs.append(p)
            wait_ready(ports[name], p, log)
        solo, a_, b_ = Client(ports["solo"]), Client(ports["a"]), Client(ports["b"])
        queries = ["口红", "面霜", "手机壳", "蓝牙耳机", "跑步鞋", "洗面奶", "笔记本", "牙膏"]
        times = {k: [] for k in ["event_solo", "event_redis", "search_solo", "search_redis",
                                 "psearch_solo", "psearch_redis", "propagate"]}
        for i in range(a.rounds):
            ev = json.dumps({"user_id": f"bench{i % 20}", "type": "click", "product_id": f"demo-{1 + i % 120:03d}"})
            for side, c in [("solo", solo), ("redis", a_)][:: 1 if i % 2 else -1]:
                times[f"event_{side}"].append(c.timed("POST", "/events", ev))
            q = urllib.parse.quote(queries[i % len(queries)])
            for side, c in [("solo", solo), ("redis", a_)][:: 1 if i % 2 else -1]:
                times[f"search_{side}"].append(c.timed("GET", f"/search?q={q}"))
                times[f"psearch_{side}"].append(c.timed("GET", f"/search?q={q}&user=bench{i % 20}"))
        for i in range(min(a.rounds, 200)):
            word = f"传播测试{i}号"
            body = json.dumps({"id": f"prop-{i}", "title": f"{word} 保温杯"})
            status, _ = a_.call("PUT", "/products", body)
            assert status == 200
            acked = time.perf_counter()
            path = f"/search?q={urllib.parse.quote(word)}&size=3"
            while True:
                _, data = b_.call("GET", path)
                if f'"prop-{i}"'.encode() in data:
                    break
            times["propagate"].append((time.perf_counter() - acked) * 1000)
        print(f"Machine: {cpu_line()}")
        print(f"{a.rounds} rounds, alternating; demo catalog (120 products), no model; HTTP/1.1 keep-alive on loopback\n")
        print("| what | standalone (redb) p50 / p99 ms | replica (Redis) p50 / p99 ms |")
        print("|---|---|---|")
        for label, k in [("POST /events, 1 event (durable before the ack)", "event"),
                         ("GET /search, no user", "search"), ("GET /search, a user with events", "psearch")]:
            s, r = times[f"{k}_solo"], times[f"{k}_redis"]
            print(f"| {label} | {pct(s, 50):.2f} / {pct(s, 99):.2f} | {pct(r, 50):.2f} / {pct(r, 99):.2f} |")
        p = times["propagate"]
        print(f"\nPUT /products acknowledged by replica A -> found by GET /search on replica B "
              f"(commit interval 100 ms), {len(p)} writes: p50 {pct(p, 50):.1f} ms, p99 {pct(p, 99):.1f} ms, "
              f"mean {statistics.mean(p):.1f} ms")
    finally:
        for p in procs:
            p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
