//! StatefulSets and Jobs against the simulator, as Hydroplane's kube runtime uses them: typed
//! kube-rs clients (k8s-openapi's StatefulSet and Job), the controllers replacing pods that go
//! away, Job completion and failure, the Job's orphaning default on delete, and kubectl's
//! tables, apply and delete.
// The kubectl test is blocking code polling in real time.
#![allow(clippy::disallowed_types)]

mod common;

use common::{WAIT, eventually};

use std::time::Duration;

use common::Simulator;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// Hydroplane's labels on a workload, its template and its pods.
fn labels(process: &str) -> Value {
    json!({"hydroplane/process-id": process, "hydroplane/group-id": "g",
        "app.kubernetes.io/managed-by": "hydroplane"})
}

fn stateful_set(name: &str) -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels(name)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"hydroplane/process-id": name}},
            "template": {
                "metadata": {"labels": labels(name)},
                "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]}
            }
        }
    }))
    .expect("a valid StatefulSet")
}

fn job(name: &str, restart_policy: &str, extra_spec: Value) -> Job {
    let mut spec = json!({
        "completions": 1, "parallelism": 1, "backoffLimit": 100,
        "template": {
            "metadata": {"labels": labels(name)},
            "spec": {"restartPolicy": restart_policy, "containers": [{"name": "main", "image": "busybox:1"}]}
        }
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels(name)}, "spec": spec}))
        .expect("a valid Job")
}

fn is_running_and_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The running, ready pod named `name` whose UID is not `old_uid`.
async fn ready_pod(pods: &Api<Pod>, name: &str, old_uid: Option<&str>) -> Pod {
    eventually(&format!("pod {name} running"), async || {
        let pod = pods.get_opt(name).await.expect("reading the pod")?;
        let fresh = old_uid.is_none_or(|old| pod.metadata.uid.as_deref() != Some(old));
        (fresh && is_running_and_ready(&pod)).then_some(pod)
    })
    .await
}

/// The pods that carry `selector` and are not being deleted.
async fn living_pods(pods: &Api<Pod>, selector: &str) -> Vec<Pod> {
    let listed = pods.list(&ListParams::default().labels(selector)).await.expect("listing pods");
    listed.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect()
}

async fn event_reasons(client: &kube::Client, kind: &str, name: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::default_namespaced(client.clone());
    let selector = format!("involvedObject.kind={kind},involvedObject.name={name}");
    let listed = events.list(&ListParams::default().fields(&selector)).await.expect("listing events");
    listed.items.into_iter().map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default())).collect()
}

