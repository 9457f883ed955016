//! Inference: the engine trait the routes call, the engines behind it (tract, and ONNX Runtime
//! with the `onnxruntime` feature), and the model-agnostic post-processing (softmax, top-k).

mod onnx;
#[cfg(feature = "onnxruntime")]
mod onnxruntime;
mod postprocess;
mod tract;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::bail;

use serde::Serialize;

pub use postprocess::{Prediction, softmax, top_k};
pub use tract::{Prepared, TractEngine, prepare};

#[cfg(feature = "onnxruntime")]
pub use self::onnxruntime::OnnxRuntimeEngine;

/// Which engine runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// tract, pure Rust: always built in.
    #[default]
    Tract,
    /// ONNX Runtime, loaded at start-up from `libonnxruntime.so`; needs the `onnxruntime` cargo
    /// feature.
    OnnxRuntime,
}

impl EngineKind {
    /// The engine's name, as `ENGINE` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Tract => "tract",
            EngineKind::OnnxRuntime => "onnxruntime",
        }
    }

    /// Whether this build can run the engine.
    pub fn is_built_in(self) -> bool {
        match self {
            EngineKind::Tract => true,
            EngineKind::OnnxRuntime => cfg!(feature = "onnxruntime"),
        }
    }
}

impl FromStr for EngineKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tract" => Ok(EngineKind::Tract),
            "onnxruntime" | "ort" => Ok(EngineKind::OnnxRuntime),
            other => bail!("ENGINE must be `tract` or `onnxruntime`, not {other:?}"),
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the service knows about its model, all of it read from the loaded file.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelInfo {
    /// The model's display name.
    pub name: String,
    /// The model's file format.
    pub framework: &'static str,
    /// The engine running it, with its version.
    pub runtime: String,
    /// The name of the model's image input.
    pub input_name: String,
    /// The input shape, NCHW.
    pub input_shape: Vec<usize>,
    /// The name of the model's score output.
    pub output_name: String,
    /// The number of classes scored.
    pub num_classes: usize,
    /// The number of learned parameters (elements of the initializers).
    pub parameters: u64,
    /// The ONNX operator set version.
    pub opset_version: i64,
    /// The model file's size in bytes.
    pub model_file_size: u64,
    /// The SHA-256 of the model file, hex.
    pub model_sha256: String,
    /// How long loading and optimising took, in milliseconds.
    pub load_time_ms: f64,
}

impl ModelInfo {
    /// Checks that `len` values make one input of the model, as [`Engine::run`] takes it.
    pub(crate) fn check_input_len(&self, len: usize) -> anyhow::Result<()> {
        let expected: usize = self.input_shape.iter().product();
        if len != expected {
            bail!("input has {len} values, the model takes {expected}");
        }
        Ok(())
    }

    /// Checks that an engine's output of `len` scores has one score per class.
    pub(crate) fn check_output_len(&self, len: usize) -> anyhow::Result<()> {
        if len != self.num_classes {
            bail!(
                "the model produced {len} scores, expected {}",
                self.num_classes
            );
        }
        Ok(())
    }

    /// The input's height and width.
    pub fn input_hw(&self) -> (u32, u32) {
        let dim = |i: usize| self.input_shape.get(i).copied().unwrap_or(0) as u32;
        (dim(2), dim(3))
    }
}

/// A loaded model that turns an NCHW input tensor into raw class scores.
pub trait Engine: Send + Sync + 'static {
    /// The model's description.
    fn info(&self) -> &ModelInfo;
    /// Runs the model on one input of `info().input_shape`, returning one raw score per class.
    fn run(&self, input: Vec<f32>) -> anyhow::Result<Vec<f32>>;
}

/// The engine shared by every request.
pub type SharedEngine = Arc<dyn Engine>;

/// Options for loading a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The name reported for the model.
    pub name: String,
    /// Threads for one inference; 0 or 1 runs on the calling thread.
    pub threads: usize,
    /// The engine to load the model into.
    pub engine: EngineKind,
    /// Where ONNX Runtime's shared library is, for [`EngineKind::OnnxRuntime`].
    pub onnxruntime_library: PathBuf,
    /// A model written by [`prepare`] that tract loads instead of the ONNX file.
    pub prepared_model: Option<PathBuf>,
}

impl LoadOptions {
    /// Options for the default engine.
    pub fn new(name: impl Into<String>, threads: usize) -> LoadOptions {
        LoadOptions {
            name: name.into(),
            threads,
            engine: EngineKind::default(),
            onnxruntime_library: PathBuf::from(DEFAULT_ONNXRUNTIME_LIBRARY),
            prepared_model: None,
        }
    }
}

/// ONNX Runtime's library when `ORT_DYLIB_PATH` is unset: found on the loader's search path.
pub const DEFAULT_ONNXRUNTIME_LIBRARY: &str = "libonnxruntime.so";

/// Loads the model at `path` into the engine `options` name.
pub fn load(path: &Path, options: &LoadOptions) -> anyhow::Result<SharedEngine> {
    match options.engine {
        EngineKind::Tract => Ok(Arc::new(TractEngine::load(path, options)?)),
        #[cfg(feature = "onnxruntime")]
        EngineKind::OnnxRuntime => Ok(Arc::new(OnnxRuntimeEngine::load(path, options)?)),
        #[cfg(not(feature = "onnxruntime"))]
        EngineKind::OnnxRuntime => bail!(
            "ENGINE=onnxruntime needs a build with the onnxruntime feature \
             (cargo build --release --features onnxruntime)"
        ),
    }
}
