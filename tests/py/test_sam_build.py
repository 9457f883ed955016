"""`sam build` hands ModelImageUri to the Dockerfile as MODEL_IMAGE, with a lean build context.

No Docker engine is needed: the SAM CLI talks to the Docker Engine API, so a small stand-in on a
unix socket (DOCKER_HOST) records the /build request (query and context tar) and answers success.
"""

from __future__ import annotations

import io
import json
import os
import socketserver
import subprocess
import tarfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from conftest import REPO_ROOT, require_tool

MODEL_URI = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/densenet121-model-prod@sha256:" + "ab" * 32
IMAGE_ID = "sha256:" + "c" * 64


class EngineStub(BaseHTTPRequestHandler):
    """Answers the handful of Docker Engine API calls `sam build` makes for an image function."""

    protocol_version = "HTTP/1.1"
    builds: list[dict] = []

    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass

    def address_string(self) -> str:
        return "unix"

    def _send(self, status: int, body: bytes | dict, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Api-Version", "1.44")
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_HEAD(self) -> None:
        self._send(200, b"", "text/plain")

    def do_GET(self) -> None:
        path = urllib.parse.urlparse(self.path).path
        if path.endswith("/_ping"):
            return self._send(200, b"OK", "text/plain")
        if path.endswith("/version"):
            return self._send(200, {"ApiVersion": "1.44", "Version": "28.2.2", "Os": "linux", "Arch": "amd64"})
        if path.endswith("/info"):
            return self._send(200, {"OSType": "linux", "Architecture": "x86_64"})
        if "/images/" in path and path.endswith("/json"):
            return self._send(200, {"Id": IMAGE_ID, "RepoTags": []})
        return self._send(404, {"message": f"not found: {path}"})

    def do_POST(self) -> None:
        url = urllib.parse.urlparse(self.path)
        body = self._body()
        if url.path.endswith("/build"):
            query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                names = tar.getnames()
            EngineStub.builds.append({"query": query, "context": names})
            lines = [{"stream": "Step 1/1 : stand-in build\n"}, {"aux": {"ID": IMAGE_ID}},
                     {"stream": f"Successfully built {IMAGE_ID[7:19]}\n"}]
            return self._send(200, b"".join(json.dumps(x).encode() + b"\r\n" for x in lines))
        return self._send(200, {})


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def docker_engine(tmp_path: Path):
    sock = tmp_path / "docker.sock"
    EngineStub.builds = []
    server = UnixServer(str(sock), EngineStub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"unix://{sock}"
    server.shutdown()
    server.server_close()


def sam_build(docker_host: str, build_dir: Path, *overrides: str, config_env: str | None = None
              ) -> subprocess.CompletedProcess:
    sam = require_tool("sam")
    env = dict(os.environ, DOCKER_HOST=docker_host, SAM_CLI_TELEMETRY="0")
    # Build and cache directories in the test's tmp dir keep .aws-sam out of the checkout.
    args = [sam, "build", "--no-cached", "--build-dir", str(build_dir), "--cache-dir", str(build_dir.parent / "sam-cache")]
    if config_env:
        args += ["--config-env", config_env]
    if overrides:
        args += ["--parameter-overrides", *overrides]
    return subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_model_image_uri_becomes_the_model_image_build_argument(docker_engine, tmp_path: Path):
    result = sam_build(docker_engine, tmp_path / "build", f"ModelImageUri={MODEL_URI}", "Stage=prod")

    assert result.returncode == 0, result.stdout + result.stderr
    (build,) = EngineStub.builds
    query = build["query"]
    assert json.loads(query["buildargs"]) == {"MODEL_IMAGE": MODEL_URI}
    assert query["dockerfile"] == "Dockerfile"
    assert query["platform"] == "linux/amd64"
    assert query["t"] == "densenetfunction:prod"
    built = (tmp_path / "build" / "template.yaml").read_text()
    assert "ImageUri: densenetfunction:prod" in built


def test_without_an_override_the_model_comes_from_the_checkout(docker_engine, tmp_path: Path):
    result = sam_build(docker_engine, tmp_path / "build")

    assert result.returncode == 0, result.stdout + result.stderr
    (build,) = EngineStub.builds
    assert json.loads(build["query"]["buildargs"]) == {"MODEL_IMAGE": "local-model"}
    assert build["query"]["t"] == "densenetfunction:dev"


def test_the_prod_config_environment_builds_the_prod_stage(docker_engine, tmp_path: Path):
    result = sam_build(docker_engine, tmp_path / "build", config_env="prod")

    assert result.returncode == 0, result.stdout + result.stderr
    (build,) = EngineStub.builds
    assert build["query"]["t"] == "densenetfunction:prod"


def test_build_context_holds_the_sources_and_not_the_build_output(docker_engine, tmp_path: Path):
    assert sam_build(docker_engine, tmp_path / "build").returncode == 0
    (build,) = EngineStub.builds
    names = set(build["context"])
    for needed in ["Dockerfile", "Cargo.toml", "Cargo.lock", "src/main.rs"]:
        assert needed in names, f"{needed} is missing from the build context"
    for name in names:
        top = name.split("/", 1)[0]
        assert top not in {"target", ".git", ".tools", "data", "docs", ".github", ".aws-sam"}, name
        assert not name.startswith(("tests/py", "tests/fixtures")), name
        if name.startswith("models/"):
            assert name in {"models/", "models/densenet121_Opset17.onnx"}, name
