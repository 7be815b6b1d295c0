//! The Kubernetes objects of a process, as pure functions of its spec: one Pod, one Service
//! (none without ports), and the Secrets its env and registry credentials need. No I/O here: the
//! caller resolves secret values and creates the objects.
//!
//! Every object carries Hydroplane's labels (`hydroplane/process-id`, `hydroplane/group-id`, as
//! the Python Hydroplane set them, so its clusters stay readable) and
//! `app.kubernetes.io/managed-by=hydroplane`, so that List and Stop find exactly our objects.
//! A process's own labels are stored as labels too, under the domain [`USER_LABEL_DOMAIN`]
//! ([`pod_label_key`]), so that they can never collide with ours or with anyone else's.
//! The Pod holds the spec in an annotation, which is what makes Start retry-safe across servers.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, LocalObjectReference, Pod,
    PodSpec, Probe, ResourceRequirements, Secret, SecretKeySelector, Service, ServicePort, ServiceSpec,
    TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::config::PublicExposure;
use crate::spec::{
    CheckAction, HealthCheck, ProcessSpec, Protocol, ResourceSpec, RestartPolicy, ValueOrSecret,
    service_port_name,
};

/// The label that names the process, as the Python Hydroplane set it.
pub const PROCESS_LABEL: &str = "hydroplane/process-id";
/// The label that names the process's group, as the Python Hydroplane set it.
pub const GROUP_LABEL: &str = "hydroplane/group-id";
/// The standard label that marks our objects.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "hydroplane";
/// The Pod annotation that holds the process spec (secret references only, never values).
pub const SPEC_ANNOTATION: &str = "hydroplane/spec";
/// The label selector of every object Hydroplane manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=hydroplane";

/// The label-key prefix under which a process's own labels are stored: `tier` becomes
/// `label.hydroplane/tier`, and `example.com/tier` becomes `example.com.label.hydroplane/tier`
/// (a key has one prefix, so a prefixed key keeps its own in front of ours).
pub const USER_LABEL_DOMAIN: &str = "label.hydroplane";

/// The labels of every object of a process: ours, and the process's own under
/// [`USER_LABEL_DOMAIN`].
pub fn labels(spec: &ProcessSpec) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (PROCESS_LABEL.to_owned(), spec.process_name.clone()),
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
    ]);
    if let Some(group) = &spec.group {
        labels.insert(GROUP_LABEL.to_owned(), group.clone());
    }
    for (key, value) in &spec.labels {
        labels.insert(pod_label_key(key), value.clone());
    }
    labels
}

/// The Kubernetes label key that stores a process's label `user_key`.
pub fn pod_label_key(user_key: &str) -> String {
    match user_key.split_once('/') {
        Some((prefix, name)) => format!("{prefix}.{USER_LABEL_DOMAIN}/{name}"),
        None => format!("{USER_LABEL_DOMAIN}/{user_key}"),
    }
}

/// The process's label key a Kubernetes label key stores, or `None` for a label that is not a
/// process's own (ours, or someone else's).
pub fn user_label_key(pod_key: &str) -> Option<String> {
    let (prefix, name) = pod_key.split_once('/')?;
    if prefix == USER_LABEL_DOMAIN {
        return Some(name.to_owned());
    }
    let user_prefix = prefix.strip_suffix(USER_LABEL_DOMAIN)?.strip_suffix('.')?;
    (!user_prefix.is_empty()).then(|| format!("{user_prefix}/{name}"))
}

/// The process's own labels among a Pod's labels.
pub fn user_labels(pod_labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    pod_labels.iter().filter_map(|(key, value)| Some((user_label_key(key)?, value.clone()))).collect()
}

/// The name of the Secret that holds a process's secret env values.
pub fn env_secret_name(process_name: &str) -> String {
    format!("{process_name}-env")
}

/// The name of the Secret that holds a process's registry credentials.
pub fn registry_secret_name(process_name: &str) -> String {
    format!("{process_name}-registry")
}

