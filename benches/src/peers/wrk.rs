//! wrk as the HTTP/1.1 keep-alive load, and the parser of its report.

use crate::error::{BenchError, Result};
use crate::pin::Plan;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

pub const WRK: &str = "/usr/bin/wrk";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkResult {
    pub requests: u64,
    pub secs: f64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    /// Non-2xx/3xx answers plus socket errors.
    pub errors: u64,
}

/// Runs wrk (one thread, `connections` keep-alive connections) for `duration` on the load CPU.
pub fn run(
    plan: &Plan,
    target: SocketAddr,
    path: &str,
    connections: usize,
    duration: Duration,
) -> Result<WrkResult> {
    let out = plan
        .load_command(WRK)
        .arg("-t1")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--timeout")
        .arg("5s")
        .arg("--latency")
        .arg(format!("http://{target}{path}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| BenchError::io("run wrk", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(BenchError::Run(format!(
            "wrk failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    parse(&text)
}

/// Parses wrk's text report.
pub fn parse(text: &str) -> Result<WrkResult> {
    let mut r = WrkResult::default();
    let mut seen = false;
    for line in text.lines().map(str::trim) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [n, "requests", "in", secs, ..] => {
                r.requests = n.parse().map_err(|_| bad(line))?;
                r.secs = parse_secs(secs.trim_end_matches(',')).ok_or_else(|| bad(line))?;
                seen = true;
            }
            ["50%", v] => r.p50_us = parse_us(v),
            ["99%", v] => r.p99_us = parse_us(v),
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                r.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    if !seen {
        return Err(bad(text));
    }
    Ok(r)
}

fn bad(text: &str) -> BenchError {
    BenchError::Parse {
        what: "wrk output".into(),
        text: text.chars().take(200).collect(),
    }
}

/// `123.45us`, `1.20ms`, `2.00s`, `1.5m` → microseconds.
fn parse_us(v: &str) -> Option<u64> {
    let (num, mult) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60e6)
    } else {
        return None;
    };
    Some((num.parse::<f64>().ok()? * mult).round() as u64)
}

fn parse_secs(v: &str) -> Option<f64> {
    parse_us(v).map(|us| us as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "Running 2s test @ http://127.0.77.1:4000/obj
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   310.12us  100.00us   5.00ms   90.00%
    Req/Sec    50.00k     1.00k   52.00k    70.00%
  Latency Distribution
     50%  290.00us
     75%  320.00us
     90%  400.00us
     99%    1.20ms
  100000 requests in 2.00s, 120.00MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  50000.00
Transfer/sec:     60.00MB
";

    #[test]
    fn parses_report() {
        let r = parse(OUT).unwrap();
        assert_eq!(r.requests, 100_000);
        assert_eq!(r.secs, 2.0);
        assert_eq!(r.p50_us, Some(290));
        assert_eq!(r.p99_us, Some(1200));
        assert_eq!(r.errors, 6);
    }

    #[test]
    fn units_and_garbage() {
        assert_eq!(parse_us("1.50s"), Some(1_500_000));
        assert_eq!(parse_us("2m"), Some(120_000_000));
        assert_eq!(parse_us("12"), None);
        assert!(parse("wrk: connection refused").is_err());
    }
}
