//! The HTTP contract through the router (no socket): the three envelopes, every error row,
//! health, model info, CORS and the OpenAPI document.

mod common;

use axum::body::Body;
use axum::http::Request;
use base64::Engine as _;
use common::*;
use densenet_api::AppState;
use densenet_api::config::{AllowedOrigins, Config};
use densenet_api::inference::{Engine, ModelInfo};
use densenet_api::prediction_log::PredictionLog;
use image::ImageFormat;
use serde_json::{Value, json};
use sha2::Digest;

fn service() -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().unwrap();
    let state = state(config(dir.path()));
    (dir, state)
}

fn predictions(body: &Value) -> Vec<(u64, String, f64)> {
    body["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|p| {
            (
                p["class_id"].as_u64().unwrap(),
                p["label"].as_str().unwrap().to_owned(),
                p["probability"].as_f64().unwrap(),
            )
        })
        .collect()
}

async fn expect_error(state: &AppState, request: Request<Body>, status: u16, code: &str) -> String {
    let (got_status, headers, body) = json(send(state, request).await).await;
    assert_eq!(
        (got_status, body["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let detail = body["detail"].as_str().expect("detail").to_owned();
    assert!(!detail.is_empty());
    assert!(
        !detail.contains("/src/") && !detail.contains("panicked"),
        "{detail}"
    );
    detail
}

#[tokio::test]
async fn the_three_envelopes_give_the_same_answer() {
    let (_dir, state) = service();
    let image = png(300, 200);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&image);

    let (s1, _, multipart) = json(
        send(
            &state,
            post_multipart("/predict", &[("file", Some(b"cat.png"), &image)]),
        )
        .await,
    )
    .await;
    let (s2, _, base64) = json(
        send(
            &state,
            post(
                "/predict",
                "application/json",
                json!({"image": b64, "filename": "cat.png"}).to_string(),
            ),
        )
        .await,
    )
    .await;
    let (s3, _, raw) = json(
        send(
            &state,
            post("/predict?filename=cat.png", "image/png", image.clone()),
        )
        .await,
    )
    .await;
    let data_uri =
        json!({"image": format!("data:image/png;base64,{b64}"), "filename": "cat.png"}).to_string();
    let (s4, _, alias) =
        json(send(&state, post("/predict-file", "application/json", data_uri)).await).await;
    let (s5, _, octet) = json(
        send(
            &state,
            post(
                "/predict-file?filename=cat.png",
                "application/octet-stream",
                image.clone(),
            ),
        )
        .await,
    )
    .await;

    assert_eq!([s1, s2, s3, s4, s5], [200; 5]);
    let expected = predictions(&multipart);
    assert_eq!(expected.len(), 5);
    for other in [&base64, &raw, &alias, &octet] {
        assert_eq!(predictions(other), expected);
        assert_eq!(other["filename"], "cat.png");
    }
    let body = &multipart;
    assert_eq!(body["success"], true);
    assert_eq!(body["filename"], "cat.png");
    assert_eq!(
        body["model_info"],
        json!({"name": "DenseNet121", "input_shape": [1, 3, 224, 224], "num_classes": 1000})
    );
    let probs: Vec<f64> = expected.iter().map(|p| p.2).collect();
    assert!(probs.windows(2).all(|w| w[0] >= w[1]), "{probs:?}");
    assert!(probs.iter().all(|p| (0.0..=1.0).contains(p)));
    let first = &body["predictions"][0];
    assert_eq!(first["rank"], 1);
    assert_eq!(first["confidence"], format!("{:.2}%", probs[0] * 100.0));
    let t = &body["timings_ms"];
    let sum = t["decode"].as_f64().unwrap()
        + t["preprocess"].as_f64().unwrap()
        + t["inference"].as_f64().unwrap();
    assert!((body["inference_time_ms"].as_f64().unwrap() - sum).abs() < 0.01);
    assert!(t["inference"].as_f64().unwrap() > 0.0);
    assert_eq!(body["request_id"].as_str().unwrap().len(), 36);
}

#[tokio::test]
async fn top_k_comes_from_json_form_or_query() {
    let (_dir, state) = service();
    let image = png(64, 64);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&image);
    let cases = [
        post(
            "/predict",
            "application/json",
            json!({"image": b64, "top_k": 3}).to_string(),
        ),
        post(
            "/predict",
            "application/json",
            json!({"image": b64, "top_k": "2"}).to_string(),
        ),
        post("/predict?top_k=7", "image/png", image.clone()),
        post_multipart(
            "/predict",
            &[("file", Some(b"a.png"), &image), ("top_k", None, b"1")],
        ),
        post_multipart("/predict?top_k=4", &[("file", Some(b"a.png"), &image)]),
        post("/predict?top_k=1000", "image/png", image.clone()),
    ];
    for (request, k) in cases.into_iter().zip([3, 2, 7, 1, 4, 1000]) {
        let (status, _, body) = json(send(&state, request).await).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["predictions"].as_array().unwrap().len(), k);
    }
    let (_, _, body) = json(send(&state, post("/predict", "image/png", image)).await).await;
    assert_eq!(
        body["predictions"].as_array().unwrap().len(),
        5,
        "default top_k"
    );
    assert_eq!(body["filename"], "unknown");
    let (_, _, body) = json(
        send(
            &state,
            post("/predict?filename=%20", "image/png", png(20, 20)),
        )
        .await,
    )
    .await;
    assert_eq!(body["filename"], "unknown", "a blank name is no name");
}

