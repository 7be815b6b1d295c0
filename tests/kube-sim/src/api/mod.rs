//! The Kubernetes REST API: routes a request to discovery, a store operation or a watch, and
//! turns the outcome into a response. Also serves the `/_sim/` admin endpoints.
//!
//! Start at [`handle`]. Resource paths follow the API server's layout:
//! `/api/v1/[namespaces/{ns}/]{plural}[/{name}[/{subresource}]]` and
//! `/apis/{group}/{version}/...`, plus the legacy `/api/v1/watch/...` form.
//!
//! This file holds the shared state, the responses and the routing (faults, authentication,
//! then discovery or a resource). The jobs are the submodules: `request` (parsing a request:
//! query parameters, the resource path, selectors, bodies, continue tokens, delete options),
//! `resources` (the handlers of resource paths: each verb, subresources, dry runs) and `admin`
//! (the `/_sim/` endpoints), with `tokens` (rotating the accepted bearer tokens) beside it.

mod admin;
mod request;
mod resources;
mod tokens;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::{Value, json};

use crate::auth::Authenticator;
use crate::discovery;
use crate::error::ApiError;
use crate::faults::Faults;
use crate::store::Store;

pub use request::Query;
use request::RequestContext;

/// The response body type: a full buffer or a watch stream.
pub type Body = BoxBody<Bytes, Infallible>;

/// The largest request body accepted, as the API server's 3 MiB limit.
const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Server-wide settings the API layer needs.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// The `host:port` clients reach us at, for `/api`.
    pub server_address: String,
    /// Whether API responses carry API Priority and Fairness's headers.
    pub apf_headers: bool,
}

/// The flow schema and priority level API Priority and Fairness would name (a real API server
/// sends the UIDs of the objects that matched; clients only look for the headers).
const APF_FLOW_SCHEMA_UID: &str = "d6f1b0a2-6c8b-4f0e-9d61-0a5e1f0c0001";
const APF_PRIORITY_LEVEL_UID: &str = "d6f1b0a2-6c8b-4f0e-9d61-0a5e1f0c0002";

/// Everything a request handler can reach.
pub struct AppState {
    /// The objects.
    pub store: Arc<Store>,
    /// Token checks.
    pub auth: Authenticator,
    /// Fault injection.
    pub faults: Arc<Faults>,
    /// Container logs.
    pub logs: Arc<crate::logs::LogStore>,
    /// The simulated kubelet's running containers, which `/_sim/` actions make exit or fail
    /// their probes.
    pub kubelet: Arc<crate::controllers::kubelet::Kubelet>,
    /// Settings.
    pub settings: ApiSettings,
}

