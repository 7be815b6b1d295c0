//! The server as the subreaper of last resort. A supervisor answers for its tree, but a
//! supervisor killed from outside (by its own command, when they share a user) leaves its tree
//! orphaned: with `PR_SET_CHILD_SUBREAPER` on the server, those orphans become the server's
//! children instead of init's, and [`reap`] kills and reaps them.
//!
//! Every child the server spawns on purpose (supervisors, command checks) is spawned through
//! [`spawn_tracked`], which records its pid under the same lock [`reap`] scans under: a child of
//! the server that is not recorded is an orphan, and nothing the server waits for is taken from
//! it.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::{lock, procfs};

/// The pids of the children the server spawned and has not reaped yet.
static SPAWNED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Whether this process is a subreaper: only then is an untracked child an orphan of ours
/// (a program that links the library, such as a test, may have children of its own).
static SUBREAPER: AtomicBool = AtomicBool::new(false);

/// Makes the server the subreaper of everything it starts; the error says why it cannot.
pub fn become_subreaper() -> Result<(), Errno> {
    nix::sys::prctl::set_child_subreaper(true)?;
    SUBREAPER.store(true, Ordering::Relaxed);
    Ok(())
}

/// A child the server spawned on purpose; its pid stops being recorded when this is dropped,
/// which is once it has been waited for (or handed to tokio's reaper of dropped children).
#[derive(Debug)]
pub struct Tracked(i32);

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(spawned) = lock(&SPAWNED).as_mut() {
            spawned.remove(&self.0);
        }
    }
}

/// Spawns `command`, recording its pid before anyone can look for orphans.
pub fn spawn_tracked(
    command: &mut tokio::process::Command,
) -> std::io::Result<(tokio::process::Child, Option<Tracked>)> {
    let mut spawned = lock(&SPAWNED);
    let child = command.spawn()?;
    let tracked = child.id().and_then(|pid| i32::try_from(pid).ok()).map(|pid| {
        spawned.get_or_insert_with(HashSet::new).insert(pid);
        Tracked(pid)
    });
    Ok((child, tracked))
}

/// SIGKILLs every child of the server it did not spawn (orphans of a killed supervisor, or of a
/// command check) with all their descendants, and reaps them; returns how many children it
/// reaped. Blocking: it waits for the killed children.
pub fn reap() -> usize {
    if !SUBREAPER.load(Ordering::Relaxed) {
        return 0;
    }
    let server = nix::unistd::getpid();
    let mut reaped = 0;
    loop {
        let orphans: Vec<Pid> = {
            let spawned = lock(&SPAWNED);
            procfs::children(server)
                .into_iter()
                .filter(|pid| !spawned.as_ref().is_some_and(|spawned| spawned.contains(&pid.as_raw())))
                .collect()
        };
        if orphans.is_empty() {
            return reaped;
        }
        for &orphan in &orphans {
            // Its descendants first: once it dies they are the server's children anyway, and
            // found by the next round.
            for pid in procfs::descendants(orphan) {
                let _ = kill(pid, Signal::SIGKILL);
            }
            let _ = kill(orphan, Signal::SIGKILL);
        }
        for orphan in orphans {
            // A child of the server's: its pid cannot be reused before this reaps it.
            loop {
                match waitpid(orphan, None) {
                    Err(Errno::EINTR) => continue,
                    Ok(_) => reaped += 1,
                    Err(_) => {}
                }
                break;
            }
        }
    }
}
