//! Bearer tokens: the tokens file (names, SHA-256 hashes, scopes, groups; never a token), the
//! store the guard layer authenticates against (re-read when the file changes, so a revoked token
//! is refused within a second), and the edits `hydroplane token` makes.
//!
//! A token is `hp_` and 43 characters of base64url (256 random bits), so a plain SHA-256 is as
//! strong as a slow hash would be: nobody can search a space that size. Presented tokens are
//! compared with every known hash in constant time, so the time a refusal takes says nothing
//! about how close a guess was.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::security::access::{Caller, GroupPattern, Groups, Scope, parse_group_patterns, parse_scopes};

/// What every token starts with, so a leaked one is easy to recognise (and to scan for).
pub const TOKEN_PREFIX: &str = "hp_";

/// How often the server looks at the tokens file for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(500);

/// The largest tokens file read: far above any real one, and a bound on what a mistake costs.
const MAX_FILE_BYTES: u64 = 16 << 20;

/// The first lines of a tokens file this module writes.
const HEADER: &str = "# Hydroplane API tokens, written by `hydroplane token`. Only SHA-256 hashes are kept here:\n\
# a token is shown once, when it is created. Remove an entry to revoke its token; a running\n\
# server notices within a second.\n";

/// One token as the file holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRecord {
    name: String,
    sha256: String,
    scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    groups: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created: Option<String>,
}

/// The file's shape.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenRecord>,
}

/// A checked token entry: who it is, and the hash of its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// What the caller is called in audit lines and messages.
    pub caller: Caller,
    /// SHA-256 of the token.
    hash: [u8; 32],
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("TokenEntry").field("caller", &self.caller).finish_non_exhaustive()
    }
}

/// Which token a caller presented: its hash, as the file holds it. Never printed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenId([u8; 32]);

impl std::fmt::Debug for TokenId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TokenId(<redacted>)")
    }
}

/// Every token of a tokens file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenBook {
    entries: Vec<TokenEntry>,
}

impl TokenBook {
    /// Parses and checks a tokens file's text; the error names the token and the field.
    pub fn parse(text: &str) -> Result<TokenBook, String> {
        TokenBook::from_file(&parse_file(text)?)
    }

    /// Checks the tokens of a parsed file.
    fn from_file(file: &TokensFile) -> Result<TokenBook, String> {
        let mut entries: Vec<TokenEntry> = Vec::with_capacity(file.tokens.len());
        for (index, record) in file.tokens.iter().enumerate() {
            let what = format!("tokens[{index}] (`{}`)", record.name);
            check_name(&record.name).map_err(|problem| format!("{what}: name: {problem}"))?;
            let hash = parse_hash(&record.sha256).map_err(|problem| format!("{what}: sha256: {problem}"))?;
            let scopes = parse_scopes(&record.scopes.join(","))
                .map_err(|problem| format!("{what}: scopes: {problem}"))?;
            let groups = match &record.groups {
                None => Groups::All,
                Some(patterns) => Groups::Only(
                    parse_group_patterns(&patterns.join(","))
                        .map_err(|problem| format!("{what}: groups: {problem}"))?,
                ),
            };
            if entries.iter().any(|entry| entry.caller.name == record.name) {
                return Err(format!("{what}: the name is used twice"));
            }
            if entries.iter().any(|entry| entry.hash == hash) {
                return Err(format!("{what}: the same token hash appears twice"));
            }
            entries.push(TokenEntry { caller: Caller { name: record.name.clone(), scopes, groups }, hash });
        }
        Ok(TokenBook { entries })
    }

