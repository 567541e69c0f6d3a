//! The stats page, its CSV and JSON, and the Prometheus exporter, on the seeds' `listen stats`
//! section in front of a `mode tcp` backend of two harness `TcpServer`s: authentication (401
//! and realm), both servers and their states, hidden version, a killed backend going DOWN
//! within inter × fall and back UP after rise, counters moving by exactly what a test sends,
//! `promtool check metrics`, and a headless Chromium rendering of the page. A `mode http`
//! frontend in front of a real nginx checks the HTTP columns (requests, answers by class,
//! denials, bytes per row) and its httplog lines over UDP syslog.

use e2e::http_client::{raw_exchange, status_of};
use e2e::nginx_http::NginxHttp;
use e2e::tcp::{End, Reply, TcpClient, TcpServer};
use e2e::util::{require_tool, TestDir};
use e2e::{free_addr, free_port, loopback, wait_until, Proxy};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
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
    // `last_chk` as HAProxy fills it: the system's error text for a failed layer-4 check,
    // nothing for a passed one.
    let csv = s.csv();
    assert_eq!(csv.get("backend_rtmp", "ams2", "check_status"), "L4CON");
    assert_eq!(
        csv.get("backend_rtmp", "ams2", "last_chk"),
        "Connection refused"
    );
    assert_eq!(csv.get("backend_rtmp", "ams1", "check_status"), "L4OK");
    assert_eq!(csv.get("backend_rtmp", "ams1", "last_chk"), "");
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

// ---------------------------------------------------------------------------------------------
// `mode http`: one frontend denying `/forbidden`, its backend denying `/private`, one nginx
// (`ams1`) and, for the redispatch test, a server where nothing listens before it.

struct HttpSetup {
    proxy: Proxy,
    stats: SocketAddr,
    http: SocketAddr,
    syslog: UdpSocket,
    _nginx: NginxHttp,
    _files: TestDir,
}

/// `dead_first`: the backend balances round robin over a dead server and `ams1`, with one
/// retry that `option redispatch` sends to the other server.
fn http_setup(dead_first: bool) -> HttpSetup {
    let files = TestDir::new("stats-http");
    let hls = files.join("hls");
    std::fs::create_dir_all(&hls).expect("hls folder");
    // `/hls/…` serves files from this (empty) folder: a real 404 from the server.
    let nginx = NginxHttp::start("ams1", free_addr(loopback(2)), Some(&hls));
    let syslog = UdpSocket::bind("127.0.0.1:0").expect("bind the syslog listener");
    let target = syslog.local_addr().expect("syslog addr");
    let stats_port = free_port(Ipv4Addr::LOCALHOST);
    let http_port = free_port(Ipv4Addr::LOCALHOST);
    let dead = if dead_first {
        let addr = free_addr(loopback(3));
        format!("    retries 1\n    option redispatch\n    server dead {addr}\n")
    } else {
        String::new()
    };
    let cfg = format!(
        "global
    log {target} local0 info
    nbthread 2

defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 30s
    timeout server 30s

listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /haproxy_stats
    stats auth {USER}:{PASSWORD}

frontend http_lb
    bind 127.0.0.1:{http_port}
    http-request deny if {{ path_beg /forbidden }}
    default_backend backend_http

backend backend_http
    http-request deny if {{ path_beg /private }}
{dead}    server ams1 {}
",
        nginx.addr()
    );
    HttpSetup {
        proxy: Proxy::start(&cfg),
        stats: SocketAddr::from((Ipv4Addr::LOCALHOST, stats_port)),
        http: SocketAddr::from((Ipv4Addr::LOCALHOST, http_port)),
        syslog,
        _nginx: nginx,
        _files: files,
    }
}

impl HttpSetup {
    fn csv(&self) -> Csv {
        let r = http_get(self.stats, "/haproxy_stats;csv", Some((USER, PASSWORD)));
        assert_eq!(r.status, 200, "{}", r.body);
        Csv::parse(&r.body)
    }

