//! The ONNX Runtime engine (cargo feature `onnxruntime`): `libonnxruntime.so` is loaded at
//! start-up from `ORT_DYLIB_PATH`, so the binary builds and runs without it when `ENGINE=tract`.

use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{Tensor, ValueType};

use super::onnx::OnnxFacts;
use super::{Engine, LoadOptions, ModelInfo};

/// A model loaded into an ONNX Runtime session.
pub struct OnnxRuntimeEngine {
    /// Running a session takes `&mut` in `ort`; requests take turns, each using every intra-op
    /// thread.
    session: Mutex<Session>,
    info: ModelInfo,
}

impl OnnxRuntimeEngine {
    /// Loads ONNX Runtime from `options.onnxruntime_library` (once per process), then the model
    /// at `path`.
    pub fn load(path: &Path, options: &LoadOptions) -> anyhow::Result<OnnxRuntimeEngine> {
        let started = Instant::now();
        let environment = environment(&options.onnxruntime_library)?;
        let (bytes, facts) = OnnxFacts::load(path)?;

        let mut builder = Session::builder(environment)
            .map_err(configuring)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(configuring)?
            .with_intra_threads(options.threads.max(1))
            .map_err(configuring)?
            .with_inter_threads(1)
            .map_err(configuring)?;
        let session = builder
            .commit_from_memory(&bytes)
            .map_err(|e| anyhow!("loading {} into ONNX Runtime: {e}", path.display()))?;
        drop(bytes);

        let input = session.inputs().first().context("the model has no input")?;
        let input_shape = input_shape(input.dtype())?;
        let output = session
            .outputs()
            .first()
            .context("the model has no output")?;
        let num_classes = output_len(output.dtype())?;

        let runtime = format!(
            "onnxruntime {}",
            version(&options.onnxruntime_library)
                .as_deref()
                .unwrap_or("(unknown version)")
        );
        let info = facts.into_info(&options.name, runtime, input_shape, num_classes, started);
        Ok(OnnxRuntimeEngine {
            session: Mutex::new(session),
            info,
        })
    }
}

impl Engine for OnnxRuntimeEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn run(&self, input: Vec<f32>) -> anyhow::Result<Vec<f32>> {
        self.info.check_input_len(input.len())?;
        let tensor = Tensor::from_array((self.info.input_shape.clone(), input))
            .map_err(|e| anyhow!("making the input tensor: {e}"))?;
        // A panic while running cannot leave the session half-updated: ONNX Runtime keeps no
        // state between runs, so a poisoned lock is taken over.
        let mut session = self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outputs = session
            .run(ort::inputs![tensor])
            .map_err(|e| anyhow!("running the model: {e}"))?;
        let (_, scores) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| anyhow!("reading the model output as f32: {e}"))?;
        self.info.check_output_len(scores.len())?;
        Ok(scores.to_vec())
    }
}

/// The process's ONNX Runtime environment, loading the library on first use. A library that
/// fails to load is an error for every later call too, not a panic.
fn environment(library: &Path) -> anyhow::Result<&'static Environment> {
    static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENVIRONMENT
        .get_or_init(|| {
            ort::init_from(library)
                .map_err(|e| e.to_string())?
                .with_name("densenet-api")
                .with_telemetry(false)
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| {
            anyhow!(
                "loading ONNX Runtime from {}: {e} (set ORT_DYLIB_PATH to libonnxruntime.so)",
                library.display()
            )
        })
}

fn configuring<R>(error: ort::Error<R>) -> anyhow::Error {
    anyhow!("configuring the ONNX Runtime session: {error}")
}

/// The version of the ONNX Runtime library at `library`, e.g. `1.32.0`, read from the library
/// itself; `None` when it cannot be read.
fn version(library: &Path) -> Option<String> {
    // SAFETY: the library is already loaded by `environment`, so opening it again runs no
    // initialisers; `OrtGetApiBase` is ONNX Runtime's C entry point with this signature, and
    // the version string it hands out is a static NUL-terminated string.
    unsafe {
        let lib = libloading::Library::new(library).ok()?;
        let get_api_base: libloading::Symbol<
            unsafe extern "C" fn() -> *const ort::sys::OrtApiBase,
        > = lib.get(b"OrtGetApiBase").ok()?;
        let base = get_api_base();
        if base.is_null() {
            return None;
        }
        let version = ((*base).GetVersionString)();
        if version.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(version)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// The input shape with a symbolic batch dimension fixed to 1: `[1, 3, H, W]`.
fn input_shape(dtype: &ValueType) -> anyhow::Result<Vec<usize>> {
    let shape = dtype
        .tensor_shape()
        .context("the model input is not a tensor")?;
    match &shape[..] {
        [_, 3, h, w] if *h > 0 && *w > 0 => Ok(vec![1, 3, *h as usize, *w as usize]),
        other => bail!("the model input shape {other:?} is not [N, 3, H, W] with a known H and W"),
    }
}

/// The number of scores per image of an output shaped `[classes]` or `[N, classes]`.
fn output_len(dtype: &ValueType) -> anyhow::Result<usize> {
    let shape = dtype
        .tensor_shape()
        .context("the model output is not a tensor")?;
    match &shape[..] {
        [n] | [_, n] if *n > 0 => Ok(*n as usize),
        other => bail!("the model output shape {other:?} is not [classes] or [N, classes]"),
    }
}
