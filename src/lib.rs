//! DenseNet121 image classification over HTTP.
//!
//! One axum [`Router`] serves every route; it runs inside AWS Lambda behind API Gateway
//! ([`lambda_service`]), as a local server ([`serve`]) and under the tests (`Router::oneshot`).
//! A request reads top to bottom: [`routes`] -> [`preprocess`] -> [`inference`] ->
//! [`prediction_log`] -> response.

pub mod classify;
pub mod cli;
pub mod config;
pub mod error;
pub mod inference;
pub mod labels;
pub mod model_repo;
pub mod prediction_log;
pub mod preprocess;
pub mod routes;
pub mod state;

use std::future::Future;

use axum::Router;
use axum::http::{Request, Uri};
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use tokio::net::TcpListener;

pub use state::AppState;

/// The router of every route over `state`.
pub fn app(state: AppState) -> Router {
    routes::router(state)
}

/// The router as API Gateway sees it: the stage name is removed from the front of the path
/// (`/dev/predict` -> `/predict`), whichever payload version and stage setting delivered it.
pub fn lambda_service(
    state: AppState,
) -> impl tower::Service<
    lambda_http::Request,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    tower::ServiceBuilder::new()
        .map_request(strip_stage)
        .service(app(state))
}

/// Removes `/{stage}` from the start of the path when the API Gateway context names a stage.
pub fn strip_stage<B>(mut request: Request<B>) -> Request<B> {
    let stage = match request.extensions().request_context_ref() {
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.stage.clone(),
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.stage.clone(),
        _ => None,
    };
    let Some(stage) = stage.filter(|s| !s.is_empty() && s != "$default") else {
        return request;
    };
    let uri = request.uri();
    let prefix = format!("/{stage}");
    let Some(rest) = uri.path().strip_prefix(&prefix) else {
        return request;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return request;
    }
    let path = if rest.is_empty() { "/" } else { rest };
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(new_uri) = Uri::from_parts(parts) {
            *request.uri_mut() = new_uri;
        }
    }
    request
}

/// Serves the router on `listener` until `shutdown` completes, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}
