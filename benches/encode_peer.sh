#!/usr/bin/env bash
# Encoder speed, shoprank (f32 and int8) against PyTorch, ONNX Runtime fp32 and ONNX
# Runtime int8 in the same run (benches/encode.rs, benches/encode_peer.py). Makes a Python
# venv with torch, transformers, onnx and onnxruntime under target/peer-venv on first use
# (several GB: the Linux torch wheel brings its CUDA libraries along), then runs the bench
# with it; the ONNX exports go to target/encode-bench/onnx. Needs models/m3e-small
# (models/fetch.sh) and ../shared/data.
#   benches/encode_peer.sh [ROUNDS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/peer-venv"
if ! "$venv/bin/python" -c "import torch, transformers, onnx, onnxruntime" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch transformers onnx onnxruntime onnxscript
fi
"$root/models/fetch.sh" >/dev/null
cd "$root"
SHOPRANK_PEER_PYTHON="$venv/bin/python" SHOPRANK_ENCODE_ROUNDS="${1:-3}" \
  cargo bench --bench encode
