//! The model's ECR repository: `ensure` creates and configures it (idempotently), `resolve` finds
//! the digest-pinned URI of the newest model image so deployments never follow a mutable tag.
//! `setup-model-repo.sh` and `.ps1` configure the repository the same way.

use anyhow::{Context, bail};
use aws_sdk_ecr::Client;
use aws_sdk_ecr::types::{ImageScanningConfiguration, ImageTagMutability};

/// How many model images the lifecycle policy keeps.
pub const KEEP_IMAGES: u32 = 5;

/// The repository that holds the model images of `stage`.
pub fn repository_name(stage: &str) -> String {
    format!("densenet121-model-{stage}")
}

/// The lifecycle policy: expire all but the [`KEEP_IMAGES`] newest images.
pub fn lifecycle_policy() -> String {
    serde_json::json!({
        "rules": [{
            "rulePriority": 1,
            "description": format!("Keep the {KEEP_IMAGES} newest model images"),
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": KEEP_IMAGES},
            "action": {"type": "expire"}
        }]
    })
    .to_string()
}

/// Creates the repository if needed, with scan on push and the lifecycle policy; returns its URI.
pub async fn ensure(client: &Client, stage: &str) -> anyhow::Result<String> {
    let name = repository_name(stage);
    let scanning = ImageScanningConfiguration::builder()
        .scan_on_push(true)
        .build();
    let created = client
        .create_repository()
        .repository_name(&name)
        .image_tag_mutability(ImageTagMutability::Mutable)
        .image_scanning_configuration(scanning.clone())
        .send()
        .await;
    let uri = match created {
        Ok(out) => out
            .repository
            .and_then(|r| r.repository_uri)
            .context("ECR returned no repository URI")?,
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_repository_already_exists_exception()) =>
        {
            // An existing repository is brought into line rather than left as found.
            client
                .put_image_scanning_configuration()
                .repository_name(&name)
                .image_scanning_configuration(scanning)
                .send()
                .await
                .with_context(|| format!("turning on scan on push for {name}"))?;
            repository_uri(client, &name).await?
        }
        Err(err) => return Err(err).with_context(|| format!("creating the ECR repository {name}")),
    };
    client
        .put_lifecycle_policy()
        .repository_name(&name)
        .lifecycle_policy_text(lifecycle_policy())
        .send()
        .await
        .with_context(|| format!("setting the lifecycle policy of {name}"))?;
    Ok(uri)
}

/// The digest-pinned URI (`…/densenet121-model-dev@sha256:…`) of the newest image in the repository.
pub async fn resolve(client: &Client, stage: &str) -> anyhow::Result<String> {
    let name = repository_name(stage);
    let uri = repository_uri(client, &name).await?;
    let mut newest: Option<(i64, String)> = None;
    let mut pages = client
        .describe_images()
        .repository_name(&name)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.with_context(|| format!("listing the images of {name}"))?;
        for image in page.image_details() {
            let (Some(digest), Some(pushed)) = (image.image_digest(), image.image_pushed_at())
            else {
                continue;
            };
            let pushed = pushed.as_nanos() as i64;
            if newest.as_ref().is_none_or(|(t, _)| pushed > *t) {
                newest = Some((pushed, digest.to_owned()));
            }
        }
    }
    match newest {
        Some((_, digest)) => Ok(format!("{uri}@{digest}")),
        None => bail!(
            "{name} holds no model image yet: run ./setup-model-repo.sh {stage} <region> first"
        ),
    }
}

async fn repository_uri(client: &Client, name: &str) -> anyhow::Result<String> {
    let out = client
        .describe_repositories()
        .repository_names(name)
        .send()
        .await
        .with_context(|| {
            format!("finding the ECR repository {name} (run ./setup-model-repo.sh first)")
        })?;
    out.repositories()
        .first()
        .and_then(|r| r.repository_uri())
        .map(str::to_owned)
        .with_context(|| format!("ECR returned no URI for {name}"))
}
