#!/usr/bin/env bash
# Benchmarks the service, on each of its engines (tract and ONNX Runtime), against onnxruntime and
# the original Python service, side by side in one run, and writes BENCHMARKS.md. Exits non-zero
# if the service's answers disagree with onnxruntime's. What is measured, and how, is in
# bench/run.py.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/bench.sh [--model PATH] [--quick] [--threads N] [--report PATH] [--help]

Builds the service and its benchmark examples with both engines (cargo build --release
--features onnxruntime), installs the Python side (bench/requirements.txt: FastAPI, uvicorn,
Pillow, onnxruntime, ...) into .tools/bench-venv, makes the test images, then measures the
service on each engine -- tract (ENGINE=tract) and ONNX Runtime (ENGINE=onnxruntime) --
interleaved with the Python side:
  - inference only: each engine vs onnxruntime, same model and tensor, 1 and N threads;
  - pre-processing only: decode + resize + normalise vs Pillow + numpy, 600x600 and 12-MP JPEGs;
  - cold start: process start to first prediction, and peak memory, vs Python + onnxruntime
    (tract loads the model prepared by `densenet-api prepare-model`, as the Lambda image does,
    and, for comparison, the ONNX file itself);
  - end to end: POST /predict of both JPEGs, 1 and 4 clients, vs the Python reference service.
The ONNX Runtime engine loads the very library the Python side runs: ORT_DYLIB_PATH is set to
the libonnxruntime.so.* of the onnxruntime package in the virtual environment.
Outputs are checked first (raw scores against onnxruntime, top-5 on the images): any
disagreement makes the run fail (exit 1) after the report is written. The report ends with an
estimate, from the measured inference times, of the Lambda memory setting and cost per
prediction for each engine.

Options:
  --model PATH   the ONNX model (default: the random-weight DenseNet121 stand-in, made once
                 into bench/out/ by scripts/make-test-model.py; same cost as the real model)
  --quick        few repetitions: a couple of minutes, for trying the benchmark out; writes
                 bench/out/BENCHMARKS.quick.md unless --report is given
  --threads N    N of "1 and N threads" (default: the number of CPUs)
  --report PATH  where to write the Markdown report (default: BENCHMARKS.md)
  --help         show this help

A full run takes 5 to 10 minutes on 2 cores. Run it on an otherwise idle machine: the report
records how much CPU other processes took meanwhile.

Environment:
  CARGO_TARGET_DIR   where cargo builds (default ./target)
  ORT_DYLIB_PATH     not read: the script sets it to the libonnxruntime.so.* of the bench
                     environment (see above)
  PYTHON             interpreter for the virtual environment (default python3, 3.10 or newer)
USAGE
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

model=""
quick=0
threads=0
report=""
command_line="scripts/bench.sh"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --model | --threads | --report)
            [[ $# -ge 2 ]] || { echo "error: $1 needs a value (see --help)" >&2; exit 2; }
            case "$1" in
                --model) model="$2" ;;
                --threads) threads="$2" ;;
                --report) report="$2" ;;
            esac
            command_line+=" $1 $2"
            shift 2
            ;;
        --quick) quick=1; command_line+=" --quick"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if ! [[ "$threads" =~ ^[0-9]+$ ]]; then
    echo "error: --threads takes a whole number, not '$threads'" >&2
    exit 2
fi

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "error: '$1' is required. $2" >&2
        exit 1
    fi
}
PYTHON="${PYTHON:-python3}"
need cargo "Install Rust with rustup: https://rustup.rs"
need "$PYTHON" "Install Python 3.10+ (Debian: apt-get install python3 python3-venv)."
need git "Install git (Debian: apt-get install git)."
need sha256sum "Install coreutils (Debian: apt-get install coreutils)."
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
    echo "error: $PYTHON is $("$PYTHON" --version 2>&1); Python 3.10 or newer is required." >&2
    exit 1
fi
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "error: $PYTHON cannot create virtual environments. Debian: apt-get install python3-venv" >&2
    exit 1
fi
if [[ ! -x /usr/bin/time ]]; then
    echo "error: GNU time is required at /usr/bin/time (Debian: apt-get install time)." >&2
    exit 1
fi
if [[ ! -r /proc/stat ]]; then
    echo "error: the benchmark reads /proc (CPU, memory); run it on Linux." >&2
    exit 1
fi

step() { printf '\n==> %s\n' "$*"; }

out="$root/bench/out"
mkdir -p "$out"
if [[ -z "$report" ]]; then
    if [[ $quick -eq 1 ]]; then report="$out/BENCHMARKS.quick.md"; else report="$root/BENCHMARKS.md"; fi
fi

# The Python side, reinstalled only when the pinned requirements or the interpreter change.
venv="$root/.tools/bench-venv"
requirements="$root/bench/requirements.txt"
stamp="$venv/.requirements.sha256"
want_stamp="$(sha256sum "$requirements" | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]] && "$venv/bin/python" -c '' 2>/dev/null; then
    step "Python packages up to date in $venv"
else
    step "Installing $requirements into $venv"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$requirements"
    "$venv/bin/python" -m pip check
    printf '%s\n' "$want_stamp" >"$stamp"
fi
python="$venv/bin/python"

step "Building the service and the benchmark examples (release, both engines)"
cargo build --release --locked --bins --examples --features onnxruntime
target="${CARGO_TARGET_DIR:-$root/target}"

# The ONNX Runtime engine runs the library of the Python onnxruntime package, so that both sides
# of every comparison run the very same ONNX Runtime build.
ORT_DYLIB_PATH="$("$python" - <<'PYTHON'
import pathlib
import onnxruntime

found = sorted((pathlib.Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so.*"))
print(found[-1] if found else "")
PYTHON
)"
if [[ -z "$ORT_DYLIB_PATH" || ! -f "$ORT_DYLIB_PATH" ]]; then
    echo "error: no libonnxruntime.so.* in the onnxruntime package of $venv" >&2
    exit 1
fi
export ORT_DYLIB_PATH
echo "ONNX Runtime engine: ORT_DYLIB_PATH=$ORT_DYLIB_PATH"

test_model=()
if [[ -z "$model" ]]; then
    model="$out/densenet121_test.onnx"
    if [[ ! -s "$model" ]]; then
        step "Making the stand-in model $model"
        "$python" scripts/make-test-model.py --out "$model.tmp" --seed 0
        mv "$model.tmp" "$model"
    fi
    test_model=(--test-model)
elif [[ ! -f "$model" ]]; then
    echo "error: model not found: $model (scripts/fetch-model.sh downloads the real one)" >&2
    exit 2
fi

step "Preparing the model for the tract engine, as the Lambda image does"
prepared="$out/$(basename "${model%.onnx}").nnef.tar"
"$target/release/densenet-api" prepare-model --model "$model" --out "$prepared"

step "Benchmarking (bench/run.py)"
# run.py starts and stops its own servers and children, also when interrupted.
quick_flag=()
if [[ $quick -eq 1 ]]; then quick_flag=(--quick); fi
"$python" bench/run.py \
    --model "$(realpath "$model")" \
    --bin "$target/release/densenet-api" \
    --examples "$target/release/examples" \
    --out "$out" \
    --report "$report" \
    --threads "$threads" \
    --prepared "$prepared" \
    --command "$command_line" \
    "${test_model[@]}" "${quick_flag[@]}"
