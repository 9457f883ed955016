//! The Lambda path: real API Gateway event documents (REST v1 and HTTP v2, as `sam local
//! generate-event` writes them) through lambda_http's request parsing, the stage-stripping
//! service and lambda_http's response conversion.

mod common;

use base64::Engine as _;
use common::*;
use densenet_api::AppState;
use lambda_http::{Body as LambdaBody, IntoResponse};
use serde_json::{Value, json};
use tower::ServiceExt;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/events/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// What API Gateway would receive back: status, content type, and the body as text or bytes.
struct GatewayResponse {
    status: u16,
    content_type: String,
    body: LambdaBody,
}

impl GatewayResponse {
    fn json(&self) -> Value {
        match &self.body {
            LambdaBody::Text(text) => {
                serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
            }
            other => panic!("a JSON response must go out as text, not {other:?}"),
        }
    }
}

async fn invoke(state: &AppState, event: &Value) -> GatewayResponse {
    let request =
        lambda_http::request::from_str(&event.to_string()).expect("a valid API Gateway event");
    let response = densenet_api::lambda_service(state.clone())
        .oneshot(request)
        .await
        .unwrap();
    let response = response.into_response().await;
    GatewayResponse {
        status: response.status().as_u16(),
        content_type: response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default(),
        body: response.into_body(),
    }
}

fn service() -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().unwrap();
    let state = state(config(dir.path()));
    (dir, state)
}

#[tokio::test]
async fn rest_v1_with_stage_reaches_the_routes() {
    let (_dir, state) = service();
    let response = invoke(&state, &fixture("rest-v1-health")).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.content_type, "application/json");
    let body = response.json();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["stage"], "dev");
}

#[tokio::test]
async fn http_v2_on_default_and_on_a_named_stage() {
    let (_dir, state) = service();
    for name in ["http-v2-health", "http-v2-health-stage-in-path"] {
        let response = invoke(&state, &fixture(name)).await;
        assert_eq!(response.status, 200, "{name}");
        assert_eq!(response.json()["model_loaded"], true, "{name}");
    }
    // The same v2 event with a stage name that is not in the path still routes.
    let mut event = fixture("http-v2-health");
    event["requestContext"]["stage"] = json!("prod");
    assert_eq!(invoke(&state, &event).await.status, 200);
}

#[tokio::test]
async fn base64_image_multipart_and_json_bodies_agree() {
    let (_dir, state) = service();
    let png = invoke(&state, &fixture("rest-v1-predict-png")).await;
    let multipart = invoke(&state, &fixture("rest-v1-predict-file-multipart")).await;
    let json_body = invoke(&state, &fixture("rest-v1-predict-json")).await;
    for r in [&png, &multipart, &json_body] {
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.content_type, "application/json");
    }
    let (png, multipart, json_body) = (png.json(), multipart.json(), json_body.json());
    // The fixtures carry the same picture; each asks for its own top_k.
    let top = |v: &Value| v["predictions"].as_array().unwrap().clone();
    for other in [&multipart, &json_body] {
        let n = top(other).len();
        assert!(n >= 1);
        assert_eq!(top(&png)[..n], top(other)[..], "{other}");
    }
    assert_eq!(png["success"], true);
}

#[tokio::test]
async fn http_v2_base64_body_on_a_named_stage() {
    let (_dir, state) = service();
    let image = png(80, 60);
    let mut event = fixture("http-v2-health-stage-in-path");
    event["rawPath"] = json!("/dev/predict");
    event["rawQueryString"] = json!("top_k=3&filename=v2.png");
    event["requestContext"]["http"]["method"] = json!("POST");
    event["requestContext"]["http"]["path"] = json!("/dev/predict");
    event["headers"]["content-type"] = json!("image/png");
    event["isBase64Encoded"] = json!(true);
    event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(&image));
    let response = invoke(&state, &event).await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    let body = response.json();
    assert_eq!(body["predictions"].as_array().unwrap().len(), 3);
    assert_eq!(body["filename"], "v2.png");
}

#[tokio::test]
async fn errors_and_preflight_through_the_lambda_path() {
    let (_dir, state) = service();
    let response = invoke(&state, &fixture("rest-v1-predict-invalid-image")).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["code"], "invalid_image");

    let mut event = fixture("rest-v1-health");
    event["path"] = json!("/missing");
    let response = invoke(&state, &event).await;
    assert_eq!(response.status, 404);
    assert_eq!(response.json()["code"], "not_found");

    let preflight = invoke(&state, &fixture("rest-v1-preflight")).await;
    assert_eq!(preflight.status, 200);
}

#[test]
fn strip_stage_only_removes_a_whole_leading_segment() {
    use lambda_http::request::RequestContext;
    let with_stage = |path: &str, stage: &str| {
        let mut event = fixture("rest-v1-health");
        event["path"] = json!(path);
        event["requestContext"]["stage"] = json!(stage);
        let request = lambda_http::request::from_str(&event.to_string()).unwrap();
        assert!(matches!(
            lambda_http::RequestExt::request_context_ref(&request),
            Some(RequestContext::ApiGatewayV1(_))
        ));
        densenet_api::strip_stage(request).uri().path().to_owned()
    };
    assert_eq!(with_stage("/dev/predict", "dev"), "/predict");
    assert_eq!(with_stage("/predict", "dev"), "/predict");
    assert_eq!(with_stage("/devices/x", "dev"), "/devices/x");
    // REST v1 paths never carry the stage, so a resource literally named `/dev` keeps its name.
    assert_eq!(with_stage("/dev", "dev"), "/dev");
}
