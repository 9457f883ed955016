//! The command-line classifier: `densenet-api predict IMAGE...` prints each image's top-k classes.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::classify::Classifier;
use crate::routes::PredictResponse;

/// Classifies each image and prints a table (or the API's JSON); fails if any image failed.
pub fn predict(
    classifier: &Classifier,
    images: &[PathBuf],
    top_k: usize,
    json: bool,
) -> anyhow::Result<()> {
    let num_classes = classifier.num_classes();
    if !(1..=num_classes).contains(&top_k) {
        bail!("--top-k must be from 1 to {num_classes}");
    }
    let mut out = std::io::stdout().lock();
    let mut failures = 0;
    for path in images {
        let result = std::fs::read(path)
            .with_context(|| format!("reading {}", path.display()))
            .and_then(|bytes| {
                classifier
                    .classify(&bytes, top_k)
                    .map_err(anyhow::Error::from)
            });
        let classification = match result {
            Ok(c) => c,
            Err(err) => {
                eprintln!("{}: {err:#}", path.display());
                failures += 1;
                continue;
            }
        };
        let filename = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        if json {
            let response = PredictResponse::new(
                filename,
                classification,
                classifier.engine().info(),
                uuid::Uuid::new_v4().to_string(),
            );
            writeln!(out, "{}", serde_json::to_string(&response)?)?;
            continue;
        }
        writeln!(
            out,
            "{}  ({:.1} ms)",
            path.display(),
            classification.timings.total_ms()
        )?;
        writeln!(
            out,
            "  {:>4}  {:>8}  {:>11}  label",
            "rank", "class_id", "probability"
        )?;
        for p in &classification.predictions {
            writeln!(
                out,
                "  {:>4}  {:>8}  {:>11}  {}",
                p.rank, p.class_id, p.confidence, p.label
            )?;
        }
        writeln!(out)?;
    }
    if failures > 0 {
        bail!(
            "{failures} of {} images could not be classified",
            images.len()
        );
    }
    Ok(())
}
