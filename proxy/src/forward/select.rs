//! Which engine a backend's flows get: the kernel is probed once per process, `auto` follows
//! the measurements written in LIFECYCLE.md, and a forced engine the kernel lacks is an error.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::config::EngineChoice;

use super::Engine;

/// What this kernel offers, probed once.
#[derive(Debug, Clone)]
pub struct Probed {
    /// `Err(why)` when splice(2) does not work here.
    pub splice: Result<(), String>,
    /// `Err(why)` when the sockmap program cannot be loaded and attached here.
    pub sockmap: Result<(), String>,
}

static PROBED: OnceLock<Probed> = OnceLock::new();

/// The probe results, running the probes on first use.
pub fn probed() -> &'static Probed {
    PROBED.get_or_init(|| Probed {
        splice: super::splice::probe(),
        sockmap: super::sockmap::probe(),
    })
}

/// The engine for `forward-engine <choice>`, or why it cannot serve.
pub fn choose(choice: EngineChoice) -> Result<Engine, String> {
    choose_from(probed(), choice)
}

/// As [`choose`], from probe results the caller holds (the plan compiles without probing).
pub fn choose_from(p: &Probed, choice: EngineChoice) -> Result<Engine, String> {
    match choice {
        // `auto` follows the hop-cost measurements in LIFECYCLE.md: sockmap for long-lived
        // flows, copy for short ones (decided per flow, `FlowHistory`), copy alone where
        // sockmap does not load.
        EngineChoice::Auto => Ok(if p.sockmap.is_ok() {
            Engine::Auto
        } else {
            Engine::Copy
        }),
        EngineChoice::Copy => Ok(Engine::Copy),
        EngineChoice::Splice => {
            p.splice.clone().map(|()| Engine::Splice).map_err(|why| {
                format!("forward-engine splice: not available on this kernel ({why})")
            })
        }
        EngineChoice::Sockmap => p
            .sockmap
            .clone()
            .map(|()| Engine::Sockmap)
            .map_err(|why| format!("forward-engine sockmap: not available here ({why})")),
        // The plan gives nat backends to the `nat` room before asking here: no proxied
        // flow ever runs on it.
        EngineChoice::Nat => Err("forward-engine nat moves no proxied flow".to_string()),
    }
}

/// A flow that lives this long repays sockmap's set-up: measured (LIFECYCLE.md), a new
/// connection costs the machine about 160 µs more on sockmap than on copy, and a paced flow
/// saves 0.3–0.7 ms of CPU per second on sockmap (1–4 Mbit/s), so break-even lies near
/// 0.2–0.5 s; one second leaves a margin.
const LONG_FLOW: Duration = Duration::from_secs(1);

/// A long flow that moved at least this many bytes per second of its life (both directions
/// together) was bulk: RTMP publishers and players run at 0.5–10 Mbit/s, one bulk TCP flow on
/// loopback at 5–10 Gbit/s. 100 Mbit/s.
const BULK_RATE: f64 = 100e6 / 8.0;

/// Shares of long flows (at least `LONG_FLOW`) and of bulk ones (long and at least
/// `BULK_RATE`) among a backend's recent flows, for `auto`: exponentially weighted averages
/// (weight 1/8 per ended flow), in 1/1024ths.
#[derive(Debug)]
pub struct FlowHistory {
    long_share: AtomicU32,
    bulk_share: AtomicU32,
}

impl Default for FlowHistory {
    /// Before any flow has ended, flows are taken to be long: the product's load is RTMP, and
    /// the first flows of a start (publishers reconnecting) would otherwise all run on copy
    /// for their whole life while the first of them is still open.
    fn default() -> Self {
        FlowHistory {
            long_share: AtomicU32::new(1024),
            bulk_share: AtomicU32::new(0),
        }
    }
}

impl FlowHistory {
    /// Counts an ended flow that lived `lifetime` and moved `bytes` (both directions).
    pub fn record(&self, lifetime: Duration, bytes: u64) {
        let long = lifetime >= LONG_FLOW;
        let bulk = long && bytes as f64 / lifetime.as_secs_f64() >= BULK_RATE;
        add_sample(&self.long_share, long);
        add_sample(&self.bulk_share, bulk);
    }

    /// The engine for the next flow of a backend configured with `configured`. `auto`: splice
    /// while most recent flows were bulk (on one bulk flow splice(2) cost 0.66–0.97× HAProxy,
    /// sockmap 0.99–1.10×), sockmap while most were long (paced: 0.42–0.90× against copy's
    /// 1.0–1.5×), copy otherwise (short: sockmap's set-up doubles their cost).
    pub fn engine(&self, configured: Engine) -> Engine {
        if configured != Engine::Auto {
            return configured;
        }
        let share = |s: &AtomicU32| s.load(Ordering::Relaxed) >= 512;
        if share(&self.bulk_share) && probed().splice.is_ok() {
            Engine::Splice
        } else if share(&self.long_share) {
            Engine::Sockmap
        } else {
            Engine::Copy
        }
    }
}

/// Moves an exponentially weighted share (1/1024ths) by one sample, weight 1/8.
fn add_sample(share: &AtomicU32, yes: bool) {
    let sample = if yes { 1024 } else { 0 };
    let _ = share.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
        Some(s - s / 8 + sample / 8)
    });
}

/// For the start-up log: what each engine can do here and what `auto` picks.
pub fn summary() -> String {
    let p = probed();
    let state = |r: &Result<(), String>| match r {
        Ok(()) => "yes".to_string(),
        Err(why) => format!("no ({why})"),
    };
    format!(
        "forward engines: copy yes, splice {}, sockmap {}; auto -> {}",
        state(&p.splice),
        state(&p.sockmap),
        match choose(EngineChoice::Auto) {
            Ok(Engine::Auto) =>
                "per flow: sockmap for long-lived flows, splice for bulk ones, copy for short ones",
            Ok(e) => e.name(),
            Err(_) => "copy",
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_share_of_long_flows() {
        let h = FlowHistory::default();
        let (short, paced) = (Duration::from_millis(5), Duration::from_secs(30));
        assert_eq!(h.engine(Engine::Auto), Engine::Sockmap, "no history: long");
        for _ in 0..5 {
            h.record(short, 128);
        }
        assert_eq!(
            h.engine(Engine::Auto),
            Engine::Sockmap,
            "five short flows: still long"
        );
        h.record(short, 128);
        assert_eq!(h.engine(Engine::Auto), Engine::Copy, "mostly short now");
        // 30 s at 4 Mbit/s: long, not bulk.
        h.record(paced, 15_000_000);
        assert_eq!(
            h.engine(Engine::Auto),
            Engine::Sockmap,
            "one long flow tips it back"
        );
        assert_eq!(
            h.engine(Engine::Splice),
            Engine::Splice,
            "a forced engine stays"
        );
    }

    #[test]
    fn auto_gives_bulk_backends_splice() {
        let h = FlowHistory::default();
        // 10 s at 8 Gbit/s, six times.
        for _ in 0..6 {
            h.record(Duration::from_secs(10), 10_000_000_000);
        }
        let want = if probed().splice.is_ok() {
            Engine::Splice
        } else {
            Engine::Sockmap
        };
        assert_eq!(h.engine(Engine::Auto), want);
        // A bulk burst shorter than LONG_FLOW is a short flow, not a bulk one.
        let h = FlowHistory::default();
        for _ in 0..6 {
            h.record(Duration::from_millis(100), 100_000_000);
        }
        assert_eq!(h.engine(Engine::Auto), Engine::Copy);
    }
}
