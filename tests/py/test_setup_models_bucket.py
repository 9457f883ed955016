"""setup-models-bucket.sh against moto's S3, in us-east-1 and in a region that needs a location constraint."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, aws_base_env, aws_json

SCRIPT = REPO_ROOT / "setup-models-bucket.sh"


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    (d / "densenet121_Opset17.onnx").write_bytes(b"model bytes " * 500)
    (d / "densenet121_test.onnx").write_bytes(b"another model " * 50)
    (d / "README.txt").write_text("not a model: stays out of the bucket\n")
    return d


def run_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=180, cwd=REPO_ROOT)


def bucket_state(env: dict[str, str], bucket: str, region: str) -> dict:
    s3 = ("s3api", "--region", region)
    location = aws_json(env, *s3, "get-bucket-location", "--bucket", bucket).get("LocationConstraint")
    versions = aws_json(env, *s3, "list-object-versions", "--bucket", bucket).get("Versions", [])
    objects = {}
    for v in versions:
        head = aws_json(env, *s3, "head-object", "--bucket", bucket, "--key", v["Key"], "--version-id", v["VersionId"])
        objects.setdefault(v["Key"], []).append(head.get("Metadata", {}).get("sha256"))
    return {
        "buckets": sorted(b["Name"] for b in aws_json(env, *s3, "list-buckets")["Buckets"]),
        "location": location or "us-east-1",
        "versioning": aws_json(env, *s3, "get-bucket-versioning", "--bucket", bucket).get("Status"),
        "public_access_block": aws_json(env, *s3, "get-public-access-block", "--bucket", bucket)[
            "PublicAccessBlockConfiguration"
        ],
        "encryption": aws_json(env, *s3, "get-bucket-encryption", "--bucket", bucket)[
            "ServerSideEncryptionConfiguration"
        ]["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"],
        "lifecycle": aws_json(env, *s3, "get-bucket-lifecycle-configuration", "--bucket", bucket)["Rules"],
        "objects": objects,
    }


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_creates_a_private_versioned_bucket_and_uploads_the_models(moto_endpoint, models_dir: Path, region: str):
    env = aws_base_env(moto_endpoint, region="us-east-1")  # the CLI's default region is not the target
    bucket = "densenet-models-dev"
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in models_dir.glob("*.onnx")}

    states = []
    for _ in range(2):
        result = run_script(env, "--models-dir", str(models_dir), "dev", region)
        assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        states.append(bucket_state(env, bucket, region))

    first, second = states
    assert first == second, "a second run changed the bucket (or added object versions)"
    assert first["buckets"] == [bucket]
    assert first["location"] == region
    assert first["versioning"] == "Enabled"
    assert first["public_access_block"] == {
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True,
    }
    assert first["encryption"] == "AES256"
    (rule,) = first["lifecycle"]
    assert rule["Status"] == "Enabled"
    assert rule["Filter"] == {"Prefix": "models/"}
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    # One version per model, holding the model's checksum; nothing outside models/, no README.
    assert first["objects"] == {f"models/{name}": [digest] for name, digest in sums.items()}


def test_a_changed_model_becomes_a_new_version(moto_endpoint, models_dir: Path):
    env = aws_base_env(moto_endpoint)
    assert run_script(env, "--models-dir", str(models_dir), "dev", "us-east-1").returncode == 0
    model = models_dir / "densenet121_test.onnx"
    model.write_bytes(b"retrained " * 70)

    result = run_script(env, "--models-dir", str(models_dir), "dev", "us-east-1")

    assert result.returncode == 0, result.stderr
    objects = bucket_state(env, "densenet-models-dev", "us-east-1")["objects"]
    assert sorted(objects["models/densenet121_test.onnx"]) == sorted(
        [hashlib.sha256(b"another model " * 50).hexdigest(), hashlib.sha256(model.read_bytes()).hexdigest()]
    )
    assert len(objects["models/densenet121_Opset17.onnx"]) == 1


def test_bucket_override_and_wrong_region(moto_endpoint, models_dir: Path):
    env = aws_base_env(moto_endpoint)
    made = run_script(env, "--bucket", "my-models-123", "--models-dir", str(models_dir), "prod", "eu-west-1")
    assert made.returncode == 0, made.stderr
    assert bucket_state(env, "my-models-123", "eu-west-1")["location"] == "eu-west-1"

    elsewhere = run_script(env, "--bucket", "my-models-123", "--models-dir", str(models_dir), "prod", "us-east-1")
    assert elsewhere.returncode != 0
    assert "is in eu-west-1, not us-east-1" in elsewhere.stderr, elsewhere.stderr


def test_no_models_fails_clearly(moto_endpoint, tmp_path: Path):
    env = aws_base_env(moto_endpoint)
    empty = tmp_path / "empty"
    empty.mkdir()

    result = run_script(env, "--models-dir", str(empty), "dev", "us-east-1")

    assert result.returncode != 0
    assert "no .onnx files" in result.stderr and "scripts/fetch-model.sh" in result.stderr, result.stderr
    assert aws_json(env, "s3api", "list-buckets")["Buckets"] == []


def test_help():
    result = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "Usage: ./setup-models-bucket.sh" in result.stdout and "--bucket NAME" in result.stdout
