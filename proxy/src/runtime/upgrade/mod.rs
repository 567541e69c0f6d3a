//! Binary upgrade (`proxy -f CFG -x SOCKET -sf OLDPID`): the new process takes the listening
//! sockets from the old one, then its established `mode tcp` flows, over a unix socket with
//! SCM_RIGHTS. The protocol and who owns a flow at each step: LIFECYCLE.md beside this file.
//!
//! The old side is [`answer`]: the runtime API routes `_getlisteners` and `_getflows`, alone on
//! their line on a `stats socket … level admin expose-fd listeners`, to it (HAProxy's own
//! `_getsocks` stays HAProxy's format there). The new side is [`take_over`] (before its
//! listeners are bound; it also opens the connection `_getflows` will use, since this process
//! then binds its own socket at the same path) and [`adopt_flows`] (once its workers run).

mod flows;
mod sockets;
mod wire;

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::listeners::Key;
use super::Reloader;

pub use flows::Adopted;

/// How long one side waits for the other's next message before giving up (and, on the old
/// side, keeping every flow not yet handed over).
const PEER_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the other process closed the hand-over socket")]
    Closed,
    #[error("unexpected message: {0}")]
    Protocol(String),
}

/// This process's hand-overs as the old side: whether one began, flows moved, and sessions
/// left to finish here when the last one ended. The process may exit before a hand-over's
/// end is recorded (its last flow left, nothing stays): then none stayed.
static BEGAN: AtomicBool = AtomicBool::new(false);
static MOVED: AtomicUsize = AtomicUsize::new(0);
static STAYED: AtomicUsize = AtomicUsize::new(0);

/// The old process's last word, as it exits: how many flows moved and how many it finished
/// (`cut`: sessions the end of `hard-stop-after` closed).
pub fn report_exit(cut: usize) {
    if !BEGAN.load(Ordering::Relaxed) {
        return;
    }
    let stayed = STAYED.load(Ordering::Relaxed);
    log::info!(
        "upgrade: old process exiting: {} flow(s) moved to the new process, {} session(s) \
         finished here ({cut} of them cut at hard-stop-after)",
        MOVED.load(Ordering::Relaxed),
        stayed,
    );
}

/// What the new process got from the old one before binding.
#[derive(Default)]
pub struct Handover {
    pub listeners: HashMap<Key, std::net::TcpListener>,
    /// A second connection, opened now and used for `_getflows` once the workers run: on a
    /// `stats socket` path, this process binds its own socket over the old one's name in
    /// between, so a later connect would reach itself.
    pub flows: Option<UnixStream>,
}

fn connect(path: &Path) -> Result<UnixStream, UpgradeError> {
    let sock = UnixStream::connect(path)?;
    sock.set_read_timeout(Some(PEER_WAIT))?;
    sock.set_write_timeout(Some(PEER_WAIT))?;
    Ok(sock)
}

/// New side, first step: the old process's listening sockets, by key.
pub fn take_over(path: &Path) -> Result<Handover, UpgradeError> {
    let sock = connect(path)?;
    let flows = connect(path).ok();
    let listeners = sockets::take(&sock)?;
    log::info!(
        "upgrade: {} listening socket(s) taken over from {}",
        listeners.len(),
        path.display()
    );
    Ok(Handover { listeners, flows })
}

/// New side, second step: the old process's movable flows, each resumed on a worker here,
/// over the connection [`take_over`] opened (or a new one to `path`).
pub fn adopt_flows(
    early: Option<UnixStream>,
    path: &Path,
    reloader: &Reloader,
) -> Result<Adopted, UpgradeError> {
    let sock = match early {
        Some(sock) => sock,
        None => connect(path)?,
    };
    let adopted = flows::take(&sock, reloader)?;
    log::info!("upgrade: {adopted}");
    Ok(adopted)
}

/// Old side: answers `command` on `stream` (`_getlisteners`: the listening sockets with their keys;
/// `_getflows`: the movable flows, which the exchange hands over one by one). The runtime
/// API calls this once it has read the command line on a socket with `expose-fd listeners`
/// and level admin; the connection is the hand-over's from then on.
pub fn answer(command: &str, stream: UnixStream, reloader: &Reloader) -> Result<(), UpgradeError> {
    stream.set_read_timeout(Some(PEER_WAIT))?;
    stream.set_write_timeout(Some(PEER_WAIT))?;
    match command {
        sockets::COMMAND => sockets::give(&stream, reloader),
        flows::COMMAND => {
            BEGAN.store(true, Ordering::Relaxed);
            let moved = flows::give(&stream, &MOVED);
            let stayed = crate::counters::PROCESS.sessions();
            STAYED.store(stayed, Ordering::Relaxed);
            let moved = moved?;
            log::info!(
                "upgrade: {moved} flow(s) moved to the new process; {stayed} session(s) stay \
                 here to finish"
            );
            Ok(())
        }
        other => {
            wire::send(&stream, &format!("error unknown command {other:?}"), &[])?;
            Err(UpgradeError::Protocol(other.to_string()))
        }
    }
}
