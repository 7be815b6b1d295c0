//! resourceVersions and the event history: the one counter every change moves on, the ring
//! of recent events a watch may resume from, the broadcast of new ones, and which versions have
//! expired (410 Gone).

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::{Inner, Store};
use crate::error::ApiError;
use crate::meta;
use crate::resources::Kind;
use crate::selector::Filter;

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A new object.
    Added,
    /// A changed object.
    Modified,
    /// A removed object (carrying its last state).
    Deleted,
}

impl EventType {
    /// The wire name: `ADDED`, `MODIFIED`, `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug)]
pub struct Event {
    /// The resourceVersion the change produced.
    pub resource_version: u64,
    /// The kind of the object.
    pub kind: Kind,
    /// The object's namespace.
    pub namespace: String,
    /// What happened.
    pub event_type: EventType,
    /// The object after the change (before it, for deletions).
    pub object: Arc<Value>,
    /// The object before a modification, so watchers can tell an object leaving their selector.
    pub previous: Option<Arc<Value>>,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// Synthetic ADDED events for the current state, then changes (resourceVersion unset or 0).
    Now,
    /// Every change after this resourceVersion, or 410 Gone when it is older than the history.
    After(u64),
}

/// A started watch: what to send first, and the live feed.
pub struct Subscription {
    /// Objects to send as synthetic ADDED events (for [`WatchFrom::Now`]).
    pub initial: Vec<Arc<Value>>,
    /// Kept events after the requested resourceVersion (for [`WatchFrom::After`]).
    pub replay: Vec<Arc<Event>>,
    /// New events; those at or below `floor` are already covered above.
    pub receiver: broadcast::Receiver<Arc<Event>>,
    /// Events from `receiver` with a resourceVersion at or below this are skipped.
    pub floor: u64,
}

impl Store {
    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    /// A receiver of every future event, for controllers.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }

    /// Starts a watch on `kind` in `namespace` (all when `None`).
    pub fn watch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        filter: &Filter,
        from: WatchFrom,
    ) -> Result<Subscription, ApiError> {
        let inner = self.lock();
        let namespace = namespace.filter(|_| kind.info().namespaced);
        let receiver = inner.sender.subscribe();
        match from {
            WatchFrom::Now => {
                let initial = inner
                    .table(kind)
                    .into_iter()
                    .flat_map(|t| t.iter())
                    .filter(|(key, _)| namespace.is_none_or(|ns| key.namespace == ns))
                    .filter(|(_, entry)| filter.matches(&entry.object))
                    .map(|(_, entry)| entry.object.clone())
                    .collect();
                Ok(Subscription { initial, replay: Vec::new(), receiver, floor: inner.resource_version })
            }
            WatchFrom::After(version) => {
                if version < inner.min_resumable {
                    return Err(ApiError::Gone(format!(
                        "too old resource version: {version} ({})",
                        inner.min_resumable
                    )));
                }
                let replay = inner
                    .history
                    .iter()
                    .filter(|e| e.resource_version > version && e.kind == kind)
                    .filter(|e| namespace.is_none_or(|ns| e.namespace == ns))
                    .cloned()
                    .collect();
                Ok(Subscription {
                    initial: Vec::new(),
                    replay,
                    receiver,
                    floor: inner.resource_version.max(version),
                })
            }
        }
    }

    /// Forgets the event history and moves the counter on, so every watch resuming from a
    /// version seen so far gets 410 Gone, while a fresh list gives a version that works.
    pub fn force_gone(&self) -> u64 {
        let mut inner = self.lock();
        inner.history.clear();
        inner.resource_version += 1;
        inner.min_resumable = inner.resource_version;
        inner.resource_version
    }
}

impl Inner {
    /// Moves the global resourceVersion on, as every change does, and stamps `object` with it.
    pub(super) fn next_version(&mut self, object: &mut Value) {
        self.resource_version += 1;
        meta::metadata_mut(object).insert("resourceVersion".into(), json!(self.resource_version.to_string()));
    }

    /// Records a change made at the current resourceVersion and broadcasts it; events beyond
    /// the history limit fall off, and with them the versions a watch may resume from.
    pub(super) fn emit(
        &mut self,
        kind: Kind,
        namespace: &str,
        event_type: EventType,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        let event = Arc::new(Event {
            resource_version: self.resource_version,
            kind,
            namespace: namespace.to_string(),
            event_type,
            object,
            previous,
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.min_resumable = self.min_resumable.max(dropped.resource_version);
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.sender.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::{pod, store};

    #[test]
    fn watches_resume_from_history_or_report_gone() {
        let store = store();
        let start = store.resource_version();
        store.create(Kind::Pod, "default", pod("a")).unwrap();
        let subscription =
            store.watch(Kind::Pod, Some("default"), &Filter::default(), WatchFrom::After(start)).unwrap();
        assert_eq!(subscription.replay.len(), 1);
        for index in 0..10 {
            store
                .create(Kind::Secret, "default", json!({"metadata": {"name": format!("s{index}")}}))
                .unwrap();
        }
        assert!(matches!(
            store.watch(Kind::Pod, None, &Filter::default(), WatchFrom::After(start)),
            Err(ApiError::Gone(_))
        ));
        let now = store.force_gone();
        assert!(matches!(
            store.watch(Kind::Pod, None, &Filter::default(), WatchFrom::After(now - 1)),
            Err(ApiError::Gone(_))
        ));
        assert!(store.watch(Kind::Pod, None, &Filter::default(), WatchFrom::After(now)).is_ok());
    }
}
