//! kube-rs against the simulator: Status-shaped errors, the pod lifecycle, garbage collection,
//! allocation, selectors and paging, raw watches (bookmarks, 410 Gone), Deployments, fault
//! injection, and a watcher + reflector that survives dropped watches and a forced 410.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Simulator, pod};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

/// A bound for waits that guards against hangs; generous, since CI machines are loaded and a
/// watcher's backoff after repeated 410s can reach tens of seconds.
const WAIT: Duration = Duration::from_secs(90);

fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Watches `api` until `done` holds for an event's object, failing after [`WAIT`].
async fn wait_for<K>(api: &Api<K>, name: &str, done: impl Fn(&K) -> bool) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let condition = move |object: Option<&K>| object.is_some_and(&done);
    let found =
        tokio::time::timeout(WAIT, kube::runtime::wait::await_condition(api.clone(), name, condition))
            .await
            .unwrap_or_else(|_| panic!("{name} did not reach the expected state in time"))
            .expect("watching for the condition");
    found.expect("the object exists")
}

#[tokio::test]
async fn errors_are_kubernetes_statuses() {
    let simulator = Simulator::start(&["--token", "secret", "--read-only-token", "reader"]);
    let client = simulator.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());

    let missing = pods.get("nope").await.unwrap_err();
    let kube::Error::Api(status) = &missing else { panic!("{missing:?}") };
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(status.message, "pods \"nope\" not found");

    let created = pods.create(&PostParams::default(), &pod("web", "web")).await.unwrap();
    let again = pods.create(&PostParams::default(), &pod("web", "web")).await.unwrap_err();
    assert_eq!(status_code(&again), Some(409));

    // An update carrying a stale resourceVersion conflicts.
    let mut changed = created.clone();
    changed.metadata.labels.get_or_insert_default().insert("x".into(), "1".into());
    pods.replace("web", &PostParams::default(), &changed).await.unwrap();
    let stale = pods.replace("web", &PostParams::default(), &changed).await.unwrap_err();
    let kube::Error::Api(status) = &stale else { panic!("{stale:?}") };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));

    // Invalid objects name the field in details.causes.
    let mut bad = pod("Bad_Name", "web");
    bad.spec.as_mut().unwrap().containers[0].ports.as_mut().unwrap()[0].container_port = 70000;
    let request = http::Request::post("/api/v1/namespaces/default/pods")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&bad).unwrap())
        .unwrap();
    let invalid = client.request_text(request).await.unwrap_err();
    let kube::Error::Api(status) = &invalid else { panic!("{invalid:?}") };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    let causes: Vec<&str> =
        status.details.as_ref().expect("details").causes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(causes, ["metadata.name", "spec.containers[0].ports[0].containerPort"]);

    // Missing or wrong tokens are 401; a read-only token may read but not write (403).
    let mut anonymous = kube::config::Kubeconfig::read_from(&simulator.kubeconfig).unwrap();
    anonymous.auth_infos[0].auth_info.as_mut().unwrap().token = None;
    let config = kube::Config::from_custom_kubeconfig(anonymous.clone(), &Default::default()).await.unwrap();
    let anonymous_pods: Api<Pod> = Api::default_namespaced(kube::Client::try_from(config).unwrap());
    assert_eq!(status_code(&anonymous_pods.list(&ListParams::default()).await.unwrap_err()), Some(401));
    anonymous.auth_infos[0].auth_info.as_mut().unwrap().token = Some("reader".to_string().into());
    let config = kube::Config::from_custom_kubeconfig(anonymous, &Default::default()).await.unwrap();
    let reader_pods: Api<Pod> = Api::default_namespaced(kube::Client::try_from(config).unwrap());
    assert_eq!(reader_pods.list(&ListParams::default()).await.unwrap().items.len(), 1);
    let forbidden = reader_pods.delete("web", &DeleteParams::default()).await.unwrap_err();
    let kube::Error::Api(status) = &forbidden else { panic!("{forbidden:?}") };
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
}

