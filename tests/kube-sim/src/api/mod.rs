//! The Kubernetes REST API: routes a request to discovery, a store operation or a watch, and
//! turns the outcome into a response. Also serves the `/_sim/` admin endpoints.
//!
//! Start at [`handle`]. Resource paths follow the API server's layout:
//! `/api/v1/[namespaces/{ns}/]{plural}[/{name}[/{subresource}]]` and
//! `/apis/{group}/{version}/...`, plus the legacy `/api/v1/watch/...` form.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::{Value, json};

use crate::auth::{self, Authenticator, Identity};
use crate::discovery;
use crate::error::ApiError;
use crate::faults::{FaultRequest, Faults};
use crate::meta;
use crate::patch::PatchType;
use crate::resources::Kind;
use crate::selector::{FieldSelector, Filter, LabelSelector};
use crate::store::{DeleteOptions, ObjectKey, Propagation, Store, WatchFrom, WriteTarget};
use crate::table::{self, IncludeObject};
use crate::watch::{self, WatchRequest};

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
}

/// Everything a request handler can reach.
pub struct AppState {
    /// The objects.
    pub store: Arc<Store>,
    /// Token checks.
    pub auth: Authenticator,
    /// Fault injection.
    pub faults: Arc<Faults>,
    /// Container logs.
    pub logs: crate::logs::LogStore,
    /// Settings.
    pub settings: ApiSettings,
}

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

    fn is_true(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
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
    if matches!(error, ApiError::TooManyRequests) {
        response.headers_mut().insert("retry-after", http::HeaderValue::from_static("1"));
    }
    response
}

/// Handles one HTTP request; never fails, errors become Status responses.
pub async fn handle(state: Arc<AppState>, request: hyper::Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query = Query::parse(parts.uri.query());
    tracing::debug!(method = %parts.method, %path, query = ?parts.uri.query(), "request");
    if let Some(admin_path) = path.strip_prefix("/_sim/") {
        return match admin(&state, &parts.method, admin_path, body).await {
            Ok(response) => response,
            Err(error) => error_response(&error),
        };
    }
    if let Some(latency) = state.faults.latency() {
        tokio::time::sleep(latency).await;
    }
    if let Some(error) = state.faults.injected_error() {
        return error_response(&error);
    }
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

struct RequestContext<'a> {
    state: &'a Arc<AppState>,
    method: &'a Method,
    headers: &'a HeaderMap,
    query: &'a Query,
    identity: &'a Identity,
}

impl RequestContext<'_> {
    fn table(&self) -> Option<IncludeObject> {
        let accept = self.headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
        accept.contains("as=Table").then(|| IncludeObject::parse(self.query.get("includeObject")))
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
    }
}

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
            json!({"paths": ["/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1", "/healthz", "/livez", "/openapi/v3", "/readyz", "/version"]}),
        )),
        ["api"] => read_only(Some(discovery::core_versions(&context.state.settings.server_address))),
        ["apis"] => read_only(Some(discovery::group_list())),
        ["apis", "apps"] => read_only(Some(discovery::apps_group())),
        ["version"] => read_only(Some(discovery::version())),
        ["healthz" | "livez" | "readyz", ..] => Ok(text_response(200, "ok")),
        ["openapi", "v3"] => read_only(Some(discovery::openapi_v3_index())),
        ["openapi", "v3", rest @ ..] => read_only(discovery::openapi_v3_document(&rest.join("/"))),
        ["api", "v1"] => read_only(discovery::resource_list("", "v1")),
        ["apis", group, version] => read_only(discovery::resource_list(group, version)),
        ["api", "v1", rest @ ..] => resource(context, "", "v1", rest, body).await,
        ["apis", group, version, rest @ ..] => resource(context, group, version, rest, body).await,
        _ => Err(ApiError::NoRoute),
    }
}

/// What a resource path names.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_target(group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
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

fn filter_from(query: &Query, kind: Kind) -> Result<Filter, ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())
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

async fn read_json(body: Incoming) -> Result<Value, ApiError> {
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

#[derive(Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
}

