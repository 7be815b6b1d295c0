//! Running Hydroplane in a cluster (issue 11): `hydroplane check`, the in-cluster config with a
//! rotating service-account token against the simulator, and `deploy/` (the Dockerfile and the
//! manifests) checked against the real binaries, the runtime's own list of permissions and
//! `kubectl apply -k` on the simulator. No container engine runs here, so the image itself is
//! not built: what it names is checked instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::requests::start_request;
use crate::common::{self, KubeSim, Server};
use hydroplane::proto;
use hydroplane::runtime::kube::permissions::check_rbac;

fn deploy_file(name: &str) -> PathBuf {
    common::repo_root().join("deploy").join(name)
}

/// The YAML documents of a file of `deploy/`, as JSON values.
fn manifests(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy_file(name)).expect("read the manifest");
    serde_saphyr::from_multiple::<Value>(&text).expect("the manifest is YAML")
}

/// The one object of `kind` among `documents`.
#[track_caller]
fn only<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = documents.iter().filter(|document| document["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

/// `hydroplane ARGS` with no environment of the test's (no kubeconfig, no in-cluster variables).
fn hydroplane(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(args)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run hydroplane")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `hydroplane check -c` on `yaml` written to `directory`; (exit code, stdout, stderr).
fn check_yaml(directory: &Path, yaml: &str) -> (Option<i32>, String, String, PathBuf) {
    let path = directory.join("hydroplane.yml");
    std::fs::write(&path, yaml).expect("write the settings");
    let output = hydroplane(&["check", "-c", path.to_str().expect("utf-8 path")]);
    (output.status.code(), text(&output.stdout), text(&output.stderr), path)
}

// === hydroplane check ===

#[test]
fn check_accepts_a_valid_file_without_connecting_or_opening_the_secret_store() {
    let directory = tempfile::tempdir().expect("tempdir");
    // A kubeconfig and a store that do not exist: check reads neither.
    let yaml = format!(
        "runtime:\n  runtime_type: kubernetes\n  namespace: procs\n  kubeconfig: {0}/no-kubeconfig\n\
         secret_store:\n  secret_store_type: local\n  store_location: {0}/no-store\n",
        directory.path().display()
    );
    let (code, stdout, stderr, path) = check_yaml(directory.path(), &yaml);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "{}: valid (runtime_type: kubernetes, namespace: procs, kubeconfig: {}/no-kubeconfig, \
             secret_store_type: local, tls: off, auth: off)\n",
            path.display(),
            directory.path().display()
        )
    );
    assert!(!directory.path().join("no-store").exists(), "the store was not created");
}

#[test]
fn check_prints_every_warning_of_the_loader() {
    let directory = tempfile::tempdir().expect("tempdir");
    // The EKS guide's indentation, which the loader forgives with a warning.
    let (code, stdout, stderr, _) =
        check_yaml(directory.path(), "runtime:\n  runtime_type: local\n   stop_grace_seconds: 1\n");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(": valid (runtime_type: local, secret_store_type: none"), "{stdout}");
    assert!(
        stderr.contains("WARN") && stderr.contains("line 3: `stop_grace_seconds` is indented"),
        "{stderr}"
    );
}

#[test]
fn check_refuses_an_invalid_file_naming_the_key() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (code, stdout, stderr, path) =
        check_yaml(directory.path(), "runtime:\n  runtime_type: local\n  stop_grace_seconds: -1\n");
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with(&format!("error: invalid config file {}:", path.display())), "{stderr}");
    assert!(
        stderr.contains("runtime.stop_grace_seconds must be between 0 and 3600 seconds, got -1"),
        "{stderr}"
    );

    // The files the settings name are read as the server would read them.
    let (code, _, stderr, _) = check_yaml(
        directory.path(),
        &format!("auth:\n  tokens_file: {}/missing-tokens.yml\n", directory.path().display()),
    );
    assert_eq!(code, Some(1));
    assert!(stderr.contains("missing-tokens.yml"), "{stderr}");
}

