<#
.SYNOPSIS
Publishes the DenseNet121 model as a container image in ECR, once per stage and model: the
function image (Dockerfile) copies the model from it at build time.

.DESCRIPTION
Creates (or updates) the ECR repository densenet121-model-STAGE in the region, with scan on
push and a lifecycle policy that keeps the 5 newest model images; builds a FROM-scratch image
that holds the model at /model/densenet121_Opset17.onnx, tags it with the model's content hash
and `latest`, pushes both, and prints the digest-pinned image URI and the `sam build` command
that uses it. Running it again is safe. setup-model-repo.sh does the same steps on Linux and
macOS; keep the two in step.

.PARAMETER Stage
dev or prod.

.PARAMETER AwsRegion
AWS region, e.g. us-east-1.

.PARAMETER ModelPath
The model file (default: models\densenet121_Opset17.onnx; scripts/fetch-model.sh downloads it).

.PARAMETER AllowAnyModel
Skip the checksum check (for test models).

.PARAMETER Help
Show this help.

.NOTES
Environment: MODEL_SHA256 (the expected sha256 of the model), the usual AWS CLI credentials
(AWS_PROFILE, ...), AWS_ENDPOINT_URL (an alternative AWS endpoint, honoured by the AWS CLI).

.EXAMPLE
.\setup-model-repo.ps1 -Stage dev -AwsRegion us-east-1
#>
[CmdletBinding()]
param(
    [Parameter(Position = 0)]
    [string] $Stage,
    [Parameter(Position = 1)]
    [string] $AwsRegion,
    [string] $ModelPath,
    [switch] $AllowAnyModel,
    [switch] $Help
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

function Show-Usage {
    Write-Output @'
Usage: .\setup-model-repo.ps1 -Stage STAGE -AwsRegion REGION [-ModelPath PATH] [-AllowAnyModel]

Creates (or updates) the ECR repository densenet121-model-STAGE in REGION, with scan on push
and a lifecycle policy that keeps the 5 newest model images; builds a FROM-scratch image that
holds the model at /model/densenet121_Opset17.onnx, tags it with the model's content hash and
`latest`, pushes both, and prints the digest-pinned image URI and the `sam build` command that
uses it. Running it again is safe: it converges on the same repository, policy and tags.

Parameters:
  -Stage STAGE        dev or prod
  -AwsRegion REGION   AWS region, e.g. us-east-1
  -ModelPath PATH     the model file (default: models\densenet121_Opset17.onnx;
                      scripts/fetch-model.sh downloads it)
  -AllowAnyModel      skip the checksum check (for test models)
  -Help               show this help

Environment:
  MODEL_SHA256       the expected sha256 of the model (default: the published DenseNet121
                     opset-17 model, 9299d867...bbdd)
  AWS_PROFILE, AWS_ACCESS_KEY_ID, ...   the usual AWS CLI credentials
  AWS_ENDPOINT_URL   an alternative AWS endpoint (honoured by the AWS CLI)

Example:
  .\setup-model-repo.ps1 -Stage dev -AwsRegion us-east-1
'@
}

function Stop-WithError {
    param([string] $Message)
    [Console]::Error.WriteLine("error: $Message")
    exit 1
}

function Assert-Command {
    param([string] $Name, [string] $Hint)
    if (-not (Get-Command $Name -ErrorAction SilentlyContinue)) {
        Stop-WithError "'$Name' is required but not installed. $Hint"
    }
}

# Runs a native command and returns its standard output as one string; its exit code goes to
# $script:ToolExitCode and its error output to $script:ToolError. Windows PowerShell turns
# redirected error output into terminating errors under 'Stop', hence 'Continue' here.
function Invoke-Tool {
    param([string] $Name, [string[]] $Arguments)
    $errorFile = [System.IO.Path]::GetTempFileName()
    $previous = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        $output = & $Name @Arguments 2> $errorFile
        $script:ToolExitCode = $LASTEXITCODE
    }
    finally {
        $ErrorActionPreference = $previous
    }
    $script:ToolError = [System.IO.File]::ReadAllText($errorFile).Trim()
    Remove-Item -Force -LiteralPath $errorFile
    $lines = @($output | ForEach-Object { "$_" })
    return ($lines -join "`n").Trim()
}

# Runs a native command with its output shown; returns its exit code.
function Invoke-Shown {
    param([string] $Name, [string[]] $Arguments)
    $previous = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        & $Name @Arguments | Out-Host
        return $LASTEXITCODE
    }
    finally {
        $ErrorActionPreference = $previous
    }
}