fn kube_protocol(protocol: Protocol) -> String {
    match protocol {
        Protocol::Tcp => "TCP".to_owned(),
        Protocol::Udp => "UDP".to_owned(),
    }
}

/// Formats vCPUs as a decimal quantity with millicore precision (`0.25`, `1`).
pub fn cpu_quantity(cpu_vcpu: f64) -> Quantity {
    let millicores = (cpu_vcpu * 1000.0).round() / 1000.0;
    Quantity(format!("{millicores}"))
}

/// Formats MiB as a binary quantity (`512Mi`).
pub fn memory_quantity(memory_mib: i64) -> Quantity {
    Quantity(format!("{memory_mib}Mi"))
}

fn resource_list(resources: &ResourceSpec) -> Option<BTreeMap<String, Quantity>> {
    let mut list = BTreeMap::new();
    if let Some(cpu) = resources.cpu_vcpu {
        list.insert("cpu".to_owned(), cpu_quantity(cpu));
    }
    if let Some(memory) = resources.memory_mib {
        list.insert("memory".to_owned(), memory_quantity(memory));
    }
    (!list.is_empty()).then_some(list)
}

/// A Pod's `restartPolicy` for a process's restart policy.
pub fn pod_restart_policy(policy: RestartPolicy) -> &'static str {
    match policy {
        RestartPolicy::Always => "Always",
        RestartPolicy::OnFailure => "OnFailure",
        RestartPolicy::Never => "Never",
    }
}

/// A container probe for a health check; ports and commands are the container's own.
pub fn probe(check: &HealthCheck) -> Probe {
    let (http_get, tcp_socket, exec) = match &check.action {
        CheckAction::HttpGet { port, path } => (
            Some(HTTPGetAction {
                port: IntOrString::Int(*port as i32),
                path: Some(path.clone()),
                ..Default::default()
            }),
            None,
            None,
        ),
        CheckAction::TcpSocket { port } => {
            (None, Some(TCPSocketAction { port: IntOrString::Int(*port as i32), host: None }), None)
        }
        CheckAction::Exec { command } => (None, None, Some(ExecAction { command: Some(command.clone()) })),
    };
    Probe {
        http_get,
        tcp_socket,
        exec,
        period_seconds: Some(check.period_seconds as i32),
        timeout_seconds: Some(check.timeout_seconds as i32),
        failure_threshold: Some(check.failure_threshold as i32),
        ..Default::default()
    }
}