#[test]
fn check_refuses_a_missing_file() {
    let output = hydroplane(&["check", "-c", "/nonexistent/hydroplane.yml"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.starts_with("error: cannot read config file /nonexistent/hydroplane.yml"), "{stderr}");
    let output = hydroplane(&["check"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("hydroplane check -c FILE"));
}

#[test]
fn check_cluster_warns_when_no_node_has_an_external_ip() {
    let directory = tempfile::tempdir().expect("tempdir");
    let check_cluster = |sim: &KubeSim, extra: &str| {
        let path = directory.path().join("cluster.yml");
        std::fs::write(&path, sim.hydroplane_config(extra)).expect("write");
        let output = hydroplane(&["check", "--cluster", "-c", path.to_str().expect("path")]);
        (output.status.code(), text(&output.stdout), text(&output.stderr))
    };
    // Private nodes: a public process would have no public address, which check says.
    let private = KubeSim::start(&["--nodes-without-external-ip"]);
    let (code, stdout, stderr) = check_cluster(&private, "");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("the cluster is reachable and namespace `default` usable"), "{stdout}");
    assert!(
        stderr.contains("WARN")
            && stderr.contains("no node of the cluster has an ExternalIP")
            && stderr.contains("public_exposure: load_balancer"),
        "{stderr}"
    );
    // ... unless public processes get load balancers instead.
    let (code, _, stderr) = check_cluster(&private, "  public_exposure: load_balancer\n");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("ExternalIP"), "{stderr}");
    // Nodes with ExternalIPs: nothing to say.
    let public = KubeSim::start(&[]);
    let (code, stdout, stderr) = check_cluster(&public, "");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("usable"), "{stdout}");
    assert!(!stderr.contains("ExternalIP"), "{stderr}");
    // A namespace that does not exist: the server's own start-up error, exit 1.
    let (code, stdout, stderr) = check_cluster(&public, "  namespace: no-such-namespace\n");
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stderr.contains("no-such-namespace"), "{stderr}");
    // The local runtime has no cluster.
    let (code, _, stderr, path) = check_yaml(directory.path(), "runtime:\n  runtime_type: local\n");
    assert_eq!(code, Some(0), "{stderr}");
    let output = hydroplane(&["check", "--cluster", "-c", path.to_str().expect("path")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("runtime_type local has no cluster"), "{}", text(&output.stderr));
}

// === deploy/ ===

/// The ConfigMap's `hydroplane.yml`, written to `directory`.
fn configmap_settings(directory: &Path) -> (PathBuf, String) {
    let configmap = manifests("configmap.yaml");
    let yaml =
        only(&configmap, "ConfigMap")["data"]["hydroplane.yml"].as_str().expect("hydroplane.yml").to_owned();
    let path = directory.join("hydroplane.yml");
    std::fs::write(&path, &yaml).expect("write");
    (path, yaml)
}

/// The server container of the Deployment.
fn server_container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// Makes what deploy/README.md's Secret step makes (a server certificate and a tokens file),
/// with the binaries, in `directory`, named as the Secret's keys; returns the token.
fn secret_files(directory: &Path) -> String {
    let dir = directory.to_str().expect("utf-8 path");
    for args in [
        vec!["tls", "ca", "create", "--dir", dir],
        vec![
            "tls",
            "cert",
            "create",
            "--server",
            "--dir",
            dir,
            "--ca",
            &format!("{dir}/ca.pem"),
            "--ca-key",
            &format!("{dir}/ca-key.pem"),
        ],
    ] {
        let output = hydroplane(&args);
        assert!(output.status.success(), "{args:?}: {}", text(&output.stderr));
    }
    std::fs::rename(directory.join("server-cert.pem"), directory.join("tls.crt")).expect("rename");
    std::fs::rename(directory.join("server-key.pem"), directory.join("tls.key")).expect("rename");
    common::create_token(&directory.join("tokens.yml"), "ci", "read,write", None)
}

/// The path of the Secret's mount in the Deployment.
fn secret_mount(container: &Value) -> String {
    container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|mount| mount["name"] == "secrets")
        .and_then(|mount| mount["mountPath"].as_str())
        .expect("the secrets mount")
        .to_owned()
}

