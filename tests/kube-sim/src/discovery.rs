//! Discovery and OpenAPI: `/api`, `/apis`, the per-group resource lists, `/version`, and the
//! minimal OpenAPI v3 documents kubectl reads before `apply`.
//!
//! kubectl asks for aggregated discovery first; answering plain `application/json` makes it
//! fall back to these legacy documents, as it does with older servers. For `apply`, kubectl
//! checks in OpenAPI v3 whether PATCH takes the `fieldValidation` parameter: when it does,
//! kubectl skips client-side schema validation and lets the server validate, so a tiny document
//! listing the PATCH operations is enough (no schemas needed). Its PATCH operations declare no
//! request body, which makes kubectl compute strategic merge patches from its built-in types.

use serde_json::{Map, Value, json};

use crate::resources::Kind;

/// The `/api` document.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

/// The named API groups served, each at `v1`.
pub const GROUPS: [&str; 4] = ["apps", "batch", crate::rbac::GROUP, crate::resources::NETWORKING_GROUP];

/// The `/apis` document.
pub fn group_list() -> Value {
    let groups: Vec<Value> = GROUPS.into_iter().filter_map(group).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// The `/apis/{name}` document, or `None` when we serve no such group.
pub fn group(name: &str) -> Option<Value> {
    GROUPS.contains(&name).then(|| {
        json!({
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": name,
            "versions": [{"groupVersion": format!("{name}/v1"), "version": "v1"}],
            "preferredVersion": {"groupVersion": format!("{name}/v1"), "version": "v1"}
        })
    })
}

const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// The `APIResourceList` for `group`/`version`, or `None` when we serve no such version.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<Kind> =
        Kind::ALL.into_iter().filter(|k| k.info().group == group && k.info().version == version).collect();
    if kinds.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for kind in kinds {
        let info = kind.info();
        let mut resource = json!({
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": VERBS,
        });
        if !info.short_names.is_empty() {
            resource["shortNames"] = json!(info.short_names);
        }
        if matches!(kind, Kind::Pod | Kind::Service | Kind::Deployment | Kind::StatefulSet | Kind::Job) {
            resource["categories"] = json!(["all"]);
        }
        resources.push(resource);
        if info.has_status {
            resources.push(json!({
                "name": format!("{}/status", info.plural),
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": info.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if kind == Kind::Deployment {
            resources.push(json!({
                "name": "deployments/scale",
                "singularName": "",
                "namespaced": true,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
        if kind == Kind::Pod {
            resources.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
            // kubectl drain finds where to POST evictions from this entry's group and version.
            resources.push(json!({"name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
        }
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

/// The `/version` document.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-kube-sim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

const OPENAPI_HASH: &str = "4B1D5E0C0FFEE0000000000000000000000000000000000000000000000000000";

/// The `/openapi/v3` index of group-version documents.
pub fn openapi_v3_index() -> Value {
    let mut paths = Map::new();
    for (key, _) in group_versions() {
        paths.insert(
            key.to_string(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={OPENAPI_HASH}")}),
        );
    }
    json!({"paths": paths})
}

fn group_versions() -> [(&'static str, (&'static str, &'static str)); 5] {
    [
        ("api/v1", ("", "v1")),
        ("apis/apps/v1", ("apps", "v1")),
        ("apis/batch/v1", ("batch", "v1")),
        ("apis/rbac.authorization.k8s.io/v1", (crate::rbac::GROUP, "v1")),
        ("apis/networking.k8s.io/v1", (crate::resources::NETWORKING_GROUP, "v1")),
    ]
}

/// The OpenAPI v3 document for `api/v1`, `apis/apps/v1`, `apis/batch/v1` or
/// `apis/rbac.authorization.k8s.io/v1`.
pub fn openapi_v3_document(path: &str) -> Option<Value> {
    let (_, (group, version)) = group_versions().into_iter().find(|(key, _)| *key == path)?;
    let mut paths = Map::new();
    for kind in Kind::ALL.into_iter().filter(|k| k.info().group == group && k.info().version == version) {
        let info = kind.info();
        let prefix =
            if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") };
        let item = if info.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", info.plural)
        } else {
            format!("{prefix}/{}/{{name}}", info.plural)
        };
        let gvk = json!({"group": group, "version": version, "kind": info.kind});
        let operation = |verb: &str| {
            json!({
                "operationId": format!("{verb}{}", info.kind),
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [
                    {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
                ],
                "responses": {"200": {"description": "OK"}}
            })
        };
        paths.insert(item, json!({"get": operation("get"), "put": operation("put"), "patch": operation("patch"), "delete": operation("delete")}));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}}
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_discoverable_and_patchable() {
        for kind in Kind::ALL {
            let info = kind.info();
            let list = resource_list(info.group, info.version).unwrap();
            assert!(list["resources"].as_array().unwrap().iter().any(|r| r["name"] == info.plural));
            let path = if info.group.is_empty() {
                "api/v1".to_string()
            } else {
                format!("apis/{}/{}", info.group, info.version)
            };
            let document = openapi_v3_document(&path).unwrap();
            let patchable = document["paths"]
                .as_object()
                .unwrap()
                .values()
                .any(|p| p["patch"]["x-kubernetes-group-version-kind"]["kind"] == info.kind);
            assert!(patchable, "{} has a PATCH operation", info.kind);
        }
        assert!(resource_list("batch", "v2").is_none());
        assert!(group("policy").is_none());
        let groups = group_list();
        let names: Vec<&str> =
            groups["groups"].as_array().unwrap().iter().filter_map(|g| g["name"].as_str()).collect();
        assert_eq!(names, ["apps", "batch", "rbac.authorization.k8s.io", "networking.k8s.io"]);
        let index = openapi_v3_index();
        assert!(index["paths"]["apis/rbac.authorization.k8s.io/v1"]["serverRelativeURL"].is_string());
    }
}
