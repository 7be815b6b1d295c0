//! The process table: what List and Watch are served from, whatever the runtime.
//!
//! A runtime records what it learns of its processes here ([`ProcessTable::upsert`],
//! [`ProcessTable::remove`]); every change gets the next revision and is kept in a bounded
//! history, so that a watcher that reconnects with the last revision it saw gets exactly what it
//! missed. When that revision is no longer in the history (or a watcher falls too far behind),
//! the watcher gets a RESET and a fresh snapshot instead: never a silent gap.
//!
//! Revisions start at the server's start time in microseconds, so a revision from an earlier run
//! of the server is always older than anything this run can replay and leads to a RESET rather
//! than to a replay of the wrong history.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::{broadcast, mpsc};

use crate::security::access::Groups;
use crate::spec::{HISTORY_LIMIT, ProcessInfo, ProcessStatus, Transition};

/// How many changes are kept for replay by default.
pub const DEFAULT_HISTORY: usize = 16_384;

/// How many events the stream of one watcher buffers before the watcher counts as slow.
const WATCHER_BUFFER: usize = 256;

/// The kind of a change to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// A process appeared.
    Added,
    /// A process changed.
    Modified,
    /// A process went away.
    Deleted,
}

/// One change to the table, with the revision it produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The process after the change (its last state, for `Deleted`).
    pub process: ProcessInfo,
    /// The table's revision after the change.
    pub revision: u64,
}

/// What a watcher receives.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent {
    /// A change (or, before `Synced`, a process of the snapshot, as `Added`).
    Change(Change),
    /// The snapshot or replay is complete, at this revision.
    Synced {
        /// The revision the watcher is now at.
        revision: u64,
    },
    /// What the watcher knew is no longer valid; a fresh snapshot and `Synced` follow.
    Reset {
        /// The table's revision when the reset was decided.
        revision: u64,
    },
}

/// Where a watch begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WatchStart {
    /// With a snapshot of the table.
    Snapshot,
    /// After this revision, or with a reset and a snapshot when it cannot be replayed.
    Resume(u64),
    /// With a reset and a snapshot.
    Reset,
}

/// Which processes a watcher or lister cares about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this group, when set.
    pub group: Option<String>,
    /// Only the process of this name, when set.
    pub process_name: Option<String>,
    /// Only processes of the groups the caller may touch.
    pub groups: Groups,
}

impl Filter {
    /// Whether a process passes the filter.
    pub fn matches(&self, process: &ProcessInfo) -> bool {
        self.group.as_ref().is_none_or(|group| process.group.as_ref() == Some(group))
            && self.process_name.as_ref().is_none_or(|name| &process.process_name == name)
            && self.groups.allows(process.group.as_deref())
    }
}

/// The processes of a runtime, with a revisioned history of their changes.
pub struct ProcessTable {
    state: Mutex<TableState>,
    changes: broadcast::Sender<Change>,
    /// Told the seconds from creation to RUNNING of each process that goes from STARTING to
    /// RUNNING (for the metrics; see [`ProcessTable::on_running`]).
    running_observer: OnceLock<RunningObserver>,
}

/// What [`ProcessTable::on_running`] calls.
pub type RunningObserver = Box<dyn Fn(f64) + Send + Sync>;

struct TableState {
    processes: BTreeMap<String, ProcessInfo>,
    revision: u64,
    /// Changes after `history_floor`, oldest first.
    history: VecDeque<Change>,
    /// Replay is possible from any revision at or above this one.
    history_floor: u64,
    history_limit: usize,
    /// Each process's last [`HISTORY_LIMIT`] transitions, oldest first: what Describe shows.
    transitions: BTreeMap<String, VecDeque<Transition>>,
}

impl ProcessTable {
    /// An empty table whose revisions start at `initial_revision`, keeping `history_limit`
    /// changes for replay.
    pub fn new(initial_revision: u64, history_limit: usize) -> Arc<ProcessTable> {
        let (changes, _) = broadcast::channel(history_limit.clamp(16, 4096));
        Arc::new(ProcessTable {
            state: Mutex::new(TableState {
                processes: BTreeMap::new(),
                revision: initial_revision,
                history: VecDeque::new(),
                history_floor: initial_revision,
                history_limit: history_limit.max(1),
                transitions: BTreeMap::new(),
            }),
            changes,
            running_observer: OnceLock::new(),
        })
    }

