//! Where the local store's password comes from: a file, an environment variable, or the terminal
//! (no echo). The server and `local-secret-store` choose the same way, through
//! [`PasswordSource::for_opening`] and [`PasswordSource::for_new_password`].

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use super::SecretError;
use super::files::read_private;

pub use crate::config::PASSWORD_ENV;
/// The environment variable that holds the new password of `init` and `change-password`.
pub const NEW_PASSWORD_ENV: &str = "HYDROPLANE_SECRET_STORE_NEW_PASSWORD";
/// The prompt for the store's password, as Hydroplane words it.
pub const PASSWORD_PROMPT: &str = "Enter local secret store password: ";
/// The prompt for a new password.
pub const NEW_PASSWORD_PROMPT: &str = "Enter new local secret store password: ";

/// The longest password file read, which keeps a wrong path (say, a disk image) from filling memory.
const PASSWORD_FILE_LIMIT: u64 = 64 * 1024;

/// A password, zeroed when dropped and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    /// Wraps password bytes.
    pub fn new(bytes: Vec<u8>) -> Password {
        Password(Zeroizing::new(bytes))
    }

    /// The password's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether the password is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Password {
    fn from(text: &str) -> Password {
        Password::new(text.as_bytes().to_vec())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Where to read a password from.
#[derive(Clone, Debug)]
pub enum PasswordSource {
    /// A file; one trailing newline (`\n` or `\r\n`) is dropped.
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// The controlling terminal, with no echo; when `confirm`, asked twice and compared.
    Terminal {
        /// What to ask.
        prompt: &'static str,
        /// Whether to ask again and require the same answer.
        confirm: bool,
    },
    /// A password the caller already has.
    Given(Password),
}

impl PasswordSource {
    /// The password of an existing store: `password_file` when given, else
    /// `HYDROPLANE_SECRET_STORE_PASSWORD` when set, else the terminal.
    pub fn for_opening(password_file: Option<PathBuf>) -> PasswordSource {
        match password_file {
            Some(path) => PasswordSource::File(path),
            None if std::env::var_os(PASSWORD_ENV).is_some() => PasswordSource::Env(PASSWORD_ENV),
            None => PasswordSource::Terminal { prompt: PASSWORD_PROMPT, confirm: false },
        }
    }

    /// A new password: `new_password_file` when given, else `HYDROPLANE_SECRET_STORE_NEW_PASSWORD`
    /// when set, else the terminal, asked twice.
    pub fn for_new_password(new_password_file: Option<PathBuf>) -> PasswordSource {
        match new_password_file {
            Some(path) => PasswordSource::File(path),
            None if std::env::var_os(NEW_PASSWORD_ENV).is_some() => PasswordSource::Env(NEW_PASSWORD_ENV),
            None => PasswordSource::Terminal { prompt: NEW_PASSWORD_PROMPT, confirm: true },
        }
    }

    /// Whether the password will be asked on the terminal.
    pub fn is_interactive(&self) -> bool {
        matches!(self, PasswordSource::Terminal { .. })
    }
}

/// Reads a password from `source`.
pub fn read_password(source: &PasswordSource) -> Result<Password, SecretError> {
    match source {
        PasswordSource::File(path) => {
            let read_error = |source| SecretError::PasswordFile { path: path.clone(), source };
            let mut bytes = read_private(path, PASSWORD_FILE_LIMIT)
                .map_err(read_error)?
                .ok_or_else(|| read_error(std::io::ErrorKind::NotFound.into()))?;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
            }
            Ok(Password(bytes))
        }
        PasswordSource::Env(name) => {
            let value: OsString = std::env::var_os(name).ok_or(SecretError::PasswordEnvUnset { name })?;
            Ok(Password::new(value.into_vec()))
        }
        PasswordSource::Terminal { prompt, confirm } => {
            let first = ask_terminal(prompt)?;
            if *confirm && ask_terminal("Repeat the password: ")? != first {
                return Err(SecretError::PasswordMismatch);
            }
            Ok(first)
        }
        PasswordSource::Given(password) => Ok(password.clone()),
    }
}

fn ask_terminal(prompt: &str) -> Result<Password, SecretError> {
    // rpassword prompts and reads on /dev/tty, so standard input stays free for secret values.
    let answer = rpassword::prompt_password(prompt).map_err(|source| SecretError::NoTerminal { source })?;
    Ok(Password::new(answer.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_files_lose_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        for (contents, expected) in [
            (&b"secret\n"[..], &b"secret"[..]),
            (b"secret\r\n", b"secret"),
            (b"secret", b"secret"),
            (b"secret\n\n", b"secret\n"),
            (b" spaced \n", b" spaced "),
        ] {
            let path = dir.path().join("pw");
            std::fs::write(&path, contents).unwrap();
            let password = read_password(&PasswordSource::File(path)).unwrap();
            assert_eq!(password.as_bytes(), expected);
        }
    }

    #[test]
    fn a_missing_password_file_names_the_file() {
        let path = PathBuf::from("/nonexistent/password-file");
        let error = read_password(&PasswordSource::File(path)).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/password-file"), "{error}");
    }

    #[test]
    fn debug_output_redacts_passwords() {
        let password = Password::from("hunter2-marker");
        let source = PasswordSource::Given(password.clone());
        for printed in [format!("{password:?}"), format!("{source:?}"), format!("{source:#?}")] {
            assert!(!printed.contains("hunter2-marker"), "{printed}");
            assert!(printed.contains("<redacted>"), "{printed}");
        }
    }
}
