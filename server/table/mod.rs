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
//!
//! List is paged ([`listing`]): every page of one listing shows the table at one revision, and
//! a watch that resumes from that revision gets exactly the changes after the listing (list
//! then watch). Processes are kept once, shared (`Arc`) by the table, its history, its
//! snapshots and every watcher; group and label lookups go through [`lookups`], so a List or a
//! Watch of a group of 100 among 150,000 processes touches about 100.

pub mod listing;
mod lookups;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use futures::StreamExt;
use tokio::sync::broadcast;

use self::listing::{Listings, Page, PageError, PageQuery};
use self::lookups::{Candidates, Lookups};
use crate::security::access::Groups;
use crate::spec::labels::LabelSelector;
use crate::spec::{HISTORY_LIMIT, ProcessInfo, ProcessStatus, Transition};

/// How many changes are kept for replay by default.
pub const DEFAULT_HISTORY: usize = 16_384;

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
    /// The process after the change (its last state, for `Deleted`), shared with the table.
    pub process: Arc<ProcessInfo>,
    /// The table's revision after the change.
    pub revision: u64,
    /// The process before a `Modified` change: a watcher with a filter tells from it whether
    /// the process came into its view, left it, or changed within it.
    previous: Option<Arc<ProcessInfo>>,
}

impl Change {
    /// A change as a watcher with `filter` sees it: the change itself when the process passes
    /// the filter before and after it; an `Added` when it came into view; a `Deleted` (with its
    /// last state in view) when it left; nothing when it was never in view.
    fn seen_through(&self, filter: &Filter) -> Option<Change> {
        let now = filter.matches(&self.process);
        let before = self.previous.as_ref().map(|previous| filter.matches(previous));
        match (before, now) {
            (None | Some(true), true) => Some(self.clone()),
            (Some(false), true) => Some(Change { kind: ChangeKind::Added, previous: None, ..self.clone() }),
            (Some(true), false) => Some(Change {
                kind: ChangeKind::Deleted,
                process: self.previous.clone().unwrap_or_else(|| Arc::clone(&self.process)),
                revision: self.revision,
                previous: None,
            }),
            (None | Some(false), false) => None,
        }
    }
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

/// A watch of the table, read as a stream of [`WatchEvent`]s (or with [`Watch::recv`]).
///
/// It is polled by its reader directly, with no task or queue of its own between the table and
/// the reader: with a thousand watchers, each change costs a thousand filter checks and shared
/// pointers, not a thousand task wake-ups and copies. A reader that stops reading lets the
/// table's broadcast run past it, and gets a `Reset` and a fresh snapshot when it reads again.
pub struct Watch {
    events: futures::stream::BoxStream<'static, WatchEvent>,
}

impl Watch {
    /// The next event; `None` once the table is gone.
    pub async fn recv(&mut self) -> Option<WatchEvent> {
        self.events.next().await
    }
}

impl futures::Stream for Watch {
    type Item = WatchEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<WatchEvent>> {
        self.events.poll_next_unpin(context)
    }
}

/// What a [`Watch`] keeps between events.
struct Watching {
    table: Arc<ProcessTable>,
    filter: Filter,
    /// The snapshot or replay not yet read.
    pending: VecDeque<WatchEvent>,
    changes: broadcast::Receiver<Change>,
}

impl Watching {
    async fn next(mut self) -> Option<(WatchEvent, Watching)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((event, self));
            }
            match self.changes.recv().await {
                Ok(change) => {
                    if let Some(change) = change.seen_through(&self.filter) {
                        return Some((WatchEvent::Change(change), self));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow: what this watcher would get next is gone from the channel, so
                    // it starts over from a snapshot, as a client with a too-old revision would.
                    let (events, changes) = self.table.subscribe(&self.filter, WatchStart::Reset);
                    self.pending = events.into();
                    self.changes = changes;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
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
    /// Only processes whose labels match, when set.
    pub selector: Option<LabelSelector>,
    /// Only processes of the groups the caller may touch.
    pub groups: Groups,
}

impl Filter {
    /// Whether a process passes the filter.
    pub fn matches(&self, process: &ProcessInfo) -> bool {
        self.group.as_ref().is_none_or(|group| process.group.as_deref() == Some(group.as_str()))
            && self.process_name.as_ref().is_none_or(|name| process.process_name == name.as_str())
            && self.selector.as_ref().is_none_or(|selector| selector.matches(&process.labels))
            && self.groups.allows(process.group.as_deref())
    }

    /// The filter's group and selector, for messages (`group g, labels a=b`, or `every process`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(group) = &self.group {
            parts.push(format!("group {group}"));
        }
        if let Some(selector) = &self.selector {
            parts.push(format!("labels {selector}"));
        }
        if parts.is_empty() { "every process".to_owned() } else { parts.join(", ") }
    }
}

/// The processes of a runtime, with a revisioned history of their changes.
pub struct ProcessTable {
    state: Mutex<TableState>,
    /// The snapshots of paged listings (a lock of their own: reading a page never blocks a
    /// writer).
    listings: Listings,
    changes: broadcast::Sender<Change>,
    /// Told the seconds from creation to RUNNING of each process that goes from STARTING to
    /// RUNNING (for the metrics; see [`ProcessTable::on_running`]).
    running_observer: OnceLock<RunningObserver>,
}

/// What [`ProcessTable::on_running`] calls.
pub type RunningObserver = Box<dyn Fn(f64) + Send + Sync>;

struct TableState {
    processes: BTreeMap<Arc<str>, Entry>,
    lookups: Lookups,
    revision: u64,
    /// Changes after `history_floor`, oldest first.
    history: VecDeque<Change>,
    /// Replay is possible from any revision at or above this one.
    history_floor: u64,
    history_limit: usize,
}

/// One process of the table.
struct Entry {
    process: Arc<ProcessInfo>,
    /// Its last [`HISTORY_LIMIT`] transitions, oldest first: what Describe shows. A boxed slice
    /// rather than a queue: transitions are rare, and a queue's spare room would cost every
    /// process of a large table.
    transitions: Box<[Transition]>,
}

impl ProcessTable {
    /// An empty table whose revisions start at `initial_revision`, keeping `history_limit`
    /// changes for replay.
    pub fn new(initial_revision: u64, history_limit: usize) -> Arc<ProcessTable> {
        let (changes, _) = broadcast::channel(history_limit.clamp(16, 4096));
        Arc::new(ProcessTable {
            state: Mutex::new(TableState {
                processes: BTreeMap::new(),
                lookups: Lookups::default(),
                revision: initial_revision,
                history: VecDeque::new(),
                history_floor: initial_revision,
                history_limit: history_limit.max(1),
            }),
            listings: Listings::default(),
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
        let state = &mut *state;
        let now = jiff::Timestamp::now();
        // The revision this change gets (`record` makes it the table's).
        let revision = state.revision + 1;
        let (kind, process, previous) = match state.processes.get_mut(process.process_name.as_str()) {
            Some(existing) if *existing.process == process => return None,
            Some(existing) => {
                if existing.process.status == ProcessStatus::Starting
                    && process.status == ProcessStatus::Running
                    && let Some(observer) = self.running_observer.get()
                {
                    let waited = now.duration_since(process.created);
                    observer(waited.as_secs_f64().max(0.0));
                }
                let process = Arc::new(process);
                // Changes of address or restart count alone are no transition of the state.
                if existing.transitions.last().is_none_or(|last| !last.describes(&process)) {
                    let mut transitions = std::mem::take(&mut existing.transitions).into_vec();
                    if transitions.len() == HISTORY_LIMIT {
                        transitions.remove(0);
                    }
                    transitions.push(Transition::of(&process, now));
                    existing.transitions = transitions.into_boxed_slice();
                }
                let previous = std::mem::replace(&mut existing.process, Arc::clone(&process));
                if previous.group != process.group || previous.labels != process.labels {
                    // A new process of the same name (a relist joined its Delete and Add).
                    let name: Arc<str> = process.process_name.as_str().into();
                    state.lookups.remove(&name, &previous, revision);
                    state.lookups.insert(&name, &process, revision);
                } else {
                    state.lookups.replace(&process.process_name, &process, revision);
                }
                (ChangeKind::Modified, process, Some(previous))
            }
            None => {
                let name: Arc<str> = process.process_name.as_str().into();
                let process = Arc::new(process);
                state.lookups.insert(&name, &process, revision);
                let transitions = Box::new([Transition::of(&process, now)]);
                state.processes.insert(name, Entry { process: Arc::clone(&process), transitions });
                (ChangeKind::Added, process, None)
            }
        };
        Some(self.record(state, kind, process, previous))
    }

    /// Removes a process; returns the change, or `None` when it was not there.
    pub fn remove(&self, process_name: &str) -> Option<Change> {
        let mut state = self.lock();
        let state = &mut *state;
        let (name, entry) = state.processes.remove_entry(process_name)?;
        state.lookups.remove(&name, &entry.process, state.revision + 1);
        Some(self.record(state, ChangeKind::Deleted, entry.process, None))
    }

    fn record(
        &self,
        state: &mut TableState,
        kind: ChangeKind,
        process: Arc<ProcessInfo>,
        previous: Option<Arc<ProcessInfo>>,
    ) -> Change {
        state.revision += 1;
        let change = Change { kind, process, revision: state.revision, previous };
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
        self.lock().processes.get(process_name).map(|entry| (*entry.process).clone())
    }

    /// One process, if the table has it, with its last transitions, oldest first.
    pub fn get_with_history(&self, process_name: &str) -> Option<(ProcessInfo, Vec<Transition>)> {
        let state = self.lock();
        let entry = state.processes.get(process_name)?;
        Some(((*entry.process).clone(), entry.transitions.to_vec()))
    }

    /// The processes that pass the filter, ordered by name (every one: see
    /// [`ProcessTable::list_page`] for pages).
    pub fn list(&self, filter: &Filter) -> Vec<Arc<ProcessInfo>> {
        self.lock().matching(filter)
    }

    /// One page of the processes that pass the filter, ordered by name, and the revision the
    /// listing shows (the same on every page of it).
    pub fn list_page(&self, filter: &Filter, query: &PageQuery) -> Result<Page, PageError> {
        if let Some(token) = &query.token {
            return self.listings.later_page(token, filter, query.effective_size());
        }
        let (matching, revision, group_changed) = {
            let state = self.lock();
            let group_changed = filter.group.as_deref().and_then(|group| state.lookups.group_changed(group));
            (state.matching(filter), state.revision, group_changed)
        };
        let mut page = self.listings.first_page(filter, revision, matching, query);
        page.group_changed = group_changed;
        Ok(page)
    }

    /// The revision of the last change to the processes of `group` (`None` when it has none)
    /// and the table's revision, read together: an answer for the group made when its last
    /// change was that one still shows the group as it is at the table's revision.
    pub fn group_version(&self, group: &str) -> (Option<u64>, u64) {
        let state = self.lock();
        (state.lookups.group_changed(group), state.revision)
    }

    /// How many processes the table has in each status (statuses with none are left out).
    pub fn status_counts(&self) -> HashMap<ProcessStatus, usize> {
        let mut counts = HashMap::new();
        for entry in self.lock().processes.values() {
            *counts.entry(entry.process.status).or_insert(0) += 1;
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
    /// changes. A watcher that cannot keep up gets a `Reset` and a fresh snapshot rather than
    /// lost events, and never slows anyone else down.
    pub fn watch(self: &Arc<Self>, filter: Filter, since_revision: Option<u64>) -> Watch {
        let start = match since_revision {
            Some(revision) => WatchStart::Resume(revision),
            None => WatchStart::Snapshot,
        };
        let (first_events, changes) = self.subscribe(&filter, start);
        let state = Watching { table: Arc::clone(self), filter, pending: first_events.into(), changes };
        Watch { events: futures::stream::unfold(state, Watching::next).boxed() }
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
                        .skip_while(|change| change.revision <= since)
                        .filter_map(|change| change.seen_through(filter))
                        .map(WatchEvent::Change),
                );
            }
            start => {
                if start != WatchStart::Snapshot {
                    events.push(WatchEvent::Reset { revision: state.revision });
                }
                events.extend(state.matching(filter).into_iter().map(|process| {
                    WatchEvent::Change(Change {
                        kind: ChangeKind::Added,
                        process,
                        revision: state.revision,
                        previous: None,
                    })
                }));
            }
        }
        events.push(WatchEvent::Synced { revision: state.revision });
        (events, receiver)
    }
}

impl TableState {
    /// The processes that pass the filter, ordered by name, found through the narrowest lookup
    /// that applies.
    fn matching(&self, filter: &Filter) -> Vec<Arc<ProcessInfo>> {
        if let Some(name) = &filter.process_name {
            return self
                .processes
                .get(name.as_str())
                .filter(|entry| filter.matches(&entry.process))
                .map(|entry| vec![Arc::clone(&entry.process)])
                .unwrap_or_default();
        }
        match self.lookups.candidates(filter) {
            Candidates::Processes(processes) => {
                processes.into_iter().filter(|process| filter.matches(process)).collect()
            }
            Candidates::All => self
                .processes
                .values()
                .filter(|entry| filter.matches(&entry.process))
                .map(|entry| Arc::clone(&entry.process))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ProcessStatus;

    fn process(name: &str, group: Option<&str>, status: ProcessStatus) -> ProcessInfo {
        ProcessInfo::of_tests(name, group, status)
    }

    async fn next(receiver: &mut Watch) -> WatchEvent {
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

    async fn take(receiver: &mut Watch, count: usize) -> Vec<String> {
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
            history.iter().map(|t| (t.status, t.reason.as_deref().map(str::to_owned))).collect::<Vec<_>>()
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

    fn labelled(name: &str, group: Option<&str>, labels: &[(&str, &str)]) -> ProcessInfo {
        let mut process = process(name, group, ProcessStatus::Running);
        process.labels =
            Arc::new(labels.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect());
        process
    }

    fn selector(text: &str) -> Option<LabelSelector> {
        Some(LabelSelector::parse(text).expect("a valid selector"))
    }

    fn names(processes: &[Arc<ProcessInfo>]) -> Vec<&str> {
        processes.iter().map(|process| process.process_name.as_str()).collect()
    }

    /// Every page of a listing, and its revision (the same on every page).
    fn list_all(table: &ProcessTable, filter: &Filter, size: usize) -> (Vec<String>, u64, usize) {
        let mut query = PageQuery { size, token: None, ..PageQuery::default() };
        let mut listed = Vec::new();
        let mut revisions = std::collections::BTreeSet::new();
        let mut pages = 0;
        loop {
            let page = table.list_page(filter, &query).expect("a page");
            pages += 1;
            assert!(page.processes.len() <= size.max(1));
            listed.extend(page.processes.iter().map(|process| process.process_name.to_string()));
            revisions.insert(page.revision);
            match page.next_page_token {
                Some(token) => query.token = Some(token),
                None => break,
            }
        }
        assert_eq!(revisions.len(), 1, "one revision for every page");
        (listed, revisions.into_iter().next().unwrap_or_default(), pages)
    }

    #[test]
    fn pages_of_one_listing_show_one_revision_whatever_changes_between_them() {
        let table = ProcessTable::new(0, 1000);
        for index in 0..10 {
            table.upsert(process(&format!("p{index}"), None, ProcessStatus::Running));
        }
        let first = table
            .list_page(&Filter::default(), &PageQuery { size: 4, token: None, ..PageQuery::default() })
            .expect("a page");
        assert_eq!(names(&first.processes), ["p0", "p1", "p2", "p3"]);
        assert_eq!(first.revision, 10);
        // Changes after the first page are not in the listing: it is a snapshot.
        table.remove("p5");
        table.upsert(process("p45", None, ProcessStatus::Running));
        let token = first.next_page_token.expect("more pages");
        let second = table
            .list_page(&Filter::default(), &PageQuery { size: 4, token: Some(token), ..PageQuery::default() })
            .expect("a page");
        assert_eq!((names(&second.processes), second.revision), (vec!["p4", "p5", "p6", "p7"], 10));
        let third = table
            .list_page(
                &Filter::default(),
                &PageQuery { size: 4, token: second.next_page_token, ..PageQuery::default() },
            )
            .expect("a page");
        assert_eq!((names(&third.processes), third.next_page_token), (vec!["p8", "p9"], None));
        // A fresh listing sees the changes.
        let (listed, revision, pages) = list_all(&table, &Filter::default(), 1000);
        assert_eq!((listed.len(), revision, pages), (10, 12, 1));
        assert!(listed.contains(&"p45".to_owned()) && !listed.contains(&"p5".to_owned()));
    }

    #[test]
    fn a_group_version_moves_with_the_changes_to_that_group_only() {
        let table = ProcessTable::new(100, 100);
        assert_eq!(table.group_version("g"), (None, 100));
        table.upsert(process("a", Some("g"), ProcessStatus::Starting));
        table.upsert(process("b", Some("h"), ProcessStatus::Starting));
        assert_eq!(table.group_version("g"), (Some(101), 102));
        table.upsert(process("a", Some("g"), ProcessStatus::Running));
        table.upsert(process("b", Some("h"), ProcessStatus::Running));
        assert!(table.upsert(process("a", Some("g"), ProcessStatus::Running)).is_none());
        assert_eq!(table.group_version("g"), (Some(103), 104));
        // A process that moves changes the group it left and the one it joined.
        table.upsert(process("a", Some("h"), ProcessStatus::Running));
        assert_eq!((table.group_version("g"), table.group_version("h")), ((None, 105), (Some(105), 105)));
        // A group that has processes again is at a later revision than any it had.
        table.upsert(process("c", Some("g"), ProcessStatus::Running));
        table.remove("a");
        assert_eq!(
            (table.group_version("g"), table.group_version("h")),
            ((Some(106), 107), (Some(107), 107))
        );
        let filter = Filter { group: Some("h".into()), ..Filter::default() };
        let page = table.list_page(&filter, &PageQuery::default()).expect("a page");
        assert_eq!((names(&page.processes), page.revision, page.group_changed), (vec!["b"], 107, Some(107)));
        let everyone = table.list_page(&Filter::default(), &PageQuery::default()).expect("a page");
        assert_eq!(everyone.group_changed, None);
    }

    #[tokio::test]
    async fn list_then_watch_gets_exactly_the_changes_after_the_listing() {
        let table = ProcessTable::new(100, 1000);
        for index in 0..5 {
            table.upsert(process(&format!("p{index}"), None, ProcessStatus::Starting));
        }
        let (listed, revision, pages) = list_all(&table, &Filter::default(), 2);
        assert_eq!((listed.len(), pages), (5, 3));
        // Made between the listing and the watch: each must arrive once.
        table.upsert(process("p1", None, ProcessStatus::Running));
        table.remove("p2");
        table.upsert(process("p9", None, ProcessStatus::Starting));
        let mut watch = table.watch(Filter::default(), Some(revision));
        assert_eq!(
            take(&mut watch, 4).await,
            ["Modified p1 Running @106", "Deleted p2 Starting @107", "Added p9 Starting @108", "Synced @108"]
        );
    }

    #[test]
    fn an_expired_or_foreign_token_is_refused_saying_what_to_do() {
        let table = ProcessTable::new(0, 1000);
        for index in 0..3 {
            table.upsert(labelled(&format!("p{index}"), Some("g"), &[("tier", "web")]));
        }
        let filter = Filter { group: Some("g".into()), ..Filter::default() };
        let first = table
            .list_page(&filter, &PageQuery { size: 1, token: None, ..PageQuery::default() })
            .expect("a page");
        let token = first.next_page_token.expect("more pages");
        let other = Filter { selector: selector("tier=web"), ..Filter::default() };
        let refused = table
            .list_page(&other, &PageQuery { size: 1, token: Some(token.clone()), ..PageQuery::default() });
        assert_eq!(refused, Err(PageError::OtherFilter { listed: "group g".into() }));
        let malformed = table.list_page(
            &filter,
            &PageQuery { size: 1, token: Some("nonsense".into()), ..PageQuery::default() },
        );
        assert_eq!(malformed, Err(PageError::Malformed));
        // More listings than are kept push the oldest out.
        for _ in 0..listing::MAX_LISTINGS {
            table
                .list_page(&filter, &PageQuery { size: 1, token: None, ..PageQuery::default() })
                .expect("a page");
        }
        let expired =
            table.list_page(&filter, &PageQuery { size: 1, token: Some(token), ..PageQuery::default() });
        assert_eq!(expired, Err(PageError::Expired { revision: 3 }));
        let message = expired.unwrap_err().to_string();
        assert!(message.contains("list again from the first page"), "{message}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_listing_expires_when_its_pages_are_not_read_for_a_while() {
        let table = ProcessTable::new(0, 1000);
        for index in 0..3 {
            table.upsert(process(&format!("p{index}"), None, ProcessStatus::Running));
        }
        let first = table
            .list_page(&Filter::default(), &PageQuery { size: 1, token: None, ..PageQuery::default() })
            .expect("a page");
        tokio::time::advance(listing::LISTING_TTL - std::time::Duration::from_secs(1)).await;
        let second = table
            .list_page(
                &Filter::default(),
                &PageQuery { size: 1, token: first.next_page_token, ..PageQuery::default() },
            )
            .expect("read in time");
        tokio::time::advance(listing::LISTING_TTL + std::time::Duration::from_secs(1)).await;
        let late = table.list_page(
            &Filter::default(),
            &PageQuery { size: 1, token: second.next_page_token, ..PageQuery::default() },
        );
        assert_eq!(late, Err(PageError::Expired { revision: 3 }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_callers_listings_push_out_its_own_before_anyone_elses() {
        let table = ProcessTable::new(0, 1000);
        for index in 0..3 {
            table.upsert(process(&format!("p{index}"), None, ProcessStatus::Running));
        }
        let open = |lister: &str| {
            let query = PageQuery { size: 1, lister: lister.to_owned(), ..PageQuery::default() };
            table.list_page(&Filter::default(), &query).expect("a page").next_page_token.expect("more pages")
        };
        let next = |token: &str| {
            let query = PageQuery { size: 1, token: Some(token.to_owned()), ..PageQuery::default() };
            table.list_page(&Filter::default(), &query)
        };
        let bobs = open("bob");
        let mut alices = Vec::new();
        for _ in 0..=listing::MAX_LISTINGS_PER_LISTER {
            // Distinct times, so that "least recently read" is one listing.
            tokio::time::advance(std::time::Duration::from_millis(1)).await;
            alices.push(open("alice"));
        }
        assert_eq!(next(&alices[0]), Err(PageError::Expired { revision: 3 }), "alice's oldest went");
        assert!(next(&alices[1]).is_ok(), "the rest of alice's are kept");
        assert!(next(&bobs).is_ok(), "bob's was not pushed out by alice's");
        let message = PageError::Expired { revision: 3 }.to_string();
        assert!(message.contains("at most 64 listings of one caller"), "{message}");
        // Past the total, the least recently read of anyone's goes.
        let mut others = Vec::new();
        for index in 0..listing::MAX_LISTINGS {
            tokio::time::advance(std::time::Duration::from_millis(1)).await;
            others.push(open(&format!("caller{index}")));
        }
        assert_eq!(next(&bobs), Err(PageError::Expired { revision: 3 }), "bob's, read longest ago, went");
        assert!(next(&others[listing::MAX_LISTINGS - 1]).is_ok());
    }

    #[test]
    fn groups_and_selectors_are_served_from_the_lookups() {
        let table = ProcessTable::new(0, 1000);
        table.upsert(labelled("a", Some("g1"), &[("tier", "web"), ("zone", "x")]));
        table.upsert(labelled("b", Some("g1"), &[("tier", "db")]));
        table.upsert(labelled("c", Some("g2"), &[("tier", "web"), ("example.com/team", "blue")]));
        table.upsert(labelled("d", None, &[]));
        let listed = |group: Option<&str>, text: Option<&str>| {
            let filter = Filter {
                group: group.map(str::to_owned),
                selector: text.and_then(selector),
                ..Filter::default()
            };
            table.list(&filter).iter().map(|process| process.process_name.clone()).collect::<Vec<_>>()
        };
        assert_eq!(listed(Some("g1"), None), ["a", "b"]);
        assert_eq!(listed(None, Some("tier=web")), ["a", "c"]);
        assert_eq!(listed(None, Some("tier in (db, web),zone")), ["a"]);
        assert_eq!(listed(None, Some("tier!=web")), ["b", "d"]);
        assert_eq!(listed(None, Some("!tier")), ["d"]);
        assert_eq!(listed(None, Some("example.com/team=blue")), ["c"]);
        assert_eq!(listed(Some("g2"), Some("tier=db")), Vec::<String>::new());
        assert_eq!(listed(Some("nope"), None), Vec::<String>::new());
        // Removing and re-adding keeps the lookups exact.
        table.remove("a");
        assert_eq!(listed(None, Some("tier=web")), ["c"]);
        table.upsert(labelled("c", Some("g1"), &[("tier", "db")]));
        assert_eq!(listed(None, Some("tier=web")), Vec::<String>::new());
        assert_eq!(listed(Some("g1"), Some("tier=db")), ["b", "c"]);
        assert_eq!(listed(Some("g2"), None), Vec::<String>::new());
        // A change of state is what the lookups serve from then on.
        let mut failed = labelled("b", Some("g1"), &[("tier", "db")]);
        failed.status = ProcessStatus::Failed;
        table.upsert(failed);
        for filter in [
            Filter { group: Some("g1".into()), ..Filter::default() },
            Filter { selector: selector("tier=db"), ..Filter::default() },
        ] {
            let statuses: Vec<_> =
                table.list(&filter).iter().map(|p| (p.process_name.clone(), p.status)).collect();
            assert_eq!(statuses, [("b".into(), ProcessStatus::Failed), ("c".into(), ProcessStatus::Running)]);
        }
    }

    #[tokio::test]
    async fn a_selector_watch_sees_processes_come_into_and_leave_its_view() {
        let table = ProcessTable::new(0, 1000);
        table.upsert(labelled("a", None, &[("tier", "web")]));
        table.upsert(labelled("b", None, &[("tier", "db")]));
        let mut web = table.watch(Filter { selector: selector("tier=web"), ..Filter::default() }, None);
        assert_eq!(take(&mut web, 2).await, ["Added a Running @2", "Synced @2"]);
        // `b` is made again with other labels (a relist can join its Delete and Add).
        table.upsert(labelled("b", None, &[("tier", "web")]));
        table.upsert(labelled("a", None, &[("tier", "db")]));
        let mut failed = labelled("b", None, &[("tier", "web")]);
        failed.status = ProcessStatus::Failed;
        table.upsert(failed);
        table.upsert(labelled("c", None, &[("tier", "db")]));
        table.remove("b");
        assert_eq!(
            take(&mut web, 4).await,
            ["Added b Running @3", "Deleted a Running @4", "Modified b Failed @5", "Deleted b Failed @7"]
        );
        // A replay of the same history from before it gives the same view.
        let mut replay = table.watch(Filter { selector: selector("tier=web"), ..Filter::default() }, Some(2));
        assert_eq!(
            take(&mut replay, 5).await,
            [
                "Added b Running @3",
                "Deleted a Running @4",
                "Modified b Failed @5",
                "Deleted b Failed @7",
                "Synced @7"
            ]
        );
    }
}
