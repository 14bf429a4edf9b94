#!/usr/bin/env bash
# The rerank and embeddings APIs through clients no one here wrote: the `cohere` SDK's
# rerank (v1 and v2 clients) and the `openai` SDK's embeddings, from PyPI, pointed at a
# local serve on the demo catalog; and the JSON paths an Elasticsearch `custom` rerank
# endpoint reads (docs/rerank.md).
#
#   scripts/sdk_test.sh [BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/shoprank}
venv=target/sdk-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'cohere>=5,<6' 'openai>=1,<3'
fi
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
"$bin" index --catalog fixtures/demo_catalog.jsonl --data-dir "$work/data" >/dev/null 2>&1
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
env -u SHOPRANK_MASTER_KEY "$bin" serve --data-dir "$work/data" --addr "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 200); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.1
done
SHOPRANK_URL="http://127.0.0.1:$port" "$venv/bin/python" - <<'PY'
import json, os, urllib.request
import cohere, openai

url = os.environ["SHOPRANK_URL"]
docs = ["小米14 手机壳 磨砂", "iPhone15 透明防摔手机壳", "兰蔻 小黑瓶 精华 50ml"]

v1 = cohere.Client(api_key="unused", base_url=url)
r = v1.rerank(model="shoprank", query="苹果手机壳", documents=docs, top_n=2)
assert [x.index for x in r.results][0] == 1, r
assert len(r.results) == 2 and r.results[0].relevance_score >= r.results[1].relevance_score
print("cohere v1 rerank:", [(x.index, round(x.relevance_score, 4)) for x in r.results])

v2 = cohere.ClientV2(api_key="unused", base_url=url)
r = v2.rerank(model="shoprank", query="苹果手机壳", documents=docs, top_n=3)
assert r.results[0].index == 1 and len(r.results) == 3, r
print("cohere v2 rerank:", [(x.index, round(x.relevance_score, 4)) for x in r.results])

oa = openai.OpenAI(api_key="unused", base_url=url + "/v1")
e = oa.embeddings.create(model="shoprank", input=["口红", "蓝牙耳机"])
dims = {len(d.embedding) for d in e.data}
assert len(e.data) == 2 and len(dims) == 1 and dims.pop() > 0, e
norm = sum(x * x for x in e.data[0].embedding) ** 0.5
assert abs(norm - 1) < 1e-3 or norm > 0, norm
print(f"openai embeddings: {len(e.data)} vectors of {len(e.data[0].embedding)} dims, |v| = {norm:.4f}")
f = oa.embeddings.create(model="shoprank", input="口红", encoding_format="float")
assert max(abs(a - b) for a, b in zip(f.data[0].embedding, e.data[0].embedding)) < 1e-6

# The paths an Elasticsearch `custom` rerank endpoint is configured with
# (response.json_parser: relevance_score "$.results[*].relevance_score",
# reranked_index "$.results[*].index"), resolved by hand on the raw answer.
body = json.dumps({"query": "苹果手机壳", "documents": docs, "top_n": 3}).encode()
req = urllib.request.Request(url + "/v1/rerank", body, {"content-type": "application/json"})
raw = json.load(urllib.request.urlopen(req))
scores = [r["relevance_score"] for r in raw["results"]]
indexes = [r["index"] for r in raw["results"]]
assert all(isinstance(s, float) for s in scores) and sorted(indexes) == [0, 1, 2], raw
print("elasticsearch custom rerank paths: scores", [round(s, 4) for s in scores], "indexes", indexes)
PY
echo "sdk test: ok"
