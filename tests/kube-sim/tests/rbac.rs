//! kubectl against the access-control kinds: ServiceAccounts, Roles, RoleBindings,
//! ClusterRoles and ClusterRoleBindings apply, read back and delete as on a cluster, and a
//! Role the API server would refuse is refused; plus rotating the accepted tokens.

mod common;

use common::Simulator;
use serde_json::Value;

const MANIFEST: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: runner}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: runner}
rules:
- apiGroups: [""]
  resources: [pods, pods/log]
  verbs: [get, list, watch, create, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: runner}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: runner}
subjects: [{kind: ServiceAccount, name: runner, namespace: default}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: node-reader}
rules:
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: node-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: node-reader}
subjects: [{kind: ServiceAccount, name: runner, namespace: default}]
"#;

#[test]
fn access_control_kinds_apply_read_back_and_delete() {
    let simulator = Simulator::start(&[]);
    let path = simulator.directory().join("rbac.yaml");
    std::fs::write(&path, MANIFEST).expect("writing the manifest");
    let path = path.to_string_lossy().into_owned();
    let applied = simulator.kubectl_ok(&["apply", "-f", &path]);
    for object in [
        "serviceaccount/runner created",
        "role.rbac.authorization.k8s.io/runner created",
        "rolebinding.rbac.authorization.k8s.io/runner created",
        "clusterrole.rbac.authorization.k8s.io/node-reader created",
        "clusterrolebinding.rbac.authorization.k8s.io/node-reader created",
    ] {
        assert!(applied.contains(object), "{object} in {applied}");
    }
    // A second apply finds every object and changes nothing.
    let again = simulator.kubectl_ok(&["apply", "-f", &path]);
    assert_eq!(again.matches("unchanged").count(), 5, "{again}");

    let role: Value =
        serde_json::from_str(&simulator.kubectl_ok(&["get", "role", "runner", "-o", "json"])).expect("JSON");
    assert_eq!(role["rules"][0]["resources"][1], "pods/log");
    let binding: Value = serde_json::from_str(&simulator.kubectl_ok(&[
        "get",
        "clusterrolebinding",
        "node-reader",
        "-o",
        "json",
    ]))
    .expect("JSON");
    assert!(binding["metadata"].get("namespace").is_none(), "cluster-scoped: {binding}");
    let accounts = simulator.kubectl_ok(&["get", "sa"]);
    assert!(accounts.contains("runner"), "{accounts}");

    simulator.kubectl_ok(&["delete", "-f", &path]);
    let error = simulator.kubectl_err(&["get", "role", "runner"]);
    assert!(error.contains("roles.rbac.authorization.k8s.io \"runner\" not found"), "{error}");
}

#[test]
fn a_rule_without_verbs_is_refused() {
    let simulator = Simulator::start(&[]);
    let path = simulator.directory().join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: bad}\nrules: [{apiGroups: [''], resources: [pods], verbs: []}]\n",
    )
    .expect("writing the manifest");
    let error = simulator.kubectl_err(&["apply", "-f", &path.to_string_lossy()]);
    assert!(error.contains("rules[0].verbs: Required value"), "{error}");
}

#[test]
fn replaced_tokens_are_the_only_ones_accepted() {
    let simulator = Simulator::start(&["--token", "first"]);
    let (status, _) = common::raw_get(simulator.port(), "/api/v1/namespaces");
    assert_eq!(status, 401);
    let (status, response) =
        common::raw_post(simulator.port(), "/_sim/tokens", "application/json", r#"{"tokens": []}"#);
    assert_eq!(status, 400, "{response}");
    let (status, response) =
        common::raw_post(simulator.port(), "/_sim/tokens", "application/json", r#"{"tokens": ["second"]}"#);
    assert_eq!(status, 200, "{response}");
    assert_eq!(get_with_token(simulator.port(), "first"), 401);
    assert_eq!(get_with_token(simulator.port(), "second"), 200);
}

/// The status of `GET /api/v1/namespaces` with this bearer token.
fn get_with_token(port: u16, token: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20))).expect("setting a timeout");
    write!(
        stream,
        "GET /api/v1/namespaces HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .expect("writing");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reading");
    response.split_whitespace().nth(1).and_then(|status| status.parse().ok()).expect("a status line")
}