#[tokio::test]
async fn every_accepted_format_is_classified() {
    let (_dir, state) = service();
    let picture = picture(120, 90);
    for (format, mime) in [
        (ImageFormat::Jpeg, "image/jpeg"),
        (ImageFormat::Png, "image/png"),
        (ImageFormat::WebP, "image/webp"),
        (ImageFormat::Gif, "image/gif"),
        (ImageFormat::Bmp, "image/bmp"),
        (ImageFormat::Tiff, "image/tiff"),
    ] {
        let (status, _, body) =
            json(send(&state, post("/predict", mime, encode(&picture, format))).await).await;
        assert_eq!(status, 200, "{format:?}: {body}");
        assert_eq!(body["predictions"].as_array().unwrap().len(), 5);
    }
}

#[tokio::test]
async fn client_mistakes_get_their_error_codes() {
    let (_dir, state) = service();
    let image = png(32, 32);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&image);
    let json_body = |value: Value| post("/predict", "application/json", value.to_string());
    let garbage =
        base64::engine::general_purpose::STANDARD.encode(b"hello, this is text and not a picture");
    let svg = b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec();
    let multipart_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let truncated_multipart = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\nabc"
    );
    let no_type = Request::post("/predict")
        .body(Body::from(image.clone()))
        .unwrap();

    let cases: Vec<(Request<Body>, u16, &str)> = vec![
        (
            json_body(json!({"image": "%%%not base64%%%"})),
            400,
            "invalid_base64",
        ),
        (
            json_body(json!({"image": "data:image/png,abc"})),
            400,
            "invalid_base64",
        ),
        (json_body(json!({"image": garbage})), 400, "invalid_image"),
        (
            post("/predict", "image/png", b"not a png at all".to_vec()),
            400,
            "invalid_image",
        ),
        (
            post("/predict", "image/png", image[..image.len() / 2].to_vec()),
            400,
            "invalid_image",
        ),
        (post("/predict", "image/svg+xml", svg), 400, "invalid_image"),
        (post("/predict", "image/png", Vec::new()), 400, "empty_body"),
        (
            post("/predict", "application/json", Vec::new()),
            400,
            "empty_body",
        ),
        (
            json_body(json!({"filename": "a.png"})),
            400,
            "missing_image",
        ),
        (json_body(json!({"image": ""})), 400, "missing_image"),
        (
            post_multipart("/predict", &[("top_k", None, b"3")]),
            400,
            "missing_image",
        ),
        (
            post_multipart("/predict", &[("file", Some(b"a.png"), b"")]),
            400,
            "missing_image",
        ),
        (
            post("/predict", "application/json", r#"{"image": "abc""#),
            400,
            "invalid_json",
        ),
        (
            post("/predict", "application/json", r#"["image"]"#),
            400,
            "invalid_json",
        ),
        (json_body(json!({"image": 42})), 400, "invalid_json"),
        (
            post("/predict", "multipart/form-data", image.clone()),
            400,
            "invalid_multipart",
        ),
        (
            post("/predict", &multipart_type, truncated_multipart),
            400,
            "invalid_multipart",
        ),
        (
            post("/predict?top_k=1&top_k=2", "image/png", image.clone()),
            400,
            "invalid_query",
        ),
        (
            post("/predict", "text/plain", "hello"),
            415,
            "unsupported_media_type",
        ),
        (
            post("/predict", "application/x-www-form-urlencoded", "image=abc"),
            415,
            "unsupported_media_type",
        ),
        (no_type, 415, "unsupported_media_type"),
        (
            json_body(json!({"image": b64, "top_k": 0})),
            422,
            "invalid_top_k",
        ),
        (
            json_body(json!({"image": b64, "top_k": 3.5})),
            422,
            "invalid_top_k",
        ),
    ];
    for (request, status, code) in cases {
        expect_error(&state, request, status, code).await;
    }
    for bad in ["0", "1001", "-3", "abc", "2.5"] {
        let request = post(&format!("/predict?top_k={bad}"), "image/png", image.clone());
        let detail = expect_error(&state, request, 422, "invalid_top_k").await;
        assert!(detail.contains("1 to 1000"), "{detail}");
    }

    let (status, _, body) =
        json(send(&state, json_body(json!({"image": b64, "top_k": null}))).await).await;
    assert_eq!(
        (status, body["predictions"].as_array().unwrap().len()),
        (200, 5)
    );
}

#[tokio::test]
async fn oversized_bodies_and_decompression_bombs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(Config {
        max_body_bytes: 10_000,
        max_image_pixels: 100_000,
        ..config(dir.path())
    });
    let big = vec![0u8; 10_001];
    let detail = expect_error(
        &state,
        post("/predict", "image/png", big.clone()),
        413,
        "too_large",
    )
    .await;
    assert!(detail.contains("10000"), "{detail}");
    // Without a Content-Length header the limit still holds while streaming.
    let stream = futures_util::stream::iter(
        big.chunks(1000)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let chunked = Request::post("/predict")
        .header("content-type", "image/png")
        .body(Body::from_stream(stream))
        .unwrap();
    expect_error(&state, chunked, 413, "too_large").await;

    // 400x300 = 120,000 pixels: small as a file, over the decoded-pixel limit.
    let flat = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
        400,
        300,
        image::Rgb([9, 9, 9]),
    ));
    let png = encode(&flat, ImageFormat::Png);
    assert!(png.len() < 10_000);
    let detail = expect_error(&state, post("/predict", "image/png", png), 413, "too_large").await;
    assert!(detail.contains("400x300"), "{detail}");

    // A PNG header declaring 16000x16000 pixels with no data behind it.
    let mut bomb = encode(
        &image::DynamicImage::ImageRgb8(image::RgbImage::new(1, 1)),
        ImageFormat::Png,
    );
    bomb[16..20].copy_from_slice(&16000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&16000u32.to_be_bytes());
    let crc = crc32fast::hash(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    let detail = expect_error(
        &state,
        post("/predict", "image/png", bomb),
        413,
        "too_large",
    )
    .await;
    assert!(detail.contains("16000x16000"), "{detail}");
}

