//! The handlers of resource paths: authorizes the verb, then gets, lists, watches, creates,
//! updates, patches or deletes through the store, with the `status`, `scale` and `log`
//! subresources, `dryRun=All`, paging and server-side tables.

use std::sync::Arc;
use std::time::Duration;

use http::Response;
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::{Value, json};

use super::request::{
    RequestContext, decode_continue, delete_options, encode_continue, filter_from, parse_target, read_json,
    require_json, verb_for,
};
use super::{Body, json_response};
use crate::auth;
use crate::error::ApiError;
use crate::meta;
use crate::patch::PatchType;
use crate::resources::Kind;
use crate::store::{ObjectKey, Store, WatchFrom, WriteTarget};
use crate::table;
use crate::watch::{self, WatchRequest};

/// A `{Kind}List` as the API server writes it, borrowing the items.
#[derive(Serialize)]
struct ListBody<'a> {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: Value,
    items: Vec<&'a Value>,
}

/// A list, or a Table when the client asked for one.
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

/// One object, or a one-row Table when the client asked for one.
fn object_response(context: &RequestContext<'_>, kind: Kind, status: u16, object: &Value) -> Response<Body> {
    match context.table() {
        Some(include) => json_response(
            status,
            &table::table(kind, std::iter::once(object), meta::resource_version(object), None, include),
        ),
        None => json_response(status, object),
    }
}

/// Handles a resource path, `rest` being what follows `/api/v1` or `/apis/{group}/{version}`.
pub(super) async fn handle(
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
    if target.kind == Kind::Pod && target.subresource.as_deref() == Some("eviction") {
        return eviction(context, &target, body).await;
    }
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
            let served_before = continued.as_ref().map_or(0, |t| t.served);
            let page = store.list(kind, namespace, &filter, limit, start.as_ref(), served_before);
            let resource_version = continued.as_ref().map_or(page.resource_version, |t| t.rv);
            let mut metadata = json!({"resourceVersion": resource_version.to_string()});
            if let Some(next) = &page.next_start {
                let served = served_before + page.items.len() as u64;
                metadata["continue"] = json!(encode_continue(resource_version, next, served));
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

/// `POST pods/{name}/eviction` with a policy/v1 Eviction, as `kubectl drain` sends: the pod is
/// deleted with the Eviction's `deleteOptions` and the answer is a 201 Success Status. The body
/// is read only when it is JSON: kubectl's typed client sends protobuf, and the name is in the
/// path anyway.
async fn eviction(
    context: &RequestContext<'_>,
    target: &super::request::Target,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    if context.method != http::Method::POST {
        return Err(ApiError::MethodNotAllowed);
    }
    let namespace = target.namespace.as_deref().ok_or(ApiError::NoRoute)?;
    let name = target.name.as_deref().ok_or(ApiError::NoRoute)?;
    auth::authorize(context.identity, "create", Kind::Pod, Some(namespace), name)?;
    let json_body = context.content_type().split(';').next().is_some_and(|t| t.trim() == "application/json");
    let eviction = if json_body { read_json(body).await? } else { Value::Null };
    let options = delete_options(context.query, eviction.get("deleteOptions").unwrap_or(&Value::Null))?;
    crate::controllers::nodes::evict(&context.state.store, namespace, name, &options)?;
    Ok(json_response(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// Runs `operation` on the store, or on a throw-away copy for `dryRun=All`.
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