    /// One request on its own connection: (bytes sent, bytes received, status).
    fn send(&self, path: &str) -> (u64, u64, u16) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: stats-test\r\nConnection: close\r\n\r\n");
        let got = raw_exchange(self.http, req.as_bytes());
        let status = status_of(&got).unwrap_or_else(|| panic!("no answer to {path}: {got:?}"));
        (req.len() as u64, got.len() as u64, status)
    }
}

/// A syslog datagram's message after HAProxy's RFC 3164 header (`<PRI>date haproxy[pid]: `),
/// sent at `info` on `local0` (16 * 8 + 6).
fn syslog_message(datagram: &str, pid: u32) -> &str {
    assert!(datagram.starts_with("<134>"), "{datagram:?}");
    let tag = format!(" haproxy[{pid}]: ");
    datagram
        .split_once(&tag)
        .map(|(_, m)| m.trim_end_matches('\n'))
        .unwrap_or_else(|| panic!("no {tag:?} in {datagram:?}"))
}

/// The first datagram that `want` accepts, within a generous bound. `seen` keeps every
/// datagram read so far, so the order in which lines arrive does not matter.
fn wait_for_datagram(
    rx: &UdpSocket,
    seen: &mut Vec<String>,
    want: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(d) = seen.iter().find(|d| want(d)) {
            return d.clone();
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            panic!("no such datagram arrived; got {seen:?}")
        };
        rx.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        if let Ok(n) = rx.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

#[test]
fn http_counters_follow_haproxys_columns() {
    let s = http_setup(false);
    let reference = e2e::proxy::is_reference_haproxy();
    let mut sent = HashMap::<&str, (u64, u64)>::new();
    let mut total = (0u64, 0u64);
    for (path, want) in [
        ("/app/1", 200),
        ("/hls/missing-1.ts", 404),
        ("/app/2", 200),
        ("/forbidden", 403),
        ("/hls/missing-2.ts", 404),
        ("/private", 403),
        ("/app/3", 200),
    ] {
        let (up, down, status) = s.send(path);
        assert_eq!(status, want, "answer to {path}");
        sent.insert(path, (up, down));
        total = (total.0 + up, total.1 + down);
    }
    // Answers are counted when each request ends, which may follow the close a moment.
    let csv = wait_until("all requests counted", Duration::from_secs(20), || {
        let csv = s.csv();
        (csv.num("http_lb", "FRONTEND", "req_tot") == 7
            && csv.num("http_lb", "FRONTEND", "scur") == 0
            && csv.num("backend_http", "BACKEND", "hrsp_4xx") == 3
            && csv.num("backend_http", "BACKEND", "scur") == 0)
            .then_some(csv)
    });
    let fe = |col| csv.num("http_lb", "FRONTEND", col);
    let be = |col| csv.num("backend_http", "BACKEND", col);
    let srv = |col| csv.num("backend_http", "ams1", col);
    // Frontend: every connection, request and answer, its own 403s included.
    assert_eq!(fe("stot"), 7, "one session per connection");
    assert_eq!((fe("hrsp_2xx"), fe("hrsp_4xx"), fe("hrsp_5xx")), (3, 4, 0));
    assert_eq!(fe("dreq"), 2, "both denials count on the frontend");
    assert_eq!(fe("ereq"), 0);
    // Backend: the requests routed to it, its own denial included.
    assert_eq!((be("stot"), be("req_tot")), (6, 6));
    assert_eq!((be("hrsp_2xx"), be("hrsp_4xx")), (3, 3));
    assert_eq!(be("dreq"), 1, "only the backend's own rule");
    assert_eq!(
        (be("econ"), be("eresp"), be("wretr"), be("wredis")),
        (0, 0, 0, 0)
    );
    // Server: what nginx itself answered.
    assert_eq!((srv("stot"), srv("req_tot")), (5, 5));
    assert_eq!((srv("hrsp_2xx"), srv("hrsp_4xx")), (3, 2));
    assert_eq!((srv("econ"), srv("eresp")), (0, 0));
    // Bytes: every row counts the requests it saw, so each row holds the next one's bytes
    // plus those of the requests that stopped at it.
    for col in ["bin", "bout"] {
        assert!(
            fe(col) > be(col) && be(col) > srv(col) && srv(col) > 0,
            "{col}: frontend {} > backend {} > server {} > 0",
            fe(col),
            be(col),
            srv(col)
        );
    }
    if !reference {
        // HAProxy counts its internal (HTX) form of a message; ours are the bytes on the wire.
        assert_eq!(
            (fe("bin"), fe("bout")),
            total,
            "bytes on the client connections"
        );
        let (forbidden, private) = (sent["/forbidden"], sent["/private"]);
        assert_eq!(fe("bin") - be("bin"), forbidden.0);
        assert_eq!(fe("bout") - be("bout"), forbidden.1);
        assert_eq!(be("bin") - srv("bin"), private.0);
        assert_eq!(be("bout") - srv("bout"), private.1);
    }
    assert!(srv("rtime_max") <= srv("ttime_max"), "timings are sampled");

    // The stats page counts its own requests on the `listen`'s frontend row; its backend row
    // gets their bytes only (HAProxy answers before the section becomes its own backend).
    let before = s.csv();
    let after = s.csv();
    for col in ["req_tot", "hrsp_2xx"] {
        assert_eq!(
            after.num("stats", "FRONTEND", col),
            before.num("stats", "FRONTEND", col) + 1,
            "stats FRONTEND {col} counts the page's own requests"
        );
    }
    assert_eq!(after.num("stats", "BACKEND", "req_tot"), 0);
    assert_eq!(after.num("stats", "BACKEND", "stot"), 0);
    for col in ["bin", "bout"] {
        assert!(after.num("stats", "BACKEND", col) > before.num("stats", "BACKEND", col));
        assert_eq!(
            after.num("stats", "BACKEND", col),
            after.num("stats", "FRONTEND", col),
            "stats {col}: the page's bytes on both rows"
        );
    }

    // Access lines in httplog format reach the frontend's syslog target.
    let mut seen = Vec::new();
    let app = wait_for_datagram(&s.syslog, &mut seen, |d| {
        d.contains(" http_lb backend_http/ams1 ") && d.contains("\"GET /app/1 HTTP/1.1\"")
    });
    let msg = syslog_message(&app, s.proxy.pid());
    let f: Vec<&str> = msg.split(' ').collect();
    assert_eq!(f.len(), 15, "httplog fields: {msg:?}");
    assert!(f[0].starts_with("127.0.0.1:"), "{msg:?}");
    assert!(f[1].starts_with('[') && f[1].ends_with(']'), "{msg:?}");
    let timers: Vec<&str> = f[4].split('/').collect();
    assert_eq!(timers.len(), 5, "TR/Tw/Tc/Tr/Ta in {msg:?}");
    assert!(timers.iter().all(|t| t.parse::<u64>().is_ok()), "{msg:?}");
    assert_eq!(f[5], "200");
    if !reference {
        assert_eq!(
            f[6],
            sent["/app/1"].1.to_string(),
            "bytes sent to the client"
        );
    }
    assert_eq!((f[7], f[8], f[9]), ("-", "-", "----"), "{msg:?}");
    assert_eq!(f[11], "0/0");
    let denied = wait_for_datagram(&s.syslog, &mut seen, |d| {
        d.contains("\"GET /forbidden HTTP/1.1\"")
    });
    let msg = syslog_message(&denied, s.proxy.pid());
    assert!(msg.contains(" http_lb http_lb/<NOSRV> "), "{msg:?}");
    assert!(msg.contains(" 403 ") && msg.contains(" PR-- "), "{msg:?}");
}

/// A request whose first server refuses is redispatched to the other one on its retry:
/// HAProxy books that in `wredis` of the backend and of the server left (not in `wretr`, and
/// not as a connection error), and its log line shows `+1` retries.
#[test]
fn http_redispatch_counts_wredis() {
    let s = http_setup(true);
    let requests = 6;
    for i in 0..requests {
        let (_, _, status) = s.send(&format!("/app/{i}"));
        assert_eq!(status, 200, "every request reaches ams1");
    }
    let csv = wait_until("all requests counted", Duration::from_secs(20), || {
        let csv = s.csv();
        (csv.num("backend_http", "BACKEND", "req_tot") == requests).then_some(csv)
    });
    let be = |col| csv.num("backend_http", "BACKEND", col);
    let dead = |col| csv.num("backend_http", "dead", col);
    let ams1 = |col| csv.num("backend_http", "ams1", col);
    assert_eq!(ams1("hrsp_2xx"), requests, "ams1 served them all");
    let moved = be("wredis");
    assert!(
        moved >= 1,
        "round robin sent some requests to the dead server first"
    );
    assert_eq!(dead("wredis"), moved, "booked on the server left");
    assert_eq!(ams1("wredis"), 0);
    assert_eq!((be("wretr"), dead("wretr"), ams1("wretr")), (0, 0, 0));
    assert_eq!((be("econ"), dead("econ"), ams1("econ")), (0, 0, 0));
    assert_eq!(dead("connect"), moved, "one attempt each");
    assert_eq!(be("connect"), requests + moved);
    let mut seen = Vec::new();
    let line = wait_for_datagram(&s.syslog, &mut seen, |d| {
        d.contains(" http_lb backend_http/ams1 ") && d.contains("/+1 0/0 ")
    });
    assert!(line.contains(" 200 "), "{line:?}");
}

// ---------------------------------------------------------------------------------------------
// Live byte counts: a long-lived flow (an RTMP stream) shows its bytes while it runs, and its
// end adds nothing more.

/// An echo backend: every byte received goes straight back, until the client closes.
fn echo_server(addr: SocketAddr) -> SocketAddr {
    let listener = std::net::TcpListener::bind(addr).expect("echo server bind");
    let addr = listener.local_addr().expect("echo addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut r = &conn;
                let mut w = &conn;
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    addr
}

struct LiveSetup {
    /// Kept running for the test's length.
    _proxy: Proxy,
    stats: SocketAddr,
    front: SocketAddr,
}

/// A `mode tcp` frontend (TLS when `crt` is given) whose backend, on `engine`, has one echo
/// server; and the stats page with the exporter.
fn live_setup(engine: &str, crt: Option<&std::path::Path>) -> LiveSetup {
    let echo = echo_server(free_addr(loopback(2)));
    let stats_port = free_port(Ipv4Addr::LOCALHOST);
    let port = free_port(Ipv4Addr::LOCALHOST);
    let ssl = crt.map_or(String::new(), |c| format!(" ssl crt {}", c.display()));
    let cfg = format!(
        "global
    nbthread 2

defaults
    timeout connect 2s
    timeout client 30s
    timeout server 30s

listen stats
    bind 127.0.0.1:{stats_port}
    mode http
    stats enable
    stats uri /haproxy_stats
    stats auth {USER}:{PASSWORD}
    http-request use-service prometheus-exporter if {{ path /metrics }}

frontend live
    bind 127.0.0.1:{port}{ssl}
    mode tcp
    default_backend live_be

backend live_be
    mode tcp
    forward-engine {engine}
    server echo {echo}
"
    );
    LiveSetup {
        _proxy: Proxy::start(&cfg),
        stats: SocketAddr::from((Ipv4Addr::LOCALHOST, stats_port)),
        front: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    }
}

impl LiveSetup {
    fn csv(&self) -> Csv {
        let r = http_get(self.stats, "/haproxy_stats;csv", Some((USER, PASSWORD)));
        assert_eq!(r.status, 200, "{}", r.body);
        Csv::parse(&r.body)
    }

    /// Every row's `bin`/`bout`, the frontend's exporter figure and the engine's.
    fn assert_bytes(&self, csv: &Csv, n: u64, engine: &str) {
        for (px, sv) in [
            ("live", "FRONTEND"),
            ("live_be", "BACKEND"),
            ("live_be", "echo"),
        ] {
            assert_eq!(csv.num(px, sv, "bin"), n, "{px}/{sv} bin");
            assert_eq!(csv.num(px, sv, "bout"), n, "{px}/{sv} bout");
        }
        let metrics = http_get(self.stats, "/metrics", Some((USER, PASSWORD))).body;
        assert_eq!(
            metric(
                &metrics,
                "haproxy_frontend_bytes_in_total",
                &[("proxy", "live")]
            ),
            Some(n as f64)
        );
        assert_eq!(
            metric(
                &metrics,
                "haproxy_backend_bytes_out_total",
                &[("proxy", "live_be")]
            ),
            Some(n as f64)
        );
        assert_eq!(
            metric(
                &metrics,
                "proxy_forward_bytes_in_total",
                &[("engine", engine)]
            ),
            Some(n as f64)
        );
    }

    /// Sends `n` bytes through `conn`, reads the `n` echoed back, checks the figures while
    /// the flow is still open, then closes it and checks they did not move.
    fn check_live_then_closed<S: Read + Write>(&self, mut conn: S, n: u64, engine: &str) {
        let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        conn.write_all(&data).expect("send through the proxy");
        let mut back = vec![0u8; data.len()];
        conn.read_exact(&mut back)
            .expect("the echo through the proxy");
        assert!(back == data, "echoed bytes intact");
        self.assert_open_flow(n, engine);
        drop(conn);
        let csv = self.ended();
        assert_eq!(csv.num("live_be", "BACKEND", "stot"), 1);
        self.assert_bytes(&csv, n, engine);
    }

    /// Waits until the open flow's `n` bytes each way are counted, then checks that it is
    /// still open and that every row shows them.
    fn assert_open_flow(&self, n: u64, engine: &str) {
        let csv = wait_until(
            "the open flow's bytes counted",
            Duration::from_secs(20),
            || {
                let csv = self.csv();
                (csv.num("live", "FRONTEND", "bin") == n
                    && csv.num("live", "FRONTEND", "bout") == n)
                    .then_some(csv)
            },
        );
        assert_eq!(
            csv.num("live", "FRONTEND", "scur"),
            1,
            "the flow is still open"
        );
        self.assert_bytes(&csv, n, engine);
    }

    /// Waits until the flow has ended: the figures as they stand then.
    fn ended(&self) -> Csv {
        wait_until("the flow ended", Duration::from_secs(20), || {
            let csv = self.csv();
            (csv.num("live", "FRONTEND", "scur") == 0).then_some(csv)
        })
    }
}

/// 300 000 bytes each way: several chunks on every engine.
const LIVE_BYTES: u64 = 300_000;

#[test]
fn an_open_flow_shows_its_bytes_on_the_copy_engine() {
    let s = live_setup("copy", None);
    let conn = TcpStream::connect(s.front).expect("connect to the frontend");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.check_live_then_closed(conn, LIVE_BYTES, "copy");
}

#[test]
fn an_open_flow_shows_its_bytes_on_the_splice_engine() {
    let s = live_setup("splice", None);
    let conn = TcpStream::connect(s.front).expect("connect to the frontend");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.check_live_then_closed(conn, LIVE_BYTES, "splice");
}

#[test]
fn an_open_flow_shows_its_bytes_on_the_sockmap_engine() {
    require_root_for_sockmap();
    let s = live_setup("sockmap", None);
    let conn = TcpStream::connect(s.front).expect("connect to the frontend");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.check_live_then_closed(conn, LIVE_BYTES, "sockmap");
}

/// A sockmap flow quiet for a while stops reporting every second (its watchdog then sleeps
/// until the 30 s idle limit); bytes that move again must still reach the rows within a
/// second or two, not at that limit.
#[test]
fn a_quiet_sockmap_flow_counts_its_bytes_again_when_it_resumes() {
    require_root_for_sockmap();
    let s = live_setup("sockmap", None);
    let mut conn = TcpStream::connect(s.front).expect("connect to the frontend");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let data: Vec<u8> = (0..LIVE_BYTES).map(|i| (i % 251) as u8).collect();
    let mut back = vec![0u8; data.len()];
    conn.write_all(&data).expect("send");
    conn.read_exact(&mut back).expect("echo");
    s.assert_open_flow(LIVE_BYTES, "sockmap");
    // Quiet for longer than a look and a report: both directions and the watchdog go idle.
    std::thread::sleep(Duration::from_millis(3500));
    conn.write_all(&data).expect("send again");
    conn.read_exact(&mut back).expect("echo again");
    assert!(back == data, "echoed bytes intact");
    let csv = wait_until(
        "the resumed flow's bytes counted",
        Duration::from_secs(8),
        || {
            let csv = s.csv();
            (csv.num("live", "FRONTEND", "bin") == 2 * LIVE_BYTES
                && csv.num("live", "FRONTEND", "bout") == 2 * LIVE_BYTES)
                .then_some(csv)
        },
    );
    s.assert_bytes(&csv, 2 * LIVE_BYTES, "sockmap");
}

fn require_root_for_sockmap() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the sockmap engine loads BPF programs and needs root (CAP_BPF, CAP_NET_ADMIN); run \
         these tests as root (CI does)"
    );
}

