//! The `hydroplane` server: reads its settings, opens the secret store, builds the runtime and
//! serves `hydroplane.v1.ProcessService` until SIGINT or SIGTERM, then stops every process it
//! owns and exits 0. `hydroplane token ...` manages the tokens file instead, `hydroplane tls ...`
//! makes certificates, and `hydroplane check -c FILE` only validates the settings.

mod check_cli;
mod hygiene;
mod tls_cli;
mod token_cli;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use hydroplane::app::Processes;
use hydroplane::config::{AuthSettings, Settings, TlsSettings};
use hydroplane::grpc::guard::Guard;
use hydroplane::grpc::listen::{self, ListenAddress, Listener};
use hydroplane::security::tokens::TokenStore;
use hydroplane::telemetry::LogFormat;
use hydroplane::transport::tls::ServerTls;
use tokio::signal::unix::{SignalKind, signal};

/// How long calls in flight may take to finish once shutdown has begun.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the TLS files are looked at for a rotated certificate.
const FILE_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Serves the Hydroplane process API over gRPC.
#[derive(Debug, Parser)]
#[command(name = "hydroplane", version, about)]
struct Args {
    /// Manage API tokens, make TLS certificates, or check the settings, instead of serving.
    #[command(subcommand)]
    command: Option<Command>,
    /// The YAML settings file; without one, the local runtime and no secret store.
    #[arg(short = 'c', long = "config", visible_alias = "conf", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// An address to listen on: a host or IP address (with --port), or unix:PATH for a Unix
    /// socket only this user can use. Repeat it to listen on several.
    #[arg(short = 'H', long, default_value = "127.0.0.1", value_name = "ADDR")]
    host: Vec<String>,
    /// The port to listen on (0 picks a free one).
    #[arg(short = 'p', long, default_value_t = 50051)]
    port: u16,
    /// Read the local secret store's password from this file instead of the terminal (or of
    /// HYDROPLANE_SECRET_STORE_PASSWORD).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// The TLS certificate chain (PEM); overrides `tls.cert_file`.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM); overrides `tls.key_file`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must be signed by; overrides
    /// `tls.client_ca_file`.
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// The tokens file every call is checked against; overrides `auth.tokens_file`.
    #[arg(long, value_name = "FILE")]
    tokens_file: Option<PathBuf>,
    /// Serve a non-loopback address without TLS or tokens (or tokens without TLS), with a warning.
    #[arg(long)]
    insecure: bool,
    /// How log lines on stderr are written: `text`, or `json` (one object per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    log_format: LogFormat,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Creates, lists and revokes API tokens.
    #[command(subcommand)]
    Token(token_cli::TokenCommand),
    /// Makes a CA, and server and client certificates signed by it, for `tls:`.
    #[command(subcommand)]
    Tls(tls_cli::TlsCommand),
    /// Loads and validates the settings (-c FILE) without connecting to anything or opening
    /// the secret store; exit 0 when valid, 1 with the error. With --cluster, also connects to
    /// the cluster as the server would and warns about what will not work there.
    Check {
        /// Also connect to the cluster the settings name (opening the secret store if it is
        /// used), check the namespace and permissions, and warn, for example, when no node has
        /// an ExternalIP for public processes.
        #[arg(long)]
        cluster: bool,
    },
}

