//! `user`/`group` from `global`: after the listeners are bound, a root process gives up root.

use nix::unistd::{setgid, setgroups, setuid, Gid, Group, Uid, User};

use super::RuntimeError;

pub fn drop_privileges(user: Option<&str>, group: Option<&str>) -> Result<(), RuntimeError> {
    if user.is_none() && group.is_none() {
        return Ok(());
    }
    if !Uid::effective().is_root() {
        log::warn!("'user'/'group' ignored: not started as root");
        return Ok(());
    }
    let err = |what: String| RuntimeError::Privileges(what);
    let gid = match group {
        Some(g) => Some(
            Group::from_name(g)
                .map_err(|e| err(format!("group '{g}': {e}")))?
                .ok_or_else(|| err(format!("no group '{g}'")))?
                .gid,
        ),
        None => None,
    };
    let uid = match user {
        Some(u) => Some(
            User::from_name(u)
                .map_err(|e| err(format!("user '{u}': {e}")))?
                .ok_or_else(|| err(format!("no user '{u}'")))?,
        ),
        None => None,
    };
    let gid: Option<Gid> = gid.or(uid.as_ref().map(|u| u.gid));
    if let Some(gid) = gid {
        setgroups(&[gid]).map_err(|e| err(format!("setgroups: {e}")))?;
        setgid(gid).map_err(|e| err(format!("setgid: {e}")))?;
    }
    if let Some(u) = uid {
        setuid(u.uid).map_err(|e| err(format!("setuid {}: {e}", u.name)))?;
        log::info!("running as user '{}'", u.name);
    }
    Ok(())
}
