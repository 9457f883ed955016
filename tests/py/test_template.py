"""template.yaml and samconfig.toml: cfn-lint, then the properties the deployment relies on."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import tomllib

import pytest
import yaml

from conftest import REPO_ROOT, require_tool

TEMPLATE = REPO_ROOT / "template.yaml"
FUNCTION = "DenseNetFunction"
API = "RestApi"
BUCKET = "LogsBucket"

ROUTES = {
    ("/", "GET"), ("/health", "GET"), ("/model-info", "GET"), ("/openapi.json", "GET"),
    ("/predict", "POST"), ("/predict-file", "POST"),
    ("/logs/predictions", "GET"), ("/logs/predictions/download", "GET"),
    ("/logs/predictions/stats", "GET"), ("/logs/predictions", "DELETE"),
}
PATHS = {path for path, _ in ROUTES}


class CfnLoader(yaml.SafeLoader):
    """YAML loader that turns CloudFormation short-form tags into their long form."""


def _construct_tag(loader: CfnLoader, suffix: str, node: yaml.Node):
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _construct_tag)


@pytest.fixture(scope="module")
def template() -> dict:
    return yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)


@pytest.fixture(scope="module")
def function(template) -> dict:
    return template["Resources"][FUNCTION]


def api_events(function: dict) -> dict[str, dict]:
    return {name: e["Properties"] for name, e in function["Properties"]["Events"].items() if e["Type"] == "Api"}


def test_cfn_lint_passes_with_the_sam_transform():
    require_tool("cfn-lint")
    try:
        import samtranslator  # noqa: F401  (cfn-lint checks SAM resources only when it is installed)
    except ImportError:
        pytest.fail(
            "aws-sam-translator is not installed: without it cfn-lint skips the SAM transform; "
            "add it to scripts/requirements-test.txt",
            pytrace=False,
        )
    result = subprocess.run(["cfn-lint", str(TEMPLATE)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_parameters(template):
    params = template["Parameters"]
    assert params["Stage"]["AllowedValues"] == ["dev", "prod"]
    assert params["ModelImageUri"]["Type"] == "String"


def test_model_image_uri_reaches_the_docker_build(function, template):
    metadata = function["Metadata"]
    assert metadata["Dockerfile"] == "Dockerfile"
    assert metadata["DockerContext"] == "."
    assert metadata["DockerBuildArgs"] == {"MODEL_IMAGE": {"Ref": "ModelImageUri"}}
    assert "ARG MODEL_IMAGE" in (REPO_ROOT / "Dockerfile").read_text()
    # The parameter's pattern takes both forms setup-model-repo.sh and the Dockerfile use.
    pattern = template["Parameters"]["ModelImageUri"]["AllowedPattern"]
    assert re.fullmatch(pattern, "local-model")
    assert re.fullmatch(pattern, "123456789012.dkr.ecr.eu-west-1.amazonaws.com/densenet121-model-dev@sha256:" + "0" * 64)
    assert not re.fullmatch(pattern, "densenet121-model-dev:latest")


def test_function_properties(function):
    props = function["Properties"]
    assert props["PackageType"] == "Image"
    assert props["Architectures"] == ["x86_64"]
    assert props["MemorySize"] == 1769
    assert props["Timeout"] == 30
    assert props["LoggingConfig"]["LogFormat"] == "JSON"
    env = props["Environment"]["Variables"]
    assert env["STAGE"] == {"Ref": "Stage"}
    assert env["LOGS_BUCKET"] == {"Ref": BUCKET}
    assert env["MODEL_PATH"] == "/opt/model/densenet121_Opset17.onnx"
    assert env["AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH"] == "true"
    assert env["RUST_LOG"] == "info"
    assert env["ENGINE"] == {"Ref": "InferenceEngine"}
    assert env["INFERENCE_THREADS"] == "1"
    assert "ENV MODEL_PATH=/opt/model/densenet121_Opset17.onnx" in (REPO_ROOT / "Dockerfile").read_text()


def test_every_route_has_an_event_and_a_preflight(function):
    events = api_events(function)
    routes = {(e["Path"], e["Method"].upper()) for e in events.values()}
    assert routes - {(p, "OPTIONS") for p in PATHS} == ROUTES
    assert {(p, "OPTIONS") for p in PATHS} <= routes
    assert all(e["RestApiId"] == {"Ref": API} for e in events.values())


def test_api_key_guards_exactly_the_log_routes(function, template):
    api_auth = template["Resources"][API]["Properties"].get("Auth", {})
    assert api_auth.get("ApiKeyRequired", False) is False, "the key must not be required API-wide"
    for name, event in api_events(function).items():
        required = event.get("Auth", {}).get("ApiKeyRequired", False)
        is_log_route = event["Path"].startswith("/logs/")
        should = is_log_route and event["Method"].upper() != "OPTIONS"
        assert required is should, f"{name} {event['Method']} {event['Path']}: ApiKeyRequired={required}"
    assert api_auth["UsagePlan"]["CreateUsagePlan"] in ("PER_API", "SHARED")


def test_binary_media_types(template):
    types = template["Resources"][API]["Properties"]["BinaryMediaTypes"]
    assert {"image~1*", "multipart~1form-data", "application~1octet-stream"} <= set(types)


def test_api_stage_is_the_stage_parameter(template):
    assert template["Resources"][API]["Properties"]["StageName"] == {"Ref": "Stage"}


def _mentions_logs_bucket(resource) -> bool:
    text = json.dumps(resource)
    return '"Fn::GetAtt": ["LogsBucket", "Arn"]' in text or "${LogsBucket.Arn}" in text


def test_function_may_only_touch_the_log_objects(function):
    policies = function["Properties"]["Policies"]
    assert all(isinstance(p, dict) and "Statement" in p for p in policies), "no managed or SAM template policies"
    statements = [s for p in policies for s in p["Statement"]]
    assert statements
    allowed = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"}
    granted = set()
    for s in statements:
        assert s["Effect"] == "Allow"
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        assert set(actions) <= allowed, actions
        granted |= set(actions)
        for r in resources:
            assert r != "*" and "*" != str(r).strip(), "wildcard resource"
            assert _mentions_logs_bucket(r), f"resource outside the logs bucket: {r}"
        if set(actions) & {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}:
            assert resources == [{"Fn::Sub": "${LogsBucket.Arn}/logs*"}], resources
        if "s3:ListBucket" in actions:
            assert resources == [{"Fn::GetAtt": [BUCKET, "Arn"]}], resources
    assert granted == allowed


def test_logs_bucket_is_private_encrypted_and_tls_only(template):
    bucket = template["Resources"][BUCKET]
    assert bucket["Type"] == "AWS::S3::Bucket"
    props = bucket["Properties"]
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"
    }
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True,
    }
    assert props["LifecycleConfiguration"]["Rules"]
    policies = [r for r in template["Resources"].values() if r["Type"] == "AWS::S3::BucketPolicy"]
    (policy,) = policies
    assert policy["Properties"]["Bucket"] == {"Ref": BUCKET}
    (deny,) = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Principal"] == "*"


def test_outputs(template):
    outputs = template["Outputs"]
    url = outputs["ApiUrl"]["Value"]["Fn::Sub"]
    assert url == "https://${RestApi}.execute-api.${AWS::Region}.amazonaws.com/${Stage}/"
    assert outputs["ApiKeyId"]["Value"] == {"Ref": f"{API}ApiKey"}
    assert outputs["LogsBucketName"]["Value"] == {"Ref": BUCKET}


def test_translated_api_requires_the_key_only_on_log_methods(template, monkeypatch):
    """What API Gateway receives after the SAM transform: the generated OpenAPI document."""
    try:
        from samtranslator.translator.transform import transform
    except ImportError:
        pytest.fail("aws-sam-translator is not installed: add it to scripts/requirements-test.txt", pytrace=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")

    class Policies:
        def load(self):
            return {"AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}

    sam = copy.deepcopy(template)
    # `sam build` fills in ImageUri; any image reference does for the transform.
    sam["Resources"][FUNCTION]["Properties"]["ImageUri"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/fn:dev"
    cfn = transform(sam, {}, Policies())
    resources = cfn["Resources"]
    body = resources[API]["Properties"]["Body"]
    assert body["x-amazon-apigateway-binary-media-types"] == ["image/*", "multipart/form-data", "application/octet-stream"]
    seen = set()
    for path, methods in body["paths"].items():
        for method, op in methods.items():
            seen.add((path, method.upper()))
            keyed = {"api_key": []} in op.get("security", [])
            assert keyed is (path.startswith("/logs/") and method != "options"), f"{method} {path}"
            assert op["x-amazon-apigateway-integration"]["type"] == "aws_proxy"
    assert seen == ROUTES | {(p, "OPTIONS") for p in PATHS}
    types = {r["Type"] for r in resources.values()}
    assert {"AWS::ApiGateway::UsagePlan", "AWS::ApiGateway::ApiKey", "AWS::ApiGateway::UsagePlanKey"} <= types
    role_policies = resources[f"{FUNCTION}Role"]["Properties"]["Policies"]
    for policy in role_policies:
        for statement in policy["PolicyDocument"]["Statement"]:
            assert _mentions_logs_bucket(statement["Resource"]), statement


def test_samconfig_builds_then_deploys_without_editing_the_template():
    config = tomllib.loads((REPO_ROOT / "samconfig.toml").read_text())
    assert config["version"] == 0.1
    default = config["default"]
    assert default["global"]["parameters"]["stack_name"] == "densenet121-api-dev"
    deploy = default["deploy"]["parameters"]
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert deploy["resolve_image_repos"] is True and deploy["resolve_s3"] is True
    assert "build" in default
    text = (REPO_ROOT / "samconfig.toml").read_text()
    # Where ModelImageUri comes from is written down for whoever runs `sam build`.
    assert "setup-model-repo.sh" in text and "model-repo resolve" in text
    assert "sam build --parameter-overrides ModelImageUri=" in text
