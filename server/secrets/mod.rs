//! Secret stores: where the values behind `SecretReference`s come from.
//!
//! `none` refuses every reference; `local` (issue 3) is a directory of encrypted files opened
//! with a password. Secret values travel as [`SecretValue`], a buffer zeroed when dropped, and no
//! error of this module ever carries a value, only names.

use crate::spec::SecretReference;

/// A secret's bytes, zeroed when dropped.
pub type SecretValue = zeroize::Zeroizing<Vec<u8>>;

/// Resolves secret references to values.
pub trait SecretStore: Send + Sync {
    /// The value a reference names: the whole secret, or one key of a JSON-object secret.
    fn resolve(&self, reference: &SecretReference) -> Result<SecretValue, SecretError>;
}

/// Why a secret could not be resolved. Messages name secrets and keys, never values.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
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
    /// A key was asked of a secret that is not a JSON object of strings.
    #[error("secret `{name}` is not a JSON object, so its key `{key}` cannot be read")]
    NotAnObject {
        /// The secret's name.
        name: String,
        /// The key asked for.
        key: String,
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
