//! Deletes: one object (with preconditions, finalizers and the propagation policy), a
//! collection, and garbage collection of dependents whose ownerReferences point at deleted
//! owners.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{EventType, Inner, ObjectKey, Store, scope};
use crate::admission;
use crate::error::ApiError;
use crate::meta;
use crate::resources::Kind;
use crate::selector::Filter;

/// How dependents are treated when their owner is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Delete the owner now; the garbage collector removes dependents shortly after.
    #[default]
    Background,
    /// Delete dependents first, then the owner.
    Foreground,
    /// Keep dependents, removing their owner references.
    Orphan,
}

/// Options of a delete request.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// The propagation policy; `None` takes the kind's default
    /// ([`Kind::default_propagation`]: Jobs orphan, everything else is background).
    pub propagation: Option<Propagation>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
}

impl Store {
    /// Deletes an object, honouring finalizers, preconditions and the propagation policy.
    pub fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        let mut inner = self.lock();
        inner.delete(kind, &ObjectKey::new(scope(kind, namespace), name), options)
    }

    /// Deletes every object of `kind` in `namespace` (all when `None`) that passes `filter`.
    pub fn delete_collection(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        filter: &Filter,
        options: &DeleteOptions,
    ) -> Result<Vec<Arc<Value>>, ApiError> {
        let page = self.list(kind, namespace, filter, None, None, 0);
        let mut inner = self.lock();
        let mut deleted = Vec::new();
        for object in page.items {
            let key = ObjectKey::new(scope(kind, meta::meta_str(&object, "namespace")), meta::name(&object));
            match inner.delete(kind, &key, options) {
                Ok(object) => deleted.push(object),
                Err(ApiError::NotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(deleted)
    }

    /// Garbage-collects the dependents of a deleted owner: a dependent whose owners are all
    /// gone is deleted (in the background, so its own dependents follow); one with a living
    /// owner just loses the dangling reference.
    pub fn collect_garbage(&self, owner_uid: &str) {
        let mut inner = self.lock();
        let Some(dependents) = inner.dependents.get(owner_uid).cloned() else { return };
        for (kind, key) in dependents {
            inner.collect_dependent(kind, &key);
        }
    }
}

impl Inner {
    /// An API delete: checks the preconditions, applies the propagation policy, then marks
    /// the object (when finalizers hold it) or removes it.
    fn delete(
        &mut self,
        kind: Kind,
        key: &ObjectKey,
        options: &DeleteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        let current =
            self.entry(kind, key).ok_or_else(|| ApiError::NotFound { kind, name: key.name.clone() })?;
        if let Some(uid) = &options.uid
            && uid != meta::uid(&current)
        {
            return Err(ApiError::Conflict {
                kind,
                name: key.name.clone(),
                detail: format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta::uid(&current)
                ),
            });
        }
        if let Some(version) = &options.resource_version
            && version != meta::meta_str(&current, "resourceVersion")
        {
            return Err(ApiError::Conflict {
                kind,
                name: key.name.clone(),
                detail: format!(
                    "Precondition failed: ResourceVersion in precondition: {version}, ResourceVersion in object meta: {}",
                    meta::meta_str(&current, "resourceVersion")
                ),
            });
        }
        if kind == Kind::Namespace && matches!(key.name.as_str(), "default" | "kube-system" | "kube-public") {
            return Err(ApiError::Forbidden {
                kind: Some(kind),
                name: key.name.clone(),
                message: format!(
                    "namespaces \"{}\" is forbidden: this namespace may not be deleted",
                    key.name
                ),
            });
        }
        let uid = meta::uid(&current).to_string();
        match options.propagation.unwrap_or(kind.default_propagation()) {
            Propagation::Orphan => {
                for (dependent_kind, dependent_key) in self.dependents.get(&uid).cloned().unwrap_or_default()
                {
                    if let Some(object) = self.entry(dependent_kind, &dependent_key) {
                        let mut object = (*object).clone();
                        remove_owner_references(&mut object, |owner| owner == uid);
                        let _ = self.write(dependent_kind, &dependent_key, object, false);
                    }
                }
            }
            Propagation::Foreground => {
                for (dependent_kind, dependent_key) in self.dependents.get(&uid).cloned().unwrap_or_default()
                {
                    let _ = self.delete(dependent_kind, &dependent_key, options);
                }
            }
            Propagation::Background => {}
        }
        if kind == Kind::Namespace {
            for contained_kind in Kind::ALL.into_iter().filter(|k| k.info().namespaced) {
                let keys: Vec<ObjectKey> = self
                    .tables
                    .get(&contained_kind)
                    .map(|t| t.keys().filter(|k| k.namespace == key.name).cloned().collect())
                    .unwrap_or_default();
                for contained in keys {
                    let _ = self.remove(contained_kind, &contained);
                }
            }
        }
        let has_finalizers =
            current.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
        if has_finalizers && kind != Kind::Namespace {
            if current.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(current);
            }
            let mut marked = (*current).clone();
            let metadata = meta::metadata_mut(&mut marked);
            metadata.insert("deletionTimestamp".into(), json!(meta::now()));
            metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
            return self.write(kind, key, marked, false);
        }
        self.remove(kind, key)
    }

    /// Removes an object at once, releasing its addresses and emitting DELETED.
    pub(super) fn remove(&mut self, kind: Kind, key: &ObjectKey) -> Result<Arc<Value>, ApiError> {
        let entry = self
            .tables
            .get_mut(&kind)
            .and_then(|t| t.remove(key))
            .ok_or_else(|| ApiError::NotFound { kind, name: key.name.clone() })?;
        let old = entry.object;
        if let Some(count) = self.counts.get_mut(&(kind, key.namespace.clone())) {
            *count = count.saturating_sub(1);
        }
        self.index(kind, key, &old, false);
        if let Some(queue) = &self.deleted_owners
            && self.dependents.contains_key(meta::uid(&old))
        {
            // A closed queue means the collector is gone, as when the runtime stops.
            let _ = queue.send(meta::uid(&old).to_string());
        }
        admission::release(kind, &old, &mut self.admission_context());
        // Usually nothing else holds the object any more (an expiring Event, a pod whose
        // watch events have left the history): it is then changed in place, not copied.
        let mut last = Arc::unwrap_or_clone(old);
        self.next_version(&mut last);
        let metadata = meta::metadata_mut(&mut last);
        if kind == Kind::Pod && !metadata.contains_key("deletionTimestamp") {
            metadata.insert("deletionTimestamp".into(), json!(meta::now()));
            metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
        }
        let last = Arc::new(last);
        self.emit(kind, &key.namespace, EventType::Deleted, last.clone(), None);
        Ok(last)
    }

    /// Deletes a dependent none of whose owners exist, or drops its references to dead owners.
    fn collect_dependent(&mut self, kind: Kind, key: &ObjectKey) {
        let Some(object) = self.entry(kind, key) else { return };
        let owners = meta::owner_uids(&object);
        let living: Vec<&String> = owners.iter().filter(|uid| self.by_uid.contains_key(*uid)).collect();
        if living.is_empty() {
            // The collector deletes in the background whatever the dependent's kind, as the
            // real one does: a Job owned by a deleted object takes its pods with it.
            let background =
                DeleteOptions { propagation: Some(Propagation::Background), ..Default::default() };
            let _ = self.delete(kind, key, &background);
        } else if living.len() < owners.len() {
            let living: Vec<String> = living.into_iter().cloned().collect();
            let mut object = (*object).clone();
            remove_owner_references(&mut object, |owner| !living.iter().any(|l| l == owner));
            let _ = self.write(kind, key, object, false);
        }
    }
}

