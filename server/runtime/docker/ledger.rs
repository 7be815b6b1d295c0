//! The server's own record of the restarts it made, kept where a restarted server finds it.
//!
//! The engine counts the restarts it makes itself (`RestartCount`, kept with the container), but
//! starts that count again whenever a container is started through its API, as the server does
//! after a failed liveness check. A container's labels cannot change after it is made, so the
//! server keeps, per container, what the engine forgets: the restarts before the engine's current
//! count, how far the liveness back-off has gone, and a restart that was waiting for its delay.
//! One small file per container (named by its id, which is unique to the engine), under the
//! server's state directory and the runtime's network: written at each restart the server makes,
//! removed with the container. A server whose state directory is gone counts from the engine's
//! count again, as it did before.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the server knows of one container's restarts beyond the engine's count.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Restarts before the engine's current count.
    pub restarts: u32,
    /// How many liveness back-off delays have passed since the back-off last started over.
    pub backoff_steps: u32,
    /// When a liveness restart that was waiting for its delay is due (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_at_ms: Option<i64>,
}

/// The records of one network's containers, in a directory of their own.
pub struct Ledger {
    directory: PathBuf,
}

impl Ledger {
    /// The records of `network`'s containers under the server's state directory `state`.
    pub fn new(state: &Path, network: &str) -> Ledger {
        // Engine network names are `[a-zA-Z0-9][a-zA-Z0-9_.-]*`; anything else is made safe as
        // one path component.
        let component: String =
            network
                .chars()
                .map(|character| {
                    if character.is_ascii_alphanumeric() || "_.-".contains(character) {
                        character
                    } else {
                        '_'
                    }
                })
                .collect();
        let component = if component.starts_with('.') { format!("_{component}") } else { component };
        Ledger { directory: state.join("docker").join(component) }
    }

    fn path(&self, id: &str) -> Option<PathBuf> {
        // Engine ids are hex; anything else cannot name a file of ours.
        (!id.is_empty() && id.chars().all(|character| character.is_ascii_alphanumeric()))
            .then(|| self.directory.join(format!("{id}.json")))
    }

    /// The container's record; the default when it has none (or it cannot be read).
    pub fn load(&self, id: &str) -> Record {
        let Some(path) = self.path(id) else { return Record::default() };
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(path = %path.display(), %error, "cannot read a restart record; counting from the engine's");
                Record::default()
            }),
            Err(_) => Record::default(),
        }
    }

    /// Writes the container's record (whole, through a rename: a reader never sees half of it).
    pub fn save(&self, id: &str, record: &Record) {
        let Some(path) = self.path(id) else { return };
        let written = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&self.directory)?;
            let partial = path.with_extension("json.partial");
            let mut file = std::fs::File::create(&partial)?;
            file.write_all(&serde_json::to_vec(record).map_err(std::io::Error::other)?)?;
            file.sync_all()?;
            std::fs::rename(&partial, &path)
        })();
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "cannot keep a restart record; a restarted server will count fewer restarts");
        }
    }

    /// Forgets a removed container.
    pub fn forget(&self, id: &str) {
        if let Some(path) = self.path(id) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Forgets every container but `present` (after a full listing of the network's containers).
    pub fn retain(&self, present: &HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(&self.directory) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let id = name.strip_suffix(".json").or_else(|| name.strip_suffix(".json.partial"));
            if id.is_some_and(|id| !present.contains(id)) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_kept_per_container_and_forgotten_with_it() {
        let state = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::new(state.path(), "net");
        assert_eq!(ledger.load("abc"), Record::default());
        let record = Record { restarts: 3, backoff_steps: 2, restart_at_ms: Some(5) };
        ledger.save("abc", &record);
        ledger.save("def", &Record::default());
        assert_eq!(Ledger::new(state.path(), "net").load("abc"), record, "read again by a new server");
        assert_eq!(Ledger::new(state.path(), "other").load("abc"), Record::default(), "per network");
        ledger.retain(&HashSet::from(["abc".to_owned()]));
        assert!(!state.path().join("docker/net/def.json").exists());
        ledger.forget("abc");
        assert_eq!(ledger.load("abc"), Record::default());
        assert_eq!(ledger.load("../x"), Record::default(), "not a path");
        assert_eq!(Ledger::new(state.path(), "../up").directory, state.path().join("docker/_.._up"));
    }
}
