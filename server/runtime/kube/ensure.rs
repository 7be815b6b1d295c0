//! A Start on Kubernetes, as one idempotent [`KubeRuntime::ensure`]: read what exists for the
//! name, decide ([`decide`], pure), then create only what is missing, in order: the object that
//! runs the process (its uid is what the rest is owned by), its Secrets, its Service (last, so
//! that a Service it owns vouches for the Secrets).
//!
//! A fresh Start finds nothing and makes all three; a Start retried after its server died
//! half-way finds the object and makes what it lacks; a Start retried after success finds the
//! whole process and makes nothing. All take the same steps. Only a Start that made the object
//! itself undoes it when the rest fails, and checks that no object of another kind was made for
//! the name at the same time.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::index::slim::{SlimJob, SlimPod, SlimService, SlimStatefulSet};
use super::index::{IndexView, Making};
use super::manifests::{self, Controller};
use super::{KubeRuntime, READ_YOUR_WRITES_TIMEOUT, kind_name, managed, node_ports};
use crate::backoff::Backoff;
use crate::report::error_chain;
use crate::runtime::{RuntimeError, Started, name_taken};
use crate::secrets::resolve_text;
use crate::spec::{ProcessInfo, ProcessSpec, ValueOrSecret};

/// What a Start does, decided by [`decide`] from what it found for the name.
#[derive(Debug)]
enum Plan {
    /// Nothing runs the name: make an object of this kind for the spec, then what it owns.
    Create(Controller),
    /// Our object runs the process with the same spec: make what it lacks and answer it.
    Finish { controller: Controller, metadata: Box<ObjectMeta> },
}

/// What a Start does given the object `found` for its name as the API server has it (`None`:
/// none): ALREADY_EXISTS saying why when that object is not this process (not ours, another
/// spec or group, or being stopped).
fn decide(
    spec: &ProcessSpec,
    found: Option<(Controller, ObjectMeta)>,
    namespace: &str,
) -> Result<Plan, RuntimeError> {
    let Some((controller, metadata)) = found else {
        return Ok(Plan::Create(Controller::for_policy(spec.restart_policy)));
    };
    // The spec is read from the object itself, since the index keeps none.
    let Some(existing) = managed(&metadata).then(|| manifests::spec_in(&metadata)).flatten() else {
        return Err(RuntimeError::AlreadyExists {
            name: spec.process_name.clone(),
            detail: format!(
                "as a {} in namespace `{namespace}` that Hydroplane did not create",
                kind_name(controller)
            ),
        });
    };
    // A bare Pod that keeps its finalizer while being deleted was lost, not stopped: it is the
    // process, FAILED, until Stop removes it.
    let kept = metadata
        .finalizers
        .as_ref()
        .is_some_and(|finalizers| finalizers.iter().any(|f| f == manifests::KEEP_STATUS_FINALIZER));
    let stopping = metadata.deletion_timestamp.is_some() && !kept;
    name_taken(spec, &existing, stopping)?;
    Ok(Plan::Finish { controller, metadata: Box::new(metadata) })
}

