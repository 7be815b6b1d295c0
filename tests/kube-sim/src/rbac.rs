//! The access-control kinds: ServiceAccount (core/v1) and the `rbac.authorization.k8s.io/v1`
//! Role, RoleBinding, ClusterRole and ClusterRoleBinding.
//!
//! The simulator stores them so that manifests which deploy an application with its own
//! identity (Hydroplane's `deploy/`) apply against it as against a cluster; it does not enforce
//! them (authorization stays the static tokens of [`crate::auth`]). What it does check is what
//! the API server refuses outright: a rule without verbs, a binding without a `roleRef`.

use serde_json::Value;

use crate::error::FieldError;
use crate::resources::{Kind, ResourceInfo};

/// The API group of Roles and bindings.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// core/v1 ServiceAccount.
pub const SERVICE_ACCOUNT: ResourceInfo = ResourceInfo {
    kind: "ServiceAccount",
    plural: "serviceaccounts",
    singular: "serviceaccount",
    group: "",
    version: "v1",
    namespaced: true,
    short_names: &["sa"],
    has_status: false,
    extra_field_labels: &[],
};
/// rbac/v1 Role.
pub const ROLE: ResourceInfo = ResourceInfo {
    kind: "Role",
    plural: "roles",
    singular: "role",
    group: GROUP,
    version: "v1",
    namespaced: true,
    short_names: &[],
    has_status: false,
    extra_field_labels: &[],
};
/// rbac/v1 RoleBinding.
pub const ROLE_BINDING: ResourceInfo = ResourceInfo {
    kind: "RoleBinding",
    plural: "rolebindings",
    singular: "rolebinding",
    group: GROUP,
    version: "v1",
    namespaced: true,
    short_names: &[],
    has_status: false,
    extra_field_labels: &[],
};
/// rbac/v1 ClusterRole.
pub const CLUSTER_ROLE: ResourceInfo = ResourceInfo {
    kind: "ClusterRole",
    plural: "clusterroles",
    singular: "clusterrole",
    group: GROUP,
    version: "v1",
    namespaced: false,
    short_names: &[],
    has_status: false,
    extra_field_labels: &[],
};
/// rbac/v1 ClusterRoleBinding.
pub const CLUSTER_ROLE_BINDING: ResourceInfo = ResourceInfo {
    kind: "ClusterRoleBinding",
    plural: "clusterrolebindings",
    singular: "clusterrolebinding",
    group: GROUP,
    version: "v1",
    namespaced: false,
    short_names: &[],
    has_status: false,
    extra_field_labels: &[],
};

/// Checks what the API server refuses in Roles and bindings: each rule needs verbs (and
/// resources or non-resource URLs), each binding a `roleRef` naming a Role or ClusterRole, and
/// each subject a kind and a name.
pub fn validate(kind: Kind, object: &Value, errors: &mut Vec<FieldError>) {
    match kind {
        Kind::Role | Kind::ClusterRole => {
            for (index, rule) in
                object.get("rules").and_then(Value::as_array).into_iter().flatten().enumerate()
            {
                let path = format!("rules[{index}]");
                let listed =
                    |field: &str| rule.get(field).and_then(Value::as_array).is_some_and(|v| !v.is_empty());
                if !listed("verbs") {
                    errors.push(FieldError::required(
                        format!("{path}.verbs"),
                        "verbs must contain at least one value",
                    ));
                }
                if !listed("resources") && !listed("nonResourceURLs") {
                    errors.push(FieldError::required(
                        format!("{path}.resources"),
                        "resource rules must supply at least one resource",
                    ));
                }
            }
        }
        Kind::RoleBinding | Kind::ClusterRoleBinding => {
            let role_kind = object.pointer("/roleRef/kind").and_then(Value::as_str).unwrap_or_default();
            let allowed: &[&str] =
                if kind == Kind::RoleBinding { &["Role", "ClusterRole"] } else { &["ClusterRole"] };
            if !allowed.contains(&role_kind) {
                errors.push(FieldError::not_supported(
                    "roleRef.kind",
                    object.pointer("/roleRef/kind").cloned().unwrap_or(Value::Null),
                    allowed,
                ));
            }
            if object.pointer("/roleRef/name").and_then(Value::as_str).unwrap_or_default().is_empty() {
                errors.push(FieldError::required("roleRef.name", ""));
            }
            for (index, subject) in
                object.get("subjects").and_then(Value::as_array).into_iter().flatten().enumerate()
            {
                for field in ["kind", "name"] {
                    if subject.get(field).and_then(Value::as_str).unwrap_or_default().is_empty() {
                        errors.push(FieldError::required(format!("subjects[{index}].{field}"), ""));
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(kind: Kind, object: Value) -> Vec<String> {
        let mut errors = Vec::new();
        validate(kind, &object, &mut errors);
        errors.iter().map(|error| error.field.clone()).collect()
    }

    #[test]
    fn well_formed_roles_and_bindings_pass() {
        let role = json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]});
        assert!(problems(Kind::Role, role.clone()).is_empty());
        assert!(problems(Kind::ClusterRole, role).is_empty());
        let binding = json!({
            "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}]
        });
        assert!(problems(Kind::RoleBinding, binding).is_empty());
    }

    #[test]
    fn rules_without_verbs_and_bindings_without_a_role_are_refused() {
        let role = json!({"rules": [{"apiGroups": [""], "verbs": []}]});
        assert_eq!(problems(Kind::Role, role), ["rules[0].verbs", "rules[0].resources"]);
        assert_eq!(
            problems(Kind::RoleBinding, json!({"subjects": [{"kind": "User"}]})),
            ["roleRef.kind", "roleRef.name", "subjects[0].name"]
        );
        // A ClusterRoleBinding cannot refer to a (namespaced) Role.
        let binding = json!({"roleRef": {"kind": "Role", "name": "r"}});
        assert_eq!(problems(Kind::ClusterRoleBinding, binding), ["roleRef.kind"]);
    }
}
