"""Shared helpers for the deployment tests: the servers and tools scripts/test.sh provides."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def require_env(name: str, what: str) -> str:
    """The value of an environment variable the test cannot run without; fails loudly if unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.fail(
            f"{name} is not set: it must name {what}. Run the tests through scripts/test.sh, "
            f"which provides it.",
            pytrace=False,
        )
    return value


def require_tool(name: str) -> str:
    """The path of a command-line tool on PATH; fails with an install hint if it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not on PATH: run scripts/setup-tools.sh and put .tools/venv/bin on PATH "
            f"(scripts/test.sh does both).",
            pytrace=False,
        )
    return path


def aws_base_env(endpoint: str, region: str = "us-east-1") -> dict[str, str]:
    """The environment for the AWS CLI (and boto3) talking to a local endpoint with fake keys."""
    env = dict(os.environ)
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION=region,
        AWS_REGION=region,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_PAGER="",
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        env.pop(name, None)
    return env


def aws_json(env: dict[str, str], *args: str) -> dict:
    """Runs `aws ARGS --output json` and returns the parsed answer (an empty dict for no output)."""
    result = subprocess.run(
        ["aws", *args, "--output", "json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"aws {' '.join(args)} failed:\n{result.stderr}"
    return json.loads(result.stdout) if result.stdout.strip() else {}


@pytest.fixture
def moto_endpoint() -> str:
    """The moto server (S3 + ECR) of scripts/test.sh, reset to an empty state."""
    url = require_env("MOTO_ENDPOINT_URL", "a running moto_server (S3 and ECR) on loopback").rstrip("/")
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200, f"resetting moto at {url} answered {response.status}"
    require_tool("aws")
    return url


# A stand-in for the docker client: moto has ECR's API but no registry, so `docker push` is
# imitated with ECR's layer-upload API (what a registry push amounts to) and PutImage. Each call's
# arguments go to calls.jsonl; `build` writes the image (a tar layer of the COPY'd files and a
# config) to the state directory, `push` uploads it.
DOCKER_STUB = textwrap.dedent(
    '''\
    #!{python}
    """Stand-in for the docker client (see tests/py/conftest.py)."""
    import hashlib, io, json, os, re, shlex, sys, tarfile
    from pathlib import Path

    state = Path(os.environ["DOCKER_STUB_STATE"])
    args = sys.argv[1:]
    record = {{"argv": args}}

    def done(code=0, **extra):
        record.update(extra)
        with open(state / "calls.jsonl", "a") as f:
            f.write(json.dumps(record) + "\\n")
        sys.exit(code)

    def image_dir(ref):
        return state / "images" / hashlib.sha256(ref.encode()).hexdigest()[:20]

    command = args[0] if args else ""
    if command == "info":
        done(0)
    if command == "login":
        password = sys.stdin.read().strip()
        if not password:
            print("Error: no password on stdin", file=sys.stderr)
            done(1)
        print("Login Succeeded")
        done(0, password_given=True)
    if command == "build":
        tags, platform, dockerfile, rest = [], None, None, args[1:]
        i = 0
        while i < len(rest):
            a = rest[i]
            if a in ("-t", "--tag"):
                tags.append(rest[i + 1]); i += 2; continue
            if a in ("-f", "--file"):
                dockerfile = rest[i + 1]; i += 2; continue
            if a == "--platform":
                platform = rest[i + 1]; i += 2; continue
            i += 1
        context = Path(rest[-1])
        dockerfile = Path(dockerfile) if dockerfile else context / "Dockerfile"
        text = dockerfile.read_text()
        files = {{}}
        layer = io.BytesIO()
        with tarfile.open(fileobj=layer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for line in text.splitlines():
                words = shlex.split(line) if line.strip().upper().startswith("COPY ") else []
                if not words:
                    continue
                src, dest = context / words[1], words[2]
                data = src.read_bytes()
                files[dest] = {{"sha256": hashlib.sha256(data).hexdigest(),
                               "mode": oct(src.stat().st_mode & 0o777)}}
                info = tarfile.TarInfo(dest.lstrip("/"))
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
        layer_bytes = layer.getvalue()
        config = json.dumps({{"architecture": "amd64", "os": "linux",
                              "rootfs": {{"type": "layers",
                                         "diff_ids": ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]}}}},
                            sort_keys=True).encode()
        for tag in tags:
            d = image_dir(tag)
            d.mkdir(parents=True, exist_ok=True)
            (d / "layer.tar").write_bytes(layer_bytes)
            (d / "config.json").write_bytes(config)
        done(0, dockerfile=text, files=files, tags=tags, platform=platform)
    if command == "push":
        ref = args[1]
        d = image_dir(ref)
        if not d.is_dir():
            print(f"An image does not exist locally with the tag: {{ref}}", file=sys.stderr)
            done(1)
        m = re.fullmatch(r"(\\d{{12}})\\.dkr\\.ecr\\.([a-z0-9-]+)\\.amazonaws\\.com/([^:@]+):([\\w.-]+)", ref)
        if not m:
            print(f"stub docker: not an ECR image reference: {{ref}}", file=sys.stderr)
            done(1)
        registry_id, region, repository, tag = m.groups()
        import boto3
        ecr = boto3.client("ecr", region_name=region)
        blobs = []
        for name in ("config.json", "layer.tar"):
            blob = (d / name).read_bytes()
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            blobs.append((digest, len(blob)))
            found = ecr.batch_check_layer_availability(repositoryName=repository, layerDigests=[digest])
            if found["layers"] and found["layers"][0].get("layerAvailability") == "AVAILABLE":
                continue
            upload = ecr.initiate_layer_upload(repositoryName=repository)["uploadId"]
            ecr.upload_layer_part(repositoryName=repository, uploadId=upload, partFirstByte=0,
                                  partLastByte=len(blob) - 1, layerPartBlob=blob)
            ecr.complete_layer_upload(repositoryName=repository, uploadId=upload, layerDigests=[digest])
        (config_digest, config_size), (layer_digest, layer_size) = blobs
        manifest = json.dumps({{
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {{"mediaType": "application/vnd.docker.container.image.v1+json",
                       "size": config_size, "digest": config_digest}},
            "layers": [{{"mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                        "size": layer_size, "digest": layer_digest}}],
        }}, sort_keys=True)
        try:
            ecr.put_image(repositoryName=repository, imageTag=tag, imageManifest=manifest)
        except ecr.exceptions.ImageAlreadyExistsException:
            pass  # an unchanged image: docker push succeeds as well
        print(f"{{tag}}: pushed")
        done(0, layer_digest=layer_digest)
    print(f"stub docker: unsupported command {{args}}", file=sys.stderr)
    done(1)
    '''
)


class DockerStub:
    """A `docker` stand-in in its own bin directory, with the calls it recorded."""

    def __init__(self, root: Path):
        self.bin = root / "bin"
        self.state = root / "state"
        self.bin.mkdir(parents=True)
        self.state.mkdir(parents=True)
        script = self.bin / "docker"
        script.write_text(DOCKER_STUB.format(python=sys.executable))
        script.chmod(0o755)

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """`base` with the stub first on PATH."""
        env = dict(base)
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["DOCKER_STUB_STATE"] = str(self.state)
        return env

    def calls(self) -> list[dict]:
        """Every recorded call, oldest first."""
        log = self.state / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def clear(self) -> None:
        (self.state / "calls.jsonl").unlink(missing_ok=True)


@pytest.fixture
def docker_stub(tmp_path: Path) -> DockerStub:
    return DockerStub(tmp_path / "docker-stub")


def path_without(command: str, path: str, scratch: Path) -> str:
    """PATH with `command` hidden: each directory holding it is replaced by a shadow directory of
    links to everything else in it (docker may sit in /usr/bin beside bash and coreutils)."""
    dirs = []
    for i, d in enumerate(p for p in path.split(os.pathsep) if p):
        if not (Path(d) / command).exists():
            dirs.append(d)
            continue
        shadow = scratch / f"shadow-{i}"
        shadow.mkdir(parents=True, exist_ok=True)
        for entry in os.listdir(d):
            if entry != command and not (shadow / entry).exists():
                (shadow / entry).symlink_to(Path(d) / entry)
        dirs.append(str(shadow))
    hidden = os.pathsep.join(dirs)
    assert shutil.which(command, path=hidden) is None
    return hidden
