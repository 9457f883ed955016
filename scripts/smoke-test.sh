#!/usr/bin/env bash
# Smoke test of a running densenet-api: the deployed stack after `sam deploy`, or a local
# `densenet-api serve`. Exits non-zero, naming the check, at the first failure.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/smoke-test.sh [options] URL

URL is the API's base URL, e.g. the stack's ApiUrl output
(https://abc123.execute-api.us-east-1.amazonaws.com/dev/) or http://127.0.0.1:3000/.

Checks: /health answers 200 with the model loaded; an image sent to /predict as a raw body,
as base64 JSON, and to /predict-file as multipart each get 200, success, 5 predictions with
probabilities in descending order summing to at most 1, and a 1000-class model; a corrupt image
gets 400 invalid_image; a CORS preflight is answered. With --api-key, also that
/logs/predictions/stats refuses a request without the key (403) and answers one with it.

Options:
  --stage STAGE     also check that /health reports this stage (dev or prod)
  --api-key KEY     the API key of the deployed stack (or set API_KEY); enables the /logs checks
  --image PATH      the image to classify (default: tests/fixtures/smoke.png)
  --retries N       how often to try /health while the function starts (default: 10)
  -h, --help        show this help
EOF
}

die() {
    echo "FAIL: $*" >&2
    exit 1
}

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "error: '$1' is required but not installed. $2" >&2; exit 1; }
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image="$root/tests/fixtures/smoke.png"
stage=""
api_key="${API_KEY:-}"
retries=10
url=""
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --stage) [ $# -ge 2 ] || die "--stage needs a value"; stage="$2"; shift ;;
        --api-key) [ $# -ge 2 ] || die "--api-key needs a value"; api_key="$2"; shift ;;
        --image) [ $# -ge 2 ] || die "--image needs a path"; image="$2"; shift ;;
        --retries) [ $# -ge 2 ] || die "--retries needs a number"; retries="$2"; shift ;;
        -*) echo "error: unknown option: $1 (see --help)" >&2; exit 2 ;;
        *) [ -z "$url" ] || { echo "error: more than one URL (see --help)" >&2; exit 2; }; url="$1" ;;
    esac
    shift
done
[ -n "$url" ] || { usage >&2; exit 2; }
url="${url%/}"

need curl "Install curl (Debian: apt-get install curl)."
need python3 "Install Python 3 (Debian: apt-get install python3)."
[ -f "$image" ] || die "image not found: $image"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# request NAME CURL_ARGS...: the response body goes to $work/NAME.body, the headers to
# $work/NAME.headers; prints the HTTP status (000 when nothing answered).
request() {
    local name="$1"
    shift
    curl -sS -m 35 -o "$work/$name.body" -D "$work/$name.headers" -w '%{http_code}' "$@" || true
}

# check KIND FILE [ARG]: the JSON checks, in Python for exact float and structure handling.
check() {
    python3 - "$@" <<'PY'
import json, sys

kind, path = sys.argv[1], sys.argv[2]
arg = sys.argv[3] if len(sys.argv) > 3 else ""
try:
    with open(path, encoding="utf-8") as f:
        body = json.load(f)
except (OSError, ValueError) as err:
    sys.exit(f"response is not JSON ({err}): {open(path, errors='replace').read()[:300]!r}")

def fail(msg):
    sys.exit(f"{msg}; response: {json.dumps(body)[:600]}")

if kind == "health":
    if body.get("status") != "healthy" or body.get("model_loaded") is not True:
        fail("the model is not loaded")
    if (body.get("model_info") or {}).get("num_classes") != 1000:
        fail("model_info.num_classes is not 1000")
    if arg and body.get("stage") != arg:
        fail(f"stage is {body.get('stage')!r}, expected {arg!r}")
elif kind == "prediction":
    if body.get("success") is not True:
        fail("success is not true")
    preds = body.get("predictions")
    if not isinstance(preds, list) or len(preds) != 5:
        fail("expected 5 predictions")
    probs = [p.get("probability") for p in preds]
    if not all(isinstance(p, (int, float)) and 0.0 <= p <= 1.0 for p in probs):
        fail("a probability is not a number in [0, 1]")
    if any(a < b for a, b in zip(probs, probs[1:])):
        fail("probabilities are not in descending order")
    if sum(probs) > 1.0 + 1e-6:
        fail(f"probabilities sum to {sum(probs)} > 1")
    if [p.get("rank") for p in preds] != [1, 2, 3, 4, 5]:
        fail("ranks are not 1..5")
    for p in preds:
        if not (isinstance(p.get("class_id"), int) and 0 <= p["class_id"] < 1000):
            fail("a class_id is not in 0..999")
        if not (isinstance(p.get("label"), str) and p["label"]):
            fail("a label is empty")
    info = body.get("model_info") or {}
    if info.get("num_classes") != 1000:
        fail("model_info.num_classes is not 1000")
    if arg and body.get("filename") != arg:
        fail(f"filename is {body.get('filename')!r}, expected {arg!r}")
elif kind == "error":
    if body.get("code") != arg or not body.get("detail"):
        fail(f"expected error code {arg!r} with a detail")
elif kind == "stats":
    if not isinstance(body.get("total_predictions"), int) or body["total_predictions"] < 1:
        fail("total_predictions is not a positive count after the predictions above")
else:
    sys.exit(f"unknown check {kind}")
PY
}

