//! The capabilities a process that gave up root keeps, and how it keeps them across setuid.
//!
//! setuid from root to another user clears every capability. The sockmap engine still calls
//! bpf(2) for each flow (socket hash and slot map updates, the park walk's iterator). Upstream
//! kernels before 6.5 with `kernel.unprivileged_bpf_disabled` set refuse every bpf(2) command
//! without CAP_BPF (Debian's 6.1, 6.12 and 6.18 were measured not to: docs/kernel-facts.md), so
//! CAP_BPF is kept, with CAP_NET_ADMIN, which the kernel asks for socket-map objects. A reload may bind
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

    /// A BPF hash map created by root, as the engine's maps are at start.
    fn root_map() -> i32 {
        let mut attr = [0u32; 16];
        // map_type BPF_MAP_TYPE_HASH, key_size, value_size, max_entries.
        attr[..4].copy_from_slice(&[1, 4, 4, 4]);
        // SAFETY: BPF_MAP_CREATE reads a zero-padded bpf_attr of the size passed.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), size_of_val(&attr)) };
        assert!(
            fd >= 0,
            "BPF_MAP_CREATE: {}",
            std::io::Error::last_os_error()
        );
        fd as i32
    }

    #[repr(C)]
    struct UpdateAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }

    /// In a forked child: the drop to uid 65534 keeping `keep`, then one BPF_MAP_UPDATE_ELEM
    /// on `fd` (a per-flow operation of the engine). The child's exit code: 0, the errno of
    /// the update, or 200 when the drop itself failed.
    fn update_after_drop(fd: i32, keep: &CapsHashSet) -> i32 {
        // SAFETY: the child only makes system calls and the caps crate's small allocations
        // (glibc's malloc is usable after fork), then leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let code = match prepare(keep) {
                // SAFETY: setuid in the single-threaded child.
                Ok(kept) if unsafe { libc::setuid(65534) } == 0 && restore(&kept).is_ok() => {
                    let (key, value) = (7u32, 9u32);
                    let attr = UpdateAttr {
                        map_fd: fd as u32,
                        _pad: 0,
                        key: &key as *const u32 as u64,
                        value: &value as *const u32 as u64,
                        flags: 0,
                    };
                    // SAFETY: the attr points at the key and value for the call's duration.
                    let r =
                        unsafe { libc::syscall(libc::SYS_bpf, 2, &attr, size_of::<UpdateAttr>()) };
                    if r == 0 {
                        0
                    } else {
                        std::io::Error::last_os_error()
                            .raw_os_error()
                            .unwrap_or(199)
                    }
                }
                _ => 200,
            };
            // SAFETY: leaves the child without running the test harness's exit path.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "the child ended by a signal");
        libc::WEXITSTATUS(status)
    }

    /// What the drop keeps for the sockmap engine is enough for its per-flow bpf(2) calls on
    /// this kernel (vmtest runs it on Debian's 6.1 and 6.12), and so is the drop itself.
    /// Without the capabilities, what the kernel answers is printed (`--nocapture`): Debian's
    /// 6.1.0-57, 6.12.95 and 6.18 allow it; upstream kernels before 6.5 check CAP_BPF first.
    #[test]
    fn bpf_map_update_works_after_the_drop() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test drops from root to uid 65534 in a child: run it as root (CI and vmtest do)"
        );
        let fd = root_map();
        assert_eq!(
            update_after_drop(fd, &wanted(true)),
            0,
            "BPF_MAP_UPDATE_ELEM as uid 65534 with {} (200: the drop failed; else the errno)",
            describe(&wanted(true))
        );
        let bare = update_after_drop(fd, &CapsHashSet::new());
        assert_ne!(bare, 200, "the drop without capabilities failed");
        println!(
            "kernel {} (unprivileged_bpf_disabled {}): BPF_MAP_UPDATE_ELEM as uid 65534 \
             without capabilities: {}",
            nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|e| e.to_string()),
            match bare {
                0 => "allowed".to_string(),
                e => std::io::Error::from_raw_os_error(e).to_string(),
            }
        );
        // SAFETY: the map descriptor opened above, not used after.
        unsafe { libc::close(fd) };
    }
}
