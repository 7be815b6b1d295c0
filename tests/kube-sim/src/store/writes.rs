//! Writes: create, update (PUT), patch, and the controllers' writes. Each checks the object's
//! type, version and validity, keeps what the client may not change (status, server-set
//! metadata, immutable fields), runs admission, and stores the result with one new version.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Entry, EventType, Inner, ObjectKey, Store, scope};
use crate::admission;
use crate::error::{ApiError, FieldError};
use crate::meta;
use crate::patch::{self, PatchType};
use crate::resources::Kind;
use crate::validation;

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteTarget {
    /// The main resource: status changes are ignored for kinds with a status subresource.
    Main,
    /// The `status` subresource: only status changes are kept.
    Status,
}

impl Store {
    /// Creates an object in `namespace` (ignored for cluster-scoped kinds).
    pub fn create(&self, kind: Kind, namespace: &str, object: Value) -> Result<Arc<Value>, ApiError> {
        // What needs no other object is done before the lock is taken: every other request
        // waits while it is held.
        let prepared = Prepared::new(kind, namespace, object)?;
        self.lock().create(kind, prepared)
    }

    /// Replaces an object (PUT), or its status.
    pub fn update(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        object: Value,
        target: WriteTarget,
    ) -> Result<Arc<Value>, ApiError> {
        let mut inner = self.lock();
        let key = ObjectKey::new(scope(kind, namespace), name);
        if meta::name(&object) != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta::name(&object)
            )));
        }
        inner.update(kind, &key, object, target, true)
    }

    /// Applies a patch to an object or its status.
    pub fn patch(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        patch_type: PatchType,
        patch_body: &Value,
        target: WriteTarget,
    ) -> Result<Arc<Value>, ApiError> {
        let mut inner = self.lock();
        let key = ObjectKey::new(scope(kind, namespace), name);
        let current =
            inner.entry(kind, &key).ok_or_else(|| ApiError::NotFound { kind, name: name.to_string() })?;
        let mut patched = (*current).clone();
        // A patch without a resourceVersion applies to whatever is current; one with it is a
        // precondition, as on a real server.
        meta::metadata_mut(&mut patched).remove("resourceVersion");
        patch::apply(patch_type, &mut patched, patch_body).map_err(|error| match error {
            patch::PatchError::Malformed(message) => ApiError::BadRequest(message),
            other => ApiError::Invalid {
                kind,
                name: name.to_string(),
                causes: vec![FieldError::invalid("patch", Value::Null, other.to_string())],
            },
        })?;
        if meta::name(&patched) != name {
            return Err(ApiError::BadRequest("metadata.name may not be changed by a patch".into()));
        }
        inner.update(kind, &key, patched, target, true)
    }

    /// Changes an object on behalf of a controller. `change` returns whether it changed
    /// anything. Does nothing when the object is gone, has another UID, or (with
    /// `respect_client_status`) a client owns its status. Returns the new object when written.
    ///
    /// The copy and the change are made outside the lock, which every other request waits on;
    /// the write goes in only if the object is still the one copied, else `change` runs again
    /// on the newer one.
    pub fn update_by_controller(
        &self,
        kind: Kind,
        key: &ObjectKey,
        expected_uid: &str,
        respect_client_status: bool,
        mut change: impl FnMut(&mut Value) -> bool,
    ) -> Option<Arc<Value>> {
        let mut current = self.lock().controllable(kind, key, expected_uid, respect_client_status)?;
        loop {
            let mut object = (*current).clone();
            if !change(&mut object) {
                return None;
            }
            let mut inner = self.lock();
            let now = inner.controllable(kind, key, expected_uid, respect_client_status)?;
            if Arc::ptr_eq(&now, &current) {
                return inner.write(kind, key, object, false).ok();
            }
            drop(inner);
            current = now;
        }
    }
}

impl Store {
    /// Binds the pods the scheduler could not place, where a node now fits (one became Ready or
    /// was uncordoned), as the real scheduler retries them; answers how many were bound.
    pub fn schedule_unbound_pods(&self) -> usize {
        let mut inner = self.lock();
        let unbound: Vec<ObjectKey> = inner
            .table(Kind::Pod)
            .into_iter()
            .flat_map(|t| t.iter())
            .filter(|(_, e)| {
                !e.status_owned_by_client
                    && e.object.pointer("/spec/nodeName").is_none()
                    && e.object.pointer("/metadata/deletionTimestamp").is_none()
                    && e.object.pointer("/status/phase") == Some(&json!("Pending"))
            })
            .map(|(key, _)| key.clone())
            .collect();
        let mut bound = 0;
        for key in unbound {
            let Some(current) = inner.entry(Kind::Pod, &key) else { continue };
            let mut pod = (*current).clone();
            admission::schedule_pod(&mut pod, &mut inner.admission_context());
            let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str).map(str::to_string) else {
                continue;
            };
            let uid = meta::uid(&pod).to_string();
            if inner.write(Kind::Pod, &key, pod, false).is_ok() {
                bound += 1;
                if let Some(queue) = &inner.pods_to_start {
                    let _ = queue.send((key.clone(), uid, node));
                }
            }
        }
        bound
    }
}