    /// The caller a presented token belongs to. Every entry is compared, in constant time.
    pub fn authenticate(&self, presented: &str) -> Option<&Caller> {
        let hash = sha256(presented);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&hash)) {
                found = Some(&entry.caller);
            }
        }
        found
    }

    /// The caller a presented token belongs to, with the token's [`TokenId`], to find it again
    /// in a reloaded book. Every entry is compared, in constant time.
    pub fn identify(&self, presented: &str) -> Option<(&Caller, TokenId)> {
        let hash = sha256(presented);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&hash)) {
                found = Some((&entry.caller, TokenId(entry.hash)));
            }
        }
        found
    }

    /// The caller of the token `id`, if the book still holds that token.
    pub fn caller_of(&self, id: TokenId) -> Option<&Caller> {
        self.entries.iter().find(|entry| bool::from(entry.hash.ct_eq(&id.0))).map(|entry| &entry.caller)
    }

    /// The callers of the book, in file order.
    pub fn callers(&self) -> impl Iterator<Item = &Caller> {
        self.entries.iter().map(|entry| &entry.caller)
    }

    /// How many tokens it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no token.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn parse_file(text: &str) -> Result<TokensFile, String> {
    let meaningful = text.lines().any(|line| {
        let line = line.trim();
        !(line.is_empty() || line == "---" || line.starts_with('#'))
    });
    if !meaningful {
        return Ok(TokensFile::default());
    }
    serde_saphyr::from_str(text).map_err(|error| error.to_string())
}

fn check_name(name: &str) -> Result<(), String> {
    let valid_character =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 63 {
        return Err("must be 1 to 63 characters".to_owned());
    }
    if let Some(bad) = name.chars().find(|c| !valid_character(*c)) {
        return Err(format!("`{bad}` is not allowed (lower-case letters, digits, `-`, `_` and `.`)"));
    }
    Ok(())
}

fn parse_hash(text: &str) -> Result<[u8; 32], String> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return Err("must be 64 hexadecimal digits (a SHA-256)".to_owned());
    }
    let mut hash = [0u8; 32];
    for (index, pair) in bytes.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).map_err(|_| "must be hexadecimal".to_owned())?;
        hash[index] = u8::from_str_radix(pair, 16).map_err(|_| "must be hexadecimal digits".to_owned())?;
    }
    Ok(hash)
}

fn sha256(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Why a tokens file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file is missing.
    #[error(
        "the tokens file {path} does not exist; create it with `hydroplane token create --tokens-file {path} --name NAME --scope read`"
    )]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error("cannot {operation} {path}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The contents are not a valid tokens file.
    #[error("invalid tokens file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Other users could read the tokens file's hashes or write tokens of their own into it.
    #[error(
        "the tokens file {path} has mode {mode:04o}: other users could read or change it (and grant themselves access); `chmod 600 {path}`"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// An edit asked for something the file cannot hold.
    #[error("{0}")]
    Refused(String),
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TokenFileError {
    let path = path.to_owned();
    move |source| TokenFileError::Io { operation, path, source }
}

/// The permission bits a served tokens file may not have: write for its group, read or write
/// for others. Read for the group is allowed: Kubernetes mounts a Secret for a non-root
/// server through its `fsGroup`, group-readable (0440).
const TOO_OPEN: u32 = 0o026;

/// Reads a tokens file's text; `None` when it does not exist.
fn read_text(path: &Path) -> Result<Option<String>, TokenFileError> {
    read_private_text(path, false)
}

/// Reads a tokens file's text, refusing, when `private`, a file that others could read or
/// change (checked on the opened file, so a swap between the check and the read is caught);
/// `None` when it does not exist.
fn read_private_text(path: &Path, private: bool) -> Result<Option<String>, TokenFileError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("read the tokens file", path)(error)),
    };
    let metadata = file.metadata().map_err(io_error("read the tokens file", path))?;
    if private && metadata.mode() & TOO_OPEN != 0 {
        return Err(TokenFileError::TooOpen { path: path.to_owned(), mode: metadata.mode() & 0o7777 });
    }
    let length = metadata.len();
    if length > MAX_FILE_BYTES {
        return Err(TokenFileError::Invalid {
            path: path.to_owned(),
            message: format!("it is {length} bytes; the limit is {MAX_FILE_BYTES}"),
        });
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_FILE_BYTES), &mut text)
        .map_err(io_error("read the tokens file", path))?;
    Ok(Some(text))
}

