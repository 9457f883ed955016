"""Linters over the deployment files: shell scripts, Dockerfile, workflows, PowerShell."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, require_tool


def repo_files(pattern: str) -> list[Path]:
    """Tracked and untracked (not ignored) files matching a git pathspec glob, outside .tools."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", pattern],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    files = sorted({REPO_ROOT / f for f in listed if not f.startswith(".tools/")})
    return [f for f in files if f.is_file()]


SHELL_SCRIPTS = repo_files("*.sh")
POWERSHELL_SCRIPTS = repo_files("*.ps1")
WORKFLOWS = repo_files(".github/workflows/*.yml")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_the_deployment_files_exist():
    names = {p.relative_to(REPO_ROOT).as_posix() for p in SHELL_SCRIPTS + POWERSHELL_SCRIPTS + WORKFLOWS}
    for expected in [
        "setup-model-repo.sh", "setup-model-repo.ps1", "setup-models-bucket.sh", "scripts/smoke-test.sh",
        ".github/workflows/ci.yml", ".github/workflows/deploy.yml",
    ]:
        assert expected in names, f"{expected} is missing"


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_shellcheck(script: Path):
    require_tool("shellcheck")
    result = run("shellcheck", "--external-sources", str(script))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_shell_scripts_are_strict_and_executable(script: Path):
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") or text.startswith("#!/bin/bash\n"), "needs a bash shebang"
    assert "set -euo pipefail" in text
    assert script.stat().st_mode & 0o111, f"{script.name} is not executable"


def test_hadolint_dockerfile():
    require_tool("hadolint")
    result = run("hadolint", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hadolint ignore" not in (REPO_ROOT / "Dockerfile").read_text()


def test_workflows_match_the_github_schema():
    require_tool("check-jsonschema")
    assert WORKFLOWS, "no workflows under .github/workflows"
    result = run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS))
    assert result.returncode == 0, result.stdout + result.stderr


def powershell_problems(source: bytes) -> list[str]:
    """ERROR and MISSING nodes of a PowerShell parse, as 'line:col text'."""
    try:
        import tree_sitter
        import tree_sitter_powershell
    except ImportError as err:
        pytest.fail(f"{err.name} is not installed: run scripts/setup-tools.sh", pytrace=False)
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
    tree = parser.parse(source)
    problems = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            line, col = node.start_point
            text = source[node.start_byte:node.end_byte][:60].decode(errors="replace")
            problems.append(f"{line + 1}:{col + 1} {'MISSING' if node.is_missing else 'ERROR'} {text!r}")
        stack.extend(node.children)
    return problems


def test_the_powershell_parser_catches_broken_scripts():
    assert powershell_problems(b"if ($x -eq 1) {\n  Write-Output 'a'\n")
    assert not powershell_problems(b"if ($x -eq 1) {\n  Write-Output 'a'\n}\n")


