//! Where tract spends its time on a model: each stage of loading, then one inference broken down
//! by operator, as `BENCHMARKS.md` shows it.
//!
//! Usage: `profile_tract MODEL [THREADS] [RUNS]` (defaults 1 thread, 10 runs).
//!
//! Loading is timed stage by stage the way the service loads (read and parse the protobuf, build
//! tract's inference graph, type it, declutter, optimise, plan). Inference runs the optimised plan
//! RUNS times on a fixed input, timing every node; the report groups nodes by operator and gives
//! each group's median share of a run. The input is a deterministic pattern: the cost of this
//! network does not depend on the pixel values.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, bail};
use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::{SimpleState, eval};
use tract_onnx::tract_core::runtime::RunOptions;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (model_path, threads, runs) = match args.as_slice() {
        [m] => (m.clone(), 1, 10),
        [m, t] => (m.clone(), t.parse()?, 10),
        [m, t, r] => (m.clone(), t.parse()?, r.parse()?),
        _ => bail!("usage: profile_tract MODEL [THREADS] [RUNS]"),
    };
    let runs: usize = runs;
    let threads: usize = threads;

    let mut stages: Vec<(&str, f64)> = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |name: &'static str, stages: &mut Vec<(&str, f64)>| {
        stages.push((name, clock.elapsed().as_secs_f64() * 1000.0));
        clock = Instant::now();
    };
    let bytes = std::fs::read(&model_path).with_context(|| model_path.clone())?;
    let proto = tract_onnx::onnx().proto_model_for_read(&mut bytes.as_slice())?;
    lap("read + parse the protobuf", &mut stages);
    let model = tract_onnx::onnx().model_for_proto_model(&proto)?;
    lap("build the inference graph", &mut stages);
    let model = model.with_input_fact(0, f32::fact([1, 3, 224, 224]).into())?;
    let typed = model.into_typed()?;
    lap("analyse + type", &mut stages);
    let mut decluttered = typed.into_decluttered()?;
    lap("declutter", &mut stages);
    decluttered.optimize()?;
    let optimized = decluttered;
    lap("optimise (codegen)", &mut stages);
    let executor = (threads > 1).then(|| Executor::multithread_with_name(threads, "profile-mm"));
    let plan = optimized.into_runnable_with_options(&RunOptions {
        executor,
        ..RunOptions::default()
    })?;
    lap("plan", &mut stages);

    let input: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();
    let tensor = Tensor::from_shape(&[1, 3, 224, 224], &input)?;
    let mut state = SimpleState::new(&plan)?;
    state.run(tvec!(tensor.clone().into_tvalue()))?; // warm-up
    lap("first inference", &mut stages);

    // Per operator group: one total per run.
    let mut per_op: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut totals = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut this_run: BTreeMap<String, f64> = BTreeMap::new();
        let started = Instant::now();
        state.run_plan_with_eval(
            tvec!(tensor.clone().into_tvalue()),
            |ctx, op_state, node, inputs| {
                let t0 = Instant::now();
                let out = eval(ctx, op_state, node, inputs);
                *this_run
                    .entry(op_group(node.op().name().as_ref()))
                    .or_default() += t0.elapsed().as_secs_f64() * 1000.0;
                out
            },
        )?;
        totals.push(started.elapsed().as_secs_f64() * 1000.0);
        for (op, ms) in this_run {
            per_op.entry(op).or_default().push(ms);
        }
    }

    let nodes = plan.model().nodes().len();
    let total = median(&mut totals);
    println!("# tract profile: {model_path}");
    println!();
    println!("threads {threads}, {runs} runs, {nodes} nodes in the optimised plan");
    println!();
    println!("| load stage | ms |");
    println!("|---|---:|");
    for (name, ms) in &stages {
        println!("| {name} | {ms:.1} |");
    }
    println!();
    println!("| operator | median ms per run | share |");
    println!("|---|---:|---:|");
    let mut rows: Vec<(String, f64)> = per_op
        .into_iter()
        .map(|(op, mut v)| (op, median(&mut v)))
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let accounted: f64 = rows.iter().map(|r| r.1).sum();
    for (op, ms) in &rows {
        println!("| {op} | {ms:.2} | {:.1}% |", 100.0 * ms / total);
    }
    println!(
        "| (between nodes: scheduling, freeing) | {:.2} | {:.1}% |",
        (total - accounted).max(0.0),
        100.0 * (total - accounted).max(0.0) / total
    );
    println!("| **whole run (median)** | **{total:.2}** | 100% |");
    Ok(())
}

/// The operator's family: tract names ops by kind, sometimes with a suffix in parentheses.
fn op_group(name: &str) -> String {
    name.split(['(', '<', '#'])
        .next()
        .unwrap_or(name)
        .trim()
        .to_owned()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}
