//! `hydroplane check -c FILE`: would the server start with these settings? The file is read
//! with the server's own loader (every warning printed on stderr), and the files it names for
//! TLS and tokens are read as the server reads them at start-up; nothing is connected to, the
//! secret store is not opened (no password is asked for) and nothing binds. For CI and for
//! deploy scripts: exit 0 and one line on stdout when valid, exit 1 and one line on stderr when
//! not.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use hydroplane::config::{RuntimeSettings, SecretStoreSettings, Settings};
use hydroplane::runtime::local::users::ProcessUsers;
use hydroplane::security::tls::ServerTls;
use hydroplane::security::tokens::TokenStore;

/// What sharing the server's user means, said where the settings allow it.
const SHARED_USER: &str = "local processes will run as the server's own user: each can read the others' \
    environment and output files and signal them and the server, so tokens restricted to groups \
    isolate the API, not the processes; set runtime.run_as_by_group (or runtime.run_as) to run \
    them as other users";

/// Checks the settings file and prints the verdict.
pub fn run(config: Option<&Path>) -> ExitCode {
    // Warnings of the loader are tracing events: they go to stderr, one line each.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_ansi(false)
        .init();
    match check(config) {
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

/// The one-line summary of a valid file, or why it is not.
fn check(config: Option<&Path>) -> anyhow::Result<String> {
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
    Ok(format!("{}: valid ({})", path.display(), summary(&settings).join(", ")))
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
