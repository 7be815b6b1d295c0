//! The Kubernetes runtime: each process is run by one object named after it, chosen by its
//! restart policy (a StatefulSet of one for `ALWAYS`, a Job for `ON_FAILURE`, a bare Pod for
//! `NEVER`; see [`manifests::Controller`]), and has one Service in the configured namespace
//! (see [`manifests`]), plus the Secrets its env and registry credentials need, all owned by
//! that object so they go with it. Kubernetes' own controllers bring a lost Pod back, with or
//! without a Hydroplane server running. List and Watch are served from a watch-fed [`index`].
//!
//! A Start is one idempotent `ensure` ([`ensure`]): it reads what exists for the name and makes
//! what is missing, the object first, then the Secrets, then the Service. One that fails
//! half-way deletes the object it made; one whose server died half-way leaves an object that the
//! index shows as half-made (STARTING, `Incomplete`) and that the same Start, retried, finishes
//! by the same steps. At start-up the namespace must exist ([`check_namespace`]); one that
//! goes later makes calls FAILED_PRECONDITION. Watch failures are logged through a
//! [`log_limit`], and kube-client's own per-request lines are off ([`QUIET_CLIENT_DIRECTIVE`]).
//!
//! The cluster connection is a `kube::Client` built outside (from a kubeconfig here, from AWS
//! credentials for EKS), so this module knows nothing of how it authenticates. Logs are read
//! from the API server's `pods/log` ([`logs`]), with one shared upstream per followed pod.

pub mod connect;
pub mod deadline;
mod ensure;
pub mod events;
pub mod index;
pub mod log_limit;
pub mod logs;
pub mod manifests;
pub mod node_ports;
pub mod permissions;
pub mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};

use self::index::slim::{SlimJob, SlimPod, SlimStatefulSet};
use self::index::{Index, IndexHealth};
use self::manifests::{Controller, GROUP_LABEL, MANAGED_SELECTOR, PROCESS_LABEL};
use super::{Runtime, RuntimeError, RuntimeEvent, Started, StopTarget};
use crate::backoff::Backoff;
use crate::config::PublicExposure;
use crate::report::error_chain;
use crate::secrets::SecretStore;
use crate::spec::labels::LabelSelector;
use crate::spec::validation::limits::MAX_LABEL_PREFIX_CHARACTERS;
use crate::spec::{ProcessSpec, ValidSpec};
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
        self.index
            .read(|view| view.owner(process_name).map(|(controller, uid)| (controller, uid.to_string())))
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

    /// Says what failed, as the caller can act on it (see [`api_error`]).
    fn error(&self, step: &str, error: kube::Error) -> RuntimeError {
        api_error(self.name, step, error)
    }

    async fn stop_one(&self, name: &str) -> Result<Vec<String>, RuntimeError> {
        let (controller, uid) = match self.indexed_owner(name) {
            Some(owner) => owner,
            // Not in the index: it may be newer than the index, or not ours at all.
            None => match self.find_object(name, None).await? {
                Some((controller, metadata)) if managed(&metadata) => {
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

/// Whether an object carries Hydroplane's `managed-by` label: made by Hydroplane.
fn managed(metadata: &ObjectMeta) -> bool {
    metadata.labels.as_ref().and_then(|labels| labels.get(manifests::MANAGED_BY_LABEL)).map(String::as_str)
        == Some(manifests::MANAGED_BY)
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
        self.ensure(&spec).await
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
