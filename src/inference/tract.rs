//! The tract engine: parse the ONNX file once, optimise it once, run the plan many times.
//!
//! Most of a cold start is tract's own work on the graph (parse, type, declutter) before the
//! final optimisation. [`prepare`] does that work once, ahead of time (the Lambda image does it
//! at build), and writes the decluttered model as an NNEF tar carrying the ONNX file's facts;
//! loading that skips straight to the optimisation.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use tract_linalg::multithread::Executor;
use tract_nnef::framework::Nnef;
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
    /// Loads, checks and optimises the model: the prepared model of `options.prepared_model`
    /// when there is one, else the ONNX model at `path`.
    pub fn load(path: &Path, options: &LoadOptions) -> anyhow::Result<TractEngine> {
        let started = Instant::now();
        let (mut typed, facts) = match &options.prepared_model {
            Some(prepared) => read_prepared(prepared)?,
            None => decluttered_onnx(path)?,
        };
        typed.optimize().context("optimising the model")?;
        let input_shape = input_shape(&typed)?;
        let num_classes = output_len(&typed)?;
        let plan = typed
            .into_runnable_with_options(&run_options(options.threads))
            .context("planning the model")?;

        let runtime = format!("tract {}", env!("TRACT_VERSION"));
        let info = facts.into_info(&options.name, runtime, input_shape, num_classes, started);
        Ok(TractEngine { plan, info })
    }
}

/// What [`prepare`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The size of the prepared model file, in bytes.
    pub bytes: u64,
    /// The SHA-256 of the ONNX file it was prepared from, hex.
    pub onnx_sha256: String,
    /// How long preparing took, in milliseconds.
    pub elapsed_ms: f64,
}

