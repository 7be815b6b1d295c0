//! What the server does about itself before anything else, so that the processes it starts
//! find nothing of it: descriptors it inherited are closed on exec, its memory and `/proc`
//! entries are closed to other processes of its user, and the secret store's password leaves
//! its environment (the variable, and the bytes `/proc/PID/environ` shows).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::FileExt;

use hydroplane::secrets::Password;
use hydroplane::secrets::password::PASSWORD_ENV;

/// Marks every descriptor above stderr close-on-exec: whatever started the server may have
/// left one open (a file only its user may read, say), and no child may inherit it.
pub fn close_inherited_descriptors_on_exec() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC closes nothing and touches no memory; it only
    // sets a flag on descriptors, so no owner of one is invalidated.
    #[allow(unsafe_code)]
    let result =
        unsafe { nix::libc::close_range(3, nix::libc::c_uint::MAX, nix::libc::CLOSE_RANGE_CLOEXEC as i32) };
    if result != 0 {
        eprintln!(
            "warning: cannot mark inherited descriptors close-on-exec ({}); processes may inherit them",
            std::io::Error::last_os_error()
        );
    }
}

/// Closes the server's `/proc` entries (environment, memory, descriptors) and ptrace to other
/// processes of its user: a local process running as the server's user cannot read the
/// server's secrets out of it. Root still can.
pub fn close_to_same_user() -> Result<(), nix::errno::Errno> {
    nix::sys::prctl::set_dumpable(false)
}

/// What became of the password variable.
pub enum PasswordVariable {
    /// It was not set.
    Unset,
    /// It was read, and is gone from the environment and from `/proc/PID/environ`.
    Taken(Password),
    /// It was read and is gone from the environment, but `/proc/PID/environ` may still show
    /// it, for the reason given.
    StillVisible(Password, String),
}

/// Reads `HYDROPLANE_SECRET_STORE_PASSWORD` and wipes it: the bytes of the environment block the
/// kernel shows as `/proc/PID/environ` are overwritten with zeros in place (through
/// `/proc/self/mem`; `remove_var` would only drop the pointer to them). Call it while the
/// server has one thread.
pub fn take_password_variable() -> PasswordVariable {
    let Some(value) = std::env::var_os(PASSWORD_ENV) else { return PasswordVariable::Unset };
    let password = Password::new(OsString::into_vec(value));
    match wipe_from_environment_block(PASSWORD_ENV) {
        Ok(()) if std::env::var_os(PASSWORD_ENV).is_none() => PasswordVariable::Taken(password),
        Ok(()) => PasswordVariable::StillVisible(password, "the variable is set again".to_owned()),
        Err(error) => PasswordVariable::StillVisible(password, error.to_string()),
    }
}

/// Zeroes every `NAME=value` of the initial environment block, in the server's own memory.
fn wipe_from_environment_block(name: &str) -> std::io::Result<()> {
    let block = std::fs::read("/proc/self/environ")?;
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Field 50 of stat is env_start; the fields after the command name (which ends with the
    // last `)`) start at field 3.
    let env_start: u64 = stat
        .rsplit_once(')')
        .and_then(|(_, fields)| fields.split_whitespace().nth(50 - 3))
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| std::io::Error::other("/proc/self/stat has no env_start"))?;
    let prefix = format!("{name}=");
    let memory = std::fs::OpenOptions::new().write(true).open("/proc/self/mem")?;
    let mut offset = 0u64;
    for entry in block.split(|byte| *byte == 0) {
        if entry.starts_with(prefix.as_bytes()) {
            memory.write_all_at(&vec![0u8; entry.len()], env_start + offset)?;
        }
        offset += entry.len() as u64 + 1;
    }
    let after = std::fs::read("/proc/self/environ")?;
    if after.split(|byte| *byte == 0).any(|entry| entry.starts_with(prefix.as_bytes())) {
        return Err(std::io::Error::other("the kernel still shows it after the wipe"));
    }
    Ok(())
}