/// Loads a tokens file; a missing file is an error.
pub fn load(path: &Path) -> Result<TokenBook, TokenFileError> {
    load_with_text(path).map(|(book, _)| book)
}

/// Loads a tokens file, with the text it was read from.
fn load_with_text(path: &Path) -> Result<(TokenBook, String), TokenFileError> {
    load_checked(path, false)
}

/// Loads a tokens file (one others could read or change refused, when `private`), with the
/// text it was read from.
fn load_checked(path: &Path, private: bool) -> Result<(TokenBook, String), TokenFileError> {
    let text =
        read_private_text(path, private)?.ok_or_else(|| TokenFileError::Missing { path: path.to_owned() })?;
    let book = TokenBook::parse(&text)
        .map_err(|message| TokenFileError::Invalid { path: path.to_owned(), message })?;
    Ok((book, text))
}

/// The tokens the server accepts, swapped whole when the file changes.
pub struct TokenStore {
    path: PathBuf,
    book: RwLock<Arc<TokenBook>>,
    /// The text the book was read from, so a change made just after opening is not missed.
    loaded_text: String,
    /// Counts the reloads, for those that act on a new book (ending revoked tokens' streams).
    reloads: tokio::sync::watch::Sender<u64>,
}

impl TokenStore {
    /// Loads the file (it must exist, and others must not be able to read or change it).
    pub fn open(path: &Path) -> Result<Arc<TokenStore>, TokenFileError> {
        let (book, text) = load_checked(path, true)?;
        if book.is_empty() {
            tracing::warn!(path = %path.display(), "the tokens file holds no token: every call will be refused");
        }
        Ok(Arc::new(TokenStore {
            path: path.to_owned(),
            book: RwLock::new(Arc::new(book)),
            loaded_text: text,
            reloads: tokio::sync::watch::Sender::new(0),
        }))
    }

    /// Changes each time a new book is in place.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// The tokens as last read.
    pub fn current(&self) -> Arc<TokenBook> {
        Arc::clone(&self.book.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Re-reads the file every [`RELOAD_INTERVAL`] until the task is aborted. A file that
    /// disappears revokes every token; one that no longer parses keeps the last good tokens and
    /// is reported once per change, so a typo never locks everybody out nor lets anyone in.
    pub fn watch_file(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let store = Arc::clone(self);
        tokio::spawn(async move {
            let mut last_text = Some(store.loaded_text.clone());
            // The last refusal reported, so that a file left as it is is reported once.
            let mut reported: Option<String> = None;
            let mut ticks = tokio::time::interval(RELOAD_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let path = store.path.clone();
                let read = tokio::task::spawn_blocking(move || read_private_text(&path, true)).await;
                let text = match read {
                    Ok(Ok(text)) => text,
                    Ok(Err(error)) => {
                        let message = error.to_string();
                        if reported.as_ref() != Some(&message) {
                            tracing::error!(error = %message, "cannot reload the tokens file; keeping the tokens as they were");
                            reported = Some(message);
                        }
                        continue;
                    }
                    Err(_) => continue,
                };
                reported = None;
                if text == last_text {
                    continue;
                }
                let book = match &text {
                    None => {
                        tracing::warn!(path = %store.path.display(), "the tokens file is gone: every token is revoked");
                        Ok(TokenBook::default())
                    }
                    Some(text) => TokenBook::parse(text),
                };
                match book {
                    Ok(book) => {
                        tracing::info!(path = %store.path.display(), tokens = book.len(), "reloaded the tokens file");
                        *store.book.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(book);
                        store.reloads.send_modify(|reloads| *reloads += 1);
                    }
                    Err(message) => tracing::error!(
                        path = %store.path.display(),
                        "the tokens file changed but is invalid, so the tokens stay as they were: {message}"
                    ),
                }
                last_text = text;
            }
        })
    }
}

/// A new token's secret, as `hydroplane token create` prints it once.
pub struct NewToken(String);

impl NewToken {
    /// The token, to show the user once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("NewToken(<redacted>)")
    }
}

/// What `hydroplane token create` asks for.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// The token's name.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<Scope>,
    /// The groups it may touch; every group when `None`.
    pub groups: Option<Vec<GroupPattern>>,
    /// When it was made, for the record (RFC 3339).
    pub created: String,
}

