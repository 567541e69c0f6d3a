//! HTTP/2 to clients (`bind … ssl crt … alpn h2,http/1.1` in `mode http`), HTTP/1.1 to two
//! nginx echo nodes, with real clients: curl `--http2`, nghttp (many streams on one
//! connection), h2load, openssl s_client (ALPN), and a frame-by-frame client for Rapid Reset
//! (`e2e::h2_raw`). Each stream must get exactly what an HTTP/1.1 request gets: frontend and
//! backend rules, X-Forwarded-For/-Proto, `cookie JSESSIONID prefix` stickiness, redirects,
//! `http-response` rules, one httplog line per stream.

use e2e::h2_raw::{End, RawH2, ENHANCE_YOUR_CALM};
use e2e::http_client::{csv_field, curl, ok_text};
use e2e::nginx_http::{after, echoed, served_by_owner, NginxHttp};
use e2e::tls::{s_client, KeyKind, TestCa};
use e2e::util::{poll_until, require_tool};
use e2e::{free_addr, free_port, hex, loopback, Proxy, TestDir};
use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

struct Site {
    dir: TestDir,
    ca: TestCa,
    a: NginxHttp,
    b: NginxHttp,
    proxy: Proxy,
    port: u16,
    stats: u16,
}

/// Seed 001's HTTP part on one TLS bind that offers h2 first: X-Forwarded-Proto from
/// `ssl_fc`, `option forwardfor`, a redirect rule, `http-response` rules on the frontend and
/// the backend, `cookie JSESSIONID prefix nocache` over two nodes, and `backend_secure` with
/// `redirect scheme https if ! { ssl_fc }` (never taken over TLS).
fn site(name: &str) -> Site {
    let dir = TestDir::new(name);
    let ca = TestCa::new(dir.path());
    let crt = ca.leaf("site", &["localhost"], KeyKind::EcPkcs8, false);
    let a = NginxHttp::start("ams1", free_addr(loopback(2)), None);
    let b = NginxHttp::start("ams2", free_addr(loopback(3)), None);
    let port = free_port(Ipv4Addr::LOCALHOST);
    let stats = free_port(Ipv4Addr::LOCALHOST);
    let cfg = format!(
        r"global
    nbthread 2

defaults
    mode http
    option forwardfor
    option httplog
    timeout connect 2s
    timeout client 20s
    timeout server 20s

frontend fe_h2
    bind 127.0.0.1:{port} ssl crt {} alpn h2,http/1.1
    http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
    http-request redirect location /app/moved code 301 if {{ path /old }}
    http-response set-header X-Served-Over tls-frontend
    use_backend backend_secure if {{ path_beg /secure }}
    default_backend backend_http

backend backend_http
    cookie JSESSIONID prefix nocache
    http-response set-header X-Backend backend_http
    server ams1 {} cookie ams1
    server ams2 {} cookie ams2

backend backend_secure
    redirect scheme https if ! {{ ssl_fc }}
    server ams1 {}

listen stats
    bind 127.0.0.1:{stats}
    stats enable
    stats uri /stats
",
        crt.display(),
        a.addr(),
        b.addr(),
        a.addr()
    );
    let proxy = Proxy::start(&cfg);
    Site {
        dir,
        ca,
        a,
        b,
        proxy,
        port,
        stats,
    }
}

impl Site {
    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// curl with the test CA; `args` before the URLs.
    fn curl(&self, args: &[&str], paths: &[&str]) -> Output {
        let ca = self.ca.cert().display().to_string();
        let urls: Vec<String> = paths.iter().map(|p| self.url(p)).collect();
        let mut all: Vec<&str> = vec!["--cacert", &ca];
        all.extend_from_slice(args);
        all.extend(urls.iter().map(String::as_str));
        curl(&all)
    }

    /// `column` of the stats CSV row `proxy,service` (`fe_h2,FRONTEND`), a number.
    fn stat(&self, proxy: &str, service: &str, column: &str) -> u64 {
        let v = csv_field(self.stats, proxy, service, column);
        v.parse()
            .unwrap_or_else(|_| panic!("{proxy}/{service} {column} = {v:?}"))
    }

    /// The proxy's httplog lines that quote `request` (`GET /x HTTP/2.0`).
    fn logged(&self, request: &str) -> Vec<String> {
        let quoted = format!("\"{request}\"");
        self.proxy
            .stderr()
            .lines()
            .filter(|l| l.contains(&quoted))
            .map(String::from)
            .collect()
    }

