//! The tract engine: parse the ONNX file once, optimise it once, run the plan many times.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::RunOptions;
use tract_onnx::tract_hir::infer::Factoid;
use tract_onnx::tract_hir::internal::DimLike;

use super::onnx::OnnxFacts;
use super::{Engine, LoadOptions, ModelInfo};

/// The optimised, runnable plan: the one place tract's plan type is named.
type Plan = Arc<TypedRunnableModel>;

/// A model loaded and optimised by tract.
pub struct TractEngine {
    plan: Plan,
    info: ModelInfo,
}

impl TractEngine {
    /// Loads, checks and optimises the ONNX model at `path`.
    pub fn load(path: &Path, options: &LoadOptions) -> anyhow::Result<TractEngine> {
        let started = Instant::now();
        let (bytes, proto, facts) = OnnxFacts::load(path)?;
        drop(bytes);
        let mut model = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .with_context(|| format!("building the graph of {}", path.display()))?;
        drop(proto);

        let input_shape = concrete_input_shape(&model)?;
        model = model
            .with_input_fact(0, f32::fact(&input_shape).into())
            .context("fixing the model input shape")?;
        let typed = model.into_optimized().context("optimising the model")?;
        let num_classes = output_len(&typed)?;
        let plan = typed
            .into_runnable_with_options(&run_options(options.threads))
            .context("planning the model")?;

        let info = ModelInfo {
            name: options.name.clone(),
            framework: "ONNX",
            runtime: format!("tract {}", env!("TRACT_VERSION")),
            input_name: facts.input_name,
            input_shape,
            output_name: facts.output_name,
            num_classes,
            parameters: facts.parameters,
            opset_version: facts.opset_version,
            model_file_size: facts.file_size,
            model_sha256: facts.sha256,
            load_time_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        Ok(TractEngine { plan, info })
    }
}

impl Engine for TractEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn run(&self, input: Vec<f32>) -> anyhow::Result<Vec<f32>> {
        let expected: usize = self.info.input_shape.iter().product();
        if input.len() != expected {
            bail!(
                "input has {} values, the model takes {expected}",
                input.len()
            );
        }
        let tensor = Tensor::from_shape(&self.info.input_shape, &input)?;
        let outputs = self
            .plan
            .run(tvec!(tensor.into_tvalue()))
            .context("running the model")?;
        let scores = outputs.first().context("the model produced no output")?;
        let scores = scores
            .try_as_plain_ram()
            .and_then(|view| view.as_slice::<f32>())
            .context("reading the model output as f32")?;
        if scores.len() != self.info.num_classes {
            bail!(
                "the model produced {} scores, expected {}",
                scores.len(),
                self.info.num_classes
            );
        }
        Ok(scores.to_vec())
    }
}

/// One thread runs the plan on the caller's thread; more share a pool for the matrix products.
fn run_options(threads: usize) -> RunOptions {
    let executor = (threads > 1).then(|| Executor::multithread_with_name(threads, "densenet-mm"));
    RunOptions {
        executor,
        ..RunOptions::default()
    }
}

/// The model's input shape with any symbolic batch dimension fixed to 1.
fn concrete_input_shape(model: &InferenceModel) -> anyhow::Result<Vec<usize>> {
    let fact = model.input_fact(0).context("the model has no input")?;
    let shape = fact
        .shape
        .concretize()
        .context("the model input has no known rank")?;
    if shape.len() != 4 {
        bail!(
            "the model input has rank {}, expected NCHW (rank 4)",
            shape.len()
        );
    }
    let dims: Vec<Option<usize>> = shape.iter().map(|d| d.to_usize().ok()).collect();
    match dims.as_slice() {
        [_, Some(3), Some(h), Some(w)] => Ok(vec![1, 3, *h, *w]),
        _ => bail!("the model input shape {shape:?} is not [N, 3, H, W] with a known H and W"),
    }
}

/// The number of scores the optimised model outputs per image.
fn output_len(model: &TypedModel) -> anyhow::Result<usize> {
    let fact = model.output_fact(0).context("the model has no output")?;
    let dims: Vec<usize> = fact
        .shape
        .iter()
        .map(|d| d.to_usize().ok())
        .collect::<Option<_>>()
        .context("the model output shape is not fully known")?;
    match dims.as_slice() {
        [n] | [1, n] => Ok(*n),
        _ => bail!("the model output shape {dims:?} is not [classes] or [1, classes]"),
    }
}
