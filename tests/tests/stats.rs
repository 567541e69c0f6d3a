//! The stats page, its CSV and JSON, and the Prometheus exporter, on the seeds' `listen stats`
//! section in front of a `mode tcp` backend of two harness `TcpServer`s: authentication (401
//! and realm), both servers and their states, hidden version, a killed backend going DOWN
//! within inter × fall and back UP after rise, counters moving by exactly what a test sends,
//! `promtool check metrics`, and a headless Chromium rendering of the page.

use e2e::tcp::{End, Reply, TcpClient, TcpServer};
use e2e::util::require_tool;
use e2e::{free_addr, free_port, loopback, wait_until, Proxy};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const USER: &str = "Username";
const PASSWORD: &str = "Password";
const REALM: &str = "Haproxy Statistics";
/// Health-check settings of the test backend: a dead server is DOWN after `INTER * FALL`.
const INTER: Duration = Duration::from_millis(300);
const FALL: u32 = 2;
const RISE: u32 = 2;
/// Scheduling slack on top of inter × fall on a busy 2-core machine.
const SLACK: Duration = Duration::from_secs(2);
/// Each harness client sends a 40-byte request header before its data.
const CLIENT_HEADER: u64 = 40;

struct Setup {
    proxy: Proxy,
    stats: SocketAddr,
    servers: Vec<Option<TcpServer>>,
    addrs: Vec<SocketAddr>,
}

fn setup() -> Setup {
    let addrs = [free_addr(loopback(2)), free_addr(loopback(3))];
    let servers: Vec<Option<TcpServer>> =
        addrs.iter().map(|a| Some(TcpServer::start(*a))).collect();
    let stats_port = free_port(Ipv4Addr::LOCALHOST);
    let rtmp_port = free_port(Ipv4Addr::LOCALHOST);
    let ms = INTER.as_millis();
    let cfg = format!(
        "global
    maxconn 2000
    nbthread 2

defaults
    timeout connect 2s
    timeout client 30s
    timeout server 30s

listen stats
    bind 127.0.0.1:{stats_port}
    mode http
    stats enable
    stats hide-version
    stats realm Haproxy\\ Statistics
    stats uri /haproxy_stats
    stats auth {USER}:{PASSWORD}
    http-request use-service prometheus-exporter if {{ path /metrics }}

frontend rtmp_lb
    bind 127.0.0.1:{rtmp_port}
    mode tcp
    default_backend backend_rtmp

backend backend_rtmp
    mode tcp
    server ams1 {} check inter {ms}ms fall {FALL} rise {RISE}
    server ams2 {} check inter {ms}ms fall {FALL} rise {RISE}
",
        addrs[0], addrs[1]
    );
    let proxy = Proxy::start(&cfg);
    Setup {
        stats: SocketAddr::from((Ipv4Addr::LOCALHOST, stats_port)),
        proxy,
        servers,
        addrs: addrs.to_vec(),
    }
}

impl Setup {
    fn rtmp(&self) -> SocketAddr {
        self.proxy.binds()[1]
    }

    fn get(&self, path: &str) -> Response {
        http_get(self.stats, path, Some((USER, PASSWORD)))
    }

    fn csv(&self) -> Csv {
        let r = self.get("/haproxy_stats;csv");
        assert_eq!(r.status, 200, "{}", r.body);
        Csv::parse(&r.body)
    }
}

