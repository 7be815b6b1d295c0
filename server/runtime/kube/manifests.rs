//! The Kubernetes objects of a process, as pure functions of its spec: the object that runs it
//! (chosen by its restart policy, see [`Controller`]), one Service (none without ports), and the
//! Secrets its env and registry credentials need, the last two owned by the first. No I/O here:
//! the caller resolves secret values and creates the objects.
//!
//! - `ALWAYS`: a StatefulSet of one replica named after the process, whose Pod is `NAME-0`.
//! - `ON_FAILURE`: a Job of one completion named after the process, Pods `NAME-xxxxx`.
//! - `NEVER`: a bare Pod named after the process (what every process was before restart
//!   policies, so a Pod made by an older version is read as one).
//!
//! Every object carries Hydroplane's labels (`hydroplane/process-id`, `hydroplane/group-id`, as
//! the Python Hydroplane set them, so its clusters stay readable) and
//! `app.kubernetes.io/managed-by=hydroplane`, so that List and Stop find exactly our objects.
//! A process's own labels are stored as labels too, under the domain [`USER_LABEL_DOMAIN`]
//! ([`pod_label_key`]), so that they can never collide with ours or with anyone else's.
//! The object that runs a process, and its Pods, hold the spec in an annotation, which is what
//! makes Start retry-safe across servers.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, LocalObjectReference, Pod,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Secret, SecretKeySelector, Service, ServicePort,
    ServiceSpec, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
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
/// The finalizer on a bare Pod (`NEVER`) that only Hydroplane's Stop removes: a Pod deleted by
/// anyone else (`kubectl delete`, an eviction, its node's loss) stays, marked for deletion, so
/// that the process shows FAILED with the reason instead of vanishing.
pub const KEEP_STATUS_FINALIZER: &str = "hydroplane/keep-status";
/// The label on a StatefulSet (`ALWAYS`) that carries the process's `max_run_seconds`, which
/// the server enforces (a StatefulSet's Pod cannot use `activeDeadlineSeconds`).
pub const MAX_RUN_SECONDS_LABEL: &str = "hydroplane/max-run-seconds";
/// The label Hydroplane puts on a StatefulSet it ended (scaled to zero) for running longer
/// than its `max_run_seconds`: its value is the reason, [`DEADLINE_EXCEEDED`].
pub const ENDED_LABEL: &str = "hydroplane/ended";
/// The reason of a process stopped for running longer than its `max_run_seconds`, as a Job's.
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";

/// The label-key prefix under which a process's own labels are stored: `tier` becomes
/// `label.hydroplane/tier`, and `example.com/tier` becomes `example.com.label.hydroplane/tier`
/// (a key has one prefix, so a prefixed key keeps its own in front of ours).
pub const USER_LABEL_DOMAIN: &str = "label.hydroplane";

/// A Job's backoff limit: high enough never to be reached, since with `OnFailure` every
/// container restart counts against it and the process is meant to restart until it succeeds.
pub const JOB_BACKOFF_LIMIT: i32 = i32::MAX;

/// The object that runs a process and owns everything else it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Controller {
    /// A StatefulSet of one replica (`ALWAYS`): its Pod `NAME-0` comes back, under the same
    /// name, whenever it ends or is deleted, evicted or lost with its node.
    StatefulSet,
    /// A Job of one completion (`ON_FAILURE`): its Pod is replaced when it is lost, restarted
    /// in place when it fails, and done once it exits 0.
    Job,
    /// A bare Pod (`NEVER`, and every process an older version made): it runs once.
    Pod,
}

impl Controller {
    /// The object that runs a process with `policy`.
    pub fn for_policy(policy: RestartPolicy) -> Controller {
        match policy {
            RestartPolicy::Always => Controller::StatefulSet,
            RestartPolicy::OnFailure => Controller::Job,
            RestartPolicy::Never => Controller::Pod,
        }
    }

    /// Its kind, as in an ownerReference.
    pub fn kind(self) -> &'static str {
        match self {
            Controller::StatefulSet => "StatefulSet",
            Controller::Job => "Job",
            Controller::Pod => "Pod",
        }
    }

    /// Its API version, as in an ownerReference.
    pub fn api_version(self) -> &'static str {
        match self {
            Controller::StatefulSet => "apps/v1",
            Controller::Job => "batch/v1",
            Controller::Pod => "v1",
        }
    }

    /// The kind of an ownerReference, when it is one of ours.
    pub fn of_kind(kind: &str) -> Option<Controller> {
        [Controller::StatefulSet, Controller::Job, Controller::Pod].into_iter().find(|c| c.kind() == kind)
    }
}

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

