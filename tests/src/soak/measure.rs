//! What the soak reads of the proxy: resident memory and open descriptors from /proc, and
//! one metric from its Prometheus page.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub rss_kib: u64,
    pub fds: usize,
}

impl Sample {
    pub fn take(pid: u32) -> Sample {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0);
        Sample { rss_kib, fds }
    }
}

/// Waits (up to `limit`) for the descriptor count to come back to `idle` once the load has
/// stopped: flows end, pooled server connections time out. Returns the last sample.
pub fn drain(pid: u32, idle: usize, limit: Duration) -> Sample {
    let start = Instant::now();
    loop {
        let s = Sample::take(pid);
        if s.fds <= idle || start.elapsed() >= limit {
            return s;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Growth from `before` to `after`, in percent of `before`.
pub fn growth_pct(before: u64, after: u64) -> f64 {
    if before == 0 {
        return 0.0;
    }
    (after as f64 - before as f64) * 100.0 / before as f64
}

/// The value of an unlabelled metric on the stats listener's Prometheus page.
pub fn metric(stats: SocketAddr, name: &str) -> Option<f64> {
    let (status, body) = crate::nginx::http_get(stats, "/stats;metrics").ok()?;
    if status != 200 {
        return None;
    }
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// What the proxy's descriptors point at, counted by kind (`socket`, `pipe`, `anon_inode:…`):
/// said when descriptors were left open.
pub fn fd_kinds(pid: u32) -> Vec<(String, usize)> {
    let mut kinds = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let target = std::fs::read_link(entry.path())
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        // `socket:[123]` → `socket`; `anon_inode:[eventfd]` kept whole (which kind matters).
        let kind = match target.split_once(':') {
            Some(("anon_inode", what)) => format!("anon_inode:{what}"),
            Some((kind, _)) => kind.to_string(),
            None if target.starts_with('/') => "file".to_string(),
            None => target,
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    kinds.into_iter().collect()
}
