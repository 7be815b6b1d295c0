//! Logs on Kubernetes: a process's output is its container's log, read through the API server's
//! `pods/{name}/log` (the kubelet's copy), so Hydroplane stores nothing and any replica can
//! answer.
//!
//! Every request asks for `timestamps=true`: the time prefix of each line becomes the piece's
//! time and is stripped, and it is what lets us resume and drop duplicates, since `sinceTime` has
//! second precision on real clusters (we send the floor and drop earlier lines ourselves). The
//! log API mixes stdout and stderr, so pieces are `Combined` and asking for one of them is
//! FAILED_PRECONDITION. Lines are read one at a time (longer ones in pieces of
//! [`MAX_PIECE_BYTES`]), never the whole log.
//!
//! # Followers share one upstream per pod
//!
//! A `follow` joins the pod's [`Hub`]: one upstream follow request (`tailLines=0`) whose lines
//! fan out over a bounded `broadcast`, however many callers follow. A follower
//! 1. subscribes, then waits until the upstream is connected (so no line falls between what it
//!    reads next and what the upstream sends);
//! 2. reads its own backlog with a short non-follow request (its `tail_lines` and `since`);
//! 3. sends the live lines newer than the last line it has sent (the [`Seam`]).
//!
//! A follower too slow for the broadcast (`Lagged`) never slows the others and holds no more
//! memory: it subscribes again and catches up with a non-follow request from its last time, so
//! it loses nothing the kubelet still has. The upstream ends when the container's run does (it
//! exits, restarts, or the pod goes): followers then end Ok, after what was sent before. A
//! connection that drops while the same run goes on is reopened from the last line's time. The
//! hub goes, with its upstream, when its last follower leaves.
//!
//! A follow of a container that has not started waits: the upstream watches the index until the
//! process leaves STARTING, then asks the cluster, retrying with [`Backoff`] while the container
//! still waits. Without `follow` such a container has printed nothing: the answer is empty.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::io::{AsyncBufRead, AsyncBufReadExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::LogParams;
use tokio::sync::{broadcast, mpsc, watch};

use super::api_error;
use super::index::Index;
use crate::backoff::Backoff;
use crate::report::error_chain;
use crate::runtime::RuntimeError;
use crate::runtime::logs::{LogPiece, LogPieces, LogSource, LogsQuery, StreamFilter};
use crate::spec::ProcessStatus;

/// The longest piece a line is sent in; longer lines (the kubelet splits at 16 KiB already) go
/// in several, so that one line never holds unbounded memory.
pub const MAX_PIECE_BYTES: usize = 64 * 1024;

/// How many lines a hub holds for followers that are behind before they lag and catch up.
const HUB_CAPACITY: usize = 1024;

/// How many pieces a caller's stream holds before its task waits for the caller to read.
const STREAM_CAPACITY: usize = 64;

/// How long an upstream waits at a time for the index to show the process leave STARTING,
/// before asking the cluster again.
const START_WAIT: Duration = Duration::from_secs(5);

/// How often an upstream tries in a row to read its pod's state before it gives up.
const POD_READ_ATTEMPTS: u32 = 5;

// === pure helpers ===

/// One line of a log as read: its time (`None` when it had no time prefix, or is the rest of a
/// long line) and its bytes, with the prefix stripped and the newline kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// When the kubelet says it was written.
    pub time: Option<jiff::Timestamp>,
    /// The text.
    pub data: Bytes,
}

impl LogLine {
    fn into_piece(self) -> LogPiece {
        LogPiece { data: self.data, stream: LogSource::Combined, time: self.time }
    }
}

/// Splits the `timestamps=true` prefix (RFC 3339, up to nanoseconds, then one space) off a
/// line; a line without one is all text.
pub fn split_timestamp(line: &[u8]) -> (Option<jiff::Timestamp>, &[u8]) {
    // RFC 3339 with nanoseconds and an offset is at most 35 bytes.
    let Some(space) = line.iter().take(40).position(|byte| *byte == b' ') else { return (None, line) };
    match std::str::from_utf8(&line[..space]).ok().and_then(|text| text.parse::<jiff::Timestamp>().ok()) {
        Some(time) => (Some(time), &line[space + 1..]),
        None => (None, line),
    }
}

