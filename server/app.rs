//! The operations of the process service over a runtime, free of protobuf: the group checks of
//! a caller, and the `wait` of Start, which every runtime shares. Specs arrive validated
//! ([`ValidSpec`]).

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::{Metrics, OutcomeLabels};
use crate::runtime::collect::RuntimeCollector;
use crate::runtime::logs::{LogPieces, LogsQuery};
use crate::runtime::{Runtime, RuntimeError, RuntimeEvent, Started, StopTarget};
use crate::security::access::Denied;
use crate::security::access::{Caller, Groups};
use crate::spec::{HISTORY_LIMIT, ProcessDetail, ProcessInfo, ProcessStatus, Transition, ValidSpec};
use crate::spec::{InvalidFields, InvalidSpec};
use crate::table::listing::{Page, PageError, PageQuery};
use crate::table::{ChangeKind, Filter, Watch, WatchEvent};

/// How long a `wait`ing Start waits when the caller gives no timeout.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

pub use crate::spec::validation::limits::MAX_WAIT;

/// Why an operation of the process service failed, named after the step.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request's spec breaks the rules: every field and its rule.
    #[error(transparent)]
    InvalidRequest(#[from] InvalidSpec),
    /// The request's other fields break the rules: every field and its rule.
    #[error(transparent)]
    InvalidFields(#[from] InvalidFields),
    /// The caller may not touch the process or group.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// A `wait`ing Start ran out of time.
    #[error("process `{name}` is still {status} after {waited:?}")]
    WaitTimedOut {
        /// The process's name.
        name: String,
        /// Its status when the time ran out.
        status: String,
        /// How long the call waited.
        waited: Duration,
    },
    /// The process exists out of the caller's reach. Told to the caller exactly as
    /// [`RuntimeError::NotFound`] (same code, same message); only the audit line says it was a
    /// refusal.
    #[error("process `{name}` does not exist")]
    OutOfReach {
        /// The process's name, as the caller gave it.
        name: String,
    },
    /// A page of a listing cannot be served (a bad or expired page token).
    #[error(transparent)]
    Page(#[from] PageError),
    /// The runtime failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl AppError {
    /// The error's kind, as the outcome label of the Start and Stop metrics (bounded values).
    pub fn outcome(&self) -> &'static str {
        match self {
            AppError::InvalidRequest(_) | AppError::InvalidFields(_) => "invalid",
            AppError::Denied(_) | AppError::OutOfReach { .. } => "denied",
            AppError::WaitTimedOut { .. } => "timed_out",
            AppError::Page(_) => "invalid",
            AppError::Runtime(RuntimeError::AlreadyExists { .. }) => "already_exists",
            AppError::Runtime(RuntimeError::NotFound { .. }) => "not_found",
            AppError::Runtime(_) => "failed",
        }
    }
}

/// The process service: start, stop, list and watch over one runtime.
#[derive(Clone)]
pub struct Processes {
    runtime: Arc<dyn Runtime>,
    metrics: Option<Arc<Metrics>>,
}

impl Processes {
    /// The service over a runtime.
    pub fn new(runtime: Arc<dyn Runtime>) -> Processes {
        Processes { runtime, metrics: None }
    }

    /// The same service, recording its metrics in `metrics`, which from now on also reports this
    /// runtime's processes and index, and each process's seconds to its first RUNNING.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Processes {
        metrics.register_collector(Box::new(RuntimeCollector::new(Arc::clone(&self.runtime))));
        let start_to_running = metrics.domain.start_to_running.clone();
        self.runtime.table().on_running(Box::new(move |seconds| start_to_running.observe(seconds)));
        self.metrics = Some(metrics);
        self
    }

    /// The metrics this service records, when metrics are on.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    fn count(&self, starts: bool, outcome: &'static str) {
        if let Some(metrics) = &self.metrics {
            let family = if starts { &metrics.domain.starts } else { &metrics.domain.stops };
            family.get_or_create(&OutcomeLabels { outcome }).inc();
        }
    }

    /// Why List and Watch may be out of date (the runtime's backend cannot be reached, or its
    /// first sync is not done), or `None` when they are current.
    pub fn staleness(&self) -> Option<String> {
        self.runtime.health()
    }

    /// Starts the process, if its group is in the caller's reach; with `wait`, answers once the
    /// process has left STARTING (or the wait ran out).
    pub async fn start(
        &self,
        spec: ValidSpec,
        wait: Option<Duration>,
        caller: &Caller,
    ) -> Result<Started, AppError> {
        let result = self.start_unmetered(spec, wait, caller).await;
        let outcome = match &result {
            Ok(started) if started.created => "created",
            Ok(_) => "existing",
            Err(error) => error.outcome(),
        };
        self.count(true, outcome);
        result
    }

    async fn start_unmetered(
        &self,
        spec: ValidSpec,
        wait: Option<Duration>,
        caller: &Caller,
    ) -> Result<Started, AppError> {
        caller.check_group(spec.group.as_deref())?;
        let name = spec.process_name.clone();
        // Subscribing first means no change between Start's answer and the wait is missed.
        let changes = wait.map(|_| {
            self.runtime.table().watch(Filter { process_name: Some(name.clone()), ..Filter::default() }, None)
        });
        let mut started = self.runtime.start(spec).await?;
        if let (Some(timeout), Some(changes)) = (wait, changes)
            && !started.process.status.is_settled()
        {
            started.process = wait_until_settled(changes, started.process, timeout).await?;
        }
        Ok(started)
    }

    /// Stops a process or a group in the caller's reach. A process out of a restricted caller's
    /// reach is NOT_FOUND, as an unknown one is; a group out of reach is refused by name (the
    /// caller named it).
    pub async fn stop(&self, target: StopTarget, caller: &Caller) -> Result<Vec<String>, AppError> {
        let result = self.stop_unmetered(target, caller).await;
        self.count(false, result.as_ref().map_or_else(AppError::outcome, |_| "stopped"));
        result
    }

    async fn stop_unmetered(&self, target: StopTarget, caller: &Caller) -> Result<Vec<String>, AppError> {
        match &target {
            StopTarget::Process(name) => {
                let reached = self.runtime.table().get(name).is_some_and(|process| caller.reaches(&process));
                if !reached && caller.groups != Groups::All {
                    // A restricted caller learns nothing of processes it cannot reach.
                    return Err(not_found(name));
                }
            }
            StopTarget::Group(group) => caller.check_group(Some(group))?,
            StopTarget::Selector(selector) if caller.groups != Groups::All => {
                // A restricted caller's selector selects among what it may see, as in List.
                let filter = Filter {
                    selector: Some(selector.clone()),
                    groups: caller.groups.clone(),
                    ..Filter::default()
                };
                let names = self
                    .runtime
                    .table()
                    .list(&filter)
                    .iter()
                    .map(|process| process.process_name.to_string())
                    .collect();
                return Ok(self.runtime.stop(StopTarget::Processes(names)).await?);
            }
            StopTarget::Selector(_) => {}
            StopTarget::Processes(names) => {
                for name in names {
                    if self.runtime.table().get(name).is_some_and(|process| !caller.reaches(&process)) {
                        return Err(not_found(name));
                    }
                }
            }
        }
        Ok(self.runtime.stop(target).await?)
    }

    /// A process in the caller's reach, with its stored spec and its history: the table's
    /// transitions merged by time with the runtime's events about it. Unknown or out of the
    /// caller's reach: NOT_FOUND, the same answer for both.
    pub async fn describe(&self, name: &str, caller: &Caller) -> Result<ProcessDetail, AppError> {
        let Some((process, transitions)) =
            self.runtime.table().get_with_history(name).filter(|(process, _)| caller.reaches(process))
        else {
            return Err(not_found(name));
        };
        let spec = self.runtime.stored_spec(name).await;
        let events = self.runtime.events(name).await;
        let history = merge_history(transitions, events, process.status);
        Ok(ProcessDetail { process, spec, history })
    }

    /// The output of a process in the caller's reach, as the query asks; reach is checked as
    /// for Describe.
    pub async fn logs(&self, name: &str, query: LogsQuery, caller: &Caller) -> Result<LogPieces, AppError> {
        if !self.runtime.table().get(name).is_some_and(|process| caller.reaches(&process)) {
            return Err(not_found(name));
        }
        Ok(self.runtime.logs(name, query).await?)
    }

    /// Every process, unpaged, for the server's own passes over the table (the culler).
    pub fn all(&self) -> Vec<Arc<ProcessInfo>> {
        self.runtime.table().list(&Filter::default())
    }

    /// One page of the processes that pass the filter and are in the caller's reach, ordered
    /// by name; see [`crate::table::ProcessTable::list_page`]. The listing counts against the
    /// caller's share of kept listings (by token name, as calls are rate-limited).
    pub fn list(&self, mut filter: Filter, mut page: PageQuery, caller: &Caller) -> Result<Page, AppError> {
        filter.groups = caller.groups.clone();
        page.lister.clone_from(&caller.name);
        Ok(self.runtime.table().list_page(&filter, &page)?)
    }

    /// The revision of the last change to `group` (`None` when it has no processes) and the
    /// table's revision, read together; see [`crate::table::ProcessTable::group_version`].
    pub fn group_version(&self, group: &str) -> (Option<u64>, u64) {
        self.runtime.table().group_version(group)
    }

    /// A watch of the processes that pass the filter and are in the caller's reach; see
    /// [`crate::table::ProcessTable::watch`].
    pub fn watch(&self, mut filter: Filter, since_revision: Option<u64>, caller: &Caller) -> Watch {
        filter.groups = caller.groups.clone();
        self.runtime.table().watch(filter, since_revision)
    }
}

