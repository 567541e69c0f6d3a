//! One run's raw result (kept whole in the JSON) and the per-unit figures derived from it.

use crate::measure::{Background, Window};
use serde::Serialize;

/// What a scenario counts; the cost figures are per one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Unit {
    /// Gigabits delivered to the receiving peer.
    Gbit,
    Connection,
    Request,
    Handshake,
    /// An idle flow held open (the idle scenario: memory, not a rate).
    Flow,
}

impl Unit {
    pub fn rate_label(self) -> &'static str {
        match self {
            Unit::Gbit => "Gbit/s",
            Unit::Connection => "conn/s",
            Unit::Request => "req/s",
            Unit::Handshake => "hs/s",
            Unit::Flow => "flows",
        }
    }

    /// Cost per unit is shown in CPU-seconds per Gbit, or CPU-µs per connection/request.
    pub fn cost_scale(self) -> (f64, &'static str) {
        match self {
            Unit::Gbit => (1.0, "CPU-s/Gbit"),
            Unit::Connection => (1e6, "CPU-µs/conn"),
            Unit::Request => (1e6, "CPU-µs/req"),
            Unit::Handshake => (1e6, "CPU-µs/hs"),
            Unit::Flow => (1e6, "CPU-µs/flow"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub scenario: String,
    pub variant: String,
    pub rep: usize,
    pub background: Background,
    pub window: Option<Window>,
    /// Units delivered inside the window.
    pub units: f64,
    /// What the load offered (ingest only), in units per second.
    pub offered_rate: Option<f64>,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    /// Failed flows, connections or requests.
    pub errors: u64,
    /// Bytes sent but never received (ingest, upload), after teardown.
    pub lost_bytes: Option<i64>,
    /// The hop's system calls per unit in the window (`--profile`, first repetition).
    pub syscalls_per_unit: Option<f64>,
    /// Why the run produced no figures.
    pub failure: Option<String>,
    /// Something to know about a run that still produced figures.
    pub note: Option<String>,
    /// The idle scenario's memory figures.
    pub idle: Option<IdleMemory>,
    /// The reload scenario's figures.
    pub reload: Option<ReloadFigures>,
    /// The dns-change scenario's figures.
    pub dns: Option<DnsFigures>,
    /// The srt-ingest scenario's datagram figures.
    pub srt: Option<SrtFigures>,
}

/// What became of the datagrams of one srt-ingest run (counted over the whole run, warm-up
/// and drain included).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SrtFigures {
    /// Datagrams the clients' sockets took.
    pub sent: u64,
    /// Datagrams the backend received.
    pub received: u64,
    /// Sent and never received (negative would mean duplicates).
    pub lost: i64,
    /// Received after a later datagram of the same flow.
    pub reordered: u64,
    /// Sends the clients' sockets refused (EAGAIN): not sent, so not in `sent`.
    pub send_blocked: u64,
    /// ACK-sized replies the backend sent, and those the clients received.
    pub replies_sent: u64,
    pub replies_received: u64,
}

/// What changing the DNS records of the hop's backend under load did (the dns-change
/// scenario).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DnsFigures {
    /// Record edits made (an address added, or one removed).
    pub changes: usize,
    pub adds: usize,
    /// Adds whose address got at least one flow of the generation opened after the add.
    pub adds_with_flows: usize,
    /// Flows of generations opened after a removal that still reached the removed address.
    pub flows_to_removed: u64,
    /// Flows open on an address when it was removed from the records (summed over removals):
    /// they must go on to the end.
    pub held_across_removal: u64,
    /// Flows that ended in an error: reset, closed while sending, or a refused connect.
    pub flows_cut: u64,
    /// Flows each backend address received, in address order.
    pub per_address: Vec<u64>,
    /// Servers the hop logged putting in maintenance (both hops' lines say `maintenance`):
    /// the removals it acted on. None for direct (no hop).
    pub hop_maintenance_lines: Option<usize>,
}

/// What reloading the hop under load did (the reload scenario).
#[derive(Debug, Clone, Serialize)]
pub struct ReloadFigures {
    pub asked: usize,
    /// Reloads the hop showed it made (a new HAProxy worker; this proxy's `reload done`).
    pub done: usize,
    /// Flows that ended in an error: reset, closed while sending, or a refused connect.
    pub flows_cut: u64,
    /// Hop processes alive at the end of the window: after the last reload, flows still open.
    /// None for direct (no hop).
    pub processes_after: Option<usize>,
}