/// An engine that always fails, to exercise the 500 path.
struct BrokenEngine(ModelInfo);

impl Engine for BrokenEngine {
    fn info(&self) -> &ModelInfo {
        &self.0
    }
    fn run(&self, _input: Vec<f32>) -> anyhow::Result<Vec<f32>> {
        anyhow::bail!("kernel exploded reading /opt/secret/path")
    }
}

#[tokio::test]
async fn internal_failures_answer_500_without_details() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let engine = std::sync::Arc::new(BrokenEngine(engine().info().clone()));
    let classifier = densenet_api::classify::Classifier::new(
        engine,
        densenet_api::labels::Labels::imagenet(),
        config.max_image_pixels,
    )
    .unwrap();
    let log = PredictionLog::local(config.stage, config.log_dir.clone());
    let state = AppState::new(config, Some(classifier), log);
    let detail = expect_error(
        &state,
        post("/predict", "image/png", png(40, 40)),
        500,
        "internal",
    )
    .await;
    assert_eq!(detail, "internal error");
}

#[tokio::test]
async fn without_a_model_the_service_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let log = PredictionLog::local(config.stage, config.log_dir.clone());
    let state = AppState::new(config, None, log);
    let (status, _, body) = json(send(&state, get("/health")).await).await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["model_loaded"], false);
    expect_error(&state, get("/model-info"), 503, "model_unavailable").await;
    expect_error(
        &state,
        post("/predict", "image/png", png(40, 40)),
        503,
        "model_unavailable",
    )
    .await;
}

