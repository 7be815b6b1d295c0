//! The encrypted local secret store: a directory opened with a password.
//!
//! # On disk
//! ```text
//! <store>/                 0700
//!   CURRENT                0600  the live generation's id, e.g. `3f2a9c0d1e4b5a67`
//!   lock                   0600  flock'ed by writers
//!   gen-<id>/              0700  one generation: everything sealed under one key
//!     header               0600  salt, iteration count, check value (see `crypto`)
//!     secrets/             0700
//!       <secret name>      0600  `HPS1` || nonce || AES-256-GCM(value, aad = name) || tag
//! ```
//!
//! # Invariants
//! - Every change a reader can observe is one `rename(2)`: a secret file replaced or removed in the
//!   live generation, or `CURRENT` switched to another generation. So readers take no lock, and a
//!   writer killed at any instant leaves every secret readable with the old or the new value.
//! - A password change writes a complete new generation (header and every secret) beside the live
//!   one, syncs it, and only then switches `CURRENT`: that rename is the commit point. Until it,
//!   the old password opens the old generation; after it, the new one opens the new. Generations
//!   that are not live are leftovers of a crash (or the one just replaced) and are deleted by the
//!   next writer.
//! - Writers hold the exclusive lock for the whole change, so two writers never interleave.
//! - Every directory is 0700 and every file 0600 after every operation, whatever the umask:
//!   modes are set explicitly at creation and checked (and repaired) when the store is opened.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::crypto::{Header, StoreKey, default_iterations, is_random_id, random_id};
use super::files::{
    DIR_MODE, FILE_MODE, TEMP_PREFIX, WriterLock, create_private_dir, dir_entries, io_error, read_private,
    repair_mode, replace_file, sync_dir, write_new_file,
};
use super::name::validate_secret_name;
use super::password::Password;
use super::{SecretError, SecretStore, SecretValue, select_key};
use crate::spec::SecretReference;

/// The largest secret value, far above any credential, so a damaged size cannot exhaust memory.
pub const MAX_VALUE_LEN: usize = 16 * 1024 * 1024;

const CURRENT_FILE: &str = "CURRENT";
const LOCK_FILE: &str = "lock";
const GENERATION_PREFIX: &str = "gen-";
const HEADER_FILE: &str = "header";
const SECRETS_DIR: &str = "secrets";
/// Room for the magic, nonce and tag around the largest value.
const MAX_SECRET_FILE_LEN: u64 = MAX_VALUE_LEN as u64 + 64;
const MAX_HEADER_LEN: u64 = 64 * 1024;

/// What [`LocalSecretStore::add`] does when the name is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfExists {
    /// Refuse, with [`SecretError::AlreadyExists`].
    Fail,
    /// Replace the old value.
    Replace,
}

/// An open local secret store: its directory and the key of the generation it was opened at.
pub struct LocalSecretStore {
    root: PathBuf,
    generation: String,
    iterations: u32,
    key: StoreKey,
}