    /// Waits until `n` lines quote `request` (lines are written as streams end).
    fn wait_logged(&self, request: &str, n: usize) -> Vec<String> {
        poll_until(Duration::from_secs(10), || {
            let lines = self.logged(request);
            (lines.len() >= n).then_some(lines)
        })
        .unwrap_or_else(|| panic!("{n} log lines for {request}:\n{}", self.proxy.stderr()))
    }
}

/// nghttp with the test CA (it verifies nothing itself; `--cert`-less runs are fine on
/// loopback), bounded by `timeout 60`.
fn nghttp(site: &Site, args: &[&str], path: &str) -> Output {
    Command::new(require_tool("timeout"))
        .arg("60")
        .arg(require_tool("nghttp"))
        .args(args)
        .arg(site.url(path))
        .output()
        .expect("running nghttp")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// curl over HTTP/2: the backend gets X-Forwarded-For/-Proto and one Host; the response
/// carries both `http-response` rules' headers and the prefixed JSESSIONID; twenty requests
/// with that cookie on one connection all reach its owner, which sees its own value; a
/// redirect rule answers 301 by itself; `redirect scheme https if ! { ssl_fc }` leaves the
/// TLS stream alone; every stream has its httplog line saying HTTP/2.0.
#[test]
fn curl_h2_streams_get_the_rules_the_cookie_and_the_forwarded_headers() {
    let s = site("h2-curl");
    let first = ok_text(&s.curl(&["--http2", "-i"], &["/app/login"]));
    assert!(first.starts_with("HTTP/2 200"), "{first}");
    assert_eq!(echoed(&first, "x-forwarded-proto"), ["https"], "{first}");
    assert_eq!(echoed(&first, "x-forwarded-for"), ["127.0.0.1"], "{first}");
    assert_eq!(
        echoed(&first, "host"),
        [format!("localhost:{}", s.port)],
        ":authority reaches the server as the one Host: {first}"
    );
    assert!(first.contains("\nGET /app/login HTTP/1.1\r"), "{first}");
    assert_eq!(echoed(&first, "x-served-over"), ["tls-frontend"], "{first}");
    assert_eq!(echoed(&first, "x-backend"), ["backend_http"], "{first}");
    let owner = first
        .lines()
        .find_map(|l| l.strip_prefix("node "))
        .unwrap_or_else(|| panic!("no node line: {first}"))
        .trim()
        .to_string();
    assert_eq!(
        echoed(&first, "set-cookie"),
        [format!("JSESSIONID={owner}~sess-{owner}; Path=/")]
    );

    let cookie = format!("Cookie: JSESSIONID={owner}~sess-{owner}");
    let paths: Vec<String> = (0..20).map(|i| format!("/app/sticky/{i}")).collect();
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    let sticky = ok_text(&s.curl(
        &[
            "--http2",
            "-H",
            &cookie,
            "-w",
            "v=%{http_version} c=%{num_connects}\n",
        ],
        &paths,
    ));
    assert_eq!(
        after(&sticky, "node "),
        vec![owner.as_str(); 20],
        "{sticky}"
    );
    assert_eq!(
        after(&sticky, "cookie "),
        vec![format!("JSESSIONID=sess-{owner}").as_str(); 20],
        "the node sees its own value, without the prefix"
    );
    let versions = after(&sticky, "v=");
    let mut want = vec!["2 c=0"; 20];
    want[0] = "2 c=1";
    assert_eq!(versions, want, "twenty streams on one HTTP/2 connection");
    assert_eq!(served_by_owner(&owner, &s.a, &s.b, "/app/sticky/"), (20, 0));

    let moved = ok_text(&s.curl(&["--http2", "-i"], &["/old"]));
    assert!(moved.starts_with("HTTP/2 301"), "{moved}");
    assert_eq!(echoed(&moved, "location"), ["/app/moved"], "{moved}");
    let secure = ok_text(&s.curl(&["--http2", "-i"], &["/secure/page"]));
    assert!(secure.starts_with("HTTP/2 200"), "{secure}");
    assert!(secure.contains("node ams1"), "{secure}");

    let login = s.wait_logged("GET /app/login HTTP/2.0", 1);
    assert!(login[0].contains(" fe_h2 backend_http/"), "{login:?}");
    assert!(login[0].contains(" 200 "), "{login:?}");
    s.wait_logged("GET /app/sticky/19 HTTP/2.0", 1);
    let redirect = s.wait_logged("GET /old HTTP/2.0", 1);
    assert!(redirect[0].contains(" 301 "), "{redirect:?}");
    assert_eq!(
        s.a.served("/old") + s.b.served("/old"),
        0,
        "answered by the proxy"
    );
}

/// nghttp opens forty streams at once on one connection with a persistence cookie: every
/// stream is answered 200 by the cookie's node, each has its own log line, all from one
/// client port. Ten streams to a node that answers after 3 s finish together (they were
/// served side by side, not one after the other: 30 s). h2load's 400 requests over two
/// connections all succeed.
#[test]
fn many_streams_on_one_connection_are_all_answered() {
    let s = site("h2-streams");
    let out = nghttp(
        &s,
        &[
            "-n",
            "-s",
            "-m",
            "40",
            "-H",
            "cookie: JSESSIONID=ams2~sess-ams2",
        ],
        "/app/many",
    );
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    let answered = report
        .lines()
        .filter(|l| l.contains(" 200 ") && l.ends_with("/app/many"))
        .count();
    assert_eq!(answered, 40, "{report}");
    assert_eq!(served_by_owner("ams2", &s.a, &s.b, "/app/many"), (40, 0));
    let lines = s.wait_logged("GET /app/many HTTP/2.0", 40);
    let ports: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ports.len(), 1, "one client connection: {ports:?}");
    assert!(
        lines.iter().all(|l| l.contains(" backend_http/ams2 ")),
        "{lines:?}"
    );
    // Every stream is a request on each row, as an HTTP/1.1 request would be.
    for (proxy, service) in [
        ("fe_h2", "FRONTEND"),
        ("backend_http", "BACKEND"),
        ("backend_http", "ams2"),
    ] {
        assert_eq!(
            s.stat(proxy, service, "req_tot"),
            40,
            "{proxy}/{service} req_tot"
        );
        assert_eq!(
            s.stat(proxy, service, "hrsp_2xx"),
            40,
            "{proxy}/{service} hrsp_2xx"
        );
    }
    assert_eq!(
        s.stat("fe_h2", "FRONTEND", "stot"),
        1,
        "one client connection"
    );

    let started = Instant::now();
    let slow = nghttp(&s, &["-n", "-s", "-m", "10"], "/slow");
    let took = started.elapsed();
    let report = text(&slow);
    let answered = report
        .lines()
        .filter(|l| l.contains(" 200 ") && l.ends_with("/slow"))
        .count();
    assert_eq!(answered, 10, "{report}");
    assert!(
        took < Duration::from_secs(15),
        "ten 3 s answers took {took:?}: the streams were not served side by side"
    );

    let h2load = Command::new(require_tool("timeout"))
        .arg("60")
        .arg(require_tool("/usr/bin/h2load"))
        .args(["-n", "400", "-c", "2", "-m", "16"])
        .arg(s.url("/app/load"))
        .output()
        .expect("h2load");
    let report = text(&h2load);
    assert!(
        report.contains("400 succeeded, 0 failed, 0 errored"),
        "{report}"
    );
    assert!(report.contains("status codes: 400 2xx"), "{report}");
    assert_eq!(s.a.served("/app/load") + s.b.served("/app/load"), 400);
}