/// What the hop held for idle flows: its RSS after a warm-up and with the flows open.
#[derive(Debug, Clone, Serialize)]
pub struct IdleMemory {
    pub flows: usize,
    /// How long opening the flows took.
    pub setup_s: f64,
    /// None for direct (no hop).
    pub rss_base_kib: Option<u64>,
    pub rss_held_kib: Option<u64>,
}

impl IdleMemory {
    /// RSS growth per 1000 held flows, in KiB (negative if the hop gave memory back).
    pub fn growth_per_1000_kib(&self) -> Option<f64> {
        let (base, held) = (self.rss_base_kib?, self.rss_held_kib?);
        if self.flows == 0 {
            return None;
        }
        Some((held as f64 - base as f64) * 1000.0 / self.flows as f64)
    }
}

impl RunRecord {
    pub fn new(scenario: &str, variant: &str, rep: usize, background: Background) -> Self {
        RunRecord {
            scenario: scenario.to_string(),
            variant: variant.to_string(),
            rep,
            background,
            window: None,
            units: 0.0,
            offered_rate: None,
            p50_us: None,
            p99_us: None,
            errors: 0,
            lost_bytes: None,
            syscalls_per_unit: None,
            failure: None,
            note: None,
            idle: None,
            reload: None,
            dns: None,
            srt: None,
        }
    }

    fn usable(&self) -> Option<&Window> {
        let w = self.window.as_ref()?;
        (self.failure.is_none() && self.units > 0.0 && w.secs > 0.0).then_some(w)
    }

    pub fn rate(&self) -> Option<f64> {
        let w = self.usable()?;
        Some(self.units / w.secs)
    }

    /// Whole-machine CPU-seconds per unit.
    pub fn machine_per_unit(&self) -> Option<f64> {
        let w = self.usable()?;
        Some(w.machine_cpu_s / self.units)
    }

    /// Load + hop + kernel-thread CPU-seconds per unit (see `measure`).
    pub fn attributed_per_unit(&self) -> Option<f64> {
        let w = self.usable()?;
        Some(w.attributed_cpu_s() / self.units)
    }

    /// The hop process's own CPU-seconds per unit.
    pub fn hop_per_unit(&self) -> Option<f64> {
        let w = self.usable()?;
        Some(w.hop_cpu_s? / self.units)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(secs: f64, machine: f64, hop: Option<f64>) -> Window {
        Window {
            secs,
            machine_cpu_s: machine,
            per_cpu_busy: vec![],
            softirq_s: 0.0,
            kthreads_s: 0.0,
            load_cpu_s: 0.0,
            hop_cpu_s: hop,
            hop_rss_kib: None,
            tcp_mem_kib: None,
            slab_delta_kib: None,
        }
    }

    fn bg() -> Background {
        Background {
            loadavg_1m: None,
            busy_pct: 0.0,
        }
    }

    #[test]
    fn per_unit_figures() {
        let mut r = RunRecord::new("s", "v", 0, bg());
        assert_eq!(r.rate(), None);
        r.window = Some(window(2.0, 1.0, Some(0.25)));
        r.units = 4.0;
        assert_eq!(r.rate(), Some(2.0));
        assert_eq!(r.machine_per_unit(), Some(0.25));
        assert_eq!(r.hop_per_unit(), Some(0.0625));
        r.failure = Some("boom".into());
        assert_eq!(r.machine_per_unit(), None);
    }

    #[test]
    fn direct_run_has_no_hop_figure() {
        let mut r = RunRecord::new("s", "direct", 0, bg());
        r.window = Some(window(1.0, 1.0, None));
        r.units = 1.0;
        assert_eq!(r.hop_per_unit(), None);
        assert_eq!(Unit::Request.cost_scale().0, 1e6);
    }

    #[test]
    fn idle_growth_per_thousand_flows() {
        let m = IdleMemory {
            flows: 8000,
            setup_s: 1.0,
            rss_base_kib: Some(10_000),
            rss_held_kib: Some(42_000),
        };
        assert_eq!(m.growth_per_1000_kib(), Some(4000.0));
        let direct = IdleMemory {
            rss_base_kib: None,
            rss_held_kib: None,
            ..m
        };
        assert_eq!(direct.growth_per_1000_kib(), None);
    }
}
