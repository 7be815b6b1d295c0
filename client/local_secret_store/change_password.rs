//! `change-password`: re-encrypts every secret under a new password, atomically.

use std::path::PathBuf;

use crate::CliError;
use crate::store_options::{StoreOptions, warn_if_test_iterations};

/// Arguments of `change-password`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Read the new password from FILE instead of $HYDROPLANE_SECRET_STORE_NEW_PASSWORD or the
    /// terminal.
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<PathBuf>,
}

/// Changes the password; until it succeeds, the old password keeps working.
pub fn run(options: &StoreOptions, args: Args) -> Result<(), CliError> {
    let store = options.open()?;
    let new_password = options.new_password(args.new_password_file)?;
    warn_if_test_iterations();
    store.change_password(&new_password)?;
    eprintln!("Changed the password of the secret store at {}", store.root().display());
    Ok(())
}
