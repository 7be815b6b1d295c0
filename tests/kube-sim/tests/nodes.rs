//! Node loss against the simulator: `kubectl delete node`, a node marked NotReady through
//! `/_sim/`, the Eviction subresource (kube-rs and `kubectl drain`) and `kubectl cordon`, with
//! a StatefulSet's pod coming back on another node each time.

mod common;

use common::eventually;

use common::Simulator;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, EvictParams, ListParams, PostParams};
use serde_json::json;

fn stateful_set(name: &str) -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]}}
        }
    }))
    .expect("a valid StatefulSet")
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The ready pod `name` whose UID is not `old_uid`: its node.
async fn ready_on(pods: &Api<Pod>, name: &str, old_uid: Option<&str>) -> (String, String) {
    eventually(&format!("{name} ready"), async || {
        let pod = pods.get_opt(name).await.ok()??;
        let uid = pod.metadata.uid.clone()?;
        let fresh = old_uid.is_none_or(|old| old != uid);
        let node = pod.spec.as_ref()?.node_name.clone()?;
        (fresh && is_ready(&pod)).then_some((uid, node))
    })
    .await
}

async fn has_event(client: &kube::Client, reason: &str, message: &str) -> bool {
    let events: Api<Event> = Api::all(client.clone());
    let listed = events.list(&ListParams::default().fields(&format!("reason={reason}"))).await.unwrap();
    listed.items.iter().any(|e| e.message.as_deref() == Some(message))
}

#[tokio::test]
async fn pods_of_a_deleted_or_not_ready_node_come_back_elsewhere() {
    let simulator = Simulator::start(&["--pod-start-delay-ms", "20", "--not-ready-eviction-ms", "300"]);
    let client = simulator.client().await;
    let sets: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    sets.create(&PostParams::default(), &stateful_set("web")).await.unwrap();
    let (uid, node) = ready_on(&pods, "web-0", None).await;

    // The node is deleted: its pod goes with it and the StatefulSet makes it again elsewhere.
    simulator.kubectl_ok(&["delete", "node", &node]);
    let (uid, second_node) = ready_on(&pods, "web-0", Some(&uid)).await;
    assert_ne!(second_node, node);

    // The next node stops being ready: tainted at once, its pod evicted after the toleration.
    let written =
        simulator.admin(&client, "POST", &format!("nodes/{second_node}"), json!({"ready": false})).await;
    let ready = written["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "False", "{written}");
    let tainted = eventually("the not-ready taints", async || {
        let node = nodes.get(&second_node).await.ok()?;
        node.spec?.taints.filter(|t| t.iter().any(|t| t.effect == "NoExecute"))
    })
    .await;
    assert!(tainted.iter().all(|t| t.key == "node.kubernetes.io/not-ready"), "{tainted:?}");
    assert!(
        has_event(&client, "NodeNotReady", &format!("Node {second_node} status is now: NodeNotReady")).await
    );
    let (_, third_node) = ready_on(&pods, "web-0", Some(&uid)).await;
    assert!(![node.as_str(), second_node.as_str()].contains(&third_node.as_str()), "{third_node}");
    assert!(has_event(&client, "TaintManagerEviction", "Marking for deletion Pod default/web-0").await);
    let listed = simulator.kubectl_ok(&["get", "nodes"]);
    assert!(listed.lines().any(|l| l.starts_with(&second_node) && l.contains("NotReady")), "{listed}");

    // Ready again: the taints go.
    simulator.admin(&client, "POST", &format!("nodes/{second_node}"), json!({"ready": true})).await;
    eventually("the taints removed", async || {
        nodes.get(&second_node).await.ok()?.spec?.taints.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn evictions_cordons_and_drains_move_pods() {
    let simulator = Simulator::start(&["--nodes", "2", "--pod-start-delay-ms", "20"]);
    let client = simulator.client().await;
    let sets: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    sets.create(&PostParams::default(), &stateful_set("web")).await.unwrap();
    let (uid, _) = ready_on(&pods, "web-0", None).await;

    // The Eviction subresource deletes the pod, with the condition saying why.
    pods.evict("web-0", &EvictParams::default()).await.unwrap();
    let (uid, _) = ready_on(&pods, "web-0", Some(&uid)).await;

    // A cordoned node takes no new pods; drain evicts what runs there.
    let (_, node) = ready_on(&pods, "web-0", None).await;
    let other = if node == "node-1" { "node-2" } else { "node-1" };
    simulator.kubectl_ok(&["cordon", &node]);
    let listed = simulator.kubectl_ok(&["get", "nodes"]);
    assert!(listed.lines().any(|l| l.starts_with(&node) && l.contains("SchedulingDisabled")), "{listed}");
    let drained = simulator.kubectl_ok(&["drain", &node, "--timeout=60s"]);
    assert!(drained.contains("evicted"), "{drained}");
    let (_, moved) = ready_on(&pods, "web-0", Some(&uid)).await;
    assert_eq!(moved, other);
    for index in 0..3 {
        let pod = common::pod(&format!("extra-{index}"), "extra");
        let created = pods.create(&PostParams::default(), &pod).await.unwrap();
        assert_eq!(created.spec.unwrap().node_name.as_deref(), Some(other), "the cordoned node is avoided");
    }
    simulator.kubectl_ok(&["uncordon", &node]);
}

#[tokio::test]
async fn a_pod_with_no_node_to_go_to_waits_for_one() {
    let simulator =
        Simulator::start(&["--nodes", "1", "--pod-start-delay-ms", "20", "--not-ready-eviction-ms", "100"]);
    let client = simulator.client().await;
    let sets: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    sets.create(&PostParams::default(), &stateful_set("web")).await.unwrap();
    let (uid, _) = ready_on(&pods, "web-0", None).await;
    simulator.admin(&client, "POST", "nodes/node-1", json!({"ready": false})).await;
    // Evicted, and made again with nowhere to run: Pending and Unschedulable.
    eventually("the replacement unschedulable", async || {
        let pod = pods.get_opt("web-0").await.ok()??;
        let conditions = pod.status?.conditions?;
        let unschedulable = conditions.iter().any(|c| c.reason.as_deref() == Some("Unschedulable"));
        (pod.metadata.uid.as_deref() != Some(uid.as_str()) && unschedulable).then_some(())
    })
    .await;
    simulator.admin(&client, "POST", "nodes/node-1", json!({"ready": true})).await;
    let (_, node) = ready_on(&pods, "web-0", Some(&uid)).await;
    assert_eq!(node, "node-1");
}
