//! Container logs behind `pods/{name}/log`: tests append lines through
//! `POST /_sim/logs/{namespace}/{pod}[/{container}]` (the body is text), and clients read them
//! as from a kubelet, with `container`, `tailLines`, `timestamps` and `follow`.
//!
//! Logs belong to a pod instance (its UID), so a new pod with an old name starts empty. A
//! container that has not started answers 400 "is waiting to start", as real servers do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

use crate::api::{AppState, Body, Query};
use crate::error::ApiError;
use crate::meta;
use crate::resources::Kind;
use crate::store::EventType;
use crate::watch::ChannelBody;

/// One stored log line.
#[derive(Debug, Clone)]
struct LogLine {
    time: String,
    text: String,
}

/// Which container's log: (pod UID, container name).
type LogKey = (String, String);

/// Every container's log lines, and a feed of new ones for `follow`.
pub struct LogStore {
    lines: Mutex<HashMap<LogKey, Vec<LogLine>>>,
    sender: broadcast::Sender<Arc<(LogKey, LogLine)>>,
}

impl Default for LogStore {
    fn default() -> Self {
        let (sender, _) = broadcast::channel(4096);
        LogStore { lines: Mutex::new(HashMap::new()), sender }
    }
}

impl LogStore {
    /// Appends `text` (split into lines) to a container's log.
    pub fn append(&self, pod_uid: &str, container: &str, text: &str) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let log = lines.entry((pod_uid.to_string(), container.to_string())).or_default();
        for text in text.lines() {
            let line = LogLine { time: meta::now(), text: text.to_string() };
            log.push(line.clone());
            // Nobody following is fine.
            let _ = self.sender.send(Arc::new(((pod_uid.to_string(), container.to_string()), line)));
        }
    }

    /// The last `tail` lines (all when `None`) and a receiver of later ones, taken together.
    fn read(
        &self,
        key: &LogKey,
        tail: Option<usize>,
    ) -> (Vec<LogLine>, broadcast::Receiver<Arc<(LogKey, LogLine)>>) {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let receiver = self.sender.subscribe();
        let all = lines.get(key).cloned().unwrap_or_default();
        let skip = tail.map_or(0, |tail| all.len().saturating_sub(tail));
        (all.into_iter().skip(skip).collect(), receiver)
    }
}

fn render(line: &LogLine, timestamps: bool) -> String {
    if timestamps { format!("{} {}\n", line.time, line.text) } else { format!("{}\n", line.text) }
}

/// Picks the container a log request means, with the API server's errors.
fn container_for(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
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
    let waiting = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .and_then(|statuses| statuses.iter().find(|s| s["name"] == container.as_str()))
        .map_or(Some("ContainerCreating"), |status| {
            status.pointer("/state/waiting/reason").and_then(Value::as_str)
        });
    if let Some(reason) = waiting {
        return Err(ApiError::BadRequest(format!(
            "container \"{container}\" in pod \"{pod_name}\" is waiting to start: {reason}"
        )));
    }
    Ok(container)
}

/// Answers `GET pods/{name}/log`.
pub fn serve(state: &Arc<AppState>, pod: &Value, query: &Query) -> Result<hyper::Response<Body>, ApiError> {
    let container = container_for(pod, query.get("container"))?;
    let tail = match query.get("tailLines") {
        Some(tail) => Some(
            tail.parse::<usize>().map_err(|_| ApiError::BadRequest(format!("invalid tailLines {tail:?}")))?,
        ),
        None => None,
    };
    let timestamps = matches!(query.get("timestamps"), Some("true" | "1"));
    let follow = matches!(query.get("follow"), Some("true" | "1"));
    let key = (meta::uid(pod).to_string(), container);
    let (lines, mut receiver) = state.logs.read(&key, tail);
    let text: String = lines.iter().map(|line| render(line, timestamps)).collect();
    let (sender, body_receiver) = mpsc::channel::<Bytes>(64);
    // The channel is fresh; the first chunk always fits.
    let _ = sender.try_send(Bytes::from(text));
    if follow {
        let mut events = state.store.subscribe();
        let pod_uid = key.0.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    received = receiver.recv() => match received {
                        Ok(entry) if entry.0 == key => {
                            if sender.send(Bytes::from(render(&entry.1, timestamps))).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                    },
                    event = events.recv() => match event {
                        Ok(event) if event.kind == Kind::Pod && event.event_type == EventType::Deleted && meta::uid(&event.object) == pod_uid => return,
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

/// Handles `POST /_sim/logs/{namespace}/{pod}[/{container}]` with a text body.
pub fn append_from_admin(state: &AppState, path: &str, text: &str) -> Result<(), ApiError> {
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
    state.logs.append(meta::uid(&pod), &container, text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tails_and_timestamps() {
        let logs = LogStore::default();
        logs.append("uid", "c", "one\ntwo\nthree");
        let key = ("uid".to_string(), "c".to_string());
        let (lines, _) = logs.read(&key, Some(2));
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["two", "three"]);
        assert!(render(&lines[0], true).ends_with("Z two\n"));
        assert_eq!(logs.read(&("other".into(), "c".into()), None).0.len(), 0);
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
        assert_eq!(container_for(&pod, Some("a")).unwrap(), "a");
        let unnamed = container_for(&pod, None).unwrap_err().to_string();
        assert_eq!(unnamed, "a container name must be specified for pod p, choose one of: [a b]");
        let waiting = container_for(&pod, Some("b")).unwrap_err().to_string();
        assert_eq!(waiting, "container \"b\" in pod \"p\" is waiting to start: ImagePullBackOff");
        assert!(container_for(&pod, Some("z")).is_err());
    }
}
