//! The reload scenario (issue #15): the ingest load of `ingest-200x4` while the hop is
//! reloaded several times inside the measured window, as an operator does.
//!
//! * This proxy: SIGHUP (the in-process reload the README's Operations section describes; the
//!   runtime API's `reload` does the same thing).
//! * HAProxy 2.6: master-worker mode (`-W`, what Debian's unit and most operators run) and
//!   SIGUSR2 to the master, which is what `systemctl reload haproxy` does: the master
//!   re-executes itself, starts a new worker and tells the old one to stop accepting and exit
//!   once its connections have ended. `hard-stop-after` is not set, so an old worker lives as
//!   long as its longest flow.
//!
//! The flows open in generations, one before the window and one after each reload, as
//! publishers come and go: every HAProxy worker generation then holds flows of its own, which
//! is what makes old workers pile up in production. Reported per variant: bytes sent and not
//! received after teardown, flows cut (errors), reloads the hop showed it made, and the hop's
//! live processes at the end of the window (after the last reload, every flow still open).

use crate::error::{BenchError, Result};
use crate::hop::{self, Hop, Mode, Spec, Variant};
use crate::measure::Pids;
use crate::peers::backend::{Backend, Counters};
use crate::peers::ingest;
use crate::record::{ReloadFigures, RunRecord};
use crate::scenario::{self, Ctx, Timing, BACK_IP, FRONT_IP, START_LIMIT};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The load of one run.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub flows: usize,
    pub mbit: f64,
    pub reloads: usize,
}

/// How long a hop may take to show that a reload happened.
const RELOAD_LIMIT: Duration = Duration::from_secs(5);

/// Flows per generation: `flows` split into `generations` nearly equal parts, the first one
/// taking the remainder.
pub fn generations(flows: usize, generations: usize) -> Vec<usize> {
    let g = generations.max(1);
    let mut v = vec![flows / g; g];
    v[0] += flows % g;
    v
}

/// When, from the window's start, reload `k` (1-based) of `n` is sent: evenly inside the
/// window, the last one leaving the same interval before the window ends.
pub fn reload_at(window: Duration, k: usize, n: usize) -> Duration {
    window.mul_f64(k as f64 / (n + 1) as f64)
}

pub fn run(ctx: &Ctx, v: Variant, timing: Timing, load: Load, rec: &mut RunRecord) -> Result<()> {
    let backend = Backend::start(BACK_IP)?;
    let (mut hop, target) = match v {
        Variant::Direct => (None, backend.addr),
        _ => {
            let spec = Spec {
                mode: Mode::Tcp,
                frontend: hop::free_addr(FRONT_IP)?,
                backend: backend.addr,
                tls_cert: None,
                maxconn: Spec::MAXCONN,
                alpn: None,
                master_worker: true,
            };
            let h = Hop::start(v, &spec, &ctx.work, &ctx.plan, &ctx.proxy_bin, START_LIMIT)?;
            (Some(h), spec.frontend)
        }
    };
    let sizes = generations(load.flows, load.reloads + 1);
    let params = |flows| ingest::Params {
        flows,
        mbit_per_flow: load.mbit,
    };
    let mut clients = vec![ingest::Client::start(target, params(sizes[0]))?];
    clients[0].wait_connected(sizes[0], Duration::from_secs(15))?;
    let counters = backend.counters.clone();
    let p = Pids {
        hop: hop.as_ref().map(|h| h.pid),
        others: vec![],
        // HAProxy's workers are children of the process started; old ones exit mid-window.
        hop_tree: true,
    };
    let mut done = 0;
    let mut trouble: Option<BenchError> = None;
    let (w, bytes) = scenario::measured(
        p,
        timing,
        || counters.received.load(Relaxed),
        || {
            let start = Instant::now();
            clients[0].shared.recording.store(true, Relaxed);
            for (k, &n) in sizes.iter().enumerate().skip(1) {
                sleep_until(start + reload_at(timing.window, k, load.reloads));
                if let Some(h) = hop.as_mut() {
                    done += usize::from(h.reload(RELOAD_LIMIT));
                }
                match open_generation(target, params(n)) {
                    Ok(c) => clients.push(c),
                    Err(e) => {
                        trouble.get_or_insert(e);
                    }
                }
            }
            sleep_until(start + timing.window);
            for c in &clients {
                c.shared.recording.store(false, Relaxed);
            }
        },
    );
    let processes_after = hop.as_ref().map(|h| h.processes().len());
    rec.window = Some(w);
    rec.units = scenario::gbit(bytes);
    rec.offered_rate = Some(load.flows as f64 * load.mbit / 1e3);
    teardown(clients, &[&backend], rec);
    rec.reload = Some(ReloadFigures {
        asked: if hop.is_some() { load.reloads } else { 0 },
        done,
        flows_cut: rec.errors,
        processes_after,
    });
    if let Some(e) = trouble {
        return Err(e);
    }
    scenario::check_alive(&mut hop)
}

