//! Watch streams: newline-delimited JSON `WatchEvent`s over a chunked response.
//!
//! Each watch is a spawned task that feeds a bounded channel read by the response body; the
//! task ends when the client goes away (the send fails), when `timeoutSeconds` passes, when
//! the watcher falls too far behind the broadcast (like a real server closing a slow watcher),
//! or when fault injection says so. A too-old `resourceVersion` is answered, as real servers do,
//! with HTTP 200 and a single `ERROR` event carrying a 410 Expired Status.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::api::{AppState, Body};
use crate::error::ApiError;
use crate::resources::Kind;
use crate::selector::Filter;
use crate::store::{Event, EventType, WatchFrom};
use crate::table::{self, IncludeObject};

/// A response body fed by a channel of chunks.
pub struct ChannelBody {
    receiver: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    /// A body that yields each chunk received, ending when every sender is gone.
    pub fn new(receiver: mpsc::Receiver<Bytes>) -> ChannelBody {
        ChannelBody { receiver }
    }
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.receiver.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// Everything a watch request asked for.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    /// The kind watched.
    pub kind: Kind,
    /// The namespace, or all.
    pub namespace: Option<String>,
    /// Label and field selectors.
    pub filter: Filter,
    /// Where to start.
    pub from: WatchFrom,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `sendInitialEvents=true`: synthetic ADDED events, then a bookmark marking their end.
    pub send_initial_events: bool,
    /// `timeoutSeconds`, or the server default.
    pub timeout: Duration,
    /// Render events as one-row Tables, for `kubectl get -w`.
    pub table: Option<IncludeObject>,
}

#[derive(Serialize)]
struct WireEvent<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    object: &'a Value,
}

fn encode(event_type: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&WireEvent { event_type, object }).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark(kind: Kind, resource_version: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": resource_version.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    encode(
        "BOOKMARK",
        &json!({"kind": kind.info().kind, "apiVersion": kind.api_version(), "metadata": metadata}),
    )
}

/// How an event looks to a watcher with `filter`: an object entering the selection is ADDED,
/// one leaving it is DELETED, as real servers report.
fn visible(event: &Event, filter: &Filter) -> Option<EventType> {
    let now = filter.matches(&event.object);
    match event.event_type {
        EventType::Added | EventType::Deleted => now.then_some(event.event_type),
        EventType::Modified => {
            let before = event.previous.as_ref().map_or(now, |p| filter.matches(p));
            match (before, now) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            }
        }
    }
}

/// Starts a watch and returns its streaming response.
pub fn serve(state: &Arc<AppState>, request: WatchRequest) -> Result<hyper::Response<Body>, ApiError> {
    let (sender, receiver) = mpsc::channel::<Bytes>(256);
    let from = if request.send_initial_events { WatchFrom::Now } else { request.from };
    // Taken before the store subscription: a drop asked for after the store has answered
    // (`force_gone` then `drop_watches_now`) must end this watch even though its task has not
    // run yet, or it would go on from a version the forced 410 was meant to expire.
    let drop_signal = state.faults.drop_signal();
    match state.store.watch(request.kind, request.namespace.as_deref(), &request.filter, from) {
        Ok(subscription) => {
            let pump = Pump { state: state.clone(), request, sender, sent: 0, columns_sent: false };
            tokio::spawn(pump.run(subscription, drop_signal));
        }
        Err(ApiError::Gone(message)) => {
            let status = ApiError::Gone(message).to_status();
            // The channel is fresh and has room; a full channel is impossible here.
            let _ = sender.try_send(encode("ERROR", &status));
        }
        Err(other) => return Err(other),
    }
    let body = ChannelBody { receiver }.boxed();
    Ok(hyper::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(body)
        .unwrap_or_else(|_| hyper::Response::new(http_body_util::Empty::new().boxed())))
}

struct Pump {
    state: Arc<AppState>,
    request: WatchRequest,
    sender: mpsc::Sender<Bytes>,
    sent: u64,
    columns_sent: bool,
}

enum Flow {
    Continue,
    Stop,
}

impl Pump {
    async fn send_object(&mut self, event_type: EventType, object: &Value) -> Flow {
        let line = match self.request.table {
            Some(include) => {
                let table = table::watch_table(self.request.kind, object, !self.columns_sent, include);
                self.columns_sent = true;
                encode(event_type.as_str(), &table)
            }
            None => encode(event_type.as_str(), object),
        };
        if self.sender.send(line).await.is_err() {
            return Flow::Stop;
        }
        self.sent += 1;
        let limit = self.state.faults.close_watches_after();
        if limit > 0 && self.sent >= limit { Flow::Stop } else { Flow::Continue }
    }

    fn wanted(&self, event: &Event) -> bool {
        event.kind == self.request.kind
            && self.request.namespace.as_deref().is_none_or(|ns| event.namespace == ns)
    }

