//! The join that makes a process's info: its Pod, its Service and the Node it runs on, and
//! whether the process is half-made (see [`missing`]).

use super::IndexState;
use super::entries::{LoadBalancer, NodeEntry, PodEntry, ServiceEntry};
use crate::runtime::kube::manifests;
use crate::spec::{ProcessInfo, ProcessStatus, SocketAddress};

/// The reason a half-made process shows: its Pod is there, something it needs is not.
pub const INCOMPLETE: &str = "Incomplete";

/// The reason a public process on a LoadBalancer Service shows until its load balancer has an
/// address: STARTING, since no one can reach it yet.
pub const LOAD_BALANCER_PENDING: &str = "LoadBalancerPending";

/// The reason a public process on a NodePort Service shows when its node has no ExternalIP:
/// running, but its address is not public.
pub const NO_EXTERNAL_IP: &str = "NoExternalIP";

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
    let (socket_addresses, exposure) = addresses(name, dns_suffix, service, pod.node_name.as_deref(), node);
    let mut info = ProcessInfo {
        process_name: name.into(),
        group: pod.group.as_deref().map(Into::into),
        socket_addresses,
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
    } else if let Some(note) = exposure
        && matches!(info.status, ProcessStatus::Starting | ProcessStatus::Running)
        && (info.reason.is_none() || info.status == ProcessStatus::Running)
    {
        let (reason, message) = match note {
            // STARTING until the load balancer can be reached, as a half-made process is.
            ExposureNote::LoadBalancerPending => {
                info.status = ProcessStatus::Starting;
                (
                    LOAD_BALANCER_PENDING,
                    "waiting for the address of its load balancer (the Service's status.loadBalancer.ingress); \
                     a cluster without a load balancer controller never gives one"
                        .to_owned(),
                )
            }
            ExposureNote::NoExternalIp(node) => (
                NO_EXTERNAL_IP,
                format!(
                    "public, but its node `{node}` has no ExternalIP: its NodePort is reachable only inside the \
                     cluster's network, at the node's InternalIP; give the nodes public addresses or set \
                     runtime.public_exposure: load_balancer"
                ),
            ),
        };
        info.reason = Some(reason.into());
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

/// What a process's addresses leave to say about how it is exposed.
#[derive(Debug, PartialEq)]
enum ExposureNote<'a> {
    /// Its load balancer has no address yet.
    LoadBalancerPending,
    /// Its node (named) has no ExternalIP: the address given is not public.
    NoExternalIp(&'a str),
}

/// Public on a NodePort: the node the pod runs on and the NodePort, only that node, as the
/// Hydroplane guide explains: its ExternalIP, or, on a node without one, its InternalIP marked
/// not public (never an invented address). Public on a LoadBalancer: the load balancer's address
/// and the Service's ports, once it has one. Private: the ClusterIP and port, with the DNS name.
/// None before the pod is scheduled (NodePort) or the Service has its IP (private).
fn addresses<'a>(
    name: &str,
    dns_suffix: &str,
    service: Option<&ServiceEntry>,
    node_name: Option<&'a str>,
    node: Option<&NodeEntry>,
) -> (Vec<SocketAddress>, Option<ExposureNote<'a>>) {
    let Some(service) = service else { return (Vec::new(), None) };
    if let LoadBalancer::At(host) = &service.load_balancer {
        let host = compact_str::CompactString::from(&**host);
        let addresses = service
            .ports
            .iter()
            .map(|(port, _)| SocketAddress {
                host: host.clone(),
                port: *port,
                is_public: true,
                dns_name: None,
            })
            .collect();
        return (addresses, None);
    }
    if service.load_balancer == LoadBalancer::Pending {
        return (Vec::new(), Some(ExposureNote::LoadBalancerPending));
    }
    if service.node_port {
        let Some(node) = node else { return (Vec::new(), None) };
        let (host, is_public) = match (&node.external_ip, &node.internal_ip) {
            (Some(external), _) => (external, true),
            (None, Some(internal)) => (internal, false),
            (None, None) => return (Vec::new(), None),
        };
        let host = compact_str::CompactString::from(host.as_str());
        let addresses = service
            .ports
            .iter()
            .filter_map(|(_, node_port)| *node_port)
            .map(|port| SocketAddress { host: host.clone(), port, is_public, dns_name: None })
            .collect();
        let note = (!is_public).then(|| ExposureNote::NoExternalIp(node_name.unwrap_or_default()));
        (addresses, note)
    } else {
        let Some(cluster_ip) = &service.cluster_ip else { return (Vec::new(), None) };
        let addresses = service
            .ports
            .iter()
            .map(|(port, _)| SocketAddress {
                host: (**cluster_ip).into(),
                port: *port,
                is_public: false,
                dns_name: Some([name, dns_suffix].concat()),
            })
            .collect();
        (addresses, None)
    }
}