/// Request bodies over HTTP/2 reach the server byte-exact: a small one (read whole first,
/// sent with the head), a large one with its length (streamed under flow control), and one
/// without a length (the stream's DATA frames, sent on chunked).
#[test]
fn request_bodies_pass_through() {
    let s = site("h2-bodies");
    let sha = |b: &[u8]| hex(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    for (name, len, how) in [
        ("small", 1_000usize, "--data-binary"),
        ("large", 300_000, "--data-binary"),
        ("unsized", 50_000, "-T"),
    ] {
        let body: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let file = s.dir.join(&format!("{name}.bin"));
        std::fs::write(&file, &body).expect("body file");
        let source = if how == "-T" {
            "-".to_string()
        } else {
            format!("@{}", file.display())
        };
        let ca = s.ca.cert().display().to_string();
        let out = Command::new(require_tool("curl"))
            .args(["-sS", "--max-time", "20", "--http2", "--cacert", &ca])
            .args(["-X", "POST", "-H", "Content-Type: application/octet-stream"])
            .args([how, &source])
            .arg(s.url("/body"))
            .stdin(std::fs::File::open(&file).expect("stdin"))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.len(), len, "{name}: echoed length");
        assert_eq!(sha(&out.stdout), sha(&body), "{name}: echoed bytes");
    }
    assert_eq!(
        s.a.served("POST /body HTTP/1.1") + s.b.served("POST /body HTTP/1.1"),
        3
    );
    s.wait_logged("POST /body HTTP/2.0", 3);
}

