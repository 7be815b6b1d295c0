//! The docker runtime: each process is one container on a Docker Engine (or Podman's compatible
//! socket), reached through the Engine API with bollard.
//!
//! - The container is named after the process and joins one user-defined network
//!   (`runtime.network`, made when missing), so processes reach each other by name. Its labels
//!   say it is Hydroplane's: the process (`hydroplane/process-id`), the group, the server's
//!   network and the spec it was made from (secret references only), and the spec's labels under
//!   `label.hydroplane/`. A server lists and touches only containers labelled with its network:
//!   never one it did not make, and a restarted server adopts the ones it made.
//! - The index: one listing of those containers, then the engine's event stream (from a moment
//!   before the listing, so nothing falls between); each event about a container is answered by
//!   inspecting it. When the stream breaks the runtime lists again and resumes, and says so in
//!   [`Runtime::health`] meanwhile. Each container's notable events (start, die with its code,
//!   oom, kill, health) are kept for Describe.
//! - Status ([`container::Snapshot::info`]): STARTING until the container runs and passes its
//!   check: the engine's healthcheck for a readiness check that runs a command, else the server's
//!   own probe from this host of the container's address on the network (the readiness check's
//!   TCP port or HTTP GET, or without one every declared TCP port accepting connections, at once
//!   when there are none). Then RUNNING, while ready: a readiness check runs for the whole run.
//!   EXITED (code 0), FAILED with `OOMKilled`, `Error` (the code), `StartError` (the engine's
//!   message), `CrashLoopBackOff` while the engine (or the server) restarts it, `ErrImagePull`
//!   when the image could not be pulled (no container is made; a Start again retries),
//!   `DeadlineExceeded` after `max_run_seconds`, `Unhealthy` when the liveness check failed.
//!   That check is the server's (the local runtime's checker; a command runs through the
//!   engine's exec API): failing it stops the container, and starts it again after a back-off
//!   when its restart policy restarts a failed run; what the engine forgets of those restarts is
//!   kept in a [`ledger`] under the server's state directory.
//! - Start: the image is pulled when missing (the spec's registry user name and password as the
//!   pull's credentials, never logged); the command replaces the image's entrypoint; env secrets
//!   are resolved; ports are published on 127.0.0.1, or on every address with `has_public_ip`, at
//!   `host_port` or a port the engine chooses; limits become the engine's CPU and memory limits
//!   (no swap beyond the memory limit); `restart_policy` is the engine's restart policy. A taken
//!   `host_port` is FAILED_PRECONDITION. The same spec again answers with the container (and
//!   starts it again if it was stopped behind our back and its policy restarts it).
//! - Stop: the engine's stop with the grace period (SIGTERM, then SIGKILL), then the container is
//!   removed. A server that shuts down leaves its containers running, for the next one to adopt.
//!
//! Where to read: [`container`] (spec to container, inspection to status), [`index`] (the event
//! stream and what it knows), [`ledger`] (the restarts a restarted server must know), [`logs`]
//! (serving Logs).

pub mod container;
mod index;
mod ledger;
mod logs;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as EngineError;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, RemoveContainerOptions, StopContainerOptions,
};
use futures::StreamExt;
use zeroize::Zeroizing;

use self::container::{EngineState, Snapshot};
use self::index::Index;
use self::ledger::Ledger;
use super::logs::{LogPieces, LogsQuery};
use super::{IndexSync, Runtime, RuntimeError, RuntimeEvent, Started, StopTarget, name_taken};
use crate::config::DockerRuntimeSettings;
use crate::secrets::SecretStore;
use crate::spec::{CheckAction, ProcessInfo, ProcessSpec, ProcessStatus, ValidSpec, ValueOrSecret};
use crate::table::ProcessTable;

