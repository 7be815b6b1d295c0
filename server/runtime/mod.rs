//! Runtimes: where processes actually run. The gRPC layer talks to one through the [`Runtime`]
//! trait and never knows which it is.
//!
//! Every runtime keeps a [`ProcessTable`] of what it knows, from which List and Watch are served,
//! so that those two calls behave the same everywhere.

pub mod collect;
pub mod docker;
#[cfg(test)]
pub mod fake;
pub mod kube;
pub mod local;
pub mod logs;

use std::sync::Arc;

use async_trait::async_trait;

use self::logs::{LogPieces, LogsQuery};
use crate::config::RuntimeSettings;
use crate::secrets::{SecretError, SecretStore};
use crate::spec::labels::LabelSelector;
use crate::spec::{ProcessInfo, ProcessSpec, ValidSpec};
use crate::table::ProcessTable;

/// Starts and stops processes, and keeps their table up to date.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// The runtime's name (`local`, `kubernetes`, `eks`, `docker`), for logs.
    fn name(&self) -> &'static str;

    /// Starts a process from a validated spec. Retry-safe: the same spec again returns the
    /// existing process with `created = false`.
    async fn start(&self, spec: ValidSpec) -> Result<Started, RuntimeError>;

    /// Stops one process or a group, and returns the names of the processes stopped.
    async fn stop(&self, target: StopTarget) -> Result<Vec<String>, RuntimeError>;

    /// The table of the runtime's processes.
    fn table(&self) -> &Arc<ProcessTable>;

    /// The spec a process was started from, as the runtime keeps it (secret references only;
    /// the Kubernetes runtime reads it from the Pod), or `None` when the process is unknown or
    /// its spec unreadable.
    async fn stored_spec(&self, process_name: &str) -> Option<ProcessSpec>;

    /// What the runtime's backend recorded about a process that explains its state (Kubernetes
    /// Events), oldest first. None by default: most runtimes have nothing beyond the table.
    async fn events(&self, _process_name: &str) -> Vec<RuntimeEvent> {
        Vec::new()
    }

    /// The output of a process, as the query asks (see [`LogsQuery`]); an unknown process is
    /// [`RuntimeError::NotFound`]. The stream holds bounded memory however slowly it is read, and
    /// with `follow` ends once the process has ended (or is stopped) and its output is sent.
    async fn logs(&self, process_name: &str, query: LogsQuery) -> Result<LogPieces, RuntimeError>;

    /// Why the table may be out of date (the backend cannot be reached, or the first sync is not
    /// done), or `None` when it is current.
    fn health(&self) -> Option<String> {
        None
    }

    /// How the runtime's cache of its backend stands, for the metrics; `None` for a runtime
    /// whose table is the truth itself (local).
    fn index_sync(&self) -> Option<IndexSync> {
        None
    }

    /// Stops every process the runtime owns, for a server that is shutting down.
    async fn shutdown(&self);
}

/// How a runtime's cache of its backend stands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IndexSync {
    /// Whether every watch has listed once and none is failing.
    pub synced: bool,
    /// Zero while synced; otherwise how long since the cache last heard from the backend.
    pub staleness: std::time::Duration,
    /// NodePorts the runtime's Services hold (Kubernetes only).
    pub node_ports_in_use: Option<u64>,
}

/// The outcome of a Start.
#[derive(Clone, Debug, PartialEq)]
pub struct Started {
    /// The process as it is now.
    pub process: ProcessInfo,
    /// Whether this call created it.
    pub created: bool,
}

/// An event of the runtime's backend about a process (a Kubernetes Event of its Pod).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeEvent {
    /// When it happened (last, for an event that repeated).
    pub time: jiff::Timestamp,
    /// The backend's short cause (`FailedScheduling`, `BackOff`, ...).
    pub reason: Option<String>,
    /// The backend's explanation.
    pub message: Option<String>,
}

/// What a Stop is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopTarget {
    /// One process, by name.
    Process(String),
    /// Every process of a group.
    Group(String),
    /// Every process whose labels match (never the empty selector: the caller refuses it).
    Selector(LabelSelector),
    /// These processes, those of them that still exist (a selector resolved within a
    /// restricted caller's reach).
    Processes(Vec<String>),
}

/// The answer to a Start whose name is taken by a process Hydroplane made: `Ok` when the spec is
/// the same (the Start is a retry, answered with that process), ALREADY_EXISTS saying why
/// otherwise. Every runtime answers the same way.
///
/// A process of another group is answered with [`TAKEN_BY_ANOTHER_GROUP`] and nothing else: not
/// its state and not how its spec differs, since that group may be out of the caller's reach
/// (naming the differing fields would let a restricted caller test guesses of its env values).
/// Within one group the caller reaches both specs, and is told what differs.
pub fn name_taken(
    requested: &ProcessSpec,
    existing: &ProcessSpec,
    stopping: bool,
) -> Result<(), RuntimeError> {
    let name = &requested.process_name;
    if requested.group != existing.group {
        return Err(RuntimeError::AlreadyExists {
            name: name.clone(),
            detail: TAKEN_BY_ANOTHER_GROUP.to_owned(),
        });
    }
    if stopping {
        return Err(RuntimeError::AlreadyExists {
            name: name.clone(),
            detail: "and is being stopped; start it again once it is gone".to_owned(),
        });
    }
    let differences = existing.differing_fields(requested);
    if differences.is_empty() {
        return Ok(());
    }
    Err(RuntimeError::AlreadyExists {
        name: name.clone(),
        detail: format!("with a different spec (differs in {})", differences.join(", ")),
    })
}