/// A created object with what needs no other object done: its type checked, the metadata the
/// server owns set, and (when it has a name) validated. The store's part is [`Inner::create`].
struct Prepared {
    object: Value,
    namespace: String,
    /// The validation errors; `None` while the name is still to be generated.
    errors: Option<Vec<FieldError>>,
}

impl Prepared {
    fn new(kind: Kind, namespace: &str, mut object: Value) -> Result<Prepared, ApiError> {
        if !object.is_object() {
            return Err(ApiError::BadRequest("the body of the request was not a JSON object".into()));
        }
        let info = kind.info();
        check_type(kind, &object)?;
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(info.kind);
        let namespace = scope(kind, namespace).to_string();
        {
            let body_namespace = meta::meta_str(&object, "namespace");
            if info.namespaced && !body_namespace.is_empty() && body_namespace != namespace {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request"
                        .into(),
                ));
            }
        }
        {
            let metadata = meta::metadata_mut(&mut object);
            if info.namespaced {
                metadata.insert("namespace".into(), json!(namespace));
            } else {
                metadata.remove("namespace");
            }
            metadata.insert("uid".into(), json!(meta::new_uid()));
            metadata.insert("creationTimestamp".into(), json!(meta::now()));
            for field in ["deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"] {
                metadata.remove(field);
            }
            if matches!(kind, Kind::Pod | Kind::Service | Kind::Deployment | Kind::StatefulSet | Kind::Job) {
                metadata.insert("generation".into(), json!(1));
            }
        }
        if info.has_status
            && !matches!(kind, Kind::Node)
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        let errors = (!meta::name(&object).is_empty()).then(|| validation::validate(kind, &object));
        Ok(Prepared { object, namespace, errors })
    }
}

impl Inner {
    /// The object a controller may change: `None` when it is gone, has another UID, or (with
    /// `respect_client_status`) a client owns its status.
    fn controllable(
        &self,
        kind: Kind,
        key: &ObjectKey,
        expected_uid: &str,
        respect_client_status: bool,
    ) -> Option<Arc<Value>> {
        let entry = self.tables.get(&kind)?.get(key)?;
        let allowed = meta::uid(&entry.object) == expected_uid
            && !(respect_client_status && entry.status_owned_by_client);
        allowed.then(|| entry.object.clone())
    }

    /// An API create of a [`Prepared`] object: checks what needs the store (the namespace,
    /// the name), runs admission, then stores it and emits ADDED.
    fn create(&mut self, kind: Kind, prepared: Prepared) -> Result<Arc<Value>, ApiError> {
        let Prepared { mut object, namespace, errors } = prepared;
        if kind.info().namespaced && self.entry(Kind::Namespace, &ObjectKey::new("", &namespace)).is_none() {
            return Err(ApiError::NotFound { kind: Kind::Namespace, name: namespace });
        }
        let generate_name = meta::meta_str(&object, "generateName").to_string();
        if meta::name(&object).is_empty() && !generate_name.is_empty() {
            let table = self.tables.entry(kind).or_default();
            let name = loop {
                let candidate = format!("{generate_name}{}", meta::random_suffix(5));
                if !table.contains_key(&ObjectKey::new(&namespace, &candidate)) {
                    break candidate;
                }
            };
            meta::metadata_mut(&mut object).insert("name".into(), json!(name));
        }
        let name = meta::name(&object).to_string();
        let errors = errors.unwrap_or_else(|| validation::validate(kind, &object));
        if !errors.is_empty() {
            return Err(ApiError::Invalid { kind, name, causes: errors });
        }
        let key = ObjectKey::new(&namespace, &name);
        if self.tables.get(&kind).is_some_and(|t| t.contains_key(&key)) {
            return Err(ApiError::AlreadyExists { kind, name });
        }
        admission::admit_create(kind, &mut object, &mut self.admission_context())?;
        self.next_version(&mut object);
        let object = Arc::new(object);
        self.index(kind, &key, &object, true);
        self.tables
            .entry(kind)
            .or_default()
            .insert(key.clone(), Entry { object: object.clone(), status_owned_by_client: false });
        *self.counts.entry((kind, namespace.clone())).or_default() += 1;
        if kind == Kind::Pod
            && let (Some(queue), Some(node)) =
                (&self.pods_to_start, object.pointer("/spec/nodeName").and_then(Value::as_str))
        {
            // A closed queue means the kubelet is gone, as when the runtime stops.
            let _ = queue.send((key.clone(), meta::uid(&object).to_string(), node.to_string()));
        }
        self.emit(kind, &namespace, EventType::Added, object.clone(), None);
        if kind == Kind::Event && self.max_events > 0 {
            self.event_order.push_back((key, meta::uid(&object).to_string()));
            self.expire_events();
        }
        Ok(object)
    }