/// The whole second at or before `time`, as `sinceTime` has second precision.
pub fn second_floor(time: jiff::Timestamp) -> jiff::Timestamp {
    let second = time.as_second() - i64::from(time.subsec_nanosecond() < 0);
    jiff::Timestamp::from_second(second).unwrap_or(time)
}

/// Whether a line belongs to the output asked for since `since`.
pub fn is_since(since: Option<jiff::Timestamp>, time: Option<jiff::Timestamp>) -> bool {
    match (since, time) {
        (Some(since), Some(time)) => time >= since,
        _ => true,
    }
}

/// Where two reads of the same log meet (a backlog then live lines, or a reconnect): a line is
/// new when it is later than the last one let through. Times strictly increase within a
/// container's run, so this drops exactly the lines seen twice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seam {
    /// The time of the last line let through.
    pub last: Option<jiff::Timestamp>,
}

impl Seam {
    /// Whether a line with this time is new, remembering it when it is; lines without a time
    /// always pass (they cannot be told apart).
    pub fn admit(&mut self, time: Option<jiff::Timestamp>) -> bool {
        let Some(time) = time else { return true };
        if self.last.is_some_and(|last| time <= last) {
            return false;
        }
        self.last = Some(time);
        true
    }
}

/// The log request for `container`: always with timestamps, `since` as its second floor.
pub fn log_params(
    container: &str,
    follow: bool,
    tail_lines: Option<u64>,
    since: Option<jiff::Timestamp>,
    previous: bool,
) -> LogParams {
    LogParams {
        container: Some(container.to_owned()),
        follow,
        tail_lines: tail_lines.map(|tail| i64::try_from(tail).unwrap_or(i64::MAX)),
        since_time: since.map(second_floor),
        previous,
        timestamps: true,
        ..LogParams::default()
    }
}

/// Why the API server refused a log request, for the refusals that are not errors of ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogRefusal {
    /// The pod is gone.
    PodGone,
    /// `previous` for a container that has not restarted.
    NoPreviousRun,
    /// The container has not started yet (ContainerCreating, image pull, ...).
    NotStarted,
}

/// The refusal an API error is, if it is one we expect.
pub fn refusal(code: u16, message: &str) -> Option<LogRefusal> {
    match code {
        404 => Some(LogRefusal::PodGone),
        400 if message.contains("previous terminated container") => Some(LogRefusal::NoPreviousRun),
        400 if message.contains("is waiting to start")
            || message.contains("ContainerCreating")
            || message.contains("does not have a host assigned") =>
        {
            Some(LogRefusal::NotStarted)
        }
        _ => None,
    }
}

/// Where a pod's container stands, as far as following its log goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerRun {
    /// The pod is gone, replaced (another UID) or being deleted.
    Gone,
    /// The container has not started, or waits to start again (CrashLoopBackOff).
    Waiting,
    /// The container runs; its restart count tells its runs apart.
    Running {
        /// How often it was restarted.
        restarts: i32,
    },
    /// The container has exited and is not restarted (yet).
    Terminated,
}

/// Where the container `container` of `pod` (which must have UID `uid`) stands.
pub fn container_run(pod: Option<&Pod>, uid: &str, container: &str) -> ContainerRun {
    let Some(pod) = pod else { return ContainerRun::Gone };
    if pod.metadata.uid.as_deref() != Some(uid) || pod.metadata.deletion_timestamp.is_some() {
        return ContainerRun::Gone;
    }
    let status = pod
        .status
        .as_ref()
        .and_then(|status| status.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().find(|status| status.name == container));
    let Some(status) = status else { return ContainerRun::Waiting };
    let state = status.state.as_ref();
    if state.is_some_and(|state| state.running.is_some()) {
        ContainerRun::Running { restarts: status.restart_count }
    } else if state.is_some_and(|state| state.terminated.is_some()) {
        ContainerRun::Terminated
    } else {
        ContainerRun::Waiting
    }
}

// === reading a log ===

type LogBody = Pin<Box<dyn AsyncBufRead + Send>>;

/// The lines of a log response, read one at a time.
pub struct LogLines<R> {
    body: R,
    /// Whether the last piece read ended before its line did.
    continuing: bool,
    last_time: Option<jiff::Timestamp>,
}

impl<R: AsyncBufRead + Unpin> LogLines<R> {
    /// Reads the lines of `body`.
    pub fn new(body: R) -> LogLines<R> {
        LogLines { body, continuing: false, last_time: None }
    }

