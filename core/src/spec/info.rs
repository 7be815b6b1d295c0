//! What the server knows of a process: its status, addresses and the detail runtimes report.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::ProcessSpec;

/// The lifecycle state of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProcessStatus {
    /// Accepted, not yet running.
    Starting,
    /// Running, and reachable where the runtime can tell.
    Running,
    /// Cannot run, or crashed; the info's `reason` says why.
    Failed,
    /// Ran to completion.
    Exited,
    /// Being stopped.
    Stopping,
}

impl ProcessStatus {
    /// Whether a `wait`ing Start has its answer once a process reaches this status.
    pub fn is_settled(self) -> bool {
        !matches!(self, ProcessStatus::Starting)
    }
}

/// Where a process can be reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketAddress {
    /// An IP address (inline: no allocation of its own).
    pub host: CompactString,
    /// A port number.
    pub port: u16,
    /// Whether it is reachable from outside the runtime's private network.
    pub is_public: bool,
    /// A DNS name for the same endpoint, when the runtime has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
}

/// What the server knows about one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The process's name. This and the other short strings are `CompactString`s, which hold up
    /// to 24 bytes inline: a server keeps a state of every process (150,000 on a full-size
    /// cluster), and a string of its own is a heap allocation placed wherever the allocator had
    /// room, so reading one process (a List, a Watch event) touched as many scattered places.
    pub process_name: CompactString,
    /// Its group, if any.
    pub group: Option<CompactString>,
    /// Where it can be reached.
    pub socket_addresses: Vec<SocketAddress>,
    /// When it was started.
    pub created: jiff::Timestamp,
    /// Its lifecycle state.
    pub status: ProcessStatus,
    /// A short machine-readable cause for FAILED or EXITED.
    pub reason: Option<CompactString>,
    /// A human-readable explanation of `reason`.
    pub message: Option<String>,
    /// How often the runtime restarted it.
    pub restart_count: u32,
    /// Its exit code, once it has exited.
    pub exit_code: Option<i32>,
    /// The node it runs on, where the runtime has nodes.
    pub node: Option<CompactString>,
    /// The labels of its spec, shared (not copied) by every state of the process the server
    /// keeps.
    pub labels: Labels,
}

/// A process's labels, shared between the states of it the server keeps.
pub type Labels = std::sync::Arc<std::collections::BTreeMap<String, String>>;

impl ProcessInfo {
    /// A process of the tests: `name` in `group` with `status`, created at the epoch, and
    /// nothing else set.
    #[cfg(any(test, feature = "test-util"))]
    pub fn of_tests(name: &str, group: Option<&str>, status: ProcessStatus) -> ProcessInfo {
        ProcessInfo {
            process_name: name.into(),
            group: group.map(Into::into),
            socket_addresses: Vec::new(),
            created: jiff::Timestamp::UNIX_EPOCH,
            status,
            reason: None,
            message: None,
            restart_count: 0,
            exit_code: None,
            node: None,
            labels: Labels::default(),
        }
    }

    /// A process just accepted: STARTING, with no address or detail yet.
    pub fn starting(spec: &ProcessSpec, created: jiff::Timestamp) -> ProcessInfo {
        ProcessInfo {
            process_name: spec.process_name.as_str().into(),
            group: spec.group.as_deref().map(Into::into),
            socket_addresses: Vec::new(),
            created,
            status: ProcessStatus::Starting,
            reason: None,
            message: None,
            restart_count: 0,
            exit_code: None,
            node: None,
            labels: Labels::new(spec.labels.clone()),
        }
    }
}

/// How many state transitions a process's history keeps; older ones are dropped.
pub const HISTORY_LIMIT: usize = 20;

/// One entry of a process's history: a change of its state, or (on Kubernetes) an event that
/// explains it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// When it happened.
    pub time: jiff::Timestamp,
    /// The process's status from then on (for an event: its status at that time).
    pub status: ProcessStatus,
    /// A short machine-readable cause.
    pub reason: Option<CompactString>,
    /// A human-readable explanation.
    pub message: Option<String>,
}

impl Transition {
    /// The transition into the state `info` is in, at `time`.
    pub fn of(info: &ProcessInfo, time: jiff::Timestamp) -> Transition {
        Transition { time, status: info.status, reason: info.reason.clone(), message: info.message.clone() }
    }

    /// Whether `info` is in the state this transition led to.
    pub fn describes(&self, info: &ProcessInfo) -> bool {
        self.status == info.status && self.reason == info.reason && self.message == info.message
    }
}

/// Everything Describe tells of a process.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessDetail {
    /// The process as it is now.
    pub process: ProcessInfo,
    /// The spec it was started from, as stored (secret references only).
    pub spec: Option<ProcessSpec>,
    /// Its last transitions, oldest first.
    pub history: Vec<Transition>,
}