/// A generation's flows, connected (failed connects count as cut flows, not as a failed run).
pub(crate) fn open_generation(
    target: std::net::SocketAddr,
    p: ingest::Params,
) -> Result<ingest::Client> {
    let c = ingest::Client::start(target, p)?;
    c.shared.recording.store(true, Relaxed);
    let limit = Duration::from_secs(5);
    let start = Instant::now();
    while start.elapsed() < limit {
        let settled = c.shared.connected.load(Relaxed) + c.shared.errors.load(Relaxed);
        if settled >= p.flows as u64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(c)
}

/// Ends every generation (flush, FIN, wait for the backend's EOFs), then: bytes lost, flows
/// cut (errors at either end), latencies of all generations.
pub(crate) fn teardown(clients: Vec<ingest::Client>, backends: &[&Backend], rec: &mut RunRecord) {
    let shared: Vec<_> = clients.iter().map(|c| c.shared.clone()).collect();
    let sent: u64 = clients.into_iter().map(ingest::Client::finish).sum();
    // Flows that never connected never reach the backend's EOF count.
    let connected: u64 = shared.iter().map(|s| s.connected.load(Relaxed)).sum();
    let sum = |get: fn(&Counters) -> &AtomicU64| -> u64 {
        backends
            .iter()
            .map(|b| get(&b.counters).load(Relaxed))
            .sum()
    };
    scenario::wait_for(Duration::from_secs(10), || {
        sum(|c| &c.finished) >= connected
    });
    let unfinished: u64 = shared.iter().map(|s| s.unfinished.load(Relaxed)).sum();
    let lost = sent as i64 - sum(|c| &c.received) as i64;
    scenario::record_loss(rec, unfinished, lost);
    rec.errors = shared.iter().map(|s| s.errors.load(Relaxed)).sum::<u64>() + sum(|c| &c.errors);
    let mut all = Vec::new();
    for s in &shared {
        if let Ok(v) = s.latencies_us.lock() {
            all.extend_from_slice(&v);
        }
    }
    rec.p50_us = crate::stats::percentile(&all, 50.0);
    rec.p99_us = crate::stats::percentile(&all, 99.0);
}

pub(crate) fn sleep_until(t: Instant) {
    std::thread::sleep(t.saturating_duration_since(Instant::now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_split_every_flow() {
        assert_eq!(generations(200, 4), vec![50, 50, 50, 50]);
        assert_eq!(generations(200, 6), vec![35, 33, 33, 33, 33, 33]);
        assert_eq!(generations(10, 0), vec![10]);
        assert_eq!(generations(200, 6).iter().sum::<usize>(), 200);
    }

    #[test]
    fn reloads_spread_inside_the_window() {
        let w = Duration::from_secs(4);
        assert_eq!(reload_at(w, 1, 3), Duration::from_secs(1));
        assert_eq!(reload_at(w, 3, 3), Duration::from_secs(3));
    }
}