    /// An empty table whose revisions start at the current time in microseconds.
    pub fn starting_now() -> Arc<ProcessTable> {
        let now = jiff::Timestamp::now().as_microsecond();
        ProcessTable::new(u64::try_from(now).unwrap_or(0), DEFAULT_HISTORY)
    }

    fn lock(&self) -> MutexGuard<'_, TableState> {
        // A panic while holding the lock cannot leave the table half-updated (every update is a
        // single insert plus a push), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the current state of a process; returns the change, or `None` when nothing
    /// changed.
    pub fn upsert(&self, process: ProcessInfo) -> Option<Change> {
        let mut state = self.lock();
        let kind = match state.processes.get(&process.process_name) {
            Some(existing) if *existing == process => return None,
            Some(existing) => {
                if existing.status == ProcessStatus::Starting
                    && process.status == ProcessStatus::Running
                    && let Some(observer) = self.running_observer.get()
                {
                    let waited = jiff::Timestamp::now().duration_since(process.created);
                    observer(waited.as_secs_f64().max(0.0));
                }
                ChangeKind::Modified
            }
            None => ChangeKind::Added,
        };
        state.processes.insert(process.process_name.clone(), process.clone());
        let transitions = state.transitions.entry(process.process_name.clone()).or_default();
        // Changes of address or restart count alone are no transition of the process's state.
        if transitions.back().is_none_or(|last| !last.describes(&process)) {
            if transitions.len() == HISTORY_LIMIT {
                transitions.pop_front();
            }
            transitions.push_back(Transition::of(&process, jiff::Timestamp::now()));
        }
        Some(self.record(&mut state, kind, process))
    }

    /// Removes a process; returns the change, or `None` when it was not there.
    pub fn remove(&self, process_name: &str) -> Option<Change> {
        let mut state = self.lock();
        let process = state.processes.remove(process_name)?;
        state.transitions.remove(process_name);
        Some(self.record(&mut state, ChangeKind::Deleted, process))
    }

    fn record(&self, state: &mut TableState, kind: ChangeKind, process: ProcessInfo) -> Change {
        state.revision += 1;
        let change = Change { kind, process, revision: state.revision };
        if state.history.len() == state.history_limit
            && let Some(dropped) = state.history.pop_front()
        {
            state.history_floor = dropped.revision;
        }
        state.history.push_back(change.clone());
        // Sent under the lock so that subscribers see changes in revision order and a
        // subscription taken under the same lock neither misses nor repeats one. No receiver
        // is not an error: nobody is watching.
        let _ = self.changes.send(change.clone());
        change
    }

    /// One process, if the table has it.
    pub fn get(&self, process_name: &str) -> Option<ProcessInfo> {
        self.lock().processes.get(process_name).cloned()
    }

    /// One process, if the table has it, with its last transitions, oldest first.
    pub fn get_with_history(&self, process_name: &str) -> Option<(ProcessInfo, Vec<Transition>)> {
        let state = self.lock();
        let process = state.processes.get(process_name)?.clone();
        let history =
            state.transitions.get(process_name).map(|transitions| transitions.iter().cloned().collect());
        Some((process, history.unwrap_or_default()))
    }

    /// The processes that pass the filter, ordered by name.
    pub fn list(&self, filter: &Filter) -> Vec<ProcessInfo> {
        self.lock().processes.values().filter(|process| filter.matches(process)).cloned().collect()
    }

    /// How many processes the table has in each status (statuses with none are left out).
    pub fn status_counts(&self) -> HashMap<ProcessStatus, usize> {
        let mut counts = HashMap::new();
        for process in self.lock().processes.values() {
            *counts.entry(process.status).or_insert(0) += 1;
        }
        counts
    }

