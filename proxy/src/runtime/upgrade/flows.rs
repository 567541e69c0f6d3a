//! The established flows: `_getflows` pauses every movable flow of the old process and
//! offers each with its two sockets (`flow …`); the new process answers `take` or `keep
//! REASON`; on `take` the old process writes `yours`, and from that write on the flow is the
//! new one's. `end moved=N` closes the exchange. Ownership at each step: LIFECYCLE.md.
//!
//! A `flow` line is `key=value` words, and grows by keys whose absence keeps the meaning
//! they had before the key existed: `ended=up|down` (a half-closed flow) is written only for
//! such a flow, so a flow with both directions open is offered as an older process offers
//! it, and an older process's offers read right here. A value this process does not know
//! (a newer process's) is refused with `keep` and a log line on both sides, never guessed.

use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::wire;
use super::{Reloader, UpgradeError};
use crate::counters::PROCESS;
use crate::forward::{self, Ended};
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
        // come to rest by the deadline (TLS, a destination that does not read) are finished
        // here.
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
        let info = match decode(&text) {
            Ok(info) => info,
            Err(Unreadable::Unknown(why)) => {
                log::warn!("upgrade: a flow refused: {why}");
                wire::send(sock, &format!("keep {why}"), &[])?;
                n.refused += 1;
                continue;
            }
            Err(Unreadable::Malformed) => return Err(UpgradeError::Protocol(text)),
        };
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
    let mut line = format!(
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
    );
    if let Some(e) = i.ended {
        line.push_str(" ended=");
        line.push_str(ended_word(e));
    }
    line
}

fn ended_word(e: Ended) -> &'static str {
    match e {
        Ended::Up => "up",
        Ended::Down => "down",
    }
}

/// Why a `flow` line is not taken.
#[derive(Debug, PartialEq, Eq)]
enum Unreadable {
    /// Not a flow line, or a field missing or garbled: the peer speaks something else.
    Malformed,
    /// A well-formed line with a value this process does not know: that flow stays.
    Unknown(String),
}

fn decode(text: &str) -> Result<FlowInfo, Unreadable> {
    let mut words = text.split_whitespace();
    if words.next() != Some("flow") {
        return Err(Unreadable::Malformed);
    }
    let fields: std::collections::HashMap<&str, &str> =
        words.filter_map(|w| w.split_once('=')).collect();
    let ended = match fields.get("ended").copied() {
        None => None,
        Some("up") => Some(Ended::Up),
        Some("down") => Some(Ended::Down),
        Some(other) => {
            return Err(Unreadable::Unknown(format!(
                "unknown ended={other} (a newer process's flow state)"
            )))
        }
    };
    decode_fields(&fields, ended).ok_or(Unreadable::Malformed)
}

fn decode_fields(
    fields: &std::collections::HashMap<&str, &str>,
    ended: Option<Ended>,
) -> Option<FlowInfo> {
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
        ended,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> FlowInfo {
        FlowInfo {
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
            ended: None,
        }
    }

    #[test]
    fn a_flow_line_reads_back_as_written() {
        assert_eq!(decode(&encode(7, &info())), Ok(info()));
        assert_eq!(decode("flow id=1 fe=x"), Err(Unreadable::Malformed));
        assert_eq!(decode("listener 127.0.0.1:1 -"), Err(Unreadable::Malformed));
    }

    #[test]
    fn a_half_closed_flow_reads_back_with_its_ended_direction() {
        for (ended, word) in [(Ended::Up, " ended=up"), (Ended::Down, " ended=down")] {
            let half = FlowInfo {
                ended: Some(ended),
                ..info()
            };
            let line = encode(3, &half);
            assert!(line.ends_with(word), "{line}");
            assert_eq!(decode(&line), Ok(half));
        }
    }

    /// A flow with both directions open is written as a process without the key wrote it,
    /// and such a process's line (no `ended=`) reads as both directions open.
    #[test]
    fn both_directions_open_is_the_line_without_the_key() {
        let line = encode(1, &info());
        assert!(!line.contains("ended"), "{line}");
        let older = "flow id=1 fe=rtmp be=ams srv=s1 src=127.0.0.1:40000 dst=[::1]:1935 \
                     accepted_us=1765000000123456 age_us=61000001 up=123456789 down=42 \
                     idle_us=1500";
        assert_eq!(decode(older), Ok(info()));
    }

    #[test]
    fn an_unknown_ended_value_is_refused_not_guessed() {
        let line = format!("{} ended=both", encode(1, &info()));
        let Err(Unreadable::Unknown(why)) = decode(&line) else {
            panic!("{line} read as {:?}", decode(&line));
        };
        assert!(why.contains("ended=both"), "{why}");
    }
}
