//! The part of the close protocol every engine shares: two directions run at once; a clean
//! end of one lets the other run on (half-close), a failure of either ends both, and a
//! watchdog ends an idle flow. Engines supply the two directions and the watchdog.

use std::future::Future;
use std::pin::{pin, Pin};
use std::time::Duration;

use futures_util::future::{select, Either};

use super::handover::Gate;
use super::{reset, FlowEnd, IdleLimits};
use compio::net::TcpStream;

/// How one direction finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirEnd {
    /// The source sent FIN and the destination was shut down for writing in turn.
    Eof,
    /// Reading from the source failed: the source reset.
    SourceFailed,
    /// Writing to the destination failed: the destination reset.
    DestFailed,
}

/// Runs both directions to their end. `watchdog(limit)` resolves once nothing has moved
/// for `limit` (never for `None`); it is asked again with the half-closed limit once one
/// direction has finished cleanly.
pub async fn run<U, D, W, F>(up: U, down: D, limits: &IdleLimits, watchdog: W) -> FlowEnd
where
    U: Future<Output = DirEnd>,
    D: Future<Output = DirEnd>,
    W: Fn(Option<Duration>) -> F,
    F: Future<Output = ()>,
{
    run_gated(up, down, limits, watchdog, None, None)
        .await
        .unwrap_or(FlowEnd::Closed)
}

/// As [`run`]; with a gate, [`Rested`] once the flow came to rest for a hand-over (each
/// direction dropped while it waits with nothing in hand, or already ended: `handover.rs`).
/// `ended`: a half-closed flow resumed from another process, whose ended direction is not
/// run again (its FIN was read and passed on there), so that the live one's end closes the
/// flow as it would have closed there.
///
/// Engines pin their directions and pass `Pin<&mut _>`: a direction passed by value is held
/// twice in this future's state, as the argument and as its pinned copy (288 bytes each for a
/// sockmap direction, in every flow: issue #14).
pub async fn run_gated<U, D, W, F>(
    up: U,
    down: D,
    limits: &IdleLimits,
    watchdog: W,
    gate: Option<&Gate>,
    ended: Option<Ended>,
) -> Result<FlowEnd, Rested>
where
    U: Future<Output = DirEnd>,
    D: Future<Output = DirEnd>,
    W: Fn(Option<Duration>) -> F,
    F: Future<Output = ()>,
{
    let mut up = pin!(up);
    let mut down = pin!(down);
    let first = match ended {
        None => first_end(up.as_mut(), down.as_mut(), limits.idle, &watchdog, gate).await,
        Some(e) => First::Ended(DirEnd::Eof, e.is_up()),
    };
    let first_is_up = match first {
        First::Rest => return Err(Rested { ended: None }),
        First::Idle => return Ok(FlowEnd::ClientTimeout),
        First::Ended(end, is_up) => match failure(end, is_up) {
            Some(abort) => return Ok(abort),
            None => is_up,
        },
    };
    // A clean FIN lets the other direction run on (half-close), under the half-closed limit
    // and, with a gate, still free to rest: the ended direction holds nothing.
    if let Some(g) = gate {
        g.end(first_is_up);
    }
    // Each branch names its own ended direction and timeout end: a flag kept across the
    // wait would take room in every flow's state (issue #14).
    if first_is_up {
        let never = pin!(std::future::pending());
        let second = first_end(never, down, limits.after_half_close(true), &watchdog, gate);
        second_end(second.await, Ended::Up, FlowEnd::ServerTimeout)
    } else {
        let never = pin!(std::future::pending());
        let second = first_end(up, never, limits.after_half_close(false), &watchdog, gate);
        second_end(second.await, Ended::Down, FlowEnd::ClientTimeout)
    }
}

/// A flow that came to rest for a hand-over, and which direction had ended before (none
/// unless it was half-closed): what the next process needs to resume only the live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rested {
    pub ended: Option<Ended>,
}