/// A TLS client for the RTMPS case: sends `n` bytes, checks their echo, says so on stdout,
/// then holds the connection open until its stdin closes.
const TLS_ECHO_CLIENT: &str = r#"
import socket, ssl, sys
host, port, ca, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context(cafile=ca)
s = ctx.wrap_socket(socket.create_connection((host, port), timeout=20), server_hostname="localhost")
data = bytes(i % 251 for i in range(n))
s.sendall(data)
got = bytearray()
while len(got) < n:
    chunk = s.recv(n - len(got))
    if not chunk:
        break
    got += chunk
print("intact" if bytes(got) == data else "broken after %d bytes" % len(got), flush=True)
sys.stdin.read()
s.close()
"#;

#[test]
fn an_open_rtmps_flow_shows_its_plaintext_bytes() {
    use std::io::BufRead;
    let python = require_tool("python3");
    let dir = TestDir::new("stats-rtmps");
    let ca = e2e::tls::TestCa::new(dir.path());
    let crt = ca.leaf("live", &["localhost"], e2e::tls::KeyKind::EcPkcs8, false);
    let s = live_setup("copy", Some(&crt));
    let mut client = Command::new(python)
        .args(["-c", TLS_ECHO_CLIENT, "127.0.0.1"])
        .arg(s.front.port().to_string())
        .arg(ca.cert())
        .arg(LIVE_BYTES.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 TLS client");
    let mut said = String::new();
    let stdout = client.stdout.take().expect("client stdout");
    std::io::BufReader::new(stdout)
        .read_line(&mut said)
        .expect("the client's verdict");
    assert_eq!(said.trim(), "intact", "the TLS client's echo");
    // Plaintext bytes, as HAProxy counts them on an `ssl` bind.
    s.assert_open_flow(LIVE_BYTES, "copy");
    drop(client.stdin.take());
    let status = client.wait().expect("the client exits");
    assert!(status.success(), "TLS client: {status}");
    s.assert_bytes(&s.ended(), LIVE_BYTES, "copy");
}

/// A raw WebSocket client, so the test knows every byte it sent and received: the upgrade
/// request, the 101 head, one masked text frame out and its echo back.
struct RawWs {
    conn: TcpStream,
    sent: u64,
    received: u64,
}

impl RawWs {
    fn open(front: SocketAddr) -> RawWs {
        let conn = TcpStream::connect(front).expect("connect to the ws frontend");
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut ws = RawWs {
            conn,
            sent: 0,
            received: 0,
        };
        ws.send(
            b"GET /socket HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        );
        let head = ws.read_head();
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "the upgrade was refused: {head}"
        );
        ws
    }

    fn send(&mut self, bytes: &[u8]) {
        self.conn.write_all(bytes).expect("send through the proxy");
        self.sent += bytes.len() as u64;
    }

    fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        self.conn
            .read_exact(&mut buf)
            .expect("read through the proxy");
        self.received += n as u64;
        buf
    }

    /// Byte by byte: nothing past the head may be consumed (the server sends nothing more
    /// before the first message anyway).
    fn read_head(&mut self) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.extend(self.read_exact(1));
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    /// One masked text frame (RFC 6455 §5.2) with a 64-bit length.
    fn send_text(&mut self, text: &[u8]) {
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let mut frame = vec![0x81, 0x80 | 127];
        frame.extend_from_slice(&(text.len() as u64).to_be_bytes());
        frame.extend_from_slice(&mask);
        frame.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.send(&frame);
    }

    /// One unmasked frame from the server: its payload.
    fn read_frame(&mut self) -> Vec<u8> {
        let head = self.read_exact(2);
        assert_eq!(head[0], 0x81, "a final text frame");
        let len = match head[1] & 0x7f {
            126 => {
                let b = self.read_exact(2);
                u64::from(u16::from_be_bytes([b[0], b[1]]))
            }
            127 => {
                let b = self.read_exact(8);
                u64::from_be_bytes(b.try_into().expect("8 bytes"))
            }
            n => u64::from(n),
        };
        self.read_exact(len as usize)
    }
}

