//! Secret stores: where the values behind `SecretReference`s come from.
//!
//! `none` refuses every reference; `local` is a directory of encrypted files opened with a
//! password. Secret values travel as [`SecretValue`], a buffer zeroed when dropped, and no
//! error of this module ever carries a value, only names.
//!
//! # Layout
//! - [`open_configured`]: what the server calls at start-up; start here.
//! - [`local`]: the encrypted local store, its layout on disk and its crash-safety invariants.
//! - [`password`]: where a password comes from (a file, an environment variable, the terminal).
//! - `crypto`: key derivation, sealing, the store header. No I/O.
//! - `files`: private files and directories, atomic replacement, the writers' lock.
//! - `name`: which secret names are allowed.

mod crypto;
mod files;
pub mod local;
mod name;
pub mod password;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroize;

use crate::config::SecretStoreSettings;
use crate::spec::SecretReference;

pub use crypto::{MIN_ITERATIONS, TEST_ITERATIONS_ENV, default_iterations};
pub use files::read_all_private;
pub use local::{IfExists, LocalSecretStore, MAX_VALUE_LEN};
pub use name::{MAX_NAME_LEN, validate_secret_name};
pub use password::{
    NEW_PASSWORD_ENV, PASSWORD_ENV, PASSWORD_PROMPT, Password, PasswordSource, read_password,
};

/// A secret's bytes, zeroed when dropped.
pub type SecretValue = zeroize::Zeroizing<Vec<u8>>;

/// Resolves secret references to values.
pub trait SecretStore: Send + Sync {
    /// The value a reference names: the whole secret, or one key of a JSON-object secret.
    fn resolve(&self, reference: &SecretReference) -> Result<SecretValue, SecretError>;
}

/// Why a secret could not be resolved, or a store not opened or changed. Messages name secrets,
/// keys and paths, never values or passwords.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A secret used where text is needed (an access key, registry credentials) is not UTF-8.
    #[error("{reference} is not UTF-8 text")]
    NotText {
        /// The reference.
        reference: SecretReference,
    },
    /// The server runs without a secret store.
    #[error(
        "{reference} is referenced, but the server has no secret store \
         (secret_store_type: none)"
    )]
    NoStore {
        /// The reference that could not be resolved.
        reference: SecretReference,
    },
    /// No secret of that name exists.
    #[error("secret `{name}` does not exist")]
    NotFound {
        /// The secret's name.
        name: String,
    },
    /// The secret exists but has no such key.
    #[error("secret `{name}` has no key `{key}`")]
    KeyNotFound {
        /// The secret's name.
        name: String,
        /// The missing key.
        key: String,
    },
    /// A key was asked of a secret that is not a JSON object.
    #[error("secret `{name}` is not a JSON object, so its key `{key}` cannot be read")]
    NotAnObject {
        /// The secret's name.
        name: String,
        /// The key asked for.
        key: String,
    },
    /// A secret name breaks the naming rules.
    #[error("invalid secret name `{name}`: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// Adding a secret whose name is taken, without asking to replace it.
    #[error("secret `{name}` already exists")]
    AlreadyExists {
        /// The secret's name.
        name: String,
    },
    /// A value over the store's size limit.
    #[error("the value of secret `{name}` is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The secret's name.
        name: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The password does not open the store.
    #[error("wrong password for the secret store at {}", path.display())]
    WrongPassword {
        /// The store's directory.
        path: PathBuf,
    },
    /// A secret's file fails its integrity check: truncated, altered, or another secret's file.
    #[error("secret `{name}` is damaged: {} fails its integrity check", path.display())]
    Damaged {
        /// The secret's name.
        name: String,
        /// Its file.
        path: PathBuf,
    },
    /// A file of the store itself (its header or generation pointer) is damaged.
    #[error("the secret store is damaged: {}: {reason}", path.display())]
    StoreDamaged {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// There is no store at that path.
    #[error(
        "no secret store at {} (create one with `local-secret-store init`)",
        path.display()
    )]
    StoreMissing {
        /// The store's directory.
        path: PathBuf,
    },
    /// `init` found a store already there.
    #[error("a secret store already exists at {}", path.display())]
    StoreExists {
        /// The store's directory.
        path: PathBuf,
    },
    /// `init` found a path that is not a directory, or a directory holding other files.
    #[error("{} is not a secret store, and not an empty directory to create one in", path.display())]
    NotAStore {
        /// The path.
        path: PathBuf,
    },
    /// The password was changed since this store was opened, so its key opens nothing now.
    #[error(
        "the secret store at {} was re-encrypted with a new password since it was opened; \
         open it again with the new password",
        path.display()
    )]
    Rekeyed {
        /// The store's directory.
        path: PathBuf,
    },
    /// Another writer held the store's lock for too long.
    #[error("the secret store at {} is locked by another writer", path.display())]
    Locked {
        /// The store's directory.
        path: PathBuf,
    },
    /// A file-system operation failed.
    #[error("cannot {operation} {}", path.display())]
    Io {
        /// The step that failed, as a verb: "read", "rename into place".
        operation: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The system's random number generator failed.
    #[error("the system's random number generator failed")]
    RandomFailed,
    /// A password file could not be read.
    #[error("cannot read the password file {}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The password's environment variable is not set.
    #[error("the environment variable {name} is not set")]
    PasswordEnvUnset {
        /// The variable.
        name: &'static str,
    },
    /// The password was to be asked on the terminal, and there is none.
    #[error(
        "cannot ask for the password on a terminal; set HYDROPLANE_SECRET_STORE_PASSWORD or \
         use a password file"
    )]
    NoTerminal {
        /// The error opening or reading the terminal.
        #[source]
        source: std::io::Error,
    },
    /// The two entries of a new password differ.
    #[error("the passwords entered differ")]
    PasswordMismatch,
    /// A new password is empty.
    #[error("the new password is empty")]
    EmptyPassword,
    /// A path starts with `~` and the home directory is unknown.
    #[error("cannot expand `~` in {}: HOME is not set", path.display())]
    HomeUnknown {
        /// The path.
        path: PathBuf,
    },
}