#[tokio::test]
async fn a_stateful_set_keeps_its_one_pod_and_reports_it() {
    let simulator = Simulator::start(&["--pod-start-delay-ms", "20"]);
    let client = simulator.client().await;
    let sets: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let created = sets.create(&PostParams::default(), &stateful_set("web")).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let spec = &created.spec;
    assert_eq!(spec.pod_management_policy.as_deref(), Some("OrderedReady"));

    let pod = ready_pod(&pods, "web-0", None).await;
    let pod_labels = pod.metadata.labels.clone().unwrap_or_default();
    assert_eq!(pod_labels["hydroplane/process-id"], "web");
    assert_eq!(pod_labels["app.kubernetes.io/managed-by"], "hydroplane");
    assert_eq!(pod_labels["statefulset.kubernetes.io/pod-name"], "web-0");
    assert!(pod_labels["controller-revision-hash"].starts_with("web-"));
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller, owner.block_owner_deletion),
        ("StatefulSet", Some(true), Some(true))
    );
    assert_eq!(owner.uid, created.metadata.uid.clone().unwrap());

    // A watch (kube-runtime's await_condition) sees the status the controller writes.
    let ready = |set: Option<&StatefulSet>| {
        set.and_then(|s| s.status.as_ref()).is_some_and(|status| status.ready_replicas == Some(1))
    };
    let watched =
        tokio::time::timeout(WAIT, kube::runtime::wait::await_condition(sets.clone(), "web", ready))
            .await
            .expect("the StatefulSet ready in time")
            .expect("watching the StatefulSet")
            .expect("the StatefulSet exists");
    let status = watched.status.unwrap();
    assert_eq!((status.replicas, status.current_replicas, status.available_replicas), (1, Some(1), Some(1)));

    // Deleted by someone else: the controller makes `web-0` again, a new pod under the old name.
    let old_uid = pod.metadata.uid.clone().unwrap();
    pods.delete("web-0", &DeleteParams::default()).await.unwrap();
    ready_pod(&pods, "web-0", Some(&old_uid)).await;
    let reasons = event_reasons(&client, "StatefulSet", "web").await;
    assert!(
        reasons
            .contains(&("SuccessfulCreate".into(), "create Pod web-0 in StatefulSet web successful".into())),
        "{reasons:?}"
    );

    // A pod that failed is deleted and made again.
    let failing_uid = pods.get("web-0").await.unwrap().metadata.uid.unwrap();
    pods.patch_status(
        "web-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Failed"}})),
    )
    .await
    .unwrap();
    ready_pod(&pods, "web-0", Some(&failing_uid)).await;
    let reasons = event_reasons(&client, "StatefulSet", "web").await;
    assert!(reasons.iter().any(|(reason, _)| reason == "SuccessfulDelete"), "{reasons:?}");

    // Scaling changes the generation and the pods; deleting (background by default) takes them.
    sets.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 2}})))
        .await
        .unwrap();
    ready_pod(&pods, "web-1", None).await;
    assert_eq!(sets.get("web").await.unwrap().metadata.generation, Some(2));
    sets.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("the StatefulSet's pods collected", async || {
        living_pods(&pods, "hydroplane/process-id=web").await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn workloads_are_validated_like_a_real_server() {
    let simulator = Simulator::start(&[]);
    let client = simulator.client().await;
    let sets: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let causes = |error: kube::Error| match error {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.details.unwrap().causes.into_iter().map(|c| (c.field, c.message)).collect::<Vec<_>>()
        }
        other => panic!("{other:?}"),
    };
    let mut mismatched = stateful_set("web");
    mismatched.spec.selector.match_labels =
        Some([("hydroplane/process-id".to_string(), "other".to_string())].into());
    let error = sets.create(&PostParams::default(), &mismatched).await.unwrap_err();
    assert_eq!(causes(error)[0].0, "spec.template.metadata.labels");
    let mut never = stateful_set("web");
    never.spec.template.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    let error = sets.create(&PostParams::default(), &never).await.unwrap_err();
    assert_eq!(causes(error)[0].0, "spec.template.spec.restartPolicy");

    let error = jobs.create(&PostParams::default(), &job("work", "Always", json!({}))).await.unwrap_err();
    let found = causes(error);
    assert_eq!(found[0].0, "spec.template.spec.restartPolicy");
    assert!(found[0].1.contains("supported values: \"OnFailure\", \"Never\""), "{found:?}");
    let created = jobs.create(&PostParams::default(), &job("work", "OnFailure", json!({}))).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let template_labels =
        created.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(template_labels["batch.kubernetes.io/controller-uid"], uid);
    assert_eq!(template_labels["job-name"], "work");
    // A Job's template is immutable.
    let change =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "busybox:2"}]}}}});
    let error = jobs.patch("work", &PatchParams::default(), &Patch::Strategic(change)).await.unwrap_err();
    assert_eq!(causes(error)[0].0, "spec.template");
}

#[tokio::test]
async fn a_job_replaces_lost_pods_and_completes() {
    let simulator = Simulator::start(&["--pod-start-delay-ms", "20"]);
    let client = simulator.client().await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let created = jobs.create(&PostParams::default(), &job("work", "OnFailure", json!({}))).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let selector = "hydroplane/process-id=work";
    let first = eventually("the Job's pod", async || living_pods(&pods, selector).await.pop()).await;
    let name = first.metadata.name.clone().unwrap();
    assert!(name.starts_with("work-") && name.len() == "work-".len() + 5, "{name}");
    let pod_labels = first.metadata.labels.clone().unwrap();
    for (key, value) in [
        ("job-name", "work"),
        ("batch.kubernetes.io/job-name", "work"),
        ("controller-uid", uid.as_str()),
        ("batch.kubernetes.io/controller-uid", uid.as_str()),
        ("hydroplane/group-id", "g"),
    ] {
        assert_eq!(pod_labels[key], value, "{key}");
    }
    let owner = &first.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("Job", Some(true)));

    // Deleted before it completed: counted as a failure, and replaced.
    pods.delete(&name, &DeleteParams::default()).await.unwrap();
    let second = eventually("a replacement pod", async || {
        living_pods(&pods, selector).await.into_iter().find(|p| p.metadata.name.as_deref() != Some(&name))
    })
    .await;
    eventually("the deleted pod gone", async || pods.get_opt(&name).await.unwrap().is_none().then_some(()))
        .await;
    let second_name = second.metadata.name.clone().unwrap();
    ready_pod(&pods, &second_name, None).await;
    pods.patch_status(
        &second_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .unwrap();
    let done = eventually("the Job complete", async || {
        let job = jobs.get("work").await.unwrap();
        let status = job.status.clone()?;
        status
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
            .then_some(status)
    })
    .await;
    assert_eq!((done.succeeded, done.failed, done.active), (Some(1), Some(1), Some(0)));
    assert!(done.completion_time.is_some());
    let reasons = event_reasons(&client, "Job", "work").await;
    for wanted in ["SuccessfulCreate", "Completed"] {
        assert!(reasons.iter().any(|(reason, _)| reason == wanted), "{wanted} in {reasons:?}");
    }
}