    /// The next line (or piece of a long one), `None` at the end.
    pub async fn next_line(&mut self) -> std::io::Result<Option<LogLine>> {
        let mut buffer = Vec::new();
        let complete = loop {
            let available = self.body.fill_buf().await?;
            if available.is_empty() {
                if buffer.is_empty() {
                    return Ok(None);
                }
                break true;
            }
            let window = &available[..available.len().min(MAX_PIECE_BYTES - buffer.len())];
            if let Some(end) = window.iter().position(|byte| *byte == b'\n') {
                buffer.extend_from_slice(&window[..=end]);
                self.body.consume_unpin(end + 1);
                break true;
            }
            let taken = window.len();
            buffer.extend_from_slice(window);
            self.body.consume_unpin(taken);
            if buffer.len() >= MAX_PIECE_BYTES {
                break false;
            }
        };
        let line = if self.continuing {
            LogLine { time: self.last_time, data: Bytes::from(buffer) }
        } else {
            let (time, text) = split_timestamp(&buffer);
            let start = buffer.len() - text.len();
            let mut data = Bytes::from(buffer);
            LogLine { time, data: data.split_off(start) }
        };
        self.continuing = !complete;
        self.last_time = line.time;
        Ok(Some(line))
    }
}

/// What opening a log gave.
enum Opened {
    Lines(LogLines<LogBody>),
    NotStarted,
}

/// The log of one process's container, in its pod.
#[derive(Clone)]
pub struct PodLog {
    pods: Api<Pod>,
    index: Arc<Index>,
    runtime: &'static str,
    /// The process's name: its container's, and its key in the index.
    name: String,
    /// The Pod's name: the process's for a bare Pod, else the one its controller gave it.
    pod_name: String,
    uid: String,
}

impl PodLog {
    /// The log of the process `name`, whose current Pod is `pod_name` with UID `uid`.
    pub fn new(
        pods: Api<Pod>,
        index: Arc<Index>,
        runtime: &'static str,
        name: String,
        pod_name: String,
        uid: String,
    ) -> PodLog {
        PodLog { pods, index, runtime, name, pod_name, uid }
    }

    fn params(
        &self,
        follow: bool,
        tail_lines: Option<u64>,
        since: Option<jiff::Timestamp>,
        previous: bool,
    ) -> LogParams {
        log_params(&self.name, follow, tail_lines, since, previous)
    }

    async fn open(&self, params: &LogParams) -> Result<Opened, RuntimeError> {
        match self.pods.log_stream(&self.pod_name, params).await {
            Ok(body) => Ok(Opened::Lines(LogLines::new(Box::pin(body) as LogBody))),
            Err(kube::Error::Api(response)) => match refusal(response.code, &response.message) {
                Some(LogRefusal::NotStarted) => Ok(Opened::NotStarted),
                Some(LogRefusal::PodGone) => Err(RuntimeError::NotFound { name: self.name.clone() }),
                Some(LogRefusal::NoPreviousRun) => Err(RuntimeError::NotServable {
                    message: format!(
                        "process `{}` has no previous run to show: its container has not restarted (ask without `previous` for the current run)",
                        self.name
                    ),
                }),
                None => Err(self.error(kube::Error::Api(response))),
            },
            Err(error) => Err(self.error(error)),
        }
    }

    fn error(&self, error: kube::Error) -> RuntimeError {
        api_error(self.runtime, &format!("read the log of pod `{}`", self.pod_name), error)
    }

    /// Whether the pod is gone (or going) as the index shows it: its log ends with it.
    fn pod_gone(&self) -> bool {
        self.index.read(|view| {
            view.pod(&self.name)
                .is_none_or(|pod| !pod.uid.is(&self.uid) || pod.state.status == ProcessStatus::Stopping)
        })
    }

    /// A read error in the middle of a log: the end of it when the pod went, an error otherwise.
    fn read_failed(&self, error: &std::io::Error) -> Option<RuntimeError> {
        if self.pod_gone() {
            return None;
        }
        Some(RuntimeError::Unavailable {
            runtime: self.runtime,
            message: format!("cannot read the log of pod `{}`: {}", self.pod_name, error_chain(error)),
        })
    }

