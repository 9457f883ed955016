//! `POST /predict` and its alias `POST /predict-file`: one image in any of three envelopes
//! (base64 JSON, multipart upload, raw body), classified, logged and answered.

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Uri, header};
use base64::Engine as _;
use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::{Deserialize, Serialize};

use super::ModelSummary;
use crate::classify::{Classification, Classifier, ClassifyError};
use crate::error::ApiError;
use crate::inference::{ModelInfo, Prediction};
use crate::prediction_log::LogEntry;
use crate::preprocess::ImageError;
use crate::state::AppState;

/// The body of a successful prediction.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct PredictResponse {
    /// Always `true`.
    pub success: bool,
    /// The client's file name, or `unknown`.
    pub filename: String,
    /// The top-k classes, most probable first.
    pub predictions: Vec<Prediction>,
    /// Decode + pre-process + model run, in milliseconds.
    pub inference_time_ms: f64,
    /// Each stage's duration, in milliseconds.
    pub timings_ms: TimingsMs,
    /// The model that answered.
    pub model_info: ModelSummary,
    /// The request's id (Lambda's when run there).
    pub request_id: String,
}

/// Per-stage durations in the response.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct TimingsMs {
    /// Decoding the image.
    pub decode: f64,
    /// Resizing and normalising.
    pub preprocess: f64,
    /// Running the model.
    pub inference: f64,
}

/// An image as the client sent it, before decoding.
#[derive(Debug, Default)]
struct Upload {
    image: Bytes,
    filename: Option<String>,
    top_k: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct PredictQuery {
    top_k: Option<String>,
    filename: Option<String>,
}

#[derive(Deserialize)]
struct JsonEnvelope {
    image: Option<String>,
    top_k: Option<serde_json::Value>,
    filename: Option<String>,
}

/// Classifies the request's image.
pub(super) async fn predict(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<PredictResponse>, ApiError> {
    let classifier = state.classifier.clone().ok_or(ApiError::ModelUnavailable)?;
    let (parts, body) = request.into_parts();
    let request_id = request_id(&parts.extensions);
    let query = parse_query(&parts.uri)?;
    let body = read_body(body, &parts.headers, state.config.max_body_bytes).await?;
    let upload = parse_envelope(&parts.headers, body, query).await?;
    let k = parse_top_k(
        upload.top_k.as_deref(),
        state.config.default_top_k,
        classifier.num_classes(),
    )?;

    let classification = classify(&state, classifier.clone(), upload.image, k).await?;

    let filename = upload
        .filename
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    state
        .log
        .record(LogEntry {
            timestamp: Utc::now(),
            filename: Some(filename.clone()),
            predictions: classification.predictions.clone(),
            processing_time_s: classification.timings.total_ms() / 1000.0,
        })
        .await;
    Ok(Json(PredictResponse::new(
        filename,
        classification,
        classifier.engine().info(),
        request_id,
    )))
}

impl PredictResponse {
    /// The response for one classified image.
    pub fn new(filename: String, c: Classification, model: &ModelInfo, request_id: String) -> Self {
        PredictResponse {
            success: true,
            filename,
            predictions: c.predictions,
            inference_time_ms: round3(c.timings.total_ms()),
            timings_ms: TimingsMs {
                decode: round3(c.timings.decode),
                preprocess: round3(c.timings.preprocess),
                inference: round3(c.timings.inference),
            },
            model_info: ModelSummary::from(model),
            request_id,
        }
    }
}

/// Runs the CPU-bound pipeline on the blocking pool, at most `max_concurrent_inferences` at once.
async fn classify(
    state: &AppState,
    classifier: Classifier,
    image: Bytes,
    k: usize,
) -> Result<Classification, ApiError> {
    let _permit = state
        .permits
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("the service is shutting down".into()))?;
    let outcome = tokio::task::spawn_blocking(move || classifier.classify(&image, k))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("classification task failed: {e}")))?;
    match outcome {
        Ok(c) => Ok(c),
        Err(ClassifyError::Image(ImageError::Invalid(m))) => Err(ApiError::InvalidImage(m)),
        Err(ClassifyError::Image(ImageError::TooLarge(m))) => Err(ApiError::TooLarge(m)),
        Err(e @ ClassifyError::Inference(_)) => Err(ApiError::Internal(e.into())),
    }
}

fn request_id(extensions: &axum::http::Extensions) -> String {
    use lambda_http::RequestExt;
    match extensions.lambda_context_ref() {
        Some(context) => context.request_id.clone(),
        None => uuid::Uuid::new_v4().to_string(),
    }
}

fn parse_query(uri: &Uri) -> Result<PredictQuery, ApiError> {
    Query::<PredictQuery>::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|e| {
            ApiError::InvalidQuery(format!("the query string is malformed: {}", e.body_text()))
        })
}

/// Reads the whole body, refusing more than `limit` bytes without buffering them.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::TooLarge(format!(
            "the request body exceeds the limit of {limit} bytes"
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(ApiError::InvalidImage(format!(
            "the request body could not be read: {e}"
        ))),
    }
}

/// The media type without parameters, lower-cased: `Multipart/Form-Data; boundary=x` ->
/// `multipart/form-data`.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    (!essence.is_empty()).then_some(essence)
}

