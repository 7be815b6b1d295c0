//! Waiting on Watch events instead of polling List: a Watch stream that keeps the view of the
//! processes it was told about, and waits, with a timeout, until an event (or the view after
//! it) satisfies a predicate.

use std::collections::BTreeMap;
use std::time::Duration;

use hydroplane::proto::{self, WatchEventType, process_service_client::ProcessServiceClient};
use tokio::time::Instant;
use tonic::transport::Channel;

/// How long a wait on a Watch may take. Generous for loaded machines; a hang still fails.
pub const WATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The processes a Watch has described, by name, as of its last event.
pub type View = BTreeMap<String, proto::ProcessInfo>;

/// A Watch stream and what it has said so far.
pub struct Watch {
    stream: tonic::Streaming<proto::WatchEvent>,
    view: View,
    synced: bool,
    /// The latest events, described, for failure messages.
    recent: Vec<String>,
}

impl Watch {
    /// Opens a Watch of what `request` selects.
    pub async fn open(client: &mut ProcessServiceClient<Channel>, request: proto::WatchRequest) -> Watch {
        Watch::new(client.watch(request).await.expect("the Watch call is accepted").into_inner())
    }

    /// Opens a Watch of everything.
    pub async fn all(client: &mut ProcessServiceClient<Channel>) -> Watch {
        Watch::open(client, proto::WatchRequest::default()).await
    }

    /// Opens a Watch of one process.
    pub async fn process(client: &mut ProcessServiceClient<Channel>, name: &str) -> Watch {
        Watch::open(client, proto::WatchRequest { process_name: Some(name.to_owned()), ..Default::default() })
            .await
    }

    /// Wraps a stream opened elsewhere (with another client, such as one presenting a token).
    pub fn new(stream: tonic::Streaming<proto::WatchEvent>) -> Watch {
        Watch { stream, view: View::new(), synced: false, recent: Vec::new() }
    }

    /// The next event, within [`WATCH_TIMEOUT`]; the view follows it.
    pub async fn next(&mut self) -> proto::WatchEvent {
        self.next_before(Instant::now() + WATCH_TIMEOUT, "the next event").await
    }

    async fn next_before(&mut self, deadline: Instant, what: &str) -> proto::WatchEvent {
        let event = match tokio::time::timeout_at(deadline, self.stream.message()).await {
            Ok(Ok(Some(event))) => event,
            Ok(Ok(None)) => panic!("the Watch ended before {what}; it said: {:?}", self.recent),
            Ok(Err(status)) => {
                panic!("the Watch failed before {what} ({status:?}); it said: {:?}", self.recent)
            }
            Err(_) => panic!("no Watch event {what} within {WATCH_TIMEOUT:?}; it said: {:?}", self.recent),
        };
        match event.r#type() {
            WatchEventType::Added | WatchEventType::Modified => {
                if let Some(process) = &event.process {
                    self.view.insert(process.process_name.clone(), process.clone());
                }
            }
            WatchEventType::Deleted => {
                if let Some(process) = &event.process {
                    self.view.remove(&process.process_name);
                }
            }
            WatchEventType::Synced => self.synced = true,
            WatchEventType::Reset => {
                self.view.clear();
                self.synced = false;
            }
            WatchEventType::Unspecified => {}
        }
        if self.recent.len() == 20 {
            self.recent.remove(0);
        }
        self.recent.push(describe(&event));
        event
    }

    /// Reads events until one satisfies `wanted` and returns it; panics, naming `what`, when
    /// none does within [`WATCH_TIMEOUT`].
    pub async fn until(
        &mut self,
        what: &str,
        mut wanted: impl FnMut(&proto::WatchEvent) -> bool,
    ) -> proto::WatchEvent {
        let deadline = Instant::now() + WATCH_TIMEOUT;
        loop {
            let event = self.next_before(deadline, what).await;
            if wanted(&event) {
                return event;
            }
        }
    }

    /// Reads events until one about `process` satisfies `wanted`; returns that process's state.
    pub async fn until_process(
        &mut self,
        process: &str,
        what: &str,
        mut wanted: impl FnMut(WatchEventType, &proto::ProcessInfo) -> bool,
    ) -> proto::ProcessInfo {
        let what = format!("{what} ({process})");
        let event = self
            .until(&what, |event| {
                event
                    .process
                    .as_ref()
                    .is_some_and(|info| info.process_name == process && wanted(event.r#type(), info))
            })
            .await;
        event.process.expect("the event has its process")
    }

    /// Reads events until the view, once the snapshot is complete (SYNCED), satisfies `wanted`.
    pub async fn until_view(&mut self, what: &str, mut wanted: impl FnMut(&View) -> bool) -> &View {
        let deadline = Instant::now() + WATCH_TIMEOUT;
        while !(self.synced && wanted(&self.view)) {
            self.next_before(deadline, what).await;
        }
        &self.view
    }

    /// Reads the snapshot (or the replay) up to SYNCED; returns the events before it.
    pub async fn until_synced(&mut self) -> Vec<proto::WatchEvent> {
        let deadline = Instant::now() + WATCH_TIMEOUT;
        let mut events = Vec::new();
        loop {
            let event = self.next_before(deadline, "SYNCED").await;
            if event.r#type() == WatchEventType::Synced {
                return events;
            }
            events.push(event);
        }
    }
}

/// An event in a few words: `ADDED web STARTING`, `SYNCED`.
pub fn describe(event: &proto::WatchEvent) -> String {
    let kind = event.r#type().as_str_name().trim_start_matches("WATCH_EVENT_TYPE_").to_owned();
    match &event.process {
        Some(process) => format!("{kind} {} {}", process.process_name, status_name(process.status())),
        None => kind,
    }
}

/// A status without its prefix: `RUNNING`.
pub fn status_name(status: proto::ProcessStatus) -> &'static str {
    status.as_str_name().trim_start_matches("PROCESS_STATUS_")
}
