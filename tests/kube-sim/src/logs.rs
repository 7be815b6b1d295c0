//! Container logs behind `pods/{name}/log`, served as a kubelet serves them: tests append lines
//! through `POST /_sim/logs/{namespace}/{pod}[/{container}]` (the body is text) and restart a
//! container through `POST /_sim/restart/{namespace}/{pod}[/{container}]` (optional JSON body
//! `{"exitCode": n}`, default 1), and clients read with `container`, `previous`, `sinceSeconds`,
//! `sinceTime`, `tailLines`, `timestamps` and `follow`.
//!
//! Logs belong to a pod instance (its UID), so a new pod with an old name starts empty. A
//! container that has not started answers 400 "is waiting to start", and `previous` for a
//! container that never restarted answers 400 `previous terminated container ... not found`, as
//! real servers do. A restart moves the current log to "previous" (the one before is gone, as
//! on a node) and writes the pod's status (restartCount, lastState.terminated, running again),
//! so watchers see it.
//!
//! Times have nanosecond precision and strictly increase per container, so a client may resume
//! from the last time it saw (`sinceTime` at second precision, then drop what it has). Lines are
//! kept sorted by time, so `sinceTime` is a binary search and `tailLines` a slice: cheap on long
//! logs. A `follow` stream is woken by a broadcast of which container changed and then reads what
//! is new from the store, so a burst of lines never drops any; it ends when its container
//! terminates (a status that shows it terminated), restarts, or its pod is deleted. The number
//! of follow streams open and ever opened are in `GET /_sim/stats`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::api::{AppState, Body, Query};
use crate::error::ApiError;
use crate::meta;
use crate::resources::Kind;
use crate::store::{EventType, ObjectKey};
use crate::watch::ChannelBody;

/// One stored log line.
#[derive(Debug, Clone)]
struct LogLine {
    time: jiff::Timestamp,
    text: String,
}

/// Which container's log: (pod UID, container name).
type LogKey = (String, String);

/// The log of one container: its current run, the one before the last restart, and the run's
/// number (bumped on restart, so that followers of the old run notice).
#[derive(Debug, Default)]
struct ContainerLog {
    current: Vec<LogLine>,
    previous: Option<Vec<LogLine>>,
    run: u64,
    last_time: Option<jiff::Timestamp>,
}

/// Where a reader stands in a container's log: the run, and the time of the last line it has.
#[derive(Debug, Clone, Copy)]
struct RunPosition {
    run: u64,
    last: Option<jiff::Timestamp>,
}

/// How many lines a follow stream copies out of the store at a time.
const FOLLOW_BATCH: usize = 1000;

/// Every container's log lines, and a feed of which container changed, for `follow`.
pub struct LogStore {
    logs: Mutex<HashMap<LogKey, ContainerLog>>,
    changed: broadcast::Sender<Arc<LogKey>>,
    follows_open: Arc<AtomicU64>,
    follows_total: AtomicU64,
}

impl Default for LogStore {
    fn default() -> Self {
        let (changed, _) = broadcast::channel(4096);
        LogStore {
            logs: Mutex::new(HashMap::new()),
            changed,
            follows_open: Arc::new(AtomicU64::new(0)),
            follows_total: AtomicU64::new(0),
        }
    }
}

/// What a read of a container's log asks for.
#[derive(Debug, Default, Clone, PartialEq)]
struct LogRequest {
    previous: bool,
    since: Option<jiff::Timestamp>,
    tail: Option<usize>,
    timestamps: bool,
    follow: bool,
}

impl LogStore {
    fn lock(&self) -> MutexGuard<'_, HashMap<LogKey, ContainerLog>> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `text` (split into lines) to a container's log, each line a nanosecond or more
    /// after the one before.
    pub fn append(&self, pod_uid: &str, container: &str, text: &str) {
        let key = (pod_uid.to_string(), container.to_string());
        {
            let mut logs = self.lock();
            let log = logs.entry(key.clone()).or_default();
            for text in text.lines() {
                let now = jiff::Timestamp::now();
                let time = match log.last_time {
                    Some(last) if now <= last => last + jiff::SignedDuration::from_nanos(1),
                    _ => now,
                };
                log.last_time = Some(time);
                log.current.push(LogLine { time, text: text.to_string() });
            }
        }
        // Nobody following is fine.
        let _ = self.changed.send(Arc::new(key));
    }