/// The answer for a process that does not exist or is out of the caller's reach (the table is
/// read once, so the two are not told apart here): a restricted caller learns nothing of
/// processes it cannot reach, not even that they exist.
fn not_found(name: &str) -> AppError {
    AppError::OutOfReach { name: name.to_owned() }
}

/// The table's transitions and the runtime's last [`HISTORY_LIMIT`] events in one list, oldest
/// first. An event takes the status the process had when it happened (the last transition at or
/// before it; the first one, or `current` when there is none, for an event older than all), so
/// that every entry reads as "in this status, because of this".
fn merge_history(
    transitions: Vec<Transition>,
    mut events: Vec<RuntimeEvent>,
    current: ProcessStatus,
) -> Vec<Transition> {
    events.sort_by_key(|event| event.time);
    let skip = events.len().saturating_sub(HISTORY_LIMIT);
    let status_at = |time: jiff::Timestamp| {
        transitions
            .iter()
            .rev()
            .find(|transition| transition.time <= time)
            .or(transitions.first())
            .map_or(current, |transition| transition.status)
    };
    let events: Vec<Transition> = events
        .into_iter()
        .skip(skip)
        .map(|event| Transition {
            time: event.time,
            status: status_at(event.time),
            reason: event.reason.map(Into::into),
            message: event.message,
        })
        .collect();
    let mut history = transitions;
    history.extend(events);
    // Stable: a transition and an event of the same instant keep the transition first.
    history.sort_by_key(|entry| entry.time);
    history
}

