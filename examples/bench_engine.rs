//! Times the service's inference engine on one input tensor, driven by `bench/run.py`.
//!
//! Usage: `[ENGINE=tract|onnxruntime] [ORT_DYLIB_PATH=LIB] bench_engine MODEL TENSOR THREADS...`
//!
//! The engine is chosen as the service chooses it: `ENGINE` names it (`tract` by default,
//! `onnxruntime` in a build with the `onnxruntime` feature), and `ORT_DYLIB_PATH` is ONNX
//! Runtime's shared library (default `libonnxruntime.so`, found on the loader's search path).
//!
//! Loads the model once per thread count (through `densenet_api::inference::load`, as the service
//! does), runs each engine once as a warm-up, and prints one JSON line:
//! `{"engine", "runtime", "engines": [{"threads", "load_ms", "scores"}]}`: the engine's name and
//! the runtime with its version, then per thread count the load time and the scores of TENSOR
//! (raw little-endian f32, NCHW). Then it answers one command per line of standard input, one JSON
//! line each, until the input ends:
//!
//! - `time THREADS RUNS`: runs the engine of THREADS threads RUNS times on TENSOR and prints
//!   `{"threads", "ms": [...]}`, one wall-clock duration per run;
//! - `scores THREADS PATH`: prints `{"threads", "scores": [...]}` for the tensor in PATH.
//!
//! Keeping the process alive between commands lets the caller interleave these rounds with
//! onnxruntime's without reloading either model.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use densenet_api::inference::{
    self, DEFAULT_ONNXRUNTIME_LIBRARY, EngineKind, LoadOptions, SharedEngine,
};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, tensor, threads @ ..] = args.as_slice() else {
        bail!("usage: bench_engine MODEL TENSOR THREADS...");
    };
    if threads.is_empty() {
        bail!("usage: bench_engine MODEL TENSOR THREADS... (at least one thread count)");
    }
    let input = read_tensor(Path::new(tensor))?;
    let kind: EngineKind = match std::env::var("ENGINE") {
        Ok(name) if !name.trim().is_empty() => name.parse()?,
        _ => EngineKind::default(),
    };
    let library = std::env::var_os("ORT_DYLIB_PATH")
        .filter(|path| !path.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_ONNXRUNTIME_LIBRARY), PathBuf::from);

    let mut engines = BTreeMap::new();
    let mut loaded = Vec::new();
    let mut runtime = String::new();
    for threads in threads {
        let threads: usize = threads
            .parse()
            .with_context(|| format!("thread count {threads:?}"))?;
        let options = LoadOptions {
            engine: kind,
            onnxruntime_library: library.clone(),
            ..LoadOptions::new("DenseNet121", threads)
        };
        let engine = inference::load(&PathBuf::from(model), &options)
            .with_context(|| format!("loading {model} into {kind} with {threads} threads"))?;
        runtime.clone_from(&engine.info().runtime);
        let scores = engine.run(input.clone())?;
        loaded.push(json!({
            "threads": threads,
            "load_ms": engine.info().load_time_ms,
            "scores": scores,
        }));
        engines.insert(threads, engine);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        json!({ "engine": kind.as_str(), "runtime": runtime, "engines": loaded })
    )?;
    out.flush()?;

    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading a command")?;
        let reply = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["time", threads, runs] => {
                let threads: usize = threads.parse()?;
                let ms = time_runs(engine(&engines, threads)?, &input, runs.parse()?)?;
                json!({ "threads": threads, "ms": ms })
            }
            ["scores", threads, path] => {
                let threads: usize = threads.parse()?;
                let scores = engine(&engines, threads)?.run(read_tensor(Path::new(path))?)?;
                json!({ "threads": threads, "scores": scores })
            }
            [] => continue,
            _ => bail!("unknown command {line:?}"),
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    Ok(())
}

fn engine(
    engines: &BTreeMap<usize, SharedEngine>,
    threads: usize,
) -> anyhow::Result<&SharedEngine> {
    engines
        .get(&threads)
        .with_context(|| format!("no engine with {threads} threads was loaded"))
}

/// Runs the engine `runs` times; the input copy each run consumes is made outside the timing.
fn time_runs(engine: &SharedEngine, input: &[f32], runs: usize) -> anyhow::Result<Vec<f64>> {
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let tensor = input.to_vec();
        let started = Instant::now();
        let scores = engine.run(tensor)?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(scores);
    }
    Ok(ms)
}

/// Reads raw little-endian f32 values.
fn read_tensor(path: &Path) -> anyhow::Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() % 4 != 0 {
        bail!(
            "{}: {} bytes is not a whole number of f32",
            path.display(),
            bytes.len()
        );
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}
