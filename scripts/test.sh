#!/usr/bin/env bash
# Runs every test of the project: formatting and lints, the Rust unit, route and integration
# tests, the comparison with the Python reference pipeline, and the deployment checks.
# It installs its own tools (scripts/setup-tools.sh) and starts the servers the tests talk to
# (SeaweedFS and moto on loopback), then stops them.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/test.sh [--help]

Runs all tests. Needs cargo (rustup, with clippy and rustfmt), python3 (3.10+) and curl.
Tools from PyPI are installed into .tools/venv on the first run.

Environment:
  CARGO_TARGET_DIR   where cargo builds (default ./target)
  TEST_WORK_DIR      test model, reference outputs and server data (default $CARGO_TARGET_DIR/test-work)
USAGE
}
case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) echo "error: unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "error: '$1' is required. $2" >&2
        exit 1
    fi
}
need cargo "Install Rust with rustup: https://rustup.rs"
need python3 "Install Python 3.10+ (Debian: apt-get install python3 python3-venv)."
need curl "Install curl (Debian: apt-get install curl)."

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
work="${TEST_WORK_DIR:-$target/test-work}"
mkdir -p "$work"

step() { printf '\n==> %s\n' "$*"; }

step "Installing test tools"
scripts/setup-tools.sh
export PATH="$root/.tools/venv/bin:$PATH"

step "Formatting"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --check

step "Test model and reference outputs"
model="$work/densenet121_test.onnx"
if [ ! -s "$model" ]; then
    python scripts/make-test-model.py --out "$model.tmp" --seed 0
    mv "$model.tmp" "$model"
fi
python scripts/reference.py --model "$model" --out "$work/reference"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() {
    python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until URL answers (any HTTP status), for at most $2 seconds.
wait_for() {
    local url="$1" seconds="$2" i
    for ((i = 0; i < seconds * 4; i++)); do
        if curl -s -o /dev/null -m 1 "$url"; then
            return 0
        fi
        sleep 0.25
    done
    echo "error: $url did not answer within ${seconds}s" >&2
    return 1
}

step "Starting SeaweedFS (S3) and moto (S3 + ECR) on loopback"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true AWS_PAGER=""
seaweed_dir="$work/seaweed"
rm -rf "$seaweed_dir"
mkdir -p "$seaweed_dir"
s3_port="$(free_port)"
weed mini -dir="$seaweed_dir" -ip=127.0.0.1 -ip.bind=127.0.0.1 -admin.ui=false -webdav=false \
    -s3.port="$s3_port" -master.port="$(free_port)" -volume.port="$(free_port)" \
    -filer.port="$(free_port)" -s3.port.iceberg=0 -s3.port.lance=0 \
    >"$work/seaweed.log" 2>&1 &
pids+=("$!")
moto_port="$(free_port)"
moto_server -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
pids+=("$!")
export S3_ENDPOINT_URL="http://127.0.0.1:$s3_port"
export MOTO_ENDPOINT_URL="http://127.0.0.1:$moto_port"
wait_for "$MOTO_ENDPOINT_URL/moto-api/" 60
wait_for "$S3_ENDPOINT_URL/" 120

export TEST_MODEL_PATH="$model"
export REFERENCE_DIR="$work/reference"
export DENSENET_BIN="$target/release/densenet-api"
# The ONNX Runtime engine's library, from the onnxruntime wheel the reference outputs came from.
ORT_DYLIB_PATH="$(python -c 'import glob, os, onnxruntime; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))[0])')"
export ORT_DYLIB_PATH

step "Rust tests (release profile: the binary and the tests share one build; both engines)"
cargo build --release --locked --features onnxruntime
cargo test --release --locked --all-targets --features onnxruntime

step "Lints"
cargo clippy --release --locked --all-targets --features onnxruntime -- -D warnings

step "Deployment and Lambda runtime tests"
python -m pytest -q tests/py
