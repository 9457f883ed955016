//! The HTTP routes: one axum router for the Lambda function, the local server and the tests.

mod health;
mod logs;
mod openapi;
mod predict;

use axum::Router;
use axum::http::{HeaderName, Method, Uri, header};
use axum::routing::{get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::config::AllowedOrigins;
use crate::error::ApiError;
use crate::state::AppState;

pub use health::ModelSummary;
pub use openapi::OPENAPI_JSON;
pub use predict::PredictResponse;

/// The router of every route, with CORS and request tracing.
pub fn router(state: AppState) -> Router {
    let cors = cors_layer(&state.config.cors_allow_origins);
    Router::new()
        .route("/", get(health::health))
        .route("/health", get(health::health))
        .route("/model-info", get(health::model_info))
        .route("/openapi.json", get(openapi::spec))
        .route("/predict", post(predict::predict))
        .route("/predict-file", post(predict::predict))
        .merge(logs::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(cors)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

fn cors_layer(origins: &AllowedOrigins) -> CorsLayer {
    let allow_origin = match origins {
        AllowedOrigins::Any => AllowOrigin::any(),
        AllowedOrigins::List(list) => AllowOrigin::list(list.iter().filter_map(|o| o.parse().ok())),
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("x-api-key"),
        ])
        .expose_headers([header::CONTENT_DISPOSITION])
        .max_age(std::time::Duration::from_secs(600))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