    /// Moves a container's current log to "previous" and starts a new, empty run.
    pub fn restart(&self, pod_uid: &str, container: &str) {
        let key = (pod_uid.to_string(), container.to_string());
        {
            let mut logs = self.lock();
            let log = logs.entry(key.clone()).or_default();
            log.previous = Some(std::mem::take(&mut log.current));
            log.run += 1;
        }
        let _ = self.changed.send(Arc::new(key));
    }

    /// How many follow streams are open now, and how many were ever opened.
    pub fn follow_counts(&self) -> (u64, u64) {
        (self.follows_open.load(Ordering::Relaxed), self.follows_total.load(Ordering::Relaxed))
    }

    /// The lines a request selects now, the run they belong to with the time of its last line,
    /// and (for follow) a receiver of later changes, taken together; `None` when `previous` is
    /// asked and there is none.
    fn read(
        &self,
        key: &LogKey,
        request: &LogRequest,
    ) -> Option<(Vec<LogLine>, RunPosition, broadcast::Receiver<Arc<LogKey>>)> {
        let logs = self.lock();
        let receiver = self.changed.subscribe();
        let empty = ContainerLog::default();
        let log = logs.get(key).unwrap_or(&empty);
        let lines = if request.previous { log.previous.as_deref()? } else { &log.current };
        let from = request.since.map_or(0, |since| lines.partition_point(|line| line.time < since));
        let selected = &lines[from..];
        let skip = request.tail.map_or(0, |tail| selected.len().saturating_sub(tail));
        let position = RunPosition { run: log.run, last: lines.last().map(|line| line.time) };
        Some((selected[skip..].to_vec(), position, receiver))
    }

    /// Up to [`FOLLOW_BATCH`] lines of run `run` after `after`, and whether the run is over.
    fn lines_after(&self, key: &LogKey, run: u64, after: Option<jiff::Timestamp>) -> (Vec<LogLine>, bool) {
        let logs = self.lock();
        let Some(log) = logs.get(key) else { return (Vec::new(), false) };
        let (lines, over) = match (log.run == run, log.run == run + 1) {
            (true, _) => (log.current.as_slice(), false),
            (false, true) => (log.previous.as_deref().unwrap_or_default(), true),
            (false, false) => (&[][..], true),
        };
        let from = after.map_or(0, |after| lines.partition_point(|line| line.time <= after));
        let end = lines.len().min(from + FOLLOW_BATCH);
        (lines[from..end].to_vec(), over && end == lines.len())
    }
}

fn render(line: &LogLine, timestamps: bool) -> String {
    if timestamps {
        format!("{} {}\n", line.time.strftime("%Y-%m-%dT%H:%M:%S.%NZ"), line.text)
    } else {
        format!("{}\n", line.text)
    }
}

/// The status of a container in a pod, by name.
fn container_status<'a>(pod: &'a Value, container: &str) -> Option<&'a Value> {
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .and_then(|statuses| statuses.iter().find(|s| s["name"] == container))
}

/// Picks the container a log request means, with the API server's errors; a container that has
/// not started is an error unless the previous run is asked for.
fn container_for(pod: &Value, requested: Option<&str>, previous: bool) -> Result<String, ApiError> {
    let pod_name = meta::name(pod);
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let container = match requested.filter(|c| !c.is_empty()) {
        Some(container) if names.contains(&container) => container.to_string(),
        Some(container) => {
            return Err(ApiError::BadRequest(format!(
                "container {container} is not valid for pod {pod_name}"
            )));
        }
        None if names.len() == 1 => names[0].to_string(),
        None => {
            return Err(ApiError::BadRequest(format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                names.join(" ")
            )));
        }
    };
    if previous {
        return Ok(container);
    }
    let waiting = container_status(pod, &container).map_or(Some("ContainerCreating"), |status| {
        status.pointer("/state/waiting/reason").and_then(Value::as_str)
    });
    if let Some(reason) = waiting {
        return Err(ApiError::BadRequest(format!(
            "container \"{container}\" in pod \"{pod_name}\" is waiting to start: {reason}"
        )));
    }
    Ok(container)
}