impl fmt::Debug for LocalSecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalSecretStore")
            .field("root", &self.root)
            .field("generation", &self.generation)
            .field("iterations", &self.iterations)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl LocalSecretStore {
    /// Creates an empty store at `root` with `password`, refusing if a store is already there.
    /// The directory (but not its parent) is created when missing; an existing one must be empty
    /// or hold only the leftovers of an interrupted `init`.
    pub fn init(root: &Path, password: &Password) -> Result<LocalSecretStore, SecretError> {
        Self::init_with_iterations(root, password, default_iterations())
    }

    /// [`LocalSecretStore::init`] with a given iteration count, for this module's tests.
    pub(super) fn init_with_iterations(
        root: &Path,
        password: &Password,
        iterations: u32,
    ) -> Result<LocalSecretStore, SecretError> {
        if password.is_empty() {
            return Err(SecretError::EmptyPassword);
        }
        let created = create_private_dir(root)?;
        if !created {
            let metadata = fs::symlink_metadata(root).map_err(io_error("inspect", root))?;
            if !metadata.is_dir() {
                return Err(SecretError::NotAStore { path: root.to_owned() });
            }
            repair_mode(root, DIR_MODE)?;
        }
        let _lock = WriterLock::acquire(&root.join(LOCK_FILE), root)?;
        if root.join(CURRENT_FILE).exists() {
            return Err(SecretError::StoreExists { path: root.to_owned() });
        }
        // Only the leftovers of an interrupted `init` may be there: anything else is someone's data.
        for (name, _) in dir_entries(root).map_err(io_error("list", root))? {
            let ours = name.as_deref().is_some_and(|name| {
                name == LOCK_FILE || name.starts_with(GENERATION_PREFIX) || name.starts_with(TEMP_PREFIX)
            });
            if !ours {
                return Err(SecretError::NotAStore { path: root.to_owned() });
            }
        }
        remove_stale(root, None);
        let (header, key) =
            Header::create(password.as_bytes(), iterations).map_err(|_| SecretError::RandomFailed)?;
        let generation = random_id().map_err(|_| SecretError::RandomFailed)?;
        write_generation(root, &generation, &header, &[])?;
        switch_current(root, &generation)?;
        Ok(LocalSecretStore { root: root.to_owned(), generation, iterations: header.iterations(), key })
    }

    /// Opens the store at `root`, checking `password` and repairing loose permissions.
    pub fn open(root: &Path, password: &Password) -> Result<LocalSecretStore, SecretError> {
        // A password change may commit, and delete the generation just read, between reading
        // `CURRENT` and reading its header; reading `CURRENT` again then finds the new one.
        let mut attempts = 0;
        let (generation, header) = loop {
            attempts += 1;
            let generation = read_current(root)?;
            let header_path = root.join(generation_dir_name(&generation)).join(HEADER_FILE);
            match read_private(&header_path, MAX_HEADER_LEN) {
                Ok(Some(bytes)) => {
                    let header = Header::parse(&bytes)
                        .map_err(|reason| SecretError::StoreDamaged { path: header_path.clone(), reason })?;
                    break (generation, header);
                }
                Ok(None) if attempts < 3 && read_current(root)? != generation => continue,
                Ok(None) => {
                    return Err(SecretError::StoreDamaged {
                        path: header_path,
                        reason: "the live generation has no header",
                    });
                }
                Err(error) => return Err(io_error("read", &header_path)(error)),
            }
        };
        let key = header
            .unlock(password.as_bytes())
            .ok_or_else(|| SecretError::WrongPassword { path: root.to_owned() })?;
        let store =
            LocalSecretStore { root: root.to_owned(), generation, iterations: header.iterations(), key };
        store.repair_permissions()?;
        Ok(store)
    }

    /// Checks that a store exists at `root`, before asking for its password.
    pub fn check_exists(root: &Path) -> Result<(), SecretError> {
        read_current(root).map(drop)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The PBKDF2 iteration count of the key the store was opened with.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// The names of all secrets, sorted.
    pub fn list(&self) -> Result<Vec<String>, SecretError> {
        let dir = self.secrets_dir();
        let entries = match dir_entries(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(self.vanished()?),
            Err(error) => return Err(io_error("list", &dir)(error)),
        };
        let mut names: Vec<String> = entries
            .into_iter()
            .filter_map(|(name, _)| name)
            .filter(|name| validate_secret_name(name).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The whole value of secret `name`.
    pub fn get(&self, name: &str) -> Result<SecretValue, SecretError> {
        validate_secret_name(name)?;
        let path = self.secrets_dir().join(name);
        let sealed = match read_private(&path, MAX_SECRET_FILE_LEN) {
            Ok(Some(sealed)) => sealed,
            Ok(None) => return Err(self.missing(name)?),
            Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                return Err(SecretError::Damaged { name: name.to_owned(), path });
            }
            Err(error) => return Err(io_error("read", &path)(error)),
        };
        self.key.open_secret(name, &sealed).ok_or(SecretError::Damaged { name: name.to_owned(), path })
    }

    /// Whether secret `name` exists.
    pub fn contains(&self, name: &str) -> Result<bool, SecretError> {
        validate_secret_name(name)?;
        let path = self.secrets_dir().join(name);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                self.check_live()?;
                Ok(false)
            }
            Err(error) => Err(io_error("inspect", &path)(error)),
        }
    }

    /// Stores `value` as secret `name`, atomically.
    pub fn add(&self, name: &str, value: &[u8], if_exists: IfExists) -> Result<(), SecretError> {
        validate_secret_name(name)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(SecretError::TooLarge { name: name.to_owned(), limit: MAX_VALUE_LEN });
        }
        let _lock = self.lock_for_writing()?;
        if if_exists == IfExists::Fail && self.contains(name)? {
            return Err(SecretError::AlreadyExists { name: name.to_owned() });
        }
        let sealed = self.key.seal_secret(name, value).map_err(|_| SecretError::RandomFailed)?;
        replace_file(&self.secrets_dir(), name, &sealed)
    }

    /// Deletes secret `name`.
    pub fn remove(&self, name: &str) -> Result<(), SecretError> {
        validate_secret_name(name)?;
        let _lock = self.lock_for_writing()?;
        let dir = self.secrets_dir();
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&dir),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                Err(SecretError::NotFound { name: name.to_owned() })
            }
            Err(error) => Err(io_error("remove", &path)(error)),
        }
    }

    /// Re-encrypts every secret under `new_password` (with a fresh salt and the current iteration
    /// count) and returns the store opened with it. Atomic: until the switch, the old password
    /// keeps working; after it, the new one does. A damaged secret aborts the change.
    pub fn change_password(&self, new_password: &Password) -> Result<LocalSecretStore, SecretError> {
        self.change_password_with_iterations(new_password, default_iterations())
    }

    /// [`LocalSecretStore::change_password`] with a given iteration count.
    fn change_password_with_iterations(
        &self,
        new_password: &Password,
        iterations: u32,
    ) -> Result<LocalSecretStore, SecretError> {
        if new_password.is_empty() {
            return Err(SecretError::EmptyPassword);
        }
        let _lock = self.lock_for_writing()?;
        let (header, key) =
            Header::create(new_password.as_bytes(), iterations).map_err(|_| SecretError::RandomFailed)?;
        let mut sealed_secrets = Vec::new();
        for name in self.list()? {
            let value = self.get(&name)?;
            let sealed = key.seal_secret(&name, &value).map_err(|_| SecretError::RandomFailed)?;
            sealed_secrets.push((name, sealed));
        }
        let generation = random_id().map_err(|_| SecretError::RandomFailed)?;
        if let Err(error) = write_generation(&self.root, &generation, &header, &sealed_secrets) {
            let _ = fs::remove_dir_all(self.root.join(generation_dir_name(&generation)));
            return Err(error);
        }
        switch_current(&self.root, &generation)?;
        remove_stale(&self.root, Some(&generation));
        Ok(LocalSecretStore { root: self.root.clone(), generation, iterations: header.iterations(), key })
    }

    fn secrets_dir(&self) -> PathBuf {
        self.root.join(generation_dir_name(&self.generation)).join(SECRETS_DIR)
    }

    /// Takes the writers' lock and makes sure this store's generation is still the live one;
    /// clears what crashed writers left behind.
    fn lock_for_writing(&self) -> Result<WriterLock, SecretError> {
        let lock = WriterLock::acquire(&self.root.join(LOCK_FILE), &self.root)?;
        self.check_live()?;
        remove_stale(&self.root, Some(&self.generation));
        Ok(lock)
    }

    fn check_live(&self) -> Result<(), SecretError> {
        if read_current(&self.root)? == self.generation {
            Ok(())
        } else {
            Err(SecretError::Rekeyed { path: self.root.clone() })
        }
    }

    /// The error for a secret file that is not there: the secret is missing, unless the whole
    /// generation was replaced by a password change.
    fn missing(&self, name: &str) -> Result<SecretError, SecretError> {
        self.check_live()?;
        Ok(SecretError::NotFound { name: name.to_owned() })
    }

    /// The error for a generation directory that is not there.
    fn vanished(&self) -> Result<SecretError, SecretError> {
        self.check_live()?;
        Ok(SecretError::StoreDamaged {
            path: self.secrets_dir(),
            reason: "the live generation has no secrets directory",
        })
    }

    /// Sets every mode back to 0700/0600. A password change may delete this generation while we
    /// walk it; that is reported as such rather than as a missing file.
    fn repair_permissions(&self) -> Result<(), SecretError> {
        self.repair_generation_permissions().map_err(|error| match self.check_live() {
            Ok(()) => error,
            Err(rekeyed) => rekeyed,
        })
    }

    fn repair_generation_permissions(&self) -> Result<(), SecretError> {
        let generation_dir = self.root.join(generation_dir_name(&self.generation));
        let secrets_dir = self.secrets_dir();
        repair_mode(&self.root, DIR_MODE)?;
        repair_mode(&self.root.join(CURRENT_FILE), FILE_MODE)?;
        repair_mode(&generation_dir, DIR_MODE)?;
        repair_mode(&generation_dir.join(HEADER_FILE), FILE_MODE)?;
        repair_mode(&secrets_dir, DIR_MODE)?;
        let lock = self.root.join(LOCK_FILE);
        if lock.exists() {
            repair_mode(&lock, FILE_MODE)?;
        }
        for (name, path) in dir_entries(&secrets_dir).map_err(io_error("list", &secrets_dir))? {
            // Temporary files may vanish under us; they are created 0600 and never read.
            if name.is_some_and(|name| !name.starts_with(TEMP_PREFIX)) {
                repair_mode(&path, FILE_MODE)?;
            }
        }
        Ok(())
    }
}

