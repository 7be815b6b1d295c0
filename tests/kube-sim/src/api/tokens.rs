//! `PUT /_sim/tokens`: replaces the bearer tokens the simulator accepts, so that a test can
//! rotate a service-account token the way a cluster does (the kubelet writes a new projected
//! token, the API server stops taking the old one) and check that its client follows.
//!
//! The body is `{"tokens": ["..."]}`; each token gets full access, and every token accepted
//! before (the read-only and restricted ones too) is refused from then on. Like every `/_sim/`
//! endpoint it needs no credentials: the simulator is a test fixture on loopback.

use std::sync::Arc;

use http::{Method, Response};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::request::read_json;
use super::{AppState, Body, json_response};
use crate::error::ApiError;

/// The body of `PUT /_sim/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensRequest {
    tokens: Vec<String>,
}

/// Serves `/_sim/tokens`.
pub(super) async fn handle(
    state: &Arc<AppState>,
    method: &Method,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    if !matches!(method.as_str(), "PUT" | "POST") {
        return Err(ApiError::MethodNotAllowed);
    }
    let request: TokensRequest = serde_json::from_value(read_json(body).await?)
        .map_err(|error| ApiError::BadRequest(format!("invalid tokens request: {error}")))?;
    if request.tokens.is_empty() || request.tokens.iter().any(|token| token.trim().is_empty()) {
        // No tokens at all would make every request anonymous and allowed: never what a
        // rotation means.
        return Err(ApiError::BadRequest("tokens must name at least one non-empty token".to_owned()));
    }
    state.auth.replace_tokens(&request.tokens);
    // The count only: tokens are credentials, even in a simulator.
    tracing::info!(count = request.tokens.len(), "bearer tokens replaced");
    Ok(json_response(200, &json!({"tokens": request.tokens.len()})))
}
