#!/usr/bin/env bash
# Load benchmark: a bounded HTTP load run against `shoprank serve` on 127.0.0.1 with the real
# query log (../shared/data/multicpr_ecom/queries.tsv), without and with a user id.
#
#   benches/load.sh DATA_DIR [SECONDS] [CONNECTIONS] [PROFILE]
#
# Prints, per run: requests/s, latency p50/p95/p99 (wrk, from its own latency record), the
# mean time of each search stage (analyze, encode, retrieve, rank, total) from /metrics,
# errors, and the server's RSS (VmRSS / peak VmHWM). wrk runs on the same 2-core machine
# with one thread, so it takes some CPU from the server: numbers are conservative.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: benches/load.sh DATA_DIR [SECONDS] [CONNECTIONS] [PROFILE]}
secs=${2:-30}
conns=${3:-4}
profile=${4:-default}
bin=${SHOPRANK_BIN:-target/release/shoprank}
queries=../shared/data/multicpr_ecom/queries.tsv
[ -x "$bin" ] || { echo "error: $bin is missing: cargo build --release" >&2; exit 1; }
[ -f "$queries" ] || { echo "error: $queries is missing (../shared/data beside the repo)" >&2; exit 1; }
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port=18300
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
addr=127.0.0.1:$port

"$bin" serve --data-dir "$data" --addr "$addr" >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  curl -fsS "$addr/health" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
  sleep 0.5
done
echo "server: $(curl -fsS "$addr/health")"
rss() { awk '/VmRSS|VmHWM/ {printf "%s %.0f MB  ", $1, $2/1024}' "/proc/$pid/status"; }
echo "RSS after start: $(rss)"

# 100 shoppers with a few events each, so `user=` searches are personalized.
python3 - "$addr" "$data" <<'PY'
import json, sys, urllib.request, random
addr, data = sys.argv[1], sys.argv[2]
random.seed(7)
ids = []
gen = open(f"{data}/CURRENT").read().strip()
with open(f"{data}/generations/{gen}/products.jsonl") as f:
    for i, line in enumerate(f):
        if i % 97 == 0:
            ids.append(json.loads(line)["id"])
        if len(ids) >= 2000:
            break
events = []
for u in range(100):
    for _ in range(8):
        events.append({"user_id": f"load-u{u}", "type": random.choice(["click", "cart", "view"]), "product_id": random.choice(ids)})
req = urllib.request.Request(f"http://{addr}/events", data=json.dumps(events).encode(), method="POST",
                             headers={"Content-Type": "application/json"})
print("events:", urllib.request.urlopen(req).read().decode())
PY

# The first 60,000 real queries, percent-encoded, as a Lua table (runs start 25,000 apart,
# the warm-up at 50,000, so no run meets a query another one cached).
python3 - "$queries" >"$work/queries.lua" <<'PY'
import sys, urllib.parse
qs = []
for line in open(sys.argv[1], encoding="utf-8"):
    parts = line.rstrip("\n").split("\t", 1)
    if len(parts) == 2 and parts[1].strip():
        qs.append(urllib.parse.quote(parts[1].strip()[:200]))
    if len(qs) >= 60000:
        break
print("queries = {" + ",".join('"%s"' % q for q in qs) + "}")
PY

cat >"$work/load.lua" <<LUA
dofile("$work/queries.lua")
local with_user = os.getenv("WITH_USER") == "1"
-- Each run starts at its own place in the log, so one run's queries are not cached by another's.
local i = tonumber(os.getenv("OFFSET") or "0")
request = function()
  i = i + 1
  local q = queries[(i % #queries) + 1]
  local path = "/search?profile=$profile&q=" .. q
  if with_user then path = path .. "&user=load-u" .. (i % 100) end
  return wrk.format("GET", path)
end
local errors = 0
response = function(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("  requests/s %.1f   p50 %.2f ms  p95 %.2f ms  p99 %.2f ms  max %.1f ms   requests %d   non-200 %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout))
end
LUA

stages() {
  curl -fsS "$addr/metrics" | awk '/^shoprank_search_stage_seconds_(sum|count)/ {
    match($0, /stage="[a-z]+"/); s = substr($0, RSTART + 7, RLENGTH - 8)
    if ($0 ~ /_sum/) sum[s] = $2; else cnt[s] = $2 }
    END { for (s in sum) printf "%s %s %s\n", s, sum[s], cnt[s] }' | sort
}
run() {
  local label=$1 user=$2
  stages >"$work/before"
  echo "== $label: ${secs}s, $conns connections, profile $profile"
  WITH_USER=$user OFFSET=$3 wrk -t1 -c"$conns" -d"${secs}s" --timeout 10s -s "$work/load.lua" "http://$addr" | grep -E "requests/s|Socket errors|Non-2xx" || true
  stages >"$work/after"
  printf "  stage means:"
  join "$work/before" "$work/after" | awk '{ n = $5 - $3; if (n > 0) printf " %s %.2f ms", $1, ($4 - $2) / n * 1000 }'
  echo
  echo "  $(rss)"
  echo "  query encodes: $(curl -fsS "$addr/health" | python3 -c 'import json,sys; c=json.load(sys.stdin).get("query_cache") or {}; print(c.get("misses", 0), "encoded,", c.get("hits", 0), "from the cache (since start)")')"
}
# A warm-up pass, then the measured runs.
WITH_USER=0 OFFSET=50000 wrk -t1 -c"$conns" -d5s -s "$work/load.lua" "http://$addr" >/dev/null
run "no user" 0 0
run "with user" 1 25000
