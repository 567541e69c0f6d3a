//! Process-wide settings of the `global` section that act on the process itself: `ulimit-n`,
//! `pidfile` and `chroot`, each at the point of the start where HAProxy applies it; and the
//! heap given back after a start or reload.

use std::io;
use std::path::{Path, PathBuf};

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use super::RuntimeError;

/// `ulimit-n N`: the open-file limit, set before anything is opened. Raising the hard limit
/// needs root (CAP_SYS_RESOURCE); without it the start fails with the reason.
pub fn set_file_limit(n: u64) -> Result<(), RuntimeError> {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(RuntimeError::Signal)?;
    setrlimit(Resource::RLIMIT_NOFILE, n, hard.max(n)).map_err(|e| {
        RuntimeError::Io(io::Error::other(format!(
            "ulimit-n {n}: cannot set the open-file limit (hard limit {hard}): {e}"
        )))
    })
}

/// Without `ulimit-n`, the soft open-file limit goes up to the hard one (as HAProxy does), so
/// `maxconn` is bounded by what the system allows rather than by a login default of 1024.
pub fn raise_file_limit() {
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                log::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
            }
        }
    }
}

/// The current soft open-file limit.
pub fn file_limit() -> u64 {
    getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}

/// Descriptors the process keeps apart from its flows: listeners, checks, logs, the BPF maps.
pub const RESERVED_FDS: u64 = 64;

/// The session limit `limit` descriptors allow at `per_flow` each.
pub fn maxconn_for(limit: u64, per_flow: u64) -> u32 {
    (limit.saturating_sub(RESERVED_FDS) / per_flow.max(1)).clamp(1, u64::from(u32::MAX)) as u32
}

/// `pidfile PATH`: written at start (HAProxy writes one only in daemon or master-worker mode;
/// this proxy always runs in the foreground, so it always writes it) and removed at exit,
/// unless `chroot` moved the process away from it.
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn write(path: &Path) -> Result<PidFile, RuntimeError> {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|e| {
            RuntimeError::Io(io::Error::other(format!("pidfile {}: {e}", path.display())))
        })?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `chroot DIR`: after the listeners are bound, certificates read and BPF programs loaded,
/// before privileges are dropped (changing root needs CAP_SYS_CHROOT). Files opened later
/// (certificate reloads) are then read inside `dir`.
pub fn enter_chroot(dir: &Path) -> Result<(), RuntimeError> {
    let fail = |e: nix::Error| RuntimeError::Privileges(format!("chroot {}: {e}", dir.display()));
    nix::unistd::chroot(dir).map_err(fail)?;
    nix::unistd::chdir("/").map_err(fail)
}

/// Returns the heap's free pages to the system. A start (or reload) parses the kernel's BTF
/// to load the sockmap programs and the config: about 17 MB allocated and freed again, which
/// glibc keeps in its arena, interleaved with the long-lived allocations made meanwhile. On
/// this machine the process sat at 21 MB of anonymous memory with no flow, 1.8 MB after this.
pub fn give_back_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfile_holds_the_pid_and_goes_at_drop() {
        let path = std::env::temp_dir().join(format!("proxy-pid-{}", std::process::id()));
        {
            let _pid = PidFile::write(&path).expect("written");
            let text = std::fs::read_to_string(&path).expect("readable");
            assert_eq!(text.trim(), std::process::id().to_string());
        }
        assert!(!path.exists(), "removed at drop");
    }

    #[test]
    fn maxconn_follows_descriptors_per_flow() {
        assert_eq!(maxconn_for(20_000, 2), 9_968);
        assert_eq!(maxconn_for(20_000, 6), 3_322);
        assert_eq!(maxconn_for(10, 6), 1, "never zero");
    }

    #[test]
    fn file_limit_is_set() {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("limit");
        let want = hard.min(soft.max(1024));
        set_file_limit(want).expect("within the hard limit");
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).expect("limit").0, want);
    }
}
