"""setup-model-repo.sh against moto's ECR, with a recording stand-in for the docker client."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, DockerStub, aws_base_env, aws_json, path_without

SCRIPT = REPO_ROOT / "setup-model-repo.sh"
ACCOUNT = "123456789012"  # moto's account
REGISTRY = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"
REPOSITORY = "densenet121-model-dev"
IMAGE = f"{REGISTRY}/{REPOSITORY}"
MODEL_IN_IMAGE = "/model/densenet121_Opset17.onnx"


@pytest.fixture
def fake_model(tmp_path: Path) -> tuple[Path, str]:
    model = tmp_path / "model" / "densenet121_Opset17.onnx"
    model.parent.mkdir()
    model.write_bytes(b"not a real ONNX model, only bytes with a known hash\n" * 100)
    return model, hashlib.sha256(model.read_bytes()).hexdigest()


def run_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=180, cwd=REPO_ROOT
    )


def ecr_state(env: dict[str, str]) -> dict:
    """What the script leaves in ECR: repositories, scan setting, lifecycle policy, images."""
    repos = aws_json(env, "ecr", "describe-repositories")["repositories"]
    policy = aws_json(env, "ecr", "get-lifecycle-policy", "--repository-name", REPOSITORY)
    images = aws_json(env, "ecr", "describe-images", "--repository-name", REPOSITORY)["imageDetails"]
    return {
        "repositories": sorted(r["repositoryName"] for r in repos),
        "scan_on_push": {r["repositoryName"]: r["imageScanningConfiguration"]["scanOnPush"] for r in repos},
        "policy": json.loads(policy["lifecyclePolicyText"]),
        "images": sorted((i["imageDigest"], tuple(sorted(i.get("imageTags", [])))) for i in images),
    }


def test_publishes_the_model_image_and_is_idempotent(moto_endpoint, docker_stub: DockerStub, fake_model):
    model, model_sha = fake_model
    env = docker_stub.env(aws_base_env(moto_endpoint))
    env["MODEL_SHA256"] = model_sha
    tag = model_sha[:16]

    outputs, states, calls = [], [], []
    for _ in range(2):
        docker_stub.clear()
        result = run_script(env, "--model", str(model), "dev", "us-east-1")
        assert result.returncode == 0, f"run failed:\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        outputs.append(result.stdout)
        states.append(ecr_state(env))
        calls.append(docker_stub.calls())

    for run in calls:
        commands = [c["argv"][0] for c in run]
        assert commands == ["info", "build", "login", "push", "push"], commands

        build = run[1]
        assert sorted(build["tags"]) == sorted([f"{IMAGE}:{tag}", f"{IMAGE}:latest"])
        assert build["platform"] == "linux/amd64"
        assert re.search(r"^FROM scratch$", build["dockerfile"], re.M), build["dockerfile"]
        # The image holds exactly the model, byte for byte, world-readable, where the
        # function's Dockerfile copies it from.
        assert build["files"] == {MODEL_IN_IMAGE: {"sha256": model_sha, "mode": "0o644"}}

        login = run[2]
        assert login["argv"] == ["login", "--username", "AWS", "--password-stdin", REGISTRY]
        assert login["password_given"] is True

        assert [c["argv"] for c in run[3:]] == [["push", f"{IMAGE}:{tag}"], ["push", f"{IMAGE}:latest"]]

    first, second = states
    assert first == second, "a second run changed the ECR state"
    assert first["repositories"] == [REPOSITORY]
    assert first["scan_on_push"] == {REPOSITORY: True}
    (rule,) = first["policy"]["rules"]
    assert rule["selection"] == {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 5}
    assert rule["action"] == {"type": "expire"}
    (image,) = first["images"]
    digest, tags = image
    assert tags == tuple(sorted([tag, "latest"]))

    uri = f"{IMAGE}@{digest}"
    for out in outputs:
        printed = re.findall(r"^ModelImageUri: (\S+)$", out, re.M)
        assert printed == [uri], out
        assert re.fullmatch(rf"{re.escape(IMAGE)}@sha256:[0-9a-f]{{64}}", printed[0])
        assert f"sam build --parameter-overrides ModelImageUri={uri} Stage=dev" in out
        assert "sam deploy --guided" in out


def test_a_repository_made_by_hand_is_brought_in_line(moto_endpoint, docker_stub: DockerStub, fake_model):
    model, model_sha = fake_model
    env = docker_stub.env(aws_base_env(moto_endpoint))
    env["MODEL_SHA256"] = model_sha
    aws_json(env, "ecr", "create-repository", "--repository-name", REPOSITORY)

    result = run_script(env, "--model", str(model), "dev", "us-east-1")

    assert result.returncode == 0, result.stderr
    state = ecr_state(env)
    assert state["repositories"] == [REPOSITORY]
    assert state["scan_on_push"] == {REPOSITORY: True}
    assert state["policy"]["rules"][0]["selection"]["countNumber"] == 5


def test_missing_model_file_fails_clearly(moto_endpoint, docker_stub: DockerStub, tmp_path: Path):
    env = docker_stub.env(aws_base_env(moto_endpoint))
    missing = tmp_path / "nowhere" / "densenet121_Opset17.onnx"

    result = run_script(env, "--model", str(missing), "dev", "us-east-1")

    assert result.returncode != 0
    assert "model file not found" in result.stderr and str(missing) in result.stderr, result.stderr
    assert "scripts/fetch-model.sh" in result.stderr
    assert [c["argv"][0] for c in docker_stub.calls()] == ["info"], "nothing may be built or pushed"
    assert aws_json(env, "ecr", "describe-repositories")["repositories"] == []


def test_missing_docker_fails_clearly(moto_endpoint, fake_model, tmp_path: Path):
    model, model_sha = fake_model
    env = aws_base_env(moto_endpoint)
    env["MODEL_SHA256"] = model_sha
    env["PATH"] = path_without("docker", env["PATH"], tmp_path / "path")

    result = run_script(env, "--model", str(model), "dev", "us-east-1")

    assert result.returncode != 0
    assert "'docker' is required but not installed" in result.stderr, result.stderr
    assert aws_json(env, "ecr", "describe-repositories")["repositories"] == []


def test_wrong_checksum_fails_unless_allowed(moto_endpoint, docker_stub: DockerStub, fake_model):
    model, model_sha = fake_model
    env = docker_stub.env(aws_base_env(moto_endpoint))
    env.pop("MODEL_SHA256", None)  # the published model's checksum is expected

    refused = run_script(env, "--model", str(model), "dev", "us-east-1")
    assert refused.returncode != 0
    assert model_sha in refused.stderr and "9299d867cac3e0bf" in refused.stderr, refused.stderr
    assert "--allow-any-model" in refused.stderr

    allowed = run_script(env, "--allow-any-model", "--model", str(model), "dev", "us-east-1")
    assert allowed.returncode == 0, allowed.stderr
    assert "warning:" in allowed.stderr
    assert re.search(r"^ModelImageUri: \S+@sha256:[0-9a-f]{64}$", allowed.stdout, re.M)


def test_help_and_bad_arguments():
    helped = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0
    assert "Usage: ./setup-model-repo.sh" in helped.stdout and "STAGE" in helped.stdout

    bad_stage = subprocess.run([str(SCRIPT), "qa", "us-east-1"], capture_output=True, text=True, timeout=30)
    assert bad_stage.returncode != 0 and "STAGE must be dev or prod" in bad_stage.stderr

    missing = subprocess.run([str(SCRIPT), "dev"], capture_output=True, text=True, timeout=30)
    assert missing.returncode != 0 and "Usage:" in missing.stderr