/// Reads the query parameters of a log request, with the API server's errors.
fn log_request(query: &Query, now: jiff::Timestamp) -> Result<LogRequest, ApiError> {
    let flag = |name: &str| matches!(query.get(name), Some("true" | "1"));
    let tail = match query.get("tailLines") {
        Some(tail) => Some(
            tail.parse::<usize>().map_err(|_| ApiError::BadRequest(format!("invalid tailLines {tail:?}")))?,
        ),
        None => None,
    };
    let since = match (query.get("sinceSeconds"), query.get("sinceTime")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "at most one of sinceTime or sinceSeconds may be specified".into(),
            ));
        }
        (Some(seconds), None) => {
            let seconds = seconds.parse::<i64>().ok().filter(|seconds| *seconds > 0).ok_or_else(|| {
                ApiError::BadRequest(format!("sinceSeconds: must be greater than 0, got {seconds:?}"))
            })?;
            now.checked_sub(jiff::SignedDuration::from_secs(seconds)).ok()
        }
        (None, Some(time)) => Some(
            time.parse::<jiff::Timestamp>()
                .map_err(|_| ApiError::BadRequest(format!("sinceTime: not an RFC3339 time: {time:?}")))?,
        ),
        (None, None) => None,
    };
    Ok(LogRequest {
        previous: flag("previous"),
        since,
        tail,
        timestamps: flag("timestamps"),
        follow: flag("follow"),
    })
}

/// Whether a pod event ends a follow of run `run` of a container: its pod is gone, or it shows
/// the container terminated or restarted.
fn ends_follow(event: &crate::store::Event, pod_uid: &str, container: &str, restarts: u64) -> bool {
    if event.kind != Kind::Pod || meta::uid(&event.object) != pod_uid {
        return false;
    }
    if event.event_type == EventType::Deleted {
        return true;
    }
    let Some(status) = container_status(&event.object, container) else { return false };
    status.pointer("/state/terminated").is_some()
        || status.get("restartCount").and_then(Value::as_u64).unwrap_or(0) != restarts
}

/// Decrements the open follow count when a follow stream ends.
struct FollowGuard(Arc<AtomicU64>);

