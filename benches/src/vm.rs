//! `https-bulk-vm`: HTTPS bulk throughput through the proxy with kTLS and with userspace
//! rustls, measured inside a qemu VM (this host's kernel has no kTLS).
//!
//! `cargo xtask bench` boots the VM (Debian's 6.12 cloud kernel under TCG, see
//! `xtask/src/vmbench.rs`), whose init runs the `https-vm` program (`src/bin/https-vm.rs`). That
//! program prints one [`LINE_PREFIX`] line of JSON per run ([`VmRun`]) on the serial console;
//! the xtask saves the console, and the runner turns the lines into a report section here.
//! The body is a position-dependent pattern ([`fill`], [`first_mismatch`]) checked by the
//! client, so a path that loses, duplicates or reorders bytes cannot look fast.
//!
//! Under TCG every instruction is emulated: absolute figures say nothing about real hardware,
//! only the ratio between the two carriers in the same VM means something.

use crate::stats::median_of;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The scenario's name (also how the xtask knows to boot the VM).
pub const SCENARIO: &str = "https-bulk-vm";
/// Start of a result line on the VM's console.
pub const LINE_PREFIX: &str = "VMBENCH ";
/// The note every table and JSON entry of this scenario carries.
pub const NOTE: &str = "VM under TCG: relative figures only";
/// The suites measured: the common one, and one the kernel implements without AES-NI.
pub const SUITES: [&str; 2] = ["TLS13_AES_128_GCM_SHA256", "TLS13_CHACHA20_POLY1305_SHA256"];

/// Who encrypts the records the proxy sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Carrier {
    /// kTLS: rustls handshake, then the kernel (`tune.ssl.ktls on`, the default).
    Ktls,
    /// `tune.ssl.ktls off`: rustls encrypts in the proxy process.
    Userspace,
}

impl Carrier {
    pub const BOTH: [Carrier; 2] = [Carrier::Ktls, Carrier::Userspace];

    pub fn label(self) -> &'static str {
        match self {
            Carrier::Ktls => "kTLS",
            Carrier::Userspace => "userspace rustls",
        }
    }

    /// The config word of `tune.ssl.ktls`.
    pub fn keyword(self) -> &'static str {
        match self {
            Carrier::Ktls => "on",
            Carrier::Userspace => "off",
        }
    }
}

/// One download through the proxy, as measured inside the VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmRun {
    pub kernel: String,
    pub suite: String,
    pub carrier: Carrier,
    pub rep: usize,
    /// Body bytes received and checked.
    pub bytes: u64,
    /// From the request (handshake included) to the last body byte.
    pub secs: f64,
    /// utime + stime of the proxy process over the download.
    pub proxy_cpu_s: f64,
    /// The client thread (TLS decryption and the pattern check).
    pub client_cpu_s: f64,
    /// Whole VM, non-idle, from `/proc/stat` (softirq and kernel threads included).
    pub machine_cpu_s: f64,
    /// Growth of `TlsTxSw` in `/proc/net/tls_stat`: sockets the kernel took for TX.
    pub ktls_tx_sockets: Option<u64>,
    /// Set when the run does not count: a bad byte, a short body, kTLS not (or wrongly) used.
    pub failure: Option<String>,
}

impl VmRun {
    pub fn ok(&self) -> bool {
        self.failure.is_none() && self.bytes > 0 && self.secs > 0.0
    }

    pub fn mb_s(&self) -> Option<f64> {
        self.ok().then(|| self.bytes as f64 / 1e6 / self.secs)
    }

    /// CPU-seconds per GB (10^9 bytes) delivered.
    pub fn per_gb(&self, cpu_s: f64) -> Option<f64> {
        self.ok().then(|| cpu_s / (self.bytes as f64 / 1e9))
    }

    pub fn line(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        format!("{LINE_PREFIX}{json}")
    }
}

/// The result lines in a console log (other lines, and lines that do not parse, are skipped).
pub fn parse_console(text: &str) -> Vec<VmRun> {
    text.lines()
        .filter_map(|l| l.find(LINE_PREFIX).map(|i| &l[i + LINE_PREFIX.len()..]))
        .filter_map(|json| serde_json::from_str(json.trim()).ok())
        .collect()
}

const PATTERN_K: u64 = 0x9E37_79B9_7F4A_7C15;

/// The body bytes at `offset..offset + buf.len()`: little-endian 64-bit words, word `i`
/// being `i * K`, so every 8-byte position carries its own number.
pub fn fill(offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(offset + i as u64);
    }
}

fn pattern_byte(at: u64) -> u8 {
    ((at / 8).wrapping_mul(PATTERN_K) >> (8 * (at % 8))) as u8
}