/// The Pod spec of a process: its container, and the restart policy and deadline its
/// [`Controller`] needs (a StatefulSet's Pods restart `Always` and have no deadline, which would
/// only make the StatefulSet replace the failed Pod; a Job's deadline is the Job's own).
pub fn pod_spec(spec: &ProcessSpec) -> PodSpec {
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
            // Secret serves every variable and goes away with the process.
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
    let controller = Controller::for_policy(spec.restart_policy);
    PodSpec {
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
        // Validation keeps the limit within what the field holds. Only a bare Pod's: see above.
        active_deadline_seconds: spec
            .max_run_seconds
            .filter(|_| controller == Controller::Pod)
            .map(|seconds| seconds as i64),
        node_selector: (!container.node_selector.is_empty()).then(|| container.node_selector.clone()),
        image_pull_secrets: container
            .password
            .as_ref()
            .map(|_| vec![LocalObjectReference { name: registry_secret_name(&spec.process_name) }]),
        ..Default::default()
    }
}

/// The metadata of a process's object (and of its Pod template): its labels and the spec
/// annotation, which is what makes Start retry-safe across servers.
fn object_meta(spec: &ProcessSpec, namespace: Option<&str>) -> ObjectMeta {
    let spec_json = serde_json::to_string(spec).unwrap_or_default();
    ObjectMeta {
        name: namespace.map(|_| spec.process_name.clone()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels(spec)),
        annotations: Some(BTreeMap::from([(SPEC_ANNOTATION.to_owned(), spec_json)])),
        ..Default::default()
    }
}

/// The bare Pod of a process in `namespace` (`NEVER`).
pub fn pod(spec: &ProcessSpec, namespace: &str) -> Pod {
    let metadata = ObjectMeta {
        finalizers: Some(vec![KEEP_STATUS_FINALIZER.to_owned()]),
        ..object_meta(spec, Some(namespace))
    };
    Pod { metadata, spec: Some(pod_spec(spec)), status: None }
}

/// The Pod template of a controller: the same labels and annotation a bare Pod has, so that
/// every Pod of a process is found and read the same way.
fn pod_template(spec: &ProcessSpec) -> PodTemplateSpec {
    PodTemplateSpec { metadata: Some(object_meta(spec, None)), spec: Some(pod_spec(spec)) }
}

/// The StatefulSet of one replica of a process in `namespace` (`ALWAYS`): its Pod is `NAME-0`,
/// and its governing Service is the process's own (which need not exist: a process without
/// ports has none, and the StatefulSet does not require it).
pub fn stateful_set(spec: &ProcessSpec, namespace: &str) -> StatefulSet {
    let mut metadata = object_meta(spec, Some(namespace));
    if let (Some(seconds), Some(labels)) = (spec.max_run_seconds, metadata.labels.as_mut()) {
        labels.insert(MAX_RUN_SECONDS_LABEL.to_owned(), seconds.to_string());
    }
    StatefulSet {
        metadata,
        spec: StatefulSetSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([
                    (PROCESS_LABEL.to_owned(), spec.process_name.clone()),
                    (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
                ])),
                ..Default::default()
            },
            service_name: Some(spec.process_name.clone()),
            template: pod_template(spec),
            ..Default::default()
        },
        status: None,
    }
}

/// The Job of one completion of a process in `namespace` (`ON_FAILURE`); its selector is the one
/// the API server generates, and its deadline is the process's `max_run_seconds`.
pub fn job(spec: &ProcessSpec, namespace: &str) -> Job {
    Job {
        metadata: object_meta(spec, Some(namespace)),
        spec: Some(JobSpec {
            completions: Some(1),
            parallelism: Some(1),
            backoff_limit: Some(JOB_BACKOFF_LIMIT),
            active_deadline_seconds: spec.max_run_seconds.map(|seconds| seconds as i64),
            template: pod_template(spec),
            ..Default::default()
        }),
        status: None,
    }
}