/// Follows one process's changes until it has left STARTING (or is gone).
async fn wait_until_settled(
    mut changes: Watch,
    mut process: ProcessInfo,
    timeout: Duration,
) -> Result<ProcessInfo, AppError> {
    let name = process.process_name.to_string();
    let settle = async {
        while let Some(event) = changes.recv().await {
            let WatchEvent::Change(change) = event else { continue };
            process = (*change.process).clone();
            if change.kind == ChangeKind::Deleted || process.status.is_settled() {
                break;
            }
        }
        process
    };
    tokio::time::timeout(timeout, settle).await.map_err(|_| AppError::WaitTimedOut {
        name,
        status: "STARTING".to_owned(),
        waited: timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).expect("a valid time")
    }

    fn transition(second: i64, status: ProcessStatus) -> Transition {
        Transition { time: at(second), status, reason: None, message: None }
    }

    fn event(second: i64, reason: &str) -> RuntimeEvent {
        RuntimeEvent { time: at(second), reason: Some(reason.to_owned()), message: None }
    }

    #[test]
    fn events_are_merged_by_time_with_the_status_of_their_moment() {
        let transitions =
            vec![transition(10, ProcessStatus::Starting), transition(20, ProcessStatus::Failed)];
        let events = vec![event(25, "BackOff"), event(5, "Scheduled"), event(15, "Pulling")];
        let history = merge_history(transitions, events, ProcessStatus::Failed);
        let seen: Vec<(i64, ProcessStatus, Option<&str>)> = history
            .iter()
            .map(|entry| (entry.time.as_second(), entry.status, entry.reason.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                (5, ProcessStatus::Starting, Some("Scheduled")),
                (10, ProcessStatus::Starting, None),
                (15, ProcessStatus::Starting, Some("Pulling")),
                (20, ProcessStatus::Failed, None),
                (25, ProcessStatus::Failed, Some("BackOff")),
            ]
        );
    }

    #[test]
    fn only_the_last_events_are_kept() {
        let events: Vec<RuntimeEvent> = (0..50).map(|second| event(second, "BackOff")).collect();
        let history = merge_history(Vec::new(), events, ProcessStatus::Failed);
        assert_eq!(history.len(), HISTORY_LIMIT);
        assert_eq!(history[0].time, at(30));
        assert!(history.iter().all(|entry| entry.status == ProcessStatus::Failed));
    }
}
