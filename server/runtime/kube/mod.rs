//! The Kubernetes runtime: each process is run by one object named after it, chosen by its
//! restart policy (a StatefulSet of one for `ALWAYS`, a Job for `ON_FAILURE`, a bare Pod for
//! `NEVER`; see [`manifests::Controller`]), and has one Service in the configured namespace
//! (see [`manifests`]), plus the Secrets its env and registry credentials need, all owned by
//! that object so they go with it. Kubernetes' own controllers bring a lost Pod back, with or
//! without a Hydroplane server running. List and Watch are served from a watch-fed [`index`].
//!
//! A Start makes the object first, then the Secrets, then the Service. One that fails half-way
//! deletes the object again; one whose server died half-way leaves an object that the index
//! shows as half-made (STARTING, `Incomplete`) and that the same Start, retried, finishes
//! (`finish_half_made`). At start-up the namespace must exist ([`check_namespace`]); one that
//! goes later makes calls FAILED_PRECONDITION. Watch failures are logged through a
//! [`log_limit`], and kube-client's own per-request lines are off ([`QUIET_CLIENT_DIRECTIVE`]).
//!
//! The cluster connection is a `kube::Client` built outside (from a kubeconfig here, from AWS
//! credentials for EKS), so this module knows nothing of how it authenticates. Logs are read
//! from the API server's `pods/log` ([`logs`]), with one shared upstream per followed pod.

pub mod connect;
pub mod deadline;
pub mod events;
pub mod index;
pub mod log_limit;
pub mod logs;
pub mod manifests;
pub mod node_ports;
pub mod permissions;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use self::index::slim::{SlimJob, SlimPod, SlimService, SlimStatefulSet};
use self::index::{Index, IndexHealth, IndexView};
use self::manifests::{Controller, GROUP_LABEL, MANAGED_SELECTOR, PROCESS_LABEL};
use super::{Runtime, RuntimeError, RuntimeEvent, Started, StopTarget, name_taken};
use crate::backoff::Backoff;
use crate::config::PublicExposure;
use crate::report::error_chain;
use crate::secrets::SecretStore;
use crate::secrets::resolve_text;
use crate::spec::labels::LabelSelector;
use crate::spec::validation::limits::MAX_LABEL_PREFIX_CHARACTERS;
use crate::spec::{ProcessInfo, ProcessSpec, ValidSpec, ValueOrSecret};
use crate::table::ProcessTable;

/// The log directive that silences kube-client's own line per failed HTTP request: it is at
/// ERROR for every failed request, dozens a second while the API server
/// struggles. The runtime reports what fails itself (calls in their errors, watches at WARN,
/// rate-limited); the server's log filter adds this unless `RUST_LOG` names `kube_client`.
pub const QUIET_CLIENT_DIRECTIVE: &str = "kube_client::client::builder=off";

/// How long a call waits for the index to show its own writes before answering anyway.
const READ_YOUR_WRITES_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a Describe waits for the Pod's Events before answering without them.
const EVENTS_TIMEOUT: Duration = Duration::from_secs(5);

/// How long start-up waits for the first list of pods, services and nodes.
const INITIAL_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs processes as Pods and Services on a Kubernetes cluster.
pub struct KubeRuntime {
    client: Client,
    namespace: String,
    secrets: Arc<dyn SecretStore>,
    table: Arc<ProcessTable>,
    index: Arc<Index>,
    index_task: tokio::task::JoinHandle<()>,
    /// Ends `ALWAYS` processes past their `max_run_seconds` (see [`deadline`]).
    deadline_task: tokio::task::JoinHandle<()>,
    name: &'static str,
    /// Whether the cluster refused to list Events (a Role without `events: list`), so that the
    /// warning is logged once and not on every Describe.
    events_refused: AtomicBool,
    /// The shared follows of pod logs (see [`logs`]).
    log_hubs: Arc<logs::LogHubs>,
    /// How public processes are reached (`runtime.public_exposure`).
    exposure: PublicExposure,
}

impl Drop for KubeRuntime {
    fn drop(&mut self) {
        self.index_task.abort();
        self.deadline_task.abort();
    }
}

impl KubeRuntime {
    /// Connects to the cluster: checks that the namespace exists and its pods can be read (so
    /// that a wrong endpoint, a missing namespace or a missing permission is one clear error at
    /// start-up), then follows it. `name` is the runtime's name for logs (`kubernetes` or `eks`).
    pub async fn connect(
        name: &'static str,
        client: Client,
        namespace: String,
        secrets: Arc<dyn SecretStore>,
        exposure: PublicExposure,
    ) -> Result<Arc<KubeRuntime>, RuntimeError> {
        check_namespace(name, &client, &namespace).await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        pods.list_metadata(&ListParams::default().labels(MANAGED_SELECTOR).limit(1))
            .await
            .map_err(|error| api_error(name, "list pods", error))?;
        let table = ProcessTable::starting_now();
        let index = Index::new(namespace.clone(), Arc::clone(&table));
        let index_task = index.spawn(client.clone());
        let deadline_task =
            tokio::spawn(deadline::run(Arc::clone(&index), Api::namespaced(client.clone(), &namespace)));
        if !index.wait_until(INITIAL_SYNC_TIMEOUT, |view| view.synced()).await {
            tracing::warn!(timeout = ?INITIAL_SYNC_TIMEOUT, health = ?index.health(), "the index is not synced yet; serving what it has");
        }
        if exposure == PublicExposure::NodePort
            && let Some(nodes) = index.read(|view| view.nodes_without_external_ip())
        {
            tracing::warn!(
                nodes,
                "no node of the cluster has an ExternalIP (private subnets?): public processes will have no public \
                 address, only their node's InternalIP and NodePort, reachable inside the cluster's network; \
                 set runtime.public_exposure: load_balancer to give each a load balancer"
            );
        }
        Ok(Arc::new(KubeRuntime {
            client,
            namespace,
            secrets,
            table,
            index,
            index_task,
            deadline_task,
            name,
            events_refused: AtomicBool::new(false),
            log_hubs: Arc::default(),
            exposure,
        }))
    }