/// The store of a server configured with `secret_store_type: none`.
#[derive(Debug, Default)]
pub struct NoSecretStore;

impl SecretStore for NoSecretStore {
    fn resolve(&self, reference: &SecretReference) -> Result<SecretValue, SecretError> {
        Err(SecretError::NoStore { reference: reference.clone() })
    }
}

/// Opens the configured store, for the server at start-up. For `local`, reads the password from
/// `password` and checks it, so a wrong password fails here rather than at the first use. For
/// `none`, the password is not read.
pub fn open_configured(
    settings: &SecretStoreSettings,
    password: PasswordSource,
) -> Result<Arc<dyn SecretStore>, SecretError> {
    match settings {
        SecretStoreSettings::None => Ok(Arc::new(NoSecretStore)),
        SecretStoreSettings::Local { store_location } => {
            let root = expand_home(store_location)?;
            let password = read_password(&password)?;
            Ok(Arc::new(LocalSecretStore::open(&root, &password)?))
        }
    }
}

/// The value of a secret reference as text, for the settings and fields that are text (access
/// keys, registry credentials); zeroed when dropped, like every secret value.
pub fn resolve_text(
    store: &dyn SecretStore,
    reference: &SecretReference,
) -> Result<zeroize::Zeroizing<String>, SecretError> {
    let value = store.resolve(reference)?;
    match std::str::from_utf8(&value) {
        Ok(text) => Ok(zeroize::Zeroizing::new(text.to_owned())),
        Err(_) => Err(SecretError::NotText { reference: reference.clone() }),
    }
}

/// `path` with a leading `~` or `~/` replaced by `$HOME`; other paths unchanged.
pub fn expand_home(path: &Path) -> Result<PathBuf, SecretError> {
    let Ok(rest) = path.strip_prefix("~") else {
        return Ok(path.to_owned());
    };
    let home = std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .ok_or_else(|| SecretError::HomeUnknown { path: path.to_owned() })?;
    let home = PathBuf::from(home);
    Ok(if rest.as_os_str().is_empty() { home } else { home.join(rest) })
}

