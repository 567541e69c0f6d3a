//! `user`/`group` from `global`: after the listeners are bound and the BPF programs loaded, a
//! root process gives up root, keeping only the capabilities it still uses
//! (`capabilities.rs` says which and why).

mod capabilities;

use nix::unistd::{setgid, setgroups, setuid, Gid, Group, Uid, User};

use super::RuntimeError;

/// Must run on the main thread before the workers are spawned: capabilities are per thread,
/// and a thread inherits its creator's. Threads started earlier (the loggers, `sockmap-wake`,
/// which reads its ring buffer through mmap and poll) lose every capability at setuid, which
/// they do not need.
pub fn drop_privileges(user: Option<&str>, group: Option<&str>) -> Result<(), RuntimeError> {
    if user.is_none() && group.is_none() {
        return Ok(());
    }
    if !Uid::effective().is_root() {
        log::warn!("'user'/'group' ignored: not started as root");
        return Ok(());
    }
    let gid = group.map(group_id).transpose()?;
    let user = user.map(user_entry).transpose()?;
    let gid: Option<Gid> = gid.or(user.as_ref().map(|u| u.gid));
    let keep = match &user {
        Some(_) => Some(capabilities::prepare(&capabilities::wanted(
            crate::forward::probed().sockmap.is_ok(),
        ))?),
        None => None,
    };
    if let Some(gid) = gid {
        setgroups(&[gid]).map_err(|e| err(format!("setgroups: {e}")))?;
        setgid(gid).map_err(|e| err(format!("setgid: {e}")))?;
    }
    if let (Some(u), Some(keep)) = (user, keep) {
        setuid(u.uid).map_err(|e| err(format!("setuid {}: {e}", u.name)))?;
        capabilities::restore(&keep)?;
        log::info!(
            "running as user '{}' (uid {}), keeping {}",
            u.name,
            u.uid,
            capabilities::describe(&keep)
        );
    }
    Ok(())
}

fn group_id(g: &str) -> Result<Gid, RuntimeError> {
    Ok(Group::from_name(g)
        .map_err(|e| err(format!("group '{g}': {e}")))?
        .ok_or_else(|| err(format!("no group '{g}'")))?
        .gid)
}

fn user_entry(u: &str) -> Result<User, RuntimeError> {
    User::from_name(u)
        .map_err(|e| err(format!("user '{u}': {e}")))?
        .ok_or_else(|| err(format!("no user '{u}'")))
}

fn err(what: String) -> RuntimeError {
    RuntimeError::Privileges(what)
}
