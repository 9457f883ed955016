//! Shared test helpers: the test model, application state, requests and image fixtures.
#![allow(dead_code)]

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, Response};
use densenet_api::AppState;
use densenet_api::classify::Classifier;
use densenet_api::config::Config;
use densenet_api::inference::{self, LoadOptions, SharedEngine};
use densenet_api::labels::Labels;
use densenet_api::prediction_log::PredictionLog;
use http_body_util::BodyExt;
use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb};
use tower::ServiceExt;

/// The DenseNet-topology test model made by `scripts/make-test-model.py`.
pub fn test_model_path() -> PathBuf {
    let path = std::env::var_os("TEST_MODEL_PATH").map(PathBuf::from).expect(
        "TEST_MODEL_PATH is not set: run the tests with scripts/test.sh, or make a model with \
         `python3 scripts/make-test-model.py --out /tmp/m.onnx` and export TEST_MODEL_PATH=/tmp/m.onnx",
    );
    assert!(
        path.is_file(),
        "TEST_MODEL_PATH={} is not a file",
        path.display()
    );
    path
}

/// The test model, loaded once per test binary.
pub fn engine() -> SharedEngine {
    static ENGINE: OnceLock<SharedEngine> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let options = LoadOptions::new("DenseNet121", 1);
            inference::load(&test_model_path(), &options).expect("loading the test model")
        })
        .clone()
}

/// A classifier over the test model with the ImageNet labels.
pub fn classifier(config: &Config) -> Classifier {
    Classifier::new(engine(), Labels::imagenet(), config.max_image_pixels).expect("labels match")
}

/// A configuration whose prediction log lives in `log_dir`.
pub fn config(log_dir: &std::path::Path) -> Config {
    Config {
        log_dir: log_dir.to_owned(),
        ..Config::default()
    }
}

/// The state of a service with the test model and a local log in `config.log_dir`.
pub fn state(config: Config) -> AppState {
    let classifier = classifier(&config);
    let log = PredictionLog::local(config.stage, config.log_dir.clone());
    AppState::new(config, Some(classifier), log)
}

/// Sends one request through the router, without a socket.
pub async fn send(state: &AppState, request: Request<Body>) -> Response<Body> {
    densenet_api::app(state.clone())
        .oneshot(request)
        .await
        .expect("the router is infallible")
}

/// Collects a response into its status, headers and JSON body.
pub async fn json(response: Response<Body>) -> (u16, axum::http::HeaderMap, serde_json::Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, headers, value)
}

/// The binary's `predict IMAGE --json` on the test model, logging to `log_dir`, with no engine
/// settings inherited from the environment: callers add what they test.
pub fn predict_command(
    image: &std::path::Path,
    log_dir: &std::path::Path,
) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_densenet-api"));
    command
        .arg("predict")
        .arg(image)
        .arg("--json")
        .env("MODEL_PATH", test_model_path())
        .env("LOG_DIR", log_dir)
        .env_remove("ENGINE")
        .env_remove("PREPARED_MODEL_PATH")
        .env_remove("RUST_BACKTRACE");
    command
}

/// A colourful, asymmetric test picture.
pub fn picture(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(ImageBuffer::from_fn(width, height, |x, y| {
        let inside = (x as i64 - width as i64 / 3).pow(2) + (y as i64 - height as i64 / 2).pow(2)
            < (width.min(height) as i64 / 4).pow(2);
        if inside {
            Rgb([220, 40, 30])
        } else {
            Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 160])
        }
    }))
}

/// `image` encoded as `format`.
pub fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, format)
        .expect("encoding a test image");
    out.into_inner()
}

/// A PNG of the test picture.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    encode(&picture(width, height), ImageFormat::Png)
}

/// The boundary used by [`multipart`].
pub const BOUNDARY: &str = "test-boundary-7MA4YWxkTrZu0gW";

/// One multipart part: field name, optional file name, content.
pub type Part<'a> = (&'a str, Option<&'a [u8]>, &'a [u8]);

/// A multipart/form-data body of `(name, filename, bytes)` parts.
pub fn multipart(parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        body.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if let Some(filename) = filename {
            body.extend_from_slice(b"; filename=\"");
            body.extend_from_slice(filename);
            body.extend_from_slice(b"\"\r\nContent-Type: application/octet-stream");
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// A POST of `body` with `content_type` to `uri`.
pub fn post(uri: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri)
        .header("content-type", content_type)
        .body(body.into())
        .expect("request")
}

/// A multipart POST of the given parts to `uri`.
pub fn post_multipart(uri: &str, parts: &[Part]) -> Request<Body> {
    post(
        uri,
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        multipart(parts),
    )
}

/// A GET of `uri`.
pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}