impl SecretStore for LocalSecretStore {
    fn resolve(&self, reference: &SecretReference) -> Result<SecretValue, SecretError> {
        let resolved = self.resolve_unmetered(reference);
        crate::metrics::count_secret_operation("resolve", resolved.is_ok());
        resolved
    }
}

impl LocalSecretStore {
    fn resolve_unmetered(&self, reference: &SecretReference) -> Result<SecretValue, SecretError> {
        let value = self.get(&reference.secret_name)?;
        match &reference.key {
            None => Ok(value),
            Some(key) => select_key(&reference.secret_name, key, &value),
        }
    }
}

fn generation_dir_name(generation: &str) -> String {
    format!("{GENERATION_PREFIX}{generation}")
}

/// The id of the live generation.
fn read_current(root: &Path) -> Result<String, SecretError> {
    let path = root.join(CURRENT_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(SecretError::StoreMissing { path: root.to_owned() });
        }
        Err(error) if error.kind() == io::ErrorKind::NotADirectory => {
            return Err(SecretError::StoreMissing { path: root.to_owned() });
        }
        Err(error) => return Err(io_error("read", &path)(error)),
    };
    let text = String::from_utf8(bytes).unwrap_or_default();
    let generation = text.trim_end_matches('\n');
    if !is_random_id(generation) {
        return Err(SecretError::StoreDamaged { path, reason: "it does not name a generation" });
    }
    Ok(generation.to_owned())
}