/// An ownerReference to the process's [`Controller`] object `uid` (named after the process), so
/// that deleting it garbage-collects the Service and Secrets even if the server dies half-way.
pub fn owned_by(controller: Controller, process_name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: controller.api_version().to_owned(),
        kind: controller.kind().to_owned(),
        name: process_name.to_owned(),
        uid: uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The Service of a process, owned by `owner`; `None` for a process without ports. A public
/// process's is exposed as `exposure` says: NodePort, LoadBalancer (with its annotations) or
/// not at all (ClusterIP).
pub fn service(
    spec: &ProcessSpec,
    namespace: &str,
    owner: &OwnerReference,
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
            owner_references: Some(vec![owner.clone()]),
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

/// A Secret of a process, owned by `owner`.
fn owned_secret(
    spec: &ProcessSpec,
    namespace: &str,
    owner: &OwnerReference,
    name: String,
    type_: &str,
    data: BTreeMap<String, ByteString>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels(spec)),
            owner_references: Some(vec![owner.clone()]),
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
    owner: &OwnerReference,
    values: BTreeMap<String, Vec<u8>>,
) -> Option<Secret> {
    if values.is_empty() {
        return None;
    }
    let data = values.into_iter().map(|(name, value)| (name, ByteString(value))).collect();
    Some(owned_secret(spec, namespace, owner, env_secret_name(&spec.process_name), "Opaque", data))
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
    owner: &OwnerReference,
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
        owner,
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

/// The spec an object (a StatefulSet, a Job, a Pod) was made from, if it carries one.
pub fn spec_in(metadata: &ObjectMeta) -> Option<ProcessSpec> {
    metadata.annotations.as_ref()?.get(SPEC_ANNOTATION).and_then(|annotation| parse_spec(annotation))
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

        let owner = owned_by(Controller::Pod, "nginx", "uid-1");
        let service = service(&spec, "default", &owner, &PublicExposure::NodePort).expect("a service");
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
        let balanced = service(&spec, "default", &owned_by(Controller::Pod, "nginx", "uid"), &exposure)
            .expect("a service");
        assert_eq!(balanced.spec.expect("spec").type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(balanced.metadata.annotations, Some(annotations));
        let hidden =
            service(&spec, "default", &owned_by(Controller::Pod, "nginx", "uid"), &PublicExposure::None)
                .expect("a service");
        assert_eq!(hidden.spec.expect("spec").type_.as_deref(), Some("ClusterIP"));
        assert_eq!(hidden.metadata.annotations, None);
        // A private process is private whatever the exposure.
        let private = ProcessSpec { has_public_ip: false, ..spec };
        let private = service(&private, "default", &owned_by(Controller::Pod, "private", "uid"), &exposure)
            .expect("a service");
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

        let owner = owned_by(Controller::StatefulSet, "api", "uid");
        let service =
            service(&spec, "procs", &owner, &PublicExposure::NodePort).expect("service").spec.expect("spec");
        assert_eq!(service.type_.as_deref(), Some("ClusterIP"));
        let ports = service.ports.expect("ports");
        assert_eq!(ports[0].name.as_deref(), Some("http"));
        assert_eq!((ports[1].name.as_deref(), ports[1].protocol.as_deref()), (Some("udp-9000"), Some("UDP")));
    }

    #[test]
    fn a_process_without_ports_has_no_service_and_secrets_are_owned_by_the_pod() {
        let mut spec = full();
        spec.container.ports.clear();
        let owner = owned_by(Controller::Job, "api", "uid");
        assert!(service(&spec, "ns", &owner, &PublicExposure::NodePort).is_none());

        let values = BTreeMap::from([("TOKEN".to_owned(), b"s3cr3t".to_vec())]);
        let secret = env_secret(&spec, "ns", &owner, values).expect("secret");
        assert_eq!(secret.metadata.name.as_deref(), Some("api-env"));
        assert_eq!(secret.data.expect("data")["TOKEN"], ByteString(b"s3cr3t".to_vec()));
        let secret_owner = &secret.metadata.owner_references.expect("owned")[0];
        assert_eq!(
            (secret_owner.api_version.as_str(), secret_owner.kind.as_str(), secret_owner.uid.as_str()),
            ("batch/v1", "Job", "uid")
        );
        assert!(env_secret(&spec, "ns", &owner, BTreeMap::new()).is_none());

        let registry = registry_secret(&spec, "ns", &owner, "robot", "pw");
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
        spec.restart_policy = RestartPolicy::Never;
        spec.readiness = Some(HealthCheck::new(CheckAction::HttpGet { port: 80, path: "/ready".into() }));
        spec.liveness = Some(HealthCheck {
            period_seconds: 5,
            ..HealthCheck::new(CheckAction::Exec { command: vec!["pgrep".into(), "nginx".into()] })
        });
        spec.max_run_seconds = Some(60);
        let pod = pod(&spec, "default");
        let pod_spec = pod.spec.as_ref().expect("spec");
        assert_eq!(pod_spec.restart_policy.as_deref(), Some("Never"));
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
        // Only Hydroplane's Stop removes a bare Pod: its finalizer keeps a lost one, FAILED.
        assert_eq!(pod.metadata.finalizers, Some(vec![KEEP_STATUS_FINALIZER.to_owned()]));
    }

    /// The labels, annotation and container every object of `spec` and its Pod template share.
    #[track_caller]
    fn check_object(spec: &ProcessSpec, metadata: &ObjectMeta, template: &PodTemplateSpec) {
        assert_eq!(metadata.name.as_deref(), Some(spec.process_name.as_str()));
        assert_eq!(metadata.labels.as_ref(), Some(&labels(spec)));
        assert_eq!(spec_in(metadata).as_ref(), Some(spec));
        let template_meta = template.metadata.as_ref().expect("template metadata");
        assert_eq!(template_meta.name, None, "the controller names its Pods");
        assert_eq!(template_meta.labels.as_ref(), Some(&labels(spec)));
        assert_eq!(spec_in(template_meta).as_ref(), Some(spec));
        let pod_spec = template.spec.as_ref().expect("template spec");
        assert_eq!(pod_spec.containers[0].image.as_deref(), Some(spec.container.image_uri.as_str()));
        assert_eq!(pod_spec.active_deadline_seconds, None, "only a bare Pod has its own deadline");
    }

    #[test]
    fn always_is_a_stateful_set_of_one_whose_pod_restarts_always() {
        let mut spec = full();
        spec.max_run_seconds = Some(30);
        assert_eq!(Controller::for_policy(spec.restart_policy), Controller::StatefulSet);
        let set = stateful_set(&spec, "procs");
        let set_spec = &set.spec;
        // The server enforces the limit (see `deadline`), read from the StatefulSet's label.
        let mut metadata = set.metadata.clone();
        let limit = metadata.labels.as_mut().and_then(|labels| labels.remove(MAX_RUN_SECONDS_LABEL));
        assert_eq!(limit.as_deref(), Some("30"));
        check_object(&spec, &metadata, &set_spec.template);
        assert_eq!(set_spec.replicas, Some(1));
        assert_eq!(set_spec.service_name.as_deref(), Some("api"));
        let selector = set_spec.selector.match_labels.as_ref().expect("match labels");
        let template_labels =
            set_spec.template.metadata.as_ref().and_then(|m| m.labels.as_ref()).expect("labels");
        assert!(
            selector.iter().all(|(key, value)| template_labels.get(key) == Some(value)),
            "the selector matches the template"
        );
        let pod_spec = set_spec.template.spec.as_ref().expect("template spec");
        assert_eq!(pod_spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(pod_spec.image_pull_secrets.as_ref().expect("pull secrets")[0].name, "api-registry");
    }

    #[test]
    fn on_failure_is_a_job_of_one_completion_with_the_deadline_and_never_is_a_bare_pod() {
        let mut spec = full();
        spec.restart_policy = RestartPolicy::OnFailure;
        spec.max_run_seconds = Some(2);
        assert_eq!(Controller::for_policy(spec.restart_policy), Controller::Job);
        let job = job(&spec, "procs");
        let job_spec = job.spec.as_ref().expect("spec");
        check_object(&spec, &job.metadata, &job_spec.template);
        assert_eq!((job_spec.completions, job_spec.parallelism), (Some(1), Some(1)));
        assert_eq!(job_spec.backoff_limit, Some(JOB_BACKOFF_LIMIT));
        assert_eq!(job_spec.active_deadline_seconds, Some(2));
        assert_eq!(job_spec.selector, None, "the API server generates it");
        let pod_spec = job_spec.template.spec.as_ref().expect("template spec");
        assert_eq!(pod_spec.restart_policy.as_deref(), Some("OnFailure"));

        spec.restart_policy = RestartPolicy::Never;
        assert_eq!(Controller::for_policy(spec.restart_policy), Controller::Pod);
        let pod = pod(&spec, "procs");
        assert_eq!(pod.spec.as_ref().and_then(|spec| spec.active_deadline_seconds), Some(2));
        assert_eq!(pod.metadata.labels.as_ref(), Some(&labels(&spec)));

        let owner = owned_by(Controller::StatefulSet, "api", "uid-9");
        assert_eq!((owner.api_version.as_str(), owner.kind.as_str()), ("apps/v1", "StatefulSet"));
        for controller in [Controller::StatefulSet, Controller::Job, Controller::Pod] {
            assert_eq!(Controller::of_kind(controller.kind()), Some(controller));
        }
        assert_eq!(Controller::of_kind("ReplicaSet"), None);
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
