//! Parsing a request: query parameters, the resource path, selectors, JSON bodies, continue
//! tokens, the verb and delete options. Nothing here touches the store.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::Value;

use super::{AppState, MAX_BODY_BYTES};
use crate::auth::Identity;
use crate::error::ApiError;
use crate::resources::Kind;
use crate::selector::{FieldSelector, Filter, parse_labels};
use crate::store::{DeleteOptions, ObjectKey, Propagation};
use crate::table::IncludeObject;

/// A parsed query string.
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    /// Parses `a=b&c=d`, percent-decoding both sides.
    pub fn parse(query: Option<&str>) -> Query {
        Query(form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect())
    }

    /// A parameter's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Whether a boolean parameter is set (`true` or `1`).
    pub(super) fn is_true(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

/// One authenticated request, as the handlers of resource paths see it.
pub(super) struct RequestContext<'a> {
    /// The server's state.
    pub(super) state: &'a Arc<AppState>,
    /// The HTTP method.
    pub(super) method: &'a Method,
    /// The request headers.
    pub(super) headers: &'a HeaderMap,
    /// The query parameters.
    pub(super) query: &'a Query,
    /// Who sent it.
    pub(super) identity: &'a Identity,
}

impl RequestContext<'_> {
    /// How to render a server-side Table, when the client asked for one (`Accept: ...;as=Table`).
    pub(super) fn table(&self) -> Option<IncludeObject> {
        let accept = self.headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
        accept.contains("as=Table").then(|| IncludeObject::parse(self.query.get("includeObject")))
    }

    /// The body's media type (JSON when unsaid).
    pub(super) fn content_type(&self) -> &str {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
    }
}

/// What a resource path names.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Target {
    /// The resource's kind.
    pub(super) kind: Kind,
    /// The namespace of a namespaced path.
    pub(super) namespace: Option<String>,
    /// The object's name, for paths of one object.
    pub(super) name: Option<String>,
    /// `status`, `scale`, `log`...
    pub(super) subresource: Option<String>,
}

/// Parses the part of a resource path after `/api/v1` or `/apis/{group}/{version}`.
pub(super) fn parse_target(group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let namespaced_kind =
        |plural: &str| Kind::from_path(group, version, plural).filter(|k| k.info().namespaced);
    let (kind, namespace, tail) = match rest {
        ["namespaces", namespace, plural, tail @ ..] if namespaced_kind(plural).is_some() => {
            (namespaced_kind(plural).ok_or(ApiError::NoRoute)?, Some(namespace.to_string()), tail)
        }
        [plural, tail @ ..] => {
            let kind = Kind::from_path(group, version, plural).ok_or(ApiError::NoRoute)?;
            if kind.info().namespaced && !tail.is_empty() {
                return Err(ApiError::NoRoute);
            }
            (kind, None, tail)
        }
        [] => return Err(ApiError::NoRoute),
    };
    if tail.len() > 2 {
        return Err(ApiError::NoRoute);
    }
    Ok(Target {
        kind,
        namespace,
        name: tail.first().map(|s| s.to_string()),
        subresource: tail.get(1).map(|s| s.to_string()),
    })
}

/// The `labelSelector` and `fieldSelector` parameters (400 for a field `kind` cannot select on).
pub(super) fn filter_from(query: &Query, kind: Kind) -> Result<Filter, ApiError> {
    let labels = parse_labels(query.get("labelSelector").unwrap_or_default())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or_default())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    for requirement in &fields.requirements {
        if !kind.supports_field_label(&requirement.field) {
            return Err(ApiError::BadRequest(format!("field label not supported: {}", requirement.field)));
        }
    }
    Ok(Filter { labels, fields })
}

/// A JSON body (`null` when empty), at most [`MAX_BODY_BYTES`].
pub(super) async fn read_json(body: Incoming) -> Result<Value, ApiError> {
    let collected = Limited::new(body, MAX_BODY_BYTES).collect().await.map_err(|error| {
        if error.is::<http_body_util::LengthLimitError>() {
            ApiError::TooLarge
        } else {
            ApiError::BadRequest(format!("failed to read the request body: {error}"))
        }
    })?;
    let bytes = collected.to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::BadRequest(format!("the object provided is unrecognized: {error}")))
}

/// What a `continue` token carries: the list's resourceVersion and the last key served.
#[derive(Serialize, serde::Deserialize)]
pub(super) struct ContinueToken {
    /// The resourceVersion of the first page, which later pages report too.
    pub(super) rv: u64,
    /// The namespace of the last object served.
    pub(super) ns: String,
    /// The name of the last object served.
    pub(super) name: String,
    /// How many objects the pages so far served (tokens without it count from zero).
    #[serde(default)]
    pub(super) served: u64,
}