    async fn container_run(&self) -> Result<ContainerRun, kube::Error> {
        let pod = self.pods.get_opt(&self.pod_name).await?;
        Ok(container_run(pod.as_ref(), &self.uid, &self.name))
    }

    /// Waits (bounded) until the index shows the process past STARTING, or gone.
    async fn wait_for_start(&self) {
        self.index
            .wait_for(&self.name, START_WAIT, |view| {
                view.pod(&self.name)
                    .is_none_or(|pod| !pod.uid.is(&self.uid) || pod.state.status != ProcessStatus::Starting)
            })
            .await;
    }

    /// Sends the lines of a non-follow request that pass `since` and the seam; false when the
    /// caller has gone or the stream must end (the pod is gone, or an error was sent).
    async fn send_lines(
        &self,
        params: &LogParams,
        since: Option<jiff::Timestamp>,
        seam: &mut Seam,
        sender: &mpsc::Sender<Result<LogPiece, RuntimeError>>,
    ) -> bool {
        match self.open(params).await {
            Ok(Opened::Lines(lines)) => self.send_all(lines, since, seam, sender).await,
            Ok(Opened::NotStarted) => true,
            Err(RuntimeError::NotFound { .. }) => false,
            Err(error) => {
                let _ = sender.send(Err(error)).await;
                false
            }
        }
    }

    /// Sends the lines of an opened log that pass `since` and the seam; false when the caller
    /// has gone or the stream must end.
    async fn send_all(
        &self,
        mut lines: LogLines<LogBody>,
        since: Option<jiff::Timestamp>,
        seam: &mut Seam,
        sender: &mpsc::Sender<Result<LogPiece, RuntimeError>>,
    ) -> bool {
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    if seam.admit(line.time)
                        && is_since(since, line.time)
                        && sender.send(Ok(line.into_piece())).await.is_err()
                    {
                        return false;
                    }
                }
                Ok(None) => return true,
                Err(error) => {
                    if let Some(error) = self.read_failed(&error) {
                        let _ = sender.send(Err(error)).await;
                    }
                    return false;
                }
            }
        }
    }
}

/// The output of a process, as `query` asks; `hubs` are the runtime's follow hubs.
pub async fn logs(log: PodLog, hubs: &Arc<LogHubs>, query: LogsQuery) -> Result<LogPieces, RuntimeError> {
    if query.streams != StreamFilter::Both {
        return Err(RuntimeError::NotServable {
            message: "Kubernetes' log API does not separate standard output from standard error; ask for both (LOG_STREAM_COMBINED)".to_owned(),
        });
    }
    let (sender, receiver) = mpsc::channel(STREAM_CAPACITY);
    // A follow of the previous run is a plain read: that run has ended.
    if query.follow && !query.previous {
        let (hub, lines) = hubs.join(&log);
        tokio::spawn(follow(log, hub, lines, query, sender));
    } else {
        let params = log_params(&log.name, false, query.tail_lines, query.since, query.previous);
        // Opened here, so that an unknown pod or a missing previous run is the call's error.
        match log.open(&params).await? {
            Opened::NotStarted => drop(sender),
            Opened::Lines(lines) => {
                tokio::spawn(async move {
                    log.send_all(lines, query.since, &mut Seam::default(), &sender).await;
                });
            }
        }
    }
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver)))
}

/// One caller's follow: the backlog, then the hub's live lines (see the module doc).
async fn follow(
    log: PodLog,
    hub: Arc<Hub>,
    mut lines: broadcast::Receiver<HubEvent>,
    query: LogsQuery,
    sender: mpsc::Sender<Result<LogPiece, RuntimeError>>,
) {
    let mut state = hub.state.clone();
    let connected = tokio::select! {
        connected = state.wait_for(|state| *state != HubState::Connecting) => {
            connected.map(|state| *state).unwrap_or(HubState::Ended)
        }
        () = sender.closed() => return,
    };
    let mut seam = Seam::default();
    let backlog = log.params(false, query.tail_lines, query.since, false);
    if !log.send_lines(&backlog, query.since, &mut seam, &sender).await || connected == HubState::Ended {
        return;
    }
    loop {
        let event = tokio::select! {
            event = lines.recv() => event,
            () = sender.closed() => return,
        };
        match event {
            Ok(HubEvent::Line(line)) => {
                if seam.admit(line.time)
                    && is_since(query.since, line.time)
                    && sender.send(Ok(line.into_piece())).await.is_err()
                {
                    return;
                }
            }
            Ok(HubEvent::End) | Err(broadcast::error::RecvError::Closed) => return,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(process = %log.name, missed, "a log follower fell behind; catching up from the cluster");
                lines = lines.resubscribe();
                let ended = *state.borrow() == HubState::Ended;
                let catch_up = log.params(false, None, seam.last.or(query.since), false);
                if !log.send_lines(&catch_up, query.since, &mut seam, &sender).await || ended {
                    return;
                }
            }
        }
    }
}

