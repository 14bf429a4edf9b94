#!/usr/bin/env bash
# Runs every curl example of README.md against a real server, so the README cannot drift
# from the routes.
#
#   scripts/readme_examples.sh [BINARY] [DATA_DIR] [FILE.md ...]
#   scripts/readme_examples.sh --list [FILE.md ...]     (print the examples, run nothing)
#
# BINARY defaults to target/release/shoprank; DATA_DIR to a temporary directory removed at
# the end; the files to README.md. The demo catalog (fixtures/demo_catalog.jsonl) is indexed
# into DATA_DIR, `shoprank serve` starts on a free port, and each example is run in file
# order with `127.0.0.1:8080` pointed at that port. It fails, listing the examples that
# failed, when curl fails or an answer is not 2xx.
#
# An example is a line starting with `curl ` inside a ```sh (or bash, shell) fence; a line
# ending in `\`, or a quote left open, continues it on the next line. Examples run in the
# order they appear, so state they need (events before a personalized search) must come
# first. They must not pipe curl's output or use -o/-w (the script adds its own), and
# examples that show an error belong in a ```text block.
#
# The binary reads the model folder (models/m3e-small, see models/fetch.sh) and
# index_schema/ relative to the repository root, where this script runs it.
set -euo pipefail

# Prints the examples of markdown file $1, NUL-separated.
extract() {
  local fence="" pending="" line quotes
  while IFS= read -r line || [[ -n $line ]]; do
    if [[ $line =~ ^[[:space:]]*\`\`\` ]]; then
      if [[ -z $fence ]]; then
        case ${line#*\`\`\`} in
          sh | bash | shell) fence=sh ;;
          *) fence=other ;;
        esac
      else
        fence=""
      fi
      if [[ -n $pending ]]; then
        echo "error: $1: an example is not closed before its fence ends: $pending" >&2
        return 1
      fi
      continue
    fi
    [[ $fence == sh ]] || continue
    if [[ -n $pending ]]; then
      pending+=$line
    elif [[ $line == "curl "* ]]; then
      pending=$line
    else
      continue
    fi
    if [[ $pending == *\\ ]]; then
      pending="${pending%\\} "
      continue
    fi
    quotes=${pending//[^\']/}
    if ((${#quotes} % 2)); then
      pending+=$'\n'
      continue
    fi
    printf '%s\0' "$pending"
    pending=""
  done <"$1"
}

# Paths given on the command line are relative to where the script was started.
here=$(pwd)
abs() { case $1 in /*) printf '%s' "$1" ;; *) printf '%s' "$here/$1" ;; esac; }
list=
if [[ ${1:-} == --list ]]; then list=1; shift; fi
if [[ -n $list ]]; then
  bin=""; data=""; files=("$@")
else
  bin=${1:+$(abs "$1")}; data=${2:+$(abs "$2")}; files=("${@:3}")
fi
for i in "${!files[@]}"; do files[i]=$(abs "${files[i]}"); done
cd "$(dirname "$0")/.."
[[ ${#files[@]} -gt 0 ]] || files=("$(pwd)/README.md")

work=$(mktemp -d)
server_pid=
cleanup() {
  if [[ -n $server_pid ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

examples=()
for file in "${files[@]}"; do
  extract "$file" >"$work/examples" || exit 1
  mapfile -d '' -O "${#examples[@]}" -t examples <"$work/examples"
done
if [[ -n $list ]]; then
  printf '%s\n' "${examples[@]}"
  exit 0
fi
[[ ${#examples[@]} -gt 0 ]] || { echo "error: no curl examples found in ${files[*]}" >&2; exit 1; }

bin=${bin:-target/release/shoprank}
[[ -x $bin ]] || { echo "error: $bin is not an executable: build it (cargo build --release) or pass its path" >&2; exit 1; }
[[ -n $data ]] || data=$work/data

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port=
for _ in $(seq 1 100); do
  candidate=$((20000 + RANDOM % 40000))
  if port_free "$candidate"; then port=$candidate; break; fi
done
[[ -n $port ]] || { echo "error: found no free port" >&2; exit 1; }

echo "== index fixtures/demo_catalog.jsonl into $data"
"$bin" index --catalog fixtures/demo_catalog.jsonl --data-dir "$data" >"$work/index.log" 2>&1 \
  || { cat "$work/index.log" >&2; exit 1; }

echo "== serve on 127.0.0.1:$port"
env -u SHOPRANK_MASTER_KEY "$bin" serve --data-dir "$data" --addr "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
server_pid=$!
up=
for _ in $(seq 1 600); do
  if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then up=1; break; fi
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.2
done
[[ -n $up ]] || { echo "error: the server did not answer /health" >&2; tail -n 30 "$work/serve.log" >&2; exit 1; }

echo "== ${#examples[@]} examples from ${files[*]}"
failed=()
body=$work/body
for example in "${examples[@]}"; do
  cmd=${example//127.0.0.1:8080/127.0.0.1:$port}
  cmd="curl -sS -o \"\$body\" -w '%{http_code}' --max-time 120 ${cmd#curl }"
  : >"$body"
  if code=$(eval "$cmd" 2>"$work/curl.err"); then :; else
    code="curl exit $? ($(tr '\n' ' ' <"$work/curl.err"))"
  fi
  if [[ $code =~ ^2[0-9][0-9]$ ]]; then
    echo "ok   $code  $example"
  else
    echo "FAIL $code  $example"
    echo "     answer: $(head -c 400 "$body")"
    failed+=("$example")
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "== ${#failed[@]} of ${#examples[@]} examples failed:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  echo "-- server log (last 20 lines)" >&2
  tail -n 20 "$work/serve.log" >&2
  exit 1
fi
echo "== all ${#examples[@]} examples answered 2xx"