/// How a half-closed flow ended, from how its live direction did: `idle` while waiting on
/// the side that has not finished yet.
fn second_end(second: First, ended: Ended, idle: FlowEnd) -> Result<FlowEnd, Rested> {
    Ok(match second {
        First::Rest => return Err(Rested { ended: Some(ended) }),
        First::Ended(end, is_up) => failure(end, is_up).unwrap_or(FlowEnd::Closed),
        First::Idle => idle,
    })
}

/// The direction of a half-closed flow that has ended cleanly: its source's FIN was read and
/// passed on (shutdown of its destination's write side), while the other one still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Client → server.
    Up,
    /// Server → client.
    Down,
}

impl Ended {
    pub fn is_up(self) -> bool {
        self == Ended::Up
    }
}

/// What ended the part of a flow where both directions run.
enum First {
    /// A direction ended (how, and whether it was client → server).
    Ended(DirEnd, bool),
    /// Nothing moved for the idle limit.
    Idle,
    /// Both directions rest for a hand-over.
    Rest,
}

/// Resolves when the flow rests for a hand-over; never without a gate.
async fn rested(gate: Option<&Gate>) {
    match gate {
        Some(g) => g.settled().await,
        None => std::future::pending().await,
    }
}

/// Both directions under the idle limit until one ends: how, and whether it was the client →
/// server one; `None` when the flow went idle first. A function of its own so that its
/// watchdog is gone (timer cancelled, room reused) once the other direction runs on: every
/// flow holds this state for its whole life (issue #14).
async fn first_end<U, D, W, F>(
    up: Pin<&mut U>,
    down: Pin<&mut D>,
    limit: Option<Duration>,
    watchdog: &W,
    gate: Option<&Gate>,
) -> First
where
    U: Future<Output = DirEnd>,
    D: Future<Output = DirEnd>,
    W: Fn(Option<Duration>) -> F,
    F: Future<Output = ()>,
{
    let dog = pin!(watchdog(limit));
    let rest = pin!(rested(gate));
    match select(select(up, down), select(dog, rest)).await {
        Either::Right((Either::Left(_), _)) => First::Idle,
        Either::Right((Either::Right(_), _)) => First::Rest,
        Either::Left((Either::Left((up_end, _)), _)) => First::Ended(up_end, true),
        Either::Left((Either::Right((down_end, _)), _)) => First::Ended(down_end, false),
    }
}

/// Maps a direction's failure to who aborted: for client → server (`is_up`), a failed read is
/// the client's fault and a failed write the server's; the reverse for the other direction.
pub fn failure(end: DirEnd, is_up: bool) -> Option<FlowEnd> {
    match (end, is_up) {
        (DirEnd::Eof, _) => None,
        (DirEnd::SourceFailed, true) | (DirEnd::DestFailed, false) => Some(FlowEnd::ClientAbort),
        (DirEnd::SourceFailed, false) | (DirEnd::DestFailed, true) => Some(FlowEnd::ServerAbort),
    }
}

/// A reset on one side becomes a reset on the other, so a cut stream is never mistaken for a
/// complete one. A timed-out flow is idle, nothing is in flight: both sides get a plain FIN
/// when the streams drop, as HAProxy closes them.
pub fn apply_end(end: FlowEnd, client: &TcpStream, server: &TcpStream) {
    match end {
        FlowEnd::ClientAbort => reset(server),
        FlowEnd::ServerAbort => reset(client),
        FlowEnd::Closed
        | FlowEnd::ClientTruncated
        | FlowEnd::ClientTimeout
        | FlowEnd::ServerTimeout => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_aborted() {
        assert_eq!(failure(DirEnd::Eof, true), None);
        assert_eq!(
            failure(DirEnd::SourceFailed, true),
            Some(FlowEnd::ClientAbort)
        );
        assert_eq!(
            failure(DirEnd::DestFailed, true),
            Some(FlowEnd::ServerAbort)
        );
        assert_eq!(
            failure(DirEnd::SourceFailed, false),
            Some(FlowEnd::ServerAbort)
        );
        assert_eq!(
            failure(DirEnd::DestFailed, false),
            Some(FlowEnd::ClientAbort)
        );
    }
}
