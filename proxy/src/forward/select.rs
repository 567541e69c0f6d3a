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
    let p = probed();
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
    }
}

/// A flow that lives this long repays sockmap's set-up: measured (LIFECYCLE.md), a new
/// connection costs the machine about 160 µs more on sockmap than on copy, and a paced flow
/// saves 0.3–0.7 ms of CPU per second on sockmap (1–4 Mbit/s), so break-even lies near
/// 0.2–0.5 s; one second leaves a margin.
const LONG_FLOW: Duration = Duration::from_secs(1);

/// Share of long flows (at least `LONG_FLOW`) among a backend's recent flows, for `auto`: an
/// exponentially weighted average (weight 1/8 per ended flow), in 1/1024ths.
#[derive(Debug)]
pub struct FlowHistory {
    long_share: AtomicU32,
}

impl Default for FlowHistory {
    /// Before any flow has ended, flows are taken to be long: the product's load is RTMP, and
    /// the first flows of a start (publishers reconnecting) would otherwise all run on copy
    /// for their whole life while the first of them is still open.
    fn default() -> Self {
        FlowHistory {
            long_share: AtomicU32::new(1024),
        }
    }
}

impl FlowHistory {
    /// Counts an ended flow that lived `lifetime`.
    pub fn record(&self, lifetime: Duration) {
        let sample = if lifetime >= LONG_FLOW { 1024 } else { 0 };
        let _ = self
            .long_share
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |share| {
                Some(share - share / 8 + sample / 8)
            });
    }

    /// The engine for the next flow of a backend configured with `configured`: `auto` gives
    /// sockmap while most recent flows were long, copy otherwise.
    pub fn engine(&self, configured: Engine) -> Engine {
        match configured {
            Engine::Auto if self.long_share.load(Ordering::Relaxed) >= 512 => Engine::Sockmap,
            Engine::Auto => Engine::Copy,
            fixed => fixed,
        }
    }
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
            Ok(Engine::Auto) => "sockmap for long-lived flows, copy for short ones",
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
        assert_eq!(h.engine(Engine::Auto), Engine::Sockmap, "no history: long");
        for _ in 0..5 {
            h.record(Duration::from_millis(5));
        }
        assert_eq!(
            h.engine(Engine::Auto),
            Engine::Sockmap,
            "five short flows: still long"
        );
        h.record(Duration::from_millis(5));
        assert_eq!(h.engine(Engine::Auto), Engine::Copy, "mostly short now");
        h.record(Duration::from_secs(30));
        assert_eq!(h.engine(Engine::Auto), Engine::Sockmap, "mostly long again");
        assert_eq!(
            h.engine(Engine::Splice),
            Engine::Splice,
            "a forced engine stays"
        );
    }
}
