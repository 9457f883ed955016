//! `/logs/predictions*`: the stage's prediction log as text, as a download and as statistics,
//! and clearing it (dev stage only).

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::config::Stage;
use crate::error::ApiError;
use crate::prediction_log::{DEFAULT_VIEW_LINES, LogStats, LogView, MAX_VIEW_LINES, format};
use crate::state::AppState;

/// The log routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/logs/predictions", get(view).delete(clear))
        .route("/logs/predictions/download", get(download))
        .route("/logs/predictions/stats", get(stats))
}

#[derive(Deserialize)]
struct ViewQuery {
    limit: Option<String>,
}

/// The header and the last `limit` prediction lines, with statistics.
async fn view(State(state): State<AppState>, uri: Uri) -> Result<Json<LogView>, ApiError> {
    let limit = parse_limit(&uri)?;
    Ok(Json(state.log.view(limit).await?))
}

fn parse_limit(uri: &Uri) -> Result<usize, ApiError> {
    let Query(query) = Query::<ViewQuery>::try_from_uri(uri).map_err(|e| {
        ApiError::InvalidQuery(format!("the query string is malformed: {}", e.body_text()))
    })?;
    let Some(raw) = query.limit else {
        return Ok(DEFAULT_VIEW_LINES);
    };
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_VIEW_LINES).contains(&n) => Ok(n),
        _ => Err(ApiError::InvalidQuery(format!(
            "limit must be an integer from 1 to {MAX_VIEW_LINES}, got {:?}",
            raw.chars().take(40).collect::<String>()
        ))),
    }
}

/// The whole log as a text file, streamed.
async fn download(State(state): State<AppState>) -> Result<Response, ApiError> {
    let stage = state.log.stage();
    let chunks = state.log.download().await?.inspect_err(move |err| {
        tracing::warn!(error = format!("{err:#}"), %stage, "log download broke off");
    });
    let disposition = format!("attachment; filename=predicciones_{stage}.txt");
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// Statistics over the whole log.
async fn stats(State(state): State<AppState>) -> Result<Json<LogStats>, ApiError> {
    Ok(Json(state.log.stats().await?))
}

#[derive(Serialize)]
struct Cleared {
    message: &'static str,
    stage: &'static str,
    timestamp: String,
}

/// Clears the log; only the dev stage allows it, and any other answers 403 untouched.
async fn clear(State(state): State<AppState>) -> Result<Json<Cleared>, ApiError> {
    if state.config.stage != Stage::Dev || state.log.stage() != Stage::Dev {
        return Err(ApiError::ForbiddenStage);
    }
    let at = state.log.clear().await?;
    Ok(Json(Cleared {
        message: "Logs limpiados exitosamente",
        stage: Stage::Dev.as_str(),
        timestamp: format::timestamp(at),
    }))
}
