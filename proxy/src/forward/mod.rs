//! Moving the bytes of an established client/server pair. Engines differ in how bytes move
//! (userspace copy over io_uring, splice(2) through a pipe, eBPF sockmap) but share one contract:
//! half-close is passed on (FIN → shutdown(SHUT_WR) on the peer), a reset is passed on as a
//! reset (abortive close of the peer), and an idle flow is closed at its timeout.
//! See LIFECYCLE.md beside this file.

mod bufpool;
mod copy;
mod fin;
mod handover;
mod idle;
mod multishot;
/// The close protocol, shared with the TLS room's flows (`tls::flow`).
pub(crate) mod pair;
mod progress;
mod select;
mod sockmap;
mod splice;

use std::time::Duration;

use compio::net::TcpStream;

use crate::log::{Cause, Phase, TermState};

pub use fin::shut_write;
pub use handover::{end_pause, request_pause, Gate, SETTLE};
pub use idle::IdleLimits;
pub use pair::Ended;
pub use progress::Progress;
pub use select::{choose, choose_from, probed, summary, FlowHistory, Probed};
pub use sockmap::{set_budget as set_sockmap_budget, status as sockmap_status};
pub(crate) use splice::{splice as splice_once, Pipe};
/// Shared with the TLS room's flows, which run the same close protocol.
pub(crate) use {copy::pump, copy::Count, copy::Sink, idle::Activity};

/// Which engine moves a flow's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Userspace read/write through the thread's io_uring (or epoll) runtime.
    Copy,
    /// splice(2) socket → pipe → socket, one pooled pipe per direction.
    Splice,
    /// eBPF sockmap: the kernel redirects each packet to the peer socket, within a budget.
    Sockmap,
    /// `auto` where sockmap is loaded: sockmap, splice or copy for each flow, by how long the
    /// backend's recent flows lived and how fast they moved (`FlowHistory::engine`); copy
    /// where nothing resolves it (HTTP tunnels).
    Auto,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Copy => "copy",
            Engine::Splice => "splice",
            Engine::Sockmap => "sockmap",
            Engine::Auto => "auto",
        }
    }
}

/// Why a kernel engine cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(
        "not built: the BPF toolchain was missing when this proxy was compiled \
         (run `cargo xtask setup`, then rebuild)"
    )]
    NotBuilt,
    #[error("{what}: {reason}")]
    Bpf { what: &'static str, reason: String },
}

/// How a flow ended, in the terms of HAProxy's two-letter termination state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEnd {
    /// Both sides closed cleanly.
    Closed,
    /// The client reset or failed; the server was reset in turn.
    ClientAbort,
    /// Both sides closed, but the client's stream ended without its protocol's end marker
    /// (a TLS FIN with no close_notify): what it sent may have been cut short on the way.
    /// Nothing was reset; HAProxy's closest state is `CD`, and it is logged so.
    ClientTruncated,
    /// The server reset or failed; the client was reset in turn.
    ServerAbort,
    /// No byte moved for the idle limit; the client side was waiting.
    ClientTimeout,
    /// No byte moved for the idle limit while only the server side was still open.
    ServerTimeout,
}

