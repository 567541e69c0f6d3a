//! The soak: mixed real load through the proxy for minutes while faults are injected on a
//! schedule, then one verdict line:
//!
//! `soak: N flows, L bytes lost, rss growth P%, fd growth F, map entries leaked M`
//!
//! It runs inside a network namespace of its own (so `tc netem` on its loopback touches
//! nothing else) and fails when a completed flow lost bytes, a byte-checked flow failed, the
//! proxy's memory grew by more than a tenth after warm-up, descriptors were left open once
//! the load stopped, or a sockmap entry outlived its flow.
//!
//! One concern per file: `cluster` starts the backends and the proxy, `load` the clients,
//! `faults` the schedule, `measure` reads the proxy's memory, descriptors and metrics.

mod cluster;
mod faults;
mod load;
mod measure;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use load::Tally;

/// What a soak is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    /// Time between two faults.
    pub fault_every: Duration,
    /// The faults to inject in turn (all when empty).
    pub faults: Vec<String>,
}

/// The verdict's figures.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub flows: u64,
    pub lost: u64,
    pub failed_checked: u64,
    pub rss_growth_pct: f64,
    pub fd_growth: i64,
    pub map_leaked: u64,
}

impl Verdict {
    pub fn line(&self) -> String {
        format!(
            "soak: {} flows, {} bytes lost, rss growth {:.1}%, fd growth {}, map entries leaked {}",
            self.flows, self.lost, self.rss_growth_pct, self.fd_growth, self.map_leaked
        )
    }

    /// Problems that fail the soak, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.lost > 0 {
            p.push(format!("{} bytes lost by completed flows", self.lost));
        }
        if self.failed_checked > 0 {
            p.push(format!(
                "{} byte-checked flows failed with no fault aimed at them",
                self.failed_checked
            ));
        }
        if self.rss_growth_pct > 10.0 {
            p.push(format!(
                "RSS grew {:.1}% after warm-up",
                self.rss_growth_pct
            ));
        }
        if self.fd_growth > 0 {
            p.push(format!(
                "{} descriptors still open after the load stopped",
                self.fd_growth
            ));
        }
        if self.map_leaked > 0 {
            p.push(format!("{} sockmap entries left behind", self.map_leaked));
        }
        p
    }
}

/// Runs the soak; the caller must already be in a network namespace of its own
/// ([`enter_own_netns`]).
pub fn run(opts: &Options) -> Result<Verdict, String> {
    let faults = faults::named(&opts.faults)?;
    let mut cluster = cluster::Cluster::start();
    let pid = cluster.proxy.pid();
    // Per-thread resources made on first use (each worker's sockmap event watcher, its
    // buffer pool) belong in the baseline, not in the growth.
    load::warm_up(&cluster.targets());
    std::thread::sleep(Duration::from_secs(3));
    let idle = measure::Sample::take(pid);
    let idle_kinds = measure::fd_kinds(pid);
    eprintln!(
        "soak: proxy {pid} up, idle: rss {} KiB, {} fds; {:?} of load, a fault every {:?}",
        idle.rss_kib, idle.fds, opts.duration, opts.fault_every
    );
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients = load::start(&cluster.targets(), &tally, &stop);
    let started = Instant::now();
    let warm_at = (opts.duration / 5).max(Duration::from_secs(20));
    let mut warm: Option<measure::Sample> = None;
    let mut last = idle.clone();
    let mut schedule = faults::Schedule::new(opts.fault_every, faults);
    while started.elapsed() < opts.duration {
        schedule.tick(&mut cluster, &tally);
        std::thread::sleep(Duration::from_millis(500));
        last = measure::Sample::take(pid);
        if warm.is_none() && started.elapsed() >= warm_at {
            eprintln!("soak: warm: rss {} KiB, {} fds", last.rss_kib, last.fds);
            warm = Some(last.clone());
        }
    }
    schedule.clear(&mut cluster);
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.join();
    }
    let drained = measure::drain(pid, idle.fds, Duration::from_secs(30));
    if drained.fds > idle.fds {
        eprintln!(
            "soak: descriptors after the drain by kind: {:?} (idle: {:?})",
            measure::fd_kinds(pid),
            idle_kinds
        );
        let ss = std::process::Command::new(crate::util::require_tool("ss"))
            .args(["-tanp"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        eprintln!("soak: sockets now:\n{ss}");
    }
    let warm = warm.unwrap_or_else(|| idle.clone());
    let map_leaked = measure::metric(cluster.metrics_addr(), "proxy_sockmap_flows").unwrap_or(0.0);
    eprintln!("soak: {}", tally.summary());
    eprintln!(
        "soak: under load last rss {} KiB ({} fds); after the drain {} fds",
        last.rss_kib, last.fds, drained.fds
    );
    let verdict = Verdict {
        flows: tally.flows(),
        lost: tally.lost(),
        failed_checked: tally.failed_checked(),
        rss_growth_pct: measure::growth_pct(warm.rss_kib, last.rss_kib),
        fd_growth: drained.fds as i64 - idle.fds as i64,
        map_leaked: map_leaked as u64,
    };
    if !verdict.problems().is_empty() {
        let path = crate::util::workspace_root().join("target/soak-proxy.log");
        if std::fs::write(&path, cluster.proxy.stderr()).is_ok() {
            eprintln!("soak: the proxy's log is in {}", path.display());
        }
    }
    Ok(verdict)
}

/// Moves this process into a new network namespace with its loopback up, so the soak's
/// `tc netem` and its ports touch nothing outside. Needs root.
pub fn enter_own_netns() -> Result<(), String> {
    // SAFETY: a plain system call with a constant flag.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("unshare(CLONE_NEWNET): {e} (the soak needs root)"));
    }
    let status = std::process::Command::new(crate::util::require_tool("ip"))
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| format!("ip link set lo up: {e}"))?;
    if !status.success() {
        return Err(format!("ip link set lo up: {status}"));
    }
    Ok(())
}
