#!/usr/bin/env python3
"""Overload bench: many more concurrent clients than cores against a running `serve`.

    benches/overload.py PORT [--connections 400] [--seconds 20] [--queries FILE]

Each connection sends real queries back to back on a keep-alive connection. Reports, for
accepted searches (200) and refused ones (429) apart, the count and latency p50/p99: a
server that sheds load answers the surplus with a fast 429 and keeps accepted searches
quick; one that queues makes every accepted search wait. Standard library only (asyncio).
"""

import argparse
import asyncio
import os
import random
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def client(port, queries, until, results, rng):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < until:
            q = urllib.parse.quote(rng.choice(queries))
            writer.write(f"GET /search?q={q} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            t = time.monotonic()
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            results.setdefault(status, []).append(time.monotonic() - t)
    except (ConnectionError, asyncio.IncompleteReadError):
        results.setdefault("dropped", []).append(0)
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--connections", type=int, default=400)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--queries", default=os.path.join(HERE, "../../shared/data/multicpr_ecom/queries.tsv"))
    args = ap.parse_args()
    with open(args.queries, encoding="utf-8") as f:
        queries = [line.rstrip("\n").split("\t")[-1] for line in f if line.strip()][:5000]
    results = {}
    until = time.monotonic() + args.seconds
    rng = random.Random(7)
    await asyncio.gather(*(client(args.port, queries, until, results, random.Random(rng.random()))
                           for _ in range(args.connections)))
    for status in sorted(results, key=str):
        lat = results[status]
        if status == "dropped":
            print(f"dropped connections: {len(lat)}")
            continue
        print(f"{status}: {len(lat)} answers ({len(lat) / args.seconds:.0f}/s), "
              f"p50 {pct(lat, 50) * 1000:.1f} ms, p99 {pct(lat, 99) * 1000:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