impl Drop for FollowGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers `GET pods/{name}/log`.
pub fn serve(state: &Arc<AppState>, pod: &Value, query: &Query) -> Result<hyper::Response<Body>, ApiError> {
    let request = log_request(query, jiff::Timestamp::now())?;
    let container = container_for(pod, query.get("container"), request.previous)?;
    let key = (meta::uid(pod).to_string(), container);
    let Some((lines, position, mut changes)) = state.logs.read(&key, &request) else {
        return Err(ApiError::BadRequest(format!(
            "previous terminated container \"{}\" in pod \"{}\" not found",
            key.1,
            meta::name(pod)
        )));
    };
    let timestamps = request.timestamps;
    let text: String = lines.iter().map(|line| render(line, timestamps)).collect();
    let (sender, body_receiver) = mpsc::channel::<Bytes>(64);
    // The channel is fresh; the first chunk always fits.
    let _ = sender.try_send(Bytes::from(text));
    let terminated = container_status(pod, &key.1).is_some_and(|s| s.pointer("/state/terminated").is_some());
    if request.follow && !request.previous && !terminated {
        let restarts = container_status(pod, &key.1)
            .and_then(|s| s.get("restartCount"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        // Lines after the last one of the run when it was read; `since` may be in the future.
        let RunPosition { run, last: mut after } = position;
        let since = request.since;
        let render_batch = move |batch: &[LogLine]| -> String {
            batch
                .iter()
                .filter(|line| since.is_none_or(|since| line.time >= since))
                .map(|line| render(line, timestamps))
                .collect()
        };
        let mut events = state.store.subscribe();
        let state = state.clone();
        state.logs.follows_open.fetch_add(1, Ordering::Relaxed);
        state.logs.follows_total.fetch_add(1, Ordering::Relaxed);
        let guard = FollowGuard(state.logs.follows_open.clone());
        tokio::spawn(async move {
            let _guard = guard;
            loop {
                // Copy out what is new since the last look, in batches.
                loop {
                    let (batch, over) = state.logs.lines_after(&key, run, after);
                    if let Some(last) = batch.last() {
                        after = Some(last.time);
                        if sender.send(Bytes::from(render_batch(&batch))).await.is_err() {
                            return;
                        }
                    }
                    if over {
                        return;
                    }
                    if batch.len() < FOLLOW_BATCH {
                        break;
                    }
                }
                tokio::select! {
                    changed = changes.recv() => match changed {
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    event = events.recv() => match event {
                        Ok(event) if ends_follow(&event, &key.0, &key.1, restarts) => {
                            // What was written before the end is still sent.
                            let (batch, _) = state.logs.lines_after(&key, run, after);
                            let _ = sender.send(Bytes::from(render_batch(&batch))).await;
                            return;
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = sender.closed() => return,
                }
            }
        });
    } else {
        drop(sender);
    }
    Ok(hyper::Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(ChannelBody::new(body_receiver).boxed())
        .unwrap_or_else(|_| hyper::Response::new(http_body_util::Empty::new().boxed())))
}

/// The pod and container an admin path `{namespace}/{pod}[/{container}]` names (the pod's first
/// container when it names none).
fn admin_target(state: &AppState, path: &str) -> Result<(Arc<Value>, String), ApiError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (namespace, pod_name, container) = match parts.as_slice() {
        [namespace, pod] => (*namespace, *pod, None),
        [namespace, pod, container] => (*namespace, *pod, Some(*container)),
        _ => return Err(ApiError::NoRoute),
    };
    let pod = state.store.get(Kind::Pod, namespace, pod_name)?;
    let container = match container {
        Some(container) => container.to_string(),
        None => pod
            .pointer("/spec/containers/0/name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::BadRequest("the pod has no containers".into()))?
            .to_string(),
    };
    Ok((pod, container))
}

/// Handles `POST /_sim/logs/{namespace}/{pod}[/{container}]` with a text body.
pub fn append_from_admin(state: &AppState, path: &str, text: &str) -> Result<(), ApiError> {
    let (pod, container) = admin_target(state, path)?;
    state.logs.append(meta::uid(&pod), &container, text);
    Ok(())
}

/// Handles `POST /_sim/restart/{namespace}/{pod}[/{container}]`: the container exits with
/// `exit_code` and runs again. Answers the pod's new restartCount.
pub fn restart_from_admin(state: &AppState, path: &str, exit_code: i64) -> Result<u64, ApiError> {
    let (pod, container) = admin_target(state, path)?;
    if container_status(&pod, &container).and_then(|s| s.pointer("/state/running")).is_none() {
        return Err(ApiError::BadRequest(format!(
            "container {container:?} is not running; nothing to restart"
        )));
    }
    let uid = meta::uid(&pod).to_string();
    let key = ObjectKey::new(meta::meta_str(&pod, "namespace"), meta::name(&pod));
    let mut restarts = 0;
    // The status first, as a kubelet reports the exit before the new run prints: a follower that
    // sees its follow end and reads the pod then finds the restart.
    state.store.update_by_controller(Kind::Pod, &key, &uid, false, |pod| {
        restart_container(pod, &container, exit_code, &meta::now())
            .inspect(|count| restarts = *count)
            .is_some()
    });
    state.logs.restart(&uid, &container);
    Ok(restarts)
}

/// Records in a pod's status that a running container exited with `exit_code` and was started
/// again at `now`; answers its new restartCount, or `None` when it is not running.
fn restart_container(pod: &mut Value, container: &str, exit_code: i64, now: &str) -> Option<u64> {
    let statuses = pod.pointer_mut("/status/containerStatuses").and_then(Value::as_array_mut)?;
    let status = statuses.iter_mut().find(|s| s["name"] == container)?;
    let started = status.pointer("/state/running/startedAt")?.clone();
    let restarts = status.get("restartCount").and_then(Value::as_u64).unwrap_or(0) + 1;
    status["restartCount"] = json!(restarts);
    status["lastState"] = json!({"terminated": {
        "exitCode": exit_code,
        "reason": if exit_code == 0 { "Completed" } else { "Error" },
        "startedAt": started,
        "finishedAt": now,
        "containerID": status.get("containerID").cloned().unwrap_or(Value::Null),
    }});
    status["state"] = json!({"running": {"startedAt": now}});
    Some(restarts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> LogKey {
        ("uid".to_string(), "c".to_string())
    }

    fn texts(lines: &[LogLine]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    fn read(logs: &LogStore, request: LogRequest) -> Option<Vec<LogLine>> {
        logs.read(&key(), &request).map(|(lines, _, _)| lines)
    }

    #[test]
    fn tails_and_timestamps() {
        let logs = LogStore::default();
        logs.append("uid", "c", "one\ntwo\nthree");
        let lines = read(&logs, LogRequest { tail: Some(2), ..LogRequest::default() }).unwrap();
        assert_eq!(texts(&lines), ["two", "three"]);
        let rendered = render(&lines[0], true);
        assert!(rendered.ends_with("Z two\n"), "{rendered}");
        let (stamp, _) = rendered.split_once(' ').unwrap();
        assert_eq!(stamp.split_once('.').unwrap().1.len(), 10, "nine digits and the Z: {stamp}");
        assert_eq!(stamp.parse::<jiff::Timestamp>().unwrap(), lines[0].time);
        assert_eq!(logs.read(&("other".into(), "c".into()), &LogRequest::default()).unwrap().0.len(), 0);
    }

    #[test]
    fn times_strictly_increase_even_in_a_burst() {
        let logs = LogStore::default();
        let text: String = (0..100_000).map(|n| format!("line {n}\n")).collect();
        logs.append("uid", "c", &text);
        let lines = read(&logs, LogRequest::default()).unwrap();
        assert_eq!(lines.len(), 100_000);
        assert!(lines.windows(2).all(|pair| pair[0].time < pair[1].time));
        let tail = read(&logs, LogRequest { tail: Some(3), ..LogRequest::default() }).unwrap();
        assert_eq!(texts(&tail), ["line 99997", "line 99998", "line 99999"]);
    }

    #[test]
    fn since_selects_lines_at_or_after_a_time() {
        let logs = LogStore::default();
        logs.append("uid", "c", "a\nb\nc\nd");
        let all = read(&logs, LogRequest::default()).unwrap();
        let since = Some(all[2].time);
        assert_eq!(texts(&read(&logs, LogRequest { since, ..LogRequest::default() }).unwrap()), ["c", "d"]);
        let both = LogRequest { since, tail: Some(1), ..LogRequest::default() };
        assert_eq!(texts(&read(&logs, both).unwrap()), ["d"]);
        let (after, over) = logs.lines_after(&key(), 0, Some(all[1].time));
        assert_eq!((texts(&after), over), (vec!["c", "d"], false));
    }

    #[test]
    fn query_parameters_are_checked() {
        let now = jiff::Timestamp::from_second(1_000).unwrap();
        let parse = |query: &str| log_request(&Query::parse(Some(query)), now);
        let request = parse("previous=true&sinceSeconds=10&tailLines=5&timestamps=true&follow=1").unwrap();
        assert_eq!(
            request,
            LogRequest {
                previous: true,
                since: Some(jiff::Timestamp::from_second(990).unwrap()),
                tail: Some(5),
                timestamps: true,
                follow: true
            }
        );
        let at = parse("sinceTime=1970-01-01T00:10:00Z").unwrap();
        assert_eq!(at.since, Some(jiff::Timestamp::from_second(600).unwrap()));
        for bad in [
            "sinceSeconds=0",
            "sinceSeconds=x",
            "sinceTime=yesterday",
            "sinceSeconds=1&sinceTime=1970-01-01T00:00:00Z",
            "tailLines=-1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_restart_moves_the_log_to_previous() {
        let logs = LogStore::default();
        assert!(read(&logs, LogRequest { previous: true, ..LogRequest::default() }).is_none());
        logs.append("uid", "c", "first run");
        let (_, RunPosition { run, .. }, _) = logs.read(&key(), &LogRequest::default()).unwrap();
        logs.restart("uid", "c");
        logs.append("uid", "c", "second run");
        let previous = read(&logs, LogRequest { previous: true, ..LogRequest::default() }).unwrap();
        assert_eq!(texts(&previous), ["first run"]);
        assert_eq!(texts(&read(&logs, LogRequest::default()).unwrap()), ["second run"]);
        // A follower of the first run gets what is left of it, then is told it is over.
        let (rest, over) = logs.lines_after(&key(), run, None);
        assert_eq!((texts(&rest), over), (vec!["first run"], true));
    }

    #[test]
    fn a_restart_is_written_into_the_container_status() {
        let mut pod = json!({"status": {"containerStatuses": [{"name": "c", "restartCount": 0,
            "containerID": "containerd://x", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}});
        assert_eq!(restart_container(&mut pod, "c", 3, "2026-01-01T00:01:00Z"), Some(1));
        let status = &pod["status"]["containerStatuses"][0];
        assert_eq!(status["restartCount"], 1);
        assert_eq!(status["lastState"]["terminated"]["exitCode"], 3);
        assert_eq!(status["lastState"]["terminated"]["reason"], "Error");
        assert_eq!(status["lastState"]["terminated"]["startedAt"], "2026-01-01T00:00:00Z");
        assert_eq!(status["state"]["running"]["startedAt"], "2026-01-01T00:01:00Z");
        assert_eq!(restart_container(&mut pod, "other", 1, "t"), None);
    }

    #[test]
    fn follows_end_on_termination_restart_and_deletion() {
        let pod = |state: Value, restarts: u64| {
            json!({"metadata": {"uid": "uid"}, "status": {"containerStatuses": [
                {"name": "c", "restartCount": restarts, "state": state}]}})
        };
        let event = |event_type, object: Value| crate::store::Event {
            resource_version: 1,
            kind: Kind::Pod,
            namespace: "default".into(),
            event_type,
            object: Arc::new(object),
            previous: None,
        };
        let running = json!({"running": {}});
        assert!(!ends_follow(&event(EventType::Modified, pod(running.clone(), 0)), "uid", "c", 0));
        assert!(ends_follow(
            &event(EventType::Modified, pod(json!({"terminated": {"exitCode": 0}}), 0)),
            "uid",
            "c",
            0
        ));
        assert!(ends_follow(&event(EventType::Modified, pod(running.clone(), 1)), "uid", "c", 0));
        assert!(ends_follow(&event(EventType::Deleted, pod(running.clone(), 0)), "uid", "c", 0));
        assert!(!ends_follow(&event(EventType::Deleted, pod(running, 0)), "other", "c", 0));
    }

    #[test]
    fn containers_must_be_named_and_started() {
        let running = json!({"state": {"running": {}}});
        let pod = json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"containerStatuses": [
                {"name": "a", "state": running["state"]},
                {"name": "b", "state": {"waiting": {"reason": "ImagePullBackOff"}}}
            ]}
        });
        assert_eq!(container_for(&pod, Some("a"), false).unwrap(), "a");
        let unnamed = container_for(&pod, None, false).unwrap_err().to_string();
        assert_eq!(unnamed, "a container name must be specified for pod p, choose one of: [a b]");
        let waiting = container_for(&pod, Some("b"), false).unwrap_err().to_string();
        assert_eq!(waiting, "container \"b\" in pod \"p\" is waiting to start: ImagePullBackOff");
        assert_eq!(
            container_for(&pod, Some("b"), true).unwrap(),
            "b",
            "a previous run may be read while waiting"
        );
        assert!(container_for(&pod, Some("z"), false).is_err());
    }
}
