//! `model-repo ensure` and `resolve` against a real ECR API on loopback (moto in server mode,
//! started by scripts/test.sh at `MOTO_ENDPOINT_URL`).

use aws_sdk_ecr::Client;
use aws_sdk_ecr::types::ImageScanningConfiguration;
use densenet_api::model_repo;

const BIN: &str = env!("CARGO_BIN_EXE_densenet-api");

fn endpoint() -> String {
    std::env::var("MOTO_ENDPOINT_URL").expect(
        "MOTO_ENDPOINT_URL is not set: run scripts/test.sh, or start `moto_server -H 127.0.0.1 -p 5000` \
         and export MOTO_ENDPOINT_URL=http://127.0.0.1:5000",
    )
}

async fn client(region: &str) -> Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_owned()))
        .endpoint_url(endpoint())
        .credentials_provider(aws_sdk_ecr::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .load()
        .await;
    Client::new(&config)
}

/// A unique stage-like suffix so tests sharing one moto server never meet.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        uuid::Uuid::new_v4().simple().to_string().get(..8).unwrap()
    )
}

async fn push_fake_image(
    client: &Client,
    repository: &str,
    tag: &str,
    layer_digest: &str,
) -> String {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 10, "digest": layer_digest},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 32, "digest": layer_digest}]
    });
    let out = client
        .put_image()
        .repository_name(repository)
        .image_manifest(manifest.to_string())
        .image_tag(tag)
        .send()
        .await
        .expect("put_image");
    out.image()
        .and_then(|i| i.image_id())
        .and_then(|id| id.image_digest())
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn ensure_is_idempotent_and_configures_the_repository() {
    let client = client("us-east-1").await;
    let stage = unique("t");
    let name = model_repo::repository_name(&stage);
    let uri = model_repo::ensure(&client, &stage).await.unwrap();
    assert!(uri.ends_with(&format!("/{name}")), "{uri}");
    let again = model_repo::ensure(&client, &stage).await.unwrap();
    assert_eq!(uri, again);

    let repos = client
        .describe_repositories()
        .repository_names(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(repos.repositories().len(), 1);
    let repo = &repos.repositories()[0];
    assert_eq!(
        repo.image_scanning_configuration()
            .map(|c| c.scan_on_push()),
        Some(true)
    );
    let policy = client
        .get_lifecycle_policy()
        .repository_name(&name)
        .send()
        .await
        .unwrap();
    let policy: serde_json::Value =
        serde_json::from_str(policy.lifecycle_policy_text().unwrap()).unwrap();
    assert_eq!(
        policy["rules"][0]["selection"]["countNumber"],
        model_repo::KEEP_IMAGES
    );
    assert_eq!(policy["rules"][0]["action"]["type"], "expire");
}

#[tokio::test]
async fn ensure_fixes_a_repository_created_by_hand() {
    let client = client("us-east-1").await;
    let stage = unique("h");
    let name = model_repo::repository_name(&stage);
    client
        .create_repository()
        .repository_name(&name)
        .image_scanning_configuration(
            ImageScanningConfiguration::builder()
                .scan_on_push(false)
                .build(),
        )
        .send()
        .await
        .unwrap();
    model_repo::ensure(&client, &stage).await.unwrap();
    let repos = client
        .describe_repositories()
        .repository_names(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(
        repos.repositories()[0]
            .image_scanning_configuration()
            .map(|c| c.scan_on_push()),
        Some(true)
    );
    assert!(
        client
            .get_lifecycle_policy()
            .repository_name(&name)
            .send()
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn resolve_pins_the_newest_image_by_digest() {
    let client = client("us-east-1").await;
    let stage = unique("r");
    let name = model_repo::repository_name(&stage);
    let err = model_repo::resolve(&client, &stage)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("setup-model-repo"), "{err}");

    let uri = model_repo::ensure(&client, &stage).await.unwrap();
    let err = model_repo::resolve(&client, &stage)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds no model image"), "{err}");

    let first = push_fake_image(
        &client,
        &name,
        "aaaa",
        &format!("sha256:{}", "1".repeat(64)),
    )
    .await;
    assert_eq!(
        model_repo::resolve(&client, &stage).await.unwrap(),
        format!("{uri}@{first}")
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second = push_fake_image(
        &client,
        &name,
        "bbbb",
        &format!("sha256:{}", "2".repeat(64)),
    )
    .await;
    assert_ne!(first, second);
    let resolved = model_repo::resolve(&client, &stage).await.unwrap();
    assert_eq!(resolved, format!("{uri}@{second}"));
    assert!(resolved.contains("@sha256:"));
}

#[test]
fn the_subcommand_prints_only_the_uri() {
    let stage = "dev";
    let run = |action: &str| {
        std::process::Command::new(BIN)
            .args([
                "model-repo",
                action,
                "--stage",
                stage,
                "--region",
                "eu-west-1",
            ])
            .env("AWS_ENDPOINT_URL", endpoint())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap()
    };
    let ensured = run("ensure");
    assert!(
        ensured.status.success(),
        "{}",
        String::from_utf8_lossy(&ensured.stderr)
    );
    let uri = String::from_utf8(ensured.stdout).unwrap();
    assert!(uri.trim().ends_with("/densenet121-model-dev"), "{uri}");
    assert!(uri.contains("eu-west-1"), "{uri}");
    let resolved = run("resolve");
    assert!(!resolved.status.success());
    assert!(String::from_utf8_lossy(&resolved.stderr).contains("holds no model image"));

    let bad = std::process::Command::new(BIN)
        .args(["model-repo", "resolve", "--stage", "qa"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("STAGE must be"));
}