    /// The Pods, decoded slim: what a delete or a create answers is read, never kept.
    fn pods(&self) -> Api<SlimPod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The name and uid of the process's current Pod as the index has it, if it has one.
    fn indexed_pod(&self, process_name: &str) -> Option<(String, String)> {
        self.index.read(|view| view.pod(process_name).map(|pod| (pod.name.to_string(), pod.uid.to_string())))
    }

    /// The object that runs the process and its uid, as the index has them.
    fn indexed_owner(&self, process_name: &str) -> Option<(Controller, String)> {
        self.index.read(|view| view.owner(process_name).map(|(controller, uid)| (controller, uid.to_owned())))
    }

    /// The metadata of the `controller` object `name` as the cluster has it now; `None` when
    /// there is none.
    async fn get_object_meta(
        &self,
        controller: Controller,
        name: &str,
    ) -> Result<Option<ObjectMeta>, RuntimeError> {
        let client = self.client.clone();
        let namespace = &self.namespace;
        let found = match controller {
            Controller::StatefulSet => Api::<StatefulSet>::namespaced(client, namespace)
                .get_metadata_opt(name)
                .await
                .map(|o| o.map(|o| o.metadata)),
            Controller::Job => Api::<Job>::namespaced(client, namespace)
                .get_metadata_opt(name)
                .await
                .map(|o| o.map(|o| o.metadata)),
            Controller::Pod => Api::<Pod>::namespaced(client, namespace)
                .get_metadata_opt(name)
                .await
                .map(|o| o.map(|o| o.metadata)),
        };
        found.map_err(|error| self.error(&format!("get the {} `{name}`", kind_name(controller)), error))
    }

    /// A live object (not being deleted) of another kind than `mine` named `name`, as the API
    /// server has it now.
    async fn other_live_object(
        &self,
        mine: Controller,
        name: &str,
    ) -> Result<Option<Controller>, RuntimeError> {
        let [first, second] = match mine {
            Controller::StatefulSet => [Controller::Job, Controller::Pod],
            Controller::Job => [Controller::StatefulSet, Controller::Pod],
            Controller::Pod => [Controller::StatefulSet, Controller::Job],
        };
        // Asked at once: a Start waits for one round trip, not two.
        let (found_first, found_second) =
            tokio::try_join!(self.get_object_meta(first, name), self.get_object_meta(second, name))?;
        let live =
            |found: Option<ObjectMeta>| found.is_some_and(|metadata| metadata.deletion_timestamp.is_none());
        Ok(if live(found_first) {
            Some(first)
        } else if live(found_second) {
            Some(second)
        } else {
            None
        })
    }

    /// The object named `name` that runs (or would run) a process, as the cluster has it now: of
    /// the kind the index shows first, then of the kind `preferred`, then the others.
    async fn find_object(
        &self,
        name: &str,
        preferred: Option<Controller>,
    ) -> Result<Option<(Controller, ObjectMeta)>, RuntimeError> {
        let indexed = self.indexed_owner(name).map(|(controller, _)| controller);
        let mut order: Vec<Controller> = Vec::new();
        for controller in indexed.into_iter().chain(preferred).chain([
            Controller::StatefulSet,
            Controller::Job,
            Controller::Pod,
        ]) {
            if !order.contains(&controller) {
                order.push(controller);
            }
        }
        for controller in order {
            if let Some(metadata) = self.get_object_meta(controller, name).await? {
                return Ok(Some((controller, metadata)));
            }
        }
        Ok(None)
    }

    /// Deletes the `controller` object `name`.
    async fn delete_object(
        &self,
        controller: Controller,
        name: &str,
        params: &DeleteParams,
    ) -> Result<(), kube::Error> {
        let client = self.client.clone();
        let namespace = &self.namespace;
        match controller {
            Controller::StatefulSet => {
                Api::<SlimStatefulSet>::namespaced(client, namespace).delete(name, params).await.map(drop)
            }
            Controller::Job => {
                Api::<SlimJob>::namespaced(client, namespace).delete(name, params).await.map(drop)
            }
            Controller::Pod => self.pods().delete(name, params).await.map(drop),
        }
    }

