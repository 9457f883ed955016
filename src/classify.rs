//! The classification pipeline shared by the HTTP routes and the CLI:
//! bytes -> decode -> pre-process -> inference -> softmax -> top-k, with each stage timed.

use std::time::Instant;

use serde::Serialize;

use crate::inference::{Prediction, SharedEngine, softmax, top_k};
use crate::labels::Labels;
use crate::preprocess::{self, ImageError};

/// How long each stage of one classification took, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Timings {
    /// Decoding the image bytes.
    pub decode: f64,
    /// Resizing and normalising.
    pub preprocess: f64,
    /// Running the model.
    pub inference: f64,
}

impl Timings {
    /// Decode + pre-process + model run, the original service's `inference_time_ms`.
    pub fn total_ms(&self) -> f64 {
        self.decode + self.preprocess + self.inference
    }
}

/// The outcome of classifying one image.
#[derive(Debug, Clone)]
pub struct Classification {
    /// The top-k classes, most probable first.
    pub predictions: Vec<Prediction>,
    /// Per-stage durations.
    pub timings: Timings,
}

/// Why classification failed.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// The client's image is unusable.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The model failed to run.
    #[error("inference failed: {0:#}")]
    Inference(#[source] anyhow::Error),
}

/// The model, its labels and the decode limit: everything needed to classify an image.
#[derive(Clone)]
pub struct Classifier {
    engine: SharedEngine,
    labels: Labels,
    max_pixels: u64,
}

impl Classifier {
    /// A classifier over a loaded engine; fails if the labels do not match the model's outputs.
    pub fn new(engine: SharedEngine, labels: Labels, max_pixels: u64) -> anyhow::Result<Self> {
        labels.check_matches(engine.info().num_classes)?;
        Ok(Classifier {
            engine,
            labels,
            max_pixels,
        })
    }

    /// The engine, for its model description.
    pub fn engine(&self) -> &SharedEngine {
        &self.engine
    }

    /// The number of classes the model scores.
    pub fn num_classes(&self) -> usize {
        self.engine.info().num_classes
    }

    /// Classifies one encoded image. CPU-bound: call it off the async executor.
    pub fn classify(&self, bytes: &[u8], k: usize) -> Result<Classification, ClassifyError> {
        let started = Instant::now();
        let (height, width) = self.engine.info().input_hw();
        let rgb = preprocess::decode_for_input(bytes, self.max_pixels, width, height)?;
        let decoded = Instant::now();
        let tensor = preprocess::to_tensor(&rgb, width, height)?;
        drop(rgb);
        let preprocessed = Instant::now();
        let scores = self.engine.run(tensor).map_err(ClassifyError::Inference)?;
        let inferred = Instant::now();
        let predictions = top_k(&softmax(&scores), k, &self.labels);
        let ms = |from: Instant, to: Instant| (to - from).as_secs_f64() * 1000.0;
        Ok(Classification {
            predictions,
            timings: Timings {
                decode: ms(started, decoded),
                preprocess: ms(decoded, preprocessed),
                inference: ms(preprocessed, inferred),
            },
        })
    }
}