// ---------------------------------------------------------------------------------------------
// A small HTTP/1.1 client: one request per connection, read to the end.

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn http_get(addr: SocketAddr, path: &str, auth: Option<(&str, &str)>) -> Response {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connecting to the stats page at {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some((u, p)) = auth {
        req += &format!("Authorization: Basic {}\r\n", base64(&format!("{u}:{p}")));
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).expect("sending the request");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Response {
        status,
        headers,
        body: unchunk(&text, body),
    }
}

/// HAProxy's exporter answers chunked; the stats page with a length. Either way, the body.
fn unchunk(full: &str, body: &str) -> String {
    if !full
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

fn base64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, &x| acc << 8 | u32::from(x)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// `;csv` rows by (proxy, service) and columns by name.

struct Csv {
    rows: HashMap<(String, String), HashMap<String, String>>,
}

impl Csv {
    fn parse(text: &str) -> Csv {
        let mut lines = text.lines();
        let header = lines.next().expect("a header line");
        let names: Vec<&str> = header
            .trim_start_matches("# ")
            .trim_end_matches(',')
            .split(',')
            .collect();
        let mut rows = HashMap::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let row: HashMap<String, String> = names
                .iter()
                .zip(line.split(','))
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            let key = (row["pxname"].clone(), row["svname"].clone());
            rows.insert(key, row);
        }
        Csv { rows }
    }

    fn get(&self, proxy: &str, service: &str, column: &str) -> String {
        self.rows
            .get(&(proxy.to_string(), service.to_string()))
            .and_then(|r| r.get(column))
            .cloned()
            .unwrap_or_else(|| panic!("no {column} for {proxy}/{service}"))
    }

    fn num(&self, proxy: &str, service: &str, column: &str) -> u64 {
        let v = self.get(proxy, service, column);
        v.parse()
            .unwrap_or_else(|_| panic!("{proxy}/{service} {column} = {v:?}"))
    }
}

/// The value of one series in a Prometheus text, e.g. `haproxy_server_status{...}`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------------------------

#[test]
fn the_page_asks_for_credentials_and_shows_both_servers() {
    let s = setup();
    for auth in [None, Some((USER, "wrong")), Some(("nobody", PASSWORD))] {
        let r = http_get(s.stats, "/haproxy_stats", auth);
        assert_eq!(r.status, 401, "credentials {auth:?}");
        let challenge = r.header("WWW-Authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Basic "), "{challenge}");
        assert!(
            challenge.contains(&format!("realm=\"{REALM}\"")),
            "{challenge}"
        );
        assert!(!r.body.contains("ams1"), "no figures before authentication");
    }
    let r = s.get("/haproxy_stats");
    assert_eq!(r.status, 200);
    assert!(r
        .header("Content-Type")
        .unwrap_or_default()
        .starts_with("text/html"));
    for name in ["rtmp_lb", "backend_rtmp", "ams1", "ams2"] {
        assert!(r.body.contains(name), "{name} is on the page");
    }
    assert!(r.body.contains("UP"), "server states are shown");
    // stats hide-version: neither our version line nor HAProxy's.
    assert!(!r
        .body
        .contains(&format!("version = {}", env!("CARGO_PKG_VERSION"))));
    assert!(!r.body.contains("HAProxy version"));
    // HAProxy shows `UP 1/2` until the first checks pass; ours starts at `UP`.
    wait_until(
        "both servers UP in the CSV",
        Duration::from_secs(20),
        || {
            let csv = s.csv();
            ["ams1", "ams2"]
                .iter()
                .all(|n| csv.get("backend_rtmp", n, "status") == "UP")
                .then_some(())
        },
    );
}

#[test]
fn a_killed_backend_is_down_within_inter_times_fall_and_up_after_rise() {
    let mut s = setup();
    wait_until("both servers UP", Duration::from_secs(20), || {
        let csv = s.csv();
        (csv.get("backend_rtmp", "ams1", "status") == "UP"
            && csv.get("backend_rtmp", "ams2", "check_status") == "L4OK")
            .then_some(())
    });

    let killed = Instant::now();
    drop(s.servers[1].take());
    let limit = INTER * FALL + SLACK;
    wait_until("ams2 DOWN in the CSV", limit, || {
        (s.csv().get("backend_rtmp", "ams2", "status") == "DOWN").then_some(())
    });
    let down_after = killed.elapsed();
    eprintln!("ams2 DOWN {down_after:?} after the kill (inter {INTER:?} x fall {FALL})");
    let page = s.get("/haproxy_stats").body;
    assert!(page.contains("DOWN"), "the page shows the DOWN server");
    let metrics = s.get("/metrics").body;
    let ams2 = [("proxy", "backend_rtmp"), ("server", "ams2")];
    let state = |m: &str, st: &str| {
        metric(
            m,
            "haproxy_server_status",
            &[ams2[0], ams2[1], ("state", st)],
        )
    };
    assert_eq!(state(&metrics, "DOWN"), Some(1.0), "/metrics shows it DOWN");
    assert_eq!(state(&metrics, "UP"), Some(0.0));
    assert_eq!(s.csv().get("backend_rtmp", "ams1", "status"), "UP");

    let revived = Instant::now();
    s.servers[1] = Some(TcpServer::start(s.addrs[1]));
    wait_until("ams2 UP again", INTER * RISE + SLACK, || {
        (s.csv().get("backend_rtmp", "ams2", "status") == "UP").then_some(())
    });
    eprintln!(
        "ams2 UP {:?} after the restart (rise {RISE})",
        revived.elapsed()
    );
    let metrics = s.get("/metrics").body;
    assert_eq!(state(&metrics, "UP"), Some(1.0));
    assert!(s.csv().num("backend_rtmp", "ams2", "chkdown") >= 1);
}

