//! Which Unix user runs a process: `runtime.run_as_by_group` (the first pattern that matches
//! the process's group), else `runtime.run_as`, else the server's own user. The names are
//! resolved once, when the runtime starts, so that a missing user stops the server rather than
//! failing each Start.

use std::path::PathBuf;

use nix::unistd::{Gid, Group, Uid, User};

use super::supervisor::RunAs;
use crate::config::{LocalRuntimeSettings, RunAsSetting};
use crate::security::access::GroupPattern;

/// A user processes run as, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessUser {
    /// The ids the supervisor switches to.
    pub ids: RunAs,
    /// The user's name, for `USER` and `LOGNAME`.
    pub name: String,
    /// The user's home directory, for `HOME`.
    pub home: PathBuf,
}

/// The users of every group, resolved.
#[derive(Clone, Debug, Default)]
pub struct ProcessUsers {
    default: Option<ProcessUser>,
    by_group: Vec<(GroupPattern, ProcessUser)>,
}

impl ProcessUsers {
    /// Resolves the settings' users; the error names the setting and what is wrong. Switching
    /// users needs the server to run as root.
    pub fn resolve(settings: &LocalRuntimeSettings) -> Result<ProcessUsers, String> {
        if settings.run_as.is_none() && settings.run_as_by_group.is_empty() {
            return Ok(ProcessUsers::default());
        }
        if !nix::unistd::geteuid().is_root() {
            return Err(format!(
                "runtime.run_as and runtime.run_as_by_group need the server to run as root, to switch \
                 users; it runs as user id {}",
                nix::unistd::geteuid()
            ));
        }
        let default = settings.run_as.as_ref().map(|run_as| resolve(run_as, "runtime.run_as")).transpose()?;
        let by_group = settings
            .run_as_by_group
            .iter()
            .map(|(pattern, run_as)| {
                Ok((pattern.clone(), resolve(run_as, &format!("runtime.run_as_by_group.{pattern}"))?))
            })
            .collect::<Result<_, String>>()?;
        Ok(ProcessUsers { default, by_group })
    }

    /// The user a process of `group` runs as; `None`: the server's own.
    pub fn for_group(&self, group: Option<&str>) -> Option<&ProcessUser> {
        group
            .and_then(|group| {
                self.by_group.iter().find(|(pattern, _)| pattern.matches(group)).map(|(_, user)| user)
            })
            .or(self.default.as_ref())
    }

    /// Whether every process runs as the server's own user.
    pub fn is_shared(&self) -> bool {
        self.default.is_none() && self.by_group.is_empty()
    }
}

/// Resolves one `user[:group]`, by name or by number.
fn resolve(setting: &RunAsSetting, key: &str) -> Result<ProcessUser, String> {
    let user = match setting.user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(&setting.user),
    }
    .map_err(|error| format!("{key}: cannot look up user `{}`: {error}", setting.user))?
    .ok_or_else(|| format!("{key}: there is no user `{}` on this host", setting.user))?;
    if user.uid.is_root() {
        return Err(format!("{key}: `{}` is root, which would contain nothing", setting.user));
    }
    let gid = match &setting.group {
        None => user.gid,
        Some(group) => {
            match group.parse::<u32>() {
                Ok(gid) => Group::from_gid(gid.into()),
                Err(_) => Group::from_name(group),
            }
            .map_err(|error| format!("{key}: cannot look up group `{group}`: {error}"))?
            .ok_or_else(|| format!("{key}: there is no group `{group}` on this host"))?
            .gid
        }
    };
    // What initgroups would set: the groups that list the user as a member, and `gid`.
    let name = std::ffi::CString::new(user.name.as_bytes())
        .map_err(|_| format!("{key}: the user name `{}` holds NUL", setting.user))?;
    let groups = nix::unistd::getgrouplist(&name, gid)
        .map_err(|error| format!("{key}: cannot list the groups of `{}`: {error}", user.name))?
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    Ok(ProcessUser {
        ids: RunAs { uid: user.uid.as_raw(), gid: gid.as_raw(), groups },
        name: user.name,
        home: user.dir,
    })
}
