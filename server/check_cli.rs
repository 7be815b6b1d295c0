//! `hydroplane check -c FILE`: would the server start with these settings? The file is read
//! with the server's own loader (every warning printed on stderr), and the files it names for
//! TLS and tokens are read as the server reads them at start-up; nothing is connected to but a
//! docker runtime's engine (its version is reported, or why it cannot be reached), the
//! secret store is not opened (no password is asked for) and nothing binds. For CI and for
//! deploy scripts: exit 0 and one line on stdout when valid, exit 1 and one line on stderr when
//! not.
//!
//! `--cluster` goes one step further, for a Kubernetes or EKS runtime: it opens the secret store
//! and connects to the cluster exactly as the server does at start-up (the same checks of
//! credentials, namespace and permissions, the same errors), and prints the runtime's warnings
//! about the cluster, such as nodes without an ExternalIP (a public process would get no public
//! address there).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use hydroplane::config::{RuntimeSettings, SecretStoreSettings, Settings};
use hydroplane::runtime::local::users::ProcessUsers;
use hydroplane::security::tokens::TokenStore;
use hydroplane::transport::tls::ServerTls;

/// What sharing the server's user means, said where the settings allow it.
const SHARED_USER: &str = "local processes will run as the server's own user: each can read the others' \
    environment and output files and signal them and the server, so tokens restricted to groups \
    isolate the API, not the processes; set runtime.run_as_by_group (or runtime.run_as) to run \
    them as other users";

/// Checks the settings file and prints the verdict. `cluster` (the `--password-file`, if any)
/// asks for the connection to the cluster to be checked too.
pub fn run(config: Option<&Path>, cluster: Option<Option<PathBuf>>) -> ExitCode {
    // Warnings of the loader and of the runtime are tracing events: they go to stderr, one line
    // each. Connecting logs its progress at INFO, which a check leaves out.
    let level = if cluster.is_some() { tracing::Level::WARN } else { tracing::Level::INFO };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .without_time()
        .with_target(false)
        .with_ansi(false)
        .init();
    let checked = check(config).and_then(|(settings, summary)| match cluster {
        Some(password_file) => {
            check_cluster(&settings, password_file).map(|found| format!("{summary}; {found}"))
        }
        None => Ok(summary),
    });
    match checked {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The settings and the one-line summary of a valid file, or why it is not.
fn check(config: Option<&Path>) -> anyhow::Result<(Settings, String)> {
    let Some(path) = config else {
        anyhow::bail!("give the settings file to check: hydroplane check -c FILE");
    };
    let settings = Settings::load(path)?;
    if let Some(tls) = &settings.tls {
        ServerTls::load(tls).context("cannot set up TLS")?;
    }
    if let Some(auth) = &settings.auth {
        TokenStore::open(&auth.tokens_file)?;
    }
    if let RuntimeSettings::Local(local) = &settings.runtime {
        let users = ProcessUsers::resolve(local).map_err(anyhow::Error::msg)?;
        if users.is_shared() {
            tracing::warn!("{SHARED_USER}");
        }
    }
    let mut parts = summary(&settings);
    if let RuntimeSettings::Docker(docker) = &settings.runtime {
        parts.push(engine(docker)?);
    }
    let summary = format!("{}: valid ({})", path.display(), parts.join(", "));
    Ok((settings, summary))
}

/// Connects to the settings' cluster as the server does at start-up; what was found, or why it
/// cannot be used. The runtime's own warnings (nodes without an ExternalIP) are logged as it
/// connects.
fn check_cluster(settings: &Settings, password_file: Option<PathBuf>) -> anyhow::Result<String> {
    let namespace = match &settings.runtime {
        RuntimeSettings::Kubernetes(kubernetes) => kubernetes.namespace(),
        RuntimeSettings::Eks(eks) => eks.namespace(),
        RuntimeSettings::Local(_) => anyhow::bail!("--cluster: runtime_type local has no cluster to check"),
        RuntimeSettings::Docker(_) => {
            anyhow::bail!(
                "--cluster: runtime_type docker has no cluster to check (check reports its engine without it)"
            )
        }
    };
    let secrets = hydroplane::secrets::open_configured(
        &settings.secret_store,
        hydroplane::secrets::PasswordSource::for_opening(password_file),
    )
    .context("cannot open the secret store")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let connected = hydroplane::runtime::from_settings(&settings.runtime, secrets).await?;
        drop(connected);
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(format!("the cluster is reachable and namespace `{namespace}` usable"))
}

/// The docker engine's version and address, or why it cannot be reached.
fn engine(settings: &hydroplane::config::DockerRuntimeSettings) -> anyhow::Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (_, version) = runtime.block_on(hydroplane::runtime::docker::connect(settings))?;
    Ok(format!("engine: {version}"))
}

/// The settings that decide what the server does, as `key: value`.
fn summary(settings: &Settings) -> Vec<String> {
    let mut parts = vec![format!("runtime_type: {}", settings.runtime.runtime_type())];
    match &settings.runtime {
        RuntimeSettings::Local(_) => {}
        RuntimeSettings::Kubernetes(kubernetes) => {
            parts.push(format!("namespace: {}", kubernetes.namespace()));
            parts.push(match &kubernetes.kubeconfig {
                Some(path) => format!("kubeconfig: {}", path.display()),
                None => "kubeconfig: in-cluster, else ~/.kube/config".to_owned(),
            });
        }
        RuntimeSettings::Docker(docker) => {
            parts.push(format!("network: {}", docker.network));
        }
        RuntimeSettings::Eks(eks) => {
            parts.push(format!("cluster_name: {}", eks.cluster_name));
            parts.push(format!("region: {}", eks.region));
            parts.push(format!("namespace: {}", eks.namespace()));
        }
    }
    parts.push(match &settings.secret_store {
        SecretStoreSettings::None => "secret_store_type: none".to_owned(),
        SecretStoreSettings::Local { .. } => "secret_store_type: local".to_owned(),
    });
    parts.push(format!("tls: {}", if settings.tls.is_some() { "on" } else { "off" }));
    parts.push(format!("auth: {}", if settings.auth.is_some() { "tokens" } else { "off" }));
    if let RuntimeSettings::Local(local) = &settings.runtime {
        parts.push(match (&local.run_as, local.run_as_by_group.len()) {
            (None, 0) => "run_as: the server's user".to_owned(),
            (Some(user), 0) => format!("run_as: {user}"),
            (_, rules) => format!("run_as_by_group: {rules} rules"),
        });
    }
    parts
}