/// The Pod of a process in `namespace`.
pub fn pod(spec: &ProcessSpec, namespace: &str) -> Pod {
    let container = &spec.container;
    let env_secret = env_secret_name(&spec.process_name);
    let env = container
        .env
        .iter()
        .map(|variable| match &variable.value {
            ValueOrSecret::Value(value) => {
                EnvVar { name: variable.name.clone(), value: Some(value.clone()), value_from: None }
            }
            // The value lives in the process's own Secret under the variable's name, so that one
            // Secret serves every variable and goes away with the Pod.
            ValueOrSecret::Secret(_) => EnvVar {
                name: variable.name.clone(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: env_secret.clone(),
                        key: variable.name.clone(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
            },
        })
        .collect::<Vec<_>>();
    let ports = container
        .ports
        .iter()
        .map(|port| ContainerPort {
            container_port: port.container_port as i32,
            name: port.name.clone(),
            protocol: Some(kube_protocol(port.protocol)),
            ..Default::default()
        })
        .collect::<Vec<_>>();
    let resources = ResourceRequirements {
        requests: container.resource_request.as_ref().and_then(resource_list),
        limits: container.resource_limit.as_ref().and_then(resource_list),
        ..Default::default()
    };
    let has_resources = resources.requests.is_some() || resources.limits.is_some();
    let spec_json = serde_json::to_string(spec).unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name: Some(spec.process_name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels(spec)),
            annotations: Some(BTreeMap::from([(SPEC_ANNOTATION.to_owned(), spec_json)])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: spec.process_name.clone(),
                image: Some(container.image_uri.clone()),
                command: (!container.command.is_empty()).then(|| container.command.clone()),
                env: (!env.is_empty()).then_some(env),
                ports: (!ports.is_empty()).then_some(ports),
                resources: has_resources.then_some(resources),
                working_dir: container.working_dir.clone(),
                readiness_probe: spec.readiness.as_ref().map(probe),
                liveness_probe: spec.liveness.as_ref().map(probe),
                ..Default::default()
            }],
            // The kubelet restarts the container in place as the policy says (a crash shows as
            // CrashLoopBackOff with its restart count).
            restart_policy: Some(pod_restart_policy(spec.restart_policy).to_owned()),
            // Validation keeps the limit within what the field holds.
            active_deadline_seconds: spec.max_run_seconds.map(|seconds| seconds as i64),
            node_selector: (!container.node_selector.is_empty()).then(|| container.node_selector.clone()),
            image_pull_secrets: container
                .password
                .as_ref()
                .map(|_| vec![LocalObjectReference { name: registry_secret_name(&spec.process_name) }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// An ownerReference to the process's Pod, so that deleting the Pod garbage-collects the
/// object even if the server dies half-way.
pub fn owned_by_pod(process_name: &str, pod_uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Pod".to_owned(),
        name: process_name.to_owned(),
        uid: pod_uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The Service of a process, owned by its Pod; `None` for a process without ports. A public
/// process's is exposed as `exposure` says: NodePort, LoadBalancer (with its annotations) or
/// not at all (ClusterIP).
pub fn service(
    spec: &ProcessSpec,
    namespace: &str,
    pod_uid: &str,
    exposure: &PublicExposure,
) -> Option<Service> {
    let ports = &spec.container.ports;
    if ports.is_empty() {
        return None;
    }
    let (type_, annotations) = match exposure {
        _ if !spec.has_public_ip => ("ClusterIP", None),
        PublicExposure::NodePort => ("NodePort", None),
        PublicExposure::LoadBalancer { annotations } => {
            ("LoadBalancer", (!annotations.is_empty()).then(|| annotations.clone()))
        }
        PublicExposure::None => ("ClusterIP", None),
    };
    Some(Service {
        metadata: ObjectMeta {
            name: Some(spec.process_name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels(spec)),
            annotations,
            owner_references: Some(vec![owned_by_pod(&spec.process_name, pod_uid)]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(type_.to_owned()),
            selector: Some(BTreeMap::from([(PROCESS_LABEL.to_owned(), spec.process_name.clone())])),
            ports: Some(
                ports
                    .iter()
                    .map(|port| ServicePort {
                        // Kubernetes requires names once a Service has several ports; validation made
                        // sure these names differ.
                        name: Some(service_port_name(
                            port.name.as_deref(),
                            port.protocol,
                            port.container_port,
                        )),
                        port: port.container_port as i32,
                        target_port: Some(IntOrString::Int(port.container_port as i32)),
                        protocol: Some(kube_protocol(port.protocol)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    })
}

/// A Secret of a process, owned by its Pod.
fn owned_secret(
    spec: &ProcessSpec,
    namespace: &str,
    pod_uid: &str,
    name: String,
    type_: &str,
    data: BTreeMap<String, ByteString>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels(spec)),
            owner_references: Some(vec![owned_by_pod(&spec.process_name, pod_uid)]),
            ..Default::default()
        },
        data: Some(data),
        type_: Some(type_.to_owned()),
        immutable: Some(true),
        ..Default::default()
    }
}

/// The Secret that holds the secret env values of a process, keyed by variable name; `None`
/// when it has none. `values` are the resolved values, in the order of the secret env vars.
pub fn env_secret(
    spec: &ProcessSpec,
    namespace: &str,
    pod_uid: &str,
    values: BTreeMap<String, Vec<u8>>,
) -> Option<Secret> {
    if values.is_empty() {
        return None;
    }
    let data = values.into_iter().map(|(name, value)| (name, ByteString(value))).collect();
    Some(owned_secret(spec, namespace, pod_uid, env_secret_name(&spec.process_name), "Opaque", data))
}

/// The registry host of an image, as Docker names it in a config: the first path component when
/// it looks like a host, Docker Hub otherwise.
pub fn registry_host(image_uri: &str) -> String {
    match image_uri.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_owned()
        }
        _ => "https://index.docker.io/v1/".to_owned(),
    }
}

/// The docker-registry Secret for a process's image pull credentials.
pub fn registry_secret(
    spec: &ProcessSpec,
    namespace: &str,
    pod_uid: &str,
    username: &str,
    password: &str,
) -> Secret {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let config = serde_json::json!({
        "auths": { registry_host(&spec.container.image_uri): {
            "username": username, "password": password, "auth": auth } }
    });
    let data =
        BTreeMap::from([(".dockerconfigjson".to_owned(), ByteString(config.to_string().into_bytes()))]);
    owned_secret(
        spec,
        namespace,
        pod_uid,
        registry_secret_name(&spec.process_name),
        "kubernetes.io/dockerconfigjson",
        data,
    )
}

/// The Pod whose dry-run create in `namespace` tells whether the namespace exists, for
/// credentials that may not read namespaces. Never stored: only ever sent with `dryRun=All`.
pub fn namespace_probe(namespace: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("hydroplane-namespace-check".to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "check".to_owned(),
                image: Some("registry.k8s.io/pause:3.10".to_owned()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// The spec annotation of a Pod, as it is.
pub fn spec_annotation(pod: &Pod) -> Option<&str> {
    pod.metadata.annotations.as_ref()?.get(SPEC_ANNOTATION).map(String::as_str)
}

/// The spec an annotation holds, if it is readable.
pub fn parse_spec(annotation: &str) -> Option<ProcessSpec> {
    serde_json::from_str(annotation).ok()
}

/// The spec a Pod was made from, if it carries one.
pub fn spec_of(pod: &Pod) -> Option<ProcessSpec> {
    spec_annotation(pod).and_then(parse_spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SecretReference;

    fn nginx() -> ProcessSpec {
        serde_json::from_str(
            r#"{"process_name": "nginx", "container": {"image_uri": "nginxdemos/hello",
                "ports": [{"container_port": 80, "host_port": 8080, "protocol": "tcp"}]},
                "has_public_ip": true}"#,
        )
        .expect("parses")
    }

    fn full() -> ProcessSpec {
        serde_json::from_str(
            r#"{"process_name": "api", "group": "backend", "container": {
                "image_uri": "registry.example.com:5000/team/api:1.2", "command": ["/api", "--port", "8080"],
                "env": [{"name": "MODE", "value": "prod"}, {"name": "TOKEN", "value": {"secret_name": "api", "key": "token"}}],
                "ports": [{"container_port": 8080, "name": "http"}, {"container_port": 9000, "protocol": "udp"}],
                "resource_request": {"cpu_vcpu": "0.25", "memory_mib": 128},
                "resource_limit": {"cpu_vcpu": 1, "memory_mib": 512},
                "node_selector": {"kubernetes.io/arch": "amd64"},
                "username": "robot", "password": {"secret_name": "registry", "key": "password"},
                "working_dir": "/srv/api"}}"#,
        )
        .expect("parses")
    }

    #[test]
    fn the_nginx_example_is_one_pod_and_one_node_port_service() {
        let spec = nginx();
        let pod = pod(&spec, "default");
        assert_eq!(pod.metadata.name.as_deref(), Some("nginx"));
        let labels = pod.metadata.labels.clone().expect("labels");
        assert_eq!(labels.get(PROCESS_LABEL).map(String::as_str), Some("nginx"));
        assert_eq!(labels.get(MANAGED_BY_LABEL).map(String::as_str), Some("hydroplane"));
        assert!(!labels.contains_key(GROUP_LABEL));
        let pod_spec = pod.spec.as_ref().expect("spec");
        let container = &pod_spec.containers[0];
        assert_eq!(container.image.as_deref(), Some("nginxdemos/hello"));
        assert_eq!(container.command, None, "no command keeps the image's entrypoint");
        assert_eq!(container.ports.as_ref().expect("ports")[0].container_port, 80);
        assert_eq!(pod_spec.restart_policy.as_deref(), Some("Always"), "a named process stays up by default");
        assert_eq!((pod_spec.active_deadline_seconds, container.readiness_probe.as_ref()), (None, None));
        assert_eq!(spec_of(&pod), Some(spec.clone()));

        let service = service(&spec, "default", "uid-1", &PublicExposure::NodePort).expect("a service");
        let service_spec = service.spec.expect("spec");
        assert_eq!(service_spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(
            service_spec.selector,
            Some(BTreeMap::from([(PROCESS_LABEL.to_owned(), "nginx".to_owned())]))
        );
        let port = &service_spec.ports.expect("ports")[0];
        assert_eq!((port.port, port.name.as_deref(), port.node_port), (80, Some("tcp-80"), None));
        let owner = &service.metadata.owner_references.expect("owned")[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()), ("Pod", "nginx", "uid-1"));
    }

    #[test]
    fn a_public_process_is_exposed_as_the_settings_say() {
        let spec = nginx();
        assert!(spec.has_public_ip);
        let annotations = BTreeMap::from([(
            "service.beta.kubernetes.io/aws-load-balancer-type".to_owned(),
            "external".to_owned(),
        )]);
        let exposure = PublicExposure::LoadBalancer { annotations: annotations.clone() };
        let balanced = service(&spec, "default", "uid", &exposure).expect("a service");
        assert_eq!(balanced.spec.expect("spec").type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(balanced.metadata.annotations, Some(annotations));
        let hidden = service(&spec, "default", "uid", &PublicExposure::None).expect("a service");
        assert_eq!(hidden.spec.expect("spec").type_.as_deref(), Some("ClusterIP"));
        assert_eq!(hidden.metadata.annotations, None);
        // A private process is private whatever the exposure.
        let private = ProcessSpec { has_public_ip: false, ..spec };
        let private = service(&private, "default", "uid", &exposure).expect("a service");
        assert_eq!(private.spec.expect("spec").type_.as_deref(), Some("ClusterIP"));
        assert_eq!(private.metadata.annotations, None);
    }

    #[test]
    fn every_field_of_a_full_spec_is_mapped() {
        let spec = full();
        let pod = pod(&spec, "procs");
        assert_eq!(pod.metadata.namespace.as_deref(), Some("procs"));
        assert_eq!(
            pod.metadata.labels.as_ref().and_then(|labels| labels.get(GROUP_LABEL)).map(String::as_str),
            Some("backend")
        );
        let pod_spec = pod.spec.expect("spec");
        let container = &pod_spec.containers[0];
        assert_eq!(
            container.command.as_deref(),
            Some(&["/api".to_owned(), "--port".into(), "8080".into()][..])
        );
        assert_eq!(container.working_dir.as_deref(), Some("/srv/api"));
        let env = container.env.as_ref().expect("env");
        assert_eq!(env[0].value.as_deref(), Some("prod"));
        let secret_ref =
            env[1].value_from.as_ref().and_then(|from| from.secret_key_ref.as_ref()).expect("ref");
        assert_eq!((secret_ref.name.as_str(), secret_ref.key.as_str()), ("api-env", "TOKEN"));
        let resources = container.resources.as_ref().expect("resources");
        let requests = resources.requests.as_ref().expect("requests");
        assert_eq!(requests["cpu"], Quantity("0.25".into()));
        assert_eq!(requests["memory"], Quantity("128Mi".into()));
        let limits = resources.limits.as_ref().expect("limits");
        assert_eq!(limits["cpu"], Quantity("1".into()));
        assert_eq!(limits["memory"], Quantity("512Mi".into()));
        assert_eq!(pod_spec.node_selector.expect("selector")["kubernetes.io/arch"], "amd64");
        assert_eq!(pod_spec.image_pull_secrets.expect("pull secrets")[0].name, "api-registry");

        let service =
            service(&spec, "procs", "uid", &PublicExposure::NodePort).expect("service").spec.expect("spec");
        assert_eq!(service.type_.as_deref(), Some("ClusterIP"));
        let ports = service.ports.expect("ports");
        assert_eq!(ports[0].name.as_deref(), Some("http"));
        assert_eq!((ports[1].name.as_deref(), ports[1].protocol.as_deref()), (Some("udp-9000"), Some("UDP")));
    }

    #[test]
    fn a_process_without_ports_has_no_service_and_secrets_are_owned_by_the_pod() {
        let mut spec = full();
        spec.container.ports.clear();
        assert!(service(&spec, "ns", "uid", &PublicExposure::NodePort).is_none());

        let values = BTreeMap::from([("TOKEN".to_owned(), b"s3cr3t".to_vec())]);
        let secret = env_secret(&spec, "ns", "uid", values).expect("secret");
        assert_eq!(secret.metadata.name.as_deref(), Some("api-env"));
        assert_eq!(secret.data.expect("data")["TOKEN"], ByteString(b"s3cr3t".to_vec()));
        assert_eq!(secret.metadata.owner_references.expect("owned")[0].uid, "uid");
        assert!(env_secret(&spec, "ns", "uid", BTreeMap::new()).is_none());

        let registry = registry_secret(&spec, "ns", "uid", "robot", "pw");
        assert_eq!(registry.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
        let config: serde_json::Value =
            serde_json::from_slice(&registry.data.expect("data")[".dockerconfigjson"].0).expect("json");
        assert_eq!(config["auths"]["registry.example.com:5000"]["auth"], "cm9ib3Q6cHc=");
    }

    #[test]
    fn the_spec_annotation_holds_references_not_values() {
        let pod = pod(&full(), "ns");
        let annotation = &pod.metadata.annotations.expect("annotations")[SPEC_ANNOTATION];
        let spec: ProcessSpec = serde_json::from_str(annotation).expect("the annotation is a spec");
        assert_eq!(
            spec.secret_references(),
            vec![
                &SecretReference { secret_name: "api".into(), key: Some("token".into()) },
                &SecretReference { secret_name: "registry".into(), key: Some("password".into()) },
            ]
        );
    }

    #[test]
    fn a_process_labels_are_stored_under_our_domain_and_read_back() {
        let mut spec = nginx();
        spec.labels = BTreeMap::from([
            ("tier".to_owned(), "web".to_owned()),
            ("example.com/team".to_owned(), "blue".to_owned()),
            ("hydroplane/process-id".to_owned(), "spoof".to_owned()),
        ]);
        let pod = pod(&spec, "ns");
        let labels = pod.metadata.labels.clone().expect("labels");
        assert_eq!(labels.get("label.hydroplane/tier").map(String::as_str), Some("web"));
        assert_eq!(labels.get("example.com.label.hydroplane/team").map(String::as_str), Some("blue"));
        // A process's label never overrides ours.
        assert_eq!(labels.get(PROCESS_LABEL).map(String::as_str), Some("nginx"));
        assert_eq!(user_labels(&labels), spec.labels);
        for not_users in
            ["label.hydroplane", "xlabel.hydroplane/a", ".label.hydroplane/a", "app.kubernetes.io/managed-by"]
        {
            assert_eq!(user_label_key(not_users), None, "{not_users}");
        }
    }

    #[test]
    fn registry_hosts_follow_docker_naming() {
        assert_eq!(registry_host("nginx"), "https://index.docker.io/v1/");
        assert_eq!(registry_host("nginxdemos/hello"), "https://index.docker.io/v1/");
        assert_eq!(registry_host("ghcr.io/org/app:1"), "ghcr.io");
        assert_eq!(registry_host("localhost/app"), "localhost");
        assert_eq!(cpu_quantity(0.1 + 0.2), Quantity("0.3".into()));
    }

    #[test]
    fn restart_policy_health_checks_and_deadline_become_the_pods_own() {
        let mut spec = nginx();
        spec.restart_policy = RestartPolicy::OnFailure;
        spec.readiness = Some(HealthCheck::new(CheckAction::HttpGet { port: 80, path: "/ready".into() }));
        spec.liveness = Some(HealthCheck {
            period_seconds: 5,
            ..HealthCheck::new(CheckAction::Exec { command: vec!["pgrep".into(), "nginx".into()] })
        });
        spec.max_run_seconds = Some(60);
        let pod = pod(&spec, "default");
        let pod_spec = pod.spec.as_ref().expect("spec");
        assert_eq!(pod_spec.restart_policy.as_deref(), Some("OnFailure"));
        assert_eq!(pod_spec.active_deadline_seconds, Some(60));
        let container = &pod_spec.containers[0];
        let readiness = container.readiness_probe.as_ref().expect("readiness");
        let get = readiness.http_get.as_ref().expect("http_get");
        assert_eq!((&get.port, get.path.as_deref()), (&IntOrString::Int(80), Some("/ready")));
        assert_eq!(
            (readiness.period_seconds, readiness.timeout_seconds, readiness.failure_threshold),
            (Some(10), Some(1), Some(3))
        );
        let liveness = container.liveness_probe.as_ref().expect("liveness");
        assert_eq!(
            liveness.exec.as_ref().and_then(|exec| exec.command.clone()),
            Some(vec!["pgrep".into(), "nginx".into()])
        );
        assert_eq!(liveness.period_seconds, Some(5));
        assert_eq!(spec_of(&pod), Some(spec));
    }
}

#[cfg(test)]
mod rbac_tests {
    use k8s_openapi::api::rbac::v1::{ClusterRole, Role};

    /// The RBAC example grants exactly what the runtime does with each resource.
    #[test]
    fn the_rbac_example_covers_what_the_runtime_does() {
        let text = include_str!("../../../examples/rbac.yaml");
        let documents: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(text).expect("examples/rbac.yaml is valid YAML");
        assert_eq!(documents.len(), 4);
        let role: Role = serde_json::from_value(documents[0].clone()).expect("a Role");
        let verbs = |resource: &str| -> Vec<String> {
            role.rules
                .iter()
                .flatten()
                .find(|rule| rule.resources.iter().flatten().any(|r| r == resource))
                .map(|rule| rule.verbs.clone())
                .unwrap_or_default()
        };
        for verb in ["get", "list", "watch", "create", "delete", "deletecollection"] {
            assert!(verbs("pods").iter().any(|v| v == verb), "pods: {verb}");
        }
        // `get`: a Start that finds the Service's name taken checks which Pod owns it.
        for verb in ["get", "list", "watch", "create"] {
            assert!(verbs("services").iter().any(|v| v == verb), "services: {verb}");
        }
        assert!(verbs("secrets").iter().any(|v| v == "create"));
        assert!(!verbs("secrets").iter().any(|v| v == "get" || v == "list"), "secrets are never read back");
        // Logs reads the container log of a process's Pod.
        assert_eq!(verbs("pods/log"), ["get"]);
        // Describe lists the Events of a process's Pod.
        assert_eq!(verbs("events"), ["list"]);
        let nodes: ClusterRole = serde_json::from_value(documents[2].clone()).expect("a ClusterRole");
        let node_verbs = &nodes.rules.expect("rules")[0].verbs;
        assert_eq!(node_verbs, &["get", "list", "watch"]);
    }
}
