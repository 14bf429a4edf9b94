#!/usr/bin/env bash
# The model's online loop as one command (for cron or a background job): judgments from
# the shop's search log, `shoprank train` from the model in use, and on a held-out win a
# rebuild with the new model. docs/training.md explains each step.
#
#   scripts/model_loop.sh DATA_DIR CATALOG SEARCH_LOG.jsonl...
#
# Environment: SHOPRANK (the binary, default target/release/shoprank), FORMAT (the
# catalog's --format, default from its extension), TRAIN_ARGS (extra `train` flags, e.g.
# "--time-budget-secs 1800"). Exit 0 with "no new model" when nothing was published.
# A running `serve` keeps its model: restart it with the --model-dir this prints.
# AB_URL (a running `serve`, e.g. http://127.0.0.1:8080; SHOPRANK_KEY a key with the
# `profiles` and `experiments` actions when it has a master key): on a win, no rebuild;
# the new model is A/B-tested in that serve instead: profile `candidate` (the `default`
# profile's weights with `model` = the new id) and experiment `model-ab-<hash of the id>`
# giving it AB_TRAFFIC percent of the shoppers (default 50); a running `model-ab-*`
# experiment of an earlier run is stopped first (its log stays). CURRENT then names the
# candidate although `serve` still serves the old model: the next run trains from it.
set -euo pipefail
[ $# -ge 3 ] || { sed -n 5,11p "$0" >&2; exit 2; }
data=$1 catalog=$2
shift 2
bin=${SHOPRANK:-target/release/shoprank}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The model in use: the last published one, else the manifest's default.
model_args=()
current="$data/models/CURRENT"
before=""
if [ -f "$current" ]; then
  before=$(cat "$current")
  model_args=(--model-dir "$data/models/$before")
fi

"$bin" judgments --from-events "$@" --out "$work/judged"
# shellcheck disable=SC2086
"$bin" --data-dir "$data" "${model_args[@]}" train \
  --queries "$work/judged/queries.tsv" --qrels "$work/judged/qrels.tsv" ${TRAIN_ARGS:-}

after=$(cat "$current" 2>/dev/null || true)
if [ -z "$after" ] || [ "$after" = "$before" ]; then
  echo "no new model"
  exit 0
fi
if [ -n "${AB_URL:-}" ]; then
  auth=()
  [ -n "${SHOPRANK_KEY:-}" ] && auth=(-H "authorization: Bearer $SHOPRANK_KEY")
  # `model` goes before the profile's first table.
  { echo "model = \"$after\""
    curl -fsS "${auth[@]}" "$AB_URL/profiles/default" \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["toml"])' | grep -v '^model = '
  } > "$work/candidate.toml"
  curl -fsS -X PUT "${auth[@]}" "$AB_URL/profiles/candidate" --data-binary @"$work/candidate.toml" >/dev/null
  t=${AB_TRAFFIC:-50}
  for old in $(curl -fsS "${auth[@]}" "$AB_URL/experiments" \
      | python3 -c 'import json, sys; print(" ".join(e for e in json.load(sys.stdin)["experiments"] if e.startswith("model-ab-")))'); do
    curl -fsS -X DELETE "${auth[@]}" "$AB_URL/experiments/$old" >/dev/null
  done
  exp="model-ab-$(printf %s "$after" | sha256sum | cut -c1-12)"
  curl -fsS -X PUT "${auth[@]}" "$AB_URL/experiments/$exp" -H 'content-type: application/json' \
    -d "{\"description\": \"serving model vs $after\", \"arms\": [{\"name\": \"control\", \"profile\": \"default\", \"traffic\": $((100 - t))}, {\"name\": \"treatment\", \"profile\": \"candidate\", \"traffic\": $t}]}" >/dev/null
  echo "new model $after is A/B-tested in $AB_URL: profile candidate, experiment $exp ($t% of shoppers); report: GET $AB_URL/experiments/$exp"
  exit 0
fi
format_args=()
[ -n "${FORMAT:-}" ] && format_args=(--format "$FORMAT")
"$bin" --data-dir "$data" --model-dir "$data/models/$after" index --catalog "$catalog" "${format_args[@]}"
echo "new model $after is indexed; restart serve with --model current (or --model-dir $data/models/$after)"
