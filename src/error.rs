//! The one error type of the HTTP API: each variant maps to a status and a machine code, and
//! answers `{"detail", "code"}` without internals.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_base64`: the `image` field is not valid base64.
    #[error("the `image` field is not valid base64: {0}")]
    InvalidBase64(String),
    /// 400 `invalid_image`: no supported decoder accepts the bytes.
    #[error("{0}")]
    InvalidImage(String),
    /// 400 `empty_body`: the request has no body.
    #[error("the request body is empty: send an image")]
    EmptyBody,
    /// 400 `missing_image`: the envelope holds no image.
    #[error("{0}")]
    MissingImage(String),
    /// 400 `invalid_json`: the JSON envelope does not parse.
    #[error("the JSON body is malformed: {0}")]
    InvalidJson(String),
    /// 400 `invalid_multipart`: the multipart envelope does not parse.
    #[error("the multipart body is malformed: {0}")]
    InvalidMultipart(String),
    /// 400 `invalid_query`: a query parameter has the wrong form.
    #[error("{0}")]
    InvalidQuery(String),
    /// 413 `too_large`: the body or the decoded image exceeds the configured limits.
    #[error("{0}")]
    TooLarge(String),
    /// 415 `unsupported_media_type`: the route does not take this Content-Type.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422 `invalid_top_k`: `top_k` is not an integer in 1..=num_classes.
    #[error("top_k must be an integer from 1 to {max}, got {got}")]
    InvalidTopK {
        /// What the client sent, as text.
        got: String,
        /// The number of classes of the model.
        max: usize,
    },
    /// 403 `forbidden_stage`: the operation is allowed only in the dev stage.
    #[error("Operación solo permitida en entorno de desarrollo")]
    ForbiddenStage,
    /// 404 `not_found`: no such route.
    #[error("no route for {0}")]
    NotFound(String),
    /// 405 `method_not_allowed`: the route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 503 `model_unavailable`: the model failed to load.
    #[error("the model is not loaded")]
    ModelUnavailable,
    /// 503 `busy`: the service cannot take the request right now.
    #[error("{0}")]
    Unavailable(String),
    /// 500 `internal`: anything else; the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// A human-readable message (FastAPI's key, so older clients read it).
    pub detail: String,
    /// A stable machine-readable code.
    pub code: String,
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidBase64(_)
            | ApiError::InvalidImage(_)
            | ApiError::EmptyBody
            | ApiError::MissingImage(_)
            | ApiError::InvalidJson(_)
            | ApiError::InvalidMultipart(_)
            | ApiError::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::InvalidTopK { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::ForbiddenStage => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::ModelUnavailable | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidBase64(_) => "invalid_base64",
            ApiError::InvalidImage(_) => "invalid_image",
            ApiError::EmptyBody => "empty_body",
            ApiError::MissingImage(_) => "missing_image",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidMultipart(_) => "invalid_multipart",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::TooLarge(_) => "too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::InvalidTopK { .. } => "invalid_top_k",
            ApiError::ForbiddenStage => "forbidden_stage",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::ModelUnavailable => "model_unavailable",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        ApiError::Internal(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(err) = &self {
            tracing::error!(error = ?err, "request failed");
        }
        let body = ErrorBody {
            detail: self.to_string(),
            code: self.code().to_owned(),
        };
        (self.status_code(), Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let err = ApiError::Internal(anyhow::anyhow!("opening /secret/path failed"));
        assert_eq!(err.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.to_string(), "internal error");
        assert_eq!(err.code(), "internal");
    }

    #[test]
    fn top_k_message_names_the_range() {
        let err = ApiError::InvalidTopK {
            got: "0".into(),
            max: 1000,
        };
        assert_eq!(err.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            err.to_string(),
            "top_k must be an integer from 1 to 1000, got 0"
        );
    }
}
