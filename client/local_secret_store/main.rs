//! `local-secret-store`: creates and edits Hydroplane's encrypted local secret store.
//!
//! Each subcommand has its own file with its arguments and a `run`; [`store_options`] finds the
//! store and its password the way the server does. The store itself is
//! `hydroplane::secrets::LocalSecretStore`.
//!
//! Output: `get` writes the value's raw bytes and `list` the names to standard output; everything
//! else goes to standard error. No secret value or password is ever written anywhere but `get`'s
//! standard output. Exit status: 0 on success, 1 with one `error: ...` line on failure, 2 for a
//! usage error.

mod add;
mod change_password;
mod get;
mod init;
mod list;
mod remove;
mod store_options;

use std::error::Error as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hydroplane::config::ConfigError;
use hydroplane::secrets::SecretError;

use crate::store_options::StoreOptions;

/// Manage Hydroplane's encrypted local secret store.
#[derive(Debug, Parser)]
#[command(name = "local-secret-store", version)]
struct Cli {
    #[command(flatten)]
    store: StoreOptions,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new, empty store; asks for its password twice.
    Init(init::Args),
    /// Add a secret, from a file or from standard input.
    Add(add::Args),
    /// Write a secret's value (or one key of a JSON-object secret) to standard output.
    Get(get::Args),
    /// List the secrets' names, one per line.
    List,
    /// Remove a secret.
    Remove(remove::Args),
    /// Re-encrypt the store under a new password.
    ChangePassword(change_password::Args),
}

/// Why a command failed: the store's errors, and the command's own input and output.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// The secret store refused.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The `-c` config file could not be loaded.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The config names no local store.
    #[error("{} has `secret_store_type: none`: it names no local secret store", path.display())]
    NoLocalStore {
        /// The config file.
        path: PathBuf,
    },
    /// `add` without `--force` for a name that is taken.
    #[error("secret `{name}` already exists; use --force to replace it")]
    AlreadyExists {
        /// The secret's name.
        name: String,
    },
    /// The value to add could not be read.
    #[error("cannot read the value of secret `{name}` from {from}")]
    ReadValue {
        /// The secret's name.
        name: String,
        /// The file, or "standard input".
        from: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Standard output could not be written.
    #[error("cannot write to standard output")]
    WriteStdout {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => init::run(&cli.store, args),
        Command::Add(args) => add::run(&cli.store, args),
        Command::Get(args) => get::run(&cli.store, args),
        Command::List => list::run(&cli.store),
        Command::Remove(args) => remove::run(&cli.store, args),
        Command::ChangePassword(args) => change_password::run(&cli.store, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line. Some messages already quote their cause, which is then
/// not repeated.
fn one_line(error: &CliError) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.replace('\n', " ")
}