/// How long the engine may take to answer the first call before the server gives up on it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the engine could not be used at start-up.
#[derive(Debug, thiserror::Error)]
pub enum DockerSetupError {
    /// No client could be made for the address.
    #[error("cannot use the docker engine address `{host}`")]
    Address {
        /// The address.
        host: String,
        /// What is wrong with it.
        #[source]
        source: EngineError,
    },
    /// The engine did not answer.
    #[error(
        "cannot reach the docker engine at `{host}` (is it running? set runtime.docker_host or DOCKER_HOST)"
    )]
    Unreachable {
        /// The address.
        host: String,
        /// What failed.
        #[source]
        source: BoxedError,
    },
    /// The network could not be made or used.
    #[error("cannot use the docker network `{network}`")]
    Network {
        /// The network.
        network: String,
        /// The engine's error.
        #[source]
        source: EngineError,
    },
}

/// An error of any kind, as a source.
pub type BoxedError = Box<dyn std::error::Error + Send + Sync>;

/// The engine's version, as `hydroplane check` and the start-up log say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineVersion {
    /// Where the engine is.
    pub host: String,
    /// Its version (`20.10.24+dfsg1`).
    pub version: String,
    /// The API version both sides speak.
    pub api_version: String,
    /// Whether it is Podman's compatible service rather than Docker Engine.
    pub podman: bool,
}

impl EngineVersion {
    /// Whether the engine runs a container's healthcheck by itself. Podman runs them from
    /// systemd timers, so without systemd (a container, a CI machine) never: there the server
    /// runs a command readiness check through the exec API, as it does liveness checks.
    pub fn runs_healthchecks(&self) -> bool {
        !self.podman
    }
}

impl std::fmt::Display for EngineVersion {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.podman { ", Podman" } else { "" };
        write!(formatter, "docker engine {} (API {}{kind}) at {}", self.version, self.api_version, self.host)
    }
}

/// The engine's address: the setting, else `DOCKER_HOST`, else the default socket.
fn engine_host(settings: &DockerRuntimeSettings) -> String {
    settings
        .docker_host
        .clone()
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|host| !host.is_empty()))
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned())
}

/// Where the certificates of a TLS engine are: `runtime.docker_cert_path`, else, when
/// `DOCKER_TLS_VERIFY` is set (not empty, as for the docker CLI), `DOCKER_CERT_PATH` or
/// `~/.docker`; `None`: no TLS.
fn engine_cert_path(settings: &DockerRuntimeSettings) -> Option<PathBuf> {
    if let Some(path) = &settings.docker_cert_path {
        return Some(path.clone());
    }
    let set = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    set("DOCKER_TLS_VERIFY")?;
    set("DOCKER_CERT_PATH")
        .map(PathBuf::from)
        .or_else(|| set("HOME").map(|home| PathBuf::from(home).join(".docker")))
}

/// A client of the engine at `host`: over TLS with the certificates of `cert_path` for a TCP
/// address, else as the address says.
fn client_of(host: &str, cert_path: Option<&Path>) -> Result<Docker, EngineError> {
    let tcp = host.starts_with("tcp://") || host.starts_with("https://");
    match cert_path {
        Some(directory) if tcp => Docker::connect_with_ssl(
            host,
            &directory.join("key.pem"),
            &directory.join("cert.pem"),
            &directory.join("ca.pem"),
            ENGINE_TIMEOUT_SECONDS,
            bollard::API_DEFAULT_VERSION,
        ),
        // Without TLS: bollard's own choice would read DOCKER_TLS_VERIFY itself.
        _ if tcp => Docker::connect_with_http(host, ENGINE_TIMEOUT_SECONDS, bollard::API_DEFAULT_VERSION),
        _ => Docker::connect_with_host(host),
    }
}

/// How long one call to the engine may take (bollard's default; a Watch of its events is not
/// bound by it).
const ENGINE_TIMEOUT_SECONDS: u64 = 120;