fn main() -> std::process::ExitCode {
    // A local process's supervisor is this binary again; it must not parse flags, log or start
    // threads (it is single-threaded, its signals blocked for a signalfd).
    let arguments: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if arguments.get(1).is_some_and(|mode| hydroplane::runtime::local::supervisor::is_mode(mode)) {
        return hydroplane::runtime::local::supervisor::run(&arguments[2..]);
    }
    let args = Args::parse_from(arguments);
    match args.command {
        Some(Command::Token(command)) => return token_cli::run(command, args.config.as_deref()),
        Some(Command::Check { cluster }) => {
            let cluster = cluster.then(|| args.password_file.clone());
            return check_cli::run(args.config.as_deref(), cluster);
        }
        Some(Command::Tls(command)) => return tls_cli::run(command),
        None => {}
    }
    // While the server has one thread, before anything could start a process.
    hygiene::close_inherited_descriptors_on_exec();
    let password_variable = hygiene::take_password_variable();
    let undumpable = hygiene::close_to_same_user();
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if !std::env::var("RUST_LOG").is_ok_and(|directives| directives.contains("kube_client"))
        && let Ok(directive) = hydroplane::runtime::kube::QUIET_CLIENT_DIRECTIVE.parse()
    {
        filter = filter.add_directive(directive);
    }
    // One event loop thread, not tokio's multi-threaded scheduler. That scheduler polls a task
    // woken by another at once, on the same thread (its LIFO slot): when a change goes out to a
    // thousand Watch streams, each stream's task wakes its HTTP/2 connection's task, which then
    // writes that one message with a syscall of its own. On one thread, woken tasks run in turn,
    // so the connection task finds every stream's message queued and writes them together
    // (docs/decisions/0001-one-event-loop-thread.md has the figures and the command that
    // re-measures them). Blocking work (files, process trees, `/proc`) runs on tokio's blocking
    // threads.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // The exporter is chosen before the first log line; `run` loads the settings again and
    // reports what is wrong with them.
    let tracing = args
        .config
        .as_deref()
        .and_then(|path| Settings::parse(&std::fs::read_to_string(path).ok()?).ok()?.tracing);
    let telemetry = {
        // The batch exporter is a task on the runtime.
        let _entered = runtime.enter();
        hydroplane::telemetry::init(args.log_format, filter, tracing.as_ref())
    };
    let telemetry = match telemetry {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Err(error) = undumpable {
        tracing::warn!(%error, "cannot close the server's /proc entries to other processes of its user");
    }
    let password = match password_variable {
        hygiene::PasswordVariable::Unset => None,
        hygiene::PasswordVariable::Taken(password) => Some(password),
        hygiene::PasswordVariable::StillVisible(password, why) => {
            tracing::warn!(
                "{} was removed from the server's environment, but /proc/{}/environ may still show it \
                 ({why}); give the password with --password-file instead",
                hydroplane::secrets::password::PASSWORD_ENV,
                std::process::id()
            );
            Some(password)
        }
    };
    let result = runtime.block_on(run(args, password));
    // The batch exporter is a task of this runtime, which runs only inside `block_on`: the
    // flush waits on a blocking thread while the runtime drives the export.
    let _ = runtime.block_on(async move { tokio::task::spawn_blocking(move || telemetry.shutdown()).await });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, password_variable: Option<hydroplane::secrets::Password>) -> anyhow::Result<()> {
    raise_open_file_limit();
    let mut settings = match &args.config {
        Some(path) => Settings::load(path)?,
        None => Settings::default(),
    };
    apply_flags(&mut settings, &args)?;
    let addresses = args
        .host
        .iter()
        .map(|host| ListenAddress::parse(host, args.port))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    // Everything that can be wrong with the security settings is found before the secret store
    // asks for a password or a runtime connects to anything.
    let tls = match &settings.tls {
        Some(tls) => Some(ServerTls::load(tls).context("cannot set up TLS")?),
        None => None,
    };
    let tokens = match &settings.auth {
        Some(auth) => Some(TokenStore::open(&auth.tokens_file)?),
        None => None,
    };
    for address in &addresses {
        if let ListenAddress::Tcp { host, port } = address {
            let protection = listen::protection(tls.as_ref(), tokens.is_some());
            for warning in listen::check_tcp(host, *port, protection, args.insecure).await? {
                tracing::warn!("{warning}");
            }
        }
    }

    // The password is checked before anything binds, so a wrong one ends here with one line.
    // The variable was read (and wiped) at start-up; a password file still comes first.
    let password_source = match (&args.password_file, password_variable) {
        (None, Some(password)) => hydroplane::secrets::PasswordSource::Given(password),
        (password_file, _) => hydroplane::secrets::PasswordSource::for_opening(password_file.clone()),
    };
    let secrets = hydroplane::secrets::open_configured(&settings.secret_store, password_source)
        .context("cannot open the secret store")?;
    // Made before the runtime, so that its Kubernetes client is measured from the first request.
    let metrics = settings.metrics.as_ref().map(|_| hydroplane::metrics::Metrics::install());
    let runtime = hydroplane::runtime::from_settings(&settings.runtime, secrets).await?;
    let processes = Processes::new(Arc::clone(&runtime));
    let processes = match &metrics {
        Some(metrics) => processes.with_metrics(Arc::clone(metrics)),
        None => processes,
    };

    let mut listeners = Vec::new();
    for address in &addresses {
        listeners.push(match address {
            ListenAddress::Tcp { host, port } => {
                listen::bind_tcp(host, *port, tls.as_ref(), tokens.is_some(), args.insecure).await?
            }
            ListenAddress::Unix(path) => listen::bind_unix(path).await?,
        });
    }

    // One guard, and so one set of connection limits, for every listener, the metrics one too.
    let guard = Guard::new(tokens.clone(), settings.limits.clone());
    let metrics_listener = match (&settings.metrics, &metrics) {
        (Some(listen), Some(metrics)) => {
            Some(hydroplane::metrics::http::start(listen, metrics, guard.connections()).await?)
        }
        _ => None,
    };

    // Handlers are in place before the address is announced, so a SIGTERM right after it is a
    // clean shutdown rather than the default instant death.
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let reloaders: Vec<tokio::task::JoinHandle<()>> = tls
        .iter()
        .map(|tls| tls.watch_files(FILE_RELOAD_INTERVAL))
        .chain(tokens.iter().map(|tokens| tokens.watch_file()))
        .collect();
    // Tests and scripts read the first line to learn the port when they asked for port 0.
    for listener in &listeners {
        println!("hydroplane listening on {} (runtime: {})", listener.describe(), runtime.name());
        tracing::info!(
            address = %listener.describe(),
            runtime = runtime.name(),
            tls = matches!(listener, Listener::Tls(..)),
            tokens = tokens.is_some(),
            "serving"
        );
    }
    if let Some((address, _)) = &metrics_listener {
        println!("hydroplane metrics on {address}");
    }

    let culler = settings
        .process_culling
        .clone()
        .map(|culling| tokio::spawn(hydroplane::culler::run(processes.clone(), culling)));

    let (stop_sender, stop_receiver) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        let _ = stop_receiver.await;
    };
    let server = hydroplane::grpc::serve(listeners, processes, guard, &settings.limits, shutdown);
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
    for reloader in reloaders {
        reloader.abort();
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

/// Lets the security flags override the settings file.
fn apply_flags(settings: &mut Settings, args: &Args) -> anyhow::Result<()> {
    if let (Some(cert_file), Some(key_file)) = (&args.tls_cert, &args.tls_key) {
        let mut tls = TlsSettings::from_files(cert_file.clone(), key_file.clone(), None);
        if let Some(configured) = &settings.tls {
            tls.client_ca_file.clone_from(&configured.client_ca_file);
            tls.handshake_timeout = configured.handshake_timeout;
        }
        settings.tls = Some(tls);
    }
    if let Some(client_ca) = &args.tls_client_ca {
        match &mut settings.tls {
            Some(tls) => tls.client_ca_file = Some(client_ca.clone()),
            None => {
                bail!("--tls-client-ca needs TLS: give --tls-cert and --tls-key (or `tls` in the settings)")
            }
        }
    }
    if let Some(tokens_file) = &args.tokens_file {
        settings.auth = Some(AuthSettings { tokens_file: tokens_file.clone() });
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard limit: every local process holds two pipes
/// and its supervisor's lifeline socket in the server, and the usual soft limit of 1,024 would
/// cap the server at a few hundred.
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