    /// Removes the oldest Events while more than `max_events` are kept (each with a DELETED
    /// watch event, as their TTL running out on a real cluster gives), so that the Events of
    /// 150,000 pods do not hold the simulator's memory: recent ones are what `kubectl describe`
    /// shows.
    fn expire_events(&mut self) {
        while self.table(Kind::Event).is_some_and(|t| t.len() > self.max_events) {
            let Some((key, uid)) = self.event_order.pop_front() else { return };
            if self.entry(Kind::Event, &key).is_some_and(|event| meta::uid(&event) == uid) {
                let _ = self.remove(Kind::Event, &key);
            }
        }
    }

    /// An API update: checks the version, keeps what the client may not change, then writes.
    fn update(
        &mut self,
        kind: Kind,
        key: &ObjectKey,
        mut object: Value,
        target: WriteTarget,
        from_client: bool,
    ) -> Result<Arc<Value>, ApiError> {
        if !object.is_object() {
            return Err(ApiError::BadRequest("the body of the request was not a JSON object".into()));
        }
        check_type(kind, &object)?;
        let old = self.entry(kind, key).ok_or_else(|| ApiError::NotFound { kind, name: key.name.clone() })?;
        let requested_version = meta::meta_str(&object, "resourceVersion").to_string();
        if !requested_version.is_empty() && requested_version != meta::meta_str(&old, "resourceVersion") {
            return Err(ApiError::Conflict {
                kind,
                name: key.name.clone(),
                detail: "the object has been modified; please apply your changes to the latest version and try again".into(),
            });
        }
        let info = kind.info();
        let mut candidate = match target {
            WriteTarget::Status => {
                if !info.has_status {
                    return Err(ApiError::NoRoute);
                }
                let mut merged = (*old).clone();
                merged["status"] = object.get("status").cloned().unwrap_or(json!({}));
                merged
            }
            WriteTarget::Main => {
                if info.has_status && kind != Kind::Node {
                    match old.get("status") {
                        Some(status) => object["status"] = status.clone(),
                        None => {
                            if let Some(map) = object.as_object_mut() {
                                map.remove("status");
                            }
                        }
                    }
                }
                {
                    let old_metadata = old.get("metadata").cloned().unwrap_or(json!({}));
                    let metadata = meta::metadata_mut(&mut object);
                    for field in [
                        "uid",
                        "creationTimestamp",
                        "deletionTimestamp",
                        "deletionGracePeriodSeconds",
                        "generation",
                        "namespace",
                        "name",
                    ] {
                        match old_metadata.get(field) {
                            Some(value) => metadata.insert(field.to_string(), value.clone()),
                            None => metadata.remove(field),
                        };
                    }
                    metadata.remove("managedFields");
                }
                let errors = validation::validate(kind, &object);
                if !errors.is_empty() {
                    return Err(ApiError::Invalid { kind, name: key.name.clone(), causes: errors });
                }
                if let Some(error) = immutable_field_error(kind, &old, &object) {
                    return Err(ApiError::Invalid { kind, name: key.name.clone(), causes: vec![error] });
                }
                admission::admit_update(kind, &old, &mut object, &mut self.admission_context())?;
                if object.get("spec") != old.get("spec")
                    && let Some(generation) = old.pointer("/metadata/generation").and_then(Value::as_i64)
                {
                    meta::metadata_mut(&mut object).insert("generation".into(), json!(generation + 1));
                }
                object
            }
        };
        candidate["apiVersion"] = json!(kind.api_version());
        candidate["kind"] = json!(info.kind);
        let written = self.write(kind, key, candidate, from_client && target == WriteTarget::Status)?;
        Ok(written)
    }