impl KubeRuntime {
    /// Makes the process of `spec` exist, whole: answers it with `created` when this Start made
    /// its object, as it is when it was there already with the same spec (finished first if it
    /// was half-made), and ALREADY_EXISTS otherwise.
    pub(super) async fn ensure(&self, spec: &ProcessSpec) -> Result<Started, RuntimeError> {
        let name = &spec.process_name;
        let _making = self.one_start_at_a_time(name).await?;
        // What exists: asked of the API server only when the index shows something of the name
        // (a new name costs no request), as the kinds' names do not clash. An object gone
        // meanwhile frees the name again.
        let mut found = match self.index.read(|view| view.has(name)) {
            true => self.find_object(name, None).await?,
            false => None,
        };
        let mut secrets = None;
        let (controller, metadata, created) = loop {
            match decide(spec, found.take(), &self.namespace)? {
                Plan::Finish { controller, metadata } => break (controller, *metadata, false),
                Plan::Create(controller) => {
                    // Resolved before anything is made, so that a missing secret makes nothing.
                    secrets = Some(self.resolve_secrets(spec)?);
                    match self.create_object(spec, controller).await {
                        Ok(metadata) => break (controller, metadata, true),
                        // Made meanwhile, by another call or another server: decide on that one.
                        Err(kube::Error::Api(response)) if response.code == 409 => {
                            let gone = || RuntimeError::Unavailable {
                                runtime: self.name,
                                message: format!(
                                    "the {} `{name}` was there and is gone; try again",
                                    kind_name(controller)
                                ),
                            };
                            found = Some(self.find_object(name, Some(controller)).await?.ok_or_else(gone)?);
                        }
                        Err(error) => {
                            return Err(self.error(&format!("create the {}", kind_name(controller)), error));
                        }
                    }
                }
            }
        };
        let uid = metadata.uid.clone().unwrap_or_default();
        let belongs = |view: &IndexView<'_>| {
            view.service(name)
                .is_some_and(|service| service.owner_uid.as_ref().is_none_or(|owner| owner.is(&uid)))
        };
        if !created {
            // Read your writes: the index shows the object found, since what it lacks is read there.
            self.index
                .wait_for(name, READ_YOUR_WRITES_TIMEOUT, |view| {
                    view.owner(name).is_some_and(|(_, owner)| owner.is(&uid))
                })
                .await;
        }
        // What is missing: everything the object owns, unless the index shows its Service, which
        // is made last and so proves the Secrets are there. Secrets cannot be read back, so one
        // that exists already counts as made.
        let expects_service = !spec.container.ports.is_empty();
        let complete = !created && expects_service && self.index.read(belongs);
        let owner = manifests::owned_by(controller, name, &uid);
        let make_the_rest = async {
            if !complete {
                let secrets = match secrets {
                    Some(secrets) => secrets,
                    None => self.resolve_secrets(spec)?,
                };
                let made = self.create_dependents(spec, &owner, secrets).await?;
                if !created && !made.is_empty() {
                    tracing::info!(process = %name, made = %made.join(", "), "finished a half-made process");
                }
            }
            // Read your writes: the process is in the index, whole (a controller's Pod, made
            // later by its controller, is not waited for: the process shows meanwhile as
            // awaiting it).
            self.index
                .wait_for(name, READ_YOUR_WRITES_TIMEOUT, |view| {
                    view.has_object(name, &uid)
                        && (controller != Controller::Pod || view.pod(name).is_some())
                        && (!expects_service || belongs(view))
                })
                .await;
            Ok(())
        };
        // Another server's Start of the name with another restart policy may have made an object
        // of another kind beside the one this Start made: whichever Start sees the other's object
        // undoes its own (both may, and both callers are told to try again), so two never stay.
        // The index may not have seen that object yet, so the API server is asked too: its
        // answers are linearizable, so of two racing Starts at least one sees the other's object.
        // Asked while the rest is made, since the answer needs only this Start's object to exist.
        let look_for_another = async {
            if !created {
                return Ok(None);
            }
            match self.index.read(|view| view.other_object(name, &uid)) {
                Some(other) => Ok(Some(other)),
                None => self.other_live_object(controller, name).await,
            }
        };
        let (made, other) = tokio::join!(make_the_rest, look_for_another);
        let undo = match made.and(other) {
            Ok(None) => None,
            Ok(Some(other)) => Some(RuntimeError::Conflict {
                message: format!(
                    "a {} of `{name}` was made at the same time as this Start's {} (another Start of the name, \
                     with another restart policy); this Start's is undone: try again",
                    kind_name(other),
                    kind_name(controller)
                ),
                source: None,
            }),
            Err(error) => Some(error),
        };
        if let Some(error) = undo {
            if created {
                self.delete_half_made(controller, name, &uid).await;
            }
            return Err(error);
        }
        match self.table.get(name) {
            Some(process) => Ok(Started { process, created }),
            // Not in the index in time: a process this Start made is as its object says.
            None if created => {
                let since =
                    metadata.creation_timestamp.as_ref().map_or_else(jiff::Timestamp::now, |time| time.0);
                Ok(Started { process: ProcessInfo::starting(spec, since), created })
            }
            None => Err(RuntimeError::Unavailable {
                runtime: self.name,
                message: format!("process `{name}` exists but is not in the index yet; try again"),
            }),
        }
    }

    /// Marks `name` as being made by this Start. One Start of a name at a time on this server: a
    /// second one waits for the first to be seen by the index, then answers as for any name
    /// taken (the same process, or why not), rather than making an object of another kind
    /// beside it (the kinds' names do not clash). Until this Start has made the whole process,
    /// its object without a Service is not shown as half-made either.
    async fn one_start_at_a_time(&self, name: &str) -> Result<Making<'_>, RuntimeError> {
        loop {
            if let Some(making) = self.index.try_making(name) {
                return Ok(making);
            }
            let done = self.index.wait_for(name, READ_YOUR_WRITES_TIMEOUT, |view| !view.making(name)).await;
            if !done {
                return Err(RuntimeError::Unavailable {
                    runtime: self.name,
                    message: format!("another Start of `{name}` is still in progress; try again"),
                });
            }
        }
    }

    /// Creates the `controller` object that runs the process; answers its metadata.
    async fn create_object(
        &self,
        spec: &ProcessSpec,
        controller: Controller,
    ) -> Result<ObjectMeta, kube::Error> {
        let namespace = &self.namespace;
        match controller {
            Controller::StatefulSet => self
                .create::<SlimStatefulSet>(&manifests::stateful_set(spec, namespace))
                .await
                .map(|o| o.metadata),
            Controller::Job => {
                self.create::<SlimJob>(&manifests::job(spec, namespace)).await.map(|o| o.metadata)
            }
            Controller::Pod => {
                self.create::<SlimPod>(&manifests::pod(spec, namespace)).await.map(|o| o.metadata)
            }
        }
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
}

