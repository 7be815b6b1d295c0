//! The join that makes a process's info: its Pod, its Service and the Node it runs on, and
//! whether the process is half-made (see [`missing`]).

use super::IndexState;
use super::entries::{NodeEntry, PodEntry, ServiceEntry};
use crate::runtime::kube::manifests;
use crate::spec::{ProcessInfo, ProcessStatus, SocketAddress};

/// The reason a half-made process shows: its Pod is there, something it needs is not.
pub const INCOMPLETE: &str = "Incomplete";

/// The container waiting reason of a Pod whose env Secret (or a key of it) is missing: the
/// kubelet cannot make the container until the Secret is there.
const CONFIG_ERROR: &str = "CreateContainerConfigError";

/// A process's info from its Pod, Service and Node; `None` when it has no Pod. `dns_suffix` is
/// what follows the name in a private address's DNS name.
pub(super) fn process_info(state: &IndexState, dns_suffix: &str, name: &str) -> Option<ProcessInfo> {
    let pod = state.pods.live.get(name)?;
    let service = state.services.live.get(name);
    let node = pod.node_name.as_deref().and_then(|node| state.nodes.live.get(node));
    // A Start of this server making it now will make what it lacks: that is no half-made process.
    let half_made = if state.making.contains(name) { None } else { half_made(name, pod, service) };
    let service = service.filter(|service| belongs_to(service, pod));
    let mut info = ProcessInfo {
        process_name: name.into(),
        group: pod.group.as_deref().map(Into::into),
        socket_addresses: addresses(name, dns_suffix, service, node),
        created: pod.created,
        status: pod.state.status,
        reason: pod.state.reason.as_deref().map(Into::into),
        message: pod.state.message.clone(),
        restart_count: pod.state.restart_count,
        exit_code: pod.state.exit_code,
        node: pod.node_name.as_deref().map(Into::into),
        labels: pod.labels.clone(),
    };
    if let Some(message) = half_made {
        // STARTING, not RUNNING with no address: it cannot be reached until it is finished.
        info.status = ProcessStatus::Starting;
        info.reason = Some(INCOMPLETE.into());
        info.message = Some(message);
    }
    Some(info)
}

/// Why a live process is half-made, naming what its Pod needs and lacks: its Service (none, or
/// one owned by an earlier Pod of the same name) and its Secrets. Secrets are not watched
/// (Hydroplane may create them, not read them back), but they are created before the Service,
/// so a Service owned by the Pod vouches for them; without one they may be missing, and the
/// kubelet's `CreateContainerConfigError` naming the env Secret says it is. `None` for a complete
/// process, and for one that is stopping, has ended or failed for another reason.
pub(super) fn half_made(name: &str, pod: &PodEntry, service: Option<&ServiceEntry>) -> Option<String> {
    let secret_error = pod.state.reason.as_deref() == Some(CONFIG_ERROR);
    if !matches!(pod.state.status, ProcessStatus::Starting | ProcessStatus::Running) && !secret_error {
        return None;
    }
    let service_missing = pod.needs.service && !service.is_some_and(|service| belongs_to(service, pod));
    let env_secret = manifests::env_secret_name(name);
    let env_secret_missing = secret_error
        && pod.needs.env_secret
        && pod.state.message.as_deref().is_some_and(|message| message.contains(&format!("\"{env_secret}\"")));
    let mut missing = Vec::new();
    let mut maybe = Vec::new();
    if service_missing {
        missing.push(format!("Service `{name}`"));
    }
    if env_secret_missing {
        missing.push(format!("Secret `{env_secret}`"));
    } else if pod.needs.env_secret && service_missing {
        maybe.push(format!("Secret `{env_secret}`"));
    }
    if pod.needs.registry_secret && service_missing {
        maybe.push(format!("Secret `{}`", manifests::registry_secret_name(name)));
    }
    if missing.is_empty() {
        return None;
    }
    let maybe =
        if maybe.is_empty() { String::new() } else { format!(" (and perhaps its {})", maybe.join(" and ")) };
    Some(format!(
        "half-made: its {} {} missing{maybe}, since the Start that made it did not finish; retrying the same Start finishes it",
        missing.join(" and "),
        if missing.len() == 1 { "is" } else { "are" },
    ))
}

/// Whether a Service is the Pod's: owned by it, or by no Pod at all (made by hand to match).
/// One owned by another uid was an earlier Pod's of the same name, and is about to be collected.
fn belongs_to(service: &ServiceEntry, pod: &PodEntry) -> bool {
    service.owner_uid.as_ref().is_none_or(|owner| *owner == pod.uid)
}

/// Public: the node the pod runs on (its ExternalIP, else its InternalIP) and the NodePort, only
/// that node, as the Hydroplane guide explains. Private: the ClusterIP and port, with the DNS
/// name. None before the pod is scheduled (public) or the Service has its IP (private).
fn addresses(
    name: &str,
    dns_suffix: &str,
    service: Option<&ServiceEntry>,
    node: Option<&NodeEntry>,
) -> Vec<SocketAddress> {
    let Some(service) = service else { return Vec::new() };
    if service.node_port {
        let Some(host) = node
            .and_then(|node| node.external_ip.as_deref().or(node.internal_ip.as_deref()))
            .map(compact_str::CompactString::from)
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
                host: (**cluster_ip).into(),
                port: *port,
                is_public: false,
                dns_name: Some([name, dns_suffix].concat()),
            })
            .collect()
    }
}
