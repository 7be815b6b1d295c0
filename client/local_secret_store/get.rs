//! `get`: writes a secret's value, or one key of it, to standard output as raw bytes.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;

use hydroplane::secrets::{SecretStore, validate_secret_name};
use hydroplane::spec::SecretReference;

use crate::CliError;
use crate::store_options::StoreOptions;

/// Arguments of `get`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The secret's name.
    name: String,
    /// A key of a JSON-object secret: only its value is written (a string's contents, or the
    /// JSON text of anything else).
    key: Option<String>,
}

/// Writes the value, with no newline added.
pub fn run(options: &StoreOptions, args: Args) -> Result<(), CliError> {
    validate_secret_name(&args.name)?;
    let store = options.open()?;
    let value = store.resolve(&SecretReference { secret_name: args.name, key: args.key })?;
    // Written through a duplicate of the descriptor rather than `io::stdout()`, whose buffer would
    // keep an unzeroed copy of the value until the process exits.
    let stdout = io::stdout();
    let mut unbuffered = stdout
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .map_err(|source| CliError::WriteStdout { source })?;
    unbuffered.write_all(&value).map_err(|source| CliError::WriteStdout { source })
}
