//! `GET /openapi.json`: the OpenAPI 3 document of every route.

use axum::http::header;
use axum::response::IntoResponse;

/// The OpenAPI document, kept beside this module and checked against the router by the tests.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

pub(super) async fn spec() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}