/// An open WebSocket (`mode http`, upgraded to a tunnel) shows its bytes in the CSV while it
/// stays open, on the frontend, the backend and the server; its end adds nothing.
#[test]
fn an_open_websocket_shows_its_bytes() {
    let ws_server = e2e::http_client::WsServer::start("ws1", free_addr(loopback(2)));
    let stats_port = free_port(Ipv4Addr::LOCALHOST);
    let port = free_port(Ipv4Addr::LOCALHOST);
    let cfg = format!(
        "defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h

listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /haproxy_stats
    stats auth {USER}:{PASSWORD}

frontend ws
    bind 127.0.0.1:{port}
    default_backend ws_be

backend ws_be
    server ws1 {}
",
        ws_server.addr
    );
    let _proxy = Proxy::start(&cfg);
    let stats = SocketAddr::from((Ipv4Addr::LOCALHOST, stats_port));
    let csv = || {
        let r = http_get(stats, "/haproxy_stats;csv", Some((USER, PASSWORD)));
        assert_eq!(r.status, 200, "{}", r.body);
        Csv::parse(&r.body)
    };
    let mut ws = RawWs::open(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let text: Vec<u8> = (0..LIVE_BYTES).map(|i| b'a' + (i % 26) as u8).collect();
    ws.send_text(&text);
    let echo = ws.read_frame();
    assert!(echo.strip_prefix(b"ws1:") == Some(&text[..]), "echo intact");
    let (sent, received) = (ws.sent, ws.received);
    assert!(sent > LIVE_BYTES && received > LIVE_BYTES);
    let rows = [("ws", "FRONTEND"), ("ws_be", "BACKEND"), ("ws_be", "ws1")];
    let assert_rows = |csv: &Csv| {
        for (px, sv) in rows {
            assert_eq!(csv.num(px, sv, "bin"), sent, "{px}/{sv} bin");
            assert_eq!(csv.num(px, sv, "bout"), received, "{px}/{sv} bout");
        }
    };
    let open = wait_until(
        "the open websocket's bytes counted",
        Duration::from_secs(20),
        || {
            let c = csv();
            (c.num("ws", "FRONTEND", "bin") == sent && c.num("ws", "FRONTEND", "bout") == received)
                .then_some(c)
        },
    );
    assert_eq!(open.num("ws", "FRONTEND", "scur"), 1, "still open");
    assert_rows(&open);
    // An abortive close: no close frame, so no byte moves after the figures above.
    socket2::SockRef::from(&ws.conn)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER");
    drop(ws);
    let closed = wait_until("the websocket ended", Duration::from_secs(20), || {
        let c = csv();
        (c.num("ws", "FRONTEND", "scur") == 0 && c.num("ws_be", "BACKEND", "req_tot") == 1)
            .then_some(c)
    });
    assert_rows(&closed);
}
