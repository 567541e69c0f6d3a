//! The capabilities a process that gave up root keeps, and how it keeps them across setuid.
//!
//! setuid from root to another user clears every capability. The sockmap engine still calls
//! bpf(2) for each flow (socket hash and slot map updates, the park walk's iterator), and on
//! kernels before 6.5 with `kernel.unprivileged_bpf_disabled` set (Debian's default) every
//! bpf(2) command needs CAP_BPF; CAP_NET_ADMIN goes with it for socket maps. A reload may bind
//! a new listener below port 1024. So the main thread sets PR_SET_KEEPCAPS before setuid,
//! then narrows its permitted and effective sets to exactly [`wanted`]; the workers, spawned
//! after, inherit them. Every other capability also leaves the bounding set, so nothing the
//! process runs later can regain it.

use caps::{CapSet, Capability, CapsHashSet};

use crate::runtime::RuntimeError;

/// What the process needs after the drop: CAP_NET_BIND_SERVICE always (a reload may add a
/// low-port listener); CAP_BPF and CAP_NET_ADMIN whenever the sockmap engine is loaded, even
/// if the first config routes no flow to it, since a reload may.
pub fn wanted(sockmap_loaded: bool) -> CapsHashSet {
    let mut set = CapsHashSet::from([Capability::CAP_NET_BIND_SERVICE]);
    if sockmap_loaded {
        set.extend([Capability::CAP_BPF, Capability::CAP_NET_ADMIN]);
    }
    set
}

/// Before setuid: `wanted` narrowed to what the process has (a container may not grant
/// CAP_BPF), the bounding set cut down to it, and PR_SET_KEEPCAPS set so setuid keeps the
/// permitted set. Returns the set to restore after setuid.
pub fn prepare(wanted: &CapsHashSet) -> Result<CapsHashSet, RuntimeError> {
    let have = caps::read(None, CapSet::Permitted).map_err(fail("reading capabilities"))?;
    let keep: CapsHashSet = wanted.intersection(&have).copied().collect();
    for missing in wanted.difference(&have) {
        log::warn!("{missing} is not granted to the process: it cannot be kept after 'user'");
    }
    let bounding = caps::read(None, CapSet::Bounding).map_err(fail("reading the bounding set"))?;
    for cap in bounding.difference(&keep) {
        caps::drop(None, CapSet::Bounding, *cap).map_err(fail("narrowing the bounding set"))?;
    }
    caps::securebits::set_keepcaps(true).map_err(fail("PR_SET_KEEPCAPS"))?;
    Ok(keep)
}

/// After setuid: the permitted set narrowed to `keep` and raised into the effective set
/// (setuid cleared it), KEEPCAPS off again.
pub fn restore(keep: &CapsHashSet) -> Result<(), RuntimeError> {
    caps::set(None, CapSet::Permitted, keep).map_err(fail("setting the permitted set"))?;
    caps::set(None, CapSet::Effective, keep).map_err(fail("setting the effective set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(fail("clearing the inheritable set"))?;
    caps::securebits::set_keepcaps(false).map_err(fail("PR_SET_KEEPCAPS"))
}

/// `keep` as `CAP_A, CAP_B` in a stable order, for the start log.
pub fn describe(keep: &CapsHashSet) -> String {
    let mut names: Vec<String> = keep.iter().map(|c| c.to_string()).collect();
    names.sort();
    if names.is_empty() {
        "no capabilities".to_string()
    } else {
        names.join(", ")
    }
}

fn fail(what: &'static str) -> impl Fn(caps::errors::CapsError) -> RuntimeError {
    move |e| RuntimeError::Privileges(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockmap_adds_bpf_and_net_admin() {
        assert_eq!(describe(&wanted(false)), "CAP_NET_BIND_SERVICE");
        assert_eq!(
            describe(&wanted(true)),
            "CAP_BPF, CAP_NET_ADMIN, CAP_NET_BIND_SERVICE"
        );
    }

    #[test]
    fn nothing_kept_is_said() {
        assert_eq!(describe(&CapsHashSet::new()), "no capabilities");
    }
}