fn encode_continue(resource_version: u64, key: &ObjectKey) -> String {
    let token = ContinueToken { rv: resource_version, ns: key.namespace.clone(), name: key.name.clone() };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

fn decode_continue(token: &str) -> Result<ContinueToken, ApiError> {
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
fn require_json(context: &RequestContext<'_>) -> Result<(), ApiError> {
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

fn verb_for(method: &Method, target: &Target, watch: bool) -> Result<&'static str, ApiError> {
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

fn delete_options(query: &Query, body: &Value) -> Result<DeleteOptions, ApiError> {
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
        (Some("Foreground"), _) => Propagation::Foreground,
        (Some("Background"), _) => Propagation::Background,
        (Some("Orphan"), _) | (None, Some(true)) => Propagation::Orphan,
        (None, _) => Propagation::Background,
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

#[derive(Serialize)]
struct ListBody<'a> {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: Value,
    items: Vec<&'a Value>,
}

fn list_response(
    context: &RequestContext<'_>,
    kind: Kind,
    items: &[Arc<Value>],
    metadata: Value,
) -> Response<Body> {
    if let Some(include) = context.table() {
        let resource_version = metadata["resourceVersion"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0);
        let table = table::table(
            kind,
            items.iter().map(|o| o.as_ref()),
            resource_version,
            metadata["continue"].as_str(),
            include,
        );
        return json_response(200, &table);
    }
    json_response(
        200,
        &ListBody {
            kind: kind.list_kind(),
            api_version: kind.api_version(),
            metadata,
            items: items.iter().map(|o| o.as_ref()).collect(),
        },
    )
}

fn object_response(context: &RequestContext<'_>, kind: Kind, status: u16, object: &Value) -> Response<Body> {
    match context.table() {
        Some(include) => json_response(
            status,
            &table::table(kind, std::iter::once(object), meta::resource_version(object), None, include),
        ),
        None => json_response(status, object),
    }
}

async fn resource(
    context: &RequestContext<'_>,
    group: &str,
    version: &str,
    rest: &[&str],
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let target = parse_target(group, version, rest)?;
    let watch = legacy_watch || context.query.is_true("watch");
    let verb = verb_for(context.method, &target, watch)?;
    let kind = target.kind;
    let info = kind.info();
    let target_write = match target.subresource.as_deref() {
        None => WriteTarget::Main,
        Some("status") if info.has_status && matches!(verb, "get" | "update" | "patch") => {
            WriteTarget::Status
        }
        Some("log") if kind == Kind::Pod && verb == "get" => WriteTarget::Main,
        Some("scale") if kind == Kind::Deployment && matches!(verb, "get" | "update" | "patch") => {
            WriteTarget::Main
        }
        Some(_) => return Err(ApiError::NoRoute),
    };
    let namespace = target.namespace.as_deref();
    if verb == "create" && info.namespaced && namespace.is_none() {
        return Err(ApiError::MethodNotAllowed);
    }
    let name = target.name.clone().unwrap_or_default();
    auth::authorize(context.identity, verb, kind, namespace, &name)?;
    let store = &context.state.store;
    let scope = namespace.unwrap_or_default();
    let dry_run = match context.query.get("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => return Err(ApiError::BadRequest(format!("Invalid dry run value: {other:?}"))),
    };
    if target.subresource.as_deref() == Some("scale") {
        return scale(context, scope, &name, verb, body, dry_run).await;
    }
    match verb {
        "get" => {
            let object = store.get(kind, scope, &name)?;
            if target.subresource.as_deref() == Some("log") {
                return crate::logs::serve(context.state, &object, context.query);
            }
            Ok(object_response(context, kind, 200, &object))
        }
        "list" => {
            let filter = filter_from(context.query, kind)?;
            let limit = match context.query.get("limit") {
                Some(limit) => Some(
                    limit
                        .parse::<usize>()
                        .map_err(|_| ApiError::BadRequest(format!("invalid limit {limit:?}")))?,
                ),
                None => None,
            };
            let continued =
                context.query.get("continue").filter(|c| !c.is_empty()).map(decode_continue).transpose()?;
            let start = continued.as_ref().map(|t| ObjectKey::new(&t.ns, &t.name));
            let page = store.list(kind, namespace, &filter, limit, start.as_ref());
            let resource_version = continued.as_ref().map_or(page.resource_version, |t| t.rv);
            let mut metadata = json!({"resourceVersion": resource_version.to_string()});
            if let Some(next) = &page.next_start {
                metadata["continue"] = json!(encode_continue(resource_version, next));
                if let Some(remaining) = page.remaining {
                    metadata["remainingItemCount"] = json!(remaining);
                }
            }
            Ok(list_response(context, kind, &page.items, metadata))
        }
        "watch" => {
            let mut filter = filter_from(context.query, kind)?;
            if let Some(name) = &target.name {
                filter.fields.requirements.push(crate::selector::FieldRequirement {
                    field: "metadata.name".into(),
                    equal: true,
                    value: name.clone(),
                });
            }
            let from = match context.query.get("resourceVersion") {
                None | Some("") | Some("0") => WatchFrom::Now,
                Some(version) => WatchFrom::After(
                    version
                        .parse()
                        .map_err(|_| ApiError::BadRequest(format!("invalid resource version: {version}")))?,
                ),
            };
            let timeout = context
                .query
                .get("timeoutSeconds")
                .and_then(|t| t.parse::<u64>().ok())
                .filter(|t| *t > 0)
                .map_or(Duration::from_secs(1800), Duration::from_secs);
            let send_initial_events = context.query.is_true("sendInitialEvents");
            if send_initial_events && context.query.get("resourceVersionMatch") != Some("NotOlderThan") {
                return Err(ApiError::Invalid {
                    kind,
                    name: String::new(),
                    causes: vec![crate::error::FieldError::forbidden(
                        "resourceVersionMatch",
                        "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                    )],
                });
            }
            watch::serve(
                context.state,
                WatchRequest {
                    kind,
                    namespace: namespace.map(str::to_string),
                    filter,
                    from,
                    bookmarks: context.query.is_true("allowWatchBookmarks"),
                    send_initial_events,
                    timeout,
                    table: context.table(),
                },
            )
        }
        "create" => {
            require_json(context)?;
            let object = read_json(body).await?;
            let created = maybe_dry_run(store, dry_run, |store| store.create(kind, scope, object))?;
            Ok(json_response(201, &*created))
        }
        "update" => {
            require_json(context)?;
            let object = read_json(body).await?;
            let updated = maybe_dry_run(store, dry_run, |store| {
                store.update(kind, scope, &name, object, target_write)
            })?;
            Ok(json_response(200, &*updated))
        }
        "patch" => {
            let content_type = context.content_type().to_string();
            let patch_type = PatchType::from_content_type(&content_type).ok_or_else(|| {
                ApiError::UnsupportedMediaType(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type})"
                ))
            })?;
            let patch = read_json(body).await?;
            let patched = maybe_dry_run(store, dry_run, |store| {
                store.patch(kind, scope, &name, patch_type, &patch, target_write)
            })?;
            Ok(json_response(200, &*patched))
        }
        "delete" => {
            let body = read_json(body).await?;
            let options = delete_options(context.query, &body)?;
            let dry_run = dry_run
                || body.get("dryRun").and_then(Value::as_array).is_some_and(|d| d.contains(&json!("All")));
            let deleted = maybe_dry_run(store, dry_run, |store| store.delete(kind, scope, &name, &options))?;
            let still_there = store.get(kind, scope, &name).is_ok();
            if still_there || matches!(kind, Kind::Pod | Kind::Service | Kind::Namespace | Kind::Node) {
                Ok(json_response(200, &*deleted))
            } else {
                let mut details = json!({"name": name, "kind": info.plural, "uid": meta::uid(&deleted)});
                if !info.group.is_empty() {
                    details["group"] = json!(info.group);
                }
                Ok(json_response(
                    200,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
                ))
            }
        }
        "deletecollection" => {
            let filter = filter_from(context.query, kind)?;
            let body = read_json(body).await?;
            let options = delete_options(context.query, &body)?;
            let deleted = store.delete_collection(kind, namespace, &filter, &options)?;
            let metadata = json!({"resourceVersion": store.resource_version().to_string()});
            Ok(list_response(context, kind, &deleted, metadata))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

fn maybe_dry_run<T>(
    store: &Store,
    dry_run: bool,
    operation: impl FnOnce(&Store) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    if dry_run { store.dry_run(operation) } else { operation(store) }
}

/// A Deployment's `autoscaling/v1` Scale, as `deployments/{name}/scale` shows it.
fn scale_of(deployment: &Value) -> Value {
    let selector: Vec<String> = deployment
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
        .collect();
    let metadata = deployment.get("metadata").cloned().unwrap_or(json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
            "creationTimestamp": metadata.get("creationTimestamp"),
        },
        "spec": {"replicas": deployment.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": deployment.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector.join(","),
        }
    })
}

/// `deployments/{name}/scale`: reads or sets `spec.replicas` through a Scale object.
async fn scale(
    context: &RequestContext<'_>,
    namespace: &str,
    name: &str,
    verb: &str,
    body: Incoming,
    dry_run: bool,
) -> Result<Response<Body>, ApiError> {
    let store = &context.state.store;
    let current = scale_of(&*store.get(Kind::Deployment, namespace, name)?);
    let wanted = match verb {
        "get" => return Ok(json_response(200, &current)),
        "update" => read_json(body).await?,
        _ => {
            let content_type = context.content_type().to_string();
            let patch_type = PatchType::from_content_type(&content_type).ok_or_else(|| {
                ApiError::UnsupportedMediaType(format!("unsupported patch type {content_type}"))
            })?;
            let mut patched = current.clone();
            if let Some(metadata) = patched.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.remove("resourceVersion");
            }
            crate::patch::apply(patch_type, &mut patched, &read_json(body).await?)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            patched
        }
    };
    let replicas = wanted.pointer("/spec/replicas").cloned().unwrap_or(Value::Null);
    if replicas.as_i64().is_none_or(|r| r < 0) {
        return Err(ApiError::Invalid {
            kind: Kind::Deployment,
            name: name.to_string(),
            causes: vec![crate::error::FieldError::invalid(
                "spec.replicas",
                replicas,
                "must be greater than or equal to 0",
            )],
        });
    }
    let mut change = json!({"spec": {"replicas": replicas}});
    if let Some(version) =
        wanted.pointer("/metadata/resourceVersion").filter(|v| v.as_str().is_some_and(|v| !v.is_empty()))
    {
        change["metadata"] = json!({"resourceVersion": version});
    }
    let updated = maybe_dry_run(store, dry_run, |store| {
        store.patch(Kind::Deployment, namespace, name, PatchType::Merge, &change, WriteTarget::Main)
    })?;
    Ok(json_response(200, &scale_of(&updated)))
}

/// The `/_sim/` admin endpoints: no authentication and no injected faults, so tests can always
/// reach them.
async fn admin(
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

#[cfg(test)]
mod tests {
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
        let token = encode_continue(42, &ObjectKey::new("default", "web-1"));
        let decoded = decode_continue(&token).unwrap();
        assert_eq!((decoded.rv, decoded.ns.as_str(), decoded.name.as_str()), (42, "default", "web-1"));
        assert!(decode_continue("not a token").is_err());
    }

    #[test]
    fn delete_options_come_from_body_or_query() {
        let query = Query::parse(Some("propagationPolicy=Orphan"));
        assert_eq!(delete_options(&query, &Value::Null).unwrap().propagation, Propagation::Orphan);
        let body = json!({"propagationPolicy": "Foreground", "preconditions": {"uid": "u"}});
        let options = delete_options(&Query::default(), &body).unwrap();
        assert_eq!(options.propagation, Propagation::Foreground);
        assert_eq!(options.uid.as_deref(), Some("u"));
        assert!(delete_options(&Query::parse(Some("propagationPolicy=Sideways")), &Value::Null).is_err());
    }
}
