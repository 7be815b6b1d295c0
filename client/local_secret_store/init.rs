//! `init`: creates a new, empty store.

use std::path::PathBuf;

use hydroplane::secrets::LocalSecretStore;

use crate::CliError;
use crate::store_options::{StoreOptions, warn_if_test_iterations};

/// Arguments of `init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Read the new store's password from FILE instead of
    /// $HYDROPLANE_SECRET_STORE_NEW_PASSWORD or the terminal.
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<PathBuf>,
}

/// Creates the store, refusing to replace an existing one.
pub fn run(options: &StoreOptions, args: Args) -> Result<(), CliError> {
    let root = options.location()?;
    let password = options.initial_password(args.new_password_file)?;
    warn_if_test_iterations();
    LocalSecretStore::init(&root, &password)?;
    eprintln!("Created a secret store at {}", root.display());
    Ok(())
}