/// A JSON response.
pub fn json_response(status: u16, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// A plain-text response, as `/healthz` answers.
fn text_response(status: u16, text: &str) -> Response<Body> {
    let mut response = json_response(status, &());
    *response.body_mut() = Full::new(Bytes::from(text.to_string())).boxed();
    response
        .headers_mut()
        .insert("content-type", http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The Status response for an error.
pub fn error_response(error: &ApiError) -> Response<Body> {
    let mut response = json_response(error.code(), &error.to_status());
    // As a real API server does, so that clients (client-go, kube-rs, ours) know when to retry.
    if let ApiError::TooManyRequests { retry_after_seconds } = error {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(*retry_after_seconds));
    }
    response
}

/// Handles one HTTP request; never fails, errors become Status responses.
pub async fn handle(state: Arc<AppState>, request: hyper::Request<Incoming>) -> Response<Body> {
    let path = request.uri().path();
    if path.trim_end_matches('/') == "/_sim/tokens" {
        let (parts, body) = request.into_parts();
        return tokens::handle(&state, &parts.method, body)
            .await
            .unwrap_or_else(|error| error_response(&error));
    }
    if let Some(admin_path) = path.strip_prefix("/_sim/") {
        let admin_path = admin_path.to_owned();
        let (parts, body) = request.into_parts();
        return match admin::handle(&state, &parts.method, &admin_path, body).await {
            Ok(response) => response,
            Err(error) => error_response(&error),
        };
    }
    let apf_headers = state.settings.apf_headers;
    let mut response = handle_api(state, request).await;
    if apf_headers {
        // On every answer APF admitted or refused, as the API server does.
        let headers = response.headers_mut();
        headers.insert("x-kubernetes-pf-flowschema-uid", http::HeaderValue::from_static(APF_FLOW_SCHEMA_UID));
        headers.insert(
            "x-kubernetes-pf-prioritylevel-uid",
            http::HeaderValue::from_static(APF_PRIORITY_LEVEL_UID),
        );
    }
    response
}

/// Handles one request to the Kubernetes API (not `/_sim/`).
async fn handle_api(state: Arc<AppState>, request: hyper::Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query = Query::parse(parts.uri.query());
    tracing::debug!(method = %parts.method, %path, query = ?parts.uri.query(), "request");
    if let Some(latency) = state.faults.latency() {
        tokio::time::sleep(latency).await;
    }
    if let Some(error) = state.faults.injected_error() {
        return error_response(&error);
    }
    // Watches and log follows are long-running: APF counts them only as they start, and the
    // in-flight limit leaves them out.
    let long_running = query.is_true("watch") || query.is_true("follow") || path.contains("/watch/");
    let _slot = match long_running {
        true => None,
        false => match state.faults.admit() {
            Ok(slot) => Some(slot),
            Err(error) => return error_response(&error),
        },
    };
    let authorization = parts.headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let identity = match state.auth.authenticate(authorization).await {
        Ok(identity) => identity,
        Err(error) => return error_response(&error),
    };
    let context = RequestContext {
        state: &state,
        method: &parts.method,
        headers: &parts.headers,
        query: &query,
        identity: &identity,
    };
    match route(&context, &path, body).await {
        Ok(response) => response,
        Err(error) => {
            if error.code() >= 500 {
                tracing::warn!(%error, %path, "request failed");
            }
            error_response(&error)
        }
    }
}

/// Routes an authenticated request: discovery, health, OpenAPI, or a resource path.
async fn route(context: &RequestContext<'_>, path: &str, body: Incoming) -> Result<Response<Body>, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let read_only = |value: Option<Value>| -> Result<Response<Body>, ApiError> {
        if context.method != Method::GET {
            return Err(ApiError::MethodNotAllowed);
        }
        value.map(|v| json_response(200, &v)).ok_or(ApiError::NoRoute)
    };
    match segments.as_slice() {
        [] => read_only(Some(
            json!({"paths": ["/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1", "/apis/batch", "/apis/batch/v1", "/apis/rbac.authorization.k8s.io", "/apis/rbac.authorization.k8s.io/v1", "/healthz", "/livez", "/openapi/v3", "/readyz", "/version"]}),
        )),
        ["api"] => read_only(Some(discovery::core_versions(&context.state.settings.server_address))),
        ["apis"] => read_only(Some(discovery::group_list())),
        ["apis", group] => read_only(discovery::group(group)),
        ["version"] => read_only(Some(discovery::version())),
        ["healthz" | "livez" | "readyz", ..] => Ok(text_response(200, "ok")),
        ["openapi", "v3"] => read_only(Some(discovery::openapi_v3_index())),
        ["openapi", "v3", rest @ ..] => read_only(discovery::openapi_v3_document(&rest.join("/"))),
        ["api", "v1"] => read_only(discovery::resource_list("", "v1")),
        ["apis", group, version] => read_only(discovery::resource_list(group, version)),
        ["api", "v1", rest @ ..] => resources::handle(context, "", "v1", rest, body).await,
        ["apis", group, version, rest @ ..] => resources::handle(context, group, version, rest, body).await,
        _ => Err(ApiError::NoRoute),
    }
}
