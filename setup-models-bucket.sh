#!/usr/bin/env bash
# Keeps the ONNX models in a versioned, private S3 bucket (densenet-models-STAGE, models/ prefix):
# a copy of record beside the ECR model image, from which any machine can fetch them.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: ./setup-models-bucket.sh [options] STAGE REGION

Creates (or updates) the S3 bucket densenet-models-STAGE in REGION: versioning on, default
encryption (SSE-S3), all public access blocked, a lifecycle rule that deletes replaced model
versions after 30 days; then uploads ./models/*.onnx to s3://BUCKET/models/. A model whose
sha256 matches the stored copy is not uploaded again, so running it twice is safe and adds no
versions.

Arguments:
  STAGE    dev or prod
  REGION   AWS region, e.g. us-east-1 or eu-west-1

Options:
  --bucket NAME       bucket name (default: densenet-models-STAGE; bucket names are global,
                      so pick another if that one belongs to someone else)
  --models-dir DIR    where the .onnx files are (default: ./models)
  -h, --help          show this help

Environment:
  AWS_PROFILE, AWS_ACCESS_KEY_ID, ...   the usual AWS CLI credentials
  AWS_ENDPOINT_URL   an alternative AWS endpoint (honoured by the AWS CLI)

Example:
  ./setup-models-bucket.sh dev eu-west-1
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
models_dir="$root/models"
bucket=""
positional=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --bucket)
            [ $# -ge 2 ] || die "--bucket needs a name (see --help)"
            bucket="$2"
            shift
            ;;
        --bucket=*) bucket="${1#--bucket=}" ;;
        --models-dir)
            [ $# -ge 2 ] || die "--models-dir needs a directory (see --help)"
            models_dir="$2"
            shift
            ;;
        --models-dir=*) models_dir="${1#--models-dir=}" ;;
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
bucket="${bucket:-densenet-models-$stage}"
[[ "$bucket" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || die "'$bucket' is not a valid S3 bucket name"
export AWS_PAGER=""

# Step 1: Check the prerequisites: the aws command, a checksum tool and the models to upload.
need aws "Install the AWS CLI: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html"
if command -v sha256sum >/dev/null 2>&1; then
    sha256() { sha256sum "$1" | cut -d' ' -f1; }
elif command -v shasum >/dev/null 2>&1; then
    sha256() { shasum -a 256 "$1" | cut -d' ' -f1; }
else
    die "'sha256sum' (or 'shasum') is required but not installed. Install coreutils."
fi
[ -d "$models_dir" ] || die "models directory not found: $models_dir (run scripts/fetch-model.sh, or pass --models-dir DIR)"
shopt -s nullglob
models=("$models_dir"/*.onnx)
shopt -u nullglob
[ "${#models[@]}" -gt 0 ] || die "no .onnx files in $models_dir (run scripts/fetch-model.sh)"

# Step 2: Create the bucket in the region if it does not exist. Outside us-east-1, S3 needs the
# region as the bucket's location constraint.
if head_err="$(aws s3api head-bucket --region "$region" --bucket "$bucket" 2>&1 >/dev/null)"; then
    echo "Bucket $bucket exists"
elif [[ "$head_err" == *"Not Found"* || "$head_err" == *NoSuchBucket* || "$head_err" == *"(404)"* ]]; then
    if [ "$region" = "us-east-1" ]; then
        aws s3api create-bucket --region "$region" --bucket "$bucket" >/dev/null \
            || die "cannot create the bucket $bucket"
    else
        aws s3api create-bucket --region "$region" --bucket "$bucket" \
            --create-bucket-configuration "LocationConstraint=$region" >/dev/null \
            || die "cannot create the bucket $bucket in $region"
    fi
    echo "Bucket $bucket created in $region"
elif [[ "$head_err" == *Forbidden* || "$head_err" == *"(403)"* ]]; then
    die "the bucket name $bucket is taken by another account (or you may not read it): pass --bucket NAME"
else
    die "cannot look up the bucket $bucket: $head_err"
fi
location="$(aws s3api get-bucket-location --region "$region" --bucket "$bucket" --query LocationConstraint --output text)" \
    || die "cannot read the location of $bucket"
case "$location" in None | null | "") location="us-east-1" ;; EU) location="eu-west-1" ;; esac
[ "$location" = "$region" ] || die "the bucket $bucket is in $location, not $region: pass that region, or --bucket NAME"

# Step 3: Turn on versioning, default encryption and the public access block.
aws s3api put-bucket-versioning --region "$region" --bucket "$bucket" \
    --versioning-configuration Status=Enabled \
    || die "cannot turn on versioning for $bucket"
aws s3api put-bucket-encryption --region "$region" --bucket "$bucket" \
    --server-side-encryption-configuration '{"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}' \
    || die "cannot set the default encryption of $bucket"
aws s3api put-public-access-block --region "$region" --bucket "$bucket" \
    --public-access-block-configuration BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true \
    || die "cannot block public access to $bucket"

# Step 4: Apply the lifecycle rule: replaced model versions go after 30 days, abandoned uploads after 7.
aws s3api put-bucket-lifecycle-configuration --region "$region" --bucket "$bucket" \
    --lifecycle-configuration '{"Rules": [{"ID": "expire-replaced-models", "Status": "Enabled", "Filter": {"Prefix": "models/"}, "NoncurrentVersionExpiration": {"NoncurrentDays": 30}, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}]}' \
    || die "cannot set the lifecycle rule of $bucket"
echo "Versioning, encryption, public access block and lifecycle rule set"

# Step 5: Upload the models under models/, skipping those already stored with the same sha256.
for model in "${models[@]}"; do
    name="$(basename "$model")"
    key="models/$name"
    sum="$(sha256 "$model")"
    stored="$(aws s3api head-object --region "$region" --bucket "$bucket" --key "$key" \
        --query 'Metadata.sha256' --output text 2>/dev/null || true)"
    if [ "$stored" = "$sum" ]; then
        echo "s3://$bucket/$key is up to date (sha256 $sum)"
        continue
    fi
    aws s3 cp --region "$region" --only-show-errors "$model" "s3://$bucket/$key" --metadata "sha256=$sum" \
        || die "cannot upload $model to s3://$bucket/$key"
    echo "Uploaded s3://$bucket/$key (sha256 $sum)"
done

# Step 6: Show what the bucket holds.
echo
echo "s3://$bucket/models/ in $region:"
aws s3 ls --region "$region" "s3://$bucket/models/"