/// Drops the ownerReferences whose UID `remove` picks (and the field, when none remain).
fn remove_owner_references(object: &mut Value, remove: impl Fn(&str) -> bool) {
    if let Some(references) = object.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut) {
        references.retain(|r| !remove(r.get("uid").and_then(Value::as_str).unwrap_or_default()));
        if references.is_empty() {
            meta::metadata_mut(object).remove("ownerReferences");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::PatchType;
    use crate::store::WriteTarget;
    use crate::store::fixtures::{pod, store};

    #[test]
    fn deletion_propagates_to_dependents() {
        let store = store();
        let owner = store.create(Kind::Pod, "default", pod("owner")).unwrap();
        let reference =
            json!([{"apiVersion": "v1", "kind": "Pod", "name": "owner", "uid": meta::uid(&owner)}]);
        let dependent = json!({"metadata": {"name": "dep", "ownerReferences": reference}, "spec": {"ports": [{"port": 80}]}});
        store.create(Kind::Service, "default", dependent.clone()).unwrap();
        store
            .delete(
                Kind::Pod,
                "default",
                "owner",
                &DeleteOptions { propagation: Some(Propagation::Foreground), ..Default::default() },
            )
            .unwrap();
        assert!(store.get(Kind::Service, "default", "dep").is_err());

        let owner = store.create(Kind::Pod, "default", pod("owner")).unwrap();
        let mut dependent = dependent;
        dependent["metadata"]["ownerReferences"][0]["uid"] = json!(meta::uid(&owner));
        store.create(Kind::Service, "default", dependent).unwrap();
        store.delete(Kind::Pod, "default", "owner", &DeleteOptions::default()).unwrap();
        assert!(
            store.get(Kind::Service, "default", "dep").is_ok(),
            "background deletion is the collector's job"
        );
        store.collect_garbage(meta::uid(&owner));
        assert!(store.get(Kind::Service, "default", "dep").is_err());
    }

    #[test]
    fn finalizers_delay_deletion() {
        let store = store();
        let mut object = pod("a");
        object["metadata"]["finalizers"] = json!(["example.com/hold"]);
        store.create(Kind::Pod, "default", object).unwrap();
        let marked = store.delete(Kind::Pod, "default", "a", &DeleteOptions::default()).unwrap();
        assert!(marked.pointer("/metadata/deletionTimestamp").is_some());
        assert!(store.get(Kind::Pod, "default", "a").is_ok());
        store
            .patch(
                Kind::Pod,
                "default",
                "a",
                PatchType::Merge,
                &json!({"metadata": {"finalizers": null}}),
                WriteTarget::Main,
            )
            .unwrap();
        assert!(store.get(Kind::Pod, "default", "a").is_err());
    }
}
