//! Command-line flags of the `kube-sim` binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// A Kubernetes API simulator for tests: pods, services, nodes, secrets, namespaces and
/// deployments over the real REST API, with watches, fault injection and token checks.
#[derive(Debug, Clone, Parser)]
#[command(name = "kube-sim", version)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port. The first line on stdout is
    /// `listening on http(s)://HOST:PORT`.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// Serve HTTPS with a CA generated for this run.
    #[arg(long)]
    pub tls: bool,

    /// Write a kubeconfig for this server here (before the `listening on` line is printed).
    #[arg(long)]
    pub kubeconfig_out: Option<PathBuf>,

    /// With --tls, also write the CA certificate (PEM) here, e.g. for an EKS DescribeCluster
    /// emulator that must hand out the cluster's CA.
    #[arg(long)]
    pub ca_out: Option<PathBuf>,

    /// Number of nodes (node-1..node-N, InternalIP 10.0.0.N, ExternalIP 203.0.113.N).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,

    /// Nodes without an ExternalIP, as in private subnets: InternalIP and Hostname only.
    #[arg(long)]
    pub nodes_without_external_ip: bool,

    /// A bearer token with full access; repeatable. Without any, requests are anonymous.
    #[arg(long = "token", value_name = "TOKEN")]
    pub tokens: Vec<String>,

    /// A bearer token that may only read (writes get 403 Forbidden); repeatable.
    #[arg(long = "read-only-token", value_name = "TOKEN")]
    pub read_only_tokens: Vec<String>,

    /// A bearer token that may do anything but touch namespaces (403 Forbidden), as a user bound
    /// by a Role in one namespace; repeatable.
    #[arg(long = "namespaced-token", value_name = "TOKEN")]
    pub namespaced_tokens: Vec<String>,

    /// A bearer token that may do anything but touch Events (403 Forbidden), as a user bound by a
    /// Role that omits them; repeatable.
    #[arg(long = "no-events-token", value_name = "TOKEN")]
    pub no_events_tokens: Vec<String>,

    /// How long a scheduled pod stays Pending before it runs.
    #[arg(long, default_value_t = 200)]
    pub pod_start_delay_ms: u64,

    /// The first crash-loop back-off of a container that restarts (doubling up to 5 minutes);
    /// a real kubelet's is 10 s.
    #[arg(long, default_value_t = 10_000)]
    pub crash_loop_backoff_ms: u64,

    /// How long pods stay on a NotReady node before they are evicted (a real cluster's default
    /// toleration of the `not-ready` taint is 300 s).
    #[arg(long, default_value_t = 1000)]
    pub not_ready_eviction_ms: u64,

    /// How many recent events are kept for watch resumption; older versions get 410 Gone.
    #[arg(long, default_value_t = 10_000)]
    pub history_size: usize,

    /// How many events a watch may fall behind before the server closes it.
    #[arg(long, default_value_t = 16_384)]
    pub watch_buffer: usize,

    /// How many core/v1 Events are kept (0 = all): past it the oldest is deleted, as the API
    /// server's event TTL does, so that the Events of many pods do not fill the memory.
    #[arg(long, default_value_t = 20_000)]
    pub max_events: usize,

    /// Interval between BOOKMARK events on watches that allow them.
    #[arg(long, default_value_t = 1000)]
    pub bookmark_interval_ms: u64,

    /// Fault: latency added to every API request.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,

    /// Fault: fraction (0..1) of API requests answered with --error-code.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,

    /// Fault: the injected error's status (429, 500 or 503).
    #[arg(long, default_value_t = 500)]
    pub error_code: u16,

    /// Fault: close every watch after this many events (0 = never).
    #[arg(long, default_value_t = 0)]
    pub close_watches_after_events: u64,

    /// Fault: the `Retry-After` of an injected 429, in seconds (a real API server sends 1).
    #[arg(long, default_value_t = crate::faults::DEFAULT_RETRY_AFTER_SECONDS,
        value_parser = clap::value_parser!(u64).range(0..=crate::faults::MAX_RETRY_AFTER_SECONDS))]
    pub retry_after_seconds: u64,

    /// The NodePort range, `LOW-HIGH` inclusive, as the API server's flag of this name: a
    /// NodePort asked for outside it is refused (422), and once every port of it is taken a
    /// NodePort Service is refused as the API server refuses it (500, `failed to allocate a
    /// nodePort: range is full`).
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    pub service_node_port_range: (u16, u16),

    /// Fault: answer API requests beyond this many in flight at once with 429 and `Retry-After`
    /// (0 = no limit), as the API server's flag of this name does with APF; watches and log
    /// follows are long-running and not counted.
    #[arg(long = "max-requests-inflight", default_value_t = 0)]
    pub max_requests_inflight: u64,

    /// Send API Priority and Fairness's response headers (`X-Kubernetes-PF-FlowSchema-UID`,
    /// `X-Kubernetes-PF-PriorityLevel-UID`) on every API response, as an API server with APF
    /// (the default since Kubernetes 1.20) does; `--apf-headers=false` to leave them out.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
        default_missing_value = "true", require_equals = true)]
    pub apf_headers: bool,

    /// EKS token review: accept `k8s-aws-v1.` tokens for this cluster name (`x-k8s-aws-id`).
    #[arg(long)]
    pub eks_cluster_name: Option<String>,

    /// EKS token review: the STS region.
    #[arg(long, default_value = "us-east-1")]
    pub eks_region: String,

    /// EKS token review: a known key as ACCESS_KEY_ID:SECRET; repeatable.
    #[arg(long = "eks-static-key", value_name = "ACCESS_KEY_ID:SECRET")]
    pub eks_static_keys: Vec<String>,

    /// EKS token review: another accepted STS host name besides the region's and the global
    /// one (e.g. a VPC endpoint); repeatable. Token URLs must still be https.
    #[arg(long = "eks-sts-host", value_name = "HOST")]
    pub eks_sts_hosts: Vec<String>,

    /// EKS token review: accept tokens signed with unknown temporary credentials (those with
    /// X-Amz-Security-Token) without checking the signature, for assumed roles whose secrets
    /// only the STS emulator knows. All other checks still apply.
    #[arg(long)]
    pub eks_trust_session_tokens: bool,

    /// EKS token review: replay tokens of keys not given with --eks-static-key against this STS
    /// endpoint (`http://127.0.0.1:PORT`, e.g. moto behind the test launcher), as
    /// aws-iam-authenticator does against AWS.
    #[arg(long, value_name = "URL")]
    pub eks_sts_endpoint: Option<String>,

    /// EKS token review: an ARN allowed on the cluster (a user, or a role for assumed-role
    /// sessions); repeatable. Used with --eks-sts-endpoint.
    #[arg(long = "eks-allowed-arn", value_name = "ARN")]
    pub eks_allowed_arns: Vec<String>,
}