async fn parse_envelope(
    headers: &HeaderMap,
    body: Bytes,
    query: PredictQuery,
) -> Result<Upload, ApiError> {
    if body.is_empty() {
        return Err(ApiError::EmptyBody);
    }
    let media = media_type(headers);
    let upload = match media.as_deref() {
        Some("application/json") => parse_json(&body)?,
        Some("multipart/form-data") => parse_multipart(headers, body).await?,
        Some(m) if m.starts_with("image/") || m == "application/octet-stream" => Upload {
            image: body,
            ..Upload::default()
        },
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type {} is not accepted: send application/json with a base64 `image`, \
                 multipart/form-data with a `file` field, or the image itself as image/* or \
                 application/octet-stream",
                other.map_or_else(|| "(none)".to_owned(), |m| format!("`{m}`"))
            )));
        }
    };
    Ok(Upload {
        image: upload.image,
        filename: upload.filename.or(query.filename),
        top_k: upload.top_k.or(query.top_k),
    })
}

fn parse_json(body: &[u8]) -> Result<Upload, ApiError> {
    let envelope: JsonEnvelope =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let encoded = envelope.image.unwrap_or_default();
    if encoded.trim().is_empty() {
        return Err(ApiError::MissingImage(
            "the JSON body has no `image`: send {\"image\": \"<base64>\"}".into(),
        ));
    }
    let image = decode_base64(&encoded)?;
    if image.is_empty() {
        return Err(ApiError::MissingImage(
            "the `image` field decodes to no bytes".into(),
        ));
    }
    let top_k = envelope.top_k.map(|v| match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    });
    Ok(Upload {
        image: image.into(),
        filename: envelope.filename,
        top_k,
    })
}

/// Decodes standard or URL-safe base64, padded or not, with line breaks, optionally inside a
/// `data:` URI.
fn decode_base64(encoded: &str) -> Result<Vec<u8>, ApiError> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const CONFIG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, CONFIG);

    let payload = match encoded.trim_start().strip_prefix("data:") {
        Some(uri) => match uri.split_once(',') {
            Some((meta, data)) if meta.ends_with(";base64") => data,
            _ => {
                return Err(ApiError::InvalidBase64(
                    "a data: URI must be `data:<type>;base64,<data>`".into(),
                ));
            }
        },
        None => encoded,
    };
    let compact: String = payload
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD
        .decode(&compact)
        .or_else(|_| URL_SAFE.decode(&compact))
        .map_err(|e| ApiError::InvalidBase64(e.to_string()))
}

async fn parse_multipart(headers: &HeaderMap, body: Bytes) -> Result<Upload, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| ApiError::InvalidMultipart(format!("no usable boundary: {e}")))?;
    let stream =
        futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut upload = Upload::default();
    let mut found = false;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| ApiError::InvalidMultipart(e.to_string()))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "file" | "image" if !found => {
                upload.filename = field.file_name().map(str::to_owned);
                upload.image = field
                    .bytes()
                    .await
                    .map_err(|e| ApiError::InvalidMultipart(e.to_string()))?;
                found = true;
            }
            "top_k" => {
                let text = field
                    .text()
                    .await
                    .map_err(|e| ApiError::InvalidMultipart(e.to_string()))?;
                upload.top_k = Some(text);
            }
            "filename" => {
                let text = field
                    .text()
                    .await
                    .map_err(|e| ApiError::InvalidMultipart(e.to_string()))?;
                upload.filename.get_or_insert(text);
            }
            _ => {}
        }
    }
    if !found {
        return Err(ApiError::MissingImage(
            "the multipart body has no `file` field".into(),
        ));
    }
    if upload.image.is_empty() {
        return Err(ApiError::MissingImage("the `file` field is empty".into()));
    }
    Ok(upload)
}

/// Parses `top_k`: an integer in 1..=num_classes, or the default when absent.
fn parse_top_k(raw: Option<&str>, default: usize, num_classes: usize) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(default.min(num_classes));
    };
    match raw.trim().parse::<usize>() {
        Ok(k) if (1..=num_classes).contains(&k) => Ok(k),
        _ => Err(ApiError::InvalidTopK {
            got: raw.chars().take(40).collect(),
            max: num_classes,
        }),
    }
}

fn round3(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_accepts_only_integers_in_range() {
        assert_eq!(parse_top_k(None, 5, 1000).unwrap(), 5);
        assert_eq!(parse_top_k(None, 5, 3).unwrap(), 3);
        assert_eq!(parse_top_k(Some("1"), 5, 1000).unwrap(), 1);
        assert_eq!(parse_top_k(Some(" 1000 "), 5, 1000).unwrap(), 1000);
        for bad in ["0", "1001", "-1", "2.5", "five", "", "1e3"] {
            let err = parse_top_k(Some(bad), 5, 1000).unwrap_err();
            assert_eq!(err.code(), "invalid_top_k", "{bad}");
        }
    }

    #[test]
    fn base64_accepts_common_variants() {
        let bytes = [0xffu8, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0xfe];
        for encoded in [
            "/9j/4AAQ/g==",
            "/9j/4AAQ/g",
            "_9j_4AAQ_g",
            "/9j/\n4AAQ\r\n/g==",
            "data:image/jpeg;base64,/9j/4AAQ/g==",
        ] {
            assert_eq!(decode_base64(encoded).unwrap(), bytes, "{encoded}");
        }
        for bad in ["not base64!", "data:image/png,abc", "@@@@"] {
            assert_eq!(
                decode_base64(bad).unwrap_err().code(),
                "invalid_base64",
                "{bad}"
            );
        }
    }

    #[test]
    fn media_type_ignores_parameters_and_case() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "Multipart/Form-Data; boundary=x".parse().unwrap(),
        );
        assert_eq!(media_type(&headers).as_deref(), Some("multipart/form-data"));
        headers.insert(
            header::CONTENT_TYPE,
            "application/json;charset=utf-8".parse().unwrap(),
        );
        assert_eq!(media_type(&headers).as_deref(), Some("application/json"));
        assert_eq!(media_type(&HeaderMap::new()), None);
    }
}