    /// The Pods, decoded whole: for their spec annotation and their logs.
    fn full_pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates `object` and decodes the API server's answer as the slim `K` (for which
    /// `Api::create` would need `K` to serialise the full object).
    async fn create<K>(&self, object: &impl Serialize) -> Result<K, kube::Error>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let body = serde_json::to_vec(object).map_err(kube::Error::SerdeError)?;
        let mut request = kube::core::Request::new(K::url_path(&(), Some(&self.namespace)))
            .create(&PostParams::default(), body)
            .map_err(kube::Error::BuildRequest)?;
        request.extensions_mut().insert("create");
        self.client.request::<K>(request).await
    }

    fn error(&self, step: &str, error: kube::Error) -> RuntimeError {
        api_error(self.name, step, error)
    }

    /// The answer to a Start for a name that the `controller` object `metadata` (as just read
    /// from the cluster) takes: once the index shows that object, what [`KubeRuntime::existing`]
    /// says.
    async fn taken(
        &self,
        spec: &ProcessSpec,
        controller: Controller,
        metadata: ObjectMeta,
    ) -> Result<Started, RuntimeError> {
        let name = &spec.process_name;
        let managed = metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(manifests::MANAGED_BY_LABEL))
            .map(String::as_str)
            == Some(manifests::MANAGED_BY);
        let uid = metadata.uid.clone().unwrap_or_default();
        if !managed {
            return self.existing(spec, None, controller, &uid, false).await;
        }
        self.index
            .wait_for(name, READ_YOUR_WRITES_TIMEOUT, |view| {
                view.owner(name).is_some_and(|(_, owner)| owner == uid)
            })
            .await;
        let existing = manifests::spec_in(&metadata);
        // A bare Pod that keeps its finalizer while being deleted was lost, not stopped: it is
        // the process, FAILED, until Stop removes it.
        let kept = metadata
            .finalizers
            .as_ref()
            .is_some_and(|finalizers| finalizers.iter().any(|f| f == manifests::KEEP_STATUS_FINALIZER));
        let stopping = metadata.deletion_timestamp.is_some() && !kept;
        self.existing(spec, existing.as_ref(), controller, &uid, stopping).await
    }

    /// The answer to a Start for a name that is taken by the `controller` object `uid`: the
    /// process itself when the spec is the same, finished first if it is half-made; otherwise
    /// ALREADY_EXISTS saying why.
    async fn existing(
        &self,
        spec: &ProcessSpec,
        existing: Option<&ProcessSpec>,
        controller: Controller,
        uid: &str,
        stopping: bool,
    ) -> Result<Started, RuntimeError> {
        let name = &spec.process_name;
        match existing {
            Some(existing) => {
                name_taken(spec, existing, stopping)?;
                self.finish_half_made(spec, controller, uid).await?;
                match self.table.get(name) {
                    Some(process) => Ok(Started { process, created: false }),
                    None => Err(RuntimeError::Unavailable {
                        runtime: self.name,
                        message: format!("process `{name}` exists but is not in the index yet; try again"),
                    }),
                }
            }
            None => Err(RuntimeError::AlreadyExists {
                name: name.clone(),
                detail: format!(
                    "as a {} in namespace `{}` that Hydroplane did not create",
                    kind_name(controller),
                    self.namespace
                ),
            }),
        }
    }

    /// Makes whatever the `controller` object `uid` of a retried Start lacks, for a Start that
    /// died half-way (a server killed between the object and its Service): the same objects,
    /// owned by the same object, with the secret values resolved again. A Service it owns proves
    /// the whole process is there, since the Secrets are made before it; without one (or without
    /// ports), the Secrets are created again, and one that exists already counts as made, as
    /// Hydroplane may not read Secrets back.
    async fn finish_half_made(
        &self,
        spec: &ProcessSpec,
        controller: Controller,
        uid: &str,
    ) -> Result<(), RuntimeError> {
        let name = &spec.process_name;
        let expects_service = !spec.container.ports.is_empty();
        let has_service = |view: &IndexView<'_>| {
            view.service(name)
                .is_some_and(|service| service.owner_uid.as_deref().is_none_or(|owner| owner == uid))
        };
        if expects_service && self.index.read(has_service) {
            return Ok(());
        }
        if !expects_service && !needs_secrets(spec) {
            return Ok(());
        }
        let secrets = self.resolve_secrets(spec)?;
        let owner = manifests::owned_by(controller, name, uid);
        let made = self.create_dependents(spec, &owner, secrets).await?;
        if !made.is_empty() {
            tracing::info!(process = %name, made = %made.join(", "), "finished a half-made process");
        }
        if expects_service {
            self.index.wait_for(name, READ_YOUR_WRITES_TIMEOUT, has_service).await;
        }
        Ok(())
    }

    /// Resolves the secret env values (by variable name) and the registry credentials.
    fn resolve_secrets(&self, spec: &ProcessSpec) -> Result<ResolvedSecrets, RuntimeError> {
        let container = &spec.container;
        let mut env = BTreeMap::new();
        for variable in &container.env {
            if let ValueOrSecret::Secret(reference) = &variable.value {
                env.insert(variable.name.clone(), self.secrets.resolve(reference)?.to_vec());
            }
        }
        let registry = match (&container.username, &container.password) {
            (Some(username), Some(password)) => {
                let username = match username {
                    ValueOrSecret::Value(value) => value.clone(),
                    ValueOrSecret::Secret(reference) => resolve_text(&*self.secrets, reference)?.to_string(),
                };
                Some((username, resolve_text(&*self.secrets, password)?))
            }
            _ => None,
        };
        Ok(ResolvedSecrets { env, registry })
    }

    /// Creates what the process's object `owner` owns: its Secrets, then its Service (last, so
    /// that a Service it owns vouches for the Secrets). Says which it made; one that another
    /// Start of the same process made meanwhile counts as there.
    async fn create_dependents(
        &self,
        spec: &ProcessSpec,
        owner: &OwnerReference,
        secrets: ResolvedSecrets,
    ) -> Result<Vec<String>, RuntimeError> {
        let post = PostParams::default();
        let mut made = Vec::new();
        let secrets_api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut to_create = Vec::new();
        if let Some(secret) = manifests::env_secret(spec, &self.namespace, owner, secrets.env) {
            to_create.push(secret);
        }
        if let Some((username, password)) = &secrets.registry {
            to_create.push(manifests::registry_secret(spec, &self.namespace, owner, username, password));
        }
        for secret in to_create {
            let secret_name = secret.name_any();
            match secrets_api.create(&post, &secret).await {
                Ok(_) => made.push(format!("Secret `{secret_name}`")),
                // Named after our process, and not readable by design: taken as made by an
                // earlier or concurrent Start of this process.
                Err(kube::Error::Api(response)) if response.code == 409 => {}
                Err(error) => return Err(self.dependent_error(spec, "secret", &secret_name, error)),
            }
        }
        if let Some(service) = manifests::service(spec, &self.namespace, owner, &self.exposure) {
            let services: Api<SlimService> = Api::namespaced(self.client.clone(), &self.namespace);
            let service_name = service.name_any();
            match self.create::<SlimService>(&service).await {
                Ok(_) => made.push(format!("Service `{service_name}`")),
                Err(kube::Error::Api(response)) if response.code == 409 => {
                    let existing = services
                        .get_opt(&service_name)
                        .await
                        .map_err(|error| self.error(&format!("get the service `{service_name}`"), error))?;
                    let owned = existing.as_ref().is_some_and(|existing| {
                        existing
                            .owner_references()
                            .iter()
                            .any(|existing_owner| existing_owner.uid == owner.uid)
                    });
                    let managed = existing.as_ref().is_some_and(|existing| {
                        existing.labels().get(manifests::MANAGED_BY_LABEL).map(String::as_str)
                            == Some(manifests::MANAGED_BY)
                    });
                    if !owned && managed {
                        // Another object of the name (another Start, with another restart
                        // policy, racing this one) made it: this Start's object is undone.
                        return Err(RuntimeError::Conflict {
                            message: format!(
                                "another Start of `{}` (with another restart policy) made its Service at the same \
                                 time; this Start is undone: try again",
                                spec.process_name
                            ),
                            source: None,
                        });
                    }
                    if !owned {
                        return Err(self.dependent_error(
                            spec,
                            "service",
                            &service_name,
                            kube::Error::Api(response),
                        ));
                    }
                }
                Err(kube::Error::Api(response)) if node_ports::is_exhausted(&response) => {
                    return Err(self.node_ports_exhausted(spec).await);
                }
                Err(error) => return Err(self.dependent_error(spec, "service", &service_name, error)),
            }
        }
        Ok(made)
    }

    /// The answer to a Start whose Service got no NodePort: which range is full, and what to do.
    async fn node_ports_exhausted(&self, spec: &ProcessSpec) -> RuntimeError {
        let range = node_ports::probe_range(self.client.clone(), &self.namespace).await;
        let ours = self.index.read(|view| view.node_ports_in_use());
        RuntimeError::Exhausted {
            message: node_ports::exhausted_message(&spec.process_name, range, ours, &self.namespace),
        }
    }

    /// An error creating an object the Pod owns; a name taken by an object Hydroplane did not
    /// make is ALREADY_EXISTS saying which.
    fn dependent_error(
        &self,
        spec: &ProcessSpec,
        kind: &str,
        object: &str,
        error: kube::Error,
    ) -> RuntimeError {
        match error {
            kube::Error::Api(response) if response.code == 409 => RuntimeError::AlreadyExists {
                name: spec.process_name.clone(),
                detail: format!(
                    "in part: a {kind} named `{object}` is already in namespace `{}`, and Hydroplane did not make it",
                    self.namespace
                ),
            },
            other => self.error(&format!("create the {kind} `{object}`"), other),
        }
    }

    /// Deletes the object of a Start that failed after creating it, and with it whatever it owns
    /// already: no orphans. Retried a few times, since the failure may be the API server's.
    async fn delete_half_made(&self, controller: Controller, name: &str, uid: &str) {
        // A bare Pod's finalizer first, or the Pod would stay as a lost process (FAILED
        // `PodDeleted`): retried like the delete, since the API server may fail a call now and
        // then.
        if controller == Controller::Pod {
            let mut delays = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
            for attempt in 1..=5 {
                match self.release_pod(name, uid).await {
                    Ok(_) => break,
                    Err(error) if attempt == 5 => {
                        tracing::warn!(process = %name, error = %error_chain(&error), "cannot remove the finalizer of a failed start's pod");
                    }
                    Err(_) => tokio::time::sleep(delays.next_delay()).await,
                }
            }
        }
        let params = DeleteParams {
            propagation_policy: Some(kube::api::PropagationPolicy::Background),
            preconditions: Some(Preconditions { uid: Some(uid.to_owned()), resource_version: None }),
            ..Default::default()
        };
        let mut delays = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 1..=5 {
            match self.delete_object(controller, name, &params).await {
                Ok(()) => return,
                Err(kube::Error::Api(response)) if response.code == 404 || response.code == 409 => return,
                Err(error) if attempt == 5 => {
                    tracing::error!(process = %name, %error, "cannot delete the object of a failed start; it is left behind");
                }
                Err(error) => {
                    tracing::warn!(process = %name, %error, attempt, "cannot delete the object of a failed start yet; retrying");
                    tokio::time::sleep(delays.next_delay()).await;
                }
            }
        }
    }

    /// The process as the index shows it, or as the created object says when the index has not
    /// caught up in time.
    fn info_after_create(&self, spec: &ProcessSpec, metadata: &ObjectMeta) -> ProcessInfo {
        self.table.get(&spec.process_name).unwrap_or_else(|| {
            let created =
                metadata.creation_timestamp.as_ref().map_or_else(jiff::Timestamp::now, |time| time.0);
            ProcessInfo::starting(spec, created)
        })
    }

    async fn stop_one(&self, name: &str) -> Result<Vec<String>, RuntimeError> {
        let (controller, uid) = match self.indexed_owner(name) {
            Some(owner) => owner,
            // Not in the index: it may be newer than the index, or not ours at all.
            None => match self.find_object(name, None).await? {
                Some((controller, metadata))
                    if metadata
                        .labels
                        .as_ref()
                        .and_then(|labels| labels.get(manifests::MANAGED_BY_LABEL))
                        .map(String::as_str)
                        == Some(manifests::MANAGED_BY) =>
                {
                    (controller, metadata.uid.unwrap_or_default())
                }
                _ => return Err(RuntimeError::NotFound { name: name.to_owned() }),
            },
        };
        // A bare Pod's finalizer comes off first, so that the delete below is Hydroplane's own
        // Stop (the Pod goes) and not a loss (the Pod stays, FAILED). A Pod lost already goes
        // with its finalizer.
        let released = match controller {
            Controller::Pod => self.release_pod(name, &uid).await?,
            _ => None,
        };
        let params = DeleteParams {
            // Foreground: the object goes only after its Pods, Service and Secrets (and a Job's
            // Pods would be orphaned by a delete that names no policy).
            propagation_policy: Some(kube::api::PropagationPolicy::Foreground),
            preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
            ..Default::default()
        };
        match self.delete_object(controller, name, &params).await {
            Ok(()) => {}
            Err(kube::Error::Api(response)) if response.code == 404 && released == Some(true) => {}
            Err(kube::Error::Api(response)) if response.code == 404 => {
                return Err(RuntimeError::NotFound { name: name.to_owned() });
            }
            Err(error) => return Err(self.error(&format!("delete the {}", kind_name(controller)), error)),
        }
        self.index.wait_for(name, READ_YOUR_WRITES_TIMEOUT, |view| view.stopping_or_gone(name, &uid)).await;
        Ok(vec![name.to_owned()])
    }

    /// Takes [`manifests::KEEP_STATUS_FINALIZER`] off the bare Pod `name` whose uid is `uid`, so
    /// that Hydroplane's own delete removes it. Says whether the Pod was being deleted already
    /// (lost: without the finalizer it is gone now), or `None` when there is no such Pod.
    async fn release_pod(&self, name: &str, uid: &str) -> Result<Option<bool>, RuntimeError> {
        let mut delays = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            let metadata = self.get_object_meta(Controller::Pod, name).await?;
            let Some(metadata) = metadata.filter(|metadata| metadata.uid.as_deref() == Some(uid)) else {
                return Ok(None);
            };
            let deleting = metadata.deletion_timestamp.is_some();
            match self.remove_keep_finalizer(name, &metadata).await {
                Ok(()) => return Ok(Some(deleting)),
                // Changed meanwhile (the resourceVersion is the patch's precondition): read again.
                Err(kube::Error::Api(response)) if response.code == 409 => {
                    tokio::time::sleep(delays.next_delay()).await;
                }
                Err(kube::Error::Api(response)) if response.code == 404 => return Ok(None),
                Err(error) => {
                    return Err(self.error(&format!("remove the finalizer of the pod `{name}`"), error));
                }
            }
        }
    }

    /// Patches [`manifests::KEEP_STATUS_FINALIZER`] out of a Pod's finalizers, if it has it, on
    /// the condition that the Pod is still at `metadata`'s resourceVersion (a merge patch that
    /// names the version fails with a conflict otherwise, so another finalizer is never lost).
    async fn remove_keep_finalizer(&self, name: &str, metadata: &ObjectMeta) -> Result<(), kube::Error> {
        let finalizers = metadata.finalizers.clone().unwrap_or_default();
        if !finalizers.iter().any(|finalizer| finalizer == manifests::KEEP_STATUS_FINALIZER) {
            return Ok(());
        }
        let rest: Vec<&String> =
            finalizers.iter().filter(|finalizer| *finalizer != manifests::KEEP_STATUS_FINALIZER).collect();
        let patch = serde_json::json!({"metadata": {
            "finalizers": if rest.is_empty() { serde_json::Value::Null } else { serde_json::json!(rest) },
            "resourceVersion": metadata.resource_version,
        }});
        self.pods().patch_metadata(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop)
    }

    /// Releases every bare Pod among `pods` (by their metadata) that keeps our finalizer, a few at
    /// a time; answers the processes of those that were lost (being deleted already: now gone).
    async fn release_pods<'a>(
        &self,
        pods: impl Iterator<Item = &'a ObjectMeta>,
    ) -> Result<Vec<String>, RuntimeError> {
        use futures::StreamExt;
        let kept: Vec<(String, String, String)> = pods
            .filter(|pod| {
                pod.finalizers.as_ref().is_some_and(|finalizers| {
                    finalizers.iter().any(|f| f == manifests::KEEP_STATUS_FINALIZER)
                })
            })
            .map(|pod| {
                let name = pod.name.clone().unwrap_or_default();
                let process = pod.labels.as_ref().and_then(|labels| labels.get(PROCESS_LABEL)).cloned();
                (process.unwrap_or_else(|| name.clone()), name, pod.uid.clone().unwrap_or_default())
            })
            .collect();
        let results: Vec<Result<Option<String>, RuntimeError>> = futures::stream::iter(kept)
            .map(|(process, name, uid)| async move {
                let released = self.release_pod(&name, &uid).await?;
                Ok((released == Some(true)).then_some(process))
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut lost = Vec::new();
        for result in results {
            lost.extend(result?);
        }
        Ok(lost)
    }

    async fn stop_group(&self, group: &str) -> Result<Vec<String>, RuntimeError> {
        let selector = format!("{MANAGED_SELECTOR},{GROUP_LABEL}={group}");
        self.stop_collection(&selector, "the group's", || self.index.read(|view| view.group(group))).await
    }

    /// Stops the processes whose labels match, with one request: the selector on the Pods'
    /// labels, where a process's own are stored under our domain.
    async fn stop_selected(&self, selector: &LabelSelector) -> Result<Vec<String>, RuntimeError> {
        let stored_key_fits = |key: &str| {
            key.split_once('/')
                .is_none_or(|(prefix, _)| prefix.chars().count() <= MAX_LABEL_PREFIX_CHARACTERS)
        };
        let indexed = || {
            let filter = crate::table::Filter { selector: Some(selector.clone()), ..Default::default() };
            self.table.list(&filter).iter().map(|process| process.process_name.to_string()).collect()
        };
        if !selector.requirements().iter().all(|requirement| stored_key_fits(&requirement.key)) {
            // No process has such a key, and the cluster would refuse it mapped to ours: the
            // processes are those the index selects (`!key`, `key notin (..)` match all).
            return self.stop_each(indexed()).await;
        }
        let kube_selector =
            format!("{MANAGED_SELECTOR},{}", selector.to_kubernetes(manifests::pod_label_key));
        self.stop_collection(&kube_selector, "the selected", indexed).await
    }

    /// Stops each of the named processes that still exists, a few at a time.
    async fn stop_each(&self, names: Vec<String>) -> Result<Vec<String>, RuntimeError> {
        use futures::StreamExt;
        let results: Vec<Result<Vec<String>, RuntimeError>> = futures::stream::iter(names)
            .map(|name| async move { self.stop_one(&name).await })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut stopped = Vec::new();
        for result in results {
            match result {
                Ok(names) => stopped.extend(names),
                // Gone meanwhile: nothing left to stop.
                Err(RuntimeError::NotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        stopped.sort();
        Ok(stopped)
    }

    /// Deletes the StatefulSets, Jobs and Pods a Kubernetes selector matches (their Pods,
    /// Services and Secrets go with them), controllers first so that none makes a Pod again, and
    /// waits until the index shows them stopping; answers the processes' names.
    async fn stop_collection(
        &self,
        selector: &str,
        whose: &str,
        indexed: impl Fn() -> Vec<String>,
    ) -> Result<Vec<String>, RuntimeError> {
        let params = DeleteParams {
            propagation_policy: Some(kube::api::PropagationPolicy::Foreground),
            ..Default::default()
        };
        let list = ListParams::default().labels(selector);
        let client = self.client.clone();
        let mut names = std::collections::BTreeSet::new();
        let mut complete = true;
        let stateful_sets = Api::<SlimStatefulSet>::namespaced(client.clone(), &self.namespace)
            .delete_collection(&params, &list)
            .await
            .map_err(|error| self.error(&format!("delete {whose} statefulsets"), error))?;
        match stateful_sets {
            either::Either::Left(deleted) => names.extend(deleted.items.iter().map(ResourceExt::name_any)),
            either::Either::Right(_) => complete = false,
        }
        let jobs = Api::<SlimJob>::namespaced(client, &self.namespace)
            .delete_collection(&params, &list)
            .await
            .map_err(|error| self.error(&format!("delete {whose} jobs"), error))?;
        match jobs {
            either::Either::Left(deleted) => names.extend(deleted.items.iter().map(ResourceExt::name_any)),
            either::Either::Right(_) => complete = false,
        }
        // Bare Pods lose their finalizer first (see `stop_one`); one lost already goes with it.
        let kept = self
            .pods()
            .list_metadata(&list)
            .await
            .map_err(|error| self.error(&format!("list {whose} pods"), error))?;
        names.extend(self.release_pods(kept.items.iter().map(|pod| &pod.metadata)).await?);
        let pods = self
            .pods()
            .delete_collection(&params, &list)
            .await
            .map_err(|error| self.error(&format!("delete {whose} pods"), error))?;
        match pods {
            either::Either::Left(deleted) => {
                names.extend(
                    deleted.items.iter().map(|pod| {
                        pod.labels().get(PROCESS_LABEL).cloned().unwrap_or_else(|| pod.name_any())
                    }),
                );
                // A bare Pod made between the list and the delete kept its finalizer.
                self.release_pods(deleted.items.iter().map(|pod| &pod.metadata)).await?;
            }
            either::Either::Right(_) => complete = false,
        }
        if !complete {
            names.extend(indexed());
        }
        let names: Vec<String> = names.into_iter().collect();
        self.index
            .wait_until(READ_YOUR_WRITES_TIMEOUT, |view| {
                names.iter().all(|name| view.stopping_or_gone_any(name))
            })
            .await;
        Ok(names)
    }
}

/// The lower-case kind of a process's object, for messages (`pod`, `statefulset`, `job`).
fn kind_name(controller: Controller) -> String {
    controller.kind().to_lowercase()
}

/// Whether a process needs Secrets: secret env values or registry credentials.
fn needs_secrets(spec: &ProcessSpec) -> bool {
    let container = &spec.container;
    container.env.iter().any(|variable| matches!(variable.value, ValueOrSecret::Secret(_)))
        || (container.username.is_some() && container.password.is_some())
}

/// Secret values a process needs, resolved before anything is created.
struct ResolvedSecrets {
    env: BTreeMap<String, Vec<u8>>,
    registry: Option<(String, zeroize::Zeroizing<String>)>,
}

/// Checks that `namespace` exists, since listing or watching in a namespace that does not
/// answers an empty list: by reading it, or, for credentials that may not read namespaces (a
/// Role in the namespace only), by a dry-run create of a Pod there, which any credentials that
/// can start processes may do and which fails with the namespace's NotFound when it is missing.
/// When neither can tell, a warning says so and start-up goes on: a call then finds out
/// (FAILED_PRECONDITION naming the namespace).
pub async fn check_namespace(
    runtime: &'static str,
    client: &Client,
    namespace: &str,
) -> Result<(), RuntimeError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces.get_metadata_opt(namespace).await {
        Ok(Some(_)) => return Ok(()),
        Ok(None) => return Err(RuntimeError::NamespaceMissing { namespace: namespace.to_owned() }),
        Err(kube::Error::Api(response)) if response.code == 403 => {
            tracing::debug!(%namespace, message = %response.message, "may not read the namespace; trying a dry-run create in it");
        }
        Err(error) => return Err(api_error(runtime, &format!("read the namespace `{namespace}`"), error)),
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let probe = manifests::namespace_probe(namespace);
    let params = PostParams { dry_run: true, ..Default::default() };
    match pods.create(&params, &probe).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(response)) if is_namespace_missing(&response) => {
            Err(RuntimeError::NamespaceMissing { namespace: namespace.to_owned() })
        }
        Err(error) => {
            tracing::warn!(
                %namespace,
                error = %error_chain(&error),
                "cannot tell whether the namespace exists (these credentials may not read namespaces, and a dry-run create of a pod in it failed); going on"
            );
            Ok(())
        }
    }
}

/// Whether an API error is the NotFound of the namespace itself, as a real API server answers a
/// create in a namespace that does not exist (`namespaces "x" not found`).
fn is_namespace_missing(response: &kube::core::Status) -> bool {
    missing_namespace(response).is_some()
}

/// The namespace a NotFound of a namespace names, from its details or else its message.
fn missing_namespace(response: &kube::core::Status) -> Option<String> {
    if response.code != 404 {
        return None;
    }
    if let Some(details) = &response.details
        && details.kind == "namespaces"
        && !details.name.is_empty()
    {
        return Some(details.name.clone());
    }
    let name = response.message.strip_prefix("namespaces \"")?.strip_suffix("\" not found")?;
    Some(name.to_owned())
}

/// Turns an API error into what a caller can act on; `step` says what was being done.
pub fn api_error(runtime: &'static str, step: &str, error: kube::Error) -> RuntimeError {
    match error {
        kube::Error::Api(response) if is_namespace_missing(&response) => {
            RuntimeError::NamespaceMissing { namespace: missing_namespace(&response).unwrap_or_default() }
        }
        kube::Error::Api(response) => {
            let detail = format!("cannot {step}: {} ({})", response.message, response.reason);
            let code = response.code;
            let source = Some(Box::new(kube::Error::Api(response)) as super::BackendError);
            match code {
                401 => RuntimeError::Unauthenticated {
                    message: format!("the cluster refused our credentials: {detail}"),
                    source,
                },
                403 => RuntimeError::PermissionDenied {
                    message: format!("the cluster does not allow this: {detail}"),
                    source,
                },
                409 => RuntimeError::Conflict {
                    message: format!("the cluster reported a conflict: {detail}"),
                    source,
                },
                400 | 422 => RuntimeError::Rejected {
                    message: format!("the cluster rejected the request: {detail}"),
                    source,
                },
                _ => RuntimeError::Unavailable { runtime, message: detail },
            }
        }
        other => {
            RuntimeError::Unavailable { runtime, message: format!("cannot {step}: {}", error_chain(&other)) }
        }
    }
}

#[async_trait]
impl Runtime for KubeRuntime {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn start(&self, spec: ValidSpec) -> Result<Started, RuntimeError> {
        let name = spec.process_name.clone();
        // One Start of a name at a time on this server: a second one waits for the first to be
        // seen by the index, then answers as for any name taken (the same process, or why not),
        // rather than making an object of another kind beside it (the kinds' names do not clash).
        // Until this Start has made the whole process, its object without a Service is not shown
        // as half-made either.
        let _making = loop {
            if let Some(making) = self.index.try_making(&name) {
                break making;
            }
            let done = self.index.wait_for(&name, READ_YOUR_WRITES_TIMEOUT, |view| !view.making(&name)).await;
            if !done {
                return Err(RuntimeError::Unavailable {
                    runtime: self.name,
                    message: format!("another Start of `{name}` is still in progress; try again"),
                });
            }
        };
        if self.index.read(|view| view.has(&name)) {
            // Taken: the spec is read from the object itself, since the index keeps none. An
            // object gone meanwhile frees the name again.
            if let Some((controller, metadata)) = self.find_object(&name, None).await? {
                return self.taken(&spec, controller, metadata).await;
            }
        }
        let secrets = self.resolve_secrets(&spec)?;
        let controller = Controller::for_policy(spec.restart_policy);
        // The object first: its uid is what the Service and Secrets are owned by, so a server
        // that dies after it leaves an object that a retried Start finishes (see
        // `finish_half_made`).
        let namespace = &self.namespace;
        let created = match controller {
            Controller::StatefulSet => self
                .create::<SlimStatefulSet>(&manifests::stateful_set(&spec, namespace))
                .await
                .map(|o| o.metadata),
            Controller::Job => {
                self.create::<SlimJob>(&manifests::job(&spec, namespace)).await.map(|o| o.metadata)
            }
            Controller::Pod => {
                self.create::<SlimPod>(&manifests::pod(&spec, namespace)).await.map(|o| o.metadata)
            }
        };
        let metadata = match created {
            Ok(metadata) => metadata,
            Err(kube::Error::Api(response)) if response.code == 409 => {
                // Created meanwhile, by another call or another server: compare with the cluster.
                let (controller, metadata) =
                    self.find_object(&name, Some(controller)).await?.ok_or_else(|| {
                        RuntimeError::Unavailable {
                            runtime: self.name,
                            message: format!(
                                "the {} `{name}` was there and is gone; try again",
                                kind_name(controller)
                            ),
                        }
                    })?;
                return self.taken(&spec, controller, metadata).await;
            }
            Err(error) => return Err(self.error(&format!("create the {}", kind_name(controller)), error)),
        };
        let uid = metadata.uid.clone().unwrap_or_default();
        let owner = manifests::owned_by(controller, &name, &uid);
        let expects_service = !spec.container.ports.is_empty();
        let make_the_rest = async {
            self.create_dependents(&spec, &owner, secrets).await?;
            // Read your writes: the process is in the index (a controller's Pod, made later by
            // its controller, is not waited for: the process shows meanwhile as awaiting it).
            self.index
                .wait_for(&name, READ_YOUR_WRITES_TIMEOUT, |view| {
                    view.has_object(&name, &uid)
                        && (controller != Controller::Pod || view.pod(&name).is_some())
                        && (!expects_service
                            || view
                                .service(&name)
                                .is_some_and(|service| service.owner_uid.as_deref() == Some(&*uid)))
                })
                .await;
            Ok(())
        };
        // Another server's Start of the name with another restart policy may have made an object
        // of another kind meanwhile: whichever Start sees the other's object undoes its own
        // (both may, and both callers are told to try again), so two never stay. The index may
        // not have seen that object yet, so the API server is asked too: its answers are
        // linearizable, so of two racing Starts at least one sees the other's object. Asked
        // while the rest is made, since the answer needs only this Start's object to exist.
        let look_for_another = async {
            match self.index.read(|view| view.other_object(&name, &uid)) {
                Some(other) => Ok(Some(other)),
                None => self.other_live_object(controller, &name).await,
            }
        };
        let (made, other) = tokio::join!(make_the_rest, look_for_another);
        let other = match made.and(other) {
            Ok(other) => other,
            Err(error) => {
                self.delete_half_made(controller, &name, &uid).await;
                return Err(error);
            }
        };
        if let Some(other) = other {
            self.delete_half_made(controller, &name, &uid).await;
            return Err(RuntimeError::Conflict {
                message: format!(
                    "a {} of `{name}` was made at the same time as this Start's {} (another Start of the name, \
                     with another restart policy); this Start's is undone: try again",
                    kind_name(other),
                    kind_name(controller)
                ),
                source: None,
            });
        }
        Ok(Started { process: self.info_after_create(&spec, &metadata), created: true })
    }

    async fn stop(&self, target: StopTarget) -> Result<Vec<String>, RuntimeError> {
        match target {
            StopTarget::Process(name) => self.stop_one(&name).await,
            StopTarget::Group(group) => self.stop_group(&group).await,
            StopTarget::Selector(selector) => self.stop_selected(&selector).await,
            StopTarget::Processes(names) => self.stop_each(names).await,
        }
    }

    fn table(&self) -> &Arc<ProcessTable> {
        &self.table
    }

    async fn stored_spec(&self, process_name: &str) -> Option<ProcessSpec> {
        // Read from the object that runs it and parsed here, on Describe: the index keeps no spec.
        let (controller, uid) = self.indexed_owner(process_name)?;
        match self.get_object_meta(controller, process_name).await {
            Ok(metadata) => metadata
                .filter(|metadata| metadata.uid.as_deref() == Some(&*uid))
                .as_ref()
                .and_then(manifests::spec_in),
            Err(error) => {
                tracing::warn!(process = %process_name, error = %error_chain(&error), "cannot read the process's spec; Describe shows none");
                None
            }
        }
    }

    async fn events(&self, process_name: &str) -> Vec<RuntimeEvent> {
        // The Events of the object that runs the process (a controller's SuccessfulCreate of each
        // Pod it made again) and of its current Pod, merged in time.
        let mut selectors = Vec::new();
        if let Some((controller, uid)) = self.indexed_owner(process_name) {
            selectors.push(events::field_selector(controller.kind(), process_name, Some(&uid)));
        }
        if let Some((pod_name, uid)) = self.indexed_pod(process_name)
            && (pod_name != process_name || selectors.is_empty())
        {
            selectors.push(events::field_selector("Pod", &pod_name, Some(&uid)));
        }
        if selectors.is_empty() {
            selectors.push(events::field_selector("Pod", process_name, None));
        }
        let mut merged = Vec::new();
        for selector in selectors {
            merged.extend(self.events_of(process_name, &selector).await);
        }
        // One order for both objects' Events: by time, then as the cluster recorded them.
        events::in_order(merged)
    }

    fn index_sync(&self) -> Option<super::IndexSync> {
        let health = self.index.health();
        let synced = health == IndexHealth::Synced;
        let staleness = if synced { Duration::ZERO } else { self.index.since_last_heard() };
        let node_ports_in_use = self.index.read(|view| view.node_ports_in_use());
        Some(super::IndexSync { synced, staleness, node_ports_in_use: Some(node_ports_in_use as u64) })
    }

    fn health(&self) -> Option<String> {
        match self.index.health() {
            IndexHealth::Synced => None,
            IndexHealth::Syncing => Some("the index of the cluster is still syncing".to_owned()),
            IndexHealth::Stale(reason) => Some(reason),
        }
    }

    async fn logs(
        &self,
        process_name: &str,
        query: super::logs::LogsQuery,
    ) -> Result<super::logs::LogPieces, RuntimeError> {
        let (pod_name, uid) = self
            .indexed_pod(process_name)
            .ok_or_else(|| RuntimeError::NotFound { name: process_name.to_owned() })?;
        let log = logs::PodLog::new(
            self.full_pods(),
            Arc::clone(&self.index),
            self.name,
            process_name.to_owned(),
            pod_name,
            uid,
        );
        logs::logs(log, &self.log_hubs, query).await
    }

    async fn shutdown(&self) {
        // Processes on a cluster are the cluster's: they outlive the server by design.
        self.index_task.abort();
        self.deadline_task.abort();
    }
}

impl KubeRuntime {
    /// The Events a field selector picks, for Describe: none when they cannot be listed in time
    /// or at all (Describe still answers, with the table's history: Events only add detail).
    async fn events_of(&self, process_name: &str, selector: &str) -> Vec<Event> {
        let params = ListParams::default().fields(selector);
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let Ok(listed) = tokio::time::timeout(EVENTS_TIMEOUT, api.list(&params)).await else {
            tracing::warn!(process = %process_name, timeout = ?EVENTS_TIMEOUT, "the Pod's Events did not come in time; Describe shows the table's history only");
            return Vec::new();
        };
        match listed {
            Ok(list) => list.items,
            // Describe still answers, with the table's history: Events only add detail.
            Err(kube::Error::Api(response)) if response.code == 403 => {
                if !self.events_refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        namespace = %self.namespace,
                        message = %response.message,
                        "the cluster does not let Hydroplane list Events; Describe shows no Pod events (grant `list` on `events`, as examples/rbac.yaml does)"
                    );
                }
                Vec::new()
            }
            Err(error) => {
                tracing::warn!(process = %process_name, error = %error_chain(&error), "cannot list the Pod's Events; Describe shows the table's history only");
                Vec::new()
            }
        }
    }
}
