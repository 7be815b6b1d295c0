//! The Kubernetes permissions the runtime uses, written down once, so that the RBAC shipped
//! with Hydroplane (`examples/rbac.yaml`, `deploy/rbac.yaml`) is checked against the code rather
//! than against someone's memory: a test fails when the runtime needs a verb a Role lacks, and
//! when a Role grants one the runtime does not use (least privilege).
//!
//! Add a line to [`PERMISSIONS`] with every new API call; [`check_rbac`] compares manifests with
//! it.

use std::collections::BTreeSet;

use serde_json::Value;

/// One resource the runtime calls, with the verbs it uses on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    /// The API group (`""` for core).
    pub api_group: &'static str,
    /// The resource, or `resource/subresource`.
    pub resource: &'static str,
    /// The verbs used.
    pub verbs: &'static [&'static str],
    /// Whether the resource is cluster-scoped (granted by a ClusterRole) rather than in the
    /// processes' namespace (granted by a Role there).
    pub cluster_scoped: bool,
}

const fn namespaced(resource: &'static str, verbs: &'static [&'static str]) -> Permission {
    Permission { api_group: "", resource, verbs, cluster_scoped: false }
}

/// Everything the Kubernetes runtime does on the cluster.
pub const PERMISSIONS: &[Permission] = &[
    // Processes: run by a StatefulSet (ALWAYS), a Job (ON_FAILURE) or a bare Pod (NEVER), each
    // created, watched for the index, read when a name is taken, deleted one by one or by group
    // (deletecollection by label). Pods are also read for their logs' state; a bare Pod's
    // finalizer (which keeps a lost NEVER process listed as FAILED) is patched off by Stop.
    namespaced("pods", &["get", "list", "watch", "create", "patch", "delete", "deletecollection"]),
    Permission {
        api_group: "apps",
        resource: "statefulsets",
        // patch: scaled to zero when the process outlives its max_run_seconds.
        verbs: &["get", "list", "watch", "create", "patch", "delete", "deletecollection"],
        cluster_scoped: false,
    },
    Permission {
        api_group: "batch",
        resource: "jobs",
        verbs: &["get", "list", "watch", "create", "delete", "deletecollection"],
        cluster_scoped: false,
    },
    // The container's output, for Logs.
    namespaced("pods/log", &["get"]),
    // Each process's Service: owned by its StatefulSet, Job or Pod, so the garbage collector
    // deletes it.
    namespaced("services", &["get", "list", "watch", "create", "delete"]),
    // Secret env values and registry credentials: written, never read back.
    namespaced("secrets", &["create", "delete"]),
    // The Events of a process's Pod, read on Describe only.
    namespaced("events", &["list"]),
    // Nodes' addresses are the public addresses of public processes.
    Permission { api_group: "", resource: "nodes", verbs: &["get", "list", "watch"], cluster_scoped: true },
];

/// What is wrong with a set of RBAC manifests (every Role and ClusterRole among `documents`,
/// parsed objects of any kinds) compared with [`PERMISSIONS`]: each line names a permission the
/// runtime needs that no Role (or ClusterRole, for cluster-scoped ones) grants, or one granted
/// that the runtime does not use. Empty when they match exactly.
pub fn check_rbac(documents: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    for cluster_scoped in [false, true] {
        let role_kind = if cluster_scoped { "ClusterRole" } else { "Role" };
        let granted: BTreeSet<(String, String, String)> = documents
            .iter()
            .filter(|document| document["kind"] == role_kind)
            .flat_map(|role| role["rules"].as_array().cloned().unwrap_or_default())
            .flat_map(|rule| expand(&rule))
            .collect();
        let needed: BTreeSet<(String, String, String)> = PERMISSIONS
            .iter()
            .filter(|permission| permission.cluster_scoped == cluster_scoped)
            .flat_map(|permission| {
                permission.verbs.iter().map(|verb| {
                    (permission.api_group.to_owned(), permission.resource.to_owned(), (*verb).to_owned())
                })
            })
            .collect();
        for (group, resource, verb) in needed.difference(&granted) {
            problems.push(format!(
                "no {role_kind} grants `{verb}` on `{}`, which the runtime uses",
                qualified(group, resource)
            ));
        }
        for (group, resource, verb) in granted.difference(&needed) {
            problems.push(format!(
                "a {role_kind} grants `{verb}` on `{}`, which the runtime does not use",
                qualified(group, resource)
            ));
        }
    }
    problems
}

/// Every (group, resource, verb) a rule names; wildcards stay `*`, so they count as extra.
fn expand(rule: &Value) -> Vec<(String, String, String)> {
    let list = |field: &str| -> Vec<String> {
        rule[field].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
    };
    let mut triples = Vec::new();
    for group in list("apiGroups") {
        for resource in list("resources") {
            for verb in list("verbs") {
                triples.push((group.clone(), resource.clone(), verb));
            }
        }
    }
    triples
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() { resource.to_owned() } else { format!("{resource}.{group}") }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn documents(yaml: &str) -> Vec<Value> {
        serde_saphyr::from_multiple::<Value>(yaml).expect("YAML documents")
    }

    #[test]
    fn the_example_rbac_grants_exactly_what_the_runtime_uses() {
        let problems = check_rbac(&documents(include_str!("../../../examples/rbac.yaml")));
        assert!(problems.is_empty(), "examples/rbac.yaml: {problems:#?}");
    }

    #[test]
    fn a_missing_verb_and_an_extra_one_are_both_named() {
        let mut roles = documents(include_str!("../../../examples/rbac.yaml"));
        let role = roles.iter_mut().find(|document| document["kind"] == "Role").expect("a Role");
        role["rules"][0]["verbs"] = json!(["get", "list", "watch", "create", "delete", "patch", "update"]);
        assert_eq!(
            check_rbac(&roles),
            [
                "no Role grants `deletecollection` on `pods`, which the runtime uses",
                "a Role grants `update` on `pods`, which the runtime does not use",
            ]
        );
        // Nodes granted in a namespace do not count: nodes are cluster-scoped.
        let only_roles: Vec<Value> =
            roles.into_iter().filter(|document| document["kind"] != "ClusterRole").collect();
        assert!(
            check_rbac(&only_roles)
                .contains(&"no ClusterRole grants `get` on `nodes`, which the runtime uses".to_owned())
        );
    }

    #[test]
    fn wildcards_are_more_than_the_least() {
        let wide = json!({"kind": "ClusterRole", "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]});
        let problems = check_rbac(&[wide]);
        assert!(problems.iter().any(|problem| problem.contains("grants `*` on `*.*`")), "{problems:?}");
    }
}