/// The same bind still serves clients that offer only HTTP/1.1, or no ALPN at all, and
/// s_client sees h2 agreed when it offers it.
#[test]
fn http11_clients_still_work_on_the_h2_bind() {
    let s = site("h2-alpn");
    let h1 = ok_text(&s.curl(&["--http1.1", "-i"], &["/app/one"]));
    assert!(h1.starts_with("HTTP/1.1 200 OK\r\n"), "{h1}");
    assert_eq!(echoed(&h1, "x-forwarded-proto"), ["https"], "{h1}");
    let no_alpn = ok_text(&s.curl(&["--no-alpn", "-i"], &["/app/two"]));
    assert!(no_alpn.starts_with("HTTP/1.1 200 OK\r\n"), "{no_alpn}");
    s.wait_logged("GET /app/one HTTP/1.1", 1);
    let addr = s.proxy.addr();
    for (offer, want) in [("h2,http/1.1", "h2"), ("http/1.1", "http/1.1")] {
        let h = s_client(addr, Some("localhost"), s.ca.cert(), &["-alpn", offer]);
        assert!(
            h.output.contains(&format!("ALPN protocol: {want}")),
            "offering {offer}:\n{}",
            h.output
        );
    }
}

/// Rapid Reset as a burst: 500 requests each reset right behind its HEADERS, in batches.
/// The connection ends with GOAWAY ENHANCE_YOUR_CALM long before 500 requests reach a
/// server, and the proxy keeps serving other clients.
#[test]
fn rapid_reset_burst_ends_with_goaway() {
    let s = site("h2-rapid-burst");
    let mut c = RawH2::connect(s.proxy.addr(), "localhost", s.ca.cert());
    let mut sent = 0;
    for _ in 0..10 {
        for _ in 0..50 {
            let id = c.get("/app/rr");
            c.reset(id);
        }
        if !c.flush() {
            break;
        }
        sent += 50;
    }
    let end = c.wait_end(Duration::from_secs(10));
    assert!(
        matches!(
            end,
            End::GoAway {
                code: ENHANCE_YOUR_CALM,
                ..
            }
        ),
        "after {sent} reset streams: {end:?}\n{}",
        s.proxy.stderr()
    );
    let reached = s.a.served("/app/rr") + s.b.served("/app/rr");
    assert!(
        reached < 150,
        "{reached} of {sent} reset requests reached a server"
    );
    // The log line is written once the GOAWAY is out, by the logger thread.
    let said = poll_until(Duration::from_secs(10), || {
        s.proxy
            .stderr()
            .contains("GOAWAY (ENHANCE_YOUR_CALM)")
            .then_some(())
    });
    assert!(said.is_some(), "{}", s.proxy.stderr());
    let after = ok_text(&s.curl(&["--http2", "-i"], &["/app/after"]));
    assert!(after.starts_with("HTTP/2 200"), "still serving: {after}");
}

/// Rapid Reset paced so that the proxy takes every stream before its reset arrives (h2's
/// pending-accept limit never sees them): each request waits on a 3 s server answer and is
/// reset 10 ms later. Past 100 resets in 10 s the proxy sends GOAWAY ENHANCE_YOUR_CALM; the
/// reset exchanges were logged as client aborts while waiting for the server (`CH`), and
/// other clients are still served.
#[test]
fn paced_resets_of_taken_streams_end_with_goaway() {
    let s = site("h2-rapid-paced");
    let mut c = RawH2::connect(s.proxy.addr(), "localhost", s.ca.cert());
    let mut end = End::Open;
    for _ in 0..150 {
        let id = c.get("/slow");
        if !c.flush() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        c.reset(id);
        if !c.flush() {
            break;
        }
        end = c.wait_end(Duration::from_millis(1));
        if end != End::Open {
            break;
        }
    }
    if end == End::Open {
        end = c.wait_end(Duration::from_secs(10));
    }
    assert!(
        matches!(
            end,
            End::GoAway {
                code: ENHANCE_YOUR_CALM,
                ..
            }
        ),
        "{end:?}\n{}",
        s.proxy.stderr()
    );
    let said = poll_until(Duration::from_secs(10), || {
        let log = s.proxy.stderr();
        log.contains("reset more than 100 streams within 10s")
            .then_some(log)
    });
    let log = said.unwrap_or_else(|| panic!("no reset warning:\n{}", s.proxy.stderr()));
    let aborted = s
        .logged("GET /slow HTTP/2.0")
        .iter()
        .filter(|l| l.contains(" CH"))
        .count();
    assert!(
        aborted >= 100,
        "{aborted} reset streams logged as client aborts:\n{log}"
    );
    let after = ok_text(&s.curl(&["--http2", "-i"], &["/app/after"]));
    assert!(after.starts_with("HTTP/2 200"), "still serving: {after}");
}