/// Secret values a process needs, resolved before anything is created.
struct ResolvedSecrets {
    env: BTreeMap<String, Vec<u8>>,
    registry: Option<(String, zeroize::Zeroizing<String>)>,
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::runtime::TAKEN_BY_ANOTHER_GROUP;

    fn web(extra: &str) -> ProcessSpec {
        serde_json::from_str(&format!(
            r#"{{"process_name": "web", "group": "g", "container": {{"image_uri": "nginx",
                "ports": [{{"container_port": 80}}]}}{extra}}}"#
        ))
        .expect("parses")
    }

    /// The metadata of the object a Start of `spec` makes, as the API server answers it.
    fn made_for(spec: &ProcessSpec) -> (Controller, ObjectMeta) {
        match Controller::for_policy(spec.restart_policy) {
            Controller::StatefulSet => {
                (Controller::StatefulSet, manifests::stateful_set(spec, "ns").metadata)
            }
            Controller::Job => (Controller::Job, manifests::job(spec, "ns").metadata),
            Controller::Pod => (Controller::Pod, manifests::pod(spec, "ns").metadata),
        }
    }

    fn deleting(mut found: (Controller, ObjectMeta)) -> (Controller, ObjectMeta) {
        found.1.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        found
    }

    /// What `decide` answers a Start of `spec` that found `found`, in words.
    #[track_caller]
    fn check(spec: &ProcessSpec, found: Option<(Controller, ObjectMeta)>, expected: &str) {
        let decided = match decide(spec, found, "ns") {
            Ok(Plan::Create(controller)) => format!("create a {}", kind_name(controller)),
            Ok(Plan::Finish { controller, .. }) => format!("finish the {}", kind_name(controller)),
            Err(RuntimeError::AlreadyExists { detail, .. }) => format!("already exists {detail}"),
            Err(other) => format!("{other:?}"),
        };
        assert_eq!(decided, expected);
    }

    #[test]
    fn nothing_found_is_made_as_the_restart_policy_says() {
        check(&web(""), None, "create a statefulset");
        check(&web(r#", "restart_policy": "on_failure""#), None, "create a job");
        check(&web(r#", "restart_policy": "never""#), None, "create a pod");
    }

    #[test]
    fn our_object_with_the_same_spec_is_finished_whatever_it_lacks() {
        let spec = web("");
        check(&spec, Some(made_for(&spec)), "finish the statefulset");
        let bare = web(r#", "restart_policy": "never""#);
        check(&bare, Some(made_for(&bare)), "finish the pod");
    }

    #[test]
    fn a_lost_bare_pod_that_keeps_its_finalizer_is_the_process_and_one_being_stopped_is_not() {
        let bare = web(r#", "restart_policy": "never""#);
        let mut lost = deleting(made_for(&bare));
        lost.1.finalizers = Some(vec![manifests::KEEP_STATUS_FINALIZER.to_owned()]);
        check(&bare, Some(lost), "finish the pod");
        check(
            &bare,
            Some(deleting(made_for(&web("")))),
            "already exists and is being stopped; start it again once it is gone",
        );
    }

    #[test]
    fn another_spec_or_group_or_an_object_not_ours_is_already_exists_saying_why() {
        let spec = web("");
        check(
            &spec,
            Some(made_for(&web(r#", "restart_policy": "never""#))),
            "already exists with a different spec (differs in restart_policy)",
        );
        let mut other_group = web("");
        other_group.group = Some("h".into());
        check(&spec, Some(made_for(&other_group)), &format!("already exists {TAKEN_BY_ANOTHER_GROUP}"));
        // Not labelled as ours, or without the spec annotation: made by someone else.
        let unlabelled = |metadata: &mut ObjectMeta| metadata.labels = None;
        let unannotated = |metadata: &mut ObjectMeta| metadata.annotations = None;
        for strip in [unlabelled, unannotated] {
            let (controller, mut not_ours) = made_for(&spec);
            strip(&mut not_ours);
            check(
                &spec,
                Some((controller, not_ours)),
                "already exists as a statefulset in namespace `ns` that Hydroplane did not create",
            );
        }
    }
}
