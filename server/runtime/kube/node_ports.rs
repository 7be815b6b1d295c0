//! When a cluster's NodePorts run out. The API server hands NodePorts out of one range per
//! cluster (`--service-node-port-range`, 30000-32767 unless changed: 2,768 ports), and once
//! every port of it is taken it refuses a NodePort Service with an internal error (`failed to
//! allocate a nodePort: range is full`), which names neither the range nor the way out. A Start
//! that meets it is RESOURCE_EXHAUSTED saying both: the range is learnt by asking the API server
//! to validate, without creating anything (`dryRun`), a Service asking for port 1, which it
//! refuses naming the range (`The range of valid ports is 30000-32767`); and a full range has
//! all its ports in use.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// Whether the API server refused a Service because no NodePort is left.
pub fn is_exhausted(response: &kube::core::Status) -> bool {
    response.message.contains("failed to allocate a nodePort")
}

/// The range an API server names when it refuses a NodePort outside it.
pub fn range_in(message: &str) -> Option<(u16, u16)> {
    const NAMED: &str = "The range of valid ports is ";
    let start = message.find(NAMED)? + NAMED.len();
    let range: String = message[start..].chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect();
    let (low, high) = range.split_once('-')?;
    Some((low.parse().ok()?, high.parse().ok()?))
}

/// The cluster's NodePort range, from the API server's refusal of a dry-run Service asking for
/// port 1; `None` when it does not say (a range that takes in port 1, an API server that
/// answers otherwise).
pub async fn probe_range(client: Client, namespace: &str) -> Option<(u16, u16)> {
    let probe = Service {
        metadata: ObjectMeta {
            name: Some("hydroplane-node-port-range-probe".to_owned()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("NodePort".to_owned()),
            ports: Some(vec![ServicePort { port: 80, node_port: Some(1), ..Default::default() }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let services: Api<Service> = Api::namespaced(client, namespace);
    let params = PostParams { dry_run: true, ..Default::default() };
    match services.create(&params, &probe).await {
        Err(kube::Error::Api(response)) => range_in(&response.message),
        _ => None,
    }
}

/// The message of a Start that got no NodePort: the range and how many of its ports are in use
/// (all: it is full), how many Hydroplane's own Services hold, and what to do.
pub fn exhausted_message(process: &str, range: Option<(u16, u16)>, ours: usize, namespace: &str) -> String {
    let range = match range {
        Some((low, high)) => format!(
            "all {} NodePorts of the cluster's range {low}-{high} are in use",
            u32::from(high) - u32::from(low) + 1
        ),
        None => "every NodePort of the cluster's range (30000-32767 unless its API server was given \
                 another --service-node-port-range) is in use"
            .to_owned(),
    };
    format!(
        "process `{process}` is public and needs a NodePort, but {range} ({ours} by Hydroplane's public \
         processes in namespace `{namespace}`); stop some public processes, widen the range \
         (the API server's --service-node-port-range; EKS does not let it be changed), or set \
         runtime.public_exposure: load_balancer (a load balancer per public process) or none"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_is_read_from_the_api_servers_refusal() {
        let refusal = "Service \"p\" is invalid: spec.ports[0].nodePort: Invalid value: 1: provided port is \
                       not in the valid range. The range of valid ports is 30000-32767";
        assert_eq!(range_in(refusal), Some((30000, 32767)));
        assert_eq!(range_in("The range of valid ports is 31000-31009."), Some((31000, 31009)));
        assert_eq!(range_in("provided port is already allocated"), None);
    }

    #[test]
    fn the_message_names_the_range_its_use_and_the_ways_out() {
        let message = exhausted_message("web-11", Some((30000, 30009)), 10, "default");
        assert!(
            message.contains("all 10 NodePorts of the cluster's range 30000-30009 are in use"),
            "{message}"
        );
        assert!(message.contains("10 by Hydroplane's public processes in namespace `default`"), "{message}");
        assert!(message.contains("runtime.public_exposure: load_balancer"), "{message}");
        let unknown = exhausted_message("web", None, 3, "procs");
        assert!(unknown.contains("30000-32767 unless"), "{unknown}");
    }
}
