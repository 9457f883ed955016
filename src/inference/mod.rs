//! Inference: the engine trait the routes call, the tract engine behind it, and the model-agnostic
//! post-processing (softmax, top-k).

mod postprocess;
mod tract;

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

pub use postprocess::{Prediction, softmax, top_k};
pub use tract::TractEngine;

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
    /// Threads for one inference's matrix products; 0 or 1 runs on the calling thread.
    pub threads: usize,
}

/// Loads the model at `path` with the default engine.
pub fn load(path: &Path, options: &LoadOptions) -> anyhow::Result<SharedEngine> {
    Ok(Arc::new(TractEngine::load(path, options)?))
}
