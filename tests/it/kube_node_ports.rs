//! NodePorts run out: a cluster hands out NodePorts from one range (the simulator's
//! `--service-node-port-range`, as the API server's flag), and a public process past it is
//! RESOURCE_EXHAUSTED naming the range and how many of its ports are in use; stopping one frees
//! a port for the next. The metrics show how many NodePorts Hydroplane's Services hold.

use tonic::Code;

use crate::common::requests::{start_request, stop_process};
use crate::common::{self, KubeSim, Server};

/// A public process with one port: a Pod and a NodePort Service.
fn public(name: &str) -> hydroplane::proto::StartRequest {
    start_request(serde_json::json!({
        "process_name": name,
        "group": "ports",
        "container": {"image_uri": "nginx", "ports": [{"container_port": 80}]},
        "has_public_ip": true
    }))
}

/// The value of an unlabelled gauge, from one scrape of the server's metrics.
async fn gauge(server: &Server, name: &str) -> Option<f64> {
    let (_, response) = common::http_get(&server.metrics_address().await, "/metrics");
    response.lines().find_map(|line| line.strip_prefix(&format!("{name} "))?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_eleventh_public_process_on_a_range_of_ten_is_resource_exhausted_naming_the_range() {
    let sim = KubeSim::start(&["--service-node-port-range", "30000-30009"]);
    let server = Server::start_with_config(
        sim.directory(),
        &sim.hydroplane_config("metrics:\n  listen: 127.0.0.1:0\n"),
    );
    let mut client = server.client().await;
    for index in 0..10 {
        client
            .start(public(&format!("web-{index}")))
            .await
            .unwrap_or_else(|status| panic!("web-{index}: {status:?}"));
    }
    let refused = client.start(public("web-10")).await.expect_err("no NodePort is left");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let message = refused.message();
    assert!(message.contains("all 10 NodePorts of the cluster's range 30000-30009 are in use"), "{message}");
    assert!(message.contains("10 by Hydroplane's public processes"), "{message}");
    assert!(message.contains("runtime.public_exposure: load_balancer"), "{message}");
    // The refused Start left nothing behind, and the dry run that learnt the range made nothing.
    common::eventually("the refused Start's Pod is gone", std::time::Duration::from_secs(30), async || {
        !sim.names("pods").contains(&"web-10".to_owned())
    })
    .await;
    assert_eq!(sim.names("services").len(), 10, "{:?}", sim.names("services"));
    assert_eq!(gauge(&server, "hydroplane_kube_node_ports_in_use").await, Some(10.0));

    // Stopping one gives its port back, once its Service is gone.
    client.stop(stop_process("web-3")).await.expect("stop web-3");
    sim.wait_deleted(&["service/web-3"]);
    client.start(public("web-10")).await.expect("a port is free again");
    let node_port = sim.kubectl(&["get", "service", "web-10", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    let node_port: u16 = node_port.trim().parse().expect("a NodePort");
    assert!((30000..=30009).contains(&node_port), "{node_port}");
}
