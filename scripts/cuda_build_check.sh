#!/usr/bin/env bash
# Compile shoprank with `--features cuda` on a machine without a GPU or CUDA toolkit, to
# check the CUDA build still compiles. Installs CUDA 13.4 (nvcc, runtime, cuBLAS, cuRAND,
# NVRTC, CCCL) from PyPI wheels into target/cuda-venv and lays it out as a CUDA_HOME in
# target/cuda-home. PyPI's 12.x nvcc wheels carry no nvcc binary; cudarc 0.19 accepts CUDA
# up to 13.4. No wheel ships the driver library, so a link-time stand-in libcuda.so
# (empty functions, soname libcuda.so.1) is built: on a machine with a GPU the real
# driver's libcuda.so.1 is the one loaded at run time.
#   scripts/cuda_build_check.sh [extra cargo args]     (~18 min on 2 cores, cold)
# With a real CUDA toolkit, skip this: `CUDA_COMPUTE_CAP=<yours> cargo build --release
# --features cuda` is enough.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/cuda-venv"
home="$root/target/cuda-home"
if ! [ -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install --quiet 'cuda-toolkit[nvcc,cudart,nvrtc,cublas,curand,cccl,crt]==13.4.3'
sp="$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')/nvidia/cu13"
mkdir -p "$home/lib64/stubs"
ln -sfn "$sp/bin" "$home/bin"
ln -sfn "$sp/include" "$home/include"
ln -sfn "$sp/nvvm" "$home/nvvm"
for f in "$sp"/lib/*.so.*; do
  b=$(basename "$f")
  ln -sf "$f" "$home/lib64/$b"
  ln -sf "$f" "$home/lib64/${b%%.so.*}.so"
done
cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* 2>/dev/null | tail -1)
if [ -z "$cudarc" ]; then (cd "$root" && cargo fetch --quiet); cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | tail -1); fi
grep -ohP '^\s+fn \Kcu[A-Za-z0-9_]+(?=\()' "$cudarc/src/driver/sys/mod.rs" | sort -u \
  | sed 's/.*/int &(void){return 999;}/' >"$home/lib64/stubs/cuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$home/lib64/stubs/libcuda.so" "$home/lib64/stubs/cuda_stub.c"
export CUDA_HOME="$home" CUDA_PATH="$home" PATH="$home/bin:$PATH" CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
cd "$root"
cargo build --release --features cuda "$@"
cargo clippy --features cuda --all-targets "$@" -- -D warnings
echo "the cuda build compiles (binary: ${CARGO_TARGET_DIR:-target}/release/shoprank)"