// === hubs ===

/// What a hub's upstream sends its followers.
#[derive(Clone, Debug)]
enum HubEvent {
    /// A line the container wrote.
    Line(LogLine),
    /// The container's run is over: nothing more will come.
    End,
}

/// Where a hub's upstream stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HubState {
    /// Not connected yet (the container may not have started).
    Connecting,
    /// Connected: every line written from now on is sent.
    Live,
    /// The run is over (or the upstream gave up); followers end.
    Ended,
}

/// One pod's shared follow: its upstream task and the broadcast of its lines.
pub struct Hub {
    lines: broadcast::Sender<HubEvent>,
    state: watch::Receiver<HubState>,
    upstream: tokio::task::AbortHandle,
}

impl Drop for Hub {
    fn drop(&mut self) {
        // The last follower has left: nobody wants the upstream any more.
        self.upstream.abort();
    }
}

/// The hubs of the pods being followed, by pod UID; a hub lives as long as its followers.
#[derive(Default)]
pub struct LogHubs {
    hubs: Mutex<HashMap<String, Weak<Hub>>>,
}

impl LogHubs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Hub>>> {
        // Each change is a single insert or retain: a panic cannot leave it half-done.
        self.hubs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pod's hub, started if it has none (or its last one has ended), and a subscription
    /// to it taken under the same lock.
    fn join(&self, log: &PodLog) -> (Arc<Hub>, broadcast::Receiver<HubEvent>) {
        let mut hubs = self.lock();
        hubs.retain(|_, hub| hub.strong_count() > 0);
        if let Some(hub) = hubs.get(&log.uid).and_then(Weak::upgrade)
            && *hub.state.borrow() != HubState::Ended
        {
            let receiver = hub.lines.subscribe();
            return (hub, receiver);
        }
        let (lines, receiver) = broadcast::channel(HUB_CAPACITY);
        let (state_sender, state) = watch::channel(HubState::Connecting);
        let upstream = tokio::spawn(upstream(log.clone(), lines.clone(), state_sender)).abort_handle();
        let hub = Arc::new(Hub { lines, state, upstream });
        hubs.insert(log.uid.clone(), Arc::downgrade(&hub));
        (hub, receiver)
    }
}

