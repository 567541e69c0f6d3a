//! CPU and memory accounting over a measurement window: two snapshots, one subtraction.
//!
//! Figures (all CPU in seconds over the window):
//! * `machine`: every CPU's non-idle time from `/proc/stat`, so softirq and kernel threads
//!   count; this is what the hop costs the machine, and what other users of the machine add
//!   as noise (recorded separately as the background sample).
//! * `hop`: the hop process alone (`/proc/PID/stat` utime+stime, all its threads).
//! * `load`: this bench process (load generators + TCP backends), plus a backend process
//!   (nginx) and load processes that ran and were reaped inside the window (wrk).
//! * `kthreads`, `softirq`: where kernel work outside any process went.
//! * `attributed` (derived): load + hop + kernel threads. On a machine shared with other work
//!   (compiles next door) this is far steadier than `machine`, because per-process CPU time is
//!   exact (sum_exec_runtime) while `machine` includes whatever else ran. Softirq work done in
//!   our processes' context is inside their system time (tick accounting without
//!   IRQ_TIME_ACCOUNTING charges it to the running task); softirq done while a CPU idled is
//!   missed, so this figure errs low.

use crate::procfs::{self, Stat};
use serde::Serialize;
use std::time::{Duration, Instant};

/// The processes a window accounts for by name, besides this one.
#[derive(Debug, Clone, Default)]
pub struct Pids {
    pub hop: Option<u32>,
    /// Backends and load generators running as their own processes (nginx, ffmpeg).
    pub others: Vec<u32>,
    /// Count the hop's whole process tree (a master and its workers, live and reaped), not
    /// only the process the bench started: the reload scenario's HAProxy runs as `-W`.
    pub hop_tree: bool,
}

pub struct Snapshot {
    at: Instant,
    stat: Stat,
    kthreads: u64,
    /// Ticks of this process, the backend process and our reaped children.
    load: f64,
    hop: Option<u64>,
    slab_kib: Option<u64>,
}

impl Snapshot {
    pub fn take(p: &Pids) -> Snapshot {
        let ticks = |pid: u32| procfs::read_task_stat(pid).ok().map(|t| t.cpu_ticks);
        let others: u64 = p.others.iter().filter_map(|&pid| ticks(pid)).sum();
        let own = ticks(std::process::id()).unwrap_or(0) + others;
        Snapshot {
            at: Instant::now(),
            stat: procfs::read_stat().unwrap_or_default(),
            kthreads: procfs::kernel_thread_ticks(),
            load: own as f64 + reaped_children_secs() * procfs::ticks_per_sec(),
            hop: match p.hop {
                Some(pid) if p.hop_tree => procfs::tree_cpu_ticks(pid),
                other => other.and_then(ticks),
            },
            slab_kib: procfs::slab_kib(),
        }
    }
}

/// CPU of children already waited for (wrk, which ends inside the window). Hops are reaped
/// only after a window closes, so they never land here.
fn reaped_children_secs() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) != 0 {
            return 0.0;
        }
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub secs: f64,
    pub machine_cpu_s: f64,
    /// Busy share of each CPU over the window (0..=1): shows which side saturated.
    pub per_cpu_busy: Vec<f64>,
    pub softirq_s: f64,
    pub kthreads_s: f64,
    pub load_cpu_s: f64,
    pub hop_cpu_s: Option<f64>,
    /// Hop resident memory at the end of the window (flows still open).
    pub hop_rss_kib: Option<u64>,
    /// Machine-wide TCP socket buffer memory at the end of the window.
    pub tcp_mem_kib: Option<u64>,
    /// Slab growth over the window (skbs held in queues show here; noisy on a shared machine).
    pub slab_delta_kib: Option<i64>,
}

impl Window {
    pub fn attributed_cpu_s(&self) -> f64 {
        self.load_cpu_s + self.hop_cpu_s.unwrap_or(0.0) + self.kthreads_s
    }

    /// The window between `a` and `b`; `hop_pid` for its RSS, read now (at `b`).
    pub fn between(a: &Snapshot, b: &Snapshot, p: &Pids) -> Window {
        let hop_pid = p.hop;
        let hz = procfs::ticks_per_sec();
        let d = b.stat.since(&a.stat);
        let s = |ticks: u64| ticks as f64 / hz;
        Window {
            secs: b.at.duration_since(a.at).as_secs_f64(),
            machine_cpu_s: s(d.all.busy()),
            per_cpu_busy: d.per_cpu.iter().map(|c| c.busy_fraction()).collect(),
            softirq_s: s(d.all.softirq),
            kthreads_s: s(b.kthreads.saturating_sub(a.kthreads)),
            load_cpu_s: (b.load - a.load).max(0.0) / hz,
            hop_cpu_s: match (a.hop, b.hop) {
                (Some(x), Some(y)) => Some(s(y.saturating_sub(x))),
                _ => None,
            },
            hop_rss_kib: hop_pid.and_then(procfs::rss_kib),
            tcp_mem_kib: procfs::tcp_mem_kib(),
            slab_delta_kib: match (a.slab_kib, b.slab_kib) {
                (Some(x), Some(y)) => Some(y as i64 - x as i64),
                _ => None,
            },
        }
    }
}

/// What else the machine was doing just before a run: the 1-minute load average and the busy
/// share of all CPUs over a short idle sample (nothing of ours running).
#[derive(Debug, Clone, Serialize)]
pub struct Background {
    pub loadavg_1m: Option<f64>,
    pub busy_pct: f64,
}

pub fn background(sample: Duration) -> Background {
    let a = procfs::read_stat().unwrap_or_default();
    std::thread::sleep(sample);
    let b = procfs::read_stat().unwrap_or_default();
    Background {
        loadavg_1m: procfs::loadavg().map(|l| l[0]),
        busy_pct: 100.0 * b.since(&a).all.busy_fraction(),
    }
}
