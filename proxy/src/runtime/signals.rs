//! Signals are blocked in every thread and taken synchronously by the main thread, so no
//! handler ever runs inside a worker's event loop.

use nix::sys::signal::{SigSet, Signal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGTERM, SIGINT, SIGUSR1: stop accepting, drain, exit.
    Stop,
    /// SIGHUP or SIGUSR2 (HAProxy's master-worker reload signal), named for the log.
    Reload(&'static str),
}

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGHUP,
        Signal::SIGUSR2,
    ] {
        set.add(s);
    }
    set
}

/// Must run before any thread is spawned: threads inherit the mask.
pub fn block() -> nix::Result<()> {
    handled().thread_block()
}

/// Waits up to `timeout` for one of our signals.
pub fn poll(timeout: std::time::Duration) -> nix::Result<Option<Request>> {
    let set = handled();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` is a valid sigset_t and the info pointer may be null.
    let r = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    if r < 0 {
        let e = nix::errno::Errno::last();
        return if e == nix::errno::Errno::EAGAIN || e == nix::errno::Errno::EINTR {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(Some(match r {
        libc::SIGHUP => Request::Reload("SIGHUP"),
        libc::SIGUSR2 => Request::Reload("SIGUSR2"),
        _ => Request::Stop,
    }))
}