if ($Help -or $Stage -eq '--help' -or $Stage -eq '-h' -or $Stage -eq '/?') {
    Show-Usage
    exit 0
}
if (-not $Stage -or -not $AwsRegion) {
    Show-Usage
    exit 2
}
if (@('dev', 'prod') -notcontains $Stage) {
    Stop-WithError "STAGE must be dev or prod, not '$Stage'"
}
if ($AwsRegion -notmatch '^[a-z]{2}(-[a-z]+)+-[0-9]+$') {
    Stop-WithError "REGION must be an AWS region such as us-east-1, not '$AwsRegion'"
}

$root = Split-Path -Parent $MyInvocation.MyCommand.Path
if (-not $ModelPath) {
    $ModelPath = Join-Path (Join-Path $root 'models') 'densenet121_Opset17.onnx'
}
$expectedSha256 = '9299d867cac3e0bf40803ac737e3fdaf3cb5976ee65c82961c211a3d8be3bbdd'
if ($env:MODEL_SHA256) {
    $expectedSha256 = $env:MODEL_SHA256
}
$repository = "densenet121-model-$Stage"
$modelName = 'densenet121_Opset17.onnx'
$keepImages = 5
$env:AWS_PAGER = ''

# Step 1: Check the prerequisites: the aws and docker commands, the Docker daemon, the model file and its checksum.
Assert-Command 'aws' 'Install the AWS CLI: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html'
Assert-Command 'docker' 'Install Docker: https://docs.docker.com/get-docker/'
$null = Invoke-Tool 'docker' @('info')
if ($script:ToolExitCode -ne 0) {
    Stop-WithError 'the Docker daemon is not reachable: start Docker (docker info must succeed)'
}
if (-not (Test-Path -LiteralPath $ModelPath -PathType Leaf)) {
    Stop-WithError "model file not found: $ModelPath (run scripts/fetch-model.sh, or pass -ModelPath PATH)"
}
$modelSha256 = (Get-FileHash -Algorithm SHA256 -LiteralPath $ModelPath).Hash.ToLowerInvariant()
if ($modelSha256 -ne $expectedSha256) {
    if ($AllowAnyModel) {
        [Console]::Error.WriteLine("warning: $ModelPath has sha256 $modelSha256, not the expected $expectedSha256; publishing it anyway (-AllowAnyModel)")
    }
    else {
        Stop-WithError "$ModelPath has sha256 $modelSha256, expected $expectedSha256 (a different or damaged file; set MODEL_SHA256 or pass -AllowAnyModel for a test model)"
    }
}
$modelTag = $modelSha256.Substring(0, 16)

# Step 2: Find the AWS account and the registry of the region.
$account = Invoke-Tool 'aws' @('sts', 'get-caller-identity', '--region', $AwsRegion, '--query', 'Account', '--output', 'text')
if ($script:ToolExitCode -ne 0) {
    Stop-WithError "cannot read the AWS account (aws sts get-caller-identity failed): configure credentials (aws configure, AWS_PROFILE). $($script:ToolError)"
}
$domain = 'amazonaws.com'
if ($AwsRegion.StartsWith('cn-')) {
    $domain = 'amazonaws.com.cn'
}
$registry = "$account.dkr.ecr.$AwsRegion.$domain"
$image = "$registry/$repository"
Write-Output "Account $account, registry $registry"

# Step 3: Create the repository if it does not exist, with scan on push.
$null = Invoke-Tool 'aws' @('ecr', 'describe-repositories', '--region', $AwsRegion, '--repository-names', $repository)
if ($script:ToolExitCode -eq 0) {
    Write-Output "Repository $repository exists"
}
elseif ($script:ToolError -like '*RepositoryNotFoundException*') {
    $null = Invoke-Tool 'aws' @('ecr', 'create-repository', '--region', $AwsRegion, '--repository-name', $repository,
        '--image-tag-mutability', 'MUTABLE', '--image-scanning-configuration', 'scanOnPush=true')
    if ($script:ToolExitCode -ne 0) {
        Stop-WithError "cannot create the ECR repository $repository. $($script:ToolError)"
    }
    Write-Output "Repository $repository created"
}
else {
    Stop-WithError "cannot look up the ECR repository ${repository}: $($script:ToolError)"
}
$null = Invoke-Tool 'aws' @('ecr', 'put-image-scanning-configuration', '--region', $AwsRegion, '--repository-name', $repository,
    '--image-scanning-configuration', 'scanOnPush=true')