/// Adds a token to the file (creating it, mode 0600, when missing) and returns its secret.
pub fn create(path: &Path, request: &TokenRequest) -> Result<NewToken, TokenFileError> {
    check_name(&request.name).map_err(|problem| TokenFileError::Refused(format!("--name: {problem}")))?;
    let _lock = lock(path)?;
    let mut file = read_for_edit(path)?;
    if file.tokens.iter().any(|record| record.name == request.name) {
        return Err(TokenFileError::Refused(format!(
            "{} already has a token named `{}`; revoke it first or choose another name",
            path.display(),
            request.name
        )));
    }
    let token = generate()?;
    file.tokens.push(TokenRecord {
        name: request.name.clone(),
        sha256: hex(&sha256(&token.0)),
        scopes: request.scopes.iter().map(|scope| scope.name().to_owned()).collect(),
        groups: request
            .groups
            .as_ref()
            .map(|groups| groups.iter().map(|group| group.as_str().to_owned()).collect()),
        created: Some(request.created.clone()),
    });
    write(path, &file)?;
    Ok(token)
}

/// Removes the token of this name; says whether there was one.
pub fn revoke(path: &Path, name: &str) -> Result<bool, TokenFileError> {
    let _lock = lock(path)?;
    let mut file = read_for_edit(path)?;
    let before = file.tokens.len();
    file.tokens.retain(|record| record.name != name);
    if file.tokens.len() == before {
        return Ok(false);
    }
    write(path, &file)?;
    Ok(true)
}

fn generate() -> Result<NewToken, TokenFileError> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TokenFileError::Refused("the system's random number generator failed".to_owned()))?;
    Ok(NewToken(format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))))
}

fn read_for_edit(path: &Path) -> Result<TokensFile, TokenFileError> {
    let Some(text) = read_text(path)? else { return Ok(TokensFile::default()) };
    let invalid = |message| TokenFileError::Invalid { path: path.to_owned(), message };
    let file = parse_file(&text).map_err(invalid)?;
    // Checking the whole book first means an edit never builds on a broken file.
    TokenBook::from_file(&file).map_err(invalid)?;
    Ok(file)
}

/// Writes the file atomically (a private temporary file, fsync, rename), mode 0600.
fn write(path: &Path, file: &TokensFile) -> Result<(), TokenFileError> {
    let body = serde_saphyr::to_string(file)
        .map_err(|error| TokenFileError::Refused(format!("cannot encode the tokens file: {error}")))?;
    let directory = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = directory.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io_error("create", &temporary))?;
        out.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io_error("set permissions of", &temporary))?;
        out.write_all(HEADER.as_bytes()).map_err(io_error("write", &temporary))?;
        out.write_all(body.as_bytes()).map_err(io_error("write", &temporary))?;
        out.sync_all().map_err(io_error("write", &temporary))?;
        std::fs::rename(&temporary, path).map_err(io_error("replace", path))?;
        if let Ok(dir) = File::open(directory) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// An exclusive lock beside the file, so two edits at once never lose one of them.
