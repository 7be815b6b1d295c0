//! The simulated kubelet's containers through the `/_sim/` actions, with kube-rs: an exit under
//! each restart policy with the crash-loop back-off, probe results in the pod's conditions and
//! Events, and `activeDeadlineSeconds`.

mod common;

use common::eventually;

use common::Simulator;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

fn pod(name: &str, restart_policy: &str, extra_container: Value) -> Pod {
    let mut container = json!({"name": "main", "image": "busybox:1"});
    if let (Some(container), Some(extra)) = (container.as_object_mut(), extra_container.as_object()) {
        container.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"restartPolicy": restart_policy, "containers": [container]}
    }))
    .expect("a valid pod")
}

fn container(pod: &Pod) -> ContainerStatus {
    pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).expect("container statuses")[0].clone()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until `name` runs with `restarts` restarts and is ready.
async fn running(pods: &Api<Pod>, name: &str, restarts: i32) -> Pod {
    eventually(&format!("{name} running after {restarts} restarts"), async || {
        let pod = pods.get(name).await.ok()?;
        let status = container(&pod);
        (status.state.as_ref()?.running.is_some() && status.restart_count == restarts && is_ready(&pod))
            .then_some(pod)
    })
    .await
}

async fn exit(simulator: &Simulator, client: &kube::Client, name: &str, code: i64) -> Value {
    simulator.admin(client, "POST", &format!("pods/default/{name}/exit"), json!({"exit_code": code})).await
}

async fn events(client: &kube::Client, name: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::default_namespaced(client.clone());
    let selector = format!("involvedObject.name={name}");
    let listed = events.list(&ListParams::default().fields(&selector)).await.expect("listing events");
    listed.items.into_iter().map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default())).collect()
}

