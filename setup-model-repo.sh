#!/usr/bin/env bash
# Publishes the DenseNet121 model as a container image in ECR, once per stage and model:
# the function image (Dockerfile) copies the model from it at build time.
# setup-model-repo.ps1 does the same steps on Windows; keep the two in step.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: ./setup-model-repo.sh [options] STAGE REGION

Creates (or updates) the ECR repository densenet121-model-STAGE in REGION, with scan on push
and a lifecycle policy that keeps the 5 newest model images; builds a FROM-scratch image that
holds the model at /model/densenet121_Opset17.onnx, tags it with the model's content hash and
`latest`, pushes both, and prints the digest-pinned image URI and the `sam build` command that
uses it. Running it again is safe: it converges on the same repository, policy and tags.

Arguments:
  STAGE    dev or prod
  REGION   AWS region, e.g. us-east-1

Options:
  --model PATH         the model file (default: models/densenet121_Opset17.onnx;
                       scripts/fetch-model.sh downloads it)
  --allow-any-model    skip the checksum check (for test models)
  -h, --help           show this help

Environment:
  MODEL_SHA256       the expected sha256 of the model (default: the published DenseNet121
                     opset-17 model, 9299d867...bbdd)
  AWS_PROFILE, AWS_ACCESS_KEY_ID, ...   the usual AWS CLI credentials
  AWS_ENDPOINT_URL   an alternative AWS endpoint (honoured by the AWS CLI)

Example:
  ./setup-model-repo.sh dev us-east-1
EOF
}

die() {
    echo "error: $*" >&2
    exit 1
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' is required but not installed. $2"
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
model="$root/models/densenet121_Opset17.onnx"
allow_any_model=0
positional=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --allow-any-model) allow_any_model=1 ;;
        --model)
            [ $# -ge 2 ] || die "--model needs a path (see --help)"
            model="$2"
            shift
            ;;
        --model=*) model="${1#--model=}" ;;
        -*) die "unknown option: $1 (see --help)" ;;
        *) positional+=("$1") ;;
    esac
    shift
done
[ "${#positional[@]}" -eq 2 ] || { usage >&2; exit 2; }
stage="${positional[0]}"
region="${positional[1]}"
case "$stage" in
    dev | prod) ;;
    *) die "STAGE must be dev or prod, not '$stage'" ;;
esac
[[ "$region" =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]] || die "REGION must be an AWS region such as us-east-1, not '$region'"

expected_sha256="${MODEL_SHA256:-9299d867cac3e0bf40803ac737e3fdaf3cb5976ee65c82961c211a3d8be3bbdd}"
repository="densenet121-model-$stage"
model_name="densenet121_Opset17.onnx"
keep_images=5
export AWS_PAGER=""

# Step 1: Check the prerequisites: the aws and docker commands, the Docker daemon, the model file and its checksum.
need aws "Install the AWS CLI: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html"
need docker "Install Docker: https://docs.docker.com/get-docker/"
if command -v sha256sum >/dev/null 2>&1; then
    sha256() { sha256sum "$1" | cut -d' ' -f1; }
elif command -v shasum >/dev/null 2>&1; then
    sha256() { shasum -a 256 "$1" | cut -d' ' -f1; }
else
    die "'sha256sum' (or 'shasum') is required but not installed. Install coreutils."
fi
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable: start Docker (docker info must succeed)"
[ -f "$model" ] || die "model file not found: $model (run scripts/fetch-model.sh, or pass --model PATH)"
model_sha256="$(sha256 "$model")"
if [ "$model_sha256" != "$expected_sha256" ]; then
    if [ "$allow_any_model" -eq 1 ]; then
        echo "warning: $model has sha256 $model_sha256, not the expected $expected_sha256; publishing it anyway (--allow-any-model)" >&2
    else
        die "$model has sha256 $model_sha256, expected $expected_sha256 (a different or damaged file; set MODEL_SHA256 or pass --allow-any-model for a test model)"
    fi