/// Connects to the engine and agrees on an API version.
pub async fn connect(settings: &DockerRuntimeSettings) -> Result<(Docker, EngineVersion), DockerSetupError> {
    let host = engine_host(settings);
    let unreachable = |source: BoxedError| DockerSetupError::Unreachable { host: host.clone(), source };
    let cert_path = engine_cert_path(settings);
    let docker = client_of(&host, cert_path.as_deref()).map_err(|source| match source {
        EngineError::SocketNotFoundError(_) => unreachable(Box::new(source)),
        source => DockerSetupError::Address { host: host.clone(), source },
    })?;
    let negotiated = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
        .await
        .map_err(|elapsed| unreachable(Box::new(elapsed)))?
        .map_err(|error| unreachable(Box::new(error)))?;
    let version = tokio::time::timeout(CONNECT_TIMEOUT, negotiated.version())
        .await
        .map_err(|elapsed| unreachable(Box::new(elapsed)))?
        .map_err(|error| unreachable(Box::new(error)))?;
    let engine = EngineVersion {
        host: host.clone(),
        version: version.version.unwrap_or_else(|| "unknown".to_owned()),
        api_version: negotiated.client_version().to_string(),
        podman: version
            .components
            .iter()
            .flatten()
            .any(|component| component.name.to_ascii_lowercase().contains("podman")),
    };
    Ok((negotiated, engine))
}

/// Runs processes as containers of one engine.
pub struct DockerRuntime {
    docker: Docker,
    settings: DockerRuntimeSettings,
    secrets: Arc<dyn SecretStore>,
    index: Arc<Index>,
    /// Whether the engine runs command readiness checks as healthchecks.
    engine_checks: bool,
}

impl DockerRuntime {
    /// Connects to the engine, makes the network when missing, lists the containers of this
    /// server's network and follows the engine's events from then on.
    pub async fn connect(
        settings: DockerRuntimeSettings,
        secrets: Arc<dyn SecretStore>,
    ) -> Result<Arc<DockerRuntime>, DockerSetupError> {
        let (docker, engine) = connect(&settings).await?;
        tracing::info!(engine = %engine, network = %settings.network, "connected to the docker engine");
        ensure_network(&docker, &settings.network).await?;
        let engine_checks = engine.runs_healthchecks();
        let index = Index::new(
            docker.clone(),
            settings.network.clone(),
            settings.stop_grace,
            ProcessTable::starting_now(),
            Ledger::new(&crate::config::default_state_dir(), &settings.network),
            engine_checks,
        );
        index.sync_once().await;
        index.follow();
        Ok(Arc::new(DockerRuntime { docker, settings, secrets, index, engine_checks }))
    }

    /// The engine's registry credentials for the spec's image, resolved from the secret store.
    fn credentials(&self, spec: &ProcessSpec) -> Result<Option<DockerCredentials>, RuntimeError> {
        let container = &spec.container;
        if container.username.is_none() && container.password.is_none() {
            return Ok(None);
        }
        let username = match &container.username {
            Some(ValueOrSecret::Value(value)) => Some(value.clone()),
            Some(ValueOrSecret::Secret(reference)) => {
                Some(crate::secrets::resolve_text(&*self.secrets, reference)?.to_string())
            }
            None => None,
        };
        let password = match &container.password {
            Some(reference) => Some(crate::secrets::resolve_text(&*self.secrets, reference)?.to_string()),
            None => None,
        };
        Ok(Some(DockerCredentials {
            username,
            password,
            serveraddress: Some(container::registry_of(&container.image_uri)),
            ..Default::default()
        }))
    }

    /// The spec's environment, with secret values resolved.
    fn environment(&self, spec: &ProcessSpec) -> Result<Vec<(String, Zeroizing<String>)>, RuntimeError> {
        let mut environment = Vec::with_capacity(spec.container.env.len());
        for (position, variable) in spec.container.env.iter().enumerate() {
            let value = match &variable.value {
                ValueOrSecret::Value(value) => Zeroizing::new(value.clone()),
                ValueOrSecret::Secret(reference) => crate::secrets::resolve_text(&*self.secrets, reference)
                    .map_err(|error| match error {
                    crate::secrets::SecretError::NotText { reference } => RuntimeError::Unsupported {
                        field: format!("container.env[{position}].secret"),
                        message: format!(
                            "{reference} is not UTF-8 text, so it cannot be an environment variable"
                        ),
                    },
                    other => other.into(),
                })?,
            };
            environment.push((variable.name.clone(), value));
        }
        Ok(environment)
    }