    /// Stores a new version of an existing object, unless nothing changed, and finishes a
    /// deletion whose finalizers are now gone.
    pub(super) fn write(
        &mut self,
        kind: Kind,
        key: &ObjectKey,
        mut object: Value,
        client_wrote_status: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let old = self.entry(kind, key).ok_or_else(|| ApiError::NotFound { kind, name: key.name.clone() })?;
        meta::metadata_mut(&mut object)
            .insert("resourceVersion".into(), json!(meta::meta_str(&old, "resourceVersion")));
        if object == *old {
            if client_wrote_status
                && let Some(entry) = self.tables.get_mut(&kind).and_then(|t| t.get_mut(key))
            {
                entry.status_owned_by_client = true;
            }
            return Ok(old);
        }
        self.next_version(&mut object);
        let object = Arc::new(object);
        self.index(kind, key, &old, false);
        self.index(kind, key, &object, true);
        if let Some(entry) = self.tables.get_mut(&kind).and_then(|t| t.get_mut(key)) {
            entry.object = object.clone();
            entry.status_owned_by_client |= client_wrote_status;
        }
        self.emit(kind, &key.namespace, EventType::Modified, object.clone(), Some(old));
        let finalizers_done =
            object.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(|f| f.is_empty());
        if object.pointer("/metadata/deletionTimestamp").is_some() && finalizers_done {
            return self.remove(kind, key);
        }
        Ok(object)
    }
}

/// The API server's immutability rules for the fields we model: a pod's spec may change only
/// in its images and a few scheduling fields; a Deployment's selector never.
fn immutable_field_error(kind: Kind, old: &Value, new: &Value) -> Option<FieldError> {
    match kind {
        Kind::Pod => {
            let comparable = |object: &Value| {
                let mut spec = object.get("spec").cloned().unwrap_or(json!({}));
                for field in ["containers", "initContainers"] {
                    for container in spec.get_mut(field).and_then(Value::as_array_mut).into_iter().flatten() {
                        if let Some(container) = container.as_object_mut() {
                            container.remove("image");
                        }
                    }
                }
                if let Some(spec) = spec.as_object_mut() {
                    // Defaults and the binding are the server's to set; mutable fields are ignored.
                    for field in
                        ["activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "nodeName"]
                    {
                        spec.remove(field);
                    }
                }
                let mut defaulted = json!({"spec": spec});
                crate::admission::default_pod_spec(defaulted.get_mut("spec"));
                defaulted
            };
            (comparable(old) != comparable(new)).then(|| {
                FieldError::forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                )
            })
        }
        Kind::Deployment => {
            let selector = |object: &Value| object.pointer("/spec/selector").cloned();
            (selector(old) != selector(new)).then(|| {
                FieldError::invalid(
                    "spec.selector",
                    selector(new).unwrap_or(Value::Null),
                    "field is immutable",
                )
            })
        }
        Kind::StatefulSet => {
            // Everything but these may not change, as the API server says.
            let fixed = |object: &Value| {
                let mut spec = object.get("spec").cloned().unwrap_or(json!({}));
                if let Some(spec) = spec.as_object_mut() {
                    for field in [
                        "replicas",
                        "ordinals",
                        "template",
                        "updateStrategy",
                        "persistentVolumeClaimRetentionPolicy",
                        "minReadySeconds",
                    ] {
                        spec.remove(field);
                    }
                }
                spec
            };
            (fixed(old) != fixed(new)).then(|| {
                FieldError::forbidden(
                    "spec",
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                )
            })
        }
        Kind::Job => {
            let selector = |object: &Value| object.pointer("/spec/selector").cloned();
            let template = |object: &Value| object.pointer("/spec/template").cloned();
            if selector(old) != selector(new) {
                Some(FieldError::invalid(
                    "spec.selector",
                    selector(new).unwrap_or(Value::Null),
                    "field is immutable",
                ))
            } else {
                (template(old) != template(new)).then(|| {
                    FieldError::invalid(
                        "spec.template",
                        template(new).unwrap_or(Value::Null),
                        "field is immutable",
                    )
                })
            }
        }
        _ => None,
    }
}

