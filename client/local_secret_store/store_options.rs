//! The options every subcommand shares: which store, and where its password comes from.

use std::path::PathBuf;

use hydroplane::config::{SecretStoreSettings, Settings, default_store_location};
use hydroplane::secrets::{
    LocalSecretStore, PASSWORD_ENV, Password, PasswordSource, TEST_ITERATIONS_ENV, default_iterations,
    expand_home, read_password,
};

use crate::CliError;

/// Which store to use and how to unlock it.
#[derive(Debug, clap::Args)]
pub struct StoreOptions {
    /// The store's directory [default: the config's store_location, else ~/.hydro_secrets].
    #[arg(long, alias = "store_location", global = true, value_name = "DIR")]
    store: Option<PathBuf>,
    /// A Hydroplane config file; its `secret_store.store_location` names the store.
    #[arg(short = 'c', long = "config", global = true, value_name = "CONFIG", conflicts_with = "store")]
    config: Option<PathBuf>,
    /// Read the password from FILE (one trailing newline dropped) instead of
    /// $HYDROPLANE_SECRET_STORE_PASSWORD or the terminal.
    #[arg(long, global = true, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

impl StoreOptions {
    /// The store's directory, with `~` expanded.
    pub fn location(&self) -> Result<PathBuf, CliError> {
        let location = match (&self.store, &self.config) {
            (Some(store), _) => store.clone(),
            (None, Some(config)) => match Settings::load(config)?.secret_store {
                SecretStoreSettings::Local { store_location } => store_location,
                SecretStoreSettings::None => {
                    return Err(CliError::NoLocalStore { path: config.clone() });
                }
            },
            (None, None) => default_store_location(),
        };
        Ok(expand_home(&location)?)
    }

    /// Opens the existing store, asking for its password only once the store is known to exist.
    pub fn open(&self) -> Result<LocalSecretStore, CliError> {
        let root = self.location()?;
        LocalSecretStore::check_exists(&root)?;
        let password = read_password(&PasswordSource::for_opening(self.password_file.clone()))?;
        Ok(LocalSecretStore::open(&root, &password)?)
    }

    /// The password of a new store (`init`): `--new-password-file`, else
    /// `$HYDROPLANE_SECRET_STORE_NEW_PASSWORD`, else `--password-file`, else
    /// `$HYDROPLANE_SECRET_STORE_PASSWORD`, else the terminal, asked twice. The last two let a
    /// script use the same spelling for `init` as for every later command.
    pub fn initial_password(&self, new_password_file: Option<PathBuf>) -> Result<Password, CliError> {
        let source = match PasswordSource::for_new_password(new_password_file) {
            PasswordSource::Terminal { .. } if self.password_file.is_some() || has_env(PASSWORD_ENV) => {
                PasswordSource::for_opening(self.password_file.clone())
            }
            source => source,
        };
        Ok(read_password(&source)?)
    }

    /// The new password of `change-password`: `--new-password-file`, else
    /// `$HYDROPLANE_SECRET_STORE_NEW_PASSWORD`, else the terminal, asked twice.
    pub fn new_password(&self, new_password_file: Option<PathBuf>) -> Result<Password, CliError> {
        Ok(read_password(&PasswordSource::for_new_password(new_password_file))?)
    }
}

fn has_env(name: &str) -> bool {
    std::env::var_os(name).is_some()
}

/// Warns when the test-only iteration override weakens a key about to be derived.
pub fn warn_if_test_iterations() {
    let iterations = default_iterations();
    if has_env(TEST_ITERATIONS_ENV) && iterations < hydroplane::secrets::MIN_ITERATIONS {
        eprintln!(
            "warning: {TEST_ITERATIONS_ENV} is set: deriving the key with only {iterations} \
             iterations (for tests only)"
        );
    }
}
