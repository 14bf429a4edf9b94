#!/usr/bin/env bash
# End-to-end test of the console page in a real headless Chromium.
#
#   scripts/console_test.sh            (expects target/release/shoprank; builds nothing)
#
# Installs what is missing (Debian's chromium, a CJK font, the test's npm packages),
# indexes the demo catalog without a model into a temporary data directory, serves it,
# records a few behavior events for a demo shopper, gives the server a six-query judged set
# (for the eval panel), runs console/test/console_test.mjs,
# and stops the server. The screenshot goes to $SCREENSHOT (default
# target/console/console.png). PORT picks the port (default: the first free one from 18181).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

bin=target/release/shoprank
[ -x "$bin" ] || { echo "error: $bin is missing: run \`cargo build --release --bin shoprank\` first" >&2; exit 1; }

# --- what the browser test needs --------------------------------------------------------
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if [ ! -x /usr/bin/chromium ]; then
  echo "== install chromium"
  apt_install chromium
fi
# Without a CJK font the titles render as boxes in the screenshot.
if ! fc-list :lang=zh 2>/dev/null | grep -q .; then
  echo "== install a CJK font"
  apt_install fonts-wqy-microhei fontconfig
fi
command -v node >/dev/null && command -v npm >/dev/null || { echo "== install node"; apt_install nodejs npm; }
echo "== npm ci (console/test)"
(cd console/test && npm ci --no-audit --no-fund --loglevel=error)

# --- a server on the demo catalog ---------------------------------------------------------
work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [ -z "${PORT:-}" ]; then
  PORT=18181
  while ! port_free "$PORT"; do PORT=$((PORT + 1)); done
fi
addr=127.0.0.1:$PORT

echo "== index the demo catalog (no model)"
"$bin" index --catalog fixtures/demo_catalog.jsonl --data-dir "$work/data" --no-model >"$work/index.log" 2>&1 \
  || { cat "$work/index.log" >&2; exit 1; }

# A small judged query set, so the eval panel has numbers to show.
printf '%s\t%s\n' q1 华为手机壳 q2 小米手机壳 q3 降噪蓝牙耳机 q4 '跑步鞋 男' q5 控油洗面奶 q6 香蕉 >"$work/queries.tsv"
printf '%s 0 %s %s\n' q1 demo-005 2 q1 demo-006 2 q1 demo-007 2 q2 demo-008 2 q2 demo-009 2 \
  q3 demo-036 2 q3 demo-039 2 q3 demo-035 1 q4 demo-094 2 q4 demo-097 2 q5 demo-073 2 q5 demo-069 2 \
  q6 demo-049 2 >"$work/qrels.tsv"
printf 'eval_queries = "%s"\neval_qrels = "%s"\n' "$work/queries.tsv" "$work/qrels.tsv" >"$work/settings.toml"

echo "== serve on port $PORT"
"$bin" --config "$work/settings.toml" serve --data-dir "$work/data" --addr "$addr" >"$work/serve.log" 2>&1 &
server_pid=$!
up=
for _ in $(seq 1 100); do
  if curl -fsS "$addr/health" >/dev/null 2>&1; then up=1; break; fi
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$up" ] || { echo "error: the server did not answer /health" >&2; cat "$work/serve.log" >&2; exit 1; }

# A shopper with a few events, so the user selector has someone to pick.
curl -fsS -X POST "$addr/events" -H 'Content-Type: application/json' -d '[
  {"user_id": "shopper-1", "type": "click", "product_id": "demo-005"},
  {"user_id": "shopper-1", "type": "cart", "product_id": "demo-005"},
  {"user_id": "shopper-1", "type": "purchase", "product_id": "demo-006"}]' >/dev/null

echo "== browser test"
status=0
PORT=$PORT SCREENSHOT=${SCREENSHOT:-$repo/target/console/console.png} CONSOLE_USER=${CONSOLE_USER-shopper-1} EXPECT_EVAL=1 \
  node console/test/console_test.mjs || status=$?
if [ "$status" -ne 0 ]; then
  echo "-- server log (last 30 lines)"
  tail -n 30 "$work/serve.log"
fi
exit "$status"
