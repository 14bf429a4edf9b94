#!/usr/bin/env python3
"""Rerank latency against a running `serve` (issue 16): real queries, 100 and 1,000
candidates, as product ids of the index and as free texts (titles, encoded per request).

    benches/rerank.py PORT [--pool ../shared/data/multicpr_ecom_pool] [--requests 30]
"""
import argparse, json, os, random, time, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--pool", default=os.path.join(HERE, "../../shared/data/multicpr_ecom_pool"))
    ap.add_argument("--requests", type=int, default=30)
    a = ap.parse_args()
    corpus = [l.rstrip("\n").split("\t", 1) for l in open(os.path.join(a.pool, "corpus.tsv"), encoding="utf-8")]
    queries = [l.rstrip("\n").split("\t")[-1] for l in open(os.path.join(a.pool, "queries.dev.tsv"), encoding="utf-8")]
    rng = random.Random(7)
    url = f"http://127.0.0.1:{a.port}/v1/rerank"
    for n in (100, 1000):
        for kind in ("ids", "texts"):
            lat = []
            for i in range(a.requests):
                docs = rng.sample(corpus, n)
                documents = [{"id": d[0]} for d in docs] if kind == "ids" else [d[1] for d in docs]
                body = json.dumps({"query": queries[i % len(queries)], "documents": documents, "top_n": 10}).encode()
                req = urllib.request.Request(url, body, {"content-type": "application/json"})
                t = time.perf_counter()
                answer = json.load(urllib.request.urlopen(req))
                lat.append(time.perf_counter() - t)
                assert len(answer["results"]) == 10
            lat.sort()
            p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
            print(f"{n:>5} candidates as {kind:<5}: p50 {p(0.5):7.1f} ms  p99 {p(0.99):7.1f} ms  ({a.requests} requests)")


if __name__ == "__main__":
    main()