/// The opaque `continue` token for the page after `key`.
pub(super) fn encode_continue(resource_version: u64, key: &ObjectKey, served: u64) -> String {
    let token =
        ContinueToken { rv: resource_version, ns: key.namespace.clone(), name: key.name.clone(), served };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

/// Reads a `continue` token (400 like a real server when it is not one of ours).
pub(super) fn decode_continue(token: &str) -> Result<ContinueToken, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            ApiError::BadRequest(
                "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"
                    .into(),
            )
        })
}

/// Only JSON bodies are understood; protobuf (which kubectl's typed clients send for some
/// commands) is refused with 415, as a server without that codec would.
pub(super) fn require_json(context: &RequestContext<'_>) -> Result<(), ApiError> {
    let content_type = context.content_type();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if essence == "application/json" || essence.is_empty() || essence == "*/*" {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json (got {content_type})"
        )))
    }
}

/// The Kubernetes verb of a request, for authorization and dispatch.
pub(super) fn verb_for(method: &Method, target: &Target, watch: bool) -> Result<&'static str, ApiError> {
    Ok(match (method.as_str(), target.name.is_some()) {
        ("GET", _) if watch => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return Err(ApiError::MethodNotAllowed),
    })
}

/// The propagation policy and preconditions of a delete, from its body or query.
pub(super) fn delete_options(query: &Query, body: &Value) -> Result<DeleteOptions, ApiError> {
    let policy = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or_else(|| query.get("propagationPolicy"))
        .map(str::to_string);
    let orphan = body
        .get("orphanDependents")
        .and_then(Value::as_bool)
        .or_else(|| query.get("orphanDependents").map(|v| v == "true"));
    let propagation = match (policy.as_deref(), orphan) {
        (Some("Foreground"), _) => Some(Propagation::Foreground),
        (Some("Background"), _) => Some(Propagation::Background),
        (Some("Orphan"), _) | (None, Some(true)) => Some(Propagation::Orphan),
        (None, _) => None,
        (Some(other), _) => {
            return Err(ApiError::BadRequest(format!(
                "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
    };
    let preconditions = body.get("preconditions");
    Ok(DeleteOptions {
        propagation,
        uid: preconditions.and_then(|p| p.get("uid")).and_then(Value::as_str).map(str::to_string),
        resource_version: preconditions
            .and_then(|p| p.get("resourceVersion"))
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// (kind, namespace, name, subresource) a path should name.
    type Expected<'a> = (Kind, Option<&'a str>, Option<&'a str>, Option<&'a str>);

    #[track_caller]
    fn check(group: &str, path: &str, expected: Option<Expected<'_>>) {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let parsed = parse_target(group, "v1", &segments).ok();
        let expected = expected.map(|(kind, namespace, name, subresource)| Target {
            kind,
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            subresource: subresource.map(str::to_string),
        });
        assert_eq!(parsed, expected, "{path}");
    }

    #[test]
    fn resource_paths() {
        check("", "pods", Some((Kind::Pod, None, None, None)));
        check("", "namespaces/default/pods", Some((Kind::Pod, Some("default"), None, None)));
        check(
            "",
            "namespaces/default/pods/web/status",
            Some((Kind::Pod, Some("default"), Some("web"), Some("status"))),
        );
        check("", "namespaces/default", Some((Kind::Namespace, None, Some("default"), None)));
        check(
            "",
            "namespaces/default/status",
            Some((Kind::Namespace, None, Some("default"), Some("status"))),
        );
        check("", "nodes/node-1", Some((Kind::Node, None, Some("node-1"), None)));
        check("apps", "namespaces/x/deployments/d", Some((Kind::Deployment, Some("x"), Some("d"), None)));
        check("", "pods/web", None);
        check("", "widgets", None);
        check("", "namespaces/default/pods/web/status/extra", None);
    }

    #[test]
    fn continue_tokens_round_trip() {
        let token = encode_continue(42, &ObjectKey::new("default", "web-1"), 500);
        let decoded = decode_continue(&token).unwrap();
        assert_eq!((decoded.rv, decoded.ns.as_str(), decoded.name.as_str()), (42, "default", "web-1"));
        assert_eq!(decoded.served, 500);
        let older =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"rv":1,"ns":"default","name":"a"}"#);
        assert_eq!(decode_continue(&older).unwrap().served, 0, "tokens from before the count still work");
        assert!(decode_continue("not a token").is_err());
    }

    #[test]
    fn delete_options_come_from_body_or_query() {
        let query = Query::parse(Some("propagationPolicy=Orphan"));
        assert_eq!(delete_options(&query, &Value::Null).unwrap().propagation, Some(Propagation::Orphan));
        assert_eq!(delete_options(&Query::parse(None), &Value::Null).unwrap().propagation, None);
        let body = json!({"propagationPolicy": "Foreground", "preconditions": {"uid": "u"}});
        let options = delete_options(&Query::default(), &body).unwrap();
        assert_eq!(options.propagation, Some(Propagation::Foreground));
        assert_eq!(options.uid.as_deref(), Some("u"));
        assert!(delete_options(&Query::parse(Some("propagationPolicy=Sideways")), &Value::Null).is_err());
    }
}