#[tokio::test]
async fn invalid_objects_list_their_causes() {
    let simulator = Simulator::start(&[]);
    let client = simulator.client().await;
    let services = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}, {"port": 0, "name": "b"}]}
    });
    let request = http::Request::post("/api/v1/namespaces/default/services")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&services).unwrap())
        .unwrap();
    let error = client.request_text(request).await.unwrap_err();
    let kube::Error::Api(status) = error else { panic!("expected a Status, got {error:?}") };
    assert_eq!(status.code, 422);
    let causes = status.details.expect("details").causes;
    let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["spec.ports[0].name", "spec.ports[1].port"]);
}

#[tokio::test]
async fn pods_run_and_owned_objects_are_collected() {
    let simulator = Simulator::start(&["--pod-start-delay-ms", "50"]);
    let client = simulator.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let services: Api<Service> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());

    let created = pods.create(&PostParams::default(), &pod("web", "web")).await.unwrap();
    assert_eq!(created.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Pending"));
    let running = wait_for(&pods, "web", |p: &Pod| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    let status = running.status.unwrap();
    let node_name = running.spec.unwrap().node_name.expect("bound to a node");
    assert!(node_name.starts_with("node-"));
    let index: u32 = node_name.trim_start_matches("node-").parse().unwrap();
    assert_eq!(status.host_ip.as_deref(), Some(format!("10.0.0.{index}").as_str()));
    assert!(status.pod_ip.is_some());
    let container = &status.container_statuses.unwrap()[0];
    assert!(
        container.ready && container.state.as_ref().unwrap().running.as_ref().unwrap().started_at.is_some()
    );

    let owner = json!([{"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": created.metadata.uid.clone().unwrap()}]);
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "ownerReferences": owner},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "nodePort": 31000}, {"name": "metrics", "port": 9090}]}
    }))
    .unwrap();
    let service = services.create(&PostParams::default(), &service).await.unwrap();
    let ports = service.spec.as_ref().unwrap().ports.clone().unwrap();
    assert_eq!(ports[0].node_port, Some(31000));
    assert!(ports[1].node_port.is_some_and(|p| p != 31000 && (30000..=32767).contains(&p)));
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "web", "ownerReferences": owner}, "stringData": {"k": "v"}}),
    )
    .unwrap();
    let secret = secrets.create(&PostParams::default(), &secret).await.unwrap();
    assert_eq!(secret.data.unwrap()["k"].0, b"v");

    let deleted = pods.delete("web", &DeleteParams::default()).await.unwrap();
    assert!(deleted.left().is_some(), "deleting a pod returns the pod");
    let service_uid = service.metadata.uid.clone().unwrap();
    let gone = tokio::time::timeout(
        WAIT,
        kube::runtime::wait::await_condition(
            services.clone(),
            "web",
            kube::runtime::wait::conditions::is_deleted(&service_uid),
        ),
    );
    gone.await.expect("the service was collected in time").unwrap();
    let secret_uid = secret.metadata.uid.clone().unwrap();
    let gone = tokio::time::timeout(
        WAIT,
        kube::runtime::wait::await_condition(
            secrets.clone(),
            "web",
            kube::runtime::wait::conditions::is_deleted(&secret_uid),
        ),
    );
    gone.await.expect("the secret was collected in time").unwrap();

    // The freed node port can be taken again.
    let reuse: Service = serde_json::from_value(json!({"metadata": {"name": "again"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 31000}]}})).unwrap();
    services.create(&PostParams::default(), &reuse).await.unwrap();
    let clash = services.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "clash"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 31000}]}})).unwrap()).await;
    assert_eq!(status_code(&clash.unwrap_err()), Some(422));
}