impl FlowEnd {
    /// HAProxy's termination state for a session that reached the data phase.
    pub fn term(self) -> TermState {
        let cause = match self {
            FlowEnd::Closed => return TermState::NORMAL,
            FlowEnd::ClientAbort | FlowEnd::ClientTruncated => Cause::Client,
            FlowEnd::ServerAbort => Cause::Server,
            FlowEnd::ClientTimeout => Cause::ClientTimeout,
            FlowEnd::ServerTimeout => Cause::ServerTimeout,
        };
        TermState::new(cause, Phase::Data)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct FlowStats {
    /// Client → server.
    pub bytes_up: u64,
    /// Server → client.
    pub bytes_down: u64,
    pub end: FlowEnd,
}

/// Per-flow settings the engines need.
#[derive(Debug, Clone, Copy)]
pub struct FlowParams {
    pub limits: IdleLimits,
    pub bufsize: usize,
}

impl Default for FlowParams {
    fn default() -> Self {
        FlowParams {
            limits: IdleLimits::default(),
            bufsize: 16 * 1024,
        }
    }
}

/// Where a flow starts from: nothing for a new one; for one resumed after a hand-over, the
/// bytes it moved in the old process, how long it had been idle there and, if it was
/// half-closed, which direction had ended. `gate`: the flow may come to rest for a hand-over
/// (`handover.rs`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Resume<'a> {
    pub gate: Option<&'a Gate>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub idle_for: Duration,
    pub ended: Option<Ended>,
}

/// A flow that came to rest for a hand-over: its sockets, with nothing of its bytes in hand,
/// and what the next process needs to resume it.
pub struct Paused {
    pub client: TcpStream,
    pub server: TcpStream,
    /// Totals so far, those of a [`Resume`] included.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Since the last byte moved: the idle timer's elapsed part.
    pub idle_for: Duration,
    /// A half-closed flow's direction that ended (its FIN passed on) before it rested.
    pub ended: Option<Ended>,
}

impl Resume<'_> {
    /// A new flow that never rests.
    pub const NEW: Resume<'static> = Resume {
        gate: None,
        bytes_up: 0,
        bytes_down: 0,
        idle_for: Duration::ZERO,
        ended: None,
    };
}

/// How [`forward_movable`] returned.
pub enum Forwarded {
    Ended(FlowStats),
    Paused(Paused),
}

/// The stats of a flow run without a gate, which never pauses; were one to pause anyway, its
/// sockets are closed here as a flow that ended cleanly.
pub(crate) fn ended(f: Forwarded) -> FlowStats {
    match f {
        Forwarded::Ended(stats) => stats,
        Forwarded::Paused(p) => FlowStats {
            bytes_up: p.bytes_up,
            bytes_down: p.bytes_down,
            end: FlowEnd::Closed,
        },
    }
}

/// As [`forward_counted`], starting from `resume`, and with a gate the flow may come to rest
/// for a hand-over (`handover.rs`).
pub async fn forward_movable(
    engine: Engine,
    client: TcpStream,
    server: TcpStream,
    p: FlowParams,
    progress: Progress<'_>,
    resume: Resume<'_>,
) -> Forwarded {
    match engine {
        Engine::Copy | Engine::Auto => {
            Box::pin(copy::run(client, server, p, progress, &resume)).await
        }
        Engine::Splice => Box::pin(splice::run(client, server, p, progress, &resume)).await,
        Engine::Sockmap => Box::pin(sockmap::run(client, server, p, progress, &resume)).await,
    }
}

/// Forwards until both directions are closed, a side fails, or the flow goes idle. The
/// caller books the flow's bytes from the returned totals.
pub async fn forward(
    engine: Engine,
    client: TcpStream,
    server: TcpStream,
    p: FlowParams,
) -> FlowStats {
    forward_counted(engine, client, server, p, Progress::none()).await
}

/// As [`forward`], and every byte is also added to the rows of `progress` as it is delivered,
/// so a long-lived flow shows its bytes while it runs. The returned totals are the same bytes:
/// the caller must not add them again.
pub async fn forward_counted(
    engine: Engine,
    client: TcpStream,
    server: TcpStream,
    p: FlowParams,
    progress: Progress<'_>,
) -> FlowStats {
    // Each engine's state is boxed, so a flow holds its own engine's and not, inline in the
    // session, room for the largest of the three (sockmap's is several times copy's).
    match engine {
        Engine::Copy | Engine::Auto => Box::pin(copy::forward(client, server, p, progress)).await,
        Engine::Splice => {
            let fixed = Resume::default();
            ended(Box::pin(splice::run(client, server, p, progress, &fixed)).await)
        }
        Engine::Sockmap => Box::pin(sockmap::forward(client, server, p, progress)).await,
    }
}

/// Zero-duration linger turns the next close into a RST, which is how a reset is passed on.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}
