//! The join that makes a process's info: its Pod, its Service and the Node it runs on.

use super::IndexState;
use super::entries::{NodeEntry, ServiceEntry};
use crate::spec::{ProcessInfo, SocketAddress};

/// A process's info from its Pod, Service and Node; `None` when it has no Pod.
pub(super) fn process_info(state: &IndexState, namespace: &str, name: &str) -> Option<ProcessInfo> {
    let pod = state.pods.live.get(name)?;
    let service = state.services.live.get(name);
    let node = pod.node_name.as_ref().and_then(|node| state.nodes.live.get(node));
    Some(ProcessInfo {
        process_name: name.to_owned(),
        group: pod.group.clone(),
        socket_addresses: addresses(name, namespace, service, node),
        created: pod.created,
        status: pod.state.status,
        reason: pod.state.reason.clone(),
        message: pod.state.message.clone(),
        restart_count: pod.state.restart_count,
        exit_code: pod.state.exit_code,
        node: pod.node_name.clone(),
    })
}

/// Public: the node the pod runs on (its ExternalIP, else its InternalIP) and the NodePort, only
/// that node, as the Hydroplane guide explains. Private: the ClusterIP and port, with the DNS
/// name. None before the pod is scheduled (public) or the Service has its IP (private).
fn addresses(
    name: &str,
    namespace: &str,
    service: Option<&ServiceEntry>,
    node: Option<&NodeEntry>,
) -> Vec<SocketAddress> {
    let Some(service) = service else { return Vec::new() };
    if service.node_port {
        let Some(host) = node.and_then(|node| node.external_ip.clone().or_else(|| node.internal_ip.clone()))
        else {
            return Vec::new();
        };
        service
            .ports
            .iter()
            .filter_map(|(_, node_port)| *node_port)
            .map(|port| SocketAddress { host: host.clone(), port, is_public: true, dns_name: None })
            .collect()
    } else {
        let Some(cluster_ip) = &service.cluster_ip else { return Vec::new() };
        service
            .ports
            .iter()
            .map(|(port, _)| SocketAddress {
                host: cluster_ip.clone(),
                port: *port,
                is_public: false,
                dns_name: Some(format!("{name}.{namespace}.svc.cluster.local")),
            })
            .collect()
    }
}