/// A `LOW-HIGH` port range, both ends included, `LOW <= HIGH`, neither 0.
fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let (low, high) = text.split_once('-').ok_or_else(|| format!("`{text}` is not LOW-HIGH"))?;
    let port = |part: &str| part.trim().parse::<u16>().ok().filter(|port| *port > 0);
    match (port(low), port(high)) {
        (Some(low), Some(high)) if low <= high => Ok((low, high)),
        _ => Err(format!("`{text}` is not a range of ports LOW-HIGH with 1 <= LOW <= HIGH <= 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_port_ranges_are_parsed_as_the_api_server_writes_them() {
        assert_eq!(parse_port_range("30000-32767"), Ok((30000, 32767)));
        assert_eq!(parse_port_range("30000-30009"), Ok((30000, 30009)));
        for bad in ["30000", "3-2", "0-10", "1-70000", "a-b"] {
            assert!(parse_port_range(bad).is_err(), "{bad}");
        }
        let args =
            Args::parse_from(["kube-sim", "--service-node-port-range", "31000-31009", "--apf-headers=false"]);
        assert_eq!(args.service_node_port_range, (31000, 31009));
        assert!(!args.apf_headers);
        let args = Args::parse_from(["kube-sim"]);
        assert_eq!(args.service_node_port_range, (30000, 32767));
        assert!(args.apf_headers, "on by default");
    }
}