expect_status() {
    local name="$1" want="$2" got="$3"
    [ "$got" = "$want" ] || die "$name: HTTP $got, expected $want; body: $(head -c 400 "$work/$name.body" 2>/dev/null)"
}

ok() { echo "ok: $*"; }

# /health, retried while a cold start loads the model.
status=000
for ((i = 1; i <= retries; i++)); do
    status="$(request health "$url/health")"
    [ "$status" = 200 ] && break
    echo "... /health answered $status (try $i of $retries)"
    [ "$i" -lt "$retries" ] && sleep 3
done
expect_status health 200 "$status"
check health "$work/health.body" "$stage" || die "/health"
ok "/health: model loaded${stage:+, stage $stage}"

filename="$(basename "$image")"
mime="image/png"
case "$filename" in *.jpg | *.jpeg) mime="image/jpeg" ;; *.webp) mime="image/webp" ;; *.gif) mime="image/gif" ;; esac

status="$(request raw -X POST -H "Content-Type: $mime" --data-binary "@$image" "$url/predict?filename=$filename")"
expect_status raw 200 "$status"
check prediction "$work/raw.body" "$filename" || die "POST /predict ($mime body)"
ok "POST /predict with a raw $mime body"

python3 -c 'import base64, json, sys; print(json.dumps({"image": base64.b64encode(open(sys.argv[1], "rb").read()).decode(), "filename": sys.argv[2], "top_k": 5}))' \
    "$image" "$filename" >"$work/request.json"
status="$(request json -X POST -H "Content-Type: application/json" --data-binary "@$work/request.json" "$url/predict")"
expect_status json 200 "$status"
check prediction "$work/json.body" "$filename" || die "POST /predict (base64 JSON)"
ok "POST /predict with base64 JSON"

status="$(request multipart -X POST -F "file=@$image;type=$mime" "$url/predict-file")"
expect_status multipart 200 "$status"
check prediction "$work/multipart.body" "$filename" || die "POST /predict-file (multipart)"
ok "POST /predict-file with multipart/form-data"

# The first 100 bytes: a valid signature and header, then nothing.
head -c 100 "$image" >"$work/corrupt.png"
status="$(request corrupt -X POST -H "Content-Type: image/png" --data-binary "@$work/corrupt.png" "$url/predict")"
expect_status corrupt 400 "$status"
check error "$work/corrupt.body" invalid_image || die "POST /predict (corrupt image)"
ok "a corrupt image gets 400 invalid_image"

status="$(request preflight -X OPTIONS -H "Origin: https://example.com" \
    -H "Access-Control-Request-Method: POST" -H "Access-Control-Request-Headers: content-type" "$url/predict")"
case "$status" in 200 | 204) ;; *) die "OPTIONS /predict: HTTP $status, expected 200 or 204" ;; esac
grep -qi '^access-control-allow-origin:' "$work/preflight.headers" \
    || die "OPTIONS /predict: no Access-Control-Allow-Origin header"
ok "CORS preflight answered"

if [ -n "$api_key" ]; then
    status="$(request nokey "$url/logs/predictions/stats")"
    expect_status nokey 403 "$status"
    ok "/logs/predictions/stats refuses a request without the API key"
    status="$(request stats -H "x-api-key: $api_key" "$url/logs/predictions/stats")"
    expect_status stats 200 "$status"
    check stats "$work/stats.body" || die "/logs/predictions/stats"
    ok "/logs/predictions/stats answers with the API key"
fi

echo "smoke test passed: $url"
