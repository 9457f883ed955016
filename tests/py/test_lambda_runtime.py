"""The release binary as a Lambda function: API Gateway events through a real Runtime API.

cargo-lambda's emulator serves the Lambda Runtime API on loopback; the binary (DENSENET_BIN) polls
it as it would in Lambda (AWS_LAMBDA_RUNTIME_API set, no subcommand), and `cargo-lambda lambda
invoke` sends it the SAM-generated events of tests/fixtures/events and prints its responses.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO_ROOT, require_env, require_tool

EVENTS = REPO_ROOT / "tests" / "fixtures" / "events"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def stop(proc: subprocess.Popen) -> None:
    """Ends a process started here, with its process group (cargo-lambda runs helpers)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def wait_until_answering(url: str, proc: subprocess.Popen, log: Path, seconds: float) -> None:
    """Waits for any HTTP answer from url; each probe times out after a second, because the
    emulator holds requests it cannot answer yet open."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the Lambda emulator exited with {proc.returncode}:\n{log_tail(log)}", pytrace=False)
        try:
            request = urllib.request.Request(url, headers={"Connection": "close"})
            with urllib.request.urlopen(request, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except (urllib.error.URLError, OSError):
            time.sleep(0.25)
    pytest.fail(f"the Lambda emulator did not answer on {url} within {seconds:.0f}s:\n{log_tail(log)}", pytrace=False)


class Runtime:
    """The emulator and the function process, and a way to invoke the function."""

    def __init__(self, cargo_lambda: str, port: int, function: subprocess.Popen, logs: dict[str, Path],
                 log_dir: Path, variant: str):
        self.variant = variant
        self.cargo_lambda = cargo_lambda
        self.port = port
        self.function = function
        self.logs = logs
        self.log_dir = log_dir

    def invoke(self, event_file: str) -> dict:
        """The function's response to one event, as the JSON object Lambda hands API Gateway."""
        path = EVENTS / event_file
        assert path.exists(), f"missing fixture {path}: run tests/fixtures/events/make_events.py"
        if self.function.poll() is not None:
            pytest.fail(
                f"the function exited with {self.function.returncode}:\n{log_tail(self.logs['function'])}",
                pytrace=False,
            )
        result = subprocess.run(
            [self.cargo_lambda, "lambda", "invoke", "_", "-A", "127.0.0.1", "-P", str(self.port),
             "--data-file", str(path)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
        )
        assert result.returncode == 0, (
            f"cargo-lambda invoke of {event_file} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
            f"function log:\n{log_tail(self.logs['function'])}"
        )
        try:
            return json.loads(result.stdout)
        except ValueError:
            pytest.fail(f"the response to {event_file} is not JSON: {result.stdout[:500]!r}", pytrace=False)


@pytest.fixture(
    scope="module",
    params=["as-deployed", "without-ignore-stage", "onnxruntime"],
    ids=["env-as-in-template", "no-AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "ENGINE-onnxruntime"],
)
def runtime(request, tmp_path_factory) -> Runtime:
    binary = Path(require_env("DENSENET_BIN", "the built release binary (target/release/densenet-api)"))
    model = Path(require_env("TEST_MODEL_PATH", "a DenseNet-topology ONNX test model"))
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"DENSENET_BIN={binary} is not an executable file: build it with cargo build --release",
                    pytrace=False)
    if not model.is_file():
        pytest.fail(f"TEST_MODEL_PATH={model} does not exist: run scripts/make-test-model.py", pytrace=False)
    cargo_lambda = require_tool("cargo-lambda")

    work = tmp_path_factory.mktemp(f"lambda-{request.param}")
    log_dir = work / "prediction-logs"
    logs = {"emulator": work / "emulator.log", "function": work / "function.log"}
    port = free_port()
    started: list[subprocess.Popen] = []
    try:
        with open(logs["emulator"], "wb") as out:
            emulator = subprocess.Popen(
                [cargo_lambda, "lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", str(port)],
                cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        started.append(emulator)
        # A GET on the Invoke API answers 405 at once; most other paths wait for a function.
        wait_until_answering(
            f"http://127.0.0.1:{port}/2015-03-31/functions/_/invocations", emulator, logs["emulator"], 60
        )

        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_LAMBDA_", "LOGS_BUCKET", "AWS_ENDPOINT_URL", "_HANDLER"))}
        env.update(
            AWS_LAMBDA_RUNTIME_API=f"http://127.0.0.1:{port}/.rt",
            AWS_LAMBDA_FUNCTION_NAME="_",
            AWS_LAMBDA_FUNCTION_VERSION="1",
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE="1769",
            INFERENCE_THREADS="1",
            MODEL_PATH=str(model),
            STAGE="dev",
            LOG_DIR=str(log_dir),
            RUST_LOG="info",
        )
        if request.param != "without-ignore-stage":
            env["AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH"] = "true"
        if request.param == "as-deployed":
            # As the image does: the model prepared at build, loaded through PREPARED_MODEL_PATH.
            prepared = work / "model.nnef.tar"
            subprocess.run([str(binary), "prepare-model", "--model", str(model), "--out", str(prepared)],
                           check=True, capture_output=True, timeout=300, env={**env, "RUST_LOG": "warn"},
                           )
            env["PREPARED_MODEL_PATH"] = str(prepared)
        if request.param == "onnxruntime":
            require_env("ORT_DYLIB_PATH", "ONNX Runtime's libonnxruntime.so (from the onnxruntime wheel)")
            env["ENGINE"] = "onnxruntime"
        with open(logs["function"], "wb") as out:
            function = subprocess.Popen(
                [str(binary)], env=env, cwd=work, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        started.append(function)
        yield Runtime(cargo_lambda, port, function, logs, log_dir, request.param)
    finally:
        for proc in reversed(started):
            stop(proc)


def header(response: dict, name: str) -> str | None:
    """A response header by case-insensitive name, from headers or multiValueHeaders."""
    for key, value in (response.get("headers") or {}).items():
        if key.lower() == name.lower():
            return value
    for key, values in (response.get("multiValueHeaders") or {}).items():
        if key.lower() == name.lower() and values:
            return values[0]
    return None


def json_body(response: dict, status: int) -> dict:
    """Checks the envelope of a JSON response and returns its parsed body."""
    assert response.get("statusCode") == status, json.dumps(response)[:800]
    assert response.get("isBase64Encoded", False) is False, "a JSON body must not be base64-encoded"
    content_type = header(response, "content-type") or ""
    assert content_type.startswith("application/json"), f"content-type {content_type!r}"
    body = json.loads(response["body"])
    assert isinstance(body, dict), f"the body is encoded twice: {response['body'][:200]!r}"
    return body


def check_predictions(body: dict, count: int) -> None:
    assert body["success"] is True
    predictions = body["predictions"]
    assert len(predictions) == count
    assert [p["rank"] for p in predictions] == list(range(1, count + 1))
    probabilities = [p["probability"] for p in predictions]
    assert all(0.0 <= p <= 1.0 for p in probabilities)
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) <= 1.0 + 1e-6
    assert all(isinstance(p["class_id"], int) and 0 <= p["class_id"] < 1000 for p in predictions)
    assert all(isinstance(p["label"], str) and p["label"] for p in predictions)
    assert body["model_info"]["num_classes"] == 1000
    assert body["model_info"]["input_shape"] == [1, 3, 224, 224]


def test_rest_v1_health(runtime: Runtime):
    body = json_body(runtime.invoke("rest-v1-health.json"), 200)
    assert body["status"] == "healthy"
    assert body["model_loaded"] is True
    assert body["stage"] == "dev"
    assert body["model_info"]["num_classes"] == 1000


def test_rest_v1_predict_base64_png_body(runtime: Runtime):
    check_predictions(json_body(runtime.invoke("rest-v1-predict-png.json"), 200), 5)


def test_rest_v1_predict_json_body(runtime: Runtime):
    body = json_body(runtime.invoke("rest-v1-predict-json.json"), 200)
    check_predictions(body, 3)
    assert body["filename"] == "synthetic.png"


def test_rest_v1_predict_file_multipart(runtime: Runtime):
    body = json_body(runtime.invoke("rest-v1-predict-file-multipart.json"), 200)
    check_predictions(body, 5)
    assert body["filename"] == "synthetic.png"


def test_rest_v1_invalid_image(runtime: Runtime):
    body = json_body(runtime.invoke("rest-v1-predict-invalid-image.json"), 400)
    assert body["code"] == "invalid_image"
    assert body["detail"]


def test_rest_v1_cors_preflight(runtime: Runtime):
    response = runtime.invoke("rest-v1-preflight.json")
    assert response.get("statusCode") in (200, 204), json.dumps(response)[:800]
    assert header(response, "access-control-allow-origin") in ("*", "https://app.example.com")
    assert "POST" in (header(response, "access-control-allow-methods") or "").upper()


def test_http_v2_health(runtime: Runtime):
    body = json_body(runtime.invoke("http-v2-health.json"), 200)
    assert body["model_loaded"] is True


def test_http_v2_health_with_the_stage_in_the_path(runtime: Runtime):
    body = json_body(runtime.invoke("http-v2-health-stage-in-path.json"), 200)
    assert body["model_loaded"] is True
    assert body["stage"] == "dev"


def test_predictions_are_logged_locally_without_a_bucket(runtime: Runtime):
    json_body(runtime.invoke("rest-v1-predict-json.json"), 200)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [
            line
            for f in runtime.log_dir.rglob("*") if f.is_file()
            for line in f.read_text(errors="replace").splitlines()
            if "|synthetic.png|" in line
        ]
        if lines:
            fields = lines[-1].split("|")
            assert len(fields) == 6, lines[-1]
            top = json.loads(fields[5])  # the top-k labels and their probabilities
            assert len(top["predictions"]) == 3 and len(top["confidence_scores"]) == 3, lines[-1]
            assert top["predictions"][0] == fields[2], lines[-1]
            return
        time.sleep(0.2)
    pytest.fail(f"no prediction line for synthetic.png under {runtime.log_dir}")


def test_the_model_is_loaded_as_configured(runtime: Runtime):
    runtime.invoke("rest-v1-health.json")  # the model is loaded before the first event is taken
    log = runtime.logs["function"].read_text(errors="replace")
    ready = [line for line in log.splitlines() if "model ready" in line]
    assert len(ready) == 1, log[-3000:]
    expected = {
        "as-deployed": ("model.nnef.tar", "tract 0."),
        "without-ignore-stage": (".onnx", "tract 0."),
        "onnxruntime": (".onnx", "onnxruntime 1."),
    }[runtime.variant]
    assert expected[0] in ready[0] and expected[1] in ready[0], ready[0]
