//! `list`: the secrets' names, one per line.

use std::io::{self, Write};

use crate::CliError;
use crate::store_options::StoreOptions;

/// Writes the names, sorted.
pub fn run(options: &StoreOptions) -> Result<(), CliError> {
    let store = options.open()?;
    let mut stdout = io::stdout().lock();
    for name in store.list()? {
        writeln!(stdout, "{name}").map_err(|source| CliError::WriteStdout { source })?;
    }
    stdout.flush().map_err(|source| CliError::WriteStdout { source })
}
