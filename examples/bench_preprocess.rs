//! Times the service's pre-processing (decode, resize, normalise), driven by `bench/run.py`.
//!
//! Usage: `bench_preprocess WIDTH HEIGHT` (the model's input size, e.g. 224 224)
//!
//! Answers one command per line of standard input, one JSON line each, until the input ends:
//!
//! - `time PATH RUNS`: reads the image file once, then RUNS times decodes it as the service does
//!   (`densenet_api::preprocess::decode_for_input`, which may decode a large JPEG at reduced
//!   scale) and turns it into the model input with `resize` and `normalize` (what `to_tensor`
//!   does), printing `{"width", "height", "decode_ms": [...], "resize_ms": [...],
//!   "normalize_ms": [...], "full_decode_ms": [...]}`: width and height are those of the decoded
//!   pixels, and `full_decode_ms` times `decode` at full size, for comparison;
//! - `tensor PATH OUT`: writes the model input of the image in PATH to OUT (raw little-endian
//!   f32, NCHW) and prints `{"values": N}`.
//!
//! The decode limit is the service's default `MAX_IMAGE_PIXELS`.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use densenet_api::config::DEFAULT_MAX_IMAGE_PIXELS;
use densenet_api::preprocess;
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [width, height] = args.as_slice() else {
        bail!("usage: bench_preprocess WIDTH HEIGHT");
    };
    let size: (u32, u32) = (
        width.parse().context("WIDTH")?,
        height.parse().context("HEIGHT")?,
    );

    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading a command")?;
        let reply = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["time", path, runs] => time_runs(Path::new(path), size, runs.parse()?)?,
            ["tensor", path, dest] => {
                let bytes = read(Path::new(path))?;
                let rgb =
                    preprocess::decode_for_input(&bytes, DEFAULT_MAX_IMAGE_PIXELS, size.0, size.1)?;
                let tensor = preprocess::to_tensor(&rgb, size.0, size.1)?;
                let raw: Vec<u8> = tensor.iter().flat_map(|v| v.to_le_bytes()).collect();
                std::fs::write(dest, raw).with_context(|| format!("writing {dest}"))?;
                json!({ "values": tensor.len() })
            }
            [] => continue,
            _ => bail!("unknown command {line:?}"),
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    Ok(())
}

/// Decodes and pre-processes the image `runs` times, timing each stage of each run.
fn time_runs(
    path: &Path,
    (width, height): (u32, u32),
    runs: usize,
) -> anyhow::Result<serde_json::Value> {
    let bytes = read(path)?;
    let (mut decode_ms, mut resize_ms, mut normalize_ms) = (vec![], vec![], vec![]);
    let mut full_decode_ms = vec![];
    let mut dimensions = (0, 0);
    for _ in 0..runs {
        let started = Instant::now();
        let full = preprocess::decode(&bytes, DEFAULT_MAX_IMAGE_PIXELS)?;
        drop(full);
        full_decode_ms.push(ms(started, Instant::now()));

        let started = Instant::now();
        let rgb = preprocess::decode_for_input(&bytes, DEFAULT_MAX_IMAGE_PIXELS, width, height)?;
        let decoded = Instant::now();
        dimensions = rgb.dimensions();
        let resized = preprocess::resize(&rgb, width, height)?;
        // Freed here, inside the timing, as the service frees it before running the model.
        drop(rgb);
        let resized_at = Instant::now();
        let tensor = preprocess::normalize(&resized);
        let normalized = Instant::now();
        std::hint::black_box(tensor);
        decode_ms.push(ms(started, decoded));
        resize_ms.push(ms(decoded, resized_at));
        normalize_ms.push(ms(resized_at, normalized));
    }
    Ok(json!({
        "width": dimensions.0,
        "height": dimensions.1,
        "decode_ms": decode_ms,
        "resize_ms": resize_ms,
        "normalize_ms": normalize_ms,
        "full_decode_ms": full_decode_ms,
    }))
}

fn ms(from: Instant, to: Instant) -> f64 {
    (to - from).as_secs_f64() * 1000.0
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}