#[tokio::test]
async fn client_status_patches_stick() {
    let simulator = Simulator::start(&["--pod-start-delay-ms", "300"]);
    let client = simulator.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client);
    pods.create(&PostParams::default(), &pod("pull", "x")).await.unwrap();
    let patch = json!({"status": {"phase": "Pending", "containerStatuses": [{
        "name": "main", "image": "nginx:1.27", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
    }]}});
    pods.patch_status("pull", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    // Outlast the start delay: the kubelet must not overwrite a status the test owns.
    pods.create(&PostParams::default(), &pod("witness", "x")).await.unwrap();
    wait_for(&pods, "witness", |p: &Pod| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    let pulled = pods.get_status("pull").await.unwrap().status.unwrap();
    assert_eq!(pulled.phase.as_deref(), Some("Pending"));
    let waiting = pulled.container_statuses.unwrap()[0].state.clone().unwrap().waiting.unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("ImagePullBackOff"));

    let oom = json!({"status": {"phase": "Failed", "containerStatuses": [{
        "name": "main", "image": "nginx:1.27", "imageID": "", "ready": false, "restartCount": 2,
        "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
    }]}});
    let patched = pods.patch_status("pull", &PatchParams::default(), &Patch::Merge(&oom)).await.unwrap();
    let terminated =
        patched.status.unwrap().container_statuses.unwrap()[0].state.clone().unwrap().terminated.unwrap();
    assert_eq!((terminated.reason.as_deref(), terminated.exit_code), (Some("OOMKilled"), 137));
}

#[tokio::test]
async fn selectors_and_paging() {
    let simulator = Simulator::start(&["--pod-start-delay-ms", "60000"]);
    let client = simulator.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    for index in 0..7 {
        let app = if index % 2 == 0 { "even" } else { "odd" };
        pods.create(&PostParams::default(), &pod(&format!("p{index}"), app)).await.unwrap();
    }
    let names = |list: kube::core::ObjectList<Pod>| {
        list.items.into_iter().map(|p| p.metadata.name.unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(names(pods.list(&ListParams::default().labels("app=odd")).await.unwrap()), ["p1", "p3", "p5"]);
    assert_eq!(
        names(pods.list(&ListParams::default().labels("app in (odd),app!=even")).await.unwrap()).len(),
        3
    );
    assert_eq!(names(pods.list(&ListParams::default().labels("app notin (odd)")).await.unwrap()).len(), 4);
    assert_eq!(names(pods.list(&ListParams::default().labels("!app")).await.unwrap()).len(), 0);
    assert_eq!(names(pods.list(&ListParams::default().fields("metadata.name=p2")).await.unwrap()), ["p2"]);
    let node_one =
        pods.list(&ListParams::default().fields("spec.nodeName=node-1")).await.unwrap().items.len();
    assert!(node_one >= 2, "round-robin put {node_one} of 7 pods on node-1");
    assert_eq!(
        pods.list(&ListParams::default().fields("status.phase=Pending")).await.unwrap().items.len(),
        7
    );
    let unsupported = pods.list(&ListParams::default().fields("spec.image=x")).await.unwrap_err();
    assert_eq!(status_code(&unsupported), Some(400));

    let first = pods.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(first.items.len(), 3);
    let token = first.metadata.continue_.clone().expect("a continue token");
    assert_eq!(first.metadata.remaining_item_count, Some(4));
    let second = pods.list(&ListParams::default().limit(3).continue_token(&token)).await.unwrap();
    let third = pods
        .list(&ListParams::default().limit(3).continue_token(second.metadata.continue_.as_deref().unwrap()))
        .await
        .unwrap();
    assert!(third.metadata.continue_.is_none());
    let all: Vec<String> = [first, second, third].into_iter().flat_map(names).collect();
    assert_eq!(all, ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);

    // Deleting by label removes exactly the matching pods.
    pods.delete_collection(&DeleteParams::default(), &ListParams::default().labels("app=even"))
        .await
        .unwrap();
    assert_eq!(names(pods.list(&ListParams::default()).await.unwrap()), ["p1", "p3", "p5"]);
}

#[tokio::test]
async fn raw_watches_resume_bookmark_and_expire() {
    let simulator = Simulator::start(&[
        "--history-size",
        "20",
        "--bookmark-interval-ms",
        "100",
        "--pod-start-delay-ms",
        "60000",
    ]);
    let client = simulator.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let start = pods.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    pods.create(&PostParams::default(), &pod("a", "x")).await.unwrap();

    // Resuming from `start` replays the creation, then bookmarks arrive.
    let mut stream = pods.watch(&WatchParams::default(), &start).await.unwrap().boxed();
    let mut saw_added = false;
    let mut saw_bookmark = false;
    while !(saw_added && saw_bookmark) {
        match tokio::time::timeout(WAIT, stream.try_next()).await.expect("a watch event in time").unwrap() {
            Some(WatchEvent::Added(pod)) => saw_added |= pod.metadata.name.as_deref() == Some("a"),
            Some(WatchEvent::Bookmark(_)) => saw_bookmark = true,
            other => panic!("unexpected {other:?}"),
        }
    }

    // Push `start` out of the kept window: resuming from it is 410 Gone, as an ERROR event.
    for index in 0..25 {
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": format!("s{index}")}})).unwrap(),
            )
            .await
            .unwrap();
    }
    let mut expired = pods.watch(&WatchParams::default(), &start).await.unwrap().boxed();
    match tokio::time::timeout(WAIT, expired.try_next()).await.expect("an event in time").unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }

    // A drop ends every open watch before it delivers a change made after the drop, so a client
    // resumes from a version older than that change (and sees it, or a 410, on the next watch).
    let now = pods.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut open = pods.watch(&WatchParams::default(), &now).await.unwrap().boxed();
    simulator.admin(&client, "POST", "faults", json!({"drop_watches_now": true})).await;
    pods.create(&PostParams::default(), &pod("after-drop", "x")).await.unwrap();
    loop {
        match tokio::time::timeout(WAIT, open.try_next()).await.expect("the dropped watch ends in time") {
            Ok(None) | Err(_) => break,
            Ok(Some(WatchEvent::Bookmark(_))) => {}
            Ok(Some(other)) => panic!("a dropped watch delivered {other:?}"),
        }
    }
}