#[tokio::test]
async fn health_and_model_info_describe_the_loaded_model() {
    let (_dir, state) = service();
    for path in ["/", "/health"] {
        let (status, _, body) = json(send(&state, get(path)).await).await;
        assert_eq!(status, 200);
        assert_eq!(body["status"], "healthy");
        assert_eq!(body["model_loaded"], true);
        assert_eq!(body["stage"], "dev");
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(body["model_info"]["num_classes"], 1000);
        assert!(
            !body
                .to_string()
                .contains(std::env::current_dir().unwrap().to_str().unwrap())
        );
    }
    let (status, _, info) = json(send(&state, get("/model-info")).await).await;
    assert_eq!(status, 200);
    let file = std::fs::read(test_model_path()).unwrap();
    let sha = sha2::Sha256::digest(&file)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    assert_eq!(info["framework"], "ONNX");
    assert!(
        info["runtime"].as_str().unwrap().starts_with("tract 0."),
        "{info}"
    );
    assert_eq!(info["input_name"], "x");
    assert_eq!(info["input_shape"], json!([1, 3, 224, 224]));
    assert_eq!(info["num_classes"], 1000);
    assert_eq!(info["opset_version"], 17);
    assert_eq!(info["model_file_size"], file.len() as u64);
    assert_eq!(info["model_sha256"], sha);
    // DenseNet121 has about 8.0 million parameters, BatchNorm statistics included.
    let parameters = info["parameters"].as_u64().unwrap();
    assert!((7_900_000..8_100_000).contains(&parameters), "{parameters}");
    assert!(info["load_time_ms"].as_f64().unwrap() > 0.0);
    assert!(!info["output_name"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let (_dir, state) = service();
    expect_error(&state, get("/nope"), 404, "not_found").await;
    expect_error(&state, get("/predict"), 405, "method_not_allowed").await;
    expect_error(
        &state,
        post("/health", "application/json", "{}"),
        405,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn cors_preflight_and_headers() {
    let (_dir, state) = service();
    let preflight = Request::options("/predict")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .body(Body::empty())
        .unwrap();
    let response = send(&state, preflight).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let methods = response.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    assert!(
        response
            .headers()
            .get("access-control-allow-credentials")
            .is_none()
    );

    let with_origin = Request::get("/health")
        .header("origin", "https://app.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&state, with_origin).await.headers()["access-control-allow-origin"],
        "*"
    );

    let dir = tempfile::tempdir().unwrap();
    let allowed = AllowedOrigins::List(vec!["https://good.example".into()]);
    let state = common::state(Config {
        cors_allow_origins: allowed,
        ..config(dir.path())
    });
    let good = Request::get("/health")
        .header("origin", "https://good.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&state, good).await.headers()["access-control-allow-origin"],
        "https://good.example"
    );
    let bad = Request::get("/health")
        .header("origin", "https://evil.example")
        .body(Body::empty())
        .unwrap();
    assert!(
        send(&state, bad)
            .await
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn openapi_documents_every_route() {
    let (_dir, state) = service();
    let (status, _, spec) = json(send(&state, get("/openapi.json")).await).await;
    assert_eq!(status, 200);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let paths = spec["paths"].as_object().unwrap();
    for (path, method) in [
        ("/", "get"),
        ("/health", "get"),
        ("/model-info", "get"),
        ("/openapi.json", "get"),
        ("/predict", "post"),
        ("/predict-file", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} undocumented"
        );
    }
    // Every documented operation is routed (no 404 from the router for any of them).
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let request = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(path.as_str())
                .body(Body::empty())
                .unwrap();
            let status = send(&state, request).await.status();
            assert_ne!(status, 404, "{method} {path}");
            assert_ne!(status, 405, "{method} {path}");
        }
    }
}
