//! Binary upgrade (`proxy -f CFG -x SOCKET -sf OLDPID`): the new process takes the listening
//! sockets from the old one, then its established `mode tcp` flows, over a unix socket with
//! SCM_RIGHTS. The protocol and who owns a flow at each step: LIFECYCLE.md beside this file.
//!
//! The old side is [`serve`], which answers the commands of one connection; the runtime API
//! routes `_getsocks` and `_getflows` to it on a `stats socket … expose-fd listeners`, and
//! until it does, `PROXY_UPGRADE_SOCKET=PATH` in the old process's environment makes it
//! listen on a socket of its own ([`listen`]). The new side is [`take_over`] (before its
//! listeners are bound) and [`adopt_flows`] (once its workers run).

mod flows;
mod sockets;
mod wire;

use std::collections::HashMap;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::listeners::Key;
use super::Reloader;

pub use flows::Adopted;

/// The hand-over socket of `PROXY_UPGRADE_SOCKET` (tests, and until the runtime API routes
/// the commands).
pub const SOCKET_ENV: &str = "PROXY_UPGRADE_SOCKET";

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
    let listeners = sockets::take(&sock)?;
    log::info!(
        "upgrade: {} listening socket(s) taken over from {}",
        listeners.len(),
        path.display()
    );
    Ok(Handover { listeners })
}

/// New side, second step: the old process's movable flows, each resumed on a worker here.
pub fn adopt_flows(path: &Path, reloader: &Reloader) -> Result<Adopted, UpgradeError> {
    let sock = connect(path)?;
    let adopted = flows::take(&sock, reloader)?;
    log::info!("upgrade: {adopted}");
    Ok(adopted)
}

/// Old side: one connection of the hand-over socket, whose first line is its command
/// (`_getsocks` or `_getflows`, as a runtime API client would type it).
pub fn serve(stream: UnixStream, reloader: &Reloader) -> Result<(), UpgradeError> {
    stream.set_read_timeout(Some(PEER_WAIT))?;
    let command = wire::read_line(&stream)?;
    answer(command.trim(), stream, reloader)
}

/// Old side: answers `command` on `stream` (`_getsocks`: the listening sockets;
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

/// Old side for tests: listens on `path` and serves each connection in turn, on a thread of
/// its own, for the life of the process.
pub fn listen(path: &Path, reloader: Arc<Reloader>) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    log::info!("upgrade: hand-over socket {}", path.display());
    std::thread::Builder::new()
        .name("upgrade".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        if let Err(e) = serve(s, &reloader) {
                            log::warn!("upgrade: hand-over failed: {e}");
                        }
                    }
                    Err(e) => log::warn!("upgrade: hand-over socket: {e}"),
                }
            }
        })?;
    Ok(())
}
