//! The ground floor: live figures the data path, the health checker and the log thread
//! write, and the renderers (`stats`) read. Plain atomics with `Relaxed` ordering: each
//! figure is independent (a reader may see bytes of a session whose count it does not see
//! yet), which is what HAProxy's counters promise too, and it keeps every update a single
//! uncontended instruction on the data path. This room imports nothing of ours.

mod clock;
mod flows;
mod health;
mod process;
mod rate;
mod traffic;

pub use clock::now_ms;
pub use flows::{counters_key, Flow, FlowBytes, FlowMeta, FlowTable, FlowView, FLOWS};
pub use health::{CheckStats, CheckStatus, Transitions};
pub use process::{Live, Process, ProcessInfo, PROCESS};
pub use rate::{Rate, SlidingAvg};
pub use traffic::{http_class, Counters, SessionGuard, Timings, HTTP_CLASSES};

use std::sync::OnceLock;

/// Everything the counters keep about one server; lives inside `upstream::Server`.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub traffic: Counters,
    pub transitions: Transitions,
    pub check: CheckStats,
}

/// Everything the counters keep about one backend; lives inside `upstream::ServerSet`.
#[derive(Debug, Default)]
pub struct BackendStats {
    pub traffic: Counters,
    /// Whether any server can take traffic, as the checker last saw it.
    pub transitions: Transitions,
    /// The forwarding engine the plan chose for this backend's flows.
    engine: OnceLock<&'static str>,
}

impl BackendStats {
    /// Set once when the plan picks the engine; later calls keep the first value.
    pub fn set_engine(&self, name: &'static str) {
        let _ = self.engine.set(name);
    }

    pub fn engine(&self) -> Option<&'static str> {
        self.engine.get().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_is_set_once() {
        let b = BackendStats::default();
        assert_eq!(b.engine(), None);
        b.set_engine("copy");
        b.set_engine("splice");
        assert_eq!(b.engine(), Some("copy"));
    }
}
