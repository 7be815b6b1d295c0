//! `add`: stores a secret, read from a file or from standard input.

use std::fs::File;
use std::io::{self, IsTerminal};
use std::path::PathBuf;

use hydroplane::secrets::{
    IfExists, MAX_VALUE_LEN, SecretError, SecretValue, read_all_private, validate_secret_name,
};

use crate::CliError;
use crate::store_options::StoreOptions;

/// Arguments of `add`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The secret's name: letters, digits, `.`, `_` and `-`.
    name: String,
    /// Read the value from FILE instead of standard input.
    #[arg(short = 'f', long = "file", alias = "filename", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Replace the secret if it exists.
    #[arg(long, alias = "overwrite")]
    force: bool,
}

/// Adds the secret, atomically.
pub fn run(options: &StoreOptions, args: Args) -> Result<(), CliError> {
    validate_secret_name(&args.name)?;
    let store = options.open()?;
    let if_exists = if args.force { IfExists::Replace } else { IfExists::Fail };
    // Checked before reading the value too, so nobody types a value only to have it refused.
    if if_exists == IfExists::Fail && store.contains(&args.name)? {
        return Err(CliError::AlreadyExists { name: args.name });
    }
    let value = read_value(&args.name, args.file.as_ref())?;
    store.add(&args.name, &value, if_exists).map_err(|error| match error {
        SecretError::AlreadyExists { name } => CliError::AlreadyExists { name },
        other => other.into(),
    })?;
    eprintln!("Added secret `{}`", args.name);
    Ok(())
}

fn read_value(name: &str, file: Option<&PathBuf>) -> Result<SecretValue, CliError> {
    let read_error = |from: String| {
        let name = name.to_owned();
        move |source| CliError::ReadValue { name, from, source }
    };
    // One byte over the limit tells "too large" from "exactly the limit".
    let limit = MAX_VALUE_LEN + 1;
    let value = match file {
        Some(path) => {
            let from = path.display().to_string();
            let mut file = File::open(path).map_err(read_error(from.clone()))?;
            read_all_private(&mut file, limit).map_err(read_error(from))?
        }
        None => {
            let mut stdin = io::stdin().lock();
            if stdin.is_terminal() {
                eprintln!("Enter the value of secret `{name}`, then press Ctrl-D:");
            }
            read_all_private(&mut stdin, limit).map_err(read_error("standard input".to_owned()))?
        }
    };
    if value.len() > MAX_VALUE_LEN {
        return Err(SecretError::TooLarge { name: name.to_owned(), limit: MAX_VALUE_LEN }.into());
    }
    Ok(value)
}
