#!/usr/bin/env bash
# Redis, 3 shoprank replicas and HAProxy on loopback, on the demo catalog: one command.
#
#   scripts/cluster_demo.sh [BINARY]      (default target/release/shoprank; builds nothing)
#
# Installs Debian's redis-server and haproxy when missing. Redis runs with appendonly and
# `appendfsync always` (an acknowledged write is on disk before the answer). Replica `a`
# gets the index (`shoprank index`, with the model when models/m3e-small is there, else
# without); `b` and `c` start with empty data directories and copy the published
# generation from the shared folder. HAProxy balances searches over the replicas that
# answer /ready (health checks every 500 ms) and retries a request whose replica died.
#
# Env: WORK (folder for everything, default a new temp dir), PORT (HAProxy, default 18400;
# Redis PORT+1, replicas PORT+2..PORT+4), MODEL=none (index without the model),
# DEMO_EXIT=1 (start, check, stop: what CI's smoke run uses). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/shoprank}")
[ -x "$bin" ] || { echo "error: $bin is missing: run \`cargo build --release\` first" >&2; exit 1; }

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v haproxy >/dev/null || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
  echo "== install ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

port=${PORT:-18400}
redis_port=$((port + 1))
work=${WORK:-$(mktemp -d)}
mkdir -p "$work/redis" "$work/shared"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

echo "== redis on 127.0.0.1:$redis_port (appendonly, fsync per write)"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" --appendonly yes \
  --appendfsync always --save "" >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

model_args=()
if [ "${MODEL:-}" = none ] || [ ! -f models/m3e-small/model.safetensors ]; then model_args=(--no-model); fi
echo "== index the demo catalog into replica a ${model_args[*]:-}"
"$bin" index --catalog fixtures/demo_catalog.jsonl --data-dir "$work/a" "${model_args[@]}" >/dev/null

redis="redis://127.0.0.1:$redis_port/0"
start_replica() { # name port
  "$bin" serve --data-dir "$work/$1" --addr "127.0.0.1:$2" --redis "$redis" \
    --shared-dir "$work/shared" --commit-interval-ms 200 >"$work/$1.log" 2>&1 &
  pids+=($!)
}
wait_ready() { # port
  for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$1/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "error: the replica on port $1 did not get ready; its log:" >&2
  return 1
}
i=2
for r in a b c; do
  echo "== replica $r on 127.0.0.1:$((port + i))"
  start_replica "$r" $((port + i))
  wait_ready $((port + i)) || { cat "$work/$r.log" >&2; exit 1; }
  i=$((i + 1))
done

cat >"$work/haproxy.cfg" <<EOF
global
  maxconn 2000
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  retries 3
  option redispatch
  retry-on conn-failure empty-response response-timeout
frontend shoprank
  bind 127.0.0.1:$port
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk GET /ready
  http-check expect status 200
  default-server inter 500ms fall 2 rise 1
  server a 127.0.0.1:$((port + 2)) check
  server b 127.0.0.1:$((port + 3)) check
  server c 127.0.0.1:$((port + 4)) check
EOF
echo "== haproxy on 127.0.0.1:$port"
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.1; done

echo "== smoke: a product written on replica b is searchable on a and c; an event on a personalizes c"
curl -fsS -X PUT "http://127.0.0.1:$((port + 3))/products" -H 'content-type: application/json' \
  -d '{"id": "cluster-1", "title": "集群演示专用蓝莓味牙膏", "brand": "演示", "category": "个护/牙膏", "price": 9.9}' >/dev/null
for p in $((port + 2)) $((port + 4)); do
  for _ in $(seq 40); do
    curl -fsG "http://127.0.0.1:$p/search" --data-urlencode 'q=蓝莓味牙膏' | grep -q cluster-1 && break
    sleep 0.1
  done
  curl -fsG "http://127.0.0.1:$p/search" --data-urlencode 'q=蓝莓味牙膏' | grep -q cluster-1 \
    || { echo "error: the write did not reach port $p" >&2; exit 1; }
done
curl -fsS -X POST "http://127.0.0.1:$((port + 2))/events" -H 'content-type: application/json' \
  -d '[{"user_id": "demo-shopper", "type": "cart", "product_id": "demo-065"}]' >/dev/null
for _ in $(seq 20); do
  curl -fsG "http://127.0.0.1:$((port + 4))/search" --data-urlencode 'q=面霜' -d user=demo-shopper \
    | grep -q '"personalized":true' && break
  sleep 0.1
done
curl -fsG "http://127.0.0.1:$((port + 4))/search" --data-urlencode 'q=面霜' -d user=demo-shopper \
  | grep -q '"personalized":true' || { echo "error: replica c did not see the event" >&2; exit 1; }
echo "ok: writes and events propagate"

cat <<EOF

  HAProxy   http://127.0.0.1:$port/        (the console; searches spread over a, b, c)
  replicas  http://127.0.0.1:$((port + 2)) $((port + 3)) $((port + 4))
  Redis     redis://127.0.0.1:$redis_port/0
  logs      $work/*.log
EOF
if [ "${DEMO_EXIT:-}" = 1 ]; then exit 0; fi
echo "Ctrl-C stops everything."
wait
