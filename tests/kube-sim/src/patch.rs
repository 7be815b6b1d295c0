//! The three patch types the API accepts: JSON merge patch (RFC 7386) and JSON patch (RFC 6902),
//! both by the `json-patch` crate, and strategic merge patch (for the fields kubectl and our
//! clients touch), which is Kubernetes' own and written here.
//!
//! Strategic merge differs from merge patch in how lists are combined: lists with a known merge
//! key (containers by `name`, ports by port number, conditions by `type`, ...) are merged element
//! by element, and `$`-directives that kubectl emits (`$setElementOrder`, `$retainKeys`,
//! `$patch`, `$deleteFromPrimitiveList`) are honoured or dropped, so `kubectl apply` of a changed
//! manifest lands as it would on a real server.

use serde::Deserialize;
use serde_json::{Map, Value};

/// Which patch format a request body is in, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/json-patch+json`.
    Json,
}

impl PatchType {
    /// Maps a `Content-Type` header to a patch type, ignoring parameters such as charset.
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/json-patch+json" => Some(PatchType::Json),
            _ => None,
        }
    }
}

/// Why a patch could not be applied; answered as 400 or 422 by the API layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document has the wrong shape for its type.
    #[error("invalid patch: {0}")]
    Malformed(String),
    /// A JSON patch `test` operation failed.
    #[error("the server rejected our request due to an error in our request: testing value {0} failed")]
    TestFailed(String),
    /// A JSON patch operation could not be applied, e.g. at a path that does not exist.
    #[error("the server rejected our request due to an error in our request: {0}")]
    NotApplicable(String),
}

/// Applies `patch` of type `patch_type` to `target`.
pub fn apply(patch_type: PatchType, target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    match patch_type {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(PatchError::Malformed("a merge patch must be a JSON object".into()));
            }
            json_patch::merge(target, patch);
            Ok(())
        }
        PatchType::StrategicMerge => {
            let Value::Object(patch) = patch else {
                return Err(PatchError::Malformed("a strategic merge patch must be a JSON object".into()));
            };
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(target) = target {
                strategic_merge_map(target, patch, "");
            }
            Ok(())
        }
        PatchType::Json => json_patch(target, patch),
    }
}

/// The merge key of a list field, as the Kubernetes Go types declare with `patchMergeKey`.
fn merge_key(field: &str, sample: &Value) -> Option<&'static str> {
    match field {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" | "imagePullSecrets" => {
            Some("name")
        }
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        "ownerReferences" => Some("uid"),
        "conditions" => Some("type"),
        "ports" if sample.get("containerPort").is_some() => Some("containerPort"),
        "ports" => Some("port"),
        _ => None,
    }
}

fn strategic_merge_map(target: &mut Map<String, Value>, patch: &Map<String, Value>, _path: &str) {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch.clone();
        replacement.remove("$patch");
        strip_directives(&mut replacement);
        *target = replacement;
        return;
    }
    let retain_keys: Option<Vec<String>> = patch
        .get("$retainKeys")
        .and_then(Value::as_array)
        .map(|keys| keys.iter().filter_map(Value::as_str).map(str::to_string).collect());
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Value::Array(remove)) = (target.get_mut(field), value) {
                items.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(child_patch) => {
                if child_patch.get("$patch").and_then(Value::as_str) == Some("delete") {
                    target.remove(key);
                    continue;
                }
                let child = target.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
                if !child.is_object() {
                    *child = Value::Object(Map::new());
                }
                if let Value::Object(child) = child {
                    strategic_merge_map(child, child_patch, key);
                }
            }
            Value::Array(patch_items) => {
                let sample = patch_items.iter().find(|item| item.is_object()).cloned().unwrap_or(Value::Null);
                match (merge_key(key, &sample), target.get_mut(key)) {
                    (Some(merge_key), Some(Value::Array(current))) if sample.is_object() => {
                        merge_list(current, patch_items, merge_key);
                    }
                    _ => {
                        let mut replacement = Value::Array(patch_items.clone());
                        strip_directives_value(&mut replacement);
                        target.insert(key.clone(), replacement);
                    }
                }
            }
            scalar => {
                target.insert(key.clone(), scalar.clone());
            }
        }
    }
    if let Some(retain) = retain_keys {
        target.retain(|key, _| retain.contains(key));
    }
}

fn merge_list(current: &mut Vec<Value>, patch_items: &[Value], key: &str) {
    for patch_item in patch_items {
        let Value::Object(patch_map) = patch_item else {
            continue;
        };
        let identity = patch_map.get(key);
        let position = current.iter().position(|item| item.get(key) == identity && identity.is_some());
        if patch_map.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(position) = position {
                current.remove(position);
            }
            continue;
        }
        match position {
            Some(position) => {
                if let Value::Object(existing) = &mut current[position] {
                    strategic_merge_map(existing, patch_map, key);
                }
            }
            None => {
                let mut added = patch_map.clone();
                strip_directives(&mut added);
                current.push(Value::Object(added));
            }
        }
    }
}