#[tokio::test]
async fn deployments_keep_one_pod_per_replica() {
    let simulator = Simulator::start(&["--pod-start-delay-ms", "20"]);
    let client = simulator.client().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}
        }
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &deployment).await.unwrap();
    wait_for(&deployments, "web", |d: &Deployment| {
        d.status.as_ref().and_then(|s| s.ready_replicas) == Some(3)
    })
    .await;
    let owned = pods.list(&ListParams::default().labels("app=web")).await.unwrap();
    assert_eq!(owned.items.len(), 3);
    assert!(
        owned.items.iter().all(|p| p.metadata.owner_references.as_ref().unwrap()[0].kind == "Deployment")
    );

    // A deleted replica is replaced.
    let victim = owned.items[0].metadata.name.clone().unwrap();
    pods.delete(&victim, &DeleteParams::default()).await.unwrap();
    wait_for(&deployments, "web", |d: &Deployment| {
        d.status.as_ref().and_then(|s| s.ready_replicas) == Some(3)
    })
    .await;

    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}})))
        .await
        .unwrap();
    wait_for(&deployments, "web", |d: &Deployment| d.status.as_ref().and_then(|s| s.replicas) == Some(1))
        .await;

    deployments.delete("web", &DeleteParams::foreground()).await.unwrap();
    assert!(pods.list(&ListParams::default().labels("app=web")).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn faults_inject_errors_and_refuse_connections() {
    let simulator = Simulator::start(&[]);
    let client = simulator.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(&PostParams::default(), &pod("keep", "x")).await.unwrap();

    simulator.admin(&client, "POST", "faults", json!({"error_rate": 1.0, "error_code": 500})).await;
    let failure = pods.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(status_code(&failure), Some(500));
    // kube-rs retries 429 (as client-go does), so read the throttling answer directly.
    simulator.admin(&client, "POST", "faults", json!({"error_code": 429})).await;
    let (code, response) = common::raw_get(simulator.port(), "/api/v1/namespaces/default/pods/keep");
    assert_eq!(code, 429);
    assert!(response.to_ascii_lowercase().contains("retry-after: 1"), "{response}");
    assert!(response.contains("\"reason\":\"TooManyRequests\""), "{response}");
    assert!(response.contains("\"retryAfterSeconds\":1"), "{response}");
    simulator.admin(&client, "POST", "faults", json!({"retry_after_seconds": 3})).await;
    let (code, response) = common::raw_get(simulator.port(), "/api/v1/namespaces/default/pods/keep");
    assert_eq!(code, 429);
    assert!(response.to_ascii_lowercase().contains("retry-after: 3"), "{response}");
    assert!(response.contains("\"retryAfterSeconds\":3"), "{response}");
    simulator.admin(&client, "DELETE", "faults", json!(null)).await;
    pods.get("keep").await.unwrap();

    // The outage starts when the simulator drops its listener, then every open connection: a
    // watch opened before it ends once connections are refused.
    let version = pods.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut open = pods.watch(&WatchParams::default(), &version).await.unwrap().boxed();
    simulator.admin(&client, "POST", "faults", json!({"refuse_connections_for_ms": 1500})).await;
    loop {
        match tokio::time::timeout(WAIT, open.try_next())
            .await
            .expect("the outage ends the open watch in time")
        {
            Ok(None) | Err(_) => break,
            Ok(Some(WatchEvent::Bookmark(_))) => {}
            Ok(Some(other)) => panic!("the open watch delivered {other:?}"),
        }
    }
    let refused = std::net::TcpStream::connect(("127.0.0.1", simulator.port()));
    assert!(refused.is_err(), "connections are refused during the outage");
    // kube-rs reconnects once the port is back, and the state survived.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match pods.get("keep").await {
            Ok(pod) => {
                assert_eq!(pod.metadata.name.as_deref(), Some("keep"));
                break;
            }
            Err(error) if tokio::time::Instant::now() < deadline => {
                assert!(status_code(&error).is_none(), "only connection errors while refusing: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("the simulator did not come back: {error}"),
        }
    }
}

#[tokio::test]
async fn reflector_survives_dropped_watches_and_gone() {
    let simulator = Simulator::start(&[
        "--history-size",
        "30",
        "--bookmark-interval-ms",
        "100",
        "--pod-start-delay-ms",
        "10",
    ]);
    let client = simulator.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    for index in 0..5 {
        pods.create(&PostParams::default(), &pod(&format!("p{index}"), "r")).await.unwrap();
    }

    let (reader, writer) = reflector::store::<Pod>();
    let (changes, mut changed) = tokio::sync::watch::channel((0u64, 0u64));
    let stream = reflector(writer, watcher(pods.clone(), watcher::Config::default())).default_backoff();
    let driver = tokio::spawn(async move {
        let mut stream = stream.boxed();
        while let Some(item) = stream.next().await {
            changes.send_modify(|(events, gones)| match &item {
                Ok(_) => *events += 1,
                Err(watcher::Error::WatchError(status)) if status.code == 410 => *gones += 1,
                Err(_) => {}
            });
        }
    });

    let server_names = || async {
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect::<BTreeSet<_>>()
    };
    let cached_names = |reader: &reflector::Store<Pod>| {
        reader.state().iter().map(|p| p.metadata.name.clone().unwrap()).collect::<BTreeSet<_>>()
    };
    let converge = |expected: BTreeSet<String>,
                    reader: reflector::Store<Pod>,
                    mut changed: tokio::sync::watch::Receiver<(u64, u64)>| async move {
        tokio::time::timeout(WAIT, async {
            while cached_names(&reader) != expected {
                changed.changed().await.expect("the reflector is running");
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!("the reflector never matched {expected:?}: it has {:?}", cached_names(&reader))
        });
    };

    converge(server_names().await, reader.clone(), changed.clone()).await;

    // Dropped watches: the watcher resumes from its last version and misses nothing.
    simulator.admin(&client, "POST", "faults", json!({"drop_watches_now": true})).await;
    for index in 5..8 {
        pods.create(&PostParams::default(), &pod(&format!("p{index}"), "r")).await.unwrap();
    }
    pods.delete("p0", &DeleteParams::default()).await.unwrap();
    converge(server_names().await, reader.clone(), changed.clone()).await;

    // Watches that close every few events still converge.
    simulator.admin(&client, "POST", "faults", json!({"close_watches_after_events": 2})).await;
    for index in 8..14 {
        pods.create(&PostParams::default(), &pod(&format!("p{index}"), "r")).await.unwrap();
    }
    converge(server_names().await, reader.clone(), changed.clone()).await;
    simulator.admin(&client, "POST", "faults", json!({"close_watches_after_events": 0})).await;

    // A forced 410: the history is gone, so the watcher must re-list, and changes made while it
    // was cut off still show up.
    let gones_before = changed.borrow().1;
    simulator.admin(&client, "POST", "faults", json!({"force_gone": true, "drop_watches_now": true})).await;
    pods.delete("p1", &DeleteParams::default()).await.unwrap();
    pods.create(&PostParams::default(), &pod("late", "r")).await.unwrap();
    let expected = server_names().await;
    converge(expected.clone(), reader.clone(), changed.clone()).await;
    tokio::time::timeout(WAIT, async {
        while changed.borrow().1 == gones_before {
            changed.changed().await.unwrap();
        }
    })
    .await
    .expect("the watcher saw a 410 Gone");
    assert!(expected.contains("late") && !expected.contains("p1"));
    let versions = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.metadata.name, p.metadata.resource_version))
        .collect::<BTreeSet<_>>();
    let cached_versions = reader
        .state()
        .iter()
        .map(|p| (p.metadata.name.clone(), p.metadata.resource_version.clone()))
        .collect::<BTreeSet<_>>();
    if versions != cached_versions {
        // Pods may still be moving to Running; wait for the cache to catch up with the server.
        converge(expected, reader.clone(), changed.clone()).await;
    }
    driver.abort();
}

