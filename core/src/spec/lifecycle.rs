//! How a process stays up: its restart policy, its health checks and its run-time limit. Every
//! runtime gives these the same meaning; Kubernetes maps them onto its own controllers and
//! probes, the local runtime runs them itself.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What happens when a process ends, or (on Kubernetes) when its Pod or node is lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Restarted whenever it ends and restored when lost: the default, since a named process is
    /// a long-running service.
    #[default]
    Always,
    /// Restarted when it fails and restored when lost; done once it exits with code 0.
    OnFailure,
    /// Runs once.
    Never,
}

impl RestartPolicy {
    /// The JSON spelling (`always`, `on_failure`, `never`).
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on_failure",
            RestartPolicy::Never => "never",
        }
    }

    /// Whether a run that ended this way is followed by another.
    pub fn restarts_after(self, succeeded: bool) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !succeeded,
            RestartPolicy::Never => false,
        }
    }
}

/// A health check: one action, run every `period_seconds`, failed after `failure_threshold`
/// failures in a row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "HealthCheckJson", into = "HealthCheckJson")]
pub struct HealthCheck {
    /// What one check does.
    pub action: CheckAction,
    /// Seconds between two checks.
    pub period_seconds: u32,
    /// Seconds after which one check counts as failed.
    pub timeout_seconds: u32,
    /// Failures in a row that make the check fail.
    pub failure_threshold: u32,
}

impl HealthCheck {
    /// Kubernetes' default period.
    pub const DEFAULT_PERIOD_SECONDS: u32 = 10;
    /// Kubernetes' default timeout.
    pub const DEFAULT_TIMEOUT_SECONDS: u32 = 1;
    /// Kubernetes' default failure threshold.
    pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;

    /// A check with Kubernetes' default timing.
    pub fn new(action: CheckAction) -> HealthCheck {
        HealthCheck {
            action,
            period_seconds: Self::DEFAULT_PERIOD_SECONDS,
            timeout_seconds: Self::DEFAULT_TIMEOUT_SECONDS,
            failure_threshold: Self::DEFAULT_FAILURE_THRESHOLD,
        }
    }

    /// The pause between two checks.
    pub fn period(&self) -> Duration {
        Duration::from_secs(u64::from(self.period_seconds))
    }

    /// How long one check may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.timeout_seconds))
    }
}

/// What one health check does.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CheckAction {
    /// An HTTP GET of the process's own address; passes with a status from 200 to 399.
    HttpGet {
        /// The port.
        port: i64,
        /// The path, starting with `/`.
        path: String,
    },
    /// A TCP connection to the process's own address; passes once accepted.
    TcpSocket {
        /// The port.
        port: i64,
    },
    /// A command run beside the process; passes when it exits with code 0.
    Exec {
        /// The argument vector (no shell).
        command: Vec<String>,
    },
}

fn root_path() -> String {
    "/".to_owned()
}

impl fmt::Display for CheckAction {
    /// The check as people read it in history: `GET :8000/healthz`, `TCP :5432`, `exec pg_isready`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckAction::HttpGet { port, path } => write!(f, "GET :{port}{path}"),
            CheckAction::TcpSocket { port } => write!(f, "TCP :{port}"),
            CheckAction::Exec { command } => write!(f, "exec {}", command.join(" ")),
        }
    }
}

/// The JSON shape of a health check: the action is one of three keys beside the timing, as in a
/// Kubernetes probe (`{"http_get": {"port": 8000, "path": "/"}, "period_seconds": 5}`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthCheckJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http_get: Option<HttpGetJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tcp_socket: Option<TcpSocketJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exec: Option<ExecJson>,
    #[serde(default)]
    period_seconds: Option<u32>,
    #[serde(default)]
    timeout_seconds: Option<u32>,
    #[serde(default)]
    failure_threshold: Option<u32>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpGetJson {
    port: i64,
    #[serde(default = "root_path")]
    path: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TcpSocketJson {
    port: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecJson {
    command: Vec<String>,
}

impl TryFrom<HealthCheckJson> for HealthCheck {
    type Error = String;

    fn try_from(json: HealthCheckJson) -> Result<Self, Self::Error> {
        let action = match (json.http_get, json.tcp_socket, json.exec) {
            (Some(HttpGetJson { port, path }), None, None) => CheckAction::HttpGet { port, path },
            (None, Some(TcpSocketJson { port }), None) => CheckAction::TcpSocket { port },
            (None, None, Some(ExecJson { command })) => CheckAction::Exec { command },
            (None, None, None) => {
                return Err("a health check needs one of `http_get`, `tcp_socket` or `exec`".to_owned());
            }
            _ => return Err("a health check takes only one of `http_get`, `tcp_socket` or `exec`".to_owned()),
        };
        Ok(HealthCheck {
            action,
            period_seconds: json.period_seconds.unwrap_or(HealthCheck::DEFAULT_PERIOD_SECONDS),
            timeout_seconds: json.timeout_seconds.unwrap_or(HealthCheck::DEFAULT_TIMEOUT_SECONDS),
            failure_threshold: json.failure_threshold.unwrap_or(HealthCheck::DEFAULT_FAILURE_THRESHOLD),
        })
    }
}

impl From<HealthCheck> for HealthCheckJson {
    fn from(check: HealthCheck) -> Self {
        let mut json = HealthCheckJson {
            http_get: None,
            tcp_socket: None,
            exec: None,
            period_seconds: Some(check.period_seconds),
            timeout_seconds: Some(check.timeout_seconds),
            failure_threshold: Some(check.failure_threshold),
        };
        match check.action {
            CheckAction::HttpGet { port, path } => json.http_get = Some(HttpGetJson { port, path }),
            CheckAction::TcpSocket { port } => json.tcp_socket = Some(TcpSocketJson { port }),
            CheckAction::Exec { command } => json.exec = Some(ExecJson { command }),
        }
        json
    }
}