    /// Pulls the image when the engine does not have it; the message of a failed pull.
    async fn pull_if_missing(
        &self,
        spec: &ProcessSpec,
        credentials: Option<DockerCredentials>,
    ) -> Result<(), String> {
        let image = container::image_with_tag(&spec.container.image_uri);
        match self.docker.inspect_image(&image).await {
            Ok(_) => return Ok(()),
            Err(EngineError::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(error) => return Err(format!("cannot inspect image `{image}`: {}", engine_message(&error))),
        }
        tracing::info!(process = %spec.process_name, %image, "pulling the image");
        let options = CreateImageOptions { from_image: Some(image.clone()), ..Default::default() };
        let mut pull = self.docker.create_image(Some(options), None, credentials);
        while let Some(progress) = pull.next().await {
            if let Err(error) = progress {
                return Err(format!("cannot pull image `{image}`: {}", engine_message(&error)));
            }
        }
        Ok(())
    }

    /// Makes and starts the container; `Ok(None)` when the name was taken meanwhile.
    async fn create(&self, spec: &ProcessSpec) -> Result<Option<ProcessInfo>, RuntimeError> {
        let environment = self.environment(spec)?;
        let body = container::create_body(
            spec,
            &environment,
            &self.settings.network,
            self.settings.stop_grace.as_secs(),
            self.engine_checks,
        );
        drop(environment);
        let options = CreateContainerOptions { name: Some(spec.process_name.clone()), ..Default::default() };
        let mut created = self.docker.create_container(Some(options.clone()), body.clone()).await;
        if let Err(EngineError::DockerResponseServerError { status_code: 404, message }) = &created
            && message.contains("network")
        {
            // The network was removed behind our back: make it again, once.
            ensure_network(&self.docker, &self.settings.network)
                .await
                .map_err(|error| self.unavailable(&error))?;
            created = self.docker.create_container(Some(options), body).await;
        }
        let id = match created {
            Ok(created) => created.id,
            Err(EngineError::DockerResponseServerError { status_code: 409, .. }) => return Ok(None),
            // Podman 4 answers a taken name with 500.
            Err(EngineError::DockerResponseServerError { message, .. })
                if message.contains("is already in use") =>
            {
                return Ok(None);
            }
            Err(error) => return Err(self.engine_error("create the container", &error)),
        };
        if let Err(error) = self.docker.start_container(&id, None).await {
            let message = engine_message(&error);
            self.remove(&id).await;
            // Gone at once from the index too, whatever of it the engine's events told already.
            self.index.stopped(&spec.process_name, &id);
            if message.contains("port is already allocated") || message.contains("address already in use") {
                let ports: Vec<String> = spec
                    .container
                    .ports
                    .iter()
                    .filter_map(|port| port.host_port.map(|host_port| host_port.to_string()))
                    .collect();
                return Err(RuntimeError::NotServable {
                    message: format!(
                        "process `{}` cannot have host_port {}: taken on this host ({message}); choose another \
                         host_port, or leave it out for a free port",
                        spec.process_name,
                        ports.join(", ")
                    ),
                });
            }
            return Err(self.engine_error("start the container", &error));
        }
        let info = self.index.refresh(&id).await;
        Ok(Some(info.unwrap_or_else(|| ProcessInfo::starting(spec, jiff::Timestamp::now()))))
    }

    /// Removes a container whatever its state; one that is gone already is fine.
    async fn remove(&self, id: &str) {
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) | Err(EngineError::DockerResponseServerError { status_code: 404 | 409, .. }) => {}
            Err(error) => {
                tracing::warn!(container = %id, error = %engine_message(&error), "cannot remove the container")
            }
        }
    }

    /// Stops and removes one process's container (or forgets its failed pull).
    async fn stop_process(&self, name: String) -> String {
        let Some(id) = self.index.begin_stop(&name) else { return name };
        let grace = i32::try_from(self.settings.stop_grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptions { t: Some(grace), signal: None };
        match self.docker.stop_container(&id, Some(options)).await {
            Ok(()) | Err(EngineError::DockerResponseServerError { status_code: 304 | 404, .. }) => {}
            Err(error) => {
                tracing::warn!(process = %name, error = %engine_message(&error), "cannot stop the container; removing it")
            }
        }
        self.remove(&id).await;
        self.index.stopped(&name, &id);
        name
    }

    fn unavailable(&self, error: &(dyn std::error::Error + 'static)) -> RuntimeError {
        RuntimeError::Unavailable { runtime: "docker", message: crate::report::error_chain(error) }
    }

    /// An engine error as a runtime error: unreachable engines are UNAVAILABLE, refusals of the
    /// engine are its message.
    fn engine_error(&self, step: &str, error: &EngineError) -> RuntimeError {
        match error {
            EngineError::DockerResponseServerError { status_code: 400, message } => RuntimeError::Rejected {
                message: format!("the engine refused to {step}: {message}"),
                source: None,
            },
            EngineError::DockerResponseServerError { status_code, message } if *status_code < 500 => {
                RuntimeError::NotServable { message: format!("the engine refused to {step}: {message}") }
            }
            other => RuntimeError::Unavailable {
                runtime: "docker",
                message: format!("cannot {step}: {}", engine_message(other)),
            },
        }
    }

    /// Starts a container again that stopped behind the server's back when its policy restarts it.
    async fn repair(&self, snapshot: &Snapshot, spec: &ProcessSpec) {
        let succeeded = snapshot.exit_code == 0 && !snapshot.oom_killed;
        let wanted = match snapshot.state {
            EngineState::Created => true,
            EngineState::Exited => spec.restart_policy.restarts_after(succeeded),
            _ => false,
        };
        if wanted
            && !self.index.is_deadline_exceeded(&snapshot.process_name)
            && self.index.count_repair(
                &snapshot.process_name,
                &snapshot.id,
                snapshot.state == EngineState::Exited,
            )
        {
            tracing::info!(process = %snapshot.process_name, "starting the stopped container again");
            if let Err(error) = self.docker.start_container(&snapshot.id, None).await {
                tracing::warn!(process = %snapshot.process_name, error = %engine_message(&error), "cannot start the container again");
            }
            self.index.refresh(&snapshot.id).await;
        }
    }
}

/// Makes the network when it does not exist.
async fn ensure_network(docker: &Docker, network: &str) -> Result<(), DockerSetupError> {
    let failed = |source| DockerSetupError::Network { network: network.to_owned(), source };
    match docker.inspect_network(network, None).await {
        Ok(_) => return Ok(()),
        Err(EngineError::DockerResponseServerError { status_code: 404, .. }) => {}
        Err(error) => return Err(failed(error)),
    }
    let request = NetworkCreateRequest {
        name: network.to_owned(),
        driver: Some("bridge".to_owned()),
        ..Default::default()
    };
    match docker.create_network(request).await {
        Ok(_) => {
            tracing::info!(%network, "made the docker network");
            Ok(())
        }
        // Made by another server meanwhile.
        Err(EngineError::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
        Err(error) => Err(failed(error)),
    }
}

/// The engine's own message, without bollard's wrapping.
fn engine_message(error: &EngineError) -> String {
    match error {
        EngineError::DockerResponseServerError { message, .. } => message.clone(),
        EngineError::DockerStreamError { error } => error.clone(),
        other => crate::report::error_chain(other),
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn start(&self, spec: ValidSpec) -> Result<Started, RuntimeError> {
        let spec = spec.into_inner();
        for _attempt in 0..3 {
            if let Some(existing) = self.index.existing(&spec.process_name) {
                match existing {
                    index::Existing::FailedPull { spec: existing_spec, info } => {
                        name_taken(&spec, &existing_spec, false)?;
                        // The same spec again: try the pull again.
                        let _ = info;
                        self.index.forget_failed_pull(&spec.process_name);
                    }
                    index::Existing::Container { snapshot, stopping, info } => {
                        let Some(existing_spec) = snapshot.spec.clone() else {
                            return Err(RuntimeError::AlreadyExists {
                                name: spec.process_name.clone(),
                                detail: "as a container whose spec cannot be read; stop it first".to_owned(),
                            });
                        };
                        name_taken(&spec, &existing_spec, stopping)?;
                        self.repair(&snapshot, &existing_spec).await;
                        let info = self.index.info(&spec.process_name).unwrap_or(info);
                        return Ok(Started { process: info, created: false });
                    }
                }
            }
            let credentials = self.credentials(&spec)?;
            if let Err(message) = self.pull_if_missing(&spec, credentials).await {
                tracing::warn!(process = %spec.process_name, %message, "the image could not be pulled");
                let info = self.index.failed_pull(&spec, message);
                return Ok(Started { process: info, created: true });
            }
            match self.create(&spec).await? {
                Some(info) => return Ok(Started { process: info, created: true }),
                None => {
                    // The name is taken: by a Start of ours that won the race (answered above on
                    // the next turn), or by a container that is not ours.
                    if self.index.refresh_by_name(&spec.process_name).await.is_none() {
                        return Err(RuntimeError::AlreadyExists {
                            name: spec.process_name.clone(),
                            detail: "as a container Hydroplane did not make (or made for another network); \
                                     remove it or choose another name"
                                .to_owned(),
                        });
                    }
                }
            }
        }
        Err(RuntimeError::Conflict {
            message: format!("process `{}` changed while it was being started; try again", spec.process_name),
            source: None,
        })
    }

    async fn stop(&self, target: StopTarget) -> Result<Vec<String>, RuntimeError> {
        let names = self.index.names_for(&target)?;
        let mut stopped =
            futures::future::join_all(names.into_iter().map(|name| self.stop_process(name))).await;
        stopped.sort();
        Ok(stopped)
    }

    fn table(&self) -> &Arc<ProcessTable> {
        self.index.table()
    }

    async fn stored_spec(&self, process_name: &str) -> Option<ProcessSpec> {
        self.index.spec(process_name)
    }

    async fn events(&self, process_name: &str) -> Vec<RuntimeEvent> {
        self.index.events(process_name)
    }

    async fn logs(&self, process_name: &str, query: LogsQuery) -> Result<LogPieces, RuntimeError> {
        let Some(id) = self.index.container_id(process_name) else {
            if self.index.info(process_name).is_some() {
                return Err(RuntimeError::NotServable {
                    message: format!(
                        "process `{process_name}` has no container (its image could not be pulled), so no output"
                    ),
                });
            }
            return Err(RuntimeError::NotFound { name: process_name.to_owned() });
        };
        if query.previous {
            return Err(RuntimeError::NotServable {
                message: format!(
                    "process `{process_name}` has no separate previous run: the engine keeps one output across \
                     a container's restarts; ask without `previous` for all of it"
                ),
            });
        }
        Ok(logs::serve(self.docker.clone(), id, query))
    }

    fn health(&self) -> Option<String> {
        self.index.health()
    }

    fn index_sync(&self) -> Option<IndexSync> {
        Some(self.index.sync_state())
    }

    async fn shutdown(&self) {
        // The containers keep running: the next server on this network adopts them.
        self.index.close();
    }
}

/// Whether the spec's readiness is probed by the server (not by the engine's healthcheck);
/// `engine_checks`: whether the engine runs command checks (see [`EngineVersion::runs_healthchecks`]).
pub(crate) fn probed_readiness(spec: Option<&ProcessSpec>, engine_checks: bool) -> bool {
    !engine_checks
        || !matches!(
            spec.and_then(|spec| spec.readiness.as_ref()).map(|check| &check.action),
            Some(CheckAction::Exec { .. })
        )
}

/// The status a process shows while its image cannot be pulled.
pub(crate) fn failed_pull_info(spec: &ProcessSpec, message: String) -> ProcessInfo {
    let mut info = ProcessInfo::starting(spec, jiff::Timestamp::now());
    info.status = ProcessStatus::Failed;
    info.reason = Some("ErrImagePull".into());
    info.message = Some(message);
    info
}
