//! The file-system side of the local store: private directories and files, atomic replacement,
//! and the writers' lock.
//!
//! Modes are set with an explicit `chmod` after creation because the mode given to `open(2)` and
//! `mkdir(2)` is filtered through the umask, which may be anything. A file is replaced by writing a
//! temporary file in the same directory, syncing it, renaming it over the old one and syncing the
//! directory, so that a crash leaves either the old or the new file, whole.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{FlockOperation, flock};
use zeroize::Zeroizing;

use super::SecretError;
use super::crypto::random_id;

/// The mode of every directory of a store.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file of a store.
pub const FILE_MODE: u32 = 0o600;
/// Temporary files start with this; no secret name or store file does.
pub const TEMP_PREFIX: &str = ".tmp-";

/// How long a writer waits for another writer to finish before giving up.
const LOCK_TIMEOUT: Duration = Duration::from_secs(60);
const LOCK_POLL: Duration = Duration::from_millis(20);

/// An I/O error, with the step and the path it concerns.
pub fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SecretError {
    let path = path.to_owned();
    move |source| SecretError::Io { operation, path, source }
}

/// Creates a directory with mode 0700; `Ok(false)` when it already existed.
pub fn create_private_dir(path: &Path) -> Result<bool, SecretError> {
    match DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => {
            set_mode(path, DIR_MODE)?;
            Ok(true)
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(io_error("create directory", path)(error)),
    }
}

/// Sets the permission bits of `path`.
pub fn set_mode(path: &Path, mode: u32) -> Result<(), SecretError> {
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(io_error("set permissions of", path))
}

/// Sets the permission bits of `path` to `mode` when they differ. Symbolic links are refused: the
/// store makes none, and following one could loosen the mode of a file outside the store.
pub fn repair_mode(path: &Path, mode: u32) -> Result<(), SecretError> {
    let metadata = fs::symlink_metadata(path).map_err(io_error("inspect", path))?;
    if metadata.file_type().is_symlink() {
        return Err(SecretError::StoreDamaged {
            path: path.to_owned(),
            reason: "it is a symbolic link, which the store never makes",
        });
    }
    if metadata.permissions().mode() & 0o7777 != mode {
        set_mode(path, mode)?;
    }
    Ok(())
}

/// Creates `path`, which must not exist, with mode 0600 and `contents`, and syncs it. The caller
/// syncs the directory.
pub fn write_new_file(path: &Path, contents: &[u8]) -> Result<(), SecretError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(io_error("create", path))?;
    file.set_permissions(Permissions::from_mode(FILE_MODE)).map_err(io_error("set permissions of", path))?;
    file.write_all(contents).map_err(io_error("write", path))?;
    file.sync_all().map_err(io_error("sync", path))
}

/// Replaces (or creates) `dir/name` with `contents` atomically and durably.
pub fn replace_file(dir: &Path, name: &str, contents: &[u8]) -> Result<(), SecretError> {
    let id = random_id().map_err(|_| SecretError::RandomFailed)?;
    let temp = dir.join(format!("{TEMP_PREFIX}{id}"));
    let target = dir.join(name);
    let result = write_new_file(&temp, contents)
        .and_then(|()| fs::rename(&temp, &target).map_err(io_error("rename into place", &target)));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;
    sync_dir(dir)
}

/// Makes the entries of `dir` (creations, renames, removals) durable.
pub fn sync_dir(dir: &Path) -> Result<(), SecretError> {
    File::open(dir).and_then(|handle| handle.sync_all()).map_err(io_error("sync directory", dir))
}

/// Reads a whole file into a buffer that is zeroed when dropped; `Ok(None)` when it does not exist.
/// Files longer than `limit` are an error of kind `InvalidData`, read no further.
pub fn read_private(path: &Path, limit: u64) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let length = file.metadata()?.len();
    if length > limit {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "file larger than the limit"));
    }
    // The exact capacity up front means the buffer never reallocates, which would leave an
    // unzeroed copy of the contents behind.
    let capacity = usize::try_from(length).unwrap_or(usize::MAX);
    let mut buffer = Zeroizing::new(Vec::with_capacity(capacity));
    file.take(limit).read_to_end(&mut buffer)?;
    Ok(Some(buffer))
}

