//! `GET /`, `GET /health` and `GET /model-info`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::inference::ModelInfo;
use crate::state::AppState;

/// The short model description included in health and prediction responses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelSummary {
    /// The model's name.
    pub name: String,
    /// Its input shape, NCHW.
    pub input_shape: Vec<usize>,
    /// The number of classes it scores.
    pub num_classes: usize,
}

impl From<&ModelInfo> for ModelSummary {
    fn from(info: &ModelInfo) -> Self {
        ModelSummary {
            name: info.name.clone(),
            input_shape: info.input_shape.clone(),
            num_classes: info.num_classes,
        }
    }
}

#[derive(Serialize)]
pub(super) struct Health {
    status: &'static str,
    model_loaded: bool,
    model_info: Option<ModelSummary>,
    stage: &'static str,
    version: &'static str,
}

/// 200 when the model is loaded, 503 otherwise.
pub(super) async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let model_info = state
        .classifier
        .as_ref()
        .map(|c| ModelSummary::from(c.engine().info()));
    let loaded = model_info.is_some();
    let health = Health {
        status: if loaded { "healthy" } else { "unhealthy" },
        model_loaded: loaded,
        model_info,
        stage: state.config.stage.as_str(),
        version: env!("CARGO_PKG_VERSION"),
    };
    let status = if loaded {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health))
}

/// The loaded model's full description.
pub(super) async fn model_info(State(state): State<AppState>) -> Result<Json<ModelInfo>, ApiError> {
    let classifier = state
        .classifier
        .as_ref()
        .ok_or(ApiError::ModelUnavailable)?;
    Ok(Json(classifier.engine().info().clone()))
}
