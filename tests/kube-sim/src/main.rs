//! The `kube-sim` binary: parses flags, prepares TLS and the kubeconfig, prints
//! `listening on <url>` as the first stdout line, then serves until SIGINT/SIGTERM.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kube_sim::api::{ApiSettings, AppState};
use kube_sim::auth::{Authenticator, eks::EksVerifier, sts::StsReplay};
use kube_sim::config::Args;
use kube_sim::controllers::{self, ControllerSettings};
use kube_sim::faults::{FaultSettings, Faults};
use kube_sim::store::{Store, StoreSettings};
use kube_sim::{kubeconfig, server, tls};

/// mimalloc rather than the system allocator: with 150,000 pods (a `serde_json` tree each) glibc's
/// malloc spent a fifth of the simulator's CPU clearing pages and consolidating free chunks,
/// and the simulator's CPU per create doubled as it grew; mimalloc keeps the cost of a create
/// flat as the store grows (re-measured by `cargo bench --bench kube_scale`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();

    let listener = server::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    let address = listener.local_addr()?;
    let host = if address.ip().is_unspecified() { "127.0.0.1".to_string() } else { address.ip().to_string() };
    let host = if address.is_ipv6() && !address.ip().is_unspecified() { format!("[{host}]") } else { host };
    let tls = if args.tls {
        Some(tls::generate(address.ip()).context("generating TLS certificates")?)
    } else {
        None
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{host}:{}", address.port());

    let eks = args.eks_cluster_name.clone().map(|cluster_name| EksVerifier {
        cluster_name,
        region: args.eks_region.clone(),
        keys: args
            .eks_static_keys
            .iter()
            .filter_map(|key| key.split_once(':').map(|(id, secret)| (id.to_string(), secret.to_string())))
            .collect(),
        extra_hosts: args.eks_sts_hosts.clone(),
        trust_session_tokens: args.eks_trust_session_tokens,
        sts: args
            .eks_sts_endpoint
            .clone()
            .map(|endpoint| Arc::new(StsReplay::new(endpoint, args.eks_allowed_arns.clone()))),
    });
    let (refuse_sender, refuse_receiver) = tokio::sync::mpsc::unbounded_channel();
    let faults = Arc::new(Faults::new(
        FaultSettings {
            latency_ms: args.latency_ms,
            error_rate: args.error_rate,
            error_code: args.error_code,
            close_watches_after_events: args.close_watches_after_events,
            retry_after_seconds: args.retry_after_seconds,
            max_requests_inflight: args.max_requests_inflight,
        },
        refuse_sender,
    ));
    let store = Store::new(&StoreSettings {
        nodes: args.nodes,
        history_limit: args.history_size,
        watch_buffer: args.watch_buffer,
        max_events: args.max_events,
        node_port_range: args.service_node_port_range,
        external_ips: !args.nodes_without_external_ip,
    });
    let logs: Arc<kube_sim::logs::LogStore> = Default::default();
    let kubelet = controllers::spawn_all(
        store.clone(),
        logs.clone(),
        ControllerSettings {
            pod_start_delay: Duration::from_millis(args.pod_start_delay_ms),
            crash_loop_backoff: Duration::from_millis(args.crash_loop_backoff_ms),
            not_ready_eviction: Duration::from_millis(args.not_ready_eviction_ms),
        },
    );
    let state = Arc::new(AppState {
        store,
        auth: Authenticator::new(&args.tokens, &args.read_only_tokens, eks)
            .with_namespaced_tokens(&args.namespaced_tokens)
            .with_no_events_tokens(&args.no_events_tokens),
        faults,
        logs,
        kubelet,
        settings: ApiSettings {
            bookmark_interval: Duration::from_millis(args.bookmark_interval_ms.max(1)),
            server_address: format!("{host}:{}", address.port()),
            apf_headers: args.apf_headers,
        },
    });

    if let Some(path) = &args.kubeconfig_out {
        kubeconfig::write(
            path,
            &url,
            tls.as_ref().map(|t| t.ca_pem.as_str()),
            args.tokens.first().map(String::as_str),
        )
        .with_context(|| format!("writing kubeconfig {}", path.display()))?;
    }
    if let (Some(path), Some(tls)) = (&args.ca_out, &tls) {
        let temporary = path.with_extension("tmp-kube-sim");
        std::fs::write(&temporary, &tls.ca_pem)
            .and_then(|()| std::fs::rename(&temporary, path))
            .with_context(|| format!("writing the CA to {}", path.display()))?;
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {url}")?;
    stdout.flush()?;

    let shutdown = async {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match terminate.as_mut() { Some(signal) => { signal.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    server::serve(listener, state, tls.map(|t| t.acceptor), refuse_receiver, shutdown).await?;
    Ok(())
}