/// Reads everything from `reader` (at most `limit` bytes) into zeroed-on-drop memory, growing by
/// copying into a new zeroed-on-drop buffer so that no unzeroed copy is left behind.
pub fn read_all_private(reader: &mut impl Read, limit: usize) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut buffer = Zeroizing::new(Vec::with_capacity(4096));
    let mut chunk = Zeroizing::new([0u8; 4096]);
    loop {
        let count = match reader.read(&mut chunk[..]) {
            Ok(0) => return Ok(buffer),
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if buffer.len() + count > limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "input larger than the limit"));
        }
        if buffer.len() + count > buffer.capacity() {
            let mut grown =
                Zeroizing::new(Vec::with_capacity((buffer.capacity() * 2).max(buffer.len() + count)));
            grown.extend_from_slice(&buffer);
            buffer = grown;
        }
        buffer.extend_from_slice(&chunk[..count]);
    }
}

/// An exclusive `flock` on the store's lock file, held until dropped. Writers hold it for the whole
/// of a change; readers do not need it, because every change they could see is a single rename.
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
}

impl WriterLock {
    /// Takes the lock at `path`, creating the file with mode 0600, waiting up to a minute for
    /// another writer.
    pub fn acquire(path: &Path, store: &Path) -> Result<WriterLock, SecretError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(path)
            .map_err(io_error("open lock file", path))?;
        file.set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(io_error("set permissions of", path))?;
        // Polling, rather than a blocking flock, bounds the wait: a writer stuck on a terminal
        // prompt should not hang the next one for ever. The polls are counted, not timed: this
        // is blocking code, and the time it waits need not be exact.
        let mut polls_left = LOCK_TIMEOUT.as_millis() / LOCK_POLL.as_millis();
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(WriterLock { _file: file }),
                Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR) if polls_left > 0 => {
                    polls_left -= 1;
                    std::thread::sleep(LOCK_POLL);
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(SecretError::Locked { path: store.to_owned() });
                }
                Err(errno) => return Err(io_error("lock", path)(errno.into())),
            }
        }
    }
}

/// The entries of a directory, as names; entries whose names are not UTF-8 are returned as `None`.
pub fn dir_entries(dir: &Path) -> io::Result<Vec<(Option<String>, PathBuf)>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        entries.push((entry.file_name().into_string().ok(), entry.path()));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn replace_file_is_private_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        replace_file(dir.path(), "f", b"one").unwrap();
        replace_file(dir.path(), "f", b"two").unwrap();
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"two");
        assert_eq!(mode_of(&dir.path().join("f")), FILE_MODE);
        let names: Vec<_> = dir_entries(dir.path()).unwrap().into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, [Some("f".to_owned())]);
    }

    #[test]
    fn repair_mode_fixes_loose_modes_and_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        set_mode(&file, 0o644).unwrap();
        repair_mode(&file, FILE_MODE).unwrap();
        assert_eq!(mode_of(&file), FILE_MODE);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(matches!(repair_mode(&link, FILE_MODE), Err(SecretError::StoreDamaged { .. })));
    }

    #[test]
    fn read_private_respects_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"12345").unwrap();
        assert_eq!(read_private(&file, 5).unwrap().unwrap().as_slice(), b"12345");
        assert_eq!(read_private(&file, 4).unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert!(read_private(&dir.path().join("missing"), 5).unwrap().is_none());
    }

    #[test]
    fn read_all_private_reads_everything_up_to_the_limit() {
        let data: Vec<u8> = (0..10_000u32).map(|index| (index % 251) as u8).collect();
        let read = read_all_private(&mut data.as_slice(), data.len()).unwrap();
        assert_eq!(read.as_slice(), data.as_slice());
        let error = read_all_private(&mut data.as_slice(), data.len() - 1).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_second_writer_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let lock_path = dir.path().join("lock");
        let first = WriterLock::acquire(&lock_path, dir.path()).unwrap();
        assert_eq!(mode_of(&lock_path), FILE_MODE);
        let second_file = File::open(&lock_path).unwrap();
        assert_eq!(
            flock(&second_file, FlockOperation::NonBlockingLockExclusive),
            Err(rustix::io::Errno::WOULDBLOCK)
        );
        drop(first);
        flock(&second_file, FlockOperation::NonBlockingLockExclusive).unwrap();
    }
}