/// A hub's upstream: follows the container's current run, reconnecting from the last line's
/// time when the connection drops while the run goes on, and says when the run is over.
async fn upstream(log: PodLog, lines: broadcast::Sender<HubEvent>, state: watch::Sender<HubState>) {
    tracing::debug!(process = %log.name, "following a pod's log for its followers");
    let mut seam = Seam::default();
    let mut delays = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    // The run being followed (its restart count), and when it was first connected to.
    let mut following: Option<i32> = None;
    let mut live_since: Option<jiff::Timestamp> = None;
    let mut failed_reads = 0;
    loop {
        let run = match log.container_run().await {
            Ok(run) => {
                failed_reads = 0;
                run
            }
            Err(error) => {
                failed_reads += 1;
                if failed_reads >= POD_READ_ATTEMPTS {
                    tracing::warn!(process = %log.name, error = %error_chain(&error), "cannot read the pod whose log is followed; its followers end");
                    break;
                }
                tokio::time::sleep(delays.next_delay()).await;
                continue;
            }
        };
        let restarts = match (run, following) {
            (ContainerRun::Running { restarts }, None) => restarts,
            (ContainerRun::Running { restarts }, Some(followed)) if restarts == followed => restarts,
            (ContainerRun::Waiting, None) => {
                log.wait_for_start().await;
                tokio::time::sleep(delays.next_delay()).await;
                continue;
            }
            // Gone, exited, restarted, or waiting to start again: the run followed is over.
            _ => break,
        };
        following = Some(restarts);
        // First `tailLines=0` (followers read their own backlog); after a drop, from the last line.
        let resume = seam.last.or(live_since);
        let tail = if resume.is_none() { Some(0) } else { None };
        let params = log.params(true, tail, resume, false);
        let mut body = match log.open(&params).await {
            Ok(Opened::Lines(body)) => body,
            Ok(Opened::NotStarted) => {
                tokio::time::sleep(delays.next_delay()).await;
                continue;
            }
            Err(RuntimeError::NotFound { .. }) => break,
            Err(error) => {
                tracing::warn!(process = %log.name, %error, "cannot follow a pod's log; its followers end");
                break;
            }
        };
        live_since.get_or_insert_with(jiff::Timestamp::now);
        state.send_replace(HubState::Live);
        delays.reset();
        loop {
            match body.next_line().await {
                Ok(Some(line)) => {
                    if seam.admit(line.time) {
                        // Nobody subscribed right now is fine: the hub goes when its last
                        // follower does.
                        let _ = lines.send(HubEvent::Line(line));
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::debug!(process = %log.name, error = %error_chain(&error), "a pod's log follow dropped; checking its container");
                    break;
                }
            }
        }
    }
    state.send_replace(HubState::Ended);
    let _ = lines.send(HubEvent::End);
    tracing::debug!(process = %log.name, "stopped following a pod's log");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(text: &str) -> jiff::Timestamp {
        text.parse().expect("a time")
    }

    #[track_caller]
    fn check_split(line: &str, expected_time: Option<&str>, expected_text: &str) {
        let (parsed, text) = split_timestamp(line.as_bytes());
        assert_eq!(parsed, expected_time.map(time), "{line:?}");
        assert_eq!(std::str::from_utf8(text).expect("UTF-8"), expected_text, "{line:?}");
    }

    #[test]
    fn the_time_prefix_is_parsed_and_stripped() {
        check_split(
            "2026-12-02T03:04:05.123456789Z hello\n",
            Some("2026-12-02T03:04:05.123456789Z"),
            "hello\n",
        );
        check_split("2026-12-02T03:04:05Z hello world\n", Some("2026-12-02T03:04:05Z"), "hello world\n");
        check_split("2026-12-02T03:04:05.5+01:00 x\n", Some("2026-12-02T02:04:05.5Z"), "x\n");
        check_split("2026-12-02T03:04:05Z \n", Some("2026-12-02T03:04:05Z"), "\n");
        check_split("no time here\n", None, "no time here\n");
        check_split("nospace\n", None, "nospace\n");
        check_split("", None, "");
    }

    #[test]
    fn since_is_sent_as_its_second_floor() {
        assert_eq!(second_floor(time("2026-12-02T03:04:05.999Z")), time("2026-12-02T03:04:05Z"));
        assert_eq!(second_floor(time("2026-12-02T03:04:05Z")), time("2026-12-02T03:04:05Z"));
        assert_eq!(second_floor(time("1969-12-31T23:59:59.5Z")), time("1969-12-31T23:59:59Z"));
        let params = log_params("web", true, Some(5), Some(time("2026-12-02T03:04:05.7Z")), true);
        assert_eq!(params.container.as_deref(), Some("web"));
        assert!(params.follow && params.previous && params.timestamps);
        assert_eq!(params.tail_lines, Some(5));
        assert_eq!(params.since_time, Some(time("2026-12-02T03:04:05Z")));
        assert_eq!(params.since_seconds, None);
        assert_eq!(log_params("web", false, Some(u64::MAX), None, false).tail_lines, Some(i64::MAX));
        assert!(is_since(Some(time("2026-12-02T03:04:05.7Z")), Some(time("2026-12-02T03:04:05.7Z"))));
        assert!(!is_since(Some(time("2026-12-02T03:04:05.7Z")), Some(time("2026-12-02T03:04:05.6Z"))));
        assert!(is_since(Some(time("2026-12-02T03:04:05.7Z")), None));
    }

    #[test]
    fn the_seam_drops_exactly_the_lines_seen_twice() {
        let backlog = ["2026-01-01T00:00:00.1Z", "2026-01-01T00:00:00.2Z", "2026-01-01T00:00:00.3Z"];
        let live = ["2026-01-01T00:00:00.2Z", "2026-01-01T00:00:00.3Z", "2026-01-01T00:00:00.4Z"];
        let mut seam = Seam::default();
        let mut passed = Vec::new();
        for stamp in backlog.iter().chain(&live) {
            if seam.admit(Some(time(stamp))) {
                passed.push(*stamp);
            }
        }
        assert_eq!(
            passed,
            [
                "2026-01-01T00:00:00.1Z",
                "2026-01-01T00:00:00.2Z",
                "2026-01-01T00:00:00.3Z",
                "2026-01-01T00:00:00.4Z"
            ]
        );
        assert!(seam.admit(None), "a line without a time always passes");
        assert_eq!(seam.last, Some(time("2026-01-01T00:00:00.4Z")));
    }

    #[test]
    fn refusals_are_told_apart_from_errors() {
        let check = |code, message: &str| refusal(code, message);
        assert_eq!(check(404, "pods \"web\" not found"), Some(LogRefusal::PodGone));
        assert_eq!(
            check(400, "previous terminated container \"web\" in pod \"web\" not found"),
            Some(LogRefusal::NoPreviousRun)
        );
        assert_eq!(
            check(400, "container \"web\" in pod \"web\" is waiting to start: ContainerCreating"),
            Some(LogRefusal::NotStarted)
        );
        assert_eq!(check(400, "pod web does not have a host assigned"), Some(LogRefusal::NotStarted));
        assert_eq!(check(400, "invalid tailLines"), None);
        assert_eq!(check(403, "forbidden"), None);
    }

    #[test]
    fn container_runs_follow_the_pod_status() {
        let pod = |status: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web", "uid": "u1"},
                "status": {"containerStatuses": [status]}
            }))
            .expect("a pod")
        };
        let status = |state: serde_json::Value, restarts: i32| serde_json::json!({"name": "web", "image": "i", "imageID": "", "ready": true, "restartCount": restarts, "state": state});
        let running = pod(status(serde_json::json!({"running": {}}), 2));
        assert_eq!(container_run(Some(&running), "u1", "web"), ContainerRun::Running { restarts: 2 });
        assert_eq!(container_run(Some(&running), "u2", "web"), ContainerRun::Gone, "another pod of the name");
        assert_eq!(container_run(Some(&running), "u1", "other"), ContainerRun::Waiting);
        assert_eq!(container_run(None, "u1", "web"), ContainerRun::Gone);
        let exited = pod(status(serde_json::json!({"terminated": {"exitCode": 0}}), 0));
        assert_eq!(container_run(Some(&exited), "u1", "web"), ContainerRun::Terminated);
        let waiting = pod(status(serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}}), 3));
        assert_eq!(container_run(Some(&waiting), "u1", "web"), ContainerRun::Waiting);
        let mut deleting = running.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
        assert_eq!(container_run(Some(&deleting), "u1", "web"), ContainerRun::Gone);
    }

    #[tokio::test]
    async fn lines_are_read_one_at_a_time_and_long_ones_in_pieces() {
        let long = "x".repeat(MAX_PIECE_BYTES + 10);
        let body =
            format!("2026-01-01T00:00:00.1Z one\n2026-01-01T00:00:00.2Z {long}\n2026-01-01T00:00:00.3Z last");
        let mut lines = LogLines::new(futures::io::Cursor::new(body.into_bytes()));
        let mut read = Vec::new();
        while let Some(line) = lines.next_line().await.expect("read") {
            read.push(line);
        }
        assert_eq!(read.len(), 4, "{:?}", read.iter().map(|l| l.data.len()).collect::<Vec<_>>());
        assert_eq!(
            read[0],
            LogLine { time: Some(time("2026-01-01T00:00:00.1Z")), data: Bytes::from_static(b"one\n") }
        );
        // The long line: its prefix stripped from the first piece, its time on both.
        let stamp_length = "2026-01-01T00:00:00.2Z ".len();
        assert_eq!(read[1].data.len(), MAX_PIECE_BYTES - stamp_length);
        assert_eq!(read[2].data.len(), long.len() + 1 - (MAX_PIECE_BYTES - stamp_length));
        assert_eq!(read[2].time, Some(time("2026-01-01T00:00:00.2Z")));
        assert!(read[2].data.ends_with(b"x\n"));
        assert_eq!(
            read[3],
            LogLine { time: Some(time("2026-01-01T00:00:00.3Z")), data: Bytes::from_static(b"last") }
        );
    }
}