if ($script:ToolExitCode -ne 0) {
    Stop-WithError "cannot turn on scan on push for $repository. $($script:ToolError)"
}

$work = Join-Path ([System.IO.Path]::GetTempPath()) ('densenet-model-' + [System.Guid]::NewGuid().ToString('N'))
$null = New-Item -ItemType Directory -Path $work
try {
    # Step 4: Apply the lifecycle policy that keeps the newest model images.
    $policyFile = Join-Path $work 'lifecycle-policy.json'
    $policy = '{"rules": [{"rulePriority": 1, "description": "Keep the ' + $keepImages + ' newest model images", "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": ' + $keepImages + '}, "action": {"type": "expire"}}]}'
    Set-Content -LiteralPath $policyFile -Value $policy -Encoding Ascii
    $null = Invoke-Tool 'aws' @('ecr', 'put-lifecycle-policy', '--region', $AwsRegion, '--repository-name', $repository,
        '--lifecycle-policy-text', "file://$policyFile")
    if ($script:ToolExitCode -ne 0) {
        Stop-WithError "cannot set the lifecycle policy of $repository. $($script:ToolError)"
    }
    Write-Output "Lifecycle policy: keep the $keepImages newest images"

    # Step 5: Build the model image (FROM scratch, the model at /model/densenet121_Opset17.onnx), tagged with the model hash and latest.
    $context = Join-Path $work 'context'
    $null = New-Item -ItemType Directory -Path $context
    Copy-Item -LiteralPath $ModelPath -Destination (Join-Path $context $modelName)
    $dockerfile = Join-Path $context 'Dockerfile'
    $dockerfileText = @(
        'FROM scratch',
        'LABEL org.opencontainers.image.title="densenet121-model" \',
        '      org.opencontainers.image.description="DenseNet121 ONNX model for densenet-api" \',
        "      model.sha256=`"$modelSha256`"",
        "COPY $modelName /model/$modelName"
    )
    Set-Content -LiteralPath $dockerfile -Value $dockerfileText -Encoding Ascii
    $code = Invoke-Shown 'docker' @('build', '--platform', 'linux/amd64',
        '--tag', "${image}:$modelTag", '--tag', "${image}:latest",
        '--file', $dockerfile, $context)
    if ($code -ne 0) {
        Stop-WithError 'docker build of the model image failed'
    }

    # Step 6: Log Docker in to the registry.
    $password = Invoke-Tool 'aws' @('ecr', 'get-login-password', '--region', $AwsRegion)
    if ($script:ToolExitCode -ne 0 -or -not $password) {
        Stop-WithError "docker login to $registry failed: no ECR password. $($script:ToolError)"
    }
    $previous = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    $null = $password | & docker login --username AWS --password-stdin $registry 2>&1
    $loginCode = $LASTEXITCODE
    $ErrorActionPreference = $previous
    if ($loginCode -ne 0) {
        Stop-WithError "docker login to $registry failed"
    }

    # Step 7: Push both tags.
    foreach ($tag in @($modelTag, 'latest')) {
        $code = Invoke-Shown 'docker' @('push', "${image}:$tag")
        if ($code -ne 0) {
            Stop-WithError "docker push of ${image}:$tag failed"
        }
    }

    # Step 8: Read the digest of the pushed image from ECR.
    $digest = Invoke-Tool 'aws' @('ecr', 'describe-images', '--region', $AwsRegion, '--repository-name', $repository,
        '--image-ids', "imageTag=$modelTag", '--query', 'imageDetails[0].imageDigest', '--output', 'text')
    if ($script:ToolExitCode -ne 0) {
        Stop-WithError "cannot read the digest of ${image}:$modelTag. $($script:ToolError)"
    }
    if ($digest -notmatch '^sha256:[0-9a-f]{64}$') {
        Stop-WithError "ECR returned no digest for ${image}:$modelTag (got '$digest')"
    }
    $modelImageUri = "$image@$digest"

    # Step 9: Print the digest-pinned URI and the next commands.
    Write-Output ''
    Write-Output "Model image pushed: ${image}:$modelTag (and :latest)"
    Write-Output "ModelImageUri: $modelImageUri"
    Write-Output ''
    Write-Output 'Next, build and deploy the function with it:'
    Write-Output "  sam build --parameter-overrides ModelImageUri=$modelImageUri Stage=$Stage"
    Write-Output '  sam deploy --guided'
}
finally {
    Remove-Item -Recurse -Force -LiteralPath $work -ErrorAction SilentlyContinue
}
