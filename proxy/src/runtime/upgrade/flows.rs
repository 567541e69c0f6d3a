//! The established flows: `_getflows` pauses every movable flow of the old process and
//! offers each with its two sockets (`flow …`); the new process answers `take` or `keep
//! REASON`; on `take` the old process writes `yours`, and from that write on the flow is the
//! new one's. `end moved=N` closes the exchange. Ownership at each step: LIFECYCLE.md.

use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::wire;
use super::{Reloader, UpgradeError};
use crate::counters::PROCESS;
use crate::forward;
use crate::tcp::handover::{self, Departure, FlowInfo};

pub const COMMAND: &str = "_getflows";

/// How often the old side looks for flows that came to rest.
const LOOK: Duration = Duration::from_millis(5);

/// Old side: pauses, offers every flow that comes to rest, and lets the others run on here.
/// Returns how many moved. Whatever happens, the pause ends and every flow not taken resumes.
pub fn give(sock: &UnixStream, total: &AtomicUsize) -> Result<usize, UpgradeError> {
    handover::open_outbox();
    forward::request_pause();
    let moved = offer_all(sock, total);
    forward::end_pause();
    handover::close_outbox();
    moved
}

fn offer_all(sock: &UnixStream, total: &AtomicUsize) -> Result<usize, UpgradeError> {
    // A flow comes to rest within SETTLE or gives up; the margin covers the last look.
    let deadline = Instant::now() + forward::SETTLE + Duration::from_millis(500);
    let mut moved = 0;
    let mut offered = 0u64;
    loop {
        let resting = handover::take_departures();
        let none = resting.is_empty();
        // On an error the departures not yet offered drop here: their sessions resume.
        for d in resting {
            offered += 1;
            if offer(sock, d, offered, total)? {
                moved += 1;
            }
        }
        // Every mode-tcp session gone means every flow moved; otherwise, those that did not
        // come to rest by the deadline (TLS, half-closed, busy) are finished here.
        if none && (PROCESS.tcp_sessions.load(Ordering::Relaxed) == 0 || Instant::now() >= deadline)
        {
            break;
        }
        std::thread::sleep(LOOK);
    }
    wire::send(sock, &format!("end moved={moved}"), &[])?;
    Ok(moved)
}

/// One flow: `true` once the new process owns it. Any failure before `yours` is written
/// leaves it here (the departure drops, its session resumes).
fn offer(
    sock: &UnixStream,
    d: Departure,
    id: u64,
    total: &AtomicUsize,
) -> Result<bool, UpgradeError> {
    let fds = [d.client.as_raw_fd(), d.server.as_raw_fd()];
    wire::send(sock, &encode(id, &d.info), &fds)?;
    let (reply, _) = wire::recv(sock)?;
    match reply
        .split_once(' ')
        .map_or((reply.as_str(), ""), |(a, b)| (a, b))
    {
        ("take", _) => {
            wire::send(sock, "yours", &[])?;
            // Counted before the session learns it: its end may let the process exit.
            total.fetch_add(1, Ordering::Relaxed);
            d.taken();
            Ok(true)
        }
        ("keep", why) => {
            log::info!(
                "upgrade: flow {} -> {}/{} stays here: {why}",
                d.info.src,
                d.info.backend,
                d.info.server
            );
            Ok(false)
        }
        _ => Err(UpgradeError::Protocol(reply)),
    }
}

/// What the new process took.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Adopted {
    pub adopted: usize,
    pub refused: usize,
}

impl fmt::Display for Adopted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "adopted {} flow(s) from the old process, refused {}",
            self.adopted, self.refused
        )
    }
}

/// New side: takes every flow offered that a `mode tcp` frontend of the same name here can
/// carry, and starts it on a worker once the old process wrote `yours`.
pub fn take(sock: &UnixStream, reloader: &Reloader) -> Result<Adopted, UpgradeError> {
    wire::send_line(sock, COMMAND)?;
    let mut n = Adopted::default();
    loop {
        let (text, fds) = match wire::recv(sock) {
            Ok(m) => m,
            // The old process exits as its last flow leaves, maybe before its `end`.
            Err(UpgradeError::Closed) => return Ok(n),
            Err(e) => return Err(e),
        };
        if text.starts_with("end") {
            return Ok(n);
        }
        let info = decode(&text).ok_or_else(|| UpgradeError::Protocol(text.clone()))?;
        let Ok::<[OwnedFd; 2], _>([client, server]) = fds.try_into() else {
            wire::send(sock, "keep two sockets expected", &[])?;
            n.refused += 1;
            continue;
        };
        let Some(fe) = reloader.tcp_frontend(&info.frontend) else {
            let why = format!(
                "no mode-tcp frontend {} in the new configuration",
                info.frontend
            );
            wire::send(sock, &format!("keep {why}"), &[])?;
            n.refused += 1;
            continue;
        };
        wire::send(sock, "take", &[])?;
        // Until `yours` arrives the old process owns the flow: on anything else our copies of
        // its sockets close here and it resumes there.
        let (commit, _) = wire::recv(sock)?;
        if commit != "yours" {
            return Err(UpgradeError::Protocol(commit));
        }
        reloader.adopt(client, server, info, fe);
        n.adopted += 1;
    }
}

fn encode(id: u64, i: &FlowInfo) -> String {
    let accepted = i.accepted.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!(
        "flow id={id} fe={} be={} srv={} src={} dst={} accepted_us={} age_us={} up={} down={} idle_us={}",
        i.frontend,
        i.backend,
        i.server,
        i.src,
        i.dst,
        accepted.as_micros(),
        i.age.as_micros(),
        i.bytes_up,
        i.bytes_down,
        i.idle_for.as_micros(),
    )
}

fn decode(text: &str) -> Option<FlowInfo> {
    let mut words = text.split_whitespace();
    if words.next()? != "flow" {
        return None;
    }
    let fields: std::collections::HashMap<&str, &str> =
        words.filter_map(|w| w.split_once('=')).collect();
    let get = |k: &str| fields.get(k).copied();
    let us = |k: &str| get(k)?.parse::<u64>().ok().map(Duration::from_micros);
    Some(FlowInfo {
        frontend: get("fe")?.to_string(),
        backend: get("be")?.to_string(),
        server: get("srv")?.to_string(),
        src: get("src")?.parse().ok()?,
        dst: get("dst")?.parse().ok()?,
        accepted: UNIX_EPOCH + us("accepted_us")?,
        age: us("age_us")?,
        bytes_up: get("up")?.parse().ok()?,
        bytes_down: get("down")?.parse().ok()?,
        idle_for: us("idle_us")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_line_reads_back_as_written() {
        let info = FlowInfo {
            frontend: "rtmp".into(),
            backend: "ams".into(),
            server: "s1".into(),
            src: "127.0.0.1:40000".parse().expect("addr"),
            dst: "[::1]:1935".parse().expect("addr"),
            accepted: UNIX_EPOCH + Duration::from_micros(1_765_000_000_123_456),
            age: Duration::from_micros(61_000_001),
            bytes_up: 123_456_789,
            bytes_down: 42,
            idle_for: Duration::from_micros(1500),
        };
        assert_eq!(decode(&encode(7, &info)), Some(info));
        assert_eq!(decode("flow id=1 fe=x"), None);
    }
}