/// A body's `apiVersion` and `kind`, when given, must be the ones of the URL.
fn check_type(kind: Kind, object: &Value) -> Result<(), ApiError> {
    let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind_name = object.get("kind").and_then(Value::as_str).unwrap_or_default();
    if !api_version.is_empty() && api_version != kind.api_version() {
        return Err(ApiError::BadRequest(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            kind.api_version()
        )));
    }
    if !kind_name.is_empty() && kind_name != kind.info().kind {
        return Err(ApiError::BadRequest(format!(
            "the kind in the data ({kind_name}) does not match the expected kind ({})",
            kind.info().kind
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::{pod, store};

    #[test]
    fn create_assigns_metadata_and_rejects_duplicates() {
        let store = store();
        let created = store.create(Kind::Pod, "default", pod("a")).unwrap();
        assert_eq!(created["metadata"]["namespace"], "default");
        assert!(!meta::uid(&created).is_empty());
        assert_eq!(meta::resource_version(&created), store.resource_version());
        assert!(matches!(store.create(Kind::Pod, "default", pod("a")), Err(ApiError::AlreadyExists { .. })));
        assert!(matches!(
            store.create(Kind::Pod, "nowhere", pod("a")),
            Err(ApiError::NotFound { kind: Kind::Namespace, .. })
        ));
        let generated = store
            .create(Kind::Pod, "default", json!({"metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}))
            .unwrap();
        assert!(meta::name(&generated).starts_with("web-") && meta::name(&generated).len() == 9);
    }

    #[test]
    fn stale_updates_conflict_and_no_op_updates_keep_the_version() {
        let store = store();
        let created = store.create(Kind::Pod, "default", pod("a")).unwrap();
        let mut changed = (*created).clone();
        changed["metadata"]["labels"]["app"] = json!("db");
        let updated = store.update(Kind::Pod, "default", "a", changed.clone(), WriteTarget::Main).unwrap();
        assert!(meta::resource_version(&updated) > meta::resource_version(&created));
        let stale = store.update(Kind::Pod, "default", "a", changed, WriteTarget::Main);
        assert!(matches!(stale, Err(ApiError::Conflict { .. })));
        let same = store.update(Kind::Pod, "default", "a", (*updated).clone(), WriteTarget::Main).unwrap();
        assert_eq!(meta::resource_version(&same), meta::resource_version(&updated));
    }

    #[test]
    fn the_oldest_events_expire_past_the_limit() {
        let store = Store::new(&crate::store::StoreSettings { max_events: 2, ..Default::default() });
        let event = |name: &str| json!({"metadata": {"name": name}, "involvedObject": {"kind": "Pod", "name": "p"}, "reason": "R"});
        for name in ["e1", "e2", "e3"] {
            store.create(Kind::Event, "default", event(name)).unwrap();
        }
        assert!(store.get(Kind::Event, "default", "e1").is_err(), "the oldest went");
        store.delete(Kind::Event, "default", "e2", &crate::store::DeleteOptions::default()).unwrap();
        store.create(Kind::Event, "default", event("e4")).unwrap();
        assert!(store.get(Kind::Event, "default", "e3").is_ok(), "a deleted Event frees its place");
        assert!(store.get(Kind::Event, "default", "e4").is_ok());
    }

    #[test]
    fn status_writes_only_touch_status() {
        let store = store();
        store.create(Kind::Pod, "default", pod("a")).unwrap();
        let patched = store
            .patch(
                Kind::Pod,
                "default",
                "a",
                PatchType::Merge,
                &json!({"status": {"phase": "Failed"}, "metadata": {"labels": {"x": "y"}}}),
                WriteTarget::Status,
            )
            .unwrap();
        assert_eq!(patched["status"]["phase"], "Failed");
        assert!(patched["metadata"]["labels"].get("x").is_none());
        let main = store
            .patch(
                Kind::Pod,
                "default",
                "a",
                PatchType::Merge,
                &json!({"status": {"phase": "Running"}}),
                WriteTarget::Main,
            )
            .unwrap();
        assert_eq!(main["status"]["phase"], "Failed");
        assert!(store.pending_pods().is_empty(), "a client-owned status is not the kubelet's to start");
    }

    #[test]
    fn pod_specs_are_immutable_except_images() {
        let store = store();
        store.create(Kind::Pod, "default", pod("a")).unwrap();
        let image = json!({"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}});
        store.patch(Kind::Pod, "default", "a", PatchType::StrategicMerge, &image, WriteTarget::Main).unwrap();
        let labels = json!({"metadata": {"labels": {"extra": "yes"}}});
        store.patch(Kind::Pod, "default", "a", PatchType::Merge, &labels, WriteTarget::Main).unwrap();
        let command = json!({"spec": {"containers": [{"name": "c", "command": ["sleep"]}]}});
        let error = store
            .patch(Kind::Pod, "default", "a", PatchType::StrategicMerge, &command, WriteTarget::Main)
            .unwrap_err();
        assert_eq!(error.to_status()["details"]["causes"][0]["field"], "spec");
        assert_eq!(error.code(), 422);
    }
}
