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
format_args=()
[ -n "${FORMAT:-}" ] && format_args=(--format "$FORMAT")
"$bin" --data-dir "$data" --model-dir "$data/models/$after" index --catalog "$catalog" "${format_args[@]}"
echo "new model $after is indexed; restart serve with --model current (or --model-dir $data/models/$after)"
