#!/usr/bin/env bash
# Encoder throughput, shoprank against PyTorch in the same run (benches/encode.rs).
# Makes a Python venv with torch and transformers under target/peer-venv on first use
# (several GB: PyPI's Linux torch wheel brings its CUDA libraries along), then runs the
# bench with it. Needs models/m3e-small (models/fetch.sh) and ../shared/data.
#   benches/encode_peer.sh [ROUNDS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/peer-venv"
if ! "$venv/bin/python" -c "import torch, transformers" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch transformers
fi
"$root/models/fetch.sh" >/dev/null
cd "$root"
SHOPRANK_PEER_PYTHON="$venv/bin/python" SHOPRANK_ENCODE_ROUNDS="${1:-3}" \
  cargo bench --bench encode