#[tokio::test]
async fn streaming_list_watchers_get_initial_events() {
    let simulator = Simulator::start(&["--bookmark-interval-ms", "100", "--pod-start-delay-ms", "60000"]);
    let client = simulator.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client);
    for index in 0..3 {
        pods.create(&PostParams::default(), &pod(&format!("s{index}"), "s")).await.unwrap();
    }
    let mut stream = watcher(pods.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut initial = BTreeSet::new();
    loop {
        match tokio::time::timeout(WAIT, stream.try_next()).await.expect("an event in time").unwrap() {
            Some(watcher::Event::Init) => {}
            Some(watcher::Event::InitApply(pod)) => {
                initial.insert(pod.metadata.name.unwrap());
            }
            Some(watcher::Event::InitDone) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(initial, BTreeSet::from(["s0".to_string(), "s1".to_string(), "s2".to_string()]));
    pods.create(&PostParams::default(), &pod("after", "s")).await.unwrap();
    match tokio::time::timeout(WAIT, stream.try_next()).await.expect("an event in time").unwrap() {
        Some(watcher::Event::Apply(pod)) => assert_eq!(pod.metadata.name.as_deref(), Some("after")),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn orphaned_dependents_keep_living() {
    let simulator = Simulator::start(&[]);
    let client = simulator.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client);
    let owner = pods.create(&PostParams::default(), &pod("owner", "o")).await.unwrap();
    let reference =
        json!([{"apiVersion": "v1", "kind": "Pod", "name": "owner", "uid": owner.metadata.uid.unwrap()}]);
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "kept", "ownerReferences": reference}})).unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    pods.delete("owner", &DeleteParams::orphan()).await.unwrap();
    let kept = secrets.get("kept").await.unwrap();
    assert!(kept.metadata.owner_references.is_none_or(|r| r.is_empty()), "the owner reference is removed");
}