    /// Calls `observer` with the seconds from creation to RUNNING of every process that goes
    /// from STARTING to RUNNING from now on (the first observer set stays).
    pub fn on_running(&self, observer: RunningObserver) {
        let _ = self.running_observer.set(observer);
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// Starts a watch: a snapshot (or the replay since `since_revision`), `Synced`, then live
    /// changes. The stream ends when the receiver is dropped; a watcher that cannot keep up gets
    /// a `Reset` and a fresh snapshot rather than lost events, and never slows anyone else down.
    pub fn watch(
        self: &Arc<Self>,
        filter: Filter,
        since_revision: Option<u64>,
    ) -> mpsc::Receiver<WatchEvent> {
        let (sender, receiver) = mpsc::channel(WATCHER_BUFFER);
        let table = Arc::clone(self);
        tokio::spawn(async move {
            // Ends when the watcher hangs up: every send fails from then on.
            let _ = table.feed_watcher(filter, since_revision, sender).await;
        });
        receiver
    }

    async fn feed_watcher(
        &self,
        filter: Filter,
        since_revision: Option<u64>,
        sender: mpsc::Sender<WatchEvent>,
    ) -> Result<(), mpsc::error::SendError<WatchEvent>> {
        let start = match since_revision {
            Some(revision) => WatchStart::Resume(revision),
            None => WatchStart::Snapshot,
        };
        let (mut first_events, mut changes) = self.subscribe(&filter, start);
        loop {
            for event in first_events.drain(..) {
                sender.send(event).await?;
            }
            match changes.recv().await {
                Ok(change) => {
                    if filter.matches(&change.process) {
                        sender.send(WatchEvent::Change(change)).await?;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow: what this watcher would get next is gone from the channel, so
                    // it starts over from a snapshot, as a client with a too-old revision would.
                    (first_events, changes) = self.subscribe(&filter, WatchStart::Reset);
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }

    /// The first events of a watch and the receiver of what follows, taken atomically.
    fn subscribe(
        &self,
        filter: &Filter,
        start: WatchStart,
    ) -> (Vec<WatchEvent>, broadcast::Receiver<Change>) {
        let state = self.lock();
        let receiver = self.changes.subscribe();
        let mut events = Vec::new();
        match start {
            WatchStart::Resume(since) if since >= state.history_floor && since <= state.revision => {
                events.extend(
                    state
                        .history
                        .iter()
                        .filter(|change| change.revision > since && filter.matches(&change.process))
                        .cloned()
                        .map(WatchEvent::Change),
                );
            }
            start => {
                if start != WatchStart::Snapshot {
                    events.push(WatchEvent::Reset { revision: state.revision });
                }
                events.extend(state.processes.values().filter(|p| filter.matches(p)).map(|process| {
                    WatchEvent::Change(Change {
                        kind: ChangeKind::Added,
                        process: process.clone(),
                        revision: state.revision,
                    })
                }));
            }
        }
        events.push(WatchEvent::Synced { revision: state.revision });
        (events, receiver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ProcessStatus;

    fn process(name: &str, group: Option<&str>, status: ProcessStatus) -> ProcessInfo {
        ProcessInfo {
            process_name: name.to_owned(),
            group: group.map(str::to_owned),
            socket_addresses: Vec::new(),
            created: jiff::Timestamp::UNIX_EPOCH,
            status,
            reason: None,
            message: None,
            restart_count: 0,
            exit_code: None,
            node: None,
            labels: Default::default(),
        }
    }

    async fn next(receiver: &mut mpsc::Receiver<WatchEvent>) -> WatchEvent {
        tokio::time::timeout(std::time::Duration::from_secs(5), receiver.recv())
            .await
            .expect("an event arrives")
            .expect("the stream is open")
    }

    fn describe(event: &WatchEvent) -> String {
        match event {
            WatchEvent::Change(change) => format!(
                "{:?} {} {:?} @{}",
                change.kind, change.process.process_name, change.process.status, change.revision
            ),
            WatchEvent::Synced { revision } => format!("Synced @{revision}"),
            WatchEvent::Reset { revision } => format!("Reset @{revision}"),
        }
    }

    async fn take(receiver: &mut mpsc::Receiver<WatchEvent>, count: usize) -> Vec<String> {
        let mut events = Vec::new();
        for _ in 0..count {
            events.push(describe(&next(receiver).await));
        }
        events
    }

    #[test]
    fn unchanged_upserts_make_no_revision() {
        let table = ProcessTable::new(100, 10);
        assert!(table.upsert(process("a", None, ProcessStatus::Starting)).is_some());
        assert!(table.upsert(process("a", None, ProcessStatus::Starting)).is_none());
        assert_eq!(table.revision(), 101);
        assert_eq!(table.remove("a").map(|change| change.kind), Some(ChangeKind::Deleted));
        assert!(table.remove("a").is_none());
    }

    #[tokio::test]
    async fn a_watch_starts_with_a_snapshot_then_follows_changes() {
        let table = ProcessTable::new(100, 10);
        table.upsert(process("a", None, ProcessStatus::Running));
        table.upsert(process("b", Some("g"), ProcessStatus::Running));
        let mut all = table.watch(Filter::default(), None);
        let mut group = table.watch(Filter { group: Some("g".into()), ..Filter::default() }, None);
        assert_eq!(take(&mut all, 3).await, ["Added a Running @102", "Added b Running @102", "Synced @102"]);
        assert_eq!(take(&mut group, 2).await, ["Added b Running @102", "Synced @102"]);
        table.upsert(process("a", None, ProcessStatus::Failed));
        table.remove("b");
        assert_eq!(take(&mut all, 2).await, ["Modified a Failed @103", "Deleted b Running @104"]);
        assert_eq!(take(&mut group, 1).await, ["Deleted b Running @104"]);
    }

    #[tokio::test]
    async fn resuming_replays_exactly_what_was_missed() {
        let table = ProcessTable::new(100, 10);
        table.upsert(process("a", None, ProcessStatus::Starting));
        table.upsert(process("a", None, ProcessStatus::Running));
        table.upsert(process("b", None, ProcessStatus::Starting));
        let mut watch = table.watch(Filter::default(), Some(101));
        assert_eq!(
            take(&mut watch, 3).await,
            ["Modified a Running @102", "Added b Starting @103", "Synced @103"]
        );
        let mut up_to_date = table.watch(Filter::default(), Some(103));
        assert_eq!(take(&mut up_to_date, 1).await, ["Synced @103"]);
    }

    #[tokio::test]
    async fn a_revision_older_than_the_history_gets_a_reset_and_a_snapshot() {
        let table = ProcessTable::new(100, 2);
        for status in [ProcessStatus::Starting, ProcessStatus::Running, ProcessStatus::Failed] {
            table.upsert(process("a", None, status));
        }
        // History keeps 102 and 103, so replay is possible from 101 on, not from 100.
        let mut replay = table.watch(Filter::default(), Some(101));
        assert_eq!(
            take(&mut replay, 3).await,
            ["Modified a Running @102", "Modified a Failed @103", "Synced @103"]
        );
        let mut reset = table.watch(Filter::default(), Some(100));
        assert_eq!(take(&mut reset, 3).await, ["Reset @103", "Added a Failed @103", "Synced @103"]);
        // A revision from the future (an earlier run of a server with a faster clock) too.
        let mut future = table.watch(Filter::default(), Some(10_000));
        assert_eq!(take(&mut future, 1).await, ["Reset @103"]);
    }

    #[tokio::test]
    async fn a_slow_watcher_is_reset_and_never_blocks_writers() {
        let table = ProcessTable::new(0, 16);
        let mut slow = table.watch(Filter::default(), None);
        assert_eq!(take(&mut slow, 1).await, ["Synced @0"]);
        // Far more changes than the watcher's buffer and the broadcast channel hold; upsert
        // must not wait for the watcher.
        for index in 0..10_000u32 {
            let status = if index % 2 == 0 { ProcessStatus::Running } else { ProcessStatus::Starting };
            table.upsert(process("a", None, status));
        }
        let mut saw_reset = false;
        loop {
            match next(&mut slow).await {
                WatchEvent::Reset { .. } => saw_reset = true,
                WatchEvent::Synced { revision } if saw_reset => {
                    assert_eq!(revision, table.revision());
                    break;
                }
                _ => {}
            }
        }
        assert!(saw_reset);
    }

    #[test]
    fn each_process_keeps_its_last_transitions_oldest_first_until_removed() {
        let table = ProcessTable::new(0, 16);
        table.upsert(process("a", None, ProcessStatus::Starting));
        let mut moved = process("a", None, ProcessStatus::Starting);
        moved.node = Some("n1".into());
        table.upsert(moved);
        let mut failed = process("a", None, ProcessStatus::Failed);
        failed.reason = Some("Crashed".into());
        table.upsert(failed);
        let statuses = |table: &ProcessTable| {
            let (_, history) = table.get_with_history("a").expect("a is there");
            history.iter().map(|t| (t.status, t.reason.clone())).collect::<Vec<_>>()
        };
        // The node alone changed in the second upsert: no transition.
        assert_eq!(
            statuses(&table),
            [(ProcessStatus::Starting, None), (ProcessStatus::Failed, Some("Crashed".to_owned()))]
        );
        for round in 0..30 {
            let status = if round % 2 == 0 { ProcessStatus::Running } else { ProcessStatus::Starting };
            table.upsert(process("a", None, status));
        }
        let history = statuses(&table);
        assert_eq!(history.len(), HISTORY_LIMIT);
        assert_eq!(history.last(), Some(&(ProcessStatus::Starting, None)));
        table.remove("a");
        table.upsert(process("a", None, ProcessStatus::Running));
        assert_eq!(statuses(&table), [(ProcessStatus::Running, None)]);
    }
}
