#!/usr/bin/env bash
# One command from a fresh clone to a running service: fetch the model, build, index the
# demo catalog from fixtures/ and serve on 127.0.0.1:8080 (override with ADDR=...).
set -euo pipefail
cd "$(dirname "$0")/.."
addr=${ADDR:-127.0.0.1:8080}
data=${DATA_DIR:-data/demo}
models/fetch.sh
cargo build --release
target/release/shoprank index --catalog fixtures/demo_catalog.jsonl --data-dir "$data"
echo "serving on $addr  (try: curl -G '$addr/search' --data-urlencode 'q=苹果手机壳' -d explain=true)"
exec target/release/shoprank serve --data-dir "$data" --addr "$addr"
