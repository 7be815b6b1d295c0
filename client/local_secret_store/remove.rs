//! `remove`: deletes a secret.

use hydroplane::secrets::validate_secret_name;

use crate::CliError;
use crate::store_options::StoreOptions;

/// Arguments of `remove`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The secret's name.
    name: String,
}

/// Deletes the secret; an unknown name is an error.
pub fn run(options: &StoreOptions, args: Args) -> Result<(), CliError> {
    validate_secret_name(&args.name)?;
    options.open()?.remove(&args.name)?;
    eprintln!("Removed secret `{}`", args.name);
    Ok(())
}
