"""scripts/smoke-test.sh (the deploy workflow's check) against the local server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO_ROOT, require_env

SMOKE = REPO_ROOT / "scripts" / "smoke-test.sh"


def serve(binary: str, model: str, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_LAMBDA_", "LOGS_BUCKET"))}
    env.update(MODEL_PATH=model, STAGE="dev", LOG_DIR=str(tmp_path / "logs"), RUST_LOG="warn")
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [binary, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited:\n{(tmp_path / 'server.log').read_text()[-2000:]}", pytrace=False)
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return proc, url
        except urllib.error.HTTPError:
            return proc, url  # answering, even if unhealthy
        except OSError:
            time.sleep(0.2)
    pytest.fail("the server did not answer within 60s", pytrace=False)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def binary() -> str:
    return require_env("DENSENET_BIN", "the built release binary (target/release/densenet-api)")


def test_smoke_test_passes_against_a_healthy_server(binary, tmp_path: Path):
    model = require_env("TEST_MODEL_PATH", "a DenseNet-topology ONNX test model")
    proc, url = serve(binary, model, tmp_path)
    try:
        result = subprocess.run([str(SMOKE), "--stage", "dev", f"{url}/"], capture_output=True, text=True,
                                timeout=300)
    finally:
        stop(proc)
    assert result.returncode == 0, result.stdout + result.stderr
    for check in ["/health: model loaded, stage dev", "raw image/png body", "base64 JSON", "multipart/form-data",
                  "400 invalid_image", "CORS preflight"]:
        assert check in result.stdout, result.stdout


def test_smoke_test_fails_when_the_model_is_not_loaded(binary, tmp_path: Path):
    proc, url = serve(binary, str(tmp_path / "no-such-model.onnx"), tmp_path)
    try:
        result = subprocess.run([str(SMOKE), "--retries", "1", url], capture_output=True, text=True, timeout=120)
    finally:
        stop(proc)
    assert result.returncode != 0
    assert "FAIL: health: HTTP 503" in result.stderr, result.stderr
