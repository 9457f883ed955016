#!/usr/bin/env bash
# Downloads the pretrained DenseNet121 (ONNX Model Zoo, densenet121_Opset17) and checks it.
set -euo pipefail

DEFAULT_URL="https://github.com/onnx/models/raw/main/Computer_Vision/densenet121_Opset17_torch_hub/densenet121_Opset17.onnx"
EXPECTED_SIZE=32308799
EXPECTED_SHA256=9299d867cac3e0bf40803ac737e3fdaf3cb5976ee65c82961c211a3d8be3bbdd

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/models/densenet121_Opset17.onnx"

usage() {
    cat <<EOF
Usage: scripts/fetch-model.sh [--out PATH] [--help]

Downloads densenet121_Opset17.onnx (ONNX Model Zoo, Computer_Vision/densenet121_Opset17_torch_hub)
to models/densenet121_Opset17.onnx, or PATH, and verifies its size ($EXPECTED_SIZE bytes) and
sha256. Does nothing when the file is already there with the right checksum.

Environment:
  MODEL_URL   download from here instead of
              $DEFAULT_URL
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --out)
            [[ $# -ge 2 ]] || { echo "error: --out needs a path" >&2; exit 2; }
            out="$2"
            shift 2
            ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

url="${MODEL_URL:-$DEFAULT_URL}"

if ! command -v sha256sum >/dev/null 2>&1; then
    echo "error: 'sha256sum' is required. Install coreutils (Debian: apt-get install coreutils)." >&2
    exit 1
fi
if command -v curl >/dev/null 2>&1; then
    download() { curl -fL --retry 2 --connect-timeout 20 -o "$2" "$1"; }
elif command -v wget >/dev/null 2>&1; then
    download() { wget --tries=3 --timeout=20 -O "$2" "$1"; }
else
    echo "error: 'curl' or 'wget' is required. Debian: apt-get install curl" >&2
    exit 1
fi

# Prints "OK" or why the file at $1 is not the published model.
verify() {
    local size sum
    size="$(wc -c <"$1" | tr -d ' ')"
    if [[ "$size" != "$EXPECTED_SIZE" ]]; then
        echo "size $size bytes, expected $EXPECTED_SIZE"
        return
    fi
    sum="$(sha256sum "$1" | cut -d' ' -f1)"
    if [[ "$sum" != "$EXPECTED_SHA256" ]]; then
        echo "sha256 $sum, expected $EXPECTED_SHA256"
        return
    fi
    echo OK
}

if [[ -f "$out" ]]; then
    status="$(verify "$out")"
    if [[ "$status" == OK ]]; then
        echo "$out is present and verified (sha256 $EXPECTED_SHA256)."
        exit 0
    fi
    echo "$out exists but is not the published model ($status); downloading it again."
fi

mkdir -p "$(dirname "$out")"
tmp="$(mktemp "$out.XXXXXX.part")"
trap 'rm -f "$tmp"' EXIT

fail() {
    cat >&2 <<EOF

error: could not fetch the model: $1
Instead, either:
  - download densenet121_Opset17.onnx by hand (ONNX Model Zoo,
    Computer_Vision/densenet121_Opset17_torch_hub) to
      $out
    and run this script again to verify it ($EXPECTED_SIZE bytes, sha256 $EXPECTED_SHA256);
  - or write a random-weight stand-in with the same topology (its answers are meaningless):
      python3 scripts/make-test-model.py --out $out
    (it needs onnx and numpy: scripts/setup-tools.sh installs them, then use .tools/venv/bin/python)
EOF
    exit 1
}

echo "Downloading $url"
download "$url" "$tmp" || fail "download from $url failed"
status="$(verify "$tmp")"
# An LFS pointer instead of the content is a small text file: name that case plainly.
if [[ "$status" != OK ]] && head -c 200 "$tmp" | grep -q 'git-lfs'; then
    status="got a Git LFS pointer file, not the model"
fi
[[ "$status" == OK ]] || fail "downloaded file is wrong: $status"

mv "$tmp" "$out"
trap - EXIT
echo "Wrote $out (sha256 $EXPECTED_SHA256)."
