//! The join that makes a process's info: its StatefulSet or Job, its current Pod, its Service
//! and the Node it runs on, and whether the process is half-made (see [`half_made`]).

use super::entries::{LoadBalancer, NodeEntry, PodEntry, ServiceEntry, Uid, current_pod};
use super::{IndexState, controller_of};
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

/// The reason a process shows while its controller makes its Pod again (it was deleted,
/// evicted or lost with its node, or is being made for the first time).
pub const REPLACING: &str = "PodReplacing";

/// The reason a process shows between the creation of its StatefulSet or Job and that of its
/// first Pod.
pub const AWAITING_POD: &str = "AwaitingPod";

/// The container waiting reason of a Pod whose env Secret (or a key of it) is missing: the
/// kubelet cannot make the container until the Secret is there.
const CONFIG_ERROR: &str = "CreateContainerConfigError";

/// A process's info from its StatefulSet or Job, its current Pod, its Service and Node; `None`
/// when it has neither controller nor Pod. `dns_suffix` is what follows the name in a private
/// address's DNS name.
pub(super) fn process_info(state: &IndexState, dns_suffix: &str, name: &str) -> Option<ProcessInfo> {
    let controller = controller_of(state, name);
    let pod = state.pods.live.get(name).and_then(|pods| current_pod(pods));
    let service = state.services.live.get(name);
    let owner_uid = match (controller, pod) {
        (Some((_, controller)), _) => &controller.uid,
        (None, Some(pod)) => &pod.uid,
        (None, None) => return None,
    };
    let node = pod.and_then(|pod| pod.node_name.as_deref()).and_then(|node| state.nodes.live.get(node));
    // A Start of this server making it now will make what it lacks: that is no half-made process.
    let half_made = if state.making.contains(name) {
        None
    } else {
        pod.and_then(|pod| half_made(name, pod, owner_uid, service))
    };
    let service = service.filter(|service| belongs_to(service, owner_uid));
    let (group, labels, created) = match (controller, pod) {
        (Some((_, controller)), _) => (&controller.group, &controller.labels, controller.created),
        (None, Some(pod)) => (&pod.group, &pod.labels, pod.created),
        (None, None) => return None,
    };
    let replaced = controller.map_or(0, |(_, controller)| controller.replaced);
    let node_name = pod.and_then(|pod| pod.node_name.as_deref());
    let (socket_addresses, exposure) = addresses(name, dns_suffix, service, node_name, node);
    let mut info = ProcessInfo {
        process_name: name.into(),
        group: group.as_deref().map(Into::into),
        socket_addresses,
        created,
        status: ProcessStatus::Starting,
        reason: None,
        message: None,
        restart_count: pod.map_or(0, |pod| pod.state.restart_count).saturating_add(replaced),
        exit_code: None,
        node: pod.and_then(|pod| pod.node_name.as_deref()).map(Into::into),
        labels: labels.clone(),
    };
    if let Some(pod) = pod {
        info.status = pod.state.status;
        info.reason = pod.state.reason.as_deref().map(Into::into);
        info.message = pod.state.message.clone();
        info.exit_code = pod.state.exit_code;
    }
    if let Some((kind, controller)) = controller {
        if controller.deleting {
            info.status = ProcessStatus::Stopping;
            info.reason = None;
            info.message = None;
        } else if let Some((status, reason, message)) = controller.ended.as_deref() {
            info.status = *status;
            info.reason = Some((**reason).into());
            info.message = message.as_deref().map(Into::into).or(info.message);
        } else if pod.is_none_or(|pod| pod.state.status == ProcessStatus::Stopping) {
            // The controller makes the Pod (again): the process is still there, and coming back.
            info.status = ProcessStatus::Starting;
            let (reason, message) = match pod {
                Some(pod) => (
                    REPLACING,
                    format!("its Pod `{}` is going; the {} `{name}` makes it again", pod.name, kind.kind()),
                ),
                None => (AWAITING_POD, format!("the {} `{name}` has no Pod yet; it makes one", kind.kind())),
            };
            info.reason = Some(reason.into());
            info.message = Some(message);
            info.socket_addresses.clear();
        }
    }
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
pub(super) fn half_made(
    name: &str,
    pod: &PodEntry,
    owner_uid: &Uid,
    service: Option<&ServiceEntry>,
) -> Option<String> {
    let secret_error = pod.state.reason.as_deref() == Some(CONFIG_ERROR);
    if !matches!(pod.state.status, ProcessStatus::Starting | ProcessStatus::Running) && !secret_error {
        return None;
    }
    let service_missing = pod.needs.service && !service.is_some_and(|service| belongs_to(service, owner_uid));
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

/// Whether a Service is the process's: owned by its owner `owner_uid` (its controller, or its
/// bare Pod), or by nothing at all (made by hand to match). One owned by another uid was an
/// earlier process's of the same name, and is about to be collected.
fn belongs_to(service: &ServiceEntry, owner_uid: &Uid) -> bool {
    service.owner_uid.as_ref().is_none_or(|owner| owner == owner_uid)
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