fi
model_tag="${model_sha256:0:16}"

# Step 2: Find the AWS account and the registry of the region.
account="$(aws sts get-caller-identity --region "$region" --query Account --output text)" \
    || die "cannot read the AWS account (aws sts get-caller-identity failed): configure credentials (aws configure, AWS_PROFILE)"
domain="amazonaws.com"
case "$region" in cn-*) domain="amazonaws.com.cn" ;; esac
registry="$account.dkr.ecr.$region.$domain"
image="$registry/$repository"
echo "Account $account, registry $registry"

# Step 3: Create the repository if it does not exist, with scan on push.
if describe_err="$(aws ecr describe-repositories --region "$region" --repository-names "$repository" 2>&1 >/dev/null)"; then
    echo "Repository $repository exists"
elif [[ "$describe_err" == *RepositoryNotFoundException* ]]; then
    aws ecr create-repository --region "$region" --repository-name "$repository" \
        --image-tag-mutability MUTABLE \
        --image-scanning-configuration scanOnPush=true >/dev/null \
        || die "cannot create the ECR repository $repository"
    echo "Repository $repository created"
else
    die "cannot look up the ECR repository $repository: $describe_err"
fi
aws ecr put-image-scanning-configuration --region "$region" --repository-name "$repository" \
    --image-scanning-configuration scanOnPush=true >/dev/null \
    || die "cannot turn on scan on push for $repository"

# Step 4: Apply the lifecycle policy that keeps the newest model images.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat >"$work/lifecycle-policy.json" <<EOF
{"rules": [{"rulePriority": 1, "description": "Keep the $keep_images newest model images", "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": $keep_images}, "action": {"type": "expire"}}]}
EOF
aws ecr put-lifecycle-policy --region "$region" --repository-name "$repository" \
    --lifecycle-policy-text "file://$work/lifecycle-policy.json" >/dev/null \
    || die "cannot set the lifecycle policy of $repository"
echo "Lifecycle policy: keep the $keep_images newest images"

# Step 5: Build the model image (FROM scratch, the model at /model/densenet121_Opset17.onnx), tagged with the model hash and latest.
mkdir "$work/context"
cp "$model" "$work/context/$model_name"
chmod 0644 "$work/context/$model_name"
cat >"$work/context/Dockerfile" <<EOF
FROM scratch
LABEL org.opencontainers.image.title="densenet121-model" \\
      org.opencontainers.image.description="DenseNet121 ONNX model for densenet-api" \\
      model.sha256="$model_sha256"
COPY $model_name /model/$model_name
EOF
docker build --platform linux/amd64 \
    --tag "$image:$model_tag" --tag "$image:latest" \
    --file "$work/context/Dockerfile" "$work/context" \
    || die "docker build of the model image failed"

# Step 6: Log Docker in to the registry.
aws ecr get-login-password --region "$region" \
    | docker login --username AWS --password-stdin "$registry" >/dev/null \
    || die "docker login to $registry failed"

# Step 7: Push both tags.
for tag in "$model_tag" latest; do
    docker push "$image:$tag" || die "docker push of $image:$tag failed"
done

# Step 8: Read the digest of the pushed image from ECR.
digest="$(aws ecr describe-images --region "$region" --repository-name "$repository" \
    --image-ids imageTag="$model_tag" --query 'imageDetails[0].imageDigest' --output text)" \
    || die "cannot read the digest of $image:$model_tag"
[[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || die "ECR returned no digest for $image:$model_tag (got '$digest')"
model_image_uri="$image@$digest"

# Step 9: Print the digest-pinned URI and the next commands.
cat <<EOF

Model image pushed: $image:$model_tag (and :latest)
ModelImageUri: $model_image_uri

Next, build and deploy the function with it:
  sam build --parameter-overrides ModelImageUri=$model_image_uri Stage=$stage
  sam deploy --guided
EOF