    async fn run(
        mut self,
        subscription: crate::store::Subscription,
        mut drop_signal: tokio::sync::watch::Receiver<u64>,
    ) {
        let mut receiver = subscription.receiver;
        let mut last_seen = subscription.floor;
        for object in &subscription.initial {
            if let Flow::Stop = self.send_object(EventType::Added, object).await {
                return;
            }
        }
        if self.request.send_initial_events
            && self.request.bookmarks
            && self.sender.send(bookmark(self.request.kind, last_seen, true)).await.is_err()
        {
            return;
        }
        for event in &subscription.replay {
            if let Some(event_type) = visible(event, &self.request.filter)
                && let Flow::Stop = self.send_object(event_type, &event.object).await
            {
                return;
            }
        }
        let interval = self.state.settings.bookmark_interval;
        let mut bookmarks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let deadline = tokio::time::sleep(self.request.timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                // The drop comes first: a change made after a drop was asked for must not be
                // delivered, since a test that drops watches and then writes relies on the
                // client resuming from a version older than its write.
                biased;
                _ = drop_signal.changed() => return,
                received = receiver.recv() => match received {
                    Ok(event) => {
                        if event.resource_version <= subscription.floor {
                            continue;
                        }
                        last_seen = event.resource_version;
                        if !self.wanted(&event) {
                            continue;
                        }
                        if let Some(event_type) = visible(&event, &self.request.filter)
                            && let Flow::Stop = self.send_object(event_type, &event.object).await {
                                return;
                            }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::info!(missed, "closing a watch that fell behind");
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = bookmarks.tick(), if self.request.bookmarks => {
                    // Only versions already delivered (or filtered out) are safe to bookmark.
                    if self.sender.send(bookmark(self.request.kind, last_seen, false)).await.is_err() {
                        return;
                    }
                }
                _ = &mut deadline => return,
                _ = self.sender.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::parse_labels;

    fn event(event_type: EventType, labels: Value, previous: Option<Value>) -> Event {
        Event {
            resource_version: 1,
            kind: Kind::Pod,
            namespace: "default".into(),
            event_type,
            object: Arc::new(json!({"metadata": {"labels": labels}})),
            previous: previous.map(|p| Arc::new(json!({"metadata": {"labels": p}}))),
        }
    }

    #[test]
    fn objects_entering_or_leaving_a_selection_are_added_or_deleted() {
        let filter = Filter { labels: parse_labels("app=web").unwrap(), ..Filter::default() };
        let web = json!({"app": "web"});
        let db = json!({"app": "db"});
        assert_eq!(visible(&event(EventType::Added, web.clone(), None), &filter), Some(EventType::Added));
        assert_eq!(visible(&event(EventType::Added, db.clone(), None), &filter), None);
        assert_eq!(
            visible(&event(EventType::Modified, web.clone(), Some(db.clone())), &filter),
            Some(EventType::Added)
        );
        assert_eq!(
            visible(&event(EventType::Modified, db.clone(), Some(web.clone())), &filter),
            Some(EventType::Deleted)
        );
        assert_eq!(
            visible(&event(EventType::Modified, web.clone(), Some(web)), &filter),
            Some(EventType::Modified)
        );
        assert_eq!(visible(&event(EventType::Modified, db.clone(), Some(db)), &filter), None);
    }

    /// A simulator's state with no tokens, no faults and no controllers.
    fn state() -> Arc<AppState> {
        let (refuse, _) = mpsc::unbounded_channel();
        let store = crate::store::Store::new(&crate::store::StoreSettings {
            nodes: 1,
            history_limit: 10,
            watch_buffer: 64,
            max_events: 0,
            ..Default::default()
        });
        let logs: Arc<crate::logs::LogStore> = Default::default();
        Arc::new(AppState {
            kubelet: crate::controllers::kubelet::Kubelet::new(
                store.clone(),
                logs.clone(),
                Duration::from_secs(10),
            ),
            store,
            auth: crate::auth::Authenticator::new(&[], &[], None),
            faults: Arc::new(crate::faults::Faults::new(Default::default(), refuse)),
            logs,
            settings: crate::api::ApiSettings {
                bookmark_interval: Duration::from_secs(3600),
                server_address: "127.0.0.1:1".into(),
                apf_headers: true,
            },
        })
    }

    #[tokio::test]
    async fn a_drop_asked_for_before_the_watch_task_runs_still_ends_it() {
        let state = state();
        let request = WatchRequest {
            kind: Kind::Pod,
            namespace: None,
            filter: Filter::default(),
            from: WatchFrom::After(state.store.resource_version()),
            bookmarks: false,
            send_initial_events: false,
            timeout: Duration::from_secs(3600),
            table: None,
        };
        // On this single-threaded runtime the watch's task has not run when `serve` returns,
        // which is the window a forced 410 followed by a drop falls into.
        let response = serve(&state, request).unwrap();
        state.faults.drop_watches_now();
        let body = response.into_body().collect();
        let ended = tokio::time::timeout(Duration::from_secs(5), body).await;
        assert!(ended.is_ok(), "the watch outlived the drop");
    }

    #[test]
    fn events_are_single_json_lines() {
        let line = encode("ADDED", &json!({"a": 1}));
        assert_eq!(&line[..], b"{\"type\":\"ADDED\",\"object\":{\"a\":1}}\n");
        let mark = bookmark(Kind::Pod, 42, true);
        let parsed: Value = serde_json::from_slice(&mark).unwrap();
        assert_eq!(parsed["object"]["metadata"]["resourceVersion"], "42");
        assert_eq!(parsed["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    }
}