/// The first offset in `buf` (which starts at `offset` of the body) that is not the pattern.
pub fn first_mismatch(offset: u64, buf: &[u8]) -> Option<u64> {
    let mut i = 0usize;
    // Byte by byte up to a word boundary, then whole words (TCG is slow), then the tail.
    while i < buf.len() && !(offset + i as u64).is_multiple_of(8) {
        if buf[i] != pattern_byte(offset + i as u64) {
            return Some(offset + i as u64);
        }
        i += 1;
    }
    let words = buf[i..].chunks_exact(8);
    let tail_start = i + words.len() * 8;
    for (n, w) in words.enumerate() {
        let at = offset + (i + n * 8) as u64;
        let want = (at / 8).wrapping_mul(PATTERN_K).to_le_bytes();
        if w != want {
            let k = w.iter().zip(want).position(|(a, b)| *a != b).unwrap_or(0);
            return Some(at + k as u64);
        }
    }
    (tail_start..buf.len())
        .find(|&j| buf[j] != pattern_byte(offset + j as u64))
        .map(|j| offset + j as u64)
}

/// Medians of one (suite, carrier) pair.
#[derive(Debug, Clone, Serialize)]
pub struct VmSummary {
    pub suite: String,
    pub carrier: Carrier,
    pub runs_ok: usize,
    pub runs: usize,
    pub mb_s: Option<f64>,
    pub proxy_cpu_s_per_gb: Option<f64>,
    pub machine_cpu_s_per_gb: Option<f64>,
    pub client_cpu_s_per_gb: Option<f64>,
}

/// kTLS over userspace for one suite: above 1 is faster (throughput) or dearer (cost).
#[derive(Debug, Clone, Serialize)]
pub struct VmRatio {
    pub suite: String,
    pub mb_s: Option<f64>,
    pub proxy_cpu_per_gb: Option<f64>,
    pub machine_cpu_per_gb: Option<f64>,
}

/// Everything the report shows of the scenario.
#[derive(Debug, Clone, Serialize)]
pub struct VmReport {
    pub name: &'static str,
    pub title: String,
    pub note: &'static str,
    pub kernel: Option<String>,
    pub summaries: Vec<VmSummary>,
    pub ratios: Vec<VmRatio>,
    pub runs: Vec<VmRun>,
    /// Why there is no (or an incomplete) result.
    pub problem: Option<String>,
}

impl VmReport {
    /// From the console log the xtask saved (`None`: the runner was not given one).
    pub fn from_console(title: &str, console: Option<&str>) -> VmReport {
        let runs = console.map(parse_console).unwrap_or_default();
        let problem = match console {
            None => Some("runs only under `cargo xtask bench` (it boots the VM)".to_string()),
            Some(_) if runs.is_empty() => Some(format!(
                "the VM printed no result; console: {}",
                console.map(tail).unwrap_or_default()
            )),
            Some(_) => failures(&runs),
        };
        let summaries = summarize(&runs);
        let ratios = SUITES.iter().map(|s| ratio(s, &summaries)).collect();
        VmReport {
            name: SCENARIO,
            title: title.to_string(),
            note: NOTE,
            kernel: runs.first().map(|r| r.kernel.clone()),
            summaries,
            ratios,
            runs,
            problem,
        }
    }

    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(m, "### {}: {}\n", self.name, self.title);
        let kernel = self.kernel.as_deref().unwrap_or("?");
        let _ = writeln!(m, "**{NOTE}** (Linux {kernel} in qemu; proxy `nbthread 1`, mode http + ssl, body spliced into the kTLS socket; userspace = `tune.ssl.ktls off`).\n");
        m.push_str("| suite | carrier | MB/s | proxy CPU s/GB | VM CPU s/GB | client CPU s/GB | runs ok |\n");
        m.push_str("|---|---|---:|---:|---:|---:|---:|\n");
        for s in &self.summaries {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {}/{} |",
                s.suite,
                s.carrier.label(),
                num(s.mb_s, 1),
                num(s.proxy_cpu_s_per_gb, 2),
                num(s.machine_cpu_s_per_gb, 2),
                num(s.client_cpu_s_per_gb, 2),
                s.runs_ok,
                s.runs
            );
        }
        m.push_str("\n| suite | kTLS/userspace MB/s | kTLS/userspace proxy CPU per GB | kTLS/userspace VM CPU per GB |\n|---|---:|---:|---:|\n");
        for r in &self.ratios {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} |",
                r.suite,
                times(r.mb_s),
                times(r.proxy_cpu_per_gb),
                times(r.machine_cpu_per_gb)
            );
        }
        if let Some(p) = &self.problem {
            let _ = writeln!(m, "\nProblem: {}", p.replace('\n', " "));
        }
        m.push('\n');
        m
    }
}