fn lock(path: &Path) -> Result<File, TokenFileError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_error("create the lock file", &lock_path))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|errno| io_error("lock", &lock_path)(errno.into()))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, scopes: &str, groups: Option<&str>) -> TokenRequest {
        TokenRequest {
            name: name.to_owned(),
            scopes: parse_scopes(scopes).unwrap(),
            groups: groups.map(|groups| parse_group_patterns(groups).unwrap()),
            created: "2026-12-01T00:00:00Z".to_owned(),
        }
    }

    #[test]
    fn a_created_token_authenticates_and_only_its_hash_is_stored() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("tokens.yml");
        let ci = create(&path, &request("ci", "read,write", Some("ci-*"))).unwrap();
        let admin = create(&path, &request("root", "admin", None)).unwrap();
        assert!(ci.expose().starts_with(TOKEN_PREFIX) && ci.expose().len() == 46);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(ci.expose()) && !text.contains(&ci.expose()[3..]), "{text}");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let book = load(&path).unwrap();
        let caller = book.authenticate(ci.expose()).unwrap();
        assert_eq!(caller.name, "ci");
        assert_eq!(caller.scopes, vec![Scope::Read, Scope::Write]);
        assert!(caller.groups.allows(Some("ci-1")) && !caller.groups.allows(Some("prod")));
        assert_eq!(book.authenticate(admin.expose()).unwrap().name, "root");
        assert!(book.authenticate("hp_guess").is_none());
        assert!(!format!("{ci:?} {book:?}").contains(ci.expose()));

        let taken = create(&path, &request("ci", "read", None)).unwrap_err().to_string();
        assert!(taken.contains("already has a token named `ci`"), "{taken}");
        assert!(revoke(&path, "ci").unwrap());
        assert!(!revoke(&path, "ci").unwrap());
        assert!(load(&path).unwrap().authenticate(ci.expose()).is_none());
    }

    #[track_caller]
    fn check_invalid(text: &str, expected: &str) {
        let problem = TokenBook::parse(text).unwrap_err();
        assert!(problem.contains(expected), "`{problem}` lacks `{expected}`");
    }

    #[test]
    fn invalid_files_name_the_token_and_the_field() {
        let hash = "a".repeat(64);
        check_invalid(
            &format!("tokens:\n- name: ci\n  sha256: {hash}\n  scopes: [delete]\n"),
            "tokens[0] (`ci`): scopes: unknown scope `delete`",
        );
        check_invalid("tokens:\n- name: ci\n  sha256: abc\n  scopes: [read]\n", "sha256: must be 64");
        check_invalid(&format!("tokens:\n- name: Ci\n  sha256: {hash}\n  scopes: [read]\n"), "name: `C`");
        check_invalid(
            &format!(
                "tokens:\n- name: a\n  sha256: {hash}\n  scopes: [read]\n- name: a\n  sha256: {}\n  scopes: [read]\n",
                "b".repeat(64)
            ),
            "used twice",
        );
        check_invalid(
            &format!("tokens:\n- name: ci\n  sha256: {hash}\n  scopes: [read]\n  groups: ['CI']\n"),
            "groups:",
        );
        check_invalid("tokens:\n- name: ci\n  hash: x\n", "hash");
        assert!(TokenBook::parse("# nothing yet\n").unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_store_follows_the_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("tokens.yml");
        let first = create(&path, &request("first", "read", None)).unwrap();
        let store = TokenStore::open(&path).unwrap();
        let watcher = store.watch_file();
        let second = create(&path, &request("second", "read", None)).unwrap();
        wait_for(|| store.current().authenticate(second.expose()).is_some()).await;
        std::fs::write(&path, "tokens: [not: valid").unwrap();
        an_invalid_file_keeps_the_tokens(&store, first.expose()).await;
        std::fs::remove_file(&path).unwrap();
        wait_for(|| store.current().authenticate(first.expose()).is_none()).await;
        watcher.abort();
    }

    async fn an_invalid_file_keeps_the_tokens(store: &TokenStore, token: &str) {
        // Two reload periods: long enough for the invalid file to have been read.
        tokio::time::sleep(RELOAD_INTERVAL * 2).await;
        assert!(store.current().authenticate(token).is_some());
    }

    async fn wait_for(condition: impl Fn() -> bool) {
        for _ in 0..200 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the store did not follow the file within 10 s");
    }
}