/// Writes a complete generation (its secrets first, its header last) and makes it durable. It is
/// not live until [`switch_current`] names it.
fn write_generation(
    root: &Path,
    generation: &str,
    header: &Header,
    sealed_secrets: &[(String, Vec<u8>)],
) -> Result<(), SecretError> {
    let generation_dir = root.join(generation_dir_name(generation));
    let secrets_dir = generation_dir.join(SECRETS_DIR);
    create_new_private_dir(&generation_dir)?;
    create_new_private_dir(&secrets_dir)?;
    for (name, sealed) in sealed_secrets {
        write_new_file(&secrets_dir.join(name), sealed)?;
    }
    sync_dir(&secrets_dir)?;
    write_new_file(&generation_dir.join(HEADER_FILE), &header.to_bytes())?;
    sync_dir(&generation_dir)?;
    sync_dir(root)
}

fn create_new_private_dir(path: &Path) -> Result<(), SecretError> {
    if create_private_dir(path)? {
        Ok(())
    } else {
        Err(io_error("create directory", path)(io::ErrorKind::AlreadyExists.into()))
    }
}

/// Makes `generation` the live one: the commit point of `init` and of a password change.
fn switch_current(root: &Path, generation: &str) -> Result<(), SecretError> {
    replace_file(root, CURRENT_FILE, format!("{generation}\n").as_bytes())
}

