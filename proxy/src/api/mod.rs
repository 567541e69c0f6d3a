//! The runtime API: HAProxy's `stats socket` command language on UNIX sockets, so that
//! `echo "show stat" | socat stdio /run/haproxy/admin.sock` and operators' scripts work
//! unchanged.
//!
//! - `command`: one line → commands (`;`-separated words) → [`Command`], with the level
//!   each needs;
//! - `conn`: one client's state (level, prompt mode) and the answer to each line, free of
//!   I/O;
//! - `show`, `flows`, `servers`, `frontends`: the command families;
//! - `help`: the help text;
//! - `fds`: `_getsocks`, HAProxy's protocol for handing listening sockets over;
//! - `socket`: the listening sockets and their threads.
//!
//! This room sits above `stats` (it renders `show stat` with the stats page's CSV) and below
//! `runtime`: what only the runtime knows (the registry in force, the frontends' connection
//! gates, reload, certificates) comes through the [`Control`] trait the runtime implements.

mod command;
mod conn;
mod fds;
mod flows;
mod frontends;
mod help;
mod servers;
mod show;
mod socket;

pub use command::Command;
pub use conn::Conn;
pub use socket::{bind, Bound, Serving};

use std::path::PathBuf;
use std::sync::Arc;

use crate::plan::Registry;

/// What the runtime lends the API.
pub trait Control: Send + Sync {
    /// The registry in force: read again for each command, since a reload replaces it.
    fn registry(&self) -> Arc<Registry>;
    /// Compiles the config files again and swaps the result in; `Ok` carries what to say.
    fn reload(&self) -> Result<String, String>;
    /// `set maxconn frontend`: the frontend's connection gate takes `n` from now on.
    fn set_frontend_maxconn(&self, frontend: &str, n: u32) -> Result<(), String>;
    /// The certificate files loaded (`show ssl cert`).
    fn certificates(&self) -> Vec<PathBuf>;
    /// Fresh duplicates of the listening sockets (`_getsocks`); closing them closes nothing
    /// of the runtime's.
    fn listeners(&self) -> Vec<std::os::fd::OwnedFd>;
    /// `_getlisteners` / `_getflows` from this proxy's next process (a binary upgrade): the
    /// connection is the hand-over's from now on.
    fn handover(&self, command: &str, stream: std::os::unix::net::UnixStream);
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{loc}: stats socket {path}: {source}")]
    Bind {
        loc: crate::config::Loc,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("runtime API: cannot start its thread: {0}")]
    Thread(std::io::Error),
}