#[tokio::test]
async fn a_job_fails_past_its_backoff_limit_or_deadline() {
    let simulator = Simulator::start(&["--pod-start-delay-ms", "20"]);
    let client = simulator.client().await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let failed_condition = async |name: &str| {
        eventually(&format!("{name} failed"), async || {
            let job = jobs.get(name).await.unwrap();
            job.status?.conditions?.into_iter().find(|c| c.type_ == "Failed" && c.status == "True")
        })
        .await
    };

    jobs.create(&PostParams::default(), &job("limited", "Never", json!({"backoffLimit": 0}))).await.unwrap();
    let pod = eventually("the pod", async || living_pods(&pods, "job-name=limited").await.pop()).await;
    let pod_name = pod.metadata.name.unwrap();
    pods.patch_status(
        &pod_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Failed"}})),
    )
    .await
    .unwrap();
    assert_eq!(failed_condition("limited").await.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert!(
        pods.get_opt(&pod_name).await.unwrap().is_some(),
        "a failed pod of a Never Job stays, as on a cluster"
    );
    let reasons = event_reasons(&client, "Job", "limited").await;
    assert!(reasons.iter().any(|(reason, _)| reason == "BackoffLimitExceeded"), "{reasons:?}");

    jobs.create(&PostParams::default(), &job("bounded", "OnFailure", json!({"activeDeadlineSeconds": 1})))
        .await
        .unwrap();
    let condition = failed_condition("bounded").await;
    assert_eq!(condition.reason.as_deref(), Some("DeadlineExceeded"));
    eventually("the deadline's pods deleted", async || {
        living_pods(&pods, "job-name=bounded").await.is_empty().then_some(())
    })
    .await;
    let reasons = event_reasons(&client, "Job", "bounded").await;
    assert!(reasons.iter().any(|(reason, _)| reason == "DeadlineExceeded"), "{reasons:?}");
}

#[tokio::test]
async fn deleting_a_job_without_a_policy_orphans_its_pods() {
    let simulator = Simulator::start(&["--pod-start-delay-ms", "20"]);
    let client = simulator.client().await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    jobs.create(&PostParams::default(), &job("orphaning", "OnFailure", json!({}))).await.unwrap();
    let pod = eventually("the pod", async || living_pods(&pods, "job-name=orphaning").await.pop()).await;
    jobs.delete("orphaning", &DeleteParams::default()).await.unwrap();
    let kept = eventually("the pod released", async || {
        let pod = pods.get_opt(pod.metadata.name.as_deref().unwrap()).await.unwrap()?;
        (pod.metadata.finalizers.is_none() && pod.metadata.owner_references.is_none()).then_some(pod)
    })
    .await;
    assert!(kept.metadata.deletion_timestamp.is_none(), "batch/v1 orphans by default");

    jobs.create(&PostParams::default(), &job("cascading", "OnFailure", json!({}))).await.unwrap();
    eventually("the pod", async || living_pods(&pods, "job-name=cascading").await.pop()).await;
    // By label, as Hydroplane stops a group: a deletecollection in the background.
    let selected = ListParams::default().labels("hydroplane/process-id=cascading");
    let deleted = jobs.delete_collection(&DeleteParams::background(), &selected).await.unwrap();
    assert_eq!(deleted.left().map(|list| list.items.len()), Some(1));
    eventually("the pod deleted", async || {
        let listed = pods.list(&ListParams::default().labels("job-name=cascading")).await.unwrap();
        listed.items.is_empty().then_some(())
    })
    .await;
}

const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "nginx:1.27"}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: work}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: work, image: "busybox:1"}]
"#;

#[test]
fn kubectl_applies_gets_and_deletes_workloads() {
    let simulator = Simulator::start(&["--pod-start-delay-ms", "20"]);
    let path = simulator.directory().join("workloads.yaml");
    std::fs::write(&path, MANIFEST).expect("writing the manifest");
    let path = path.to_string_lossy().into_owned();
    let applied = simulator.kubectl_ok(&["apply", "-f", &path]);
    assert!(
        applied.contains("statefulset.apps/web created") && applied.contains("job.batch/work created"),
        "{applied}"
    );
    simulator.kubectl_ok(&["wait", "--for=condition=Ready", "pod/web-0", "--timeout=60s"]);
    let deadline = std::time::Instant::now() + WAIT;
    let table = loop {
        let table = simulator.kubectl_ok(&["get", "statefulsets,jobs"]);
        if table.contains("1/1") || std::time::Instant::now() > deadline {
            break table;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(table.contains("statefulset.apps/web") && table.contains("1/1"), "{table}");
    assert!(
        table.contains("job.batch/work") && table.contains("Running") && table.contains("0/1"),
        "{table}"
    );
    let described = simulator.kubectl_ok(&["describe", "statefulset", "web"]);
    assert!(described.contains("SuccessfulCreate"), "{described}");
    // kubectl deletes in the background, so the Job's pod goes too.
    simulator.kubectl_ok(&["delete", "-f", &path, "--wait=true", "--timeout=60s"]);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = simulator.kubectl_ok(&["get", "pods", "-o", "name"]);
        if left.trim().is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "pods left behind: {left}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