@pytest.mark.parametrize("script", POWERSHELL_SCRIPTS, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_powershell_parses(script: Path):
    source = script.read_bytes()
    assert powershell_problems(source) == []
    text = source.decode()
    # PowerShell 7-only syntax that Windows PowerShell 5 cannot run.
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\?\?|\?\.|\s\?\s[^:]+\s:\s", code), "PowerShell 7-only operator (??, ?., ?:)"


def steps(text: str) -> list[tuple[int, str]]:
    return [(int(n), title) for n, title in re.findall(r"^\s*# Step (\d+): (.+?)\s*$", text, re.M)]


def test_powershell_setup_mirrors_the_shell_setup():
    sh = (REPO_ROOT / "setup-model-repo.sh").read_text()
    ps = (REPO_ROOT / "setup-model-repo.ps1").read_text()

    sh_steps, ps_steps = steps(sh), steps(ps)
    assert len(sh_steps) >= 8, sh_steps
    assert [n for n, _ in sh_steps] == list(range(1, len(sh_steps) + 1)), "steps are not numbered 1..N in order"
    assert ps_steps == sh_steps

    # The same names, paths, tags and commands in both.
    for convention in [
        "densenet121-model-",
        "/model/densenet121_Opset17.onnx",
        "densenet121_Opset17.onnx",
        "9299d867cac3e0bf40803ac737e3fdaf3cb5976ee65c82961c211a3d8be3bbdd",
        "MODEL_SHA256",
        "scanOnPush=true",
        "MUTABLE",
        '"countType": "imageCountMoreThan"',
        "FROM scratch",
        "linux/amd64",
        "latest",
        "get-login-password",
        "--password-stdin",
        "describe-images",
        "imageDetails[0].imageDigest",
        "ModelImageUri: ",
        "sam build --parameter-overrides ModelImageUri=",
        "sam deploy --guided",
    ]:
        assert convention in sh, f"setup-model-repo.sh lacks {convention!r}"
        assert convention in ps, f"setup-model-repo.ps1 lacks {convention!r}"
    assert re.search(r"keep_images=5\b", sh) and re.search(r"\$keepImages = 5\b", ps)
    assert "${model_sha256:0:16}" in sh and "$modelSha256.Substring(0, 16)" in ps
    assert "COPY $model_name /model/$model_name" in sh and "COPY $modelName /model/$modelName" in ps
    assert 'model_name="densenet121_Opset17.onnx"' in sh and "$modelName = 'densenet121_Opset17.onnx'" in ps


def test_the_function_image_copies_the_model_from_where_the_model_image_puts_it():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "ARG MODEL_IMAGE" in dockerfile
    assert re.search(r"^FROM \$\{MODEL_IMAGE\} AS model$", dockerfile, re.M)
    assert re.search(r"^FROM scratch AS local-model$", dockerfile, re.M)
    assert re.search(
        r"^COPY --from=model /model/densenet121_Opset17\.onnx /opt/model/densenet121_Opset17\.onnx$", dockerfile, re.M
    )
    assert re.search(r"^FROM public\.ecr\.aws/lambda/provided:al2023", dockerfile, re.M)
    assert re.search(r"^COPY --from=build /build/target/dist/densenet-api /var/runtime/bootstrap$", dockerfile, re.M)
    assert re.search(r"^ENV MODEL_PATH=/opt/model/densenet121_Opset17\.onnx( \\)?$", dockerfile, re.M)
    assert "cargo build --profile dist --locked" in dockerfile
    # No credentials or secrets baked in.
    assert not re.search(r"AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN)|--mount=type=secret", dockerfile)


def test_the_function_image_ships_the_onnxruntime_the_tests_run_against():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    version = re.search(r"^ARG ONNXRUNTIME_VERSION=(\S+)$", dockerfile, re.M)
    assert version, "the Dockerfile pins no ONNX Runtime version"
    for requirements in ["scripts/requirements-test.txt", "bench/requirements.txt"]:
        pins = re.findall(r"^onnxruntime==(\S+)$", (REPO_ROOT / requirements).read_text(), re.M)
        assert pins == [version.group(1)], f"{requirements} pins onnxruntime {pins}"
    # Both cargo builds (the dependency layer and the crate) enable the engine.
    assert dockerfile.count("cargo build --profile dist --locked --features onnxruntime") == 2
    assert re.search(r"^COPY --from=onnxruntime /opt/lib/libonnxruntime\.so /opt/lib/libonnxruntime\.so$", dockerfile, re.M)
    assert re.search(r"^\s+ORT_DYLIB_PATH=/opt/lib/libonnxruntime\.so$", dockerfile, re.M)


def test_the_function_image_loads_the_model_prepared_at_build():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM build AS prepared$", dockerfile, re.M)
    assert re.search(
        r"^RUN target/dist/densenet-api prepare-model --model /prepare/densenet121_Opset17\.onnx \\\n"
        r"\s+--out /prepare/densenet121_Opset17\.nnef\.tar$", dockerfile, re.M)
    assert re.search(
        r"^COPY --from=prepared /prepare/densenet121_Opset17\.nnef\.tar /opt/model/densenet121_Opset17\.nnef\.tar$",
        dockerfile, re.M)
    assert re.search(r"^\s+PREPARED_MODEL_PATH=/opt/model/densenet121_Opset17\.nnef\.tar \\$", dockerfile, re.M)