/// The detail of ALREADY_EXISTS for a name taken in another group: names are unique across
/// groups, and this is all that is said of the other process.
pub const TAKEN_BY_ANOTHER_GROUP: &str = "(a process name is unique on the server); choose another name";

/// Why the runtime the settings name could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The local runtime's log directory could not be made or used.
    #[error("cannot use runtime.log_dir `{}` for the output of local processes", path.display())]
    LogDirectory {
        /// The directory, as configured.
        path: std::path::PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The users of `runtime.run_as` or `runtime.run_as_by_group` cannot be used.
    #[error("cannot run local processes as configured: {message}")]
    RunAs {
        /// What is wrong, naming the setting.
        message: String,
    },
    /// No Kubernetes client could be made from the settings.
    #[error(transparent)]
    Kubeconfig(#[from] kube::connect::ConnectError),
    /// The Kubernetes cluster could not be used.
    #[error("cannot use the Kubernetes cluster")]
    Kubernetes(#[source] RuntimeError),
    /// The EKS cluster could not be found, authenticated with or used.
    #[error("cannot use the EKS cluster")]
    Eks(#[source] kube::connect::eks::EksError),
    /// The docker engine could not be reached or used.
    #[error(transparent)]
    Docker(#[from] docker::DockerSetupError),
}

/// Builds the runtime the settings name; secrets resolve the specs' (and AWS's) references.
pub async fn from_settings(
    settings: &RuntimeSettings,
    secrets: Arc<dyn SecretStore>,
) -> Result<Arc<dyn Runtime>, SetupError> {
    match settings {
        RuntimeSettings::Local(local) => {
            let runtime: Arc<dyn Runtime> = local::LocalRuntime::new(local.clone(), secrets)?;
            Ok(runtime)
        }
        RuntimeSettings::Kubernetes(kubernetes) => {
            let client = kube::connect::client(kubernetes).await?;
            let namespace = kubernetes.namespace().to_owned();
            tracing::info!(%namespace, "connecting to the Kubernetes cluster");
            let runtime = kube::KubeRuntime::connect(
                "kubernetes",
                client,
                namespace,
                secrets,
                kubernetes.public_exposure.clone(),
            )
            .await
            .map_err(SetupError::Kubernetes)?;
            Ok(runtime)
        }
        RuntimeSettings::Eks(eks) => {
            tracing::info!(cluster = %eks.cluster_name, region = %eks.region, "connecting to EKS");
            let runtime = kube::connect::eks::connect(eks, secrets).await.map_err(SetupError::Eks)?;
            Ok(runtime)
        }
        RuntimeSettings::Docker(docker) => {
            let runtime: Arc<dyn Runtime> = docker::DockerRuntime::connect(docker.clone(), secrets).await?;
            Ok(runtime)
        }
    }
}

/// A backend's own error, kept as the source of a [`RuntimeError`].
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// Why a runtime operation failed, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The spec is valid but this runtime cannot run it (for example, no command on the local
    /// runtime).
    #[error("{field}: {message}")]
    Unsupported {
        /// The field at fault.
        field: String,
        /// Why, and what to do instead.
        message: String,
    },
    /// A process of that name exists with a different spec, or is being stopped.
    #[error("process `{name}` already exists {detail}")]
    AlreadyExists {
        /// The process's name.
        name: String,
        /// How it differs.
        detail: String,
    },
    /// No process of that name exists.
    #[error("process `{name}` does not exist")]
    NotFound {
        /// The process's name.
        name: String,
    },
    /// A secret the spec refers to cannot be resolved.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The runtime's backend refused our credentials.
    #[error("{message}")]
    Unauthenticated {
        /// What failed, in the runtime's words (the step and the backend's message).
        message: String,
        /// The backend's error.
        #[source]
        source: Option<BackendError>,
    },
    /// The runtime's backend does not allow what was asked.
    #[error("{message}")]
    PermissionDenied {
        /// What failed, in the runtime's words.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<BackendError>,
    },
    /// The object changed under us (another server or user); trying again may succeed.
    #[error("{message}")]
    Conflict {
        /// What failed, in the runtime's words.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<BackendError>,
    },
    /// The runtime's backend rejected an object as invalid.
    #[error("{message}")]
    Rejected {
        /// What failed, in the runtime's words, naming the field.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<BackendError>,
    },
    /// The Kubernetes namespace the runtime works in does not exist (never made, or deleted
    /// since): retrying will not help until someone creates it.
    #[error(
        "namespace `{namespace}` does not exist on the cluster; create it (`kubectl create namespace {namespace}`) or set `runtime.namespace` to one that exists"
    )]
    NamespaceMissing {
        /// The namespace.
        namespace: String,
    },
    /// What was asked cannot be served in the process's present state (no previous run to show,
    /// a stream the runtime cannot tell apart, ...); the message says what would.
    #[error("{message}")]
    NotServable {
        /// Why, and what to do instead.
        message: String,
    },
    /// The backend has run out of something the process needs (the cluster's NodePorts); the
    /// message says which, how much is in use, and what to do.
    #[error("{message}")]
    Exhausted {
        /// What ran out, and the ways out.
        message: String,
    },
    /// The runtime's backend cannot be reached.
    #[error("the {runtime} runtime is unavailable: {message}")]
    Unavailable {
        /// The runtime.
        runtime: &'static str,
        /// What failed.
        message: String,
    },
    /// Something that should not happen; logged, and reported without detail.
    #[error("internal error: {0}")]
    Internal(String),
}
