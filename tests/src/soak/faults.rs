//! The fault schedule: one fault every period, in turn, each undone before the next one
//! starts: backends killed and restarted, the network made lossy and slow (`tc netem` on the
//! soak's own loopback), clients resetting mid-flow, the TLS certificate replaced, the
//! configuration reloaded.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::cluster::Cluster;
use super::load::Tally;
use crate::tcp::{Reply, TcpClient};
use crate::util::require_tool;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// One RTMP node and one HTTP node killed (SIGKILL), restarted half a period later.
    KillBackends,
    /// 1 % loss, 5 ms ± 2 ms delay on every packet, for half a period.
    LossyNetwork,
    /// 40 ms of delay on every packet (slow backends and clients), for half a period.
    SlowNetwork,
    /// Twenty byte-checked flows reset by their client after 256 KiB.
    ClientResets,
    /// The RTMPS bind's certificate file replaced (a renewal).
    NewCertificate,
    /// SIGHUP: the configuration reloaded.
    Reload,
}

const ORDER: [Fault; 6] = [
    Fault::KillBackends,
    Fault::LossyNetwork,
    Fault::ClientResets,
    Fault::NewCertificate,
    Fault::SlowNetwork,
    Fault::Reload,
];

/// The faults `--faults` may name, by their names in the log (`KillBackends`, …).
pub fn named(names: &[String]) -> Result<Vec<Fault>, String> {
    if names.is_empty() {
        return Ok(ORDER.to_vec());
    }
    names
        .iter()
        .map(|n| {
            ORDER
                .iter()
                .copied()
                .find(|f| format!("{f:?}").eq_ignore_ascii_case(n))
                .ok_or_else(|| format!("unknown fault {n}; known: {ORDER:?}"))
        })
        .collect()
}

pub struct Schedule {
    faults: Vec<Fault>,
    /// The kernel has `netem` (this host's does not: loss then comes from an nftables rule,
    /// slowness from a `tbf` rate limit).
    netem: bool,
    every: Duration,
    next_at: Instant,
    turn: usize,
    /// A fault to undo, and when.
    undo: Option<(Fault, Instant)>,
}

impl Schedule {
    pub fn new(every: Duration, faults: Vec<Fault>) -> Schedule {
        let netem = netem(&["delay", "0ms"]) && tc(&["qdisc", "del", "dev", "lo", "root"]);
        if !netem {
            eprintln!(
                "soak: this kernel has no netem: loss by an nftables rule, slowness by a tbf \
                 rate limit, on the soak's own loopback"
            );
        }
        Schedule {
            faults,
            netem,
            every,
            next_at: Instant::now() + every,
            turn: 0,
            undo: None,
        }
    }

    /// Starts or undoes what is due now.
    pub fn tick(&mut self, c: &mut Cluster, tally: &Tally) {
        let now = Instant::now();
        if let Some((fault, at)) = self.undo {
            if now >= at {
                undo(fault, c);
                self.undo = None;
            }
        }
        if now < self.next_at || self.undo.is_some() {
            return;
        }
        let Some(&fault) = self.faults.get(self.turn % self.faults.len().max(1)) else {
            return;
        };
        self.turn += 1;
        self.next_at = now + self.every;
        eprintln!("soak: fault {} ({fault:?})", self.turn);
        if inject(fault, c, tally, self.turn as u32, self.netem) {
            self.undo = Some((fault, now + self.every / 2));
        }
    }

    /// Undoes a fault still in force (the load is about to stop).
    pub fn clear(&mut self, c: &mut Cluster) {
        if let Some((fault, _)) = self.undo.take() {
            undo(fault, c);
        }
    }
}

/// Injects `fault`; `true` when it must be undone later.
fn inject(fault: Fault, c: &mut Cluster, tally: &Tally, turn: u32, netem_here: bool) -> bool {
    match fault {
        Fault::KillBackends => {
            c.rtmp[1].stop();
            c.http[1].stop();
            true
        }
        Fault::LossyNetwork if netem_here => netem(&["delay", "5ms", "2ms", "loss", "1%"]),
        Fault::LossyNetwork => drop_one_percent(),
        Fault::SlowNetwork if netem_here => netem(&["delay", "40ms"]),
        // The bucket must hold the largest loopback packet (64 KiB with GSO): with a smaller
        // one tbf drops every such packet, retransmissions included, and connections die
        // without any proxy in the way (seen: ETIMEDOUT between two plain sockets).
        Fault::SlowNetwork => tc(&[
            "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "20mbit", "burst", "256kb",
            "latency", "200ms",
        ]),
        Fault::ClientResets => {
            let addr = c.targets().tcp_auto;
            for _ in 0..20 {
                let client = TcpClient::connect(addr, Reply::Concurrent { bytes: 1 << 20 });
                let _ = client.send(256 * 1024);
                client.reset();
                tally.resets.fetch_add(1, Ordering::Relaxed);
            }
            false
        }
        Fault::NewCertificate => {
            c.replace_certificate(turn);
            false
        }
        Fault::Reload => {
            let pid = nix::unistd::Pid::from_raw(c.proxy.pid() as i32);
            let _ = nix::sys::signal::kill(pid, Signal::SIGHUP);
            false
        }
    }
}

fn undo(fault: Fault, c: &mut Cluster) {
    match fault {
        Fault::KillBackends => {
            c.rtmp[1].start();
            c.http[1].restart();
        }
        Fault::LossyNetwork | Fault::SlowNetwork => {
            let _ = tc(&["qdisc", "del", "dev", "lo", "root"]);
            let _ = nft(&["delete", "table", "inet", "soak"]);
        }
        _ => {}
    }
}

/// `tc qdisc add dev lo root netem ARGS` on the soak's own loopback.
fn netem(args: &[&str]) -> bool {
    let mut all = vec!["qdisc", "add", "dev", "lo", "root", "netem"];
    all.extend_from_slice(args);
    tc(&all)
}

/// Drops 1 % of the packets the loopback receives.
fn drop_one_percent() -> bool {
    nft(&["add", "table", "inet", "soak"])
        && nft(&[
            "add",
            "chain",
            "inet",
            "soak",
            "input",
            "{ type filter hook input priority 0; }",
        ])
        && nft(&[
            "add", "rule", "inet", "soak", "input", "iif", "lo", "numgen", "random", "mod", "100",
            "<", "1", "drop",
        ])
}

fn nft(args: &[&str]) -> bool {
    run(require_tool("nft"), args)
}

fn tc(args: &[&str]) -> bool {
    run(require_tool("tc"), args)
}

fn run(program: std::path::PathBuf, args: &[&str]) -> bool {
    match Command::new(&program)
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(s) if s.success() => true,
        other => {
            eprintln!("soak: {} {args:?}: {other:?}", program.display());
            false
        }
    }
}
