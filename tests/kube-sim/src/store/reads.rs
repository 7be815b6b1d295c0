//! Reads: one object, a page of a list, and the queries the simulated controllers make (pods
//! to start, their addresses, an owner's dependents).

use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{ObjectKey, Store, scope};
use crate::error::ApiError;
use crate::meta;
use crate::resources::Kind;
use crate::selector::Filter;

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    /// The matching objects.
    pub items: Vec<Arc<Value>>,
    /// The list's resourceVersion.
    pub resource_version: u64,
    /// The key after which the next page starts, when there is one.
    pub next_start: Option<ObjectKey>,
    /// How many matching objects follow this page, when known.
    pub remaining: Option<u64>,
}

impl Store {
    /// Reads one object.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        let inner = self.lock();
        inner
            .table(kind)
            .and_then(|t| t.get(&ObjectKey::new(scope(kind, namespace), name)))
            .map(|e| e.object.clone())
            .ok_or_else(|| ApiError::NotFound { kind, name: name.to_string() })
    }

    /// Lists objects of `kind` in `namespace` (all when `None`) that pass `filter`, at most
    /// `limit` of them, starting after `start_after`, `served_before` objects having been listed
    /// by the pages before.
    ///
    /// A page costs its own objects plus the search for the next match, never the rest of the
    /// namespace: as on a real server, `remaining` is given only without selectors (the
    /// namespace's count less what was served, an estimate when objects came or went between
    /// pages), and left unset with them.
    pub fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        filter: &Filter,
        limit: Option<usize>,
        start_after: Option<&ObjectKey>,
        served_before: u64,
    ) -> ListPage {
        let inner = self.lock();
        let resource_version = inner.resource_version;
        let Some(table) = inner.table(kind) else {
            return ListPage { items: Vec::new(), resource_version, next_start: None, remaining: None };
        };
        let namespace = namespace.filter(|_| kind.info().namespaced);
        let lower = match (start_after, namespace) {
            (Some(key), _) => std::ops::Bound::Excluded(key.clone()),
            (None, Some(namespace)) => std::ops::Bound::Included(ObjectKey::new(namespace, "")),
            (None, None) => std::ops::Bound::Unbounded,
        };
        let mut matching = table
            .range((lower, std::ops::Bound::Unbounded))
            .take_while(|(key, _)| namespace.is_none_or(|ns| key.namespace == ns))
            .filter(|(_, entry)| filter.matches(&entry.object));
        let mut items = Vec::new();
        let limit = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let mut last_key = None;
        for (key, entry) in matching.by_ref() {
            items.push(entry.object.clone());
            if items.len() >= limit {
                last_key = Some(key.clone());
                break;
            }
        }
        let (next_start, remaining) = match last_key {
            Some(key) if matching.next().is_some() => {
                let remaining =
                    (filter.labels.is_empty() && filter.fields.requirements.is_empty()).then(|| {
                        let served = served_before + items.len() as u64;
                        // At least the one just found follows, whatever the estimate says.
                        (inner.count(kind, namespace) as u64).saturating_sub(served).max(1)
                    });
                (Some(key), remaining)
            }
            _ => (None, None),
        };
        ListPage { items, resource_version, next_start, remaining }
    }

    /// The pod IP allocated to a pod and its node's InternalIP.
    pub fn pod_addresses(&self, pod_uid: &str, node_name: &str) -> Option<(Ipv4Addr, String)> {
        let inner = self.lock();
        let pod_ip = *inner.pod_ips.get(pod_uid)?;
        let node = inner.table(Kind::Node)?.get(&ObjectKey::new("", node_name))?;
        let host_ip = node
            .object
            .pointer("/status/addresses")
            .and_then(Value::as_array)?
            .iter()
            .find(|a| a["type"] == "InternalIP")?
            .get("address")?
            .as_str()?
            .to_string();
        Some((pod_ip, host_ip))
    }

    /// The objects owned by the object with `owner_uid`.
    pub fn dependents_of(&self, owner_uid: &str) -> Vec<(Kind, Arc<Value>)> {
        let inner = self.lock();
        inner
            .dependents
            .get(owner_uid)
            .into_iter()
            .flatten()
            .filter_map(|(kind, key)| inner.entry(*kind, key).map(|object| (*kind, object)))
            .collect()
    }

    /// Every pod the simulated kubelet has yet to start: (key, uid, node).
    pub fn pending_pods(&self) -> Vec<(ObjectKey, String, String)> {
        self.lock().pending_pods()
    }

    /// The kubelet's and garbage collector's queues, from now on fed with every bound pod
    /// created and every deleted owner; taken once, as the controllers start.
    pub fn controller_queues(&self) -> super::ControllerQueues {
        let mut inner = self.lock();
        let (pod_sender, pods_to_start) = tokio::sync::mpsc::unbounded_channel();
        let (owner_sender, deleted_owners) = tokio::sync::mpsc::unbounded_channel();
        inner.pods_to_start = Some(pod_sender);
        inner.deleted_owners = Some(owner_sender);
        super::ControllerQueues { pending: inner.pending_pods(), pods_to_start, deleted_owners }
    }
}

impl super::Inner {
    /// See [`Store::pending_pods`].
    fn pending_pods(&self) -> Vec<(ObjectKey, String, String)> {
        self.table(Kind::Pod)
            .into_iter()
            .flat_map(|t| t.iter())
            .filter(|(_, e)| {
                !e.status_owned_by_client && e.object.pointer("/status/phase") == Some(&json!("Pending"))
            })
            .filter_map(|(key, e)| {
                let node = e.object.pointer("/spec/nodeName")?.as_str()?.to_string();
                Some((key.clone(), meta::uid(&e.object).to_string(), node))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::{pod, store};

    #[test]
    fn list_pages_and_filters() {
        let store = store();
        for index in 0..5 {
            store.create(Kind::Pod, "default", pod(&format!("p{index}"))).unwrap();
        }
        let everything = Filter::default();
        let first = store.list(Kind::Pod, Some("default"), &everything, Some(2), None, 0);
        assert_eq!(first.items.len(), 2);
        assert_eq!(first.remaining, Some(3));
        let second =
            store.list(Kind::Pod, Some("default"), &everything, Some(10), first.next_start.as_ref(), 2);
        assert_eq!(second.items.len(), 3);
        assert!(second.next_start.is_none());
        let none = Filter { labels: crate::selector::parse_labels("app=db").unwrap(), ..Filter::default() };
        assert!(store.list(Kind::Pod, None, &none, None, None, 0).items.is_empty());
        let selected =
            Filter { labels: crate::selector::parse_labels("app=web").unwrap(), ..Filter::default() };
        let page = store.list(Kind::Pod, Some("default"), &selected, Some(2), None, 0);
        assert!(page.next_start.is_some());
        assert_eq!(page.remaining, None, "a real server leaves the count unset with selectors");
        let last = store.list(Kind::Pod, Some("default"), &selected, Some(3), page.next_start.as_ref(), 2);
        assert_eq!((last.items.len(), last.next_start), (3, None));
    }
}