fn summarize(runs: &[VmRun]) -> Vec<VmSummary> {
    let mut out = Vec::new();
    for suite in SUITES {
        for carrier in Carrier::BOTH {
            let rs: Vec<&VmRun> = runs
                .iter()
                .filter(|r| r.suite == suite && r.carrier == carrier)
                .collect();
            out.push(VmSummary {
                suite: suite.to_string(),
                carrier,
                runs_ok: rs.iter().filter(|r| r.ok()).count(),
                runs: rs.len(),
                mb_s: median_of(rs.iter().map(|r| r.mb_s())),
                proxy_cpu_s_per_gb: median_of(rs.iter().map(|r| r.per_gb(r.proxy_cpu_s))),
                machine_cpu_s_per_gb: median_of(rs.iter().map(|r| r.per_gb(r.machine_cpu_s))),
                client_cpu_s_per_gb: median_of(rs.iter().map(|r| r.per_gb(r.client_cpu_s))),
            });
        }
    }
    out
}

fn ratio(suite: &str, sums: &[VmSummary]) -> VmRatio {
    let get = |c: Carrier| sums.iter().find(|s| s.suite == suite && s.carrier == c);
    let (k, u) = (get(Carrier::Ktls), get(Carrier::Userspace));
    let r = |f: fn(&VmSummary) -> Option<f64>| {
        let a = k.and_then(f)?;
        let b = u.and_then(f).filter(|b| *b > 0.0)?;
        Some(a / b)
    };
    VmRatio {
        suite: suite.to_string(),
        mb_s: r(|s| s.mb_s),
        proxy_cpu_per_gb: r(|s| s.proxy_cpu_s_per_gb),
        machine_cpu_per_gb: r(|s| s.machine_cpu_s_per_gb),
    }
}

fn failures(runs: &[VmRun]) -> Option<String> {
    let f: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            let why = r.failure.as_ref()?;
            Some(format!(
                "{} {} rep {}: {why}",
                r.suite,
                r.carrier.label(),
                r.rep + 1
            ))
        })
        .collect();
    (!f.is_empty()).then(|| f.join("; "))
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().rev().take(8).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
}

fn num(x: Option<f64>, digits: usize) -> String {
    x.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn times(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{v:.2}×"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_checks_any_split() {
        let mut body = vec![0u8; 1000];
        fill(3, &mut body);
        for cut in [0usize, 1, 5, 8, 13, 999] {
            assert_eq!(first_mismatch(3, &body[..cut]), None);
            assert_eq!(first_mismatch(3 + cut as u64, &body[cut..]), None, "{cut}");
        }
        let mut bad = body.clone();
        bad[500] ^= 1;
        assert_eq!(first_mismatch(3, &bad), Some(503));
        // A dropped 8-byte word shifts everything after it: caught at the drop.
        let mut dropped = body[..200].to_vec();
        dropped.extend_from_slice(&body[208..]);
        assert_eq!(first_mismatch(3, &dropped).map(|o| o >= 203), Some(true));
    }

    fn run(suite: &str, carrier: Carrier, secs: f64, proxy: f64) -> VmRun {
        VmRun {
            kernel: "6.12.0".into(),
            suite: suite.into(),
            carrier,
            rep: 0,
            bytes: 1_000_000_000,
            secs,
            proxy_cpu_s: proxy,
            client_cpu_s: 1.0,
            machine_cpu_s: proxy + 1.0,
            ktls_tx_sockets: Some(u64::from(carrier == Carrier::Ktls)),
            failure: None,
        }
    }

    #[test]
    fn console_lines_become_ratios() {
        let a = SUITES[0];
        let console = format!(
            "boot noise\n  | {}\n{}\nVMBENCH {{broken\n",
            run(a, Carrier::Ktls, 10.0, 2.0).line(),
            run(a, Carrier::Userspace, 20.0, 8.0).line()
        );
        let r = VmReport::from_console("t", Some(&console));
        assert_eq!(r.runs.len(), 2);
        assert_eq!(r.problem, None);
        let ratio = &r.ratios[0];
        assert_eq!(ratio.mb_s, Some(2.0));
        assert_eq!(ratio.proxy_cpu_per_gb, Some(0.25));
        assert_eq!(r.ratios[1].mb_s, None, "no runs of the second suite");
        let md = r.markdown();
        assert!(
            md.contains(NOTE) && md.contains("| TLS13_AES_128_GCM_SHA256 | 2.00× | 0.25× |"),
            "{md}"
        );
    }

    #[test]
    fn failed_or_missing_runs_are_reported() {
        let mut bad = run(SUITES[0], Carrier::Ktls, 1.0, 1.0);
        bad.failure = Some("byte 7 differs".into());
        let r = VmReport::from_console("t", Some(&bad.line()));
        assert!(r.problem.as_deref().is_some_and(|p| p.contains("byte 7")));
        assert_eq!(r.summaries[0].mb_s, None);
        let none = VmReport::from_console("t", Some("kernel panic"));
        assert!(none
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("kernel panic")));
        assert!(VmReport::from_console("t", None).problem.is_some());
    }
}