/// Best-effort removal of what crashed or finished writers left: temporary files, and every
/// generation but `live`. Failures are ignored because the leftovers are harmless: no reader
/// looks at them, and the next writer tries again. Callers hold the writers' lock.
fn remove_stale(root: &Path, live: Option<&str>) {
    let live_dir = live.map(generation_dir_name);
    let Ok(entries) = dir_entries(root) else {
        return;
    };
    for (name, path) in entries {
        let Some(name) = name else { continue };
        if name.starts_with(TEMP_PREFIX) {
            let _ = fs::remove_file(&path);
        } else if name.starts_with(GENERATION_PREFIX) && Some(&name) != live_dir.as_ref() {
            let _ = fs::remove_dir_all(&path);
        }
    }
    if let Some(live_dir) = live_dir {
        let secrets_dir = root.join(live_dir).join(SECRETS_DIR);
        for (name, path) in dir_entries(&secrets_dir).unwrap_or_default() {
            if name.is_some_and(|name| name.starts_with(TEMP_PREFIX)) {
                let _ = fs::remove_file(&path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const FEW: u32 = 10;

    fn new_store(dir: &Path, password: &str) -> LocalSecretStore {
        LocalSecretStore::init_with_iterations(dir, &Password::from(password), FEW).unwrap()
    }

    fn reference(name: &str, key: Option<&str>) -> SecretReference {
        SecretReference { secret_name: name.to_owned(), key: key.map(str::to_owned) }
    }

    fn only_file(dir: &Path, name: &str) -> PathBuf {
        let generation = read_current(dir).unwrap();
        dir.join(generation_dir_name(&generation)).join(SECRETS_DIR).join(name)
    }

    #[test]
    fn add_get_list_remove() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("store");
        let store = new_store(&root, "pw");
        assert_eq!(store.list().unwrap(), Vec::<String>::new());
        store.add("b", b"\x00\xff\xfe binary", IfExists::Fail).unwrap();
        store.add("a", b"one", IfExists::Fail).unwrap();
        assert!(matches!(
            store.add("a", b"two", IfExists::Fail),
            Err(SecretError::AlreadyExists { name }) if name == "a"
        ));
        assert_eq!(store.get("a").unwrap().as_slice(), b"one");
        store.add("a", b"two", IfExists::Replace).unwrap();
        assert_eq!(store.get("a").unwrap().as_slice(), b"two");
        assert_eq!(store.get("b").unwrap().as_slice(), b"\x00\xff\xfe binary");
        assert_eq!(store.list().unwrap(), ["a", "b"]);
        store.remove("a").unwrap();
        assert!(matches!(store.remove("a"), Err(SecretError::NotFound { .. })));
        assert!(matches!(store.get("a"), Err(SecretError::NotFound { .. })));
        assert_eq!(store.list().unwrap(), ["b"]);
    }

    #[test]
    fn open_tells_a_wrong_password_and_a_missing_store() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("store");
        new_store(&root, "right").add("s", b"v", IfExists::Fail).unwrap();
        assert!(matches!(
            LocalSecretStore::open(&root, &Password::from("wrong")),
            Err(SecretError::WrongPassword { .. })
        ));
        let store = LocalSecretStore::open(&root, &Password::from("right")).unwrap();
        assert_eq!(store.iterations(), FEW);
        assert!(matches!(
            LocalSecretStore::open(&temp.path().join("nowhere"), &Password::from("right")),
            Err(SecretError::StoreMissing { .. })
        ));
    }

    #[test]
    fn init_refuses_an_existing_store_and_a_foreign_directory() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("store");
        new_store(&root, "pw").add("s", b"kept", IfExists::Fail).unwrap();
        assert!(matches!(
            LocalSecretStore::init_with_iterations(&root, &Password::from("other"), FEW),
            Err(SecretError::StoreExists { .. })
        ));
        let store = LocalSecretStore::open(&root, &Password::from("pw")).unwrap();
        assert_eq!(store.get("s").unwrap().as_slice(), b"kept");

        let foreign = temp.path().join("foreign");
        fs::create_dir(&foreign).unwrap();
        fs::write(foreign.join("notes.txt"), b"mine").unwrap();
        assert!(matches!(
            LocalSecretStore::init_with_iterations(&foreign, &Password::from("pw"), FEW),
            Err(SecretError::NotAStore { .. })
        ));
        assert!(matches!(
            LocalSecretStore::init_with_iterations(&temp.path().join("e"), &Password::from(""), FEW),
            Err(SecretError::EmptyPassword)
        ));
    }

    #[test]
    fn init_accepts_an_empty_directory_and_leftovers_of_an_interrupted_init() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("store");
        fs::create_dir(&root).unwrap();
        fs::create_dir(root.join("gen-0000000000000000")).unwrap();
        fs::write(root.join(".tmp-0000000000000000"), b"").unwrap();
        new_store(&root, "pw");
        let names: Vec<_> = dir_entries(&root).unwrap().into_iter().filter_map(|(name, _)| name).collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn damage_is_reported_per_secret_and_other_secrets_still_open() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("store");
        let store = new_store(&root, "pw");
        store.add("flipped", b"value-one", IfExists::Fail).unwrap();
        store.add("truncated", b"value-two", IfExists::Fail).unwrap();
        store.add("intact", b"value-three", IfExists::Fail).unwrap();
        let mut bytes = fs::read(only_file(&root, "flipped")).unwrap();
        bytes[20] ^= 0x01;
        fs::write(only_file(&root, "flipped"), bytes).unwrap();
        let bytes = fs::read(only_file(&root, "truncated")).unwrap();
        fs::write(only_file(&root, "truncated"), &bytes[..bytes.len() - 1]).unwrap();

        let store = LocalSecretStore::open(&root, &Password::from("pw")).unwrap();
        for name in ["flipped", "truncated"] {
            let error = store.get(name).unwrap_err();
            assert!(matches!(&error, SecretError::Damaged { name: got, .. } if got == name));
            assert!(error.to_string().starts_with(&format!("secret `{name}` is damaged")), "{error}");
        }
        assert_eq!(store.get("intact").unwrap().as_slice(), b"value-three");
    }

    #[test]
    fn a_file_renamed_to_another_secret_does_not_open() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("store");
        let store = new_store(&root, "pw");
        store.add("admin", b"admin-value", IfExists::Fail).unwrap();
        store.add("guest", b"guest-value", IfExists::Fail).unwrap();
        fs::rename(only_file(&root, "admin"), only_file(&root, "guest")).unwrap();
        assert!(matches!(store.get("guest"), Err(SecretError::Damaged { .. })));
    }

    #[test]
    fn a_damaged_header_is_not_a_wrong_password() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("store");
        new_store(&root, "pw");
        let generation = read_current(&root).unwrap();
        let header_path = root.join(generation_dir_name(&generation)).join(HEADER_FILE);
        let text = fs::read_to_string(&header_path).unwrap();
        fs::write(&header_path, text.replace("\"iterations\": 10", "\"iterations\": 1")).unwrap();
        assert!(matches!(
            LocalSecretStore::open(&root, &Password::from("pw")),
            Err(SecretError::StoreDamaged { .. })
        ));
    }

    #[test]
    fn change_password_re_encrypts_everything_and_retires_the_old_key() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("store");
        let old = new_store(&root, "old");
        old.add("a", b"alpha", IfExists::Fail).unwrap();
        old.add("b", b"\x00beta", IfExists::Fail).unwrap();
        let new = old.change_password_with_iterations(&Password::from("new"), FEW + 1).unwrap();
        assert_eq!(new.iterations(), FEW + 1);
        assert!(matches!(
            LocalSecretStore::open(&root, &Password::from("old")),
            Err(SecretError::WrongPassword { .. })
        ));
        let reopened = LocalSecretStore::open(&root, &Password::from("new")).unwrap();
        assert_eq!(reopened.get("a").unwrap().as_slice(), b"alpha");
        assert_eq!(reopened.get("b").unwrap().as_slice(), b"\x00beta");
        // The store opened before the change fails clearly rather than with a decryption error.
        assert!(matches!(old.get("a"), Err(SecretError::Rekeyed { .. })));
        assert!(matches!(old.add("c", b"x", IfExists::Fail), Err(SecretError::Rekeyed { .. })));
        let generations = dir_entries(&root)
            .unwrap()
            .into_iter()
            .filter(|(name, _)| name.as_deref().is_some_and(|name| name.starts_with(GENERATION_PREFIX)))
            .count();
        assert_eq!(generations, 1);
    }

    #[test]
    fn change_password_stops_at_a_damaged_secret_and_keeps_the_old_password() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("store");
        let store = new_store(&root, "old");
        store.add("bad", b"value", IfExists::Fail).unwrap();
        fs::write(only_file(&root, "bad"), b"HPS1 junk").unwrap();
        assert!(matches!(
            store.change_password_with_iterations(&Password::from("new"), FEW),
            Err(SecretError::Damaged { .. })
        ));
        LocalSecretStore::open(&root, &Password::from("old")).unwrap();
    }

    #[test]
    fn resolve_picks_keys_of_json_objects() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("store");
        let store = new_store(&root, "pw");
        store
            .add("aws-credentials", br#"{"AccessKeyId":"AKIA","SecretAccessKey":"sk","n":5}"#, IfExists::Fail)
            .unwrap();
        let resolve = |name, key| store.resolve(&reference(name, key));
        assert_eq!(resolve("aws-credentials", Some("AccessKeyId")).unwrap().as_slice(), b"AKIA");
        assert_eq!(resolve("aws-credentials", Some("n")).unwrap().as_slice(), b"5");
        assert!(matches!(
            resolve("aws-credentials", Some("Missing")),
            Err(SecretError::KeyNotFound { name, key }) if name == "aws-credentials" && key == "Missing"
        ));
        assert!(matches!(resolve("nope", None), Err(SecretError::NotFound { name }) if name == "nope"));
    }

    #[test]
    fn open_repairs_loose_permissions() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("store");
        new_store(&root, "pw").add("s", b"v", IfExists::Fail).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(only_file(&root, "s"), fs::Permissions::from_mode(0o644)).unwrap();
        LocalSecretStore::open(&root, &Password::from("pw")).unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&root), DIR_MODE);
        assert_eq!(mode(&only_file(&root, "s")), FILE_MODE);
    }

    #[test]
    fn debug_output_redacts_the_key() {
        let temp = tempfile::tempdir().unwrap();
        let store = new_store(&temp.path().join("store"), "pw");
        let printed = format!("{store:?}");
        assert!(printed.contains("key: \"<redacted>\""), "{printed}");
    }
}
