//! h2load (nghttp2) as the HTTP/2 load: a few TLS connections, many concurrent streams on
//! each, for a fixed duration; and the parser of its report.

use crate::error::{BenchError, Result};
use crate::pin::Plan;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

pub const H2LOAD: &str = "/usr/bin/h2load";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct H2loadResult {
    /// Requests answered 2xx/3xx within the run.
    pub requests: u64,
    /// Failed and errored requests, and answers outside 2xx/3xx.
    pub errors: u64,
}

/// What h2load offers: `connections` TLS connections with `streams` concurrent streams each,
/// or (`h1`) HTTP/1.1 with one request at a time per connection.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub connections: usize,
    pub streams: usize,
    pub h1: bool,
}

/// Runs h2load (one thread) against `https://target/path` for `duration` on the load CPU.
/// h2load checks no certificate, so the bench's self-signed one needs no trust store.
pub fn run(
    plan: &Plan,
    target: SocketAddr,
    path: &str,
    load: Load,
    duration: Duration,
) -> Result<H2loadResult> {
    let mut cmd = plan.load_command(H2LOAD);
    cmd.arg("-t1")
        .arg(format!("-c{}", load.connections))
        .arg(format!("-m{}", load.streams))
        .arg(format!("-D{}", duration.as_secs().max(1)));
    if load.h1 {
        cmd.arg("--h1");
    }
    let out = cmd
        .arg(format!("https://{target}{path}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| BenchError::io("run h2load", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(BenchError::Run(format!(
            "h2load failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    parse(&text)
}

/// Parses h2load's report: its `requests:` and `status codes:` lines.
pub fn parse(text: &str) -> Result<H2loadResult> {
    let mut r = H2loadResult::default();
    let mut seen = (false, false);
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("requests:") {
            let n = |word: &str| count_before(rest, word);
            r.errors += n("failed") + n("errored") + n("timeout");
            seen.0 = true;
        } else if let Some(rest) = line.strip_prefix("status codes:") {
            let n = |word: &str| count_before(rest, word);
            r.requests = n("2xx") + n("3xx");
            r.errors += n("4xx") + n("5xx");
            seen.1 = true;
        }
    }
    if seen != (true, true) {
        return Err(BenchError::Parse {
            what: "h2load output".into(),
            text: text.chars().take(300).collect(),
        });
    }
    Ok(r)
}

/// In `48000 total, 12 failed`, the number before `word` (0 when absent).
fn count_before(list: &str, word: &str) -> u64 {
    list.split(',')
        .map(str::trim)
        .find_map(|item| {
            let (n, w) = item.split_once(' ')?;
            (w.trim() == word).then(|| n.parse().ok()).flatten()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "starting benchmark...
spawning thread #0: 4 total client(s). Timing-based test with 0s of warm-up time and 2s of main duration for measurements.
Warm-up started for thread #0.
Main benchmark duration is started for thread #0.
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 2.00s, 20513.00 req/s, 21.79MB/s
requests: 41026 total, 41090 started, 41026 done, 41020 succeeded, 6 failed, 0 errored, 0 timeout
status codes: 41020 2xx, 0 3xx, 3 4xx, 3 5xx
traffic: 43.57MB (45690734) total, 403.06KB (412732) headers (space savings 95.01%), 40.06MB (42010624) data
";

    #[test]
    fn parses_report() {
        let r = parse(OUT).unwrap();
        assert_eq!(r.requests, 41020);
        assert_eq!(r.errors, 12);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse("h2load: connection refused").is_err());
        assert_eq!(count_before(" 5 total, 2 failed", "failed"), 2);
        assert_eq!(count_before(" 5 total", "failed"), 0);
    }
}