#[test]
fn the_configmap_settings_pass_the_servers_own_check_with_the_deployments_flags() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (_, yaml) = configmap_settings(directory.path());
    let deployments = manifests("deployment.yaml");
    let deployment = only(&deployments, "Deployment");
    let container = server_container(deployment);
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|arg| arg.as_str().expect("a string").to_owned())
        .collect();
    // The Secret's files, where the settings expect them (the mount, here a directory).
    let mount = secret_mount(container);
    let secrets = directory.path().join("secrets");
    std::fs::create_dir(&secrets).expect("mkdir");
    secret_files(&secrets);
    let path = directory.path().join("local.yml");
    std::fs::write(&path, yaml.replace(&mount, secrets.to_str().expect("utf-8"))).expect("write");
    // The Deployment's flags, parsed by the real binary, with the config at its local path.
    let config_at = args.iter().position(|arg| arg == "-c").expect("-c") + 1;
    let mounted = &args[config_at];
    let mut local_args = args.clone();
    local_args[config_at] = path.to_str().expect("utf-8").to_owned();
    local_args.push("check".to_owned());
    let local_args: Vec<&str> = local_args.iter().map(String::as_str).collect();
    let output = hydroplane(&local_args);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{args:?}: {}", text(&output.stderr));
    assert!(
        stdout.contains(
            "valid (runtime_type: kubernetes, namespace: hydroplane-processes, kubeconfig: in-cluster"
        ) && stdout.contains("tls: on, auth: tokens"),
        "{stdout}"
    );
    assert!(!yaml.lines().any(|line| line.trim_start().starts_with("kubeconfig:")), "in-cluster: {yaml}");

    // The config path the server reads is where the ConfigMap is mounted.
    let config_mount = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|mount| mount["name"] == "config")
        .expect("the config mount");
    assert_eq!(*mounted, format!("{}/hydroplane.yml", config_mount["mountPath"].as_str().expect("path")));
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_array().expect("volumes");
    assert!(
        volumes
            .iter()
            .any(|volume| volume["name"] == "config" && volume["configMap"]["name"] == "hydroplane")
    );
    // Secure by default: the Secret is required (the Pods wait for it rather than serve open),
    // and nothing asks for --insecure.
    let secret_volume =
        volumes.iter().find(|volume| volume["name"] == "secrets").expect("the secrets volume");
    assert_eq!(secret_volume["secret"]["secretName"], "hydroplane-secrets");
    assert!(secret_volume["secret"].get("optional").is_none_or(|optional| *optional == false));
    // A Pod is reached on its IP: every address.
    let host = &args[args.iter().position(|arg| arg == "-H").expect("-H") + 1];
    assert_eq!(host, "0.0.0.0");
    assert!(!args.contains(&"--insecure".to_owned()), "{args:?}");
    let settings = hydroplane::config::Settings::parse(&yaml).expect("the settings parse");
    assert!(settings.auth.expect("auth").tokens_file.starts_with(&mount));
    assert!(settings.tls.expect("tls").cert_file.starts_with(&mount));
}

#[test]
fn the_probes_open_the_port_the_server_listens_on() {
    let deployments = manifests("deployment.yaml");
    let container = server_container(only(&deployments, "Deployment"));
    let args: Vec<&str> =
        container["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    let port: u64 = args[args.iter().position(|arg| *arg == "-p").expect("-p") + 1].parse().expect("a port");
    // The kubelet's gRPC probes speak plaintext, the server TLS: the probes connect over TCP to
    // the named port, which is the one the server listens on.
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["tcpSocket"]["port"], "grpc", "{probe}");
    }
    let ports = container["ports"].as_array().expect("ports");
    assert!(ports.iter().any(|entry| entry["name"] == "grpc" && entry["containerPort"] == port));
    let services = manifests("service.yaml");
    let grpc = services
        .iter()
        .find(|service| service["metadata"]["name"] == "hydroplane")
        .expect("the gRPC Service");
    assert_eq!(grpc["spec"]["ports"][0]["targetPort"], "grpc");
    assert!(
        services.iter().any(|service| service["spec"]["ports"][0]["port"] == 9464),
        "the metrics Service"
    );
}