#[tokio::test]
async fn exits_follow_the_restart_policy_with_a_doubling_back_off() {
    let simulator = Simulator::start(&["--pod-start-delay-ms", "20", "--crash-loop-backoff-ms", "100"]);
    let client = simulator.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());

    pods.create(&PostParams::default(), &pod("always", "Always", json!({}))).await.unwrap();
    running(&pods, "always", 0).await;
    let written = exit(&simulator, &client, "always", 1).await;
    let status = &written["status"]["containerStatuses"][0];
    assert_eq!(status["state"]["waiting"]["reason"], "CrashLoopBackOff", "{written}");
    assert!(
        status["state"]["waiting"]["message"].as_str().unwrap().starts_with("back-off 100ms"),
        "{status}"
    );
    assert_eq!(status["restartCount"], 1);
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(status["lastState"]["terminated"]["reason"], "Error");
    assert_eq!(written["status"]["phase"], "Running");
    running(&pods, "always", 1).await;
    // Exiting 0 restarts an Always container too, after twice the back-off.
    let written = exit(&simulator, &client, "always", 0).await;
    let status = &written["status"]["containerStatuses"][0];
    assert!(
        status["state"]["waiting"]["message"].as_str().unwrap().starts_with("back-off 200ms"),
        "{status}"
    );
    assert_eq!(status["lastState"]["terminated"]["reason"], "Completed");
    running(&pods, "always", 2).await;
    let recorded = events(&client, "always").await;
    assert!(
        recorded.iter().any(|(reason, message)| reason == "BackOff"
            && message.starts_with("Back-off restarting failed container main in pod always_default")),
        "{recorded:?}"
    );

    pods.create(&PostParams::default(), &pod("on-failure", "OnFailure", json!({}))).await.unwrap();
    running(&pods, "on-failure", 0).await;
    exit(&simulator, &client, "on-failure", 2).await;
    running(&pods, "on-failure", 1).await;
    let written = exit(&simulator, &client, "on-failure", 0).await;
    assert_eq!(written["status"]["phase"], "Succeeded", "{written}");
    assert_eq!(written["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 0);

    pods.create(&PostParams::default(), &pod("never", "Never", json!({}))).await.unwrap();
    running(&pods, "never", 0).await;
    let written = exit(&simulator, &client, "never", 3).await;
    assert_eq!(written["status"]["phase"], "Failed", "{written}");
    assert_eq!(written["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 3);
    let failed = pods.get("never").await.unwrap();
    assert_eq!(container(&failed).restart_count, 0);
    assert!(!is_ready(&failed));
    // A container that is not running cannot exit.
    let (code, answer) = common::raw_post(
        simulator.port(),
        "/_sim/pods/default/never/exit",
        "application/json",
        r#"{"exit_code": 1}"#,
    );
    assert_eq!(code, 400, "{answer}");
}

#[tokio::test]
async fn job_pods_that_exit_complete_or_fail_the_job() {
    let simulator = Simulator::start(&["--pod-start-delay-ms", "20", "--crash-loop-backoff-ms", "50"]);
    let client = simulator.client().await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let job = |name: &str, policy: &str| -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"backoffLimit": 1, "template": {"spec": {"restartPolicy": policy,
                "containers": [{"name": "main", "image": "busybox:1"}]}}}
        }))
        .unwrap()
    };
    let pod_of = async |job: &str, restarts: i32| {
        eventually("the Job's pod", async || {
            let listed = pods.list(&ListParams::default().labels(&format!("job-name={job}"))).await.ok()?;
            listed.items.into_iter().find(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && is_ready(p)
                    && container(p).restart_count == restarts
            })
        })
        .await
        .metadata
        .name
        .unwrap()
    };
    let condition = async |name: &str| {
        eventually(&format!("{name} finished"), async || {
            let job = jobs.get(name).await.ok()?;
            job.status?
                .conditions?
                .into_iter()
                .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
        .await
    };

    // OnFailure: a failure restarts the container in place; exiting 0 completes the Job.
    jobs.create(&PostParams::default(), &job("succeeds", "OnFailure")).await.unwrap();
    let name = pod_of("succeeds", 0).await;
    exit(&simulator, &client, &name, 1).await;
    assert_eq!(pod_of("succeeds", 1).await, name, "restarted in the same pod");
    exit(&simulator, &client, &name, 0).await;
    assert_eq!(condition("succeeds").await.type_, "Complete");

    // Never: each failure is a failed pod; past backoffLimit 1 the Job fails.
    jobs.create(&PostParams::default(), &job("fails", "Never")).await.unwrap();
    let first = pod_of("fails", 0).await;
    exit(&simulator, &client, &first, 1).await;
    let second = eventually("a second pod", async || {
        let listed = pods.list(&ListParams::default().labels("job-name=fails")).await.ok()?;
        listed.items.into_iter().find(|p| p.metadata.name.as_deref() != Some(&first) && is_ready(p))
    })
    .await;
    exit(&simulator, &client, second.metadata.name.as_deref().unwrap(), 1).await;
    let failed = condition("fails").await;
    assert_eq!((failed.type_.as_str(), failed.reason.as_deref()), ("Failed", Some("BackoffLimitExceeded")));
}

#[tokio::test]
async fn probe_results_set_readiness_and_liveness_restarts() {
    let simulator = Simulator::start(&["--pod-start-delay-ms", "20", "--crash-loop-backoff-ms", "50"]);
    let client = simulator.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let probe = json!({"httpGet": {"port": 8000, "path": "/healthz"}, "periodSeconds": 1});
    let probed = pod("probed", "Always", json!({"readinessProbe": probe, "livenessProbe": probe}));
    let created = pods.create(&PostParams::default(), &probed).await.unwrap();
    let stored = &created.spec.as_ref().unwrap().containers[0];
    assert_eq!(stored.readiness_probe.as_ref().unwrap().period_seconds, Some(1));
    // Ready once started: the simulator runs no probes, a test sets their results.
    running(&pods, "probed", 0).await;

    let failing = json!({"readiness": false, "message": "HTTP probe failed with statuscode: 503"});
    let written = simulator.admin(&client, "POST", "pods/default/probed/probes", failing).await;
    assert_eq!(written["status"]["containerStatuses"][0]["ready"], false, "{written}");
    let unready = pods.get("probed").await.unwrap();
    let conditions = unready.status.as_ref().unwrap().conditions.clone().unwrap();
    for kind in ["Ready", "ContainersReady"] {
        let condition = conditions.iter().find(|c| c.type_ == kind).unwrap();
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_deref()),
            ("False", Some("ContainersNotReady"))
        );
    }
    assert_eq!(unready.status.unwrap().phase.as_deref(), Some("Running"));
    let table = simulator.kubectl_ok(&["get", "pod", "probed"]);
    assert!(table.contains("0/1") && table.contains("Running"), "{table}");
    let recorded = events(&client, "probed").await;
    assert!(
        recorded.contains(&(
            "Unhealthy".into(),
            "Readiness probe failed: HTTP probe failed with statuscode: 503".into()
        )),
        "{recorded:?}"
    );
    simulator.admin(&client, "POST", "pods/default/probed/probes", json!({"readiness": true})).await;
    running(&pods, "probed", 0).await;

    let dead = json!({"liveness": false, "message": "HTTP probe failed with statuscode: 500"});
    let written = simulator.admin(&client, "POST", "pods/default/probed/probes", dead).await;
    let status = &written["status"]["containerStatuses"][0];
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 137, "{written}");
    assert_eq!(status["lastState"]["terminated"]["reason"], "Error");
    assert_eq!(status["state"]["waiting"]["reason"], "CrashLoopBackOff");
    running(&pods, "probed", 1).await;
    let recorded = events(&client, "probed").await;
    for wanted in [
        ("Unhealthy", "Liveness probe failed: HTTP probe failed with statuscode: 500"),
        ("Killing", "Container main failed liveness probe, will be restarted"),
    ] {
        assert!(recorded.contains(&(wanted.0.into(), wanted.1.into())), "{wanted:?} in {recorded:?}");
    }

    // Validated like the API server: exactly one handler.
    let invalid = pod("invalid", "Always", json!({"readinessProbe": {"periodSeconds": 1}}));
    let error = pods.create(&PostParams::default(), &invalid).await.unwrap_err();
    let kube::Error::Api(status) = error else { panic!("{error:?}") };
    assert_eq!(status.code, 422);
    assert_eq!(status.details.unwrap().causes[0].field, "spec.containers[0].readinessProbe");
}

