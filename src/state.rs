//! The state every request shares: configuration, the classifier, the prediction log, and the
//! permits that bound how many images are decoded and classified at once.

use std::ops::Deref;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::classify::Classifier;
use crate::config::Config;
use crate::prediction_log::PredictionLog;

/// Shared, cheaply cloned application state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The contents of [`AppState`].
pub struct Inner {
    /// The service configuration.
    pub config: Config,
    /// The loaded model with its labels; `None` when the model failed to load.
    pub classifier: Option<Classifier>,
    /// The stage's prediction log.
    pub log: PredictionLog,
    /// One permit per image being decoded or classified.
    pub permits: Semaphore,
}

impl AppState {
    /// Builds the state from its parts.
    pub fn new(config: Config, classifier: Option<Classifier>, log: PredictionLog) -> Self {
        let permits = Semaphore::new(config.max_concurrent_inferences);
        AppState(Arc::new(Inner {
            config,
            classifier,
            log,
            permits,
        }))
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