#[test]
fn counters_move_by_exactly_what_was_sent() {
    let s = setup();
    wait_until("both servers checked", Duration::from_secs(20), || {
        let csv = s.csv();
        ["ams1", "ams2"]
            .iter()
            .all(|n| csv.get("backend_rtmp", n, "check_status") == "L4OK")
            .then_some(())
    });
    let (sessions, up, down) = (4u64, 30_000u64, 50_000u64);
    for _ in 0..sessions {
        // Round robin picks the server; the client alone checks what it got back.
        let c = TcpClient::connect(s.rtmp(), Reply::Concurrent { bytes: down });
        c.send(up)
            .unwrap_or_else(|(e, n)| panic!("send failed after {n} bytes: {e}"));
        c.shutdown_write();
        let got = c.read_all();
        assert_eq!(got.bytes, down, "bytes back through the proxy");
        assert_eq!(got.end, End::Eof);
    }
    let bytes_in = sessions * (up + CLIENT_HEADER);
    let bytes_out = sessions * down;
    let csv = wait_until("all sessions counted", Duration::from_secs(20), || {
        let csv = s.csv();
        (csv.num("rtmp_lb", "FRONTEND", "stot") == sessions
            && csv.num("rtmp_lb", "FRONTEND", "scur") == 0
            && csv.num("backend_rtmp", "BACKEND", "bout") == bytes_out)
            .then_some(csv)
    });
    assert_eq!(csv.num("rtmp_lb", "FRONTEND", "bin"), bytes_in);
    assert_eq!(csv.num("rtmp_lb", "FRONTEND", "bout"), bytes_out);
    assert_eq!(csv.num("backend_rtmp", "BACKEND", "stot"), sessions);
    assert_eq!(csv.num("backend_rtmp", "BACKEND", "bin"), bytes_in);
    let per_server: u64 = ["ams1", "ams2"]
        .iter()
        .map(|n| csv.num("backend_rtmp", n, "bout"))
        .sum();
    assert_eq!(
        per_server, bytes_out,
        "servers' bytes add up to the backend's"
    );
    let metrics = s.get("/metrics").body;
    let fe = [("proxy", "rtmp_lb")];
    assert_eq!(
        metric(&metrics, "haproxy_frontend_bytes_in_total", &fe),
        Some(bytes_in as f64)
    );
    assert_eq!(
        metric(&metrics, "haproxy_frontend_sessions_total", &fe),
        Some(sessions as f64)
    );
    let json = s.get("/haproxy_stats;json");
    assert_eq!(json.status, 200);
    assert!(
        json.body.trim_start().starts_with('['),
        "a JSON array of rows"
    );
    assert!(json.body.contains("\"objType\""));
}

#[test]
fn promtool_accepts_the_metrics() {
    let promtool = require_tool("promtool");
    let s = setup();
    let metrics = s.get("/metrics");
    assert_eq!(metrics.status, 200);
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.body.as_bytes())
        .expect("feeding promtool");
    let out = child.wait_with_output().expect("promtool finishes");
    if e2e::proxy::is_reference_haproxy() {
        // HAProxy 2.6's own exporter fails one lint (a counter without `_total`); only a
        // format error counts against it.
        let report = String::from_utf8_lossy(&out.stderr);
        assert!(!report.contains("error while linting"), "{report}");
        return;
    }
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn chromium_renders_the_page() {
    let chromium = require_tool("chromium");
    let s = setup();
    let url = format!("http://{USER}:{PASSWORD}@{}/haproxy_stats", s.stats);
    let out_dir = artifacts();
    let png = out_dir.join("stats-page.png");
    let _ = std::fs::remove_file(&png);
    let profile = out_dir.join("chromium-profile");
    let run = |extra: &[&str]| {
        let out = Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(["--window-size=1600,1000", "--virtual-time-budget=3000"])
            .args(extra)
            .arg(&url)
            .stdin(Stdio::null())
            .output()
            .expect("running chromium");
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = run(&["--dump-dom"]);
    for text in ["rtmp_lb", "backend_rtmp", "ams1", "ams2", "UP"] {
        assert!(dom.contains(text), "{text} in the rendered page:\n{dom}");
    }
    run(&[&format!("--screenshot={}", png.display())]);
    let meta = std::fs::metadata(&png).expect("the screenshot exists");
    assert!(meta.len() > 1000, "a real PNG, {} bytes", meta.len());
    eprintln!("screenshot kept at {}", png.display());
}

/// `<workspace>/.test-out/artifacts/stats/`: kept after the test (not committed).
fn artifacts() -> PathBuf {
    let dir = e2e::util::workspace_root()
        .join(".test-out")
        .join("artifacts")
        .join("stats");
    std::fs::create_dir_all(&dir).expect("artifact folder");
    dir
}