fn strip_directives(map: &mut Map<String, Value>) {
    map.retain(|key, _| !key.starts_with('$'));
    for value in map.values_mut() {
        strip_directives_value(value);
    }
}

fn strip_directives_value(value: &mut Value) {
    match value {
        Value::Object(map) => strip_directives(map),
        Value::Array(items) => items.iter_mut().for_each(strip_directives_value),
        _ => {}
    }
}

/// RFC 6902 JSON patch: a list of `add`, `remove`, `replace`, `move`, `copy` and `test` operations,
/// applied all or nothing.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    if !patch.is_array() {
        return Err(PatchError::Malformed("a JSON patch must be a JSON array".into()));
    }
    let operations =
        json_patch::Patch::deserialize(patch).map_err(|error| PatchError::Malformed(error.to_string()))?;
    json_patch::patch(target, &operations).map_err(|error| match error.kind {
        json_patch::PatchErrorKind::TestFailed => PatchError::TestFailed(error.path.to_string()),
        _ => PatchError::NotApplicable(error.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_merges_objects_and_deletes_nulls() {
        let mut target = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": [1, 2]}});
        let patch = json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"x": [3]}});
        apply(PatchType::Merge, &mut target, &patch).unwrap();
        assert_eq!(target, json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"x": [3]}}));
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "b:1"}
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}]
        }});
        apply(PatchType::StrategicMerge, &mut pod, &patch).unwrap();
        assert_eq!(pod["spec"]["containers"][0]["image"], "a:1");
        assert_eq!(pod["spec"]["containers"][1]["image"], "b:2");
        assert_eq!(pod["spec"]["containers"][2]["name"], "c");
        assert!(pod["spec"].get("$setElementOrder/containers").is_none());
    }

    #[test]
    fn strategic_merge_honours_delete_and_replace_directives() {
        let mut service = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}], "selector": {"a": "1", "b": "2"}}});
        let patch = json!({"spec": {"ports": [{"port": 80, "$patch": "delete"}], "selector": {"$patch": "replace", "c": "3"}}});
        apply(PatchType::StrategicMerge, &mut service, &patch).unwrap();
        assert_eq!(service["spec"]["ports"], json!([{"port": 443, "name": "https"}]));
        assert_eq!(service["spec"]["selector"], json!({"c": "3"}));
    }

    #[test]
    fn strategic_merge_replaces_lists_without_merge_key() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "args": ["x", "y"]}]}});
        let patch = json!({"spec": {"containers": [{"name": "a", "args": ["z"]}]}});
        apply(PatchType::StrategicMerge, &mut pod, &patch).unwrap();
        assert_eq!(pod["spec"]["containers"][0]["args"], json!(["z"]));
    }

    #[test]
    fn json_patch_operations() {
        let mut target = json!({"metadata": {"labels": {"a/b": "1"}}, "list": [1, 2]});
        let patch = json!([
            {"op": "test", "path": "/metadata/labels/a~1b", "value": "1"},
            {"op": "replace", "path": "/metadata/labels/a~1b", "value": "2"},
            {"op": "add", "path": "/list/-", "value": 3},
            {"op": "add", "path": "/list/0", "value": 0},
            {"op": "remove", "path": "/list/1"},
            {"op": "copy", "from": "/list", "path": "/copy"},
            {"op": "move", "from": "/copy", "path": "/moved"}
        ]);
        json_patch(&mut target, &patch).unwrap();
        assert_eq!(
            target,
            json!({"metadata": {"labels": {"a/b": "2"}}, "list": [0, 2, 3], "moved": [0, 2, 3]})
        );
    }

    #[test]
    fn json_patch_is_all_or_nothing() {
        let mut target = json!({"a": 1});
        let patch =
            json!([{"op": "replace", "path": "/a", "value": 2}, {"op": "remove", "path": "/missing"}]);
        let error = json_patch(&mut target, &patch).unwrap_err();
        assert!(
            matches!(&error, PatchError::NotApplicable(message) if message.contains("/missing")),
            "{error}"
        );
        assert_eq!(target, json!({"a": 1}));
        assert!(matches!(json_patch(&mut target, &json!({"op": "add"})), Err(PatchError::Malformed(_))));
        assert!(matches!(json_patch(&mut target, &json!([{"op": "add"}])), Err(PatchError::Malformed(_))));
        let test = json!([{"op": "test", "path": "/a", "value": 5}]);
        assert_eq!(json_patch(&mut target, &test), Err(PatchError::TestFailed("/a".into())));
    }
}
