//! How public processes are reached (`runtime.public_exposure`), end to end on the simulator:
//! with `load_balancer`, a LoadBalancer Service with the configured annotations, the process
//! STARTING until the Service's status has the load balancer's address (given here as a cloud's
//! controller gives it, by writing the Service's status) and RUNNING at that address after; with
//! `node_port` on nodes without an ExternalIP (private subnets), the node's InternalIP marked
//! not public, and why, never an invented public address; and the warning at start-up.

use std::time::Duration;

use hydroplane::proto;
use tonic::Code;

use crate::common::requests::start_request;
use crate::common::watch::Watch;
use crate::common::{self, KubeSim, Server};

/// A public process with one port.
fn public(name: &str) -> serde_json::Value {
    serde_json::json!({
        "process_name": name,
        "container": {"image_uri": "nginx", "ports": [{"container_port": 80}]},
        "has_public_ip": true
    })
}

/// Start, answered once the process runs, or after `seconds`.
fn start_waiting(spec: serde_json::Value, seconds: i64) -> proto::StartRequest {
    proto::StartRequest {
        wait: true,
        wait_timeout: Some(prost_types::Duration { seconds, nanos: 0 }),
        ..start_request(spec)
    }
}

const NLB: &str = "service.beta.kubernetes.io/aws-load-balancer-type";

#[tokio::test(flavor = "multi_thread")]
async fn a_load_balanced_process_is_starting_until_its_load_balancer_has_an_address() {
    let sim = KubeSim::start(&["--pod-start-delay-ms", "50"]);
    let settings =
        format!("  public_exposure: load_balancer\n  load_balancer_annotations:\n    {NLB}: external\n");
    let server = Server::start_with_config(sim.directory(), &sim.hydroplane_config(&settings));
    let mut client = server.client().await;

    // The Pod runs within 50 ms, but the process does not: its load balancer has no address.
    let waited = client.start(start_waiting(public("web"), 3)).await.expect_err("not running yet");
    assert_eq!(waited.code(), Code::DeadlineExceeded, "{waited:?}");
    sim.kubectl(&["wait", "--for=jsonpath={.status.phase}=Running", "pod/web-0", "--timeout=30s"]);
    let service: serde_json::Value =
        serde_json::from_str(&sim.kubectl(&["get", "service", "web", "-o", "json"])).expect("JSON");
    assert_eq!(service["spec"]["type"], "LoadBalancer", "{service:#}");
    assert_eq!(service["metadata"]["annotations"][NLB], "external", "{service:#}");
    let mut watch = Watch::process(&mut client, "web").await;
    let starting = watch
        .until_process("web", "STARTING, waiting for the load balancer", |_, process| {
            process.reason() == "LoadBalancerPending"
        })
        .await;
    assert_eq!(starting.status(), proto::ProcessStatus::Starting);
    assert!(starting.socket_addresses.is_empty(), "{starting:?}");

    // The cloud's controller writes the load balancer's address into the Service's status.
    let hostname = "k8s-default-web-0123456789.elb.us-east-1.amazonaws.com";
    let status = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"hostname": hostname}]}}});
    sim.kubectl(&[
        "patch",
        "service",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
    let running = watch
        .until_process("web", "RUNNING at the load balancer", |_, process| {
            process.status() == proto::ProcessStatus::Running
        })
        .await;
    let addresses: Vec<_> = running
        .socket_addresses
        .iter()
        .map(|address| (address.host.as_str(), address.port, address.is_public))
        .collect();
    assert_eq!(addresses, [(hostname, 80, true)]);
    let started = client.start(start_waiting(public("web"), 30)).await.expect("running").into_inner();
    assert!(!started.created);
}

#[tokio::test(flavor = "multi_thread")]
async fn on_nodes_without_an_external_ip_a_node_port_is_not_reported_as_public() {
    let sim = KubeSim::start(&["--pod-start-delay-ms", "50", "--nodes-without-external-ip"]);
    let server = Server::start_with_config(sim.directory(), &sim.hydroplane_config(""));
    let mut client = server.client().await;
    let started = client.start(start_waiting(public("web"), 30)).await.expect("running").into_inner();
    let process = started.process.expect("process");
    assert_eq!(process.status(), proto::ProcessStatus::Running, "{process:?}");
    assert!(!process.socket_addresses.is_empty(), "{process:?}");
    for address in &process.socket_addresses {
        assert!(!address.is_public, "{process:?}");
        assert!(address.host.starts_with("10.0.0."), "the node's InternalIP, nothing invented: {process:?}");
    }
    assert_eq!(process.reason.as_deref(), Some("NoExternalIP"));
    let detail = common::hpctl_json(&server, &["describe", "web"]);
    let message = detail["process"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("has no ExternalIP") && message.contains("public_exposure: load_balancer"),
        "{detail:#}"
    );
    // Said once at start-up too, for every public process to come.
    common::eventually("the start-up warning", Duration::from_secs(10), async || {
        server.stderr().contains("no node of the cluster has an ExternalIP")
    })
    .await;
}