#[test]
fn the_network_policy_admits_only_labelled_clients_to_the_servers_ports() {
    let policies = manifests("networkpolicy.yaml");
    let policy = only(&policies, "NetworkPolicy");
    assert_eq!(policy["metadata"]["namespace"], "hydroplane");
    let deployments = manifests("deployment.yaml");
    let deployment = only(&deployments, "Deployment");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (label, value) in policy["spec"]["podSelector"]["matchLabels"].as_object().expect("labels") {
        assert_eq!(&pod_labels[label], value, "selects the server's Pods");
    }
    assert_eq!(policy["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
    let rules = policy["spec"]["ingress"].as_array().expect("ingress");
    let container_ports: Vec<&str> = server_container(deployment)["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|port| port["name"].as_str())
        .collect();
    let mut admitted = Vec::new();
    for rule in rules {
        let ports: Vec<&str> = rule["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .filter_map(|port| port["port"].as_str())
            .collect();
        assert!(ports.iter().all(|port| container_ports.contains(port)), "{ports:?}");
        for peer in rule["from"].as_array().expect("from") {
            // Every peer is chosen by a label: no rule admits all Pods or all addresses.
            let labels = peer["podSelector"]["matchLabels"].as_object().expect("a pod label");
            assert!(!labels.is_empty() && peer.get("ipBlock").is_none(), "{peer}");
            admitted.push((ports.clone(), labels.keys().cloned().collect::<Vec<_>>()));
        }
    }
    assert_eq!(
        admitted,
        [
            (vec!["grpc"], vec!["hydroplane.io/client".to_owned()]),
            (vec!["metrics"], vec!["hydroplane.io/metrics".to_owned()])
        ]
    );
}

#[test]
fn the_pod_runs_as_a_non_root_user_on_a_read_only_root() {
    let deployments = manifests("deployment.yaml");
    let deployment = only(&deployments, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod["securityContext"]["runAsUser"].as_u64().is_some_and(|user| user > 0));
    let container = server_container(deployment);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert_eq!(pod["serviceAccountName"], "hydroplane");
}

/// The `[[bin]]` names of the server's package and of hpctl's.
fn cargo_binaries() -> Vec<String> {
    let mut binaries = Vec::new();
    for path in ["Cargo.toml", "client/hpctl/Cargo.toml"] {
        let manifest = std::fs::read_to_string(common::repo_root().join(path)).expect(path);
        let mut in_bin = false;
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
            } else if in_bin && let Some(name) = line.strip_prefix("name = ") {
                binaries.push(name.trim_matches('"').to_owned());
            }
        }
    }
    binaries
}

#[test]
fn the_dockerfile_builds_the_three_binaries_and_runs_them_as_a_non_root_user() {
    let dockerfile = std::fs::read_to_string(deploy_file("Dockerfile")).expect("deploy/Dockerfile");
    let instructions: Vec<&str> =
        dockerfile.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).collect();
    let mut binaries = cargo_binaries();
    binaries.sort();
    assert_eq!(binaries, ["hpctl", "hydroplane", "local-secret-store"]);

    let build = instructions.iter().find(|line| line.contains("cargo build")).expect("a cargo build");
    assert!(build.contains("--release") && build.contains("--locked"), "{build}");
    let mut built: Vec<&str> =
        build.split("--bin ").skip(1).filter_map(|rest| rest.split_whitespace().next()).collect();
    built.sort();
    assert_eq!(built, binaries, "{build}");
    for binary in &binaries {
        assert!(
            instructions.iter().any(|line| line.starts_with("COPY --from=")
                && line.contains(&format!("/target/release/{binary} "))),
            "{binary} is copied into the image"
        );
    }
    assert_eq!(instructions.iter().filter(|line| line.starts_with("FROM ")).count(), 2, "multi-stage");

    // The last USER of the final stage: numeric and not root, so runAsNonRoot can verify it.
    let user = instructions.iter().rev().find_map(|line| line.strip_prefix("USER ")).expect("a USER");
    let uid: u32 = user.split(':').next().expect("uid").parse().expect("a numeric user");
    assert_ne!(uid, 0);
    let deployments = manifests("deployment.yaml");
    let pod = &only(&deployments, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"], uid);

    assert!(instructions.contains(&r#"ENTRYPOINT ["hydroplane"]"#));
    assert!(instructions.contains(&r#"CMD ["-c", "/etc/hydroplane/hydroplane.yml"]"#));
    let expose = instructions.iter().find_map(|line| line.strip_prefix("EXPOSE ")).expect("EXPOSE");
    assert_eq!(expose.split_whitespace().collect::<Vec<_>>(), ["50051", "9464"]);
    // The flags the image's CMD passes exist.
    let help = text(&hydroplane(&["--help"]).stdout);
    for flag in ["--config", "--host", "--port", "--insecure", "--tls-cert", "--tokens-file"] {
        assert!(help.contains(flag), "{flag} in:\n{help}");
    }
}

#[test]
fn the_role_grants_exactly_what_the_runtime_uses_to_the_servers_service_account() {
    let rbac = manifests("rbac.yaml");
    let problems = check_rbac(&rbac);
    assert!(problems.is_empty(), "deploy/rbac.yaml: {problems:#?}");
    let directory = tempfile::tempdir().expect("tempdir");
    let (_, yaml) = configmap_settings(directory.path());
    let settings = hydroplane::config::Settings::parse(&yaml).expect("the ConfigMap's settings");
    let hydroplane::config::RuntimeSettings::Kubernetes(kubernetes) = settings.runtime else {
        panic!("runtime_type: kubernetes");
    };
    assert_eq!(
        only(&rbac, "Role")["metadata"]["namespace"],
        kubernetes.namespace(),
        "the Role is where processes run"
    );
    let accounts = manifests("serviceaccount.yaml");
    let account = only(&accounts, "ServiceAccount");
    for binding in ["RoleBinding", "ClusterRoleBinding"] {
        let subject = &only(&rbac, binding)["subjects"][0];
        assert_eq!(subject["kind"], "ServiceAccount", "{binding}");
        assert_eq!(subject["name"], account["metadata"]["name"], "{binding}");
        assert_eq!(subject["namespace"], account["metadata"]["namespace"], "{binding}");
    }
    assert_eq!(only(&rbac, "RoleBinding")["metadata"]["namespace"], kubernetes.namespace());
}

#[test]
fn kubectl_apply_k_creates_every_object_on_the_simulator() {
    let sim = KubeSim::start(&[]);
    let applied = sim.kubectl(&["apply", "-k", deploy_file("").to_str().expect("path")]);
    let expected = [
        "namespace/hydroplane created",
        "namespace/hydroplane-processes created",
        "serviceaccount/hydroplane created",
        "role.rbac.authorization.k8s.io/hydroplane created",
        "clusterrole.rbac.authorization.k8s.io/hydroplane-nodes created",
        "rolebinding.rbac.authorization.k8s.io/hydroplane created",
        "clusterrolebinding.rbac.authorization.k8s.io/hydroplane-nodes created",
        "configmap/hydroplane created",
        "service/hydroplane created",
        "service/hydroplane-metrics created",
        "deployment.apps/hydroplane created",
        "networkpolicy.networking.k8s.io/hydroplane created",
    ];
    for object in expected {
        assert!(applied.lines().any(|line| line == object), "{object} in:\n{applied}");
    }
    assert_eq!(applied.lines().count(), expected.len(), "{applied}");
    // Applying again changes nothing.
    let again = sim.kubectl(&["apply", "-k", deploy_file("").to_str().expect("path")]);
    assert_eq!(again.matches("unchanged").count(), expected.len(), "{again}");
    let deployment: Value = serde_json::from_str(&sim.kubectl(&[
        "get",
        "deployment",
        "hydroplane",
        "-n",
        "hydroplane",
        "-o",
        "json",
    ]))
    .expect("JSON");
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"].as_str().expect("image");
    assert_eq!(image, "ghcr.io/example/hydroplane:0.1.0", "kustomize set the image");
}

/// The code of the first fenced `language` block under deploy/README.md's `## section`.
#[track_caller]
fn readme_block(section: &str, language: &str) -> String {
    let readme = std::fs::read_to_string(deploy_file("README.md")).expect("deploy/README.md");
    let heading = format!("## {section}\n");
    let start = readme.find(&heading).unwrap_or_else(|| panic!("no section {section:?}")) + heading.len();
    let body = &readme[start..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    let fence = format!("```{language}\n");
    let code = &body
        [body.find(&fence).unwrap_or_else(|| panic!("no {language} block in {section:?}")) + fence.len()..];
    code[..code.find("```").expect("the block ends")].to_owned()
}

/// One object from the simulator, as JSON.
fn get_object(sim: &KubeSim, kind: &str, name: &str) -> Value {
    serde_json::from_str(&sim.kubectl(&["get", kind, name, "-n", "hydroplane", "-o", "json"])).expect("JSON")
}

/// The files the kubelet would give the server's container for `deployment`: each ConfigMap and
/// Secret volume written under `root` (Secret files with the volume's mode). Returns each
/// mount path with the local directory standing in for it.
fn mount_volumes(sim: &KubeSim, deployment: &Value, root: &Path) -> Vec<(String, PathBuf)> {
    use base64::Engine as _;
    use std::os::unix::fs::PermissionsExt as _;
    let pod = &deployment["spec"]["template"]["spec"];
    let mut mounts = Vec::new();
    for mount in server_container(deployment)["volumeMounts"].as_array().expect("mounts") {
        let name = mount["name"].as_str().expect("a name");
        let volume = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|volume| volume["name"] == name)
            .expect("the mount's volume");
        let directory = root.join(name);
        std::fs::create_dir(&directory).expect("mkdir");
        if let Some(config_map) = volume["configMap"]["name"].as_str() {
            let object = get_object(sim, "configmap", config_map);
            for (key, value) in object["data"].as_object().expect("data") {
                std::fs::write(directory.join(key), value.as_str().expect("text")).expect("write");
            }
        } else if let Some(secret) = volume["secret"]["secretName"].as_str() {
            let object = get_object(sim, "secret", secret);
            let mode = volume["secret"]["defaultMode"].as_u64().map_or(0o644, |mode| mode as u32);
            for (key, value) in object["data"].as_object().expect("data") {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(value.as_str().expect("base64"))
                    .expect("base64");
                let file = directory.join(key);
                std::fs::write(&file, bytes).expect("write");
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
            }
        }
        mounts.push((mount["mountPath"].as_str().expect("a path").to_owned(), directory));
    }
    mounts
}

#[test]
fn kubectl_apply_k_and_the_readme_steps_give_a_server_that_refuses_a_call_without_a_token() {
    let service_account = tempfile::tempdir().expect("tempdir");
    let ca_file = service_account.path().join("ca.crt");
    let sim = KubeSim::start(&["--tls", "--token", "sa-token", "--ca-out", ca_file.to_str().expect("path")]);
    sim.kubectl(&["apply", "-k", deploy_file("").to_str().expect("path")]);

    // The README's steps for the Secret, as written, in a shell whose `hydroplane` is ours and
    // whose `kubectl` talks to the simulator; HOME is the test's.
    let home = tempfile::tempdir().expect("tempdir");
    let bin = home.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_hydroplane"), bin.join("hydroplane")).expect("symlink");
    let kubectl = sim.kubectl_command();
    // The real kubectl by its full path: the wrapper's own name would find the wrapper again.
    let program = Path::new(kubectl.get_program());
    let program = if program.is_absolute() {
        program.to_path_buf()
    } else {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|directory| directory.join(program))
            .find(|candidate| candidate.is_file())
            .expect("kubectl on PATH")
    };
    let mut wrapper = format!("#!/bin/sh\nexec '{}'", program.display());
    for arg in kubectl.get_args() {
        wrapper.push_str(&format!(" '{}'", arg.to_str().expect("utf-8")));
    }
    wrapper.push_str(" \"$@\"\n");
    std::fs::write(bin.join("kubectl"), wrapper).expect("write");
    std::fs::set_permissions(bin.join("kubectl"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let steps = readme_block("Before the server starts: its Secret", "sh");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new("sh")
        .args(["-euc", &steps])
        .env("PATH", path)
        .env("HOME", home.path())
        .current_dir(home.path())
        .stdin(Stdio::null())
        .output()
        .expect("run the README's steps");
    assert!(
        output.status.success(),
        "{steps}\nstdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let secrets = home.path().join("hydroplane-secrets");

    // The server's container as the kubelet makes it from what is in the cluster now: the
    // Deployment's args, its ConfigMap and Secret at their mounts (here, local directories), and
    // the in-cluster environment. The tests reach only loopback, so the server listens on
    // 127.0.0.1 rather than the Pod's every address.
    let deployment = get_object(&sim, "deployment", "hydroplane");
    let pod_root = tempfile::tempdir().expect("tempdir");
    let mounts = mount_volumes(&sim, &deployment, pod_root.path());
    let local = |text: &str| {
        mounts.iter().fold(text.to_owned(), |text, (mount, directory)| {
            text.replace(mount.as_str(), directory.to_str().expect("utf-8"))
        })
    };
    let config_directory =
        &mounts.iter().find(|(mount, _)| mount == "/etc/hydroplane").expect("the config mount").1;
    let settings = config_directory.join("hydroplane.yml");
    // The metrics listener too is the test's: loopback, on a free port, so that two runs of the
    // suite on one machine do not meet on the Pod's 0.0.0.0:9464.
    let shipped = local(&std::fs::read_to_string(&settings).expect("read"));
    assert!(shipped.contains("listen: 0.0.0.0:9464"), "{shipped}");
    let ours = shipped.replace("listen: 0.0.0.0:9464", &format!("listen: 127.0.0.1:{}", common::free_port()));
    std::fs::write(&settings, ours).expect("write");
    let container_args: Vec<String> = server_container(&deployment)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|arg| local(arg.as_str().expect("a string")))
        .collect();
    let mut args: Vec<&str> = Vec::new();
    let mut given = container_args.iter();
    while let Some(arg) = given.next() {
        // The address and port are the test's (Server gives -H 127.0.0.1 -p 0).
        if arg == "-H" || arg == "-p" {
            given.next();
        } else {
            args.push(arg);
        }
    }
    std::fs::write(service_account.path().join("token"), "sa-token").expect("write");
    std::fs::write(service_account.path().join("namespace"), "hydroplane").expect("write");
    let port = sim.url.rsplit(':').next().expect("a port").to_owned();
    let server = Server::start_with_env(
        &args,
        &[
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", &port),
            ("HYDROPLANE_SERVICE_ACCOUNT_DIR", service_account.path().to_str().expect("path")),
            ("KUBECONFIG", "/nonexistent/kubeconfig"),
            ("HOME", pod_root.path().to_str().expect("path")),
        ],
    );
    common::wait_until(
        "the server logs that it serves TLS with tokens",
        std::time::Duration::from_secs(10),
        || server.stderr().contains("tls=true tokens=true"),
    );

    // As the README says a client connects: TLS with the CA it made, and its token.
    let url = format!("https://localhost:{}", server.address.rsplit(':').next().expect("a port"));
    let hpctl = |token_file: Option<&Path>| {
        let mut command = Command::new(common::hpctl_binary());
        command.args(["--server", &url, "--ca-cert"]).arg(secrets.join("ca.pem"));
        if let Some(file) = token_file {
            command.arg("--token-file").arg(file);
        }
        command.arg("list").env_remove("HYDROPLANE_TOKEN").stdin(Stdio::null()).output().expect("run hpctl")
    };
    let refused = hpctl(None);
    assert!(!refused.status.success(), "a call without a token was served");
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("this server needs a token"), "{stderr}");
    let served = hpctl(Some(&secrets.join("ci.token")));
    assert!(served.status.success(), "{}", text(&served.stderr));
    assert_eq!(text(&served.stdout).trim(), "[]");
    // Plaintext is not served at all.
    let plain = Command::new(common::hpctl_binary())
        .args(["--server", &format!("http://{}", server.address), "--token-file"])
        .arg(secrets.join("ci.token"))
        .arg("list")
        .stdin(Stdio::null())
        .output()
        .expect("run hpctl");
    assert!(!plain.status.success(), "plaintext was served: {}", text(&plain.stdout));
}

#[test]
fn the_eks_identity_of_the_readme_is_valid_with_the_deployment() {
    // The README's `runtime:` for EKS, in the ConfigMap's settings, passes the server's check.
    let directory = tempfile::tempdir().expect("tempdir");
    let (_, yaml) = configmap_settings(directory.path());
    let eks_runtime = readme_block("On EKS: the AWS identity", "yaml");
    let start = yaml.find("runtime:\n").expect("a runtime block");
    let end = start + yaml[start..].find("\nsecret_store:").expect("secret_store follows runtime");
    let deployments = manifests("deployment.yaml");
    let mount = secret_mount(server_container(only(&deployments, "Deployment")));
    let secrets = directory.path().join("secrets");
    std::fs::create_dir(&secrets).expect("mkdir");
    secret_files(&secrets);
    let eks_yaml = format!("{}{}{}", &yaml[..start], eks_runtime.trim_end(), &yaml[end..])
        .replace(&mount, secrets.to_str().expect("utf-8"));
    assert!(!eks_yaml.contains("credentials:"), "the Pod's identity, not keys: {eks_yaml}");
    let (code, stdout, stderr, _) = check_yaml(directory.path(), &eks_yaml);
    assert_eq!(code, Some(0), "{stderr}\n{eks_yaml}");
    assert!(stdout.contains("runtime_type: eks, cluster_name: my-cluster, region: us-west-2"), "{stdout}");

    // The ServiceAccount's IRSA annotation, uncommented, is the one EKS's webhook reads.
    let text = std::fs::read_to_string(deploy_file("serviceaccount.yaml")).expect("read");
    let uncommented: String = text
        .lines()
        .map(|line| {
            line.strip_prefix("  # ").map(|rest| format!("  {rest}")).unwrap_or_else(|| line.to_owned())
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let account: Value = serde_saphyr::from_str(&uncommented).expect("YAML");
    let role =
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].as_str().expect("the annotation");
    assert!(role.starts_with("arn:aws:iam::") && role.contains(":role/"), "{role}");
    // The README names the Pod Identity association for the same ServiceAccount.
    let readme = std::fs::read_to_string(deploy_file("README.md")).expect("read");
    assert!(readme.contains("aws eks create-pod-identity-association"), "{readme}");
    assert!(readme.contains("--namespace hydroplane\n  --service-account hydroplane"), "{readme}");
}

// === The in-cluster config ===

/// Asks the simulator to accept only `token` from now on (`POST /_sim/tokens`, through kubectl
/// for its TLS; the admin endpoints need no credentials).
fn rotate_sim_tokens(sim: &KubeSim, token: &str) {
    let body = sim.directory().join("tokens.json");
    std::fs::write(&body, serde_json::json!({"tokens": [token]}).to_string()).expect("write");
    sim.kubectl(&["create", "--raw", "/_sim/tokens", "-f", body.to_str().expect("path")]);
}

/// Replaces a file as the kubelet does: a new file renamed over the old one.
fn replace_file(path: &Path, contents: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, contents).expect("write");
    std::fs::rename(&next, path).expect("rename");
}

#[tokio::test]
async fn the_server_finds_its_cluster_as_a_pod_does_and_follows_a_rotated_token() {
    let service_account = tempfile::tempdir().expect("tempdir");
    let ca_file = service_account.path().join("ca.crt");
    let sim =
        KubeSim::start(&["--tls", "--token", "first-token", "--ca-out", ca_file.to_str().expect("path")]);
    let token_file = service_account.path().join("token");
    std::fs::write(&token_file, "first-token\n").expect("write");
    std::fs::write(service_account.path().join("namespace"), "default\n").expect("write");
    let port = sim.url.rsplit(':').next().expect("a port").to_owned();

    // Only an in-cluster environment: no kubeconfig anywhere.
    let home = tempfile::tempdir().expect("tempdir");
    let config = home.path().join("hydroplane.yml");
    std::fs::write(&config, "runtime:\n  runtime_type: kubernetes\n").expect("write");
    let server = Server::start_with_env(
        &["-c", config.to_str().expect("path")],
        &[
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", &port),
            ("HYDROPLANE_SERVICE_ACCOUNT_DIR", service_account.path().to_str().expect("path")),
            ("KUBECONFIG", "/nonexistent/kubeconfig"),
            ("HOME", home.path().to_str().expect("path")),
        ],
    );
    assert!(server.stderr().contains("using the in-cluster config"), "{}", server.stderr());
    let mut client = server.client().await;
    let first = serde_json::json!({"process_name": "before", "container": {"image_uri": "nginx"}});
    client.start(start_request(first)).await.expect("start with the first token");
    assert_eq!(sim.names("statefulsets"), ["before"]);

    // The kubelet writes a new token; the API server then takes only the new one.
    replace_file(&token_file, "second-token\n");
    rotate_sim_tokens(&sim, "second-token");
    let second = serde_json::json!({"process_name": "after", "container": {"image_uri": "nginx"}});
    client.start(start_request(second)).await.expect("start with the rotated token");
    // kubectl, too, needs the new token now.
    let kubeconfig = std::fs::read_to_string(&sim.kubeconfig).expect("read the kubeconfig");
    std::fs::write(&sim.kubeconfig, kubeconfig.replace("first-token", "second-token")).expect("write");
    let mut sets = sim.names("statefulsets");
    sets.sort();
    assert_eq!(sets, ["after", "before"]);
    let listed = client.list(proto::ListRequest::default()).await.expect("list").into_inner();
    let mut names: Vec<String> = listed.processes.into_iter().map(|process| process.process_name).collect();
    names.sort();
    assert_eq!(names, ["after", "before"]);
    client.stop(crate::common::requests::stop_process("before")).await.expect("stop with the rotated token");
    // Neither token is ever logged.
    let logs = server.stderr();
    assert!(!logs.contains("first-token") && !logs.contains("second-token"), "{logs}");
    assert!(logs.contains("read the rotated service-account token"), "{logs}");
}
