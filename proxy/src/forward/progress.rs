//! Live byte counts of a flow. An RTMP stream lives for hours: counting its bytes only when
//! it ends would leave the stats page and the exporter at zero for all that time, so the
//! engines report each chunk as it reaches its destination, into every row that shows it
//! (frontend, backend, server; the per-engine figures are summed from the backends).

use std::sync::atomic::Ordering;

use crate::counters::{Counters, FlowBytes};

/// Where a flow's bytes are added as they move. Plain references: the session that owns the
/// rows outlives the flow. `Progress::none()` counts nothing (the caller books the flow's
/// totals itself at its end).
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress<'a> {
    rows: [Option<&'a Counters>; 3],
    /// The flow's own line in the flow table (`show sess`).
    flow: Option<&'a FlowBytes>,
}

impl<'a> Progress<'a> {
    pub fn none() -> Progress<'static> {
        Progress {
            rows: [None; 3],
            flow: None,
        }
    }

    /// Up to three rows (frontend, backend, server) that see every byte of the flow.
    pub fn to(frontend: &'a Counters, backend: &'a Counters, server: &'a Counters) -> Self {
        Progress {
            rows: [Some(frontend), Some(backend), Some(server)],
            flow: None,
        }
    }

    /// The same, also counting into the flow's own table line.
    pub fn with_flow(self, flow: &'a FlowBytes) -> Self {
        Progress {
            flow: Some(flow),
            ..self
        }
    }

    /// `n` bytes delivered client → server (`is_up`) or server → client.
    pub fn moved(&self, is_up: bool, n: u64) {
        if is_up {
            self.up(n)
        } else {
            self.down(n)
        }
    }

    /// Client → server bytes delivered (HAProxy's `bin`).
    pub fn up(&self, n: u64) {
        for c in self.rows.iter().flatten() {
            c.bytes_in.fetch_add(n, Ordering::Relaxed);
        }
        if let Some(f) = self.flow {
            f.up.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Server → client bytes delivered (`bout`).
    pub fn down(&self, n: u64) {
        for c in self.rows.iter().flatten() {
            c.bytes_out.fetch_add(n, Ordering::Relaxed);
        }
        if let Some(f) = self.flow {
            f.down.fetch_add(n, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_sees_every_byte() {
        let (f, b, s) = (
            Counters::default(),
            Counters::default(),
            Counters::default(),
        );
        let p = Progress::to(&f, &b, &s);
        p.up(10);
        p.up(5);
        p.down(7);
        for c in [&f, &b, &s] {
            assert_eq!(c.bytes_in.load(Ordering::Relaxed), 15);
            assert_eq!(c.bytes_out.load(Ordering::Relaxed), 7);
        }
        Progress::none().up(1);
    }
}