#[tokio::test]
async fn a_pod_past_its_active_deadline_fails() {
    let simulator = Simulator::start(&["--pod-start-delay-ms", "20"]);
    let client = simulator.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let mut bounded = pod("bounded", "Never", json!({}));
    bounded.spec.as_mut().unwrap().active_deadline_seconds = Some(1);
    pods.create(&PostParams::default(), &bounded).await.unwrap();
    running(&pods, "bounded", 0).await;
    let failed = eventually("the pod failed", async || {
        let pod = pods.get("bounded").await.ok()?;
        let status = pod.status.clone()?;
        (status.phase.as_deref() == Some("Failed")).then_some(pod)
    })
    .await;
    let status = failed.status.as_ref().unwrap();
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
    assert!(container(&failed).state.unwrap().terminated.is_some());
    let recorded = events(&client, "bounded").await;
    assert!(
        recorded.contains(&(
            "DeadlineExceeded".into(),
            "Pod was active on the node longer than the specified deadline".into()
        )),
        "{recorded:?}"
    );
    let mut invalid = pod("invalid", "Never", json!({}));
    invalid.spec.as_mut().unwrap().active_deadline_seconds = Some(0);
    let error = pods.create(&PostParams::default(), &invalid).await.unwrap_err();
    assert!(matches!(&error, kube::Error::Api(status) if status.code == 422), "{error:?}");
}