/// Prepares the ONNX model at `onnx` for fast loading by the tract engine: parses, types and
/// declutters it with its input shape fixed, then writes it to `out` as an NNEF tar that also
/// records the ONNX file's facts and the tract version. `out` is written whole or not at all.
pub fn prepare(onnx: &Path, out: &Path) -> anyhow::Result<Prepared> {
    let started = Instant::now();
    let (mut typed, facts) = decluttered_onnx(onnx)?;
    output_len(&typed)?;
    facts.record(&mut typed.properties);
    let onnx_sha256 = facts.sha256.clone();

    let partial = out.with_file_name(format!(
        ".{}.partial",
        out.file_name().and_then(|n| n.to_str()).unwrap_or("model")
    ));
    let write = || -> anyhow::Result<()> {
        let file = std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let writer = nnef()
            .write_to_tar_with_config(&typed, std::io::BufWriter::new(file), false, true)
            .context("writing the NNEF tar")?;
        writer
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|file| file.sync_all())
            .context("flushing the NNEF tar")?;
        std::fs::rename(&partial, out).with_context(|| format!("moving it to {}", out.display()))
    };
    if let Err(error) = write() {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    Ok(Prepared {
        bytes: std::fs::metadata(out)?.len(),
        onnx_sha256,
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// The ONNX model at `path`, typed and decluttered, with its input fixed to one image.
fn decluttered_onnx(path: &Path) -> anyhow::Result<(TypedModel, OnnxFacts)> {
    let (bytes, facts) = OnnxFacts::load(path)?;
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut bytes.as_slice())
        .with_context(|| format!("parsing {} as ONNX", path.display()))?;
    drop(bytes);
    let mut model = tract_onnx::onnx()
        .model_for_proto_model(&proto)
        .with_context(|| format!("building the graph of {}", path.display()))?;
    drop(proto);
    let input_shape = concrete_input_shape(&model)?;
    model = model
        .with_input_fact(0, f32::fact(&input_shape).into())
        .context("fixing the model input shape")?;
    let typed = model
        .into_typed()
        .and_then(|m| m.into_decluttered())
        .context("typing and decluttering the model")?;
    Ok((typed, facts))
}

/// A model written by [`prepare`], with the facts it carries.
fn read_prepared(path: &Path) -> anyhow::Result<(TypedModel, OnnxFacts)> {
    let typed = nnef()
        .model_for_path(path)
        .with_context(|| format!("reading the prepared model {}", path.display()))?;
    let written_by = string_property(&typed.properties, "tract_nnef_ser_version");
    if written_by.as_deref() != Some(env!("TRACT_VERSION")) {
        bail!(
            "{} was prepared by tract {}, and this build runs tract {}: prepare it again with \
             `densenet-api prepare-model`",
            path.display(),
            written_by.as_deref().unwrap_or("(unknown)"),
            env!("TRACT_VERSION")
        );
    }
    let facts = OnnxFacts::recorded(&typed.properties).with_context(|| {
        format!(
            "{} was not written by `densenet-api prepare-model`",
            path.display()
        )
    })?;
    Ok((typed, facts))
}

/// tract's NNEF reader and writer, with the ONNX operators tract adds.
fn nnef() -> Nnef {
    tract_nnef::nnef().with_onnx()
}

/// The property names under which a prepared model records its ONNX facts.
mod key {
    pub const INPUT_NAME: &str = "densenet_api.input_name";
    pub const OUTPUT_NAME: &str = "densenet_api.output_name";
    pub const PARAMETERS: &str = "densenet_api.parameters";
    pub const OPSET_VERSION: &str = "densenet_api.opset_version";
    pub const FILE_SIZE: &str = "densenet_api.onnx_file_size";
    pub const SHA256: &str = "densenet_api.onnx_sha256";
}

type Properties = HashMap<String, Arc<Tensor>>;

impl OnnxFacts {
    fn record(&self, properties: &mut Properties) {
        let mut put = |key: &str, value: Tensor| {
            properties.insert(key.to_owned(), Arc::new(value));
        };
        put(key::INPUT_NAME, tensor0(self.input_name.clone()));
        put(key::OUTPUT_NAME, tensor0(self.output_name.clone()));
        put(key::PARAMETERS, tensor0(self.parameters as i64));
        put(key::OPSET_VERSION, tensor0(self.opset_version));
        put(key::FILE_SIZE, tensor0(self.file_size as i64));
        put(key::SHA256, tensor0(self.sha256.clone()));
    }

    fn recorded(properties: &Properties) -> anyhow::Result<OnnxFacts> {
        let string = |key: &str| {
            string_property(properties, key).with_context(|| format!("no {key} property"))
        };
        let number = |key: &str| -> anyhow::Result<i64> {
            properties
                .get(key)
                .and_then(|t| t.cast_to_scalar::<i64>().ok())
                .with_context(|| format!("no {key} property"))
        };
        Ok(OnnxFacts {
            input_name: string(key::INPUT_NAME)?,
            output_name: string(key::OUTPUT_NAME)?,
            parameters: number(key::PARAMETERS)?.max(0) as u64,
            opset_version: number(key::OPSET_VERSION)?,
            file_size: number(key::FILE_SIZE)?.max(0) as u64,
            sha256: string(key::SHA256)?,
        })
    }
}

fn string_property(properties: &Properties, key: &str) -> Option<String> {
    properties.get(key).and_then(|t| {
        t.try_as_plain_ram()
            .ok()?
            .to_scalar::<String>()
            .ok()
            .cloned()
    })
}

impl Engine for TractEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn run(&self, input: Vec<f32>) -> anyhow::Result<Vec<f32>> {
        self.info.check_input_len(input.len())?;
        // The input's buffer becomes the tensor's: no copy of the 600 KB image.
        let tensor =
            tract_ndarray::ArrayD::from_shape_vec(self.info.input_shape.as_slice(), input)?
                .into_tensor();
        let outputs = self
            .plan
            .run(tvec!(tensor.into_tvalue()))
            .context("running the model")?;
        let scores = outputs.first().context("the model produced no output")?;
        let scores = scores
            .try_as_plain_ram()
            .and_then(|view| view.as_slice::<f32>())
            .context("reading the model output as f32")?;
        self.info.check_output_len(scores.len())?;
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

/// The input shape of a typed model, which must be concrete.
fn input_shape(model: &TypedModel) -> anyhow::Result<Vec<usize>> {
    let fact = model.input_fact(0).context("the model has no input")?;
    let dims: Vec<usize> = fact
        .shape
        .as_concrete()
        .context("the model input shape is not fully known")?
        .to_vec();
    match dims.as_slice() {
        [1, 3, h, w] if *h > 0 && *w > 0 => Ok(dims),
        _ => bail!("the model input shape {dims:?} is not [1, 3, H, W]"),
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