/// The value of `key` in secret `name`, whose value must be a JSON object: a JSON string's
/// contents, or the JSON text of any other value.
pub fn select_key(name: &str, key: &str, value: &[u8]) -> Result<SecretValue, SecretError> {
    let not_an_object = || SecretError::NotAnObject { name: name.to_owned(), key: key.to_owned() };
    let mut json: serde_json::Value = serde_json::from_slice(value).map_err(|_| not_an_object())?;
    let selected = match &json {
        serde_json::Value::Object(map) => match map.get(key) {
            None => Err(SecretError::KeyNotFound { name: name.to_owned(), key: key.to_owned() }),
            Some(serde_json::Value::String(text)) => Ok(SecretValue::new(text.as_bytes().to_vec())),
            Some(other) => Ok(SecretValue::new(serde_json::to_vec(other).expect("a JSON value serialises"))),
        },
        _ => Err(not_an_object()),
    };
    scrub_json(&mut json);
    selected
}

/// Zeroes the strings of a parsed JSON value before it is dropped, since serde_json's buffers do
/// not zero themselves. Numbers cannot be scrubbed this way; credentials are strings.
fn scrub_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) => text.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub_json),
        serde_json::Value::Object(map) => {
            for (mut key, mut item) in std::mem::take(map) {
                key.zeroize();
                scrub_json(&mut item);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(value: &str, key: &str, expected: Result<&str, &str>) {
        let got = select_key("s", key, value.as_bytes());
        match (got, expected) {
            (Ok(got), Ok(expected)) => assert_eq!(got.as_slice(), expected.as_bytes()),
            (Err(error), Err(expected)) => assert_eq!(error.to_string(), expected),
            (got, expected) => panic!("got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn keys_of_json_objects() {
        let creds = r#"{"AccessKeyId":"AKIA\"x","n":5,"o":{"a":[1,"b"]},"t":true,"z":null}"#;
        check(creds, "AccessKeyId", Ok("AKIA\"x"));
        check(creds, "n", Ok("5"));
        check(creds, "o", Ok(r#"{"a":[1,"b"]}"#));
        check(creds, "t", Ok("true"));
        check(creds, "z", Ok("null"));
        check(creds, "missing", Err("secret `s` has no key `missing`"));
        let not_object = "secret `s` is not a JSON object, so its key `k` cannot be read";
        check("[1,2]", "k", Err(not_object));
        check("\"text\"", "k", Err(not_object));
        check("not json at all", "k", Err(not_object));
    }

    #[test]
    fn errors_about_values_never_quote_them() {
        let value = br#"{"AccessKeyId": "AKIA-VALUE-MARKER" trailing garbage"#;
        let error = select_key("s", "AccessKeyId", value).unwrap_err();
        assert!(!format!("{error} {error:?}").contains("VALUE-MARKER"));
    }

    #[test]
    fn tilde_expands_to_home() {
        let home = PathBuf::from(std::env::var_os("HOME").expect("tests run with HOME set"));
        assert_eq!(expand_home(Path::new("~/.hydro_secrets")).unwrap(), home.join(".hydro_secrets"));
        assert_eq!(expand_home(Path::new("~")).unwrap(), home);
        assert_eq!(expand_home(Path::new("/abs/~")).unwrap(), PathBuf::from("/abs/~"));
        assert_eq!(expand_home(Path::new("~user/x")).unwrap(), PathBuf::from("~user/x"));
    }

    #[test]
    fn the_none_store_is_opened_without_a_password() {
        let store =
            open_configured(&SecretStoreSettings::None, PasswordSource::File(PathBuf::from("/nonexistent")))
                .unwrap();
        let reference = SecretReference { secret_name: "s".into(), key: None };
        assert!(matches!(store.resolve(&reference), Err(SecretError::NoStore { .. })));
    }

    #[test]
    fn open_configured_checks_the_password() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("store");
        let store = LocalSecretStore::init_with_iterations(&root, &Password::from("right"), 10).unwrap();
        store.add("s", b"v", IfExists::Fail).unwrap();
        let settings = SecretStoreSettings::Local { store_location: root.clone() };
        let given = |text: &str| PasswordSource::Given(Password::from(text));
        assert!(matches!(
            open_configured(&settings, given("wrong")),
            Err(SecretError::WrongPassword { path }) if path == root
        ));
        let opened = open_configured(&settings, given("right")).unwrap();
        let reference = SecretReference { secret_name: "s".into(), key: None };
        assert_eq!(opened.resolve(&reference).unwrap().as_slice(), b"v");
    }
}
