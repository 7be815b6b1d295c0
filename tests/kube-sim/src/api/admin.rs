//! The `/_sim/` admin endpoints: health, the store's resourceVersion, fault injection,
//! appending container log lines, restarting a container, a container's exit and probe
//! results (handed to the simulated kubelet), a node's readiness, and counters (`stats`: log follow
//! streams open and ever opened, API requests and injected errors).

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::request::read_json;
use super::{AppState, Body, MAX_BODY_BYTES, json_response, text_response};
use crate::error::ApiError;
use crate::faults::FaultRequest;

/// `POST /_sim/pods/{namespace}/{name}/exit`: which container exits, and how.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExitRequest {
    /// The container (default: the pod's first).
    container: Option<String>,
    /// Its exit code.
    exit_code: i64,
}

/// `POST /_sim/nodes/{name}`: whether the node's kubelet posts a ready status.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeRequest {
    /// The node's Ready condition.
    ready: bool,
}

/// A JSON body as `T` (400 when it is not one).
fn parse_body<T: serde::de::DeserializeOwned>(body: serde_json::Value) -> Result<T, ApiError> {
    let body = if body.is_null() { json!({}) } else { body };
    serde_json::from_value(body).map_err(|e| ApiError::BadRequest(format!("invalid request: {e}")))
}

/// Serves one `/_sim/{path}` request: no authentication and no injected faults, so tests can
/// always reach them.
pub(super) async fn handle(
    state: &Arc<AppState>,
    method: &Method,
    path: &str,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    match (method.as_str(), path.trim_end_matches('/')) {
        ("GET", "healthz") => Ok(text_response(200, "ok")),
        ("GET", "state") => {
            Ok(json_response(200, &json!({"resourceVersion": state.store.resource_version().to_string()})))
        }
        ("GET", "faults") => Ok(json_response(200, &state.faults.settings())),
        ("GET", "stats") => {
            let (open, total) = state.logs.follow_counts();
            let (requests, injected) = state.faults.counts();
            Ok(json_response(
                200,
                &json!({"logFollowsOpen": open, "logFollowsTotal": total,
                    "apiRequestsTotal": requests, "injectedErrorsTotal": injected}),
            ))
        }
        ("POST", restart) if restart.starts_with("restart/") => {
            let body = read_json(body).await?;
            let exit_code = match body.get("exitCode") {
                None => 1,
                Some(code) => code.as_i64().ok_or_else(|| {
                    ApiError::BadRequest(format!("exitCode must be an integer, got {code}"))
                })?,
            };
            let restarts = crate::logs::restart_from_admin(state, &restart["restart/".len()..], exit_code)?;
            Ok(json_response(200, &json!({"restartCount": restarts})))
        }
        ("POST", pod) if pod.starts_with("pods/") => {
            let parts: Vec<&str> = pod.split('/').collect();
            let body = read_json(body).await?;
            let written = match parts.as_slice() {
                ["pods", namespace, name, "exit"] => {
                    let request: ExitRequest = parse_body(body)?;
                    state.kubelet.exit(namespace, name, request.container.as_deref(), request.exit_code)?
                }
                ["pods", namespace, name, "probes"] => {
                    let request: crate::controllers::kubelet::ProbeResults = parse_body(body)?;
                    state.kubelet.set_probes(namespace, name, &request)?
                }
                _ => return Err(ApiError::NoRoute),
            };
            Ok(json_response(200, &*written))
        }
        ("POST", node) if node.starts_with("nodes/") => {
            let request: NodeRequest = parse_body(read_json(body).await?)?;
            let written =
                crate::controllers::nodes::set_ready(&state.store, &node["nodes/".len()..], request.ready)?;
            Ok(json_response(200, &*written))
        }
        ("POST", logs) if logs.starts_with("logs/") => {
            let collected = Limited::new(body, MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| ApiError::BadRequest(format!("failed to read the request body: {e}")))?;
            let text = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
            crate::logs::append_from_admin(state, &logs["logs/".len()..], &text)?;
            Ok(json_response(200, &json!({})))
        }
        ("DELETE", "faults") => {
            state.faults.reset();
            Ok(json_response(200, &state.faults.settings()))
        }
        ("POST" | "PUT", "faults") => {
            let body = read_json(body).await?;
            let request: FaultRequest = if body.is_null() {
                FaultRequest::default()
            } else {
                serde_json::from_value(body)
                    .map_err(|e| ApiError::BadRequest(format!("invalid fault request: {e}")))?
            };
            let settings = state.faults.apply(&request).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            if request.force_gone {
                state.store.force_gone();
            }
            if request.drop_watches_now {
                state.faults.drop_watches_now();
            }
            if let Some(millis) = request.refuse_connections_for_ms {
                let faults = state.faults.clone();
                // Answer this request before the listener and its connections go away.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    faults.refuse_connections_for(Duration::from_millis(millis));
                });
            }
            Ok(json_response(
                200,
                &json!({"settings": settings, "resourceVersion": state.store.resource_version().to_string()}),
            ))
        }
        _ => Err(ApiError::NoRoute),
    }
}
