//! The `hydroplane` server: reads its settings, opens the secret store, builds the runtime and
//! serves `hydroplane.v1.ProcessService` until SIGINT or SIGTERM, then stops every process it
//! owns and exits 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use hydroplane::app::Processes;
use hydroplane::config::{RuntimeSettings, Settings};
use hydroplane::runtime::Runtime;
use hydroplane::runtime::kube as kube_runtime;
use hydroplane::runtime::local::{LocalRuntime, LocalSettings};
use hydroplane::secrets::SecretStore;
use tokio::signal::unix::{SignalKind, signal};

/// How long calls in flight may take to finish once shutdown has begun.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the Hydroplane process API over gRPC.
#[derive(Debug, Parser)]
#[command(name = "hydroplane", version, about)]
struct Args {
    /// The YAML settings file; without one, the local runtime and no secret store.
    #[arg(short = 'c', long = "config", visible_alias = "conf", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The address to listen on.
    #[arg(short = 'H', long, default_value = "127.0.0.1")]
    host: String,
    /// The port to listen on (0 picks a free one).
    #[arg(short = 'p', long, default_value_t = 50051)]
    port: u16,
    /// Read the local secret store's password from this file instead of the terminal (or of
    /// HYDROPLANE_SECRET_STORE_PASSWORD).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: log files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    raise_open_file_limit();
    let settings = match &args.config {
        Some(path) => Settings::load(path)?,
        None => Settings::default(),
    };
    // The password is checked before anything binds, so a wrong one ends here with one line.
    let secrets = hydroplane::secrets::open_configured(
        &settings.secret_store,
        hydroplane::secrets::PasswordSource::for_opening(args.password_file.clone()),
    )
    .context("cannot open the secret store")?;
    let runtime = build_runtime(&settings.runtime, secrets).await?;
    let processes = Processes::new(Arc::clone(&runtime));

    // Handlers are in place before the address is announced, so a SIGTERM right after it is a
    // clean shutdown rather than the default instant death.
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let address = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let local_address: SocketAddr = listener.local_addr().context("cannot read the bound address")?;
    // Tests and scripts read this line to learn the port when they asked for port 0.
    println!("hydroplane listening on {local_address} (runtime: {})", runtime.name());
    tracing::info!(address = %local_address, runtime = runtime.name(), "serving");

    let culler = settings
        .process_culling
        .clone()
        .map(|culling| tokio::spawn(hydroplane::culler::run(processes.clone(), culling)));

    let (stop_sender, stop_receiver) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        let _ = stop_receiver.await;
    };
    let server = hydroplane::grpc::serve(listener, processes, shutdown);
    tokio::pin!(server);
    let signal_name = tokio::select! {
        result = &mut server => {
            result?;
            bail!("the gRPC server stopped on its own");
        }
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    };
    tracing::info!(signal = signal_name, "shutting down: no new calls; stopping every process");
    let _ = stop_sender.send(());
    if let Some(culler) = culler {
        culler.abort();
    }
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
        Ok(result) => result?,
        Err(_) => {
            tracing::warn!(timeout = ?DRAIN_TIMEOUT, "calls still in flight after the drain timeout; closing them")
        }
    }
    runtime.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft limit on open files to the hard limit: every local process holds two pipes
/// in the server, and the usual soft limit of 1,024 would cap the server at a few hundred.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(%error, soft, "cannot raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read the open-file limit"),
    }
}

async fn build_runtime(
    settings: &RuntimeSettings,
    secrets: Arc<dyn SecretStore>,
) -> anyhow::Result<Arc<dyn Runtime>> {
    match settings {
        RuntimeSettings::Local { stop_grace_seconds, output_buffer_bytes } => Ok(LocalRuntime::new(
            LocalSettings {
                stop_grace: Duration::from_secs_f64(*stop_grace_seconds),
                output_buffer_bytes: *output_buffer_bytes,
            },
            secrets,
        )),
        RuntimeSettings::Kubernetes(kubernetes) => {
            let client = kube_runtime::connect::client(kubernetes).await?;
            let namespace = kube_runtime::connect::namespace(kubernetes);
            tracing::info!(%namespace, "connecting to the Kubernetes cluster");
            let runtime = kube_runtime::KubeRuntime::connect("kubernetes", client, namespace, secrets)
                .await
                .context("cannot use the Kubernetes cluster")?;
            Ok(runtime)
        }
        RuntimeSettings::Eks(eks) => {
            tracing::info!(cluster = %eks.cluster_name, region = %eks.region, "connecting to EKS");
            let runtime = hydroplane::runtime::eks::connect(eks, secrets)
                .await
                .context("cannot use the EKS cluster")?;
            Ok(runtime)
        }
    }
}
