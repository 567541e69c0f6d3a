//! `mode http` end to end: the proxy in front of real nginx nodes (echo module, static HLS
//! files made by ffmpeg), a python3-websockets echo server, and misbehaving scripted servers;
//! clients are raw TCP, curl, ffprobe and a python WebSocket client.
//!
//! The config follows seed 001's `http_lb` → `backend_http` (reqadd X-Forwarded-Proto, option
//! forwardfor, http-server-close, cookie JSESSIONID prefix nocache, redirect scheme https if
//! !{ ssl_fc }). Every assertion is on what a client or a backend observed; no test asserts
//! how long anything took.

use e2e::http_client::{
    curl, raw_exchange, scripted_server, status_of, ws_exchange, Conn, Response, WsServer,
};
use e2e::nginx_http::{served_by_owner, NginxHttp};
use e2e::util::{poll_until, require_tool, TestDir};
use e2e::{free_addr, free_port, loopback, Proxy};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PAGE_503: &str = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\ncustom 503: no AMS node is up\n";
const PAGE_504: &str = "HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\ncustom 504: the AMS node is too slow\n";

/// Two echo nodes (ams1 on 127.0.0.2, ams2 on 127.0.0.3) sharing one HLS folder.
struct Cluster {
    a: NginxHttp,
    b: NginxHttp,
    files: TestDir,
}

fn cluster() -> Cluster {
    let files = TestDir::new("http-files");
    let hls = files.join("hls");
    std::fs::create_dir_all(&hls).expect("hls folder");
    std::fs::write(files.join("503.http"), PAGE_503).expect("503 page");
    std::fs::write(files.join("504.http"), PAGE_504).expect("504 page");
    let a = NginxHttp::start("ams1", free_addr(loopback(2)), Some(&hls));
    let b = NginxHttp::start("ams2", free_addr(loopback(3)), Some(&hls));
    Cluster { a, b, files }
}

/// Seed 001's HTTP part, plus a keep-alive frontend, a route to the redirecting backend, and
/// a slow route with a short `timeout server`.
fn seed_cfg(port: u16, ka_port: u16, c: &Cluster) -> String {
    let dir = c.files.path().display();
    format!(
        r"global
    nbthread 2

defaults
    mode http
    option forwardfor
    option http-server-close
    option httplog
    timeout connect 2s
    timeout client 20s
    timeout server 20s
    timeout tunnel 2h
    errorfile 503 {dir}/503.http
    errorfile 504 {dir}/504.http

frontend http_lb
    bind 127.0.0.1:{port}
    reqadd X-Forwarded-Proto:\ http
    acl is_secure path_beg /secure
    use_backend backend_secure if is_secure
    use_backend backend_slow if {{ path_beg /slow }}
    default_backend backend_http

frontend http_ka
    bind 127.0.0.1:{ka_port}
    no option http-server-close
    option http-keep-alive
    default_backend backend_ka

backend backend_http
    cookie JSESSIONID prefix nocache
    server ams1 {a} cookie ams1
    server ams2 {b} cookie ams2

backend backend_ka
    no option http-server-close
    option http-keep-alive
    cookie JSESSIONID prefix nocache
    server ams1 {a} cookie ams1
    server ams2 {b} cookie ams2

backend backend_secure
    redirect scheme https if ! {{ ssl_fc }}
    server ams1 {a}

backend backend_slow
    timeout server 1s
    server ams1 {a}
",
        a = c.a.addr(),
        b = c.b.addr(),
    )
}

fn start(c: &Cluster) -> Proxy {
    let port = free_port(Ipv4Addr::LOCALHOST);
    let ka = free_port(Ipv4Addr::LOCALHOST);
    Proxy::start(&seed_cfg(port, ka, c))
}

/// Waits (boundedly) for an access-log line holding every part of `parts`.
fn logged(p: &Proxy, parts: &[&str]) {
    let found = poll_until(Duration::from_secs(10), || {
        p.stderr()
            .lines()
            .any(|l| parts.iter().all(|part| l.contains(part)))
            .then_some(())
    });
    assert!(
        found.is_some(),
        "no log line with {parts:?}:\n{}",
        p.stderr()
    );
}

fn node(r: &Response) -> String {
    r.line("node ")
        .unwrap_or_else(|| panic!("no node line in {:?}", r.text()))
}

/// The request head the backend echoed, as (name, value) lines.
fn seen_headers(r: &Response) -> Vec<(String, String)> {
    r.text()
        .lines()
        .skip_while(|l| !l.starts_with("conn "))
        .skip(2)
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .collect()
}

fn seen(r: &Response, name: &str) -> Vec<String> {
    seen_headers(r)
        .into_iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn redirect_to_https_keeps_the_host_and_its_port() {
    let c = cluster();
    let p = start(&c);
    let out = curl(&[
        "-i",
        "-H",
        "Host: lb.example:5080",
        &format!("http://{}/secure/page?x=1", p.addr()),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 302 Found\r\n"), "{text}");
    assert!(
        text.contains("\r\nlocation: https://lb.example:5080/secure/page?x=1\r\n"),
        "{text}"
    );
    assert!(
        c.a.requests().iter().all(|r| !r.contains("/secure")),
        "a redirect never reaches a server"
    );
    // The access line is written once the answer is out: wait for it, boundedly.
    logged(&p, &["backend_secure/<NOSRV>", " 302 ", " LR--"]);
}

/// HTTP/1.0 without a Host: HAProxy still redirects (to an empty host); the request must not
/// be proxied in the clear instead.
#[test]
fn redirect_scheme_without_a_host_still_redirects() {
    let c = cluster();
    let p = start(&c);
    let raw = raw_exchange(p.addr(), b"GET /secure/page?x=1 HTTP/1.0\r\n\r\n");
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(status_of(&raw), Some(302), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("\r\nlocation: https:///secure/page?x=1\r\n"),
        "{text}"
    );
    assert!(
        c.a.requests().iter().all(|r| !r.contains("/secure")),
        "the request never reaches a server"
    );
}

/// A HEAD answered by the proxy itself (here the stats page) carries no body,
/// so the next pipelined response on the connection is read correctly.
#[test]
fn head_answered_locally_has_no_body_and_pipelining_holds() {
    let port = free_port(Ipv4Addr::LOCALHOST);
    let cfg = format!(
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 20s\n    timeout server 20s\n\
         listen stats\n    bind 127.0.0.1:{port}\n    stats enable\n    stats uri /st\n\
         \x20   stats auth u:p\n"
    );
    let p = Proxy::start(&cfg);
    let mut conn = Conn::open(p.addr());
    // Two requests in one write: HEAD, then GET, both authorised (HAProxy closes after a 401).
    conn.send(
        b"HEAD /st;csv HTTP/1.1\r\nHost: a\r\nAuthorization: Basic dTpw\r\n\r\n\
          GET /st;csv HTTP/1.1\r\nHost: a\r\nAuthorization: Basic dTpw\r\n\r\n",
    );
    let second = conn.response(true).expect("HEAD 200");
    assert_eq!(second.status, 200);
    let third = conn
        .response(false)
        .expect("GET 200: the HEAD answer carried no body");
    assert_eq!(third.status, 200);
    assert!(
        third.text().starts_with("# pxname,svname,"),
        "{}",
        third.text()
    );
    // A HEAD to a 401 answer: its head alone, then the connection is usable or closed,
    // never followed by a stray body.
    let mut conn = Conn::open(p.addr());
    conn.send(b"HEAD /st HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(conn.response(true).expect("HEAD 401").status, 401);
    conn.send(b"GET /st;csv HTTP/1.1\r\nHost: a\r\nAuthorization: Basic dTpw\r\n\r\n");
    match conn.response(false) {
        Ok(r) => assert_eq!(r.status, 200, "{}", r.text()),
        Err(e) => assert!(
            e.starts_with("EOF after \"\"") || e.contains("reset"),
            "{e}"
        ),
    }
}

/// `http-response` rules act, backend first then frontend: headers set, removed and
/// rewritten, a status changed, and a denied response replaced by a 502 counted in `dresp`.
#[test]
fn http_response_rules_rewrite_and_deny() {
    let c = cluster();
    let port = free_port(Ipv4Addr::LOCALHOST);
    let cfg = format!(
        r"defaults
    mode http
    timeout connect 2s
    timeout client 20s
    timeout server 20s

frontend web
    bind 127.0.0.1:{port}
    acl posted method POST
    http-response set-header Strict-Transport-Security max-age=63072000
    http-response del-header Server
    http-response deny if posted
    http-response set-status 299 reason Checked if {{ res.hdr(x-backend) -m str ran }}
    stats enable
    stats uri /st
    default_backend app

backend app
    http-response set-header X-Backend ran
    http-response replace-header Set-Cookie (JSESSIONID=)(.*) \1rewritten-\2
    server ams1 {a}
",
        a = c.a.addr()
    );
    let p = Proxy::start(&cfg);
    let mut conn = Conn::open(p.addr());
    let r = conn.get("/app", &[]);
    assert_eq!(
        (r.status, r.header("x-backend")),
        (299, Some("ran")),
        "{}",
        r.text()
    );
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=63072000")
    );
    assert_eq!(r.header("server"), None, "nginx's Server header removed");
    assert_eq!(
        r.header("set-cookie"),
        Some("JSESSIONID=rewritten-sess-ams1; Path=/")
    );
    assert!(node(&r).contains("ams1"));
    let mut post = Conn::open(p.addr());
    post.send(b"POST /app/deny HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    let denied = post.response(false).expect("an answer");
    assert_eq!(denied.status, 502, "{}", denied.text());
    assert!(
        c.a.requests().iter().any(|r| r.contains("/app/deny")),
        "the server answered"
    );
    let csv = Conn::open(p.addr()).get("/st;csv", &[]).text();
    let dresp = csv
        .lines()
        .find(|l| l.starts_with("web,FRONTEND,"))
        .and_then(|l| l.split(',').nth(11))
        .map(str::to_string);
    assert_eq!(dresp.as_deref(), Some("1"), "{csv}");
}

#[test]
fn forwarded_headers_have_exact_values() {
    let c = cluster();
    let p = start(&c);
    let mut conn = Conn::open(p.addr());
    let r = conn.get("/app/headers", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(seen(&r, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen(&r, "x-forwarded-proto"), ["http"]);
    assert_eq!(seen(&r, "host"), ["lb.example"]);
    // option http-server-close: the server is told, the client keeps its connection.
    assert_eq!(seen(&r, "connection"), ["close"]);
    assert_eq!(r.header("connection"), None);
    let again = conn.get("/app/headers", &["X-Forwarded-For: 10.9.9.9"]);
    // HAProxy adds its own field after the client's: two lines, the proxy's last.
    assert_eq!(seen(&again, "x-forwarded-for"), ["10.9.9.9", "127.0.0.1"]);
}

#[test]
fn cookie_prefix_round_trip_and_fifty_sticky_requests() {
    let c = cluster();
    let p = start(&c);
    let mut conn = Conn::open(p.addr());
    let first = conn.get("/app/login", &[]);
    let set = first
        .header("set-cookie")
        .expect("a Set-Cookie")
        .to_string();
    let owner = node(&first);
    assert_eq!(set, format!("JSESSIONID={owner}~sess-{owner}; Path=/"));
    assert_eq!(first.header("cache-control"), Some("private"), "nocache");
    let cookie = set.split(';').next().unwrap_or_default().to_string();
    for i in 0..50 {
        // A fresh connection every other time: stickiness must not depend on the connection.
        if i % 2 == 1 {
            conn = Conn::open(p.addr());
        }
        let r = conn.get(
            &format!("/app/sticky/{i}"),
            &[&format!("Cookie: a=1; {cookie}; b=2")],
        );
        assert_eq!(r.status, 200);
        assert_eq!(node(&r), owner, "request {i}");
        assert_eq!(
            r.line("cookie ").as_deref(),
            Some(format!("a=1; JSESSIONID=sess-{owner}; b=2").as_str()),
            "the server sees its own value, without the prefix"
        );
    }
    let (on_owner, elsewhere) = served_by_owner(&owner, &c.a, &c.b, "/app/sticky/");
    assert_eq!((on_owner, elsewhere), (50, 0));
}

#[test]
fn routing_is_per_request_on_one_keep_alive_connection() {
    let c = cluster();
    let p = start(&c);
    let mut conn = Conn::open(p.addr());
    let plan: [(&str, &str, u16, &str); 5] = [
        ("/app/1", "Cookie: JSESSIONID=ams1~x", 200, "ams1"),
        ("/app/2", "Cookie: JSESSIONID=ams2~y", 200, "ams2"),
        ("/secure/3", "X-Nothing: 1", 302, ""),
        ("/app/4", "Cookie: JSESSIONID=ams1~z", 200, "ams1"),
        ("/app/5", "Cookie: JSESSIONID=ams2~w", 200, "ams2"),
    ];
    for (path, header, status, want) in plan {
        let r = conn.get(path, &[header]);
        assert_eq!(r.status, status, "{path}");
        if status == 200 {
            assert_eq!(node(&r), want, "{path}");
        }
    }
    // Pipelined: two requests in one write, answered in order.
    conn.send(
        b"GET /app/p1 HTTP/1.1\r\nHost: a\r\nCookie: JSESSIONID=ams2~q\r\n\r\n\
          GET /app/p2 HTTP/1.1\r\nHost: a\r\nCookie: JSESSIONID=ams1~q\r\n\r\n",
    );
    let r1 = conn.response(false).expect("first pipelined");
    let r2 = conn.response(false).expect("second pipelined");
    assert_eq!(
        (node(&r1), node(&r2)),
        ("ams2".to_string(), "ams1".to_string())
    );
}

#[test]
fn keep_alive_reuses_server_connections() {
    let c = cluster();
    let port = free_port(Ipv4Addr::LOCALHOST);
    let ka = free_port(Ipv4Addr::LOCALHOST);
    let p = Proxy::start(&seed_cfg(port, ka, &c));
    let mut conn = Conn::open(SocketAddr::from((Ipv4Addr::LOCALHOST, ka)));
    let mut seen_conns = Vec::new();
    for i in 0..3 {
        let r = conn.get(&format!("/app/ka/{i}"), &["Cookie: JSESSIONID=ams1~k"]);
        assert_eq!(node(&r), "ams1");
        assert_eq!(
            seen(&r, "connection"),
            Vec::<String>::new(),
            "no close to the server"
        );
        seen_conns.push(r.line("conn ").expect("conn line"));
    }
    // nginx's connection serial stays, its request count on it grows: one server connection.
    let serials: Vec<&str> = seen_conns
        .iter()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    let counts: Vec<&str> = seen_conns
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap_or(""))
        .collect();
    assert!(serials.iter().all(|s| *s == serials[0]), "{seen_conns:?}");
    assert_eq!(counts, ["1", "2", "3"], "{seen_conns:?}");
    // A large body (20 MB) streams through the same connection intact, HEAD has no body, and
    // the connection still serves the next request.
    let big: Vec<u8> = (0..20_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(c.files.join("hls/big.bin"), &big).expect("big file");
    let r = conn.get("/hls/big.bin", &["Cookie: JSESSIONID=ams2~k"]);
    assert_eq!(r.status, 200);
    assert!(
        r.body == big,
        "the 20 MB body arrived changed ({} bytes)",
        r.body.len()
    );
    conn.send(b"HEAD /hls/big.bin HTTP/1.1\r\nHost: a\r\n\r\n");
    let head = conn.response(true).expect("HEAD answer");
    assert_eq!(head.header("content-length"), Some("20000000"));
    let r = conn.get("/app/after", &["Cookie: JSESSIONID=ams1~k"]);
    assert_eq!(node(&r), "ams1");
    drop(p);
}

#[test]
fn a_dead_servers_cookie_is_redispatched() {
    let files = TestDir::new("redispatch");
    let mut a = NginxHttp::start("ams1", free_addr(loopback(4)), None);
    let b = NginxHttp::start("ams2", free_addr(loopback(5)), None);
    let port = free_port(Ipv4Addr::LOCALHOST);
    let cfg = format!(
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 20s\n    timeout server 20s\n\
         frontend f\n    bind 127.0.0.1:{port}\n    default_backend be\n\
         backend be\n    option redispatch\n    retries 1\n    cookie JSESSIONID prefix\n\
         \x20   server ams1 {} cookie ams1\n    server ams2 {} cookie ams2\n",
        a.addr(),
        b.addr()
    );
    let p = Proxy::start(&cfg);
    let mut conn = Conn::open(p.addr());
    let r = conn.get("/app/before", &["Cookie: JSESSIONID=ams1~s"]);
    assert_eq!(node(&r), "ams1");
    a.stop();
    for i in 0..3 {
        let mut fresh = Conn::open(p.addr());
        let r = fresh.get(&format!("/app/after/{i}"), &["Cookie: JSESSIONID=ams1~s"]);
        assert_eq!(r.status, 200, "{}", p.stderr());
        assert_eq!(node(&r), "ams2");
        assert_eq!(
            r.header("set-cookie"),
            Some("JSESSIONID=ams2~sess-ams2; Path=/")
        );
    }
    drop(files);
}

#[test]
fn websocket_idles_past_timeout_client_within_timeout_tunnel() {
    let w1 = WsServer::start("ws1", free_addr(loopback(6)));
    let w2 = WsServer::start("ws2", free_addr(loopback(7)));
    let port = free_port(Ipv4Addr::LOCALHOST);
    let cfg = format!(
        "defaults\n    mode http\n    option http-server-close\n    timeout connect 2s\n\
         \x20   timeout client 1s\n    timeout server 1s\n    timeout tunnel 30s\n\
         frontend ws\n    bind 127.0.0.1:{port}\n    default_backend ws_nodes\n\
         backend ws_nodes\n    cookie JSESSIONID prefix\n\
         \x20   server ws1 {} cookie ws1\n    server ws2 {} cookie ws2\n",
        w1.addr, w2.addr
    );
    let p = Proxy::start(&cfg);
    let url = format!("ws://{}/socket", p.addr());
    for target in ["ws1", "ws2"] {
        let got = ws_exchange(&url, &format!("JSESSIONID={target}~abc"), 3.0)
            .unwrap_or_else(|e| panic!("websocket through the proxy failed: {e}\n{}", p.stderr()));
        assert_eq!(got, [format!("{target}:first"), format!("{target}:second")]);
    }
}

#[test]
fn hls_playlist_and_segments_decode_through_the_proxy() {
    let c = cluster();
    let hls = c.files.join("hls");
    let made = Command::new(require_tool("ffmpeg"))
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg("testsrc=size=320x240:rate=25")
        .args([
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
        ])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-f",
            "hls",
            "-hls_time",
            "1",
            "-hls_list_size",
            "0",
        ])
        .arg(hls.join("live.m3u8"))
        .output()
        .expect("ffmpeg");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let p = start(&c);
    let url = format!("http://{}/hls/live.m3u8", p.addr());
    let probe = Command::new("timeout")
        .arg("60")
        .arg(require_tool("ffprobe"))
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&url)
        .output()
        .expect("ffprobe");
    assert!(
        probe.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&probe.stderr),
        p.stderr()
    );
    // ffprobe prints the count once per section it shows (program and stream).
    let text = String::from_utf8_lossy(&probe.stdout).into_owned();
    let counts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(
        !counts.is_empty() && counts.iter().all(|c| *c == "100"),
        "4 s at 25 fps: {text:?}"
    );
    let playlist = std::fs::read_to_string(hls.join("live.m3u8")).expect("playlist");
    let segment = playlist
        .lines()
        .find(|l| l.ends_with(".ts"))
        .expect("a segment");
    let mut conn = Conn::open(p.addr());
    let r = conn.get(&format!("/hls/{segment}"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("video/mp2t"));
    assert!(
        r.body == std::fs::read(hls.join(segment)).expect("segment"),
        "segment bytes differ"
    );
}

#[test]
fn expect_100_continue_upload_is_answered_and_forwarded() {
    let c = cluster();
    let p = start(&c);
    let payload: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let file = c.files.join("upload.bin");
    std::fs::write(&file, &payload).expect("upload file");
    // curl sends `Expect: 100-continue` for a body this large and waits for the 100.
    let out = curl(&[
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "15",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("http://{}/body", p.addr()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == payload,
        "the echoed body differs ({} bytes)",
        out.stdout.len()
    );
}

#[test]
fn seed_stats_listen_reaches_the_stats_page_with_its_auth() {
    let port = free_port(Ipv4Addr::LOCALHOST);
    let cfg = format!(
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 20s\n    timeout server 20s\n\
         listen stats\n    bind 127.0.0.1:{port}\n    mode http\n    stats enable\n\
         \x20   stats hide-version\n    stats realm Haproxy\\ Statistics\n\
         \x20   stats uri /haproxy_stats\n    stats auth Username:Password\n"
    );
    let p = Proxy::start(&cfg);
    let mut conn = Conn::open(p.addr());
    let r = conn.get("/haproxy_stats", &[]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r
        .header("www-authenticate")
        .is_some_and(|v| v.contains("Haproxy Statistics")));
    // "Username:Password" in base64; on the same keep-alive connection.
    let r = conn.get(
        "/haproxy_stats",
        &["Authorization: Basic VXNlcm5hbWU6UGFzc3dvcmQ="],
    );
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/html")));
    assert_eq!(Conn::open(p.addr()).get("/elsewhere", &[]).status, 503);
}

#[test]
fn slow_server_gets_504_with_the_errorfile() {
    let c = cluster();
    let p = start(&c);
    let mut conn = Conn::open(p.addr());
    let r = conn.get("/slow", &[]);
    assert_eq!(r.status, 504);
    assert_eq!(r.text(), "custom 504: the AMS node is too slow\n");
    logged(&p, &[" 504 ", " sH--"]);
}

#[test]
fn all_servers_down_gives_503_with_the_errorfile() {
    let files = TestDir::new("down");
    std::fs::write(files.join("503.http"), PAGE_503).expect("503 page");
    let port = free_port(Ipv4Addr::LOCALHOST);
    // Ports nobody listens on.
    let (x, y) = (free_addr(loopback(8)), free_addr(loopback(9)));
    let cfg = format!(
        "defaults\n    mode http\n    retries 1\n    timeout connect 1s\n    timeout client 20s\n\
         \x20   timeout server 20s\n    errorfile 503 {}/503.http\n\
         frontend f\n    bind 127.0.0.1:{port}\n    default_backend be\n\
         backend be\n    option redispatch\n    server ams1 {x}\n    server ams2 {y}\n",
        files.path().display()
    );
    let p = Proxy::start(&cfg);
    let r = Conn::open(p.addr()).get("/app", &[]);
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "custom 503: no AMS node is up\n");
}

/// Requests that must be refused, each carrying a smuggled request that must never reach the
/// backend. Each ends with the smuggled `GET /SMUGGLED-n`.
fn corpus() -> Vec<(&'static str, String, u16)> {
    let smuggled = |n: usize| format!("GET /SMUGGLED-{n} HTTP/1.1\r\nHost: a\r\n\r\n");
    let cases: Vec<(&'static str, String, u16)> = vec![
        ("CL and TE", "POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(), 400),
        ("TE and CL", "POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n".into(), 400),
        ("two CL", "POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 45\r\n\r\n".into(), 400),
        ("CL list", "POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 45\r\n\r\n".into(), 400),
        ("CL sign", "POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n".into(), 400),
        ("TE not last", "POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n".into(), 400),
        ("TE unknown", "POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n".into(), 501),
        ("TE vtab", "POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n".into(), 400),
        ("TE on 1.0", "POST /s HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(), 400),
        ("obs-fold", "GET /s HTTP/1.1\r\nHost: a\r\nX-A: b\r\n Transfer-Encoding: chunked\r\n\r\n".into(), 400),
        ("space before colon", "POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n".into(), 400),
        ("bare CR", "GET /s HTTP/1.1\r\nHost: a\r\nX-A: b\rContent-Length: 45\r\n\r\n".into(), 400),
        ("bare LF", "GET /s HTTP/1.1\nHost: a\r\nContent-Length: 45\r\n\r\n".into(), 400),
        ("NUL in value", "GET /s HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n".into(), 400),
        ("no Host", "GET /s HTTP/1.1\r\n\r\n".into(), 400),
        ("two Hosts", "GET /s HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(), 400),
        ("chunk size overflow", "POST /body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\nx\r\n0\r\n\r\n".into(), 400),
        ("chunk size not hex", "POST /body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".into(), 400),
        ("chunk longer than size", "POST /body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n".into(), 400),
        ("chunk LF only", "POST /body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n0\r\n\r\n".into(), 400),
        ("bad version", "GET /s HTTP/1.7\r\nHost: a\r\n\r\n".into(), 505),
        ("bad target", "GET s HTTP/1.1\r\nHost: a\r\n\r\n".into(), 400),
        ("huge head", format!("GET /s HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "b".repeat(40_000)), 431),
    ];
    cases
        .into_iter()
        .enumerate()
        .map(|(n, (name, req, status))| (name, format!("{req}{}", smuggled(n)), status))
        .collect()
}

#[test]
fn smuggling_corpus_is_refused_and_never_desynchronises_the_backend() {
    let c = cluster();
    let p = start(&c);
    for (name, request, want) in corpus() {
        let got = raw_exchange(p.addr(), request.as_bytes());
        assert_eq!(
            status_of(&got),
            Some(want),
            "{name}: {:?}\nproxy log:\n{}",
            String::from_utf8_lossy(&got),
            p.stderr()
        );
        let r = Conn::open(p.addr()).get("/app/after-case", &[]);
        assert_eq!(r.status, 200, "a valid request after '{name}'");
    }
    // A refused head has its process line (queued by the worker, written by the log thread).
    logged(&p, &["bad request from 127.0.0.1:"]);
    for n in [&c.a, &c.b] {
        let leaked: Vec<String> = n
            .requests()
            .into_iter()
            .filter(|l| l.contains("SMUGGLED"))
            .collect();
        assert!(
            leaked.is_empty(),
            "{} saw smuggled requests: {leaked:?}",
            n.name()
        );
    }
    // A valid chunked body with trailers reaches the server whole, and what follows on the
    // connection is the next request, not part of the body.
    let mut conn = Conn::open(p.addr());
    conn.send(
        b"POST /body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n\
          GET /app/next HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    let body = conn.response(false).expect("chunked upload answer");
    assert_eq!(body.text(), "hello world");
    assert_eq!(conn.response(false).expect("next").status, 200);
}

#[test]
fn backend_responses_with_conflicting_framing_become_502() {
    let (bad1, bad2) = (free_addr(loopback(10)), free_addr(loopback(11)));
    scripted_server(
        bad1,
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    scripted_server(
        bad2,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 7\r\n\r\nhi",
    );
    let port = free_port(Ipv4Addr::LOCALHOST);
    let cfg = format!(
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 20s\n    timeout server 20s\n\
         frontend f\n    bind 127.0.0.1:{port}\n    use_backend b2 if {{ path_beg /two }}\n    default_backend b1\n\
         backend b1\n    server s {bad1}\nbackend b2\n    server s {bad2}\n"
    );
    let p = Proxy::start(&cfg);
    for path in ["/one", "/two"] {
        let r = Conn::open(p.addr()).get(path, &[]);
        assert_eq!(r.status, 502, "{path}");
    }
}

#[test]
fn slowloris_is_closed_at_timeout_http_request() {
    let c = cluster();
    let port = free_port(Ipv4Addr::LOCALHOST);
    let cfg = format!(
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    timeout server 20s\n\
         \x20   timeout http-request 2s\n\
         frontend f\n    bind 127.0.0.1:{port}\n    default_backend be\nbackend be\n    server ams1 {}\n",
        c.a.addr()
    );
    let p = Proxy::start(&cfg);
    let request = b"GET /app/slowloris HTTP/1.1\r\nHost: lb.example\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let conn = Conn::open(p.addr());
    let mut writer = conn.stream.try_clone().expect("clone");
    let sent = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let trickle = {
        let (sent, done) = (sent.clone(), done.clone());
        std::thread::spawn(move || {
            for b in request.iter() {
                if done.load(Ordering::Relaxed) || writer.write_all(&[*b]).is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let mut reader = conn.stream;
    reader
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut got = Vec::new();
    let closed = match reader.read_to_end(&mut got) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    done.store(true, Ordering::Relaxed);
    let _ = trickle.join();
    assert!(closed, "the connection was not closed");
    assert_eq!(
        status_of(&got),
        Some(408),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        sent.load(Ordering::Relaxed) < request.len(),
        "closed only after the whole head was sent"
    );
    assert!(c.a.requests().iter().all(|l| !l.contains("slowloris")));
    logged(&p, &[" 408 ", " cR--"]);
}

/// `proxy_http_spliced_bytes_total` from the proxy's Prometheus page.
fn spliced_bytes(metrics: SocketAddr) -> u64 {
    let out = curl(&[&format!("http://{metrics}/metrics")]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("proxy_http_spliced_bytes_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no proxy_http_spliced_bytes_total in:\n{text}")) as u64
}

/// Issue #4: large bodies of known length move by splice(2) — a 12 MB download (Content-Length
/// from nginx) and a 1 MB upload (curl's Content-Length) arrive byte-exact (sha256), and the
/// proxy's `proxy_http_spliced_bytes_total` counts their bytes (all but what came with the
/// heads, which goes through the buffer first). The connection serves a request after.
#[test]
fn large_bodies_of_known_length_are_spliced_byte_exact() {
    let c = cluster();
    let port = free_port(Ipv4Addr::LOCALHOST);
    let metrics = free_addr(Ipv4Addr::LOCALHOST);
    let cfg = format!(
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 20s\n\
         \x20   timeout server 20s\n\
         frontend f\n    bind 127.0.0.1:{port}\n    default_backend be\n\
         backend be\n    server ams1 {}\n\
         listen metrics\n    bind {metrics}\n\
         \x20   http-request use-service prometheus-exporter if {{ path /metrics }}\n",
        c.a.addr()
    );
    let p = Proxy::start(&cfg);
    assert_eq!(spliced_bytes(metrics), 0);
    let big: Vec<u8> = (0..12_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect();
    std::fs::write(c.files.join("hls/seg.ts"), &big).expect("big file");
    let sha = |b: &[u8]| e2e::hex(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    let mut conn = Conn::open(p.addr());
    let r = conn.get("/hls/seg.ts", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("12000000"));
    assert_eq!(sha(&r.body), sha(&big), "download through the proxy");
    let after_download = spliced_bytes(metrics);
    // At most one buffer (tune.bufsize, 16 KiB) came with the head and was copied.
    assert!(
        (12_000_000 - 16_384..=12_000_000).contains(&after_download),
        "spliced {after_download} of 12000000"
    );
    let r = conn.get("/app/after", &[]);
    assert_eq!(r.status, 200, "the connection goes on after a spliced body");

    let upload: Vec<u8> = big[..1_000_000].to_vec();
    let file = c.files.join("upload.bin");
    std::fs::write(&file, &upload).expect("upload file");
    let out = curl(&[
        "--data-binary",
        &format!("@{}", file.display()),
        "-H",
        "Content-Type: application/octet-stream",
        "-H",
        "Expect:",
        &format!("http://{}/body", p.addr()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sha(&out.stdout),
        sha(&upload),
        "nginx echoed the upload whole"
    );
    let uploaded = spliced_bytes(metrics) - after_download;
    assert!(
        (1_000_000 - 16_384..=1_000_000).contains(&uploaded),
        "spliced {uploaded} of the 1000000-byte upload"
    );
}

/// What a keep-alive test server saw: the most requests it had in progress at once, how many
/// it answered, on how many connections.
#[derive(Default)]
struct Seen {
    in_progress: AtomicUsize,
    most_at_once: AtomicUsize,
    answered: AtomicUsize,
    connections: AtomicUsize,
}

/// A keep-alive HTTP/1.1 server that holds every request a moment before answering it, so
/// that two requests sent to it at once would overlap there.
fn slow_keep_alive_server(addr: SocketAddr) -> (SocketAddr, Arc<Seen>) {
    let listener = std::net::TcpListener::bind(addr).expect("bind the slow server");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let shared = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let seen = shared.clone();
            std::thread::spawn(move || serve_slowly(conn, &seen));
        }
    });
    (addr, seen)
}

/// One request: its head, then its Content-Length body if any. `None` at the end.
fn read_request(reader: &mut impl std::io::BufRead) -> Option<()> {
    let mut length = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()
}

fn serve_slowly(conn: std::net::TcpStream, seen: &Seen) {
    let mut reader = std::io::BufReader::new(&conn);
    let mut writer = &conn;
    while read_request(&mut reader).is_some() {
        let now = seen.in_progress.fetch_add(1, Ordering::SeqCst) + 1;
        seen.most_at_once.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(200));
        // Out of progress before the answer leaves: the next request can only follow it.
        seen.in_progress.fetch_sub(1, Ordering::SeqCst);
        seen.answered.fetch_add(1, Ordering::SeqCst);
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .is_err()
        {
            return;
        }
    }
}

/// An upload whose body follows the proxy's `100 Continue`: the body is not in the proxy's
/// buffer when the request is sent, so it goes on a fresh server connection (a pooled one
/// could not be replayed), which is pooled after the answer.
fn upload_on_a_fresh_connection(conn: &mut Conn) -> u16 {
    conn.send(b"POST /warm HTTP/1.1\r\nHost: lb.example\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    let interim = conn.response(true).expect("the interim answer");
    assert_eq!(interim.status, 100);
    conn.send(b"warm");
    conn.response(false).expect("the upload's answer").status
}

/// `maxconn 1` holds for requests on pooled server connections too: with two idle pooled
/// connections, two keep-alive clients sending at the same time never have two requests at
/// the server at once (the second waits in the queue), and every request is answered.
#[test]
fn maxconn_holds_for_requests_on_pooled_connections() {
    let (server, seen) = slow_keep_alive_server(free_addr(loopback(8)));
    let port = free_port(Ipv4Addr::LOCALHOST);
    // One worker: every request sees its pool of idle server connections; `http-reuse
    // always` lets each client's first request take one too (the default `safe` would open
    // a connection of its own for it).
    let cfg = format!(
        "global\n    nbthread 1\n\
         defaults\n    mode http\n    option http-keep-alive\n    timeout connect 2s\n\
         \x20   timeout client 20s\n    timeout server 20s\n    timeout queue 30s\n\
         frontend f\n    bind 127.0.0.1:{port}\n    default_backend be\n\
         backend be\n    http-reuse always\n    server s1 {server} maxconn 1\n"
    );
    let p = Proxy::start(&cfg);
    let mut warm = Conn::open(p.addr());
    for _ in 0..2 {
        assert_eq!(upload_on_a_fresh_connection(&mut warm), 200);
    }
    assert_eq!(
        seen.connections.load(Ordering::SeqCst),
        2,
        "two server connections, both idle in the pool now"
    );
    const REQUESTS: usize = 3;
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let addr = p.addr();
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                (0..REQUESTS)
                    .map(|i| conn.get(&format!("/c{c}/{i}"), &[]).status)
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    for client in clients {
        let statuses = client.join().expect("client thread");
        assert_eq!(statuses, [200; REQUESTS], "{}", p.stderr());
    }
    assert_eq!(seen.answered.load(Ordering::SeqCst), 2 + 2 * REQUESTS);
    assert_eq!(
        seen.most_at_once.load(Ordering::SeqCst),
        1,
        "two requests at the server at once despite maxconn 1"
    );
    assert_eq!(
        seen.connections.load(Ordering::SeqCst),
        2,
        "every GET went on a pooled connection"
    );
}

/// The `conn N M` line nginx echoes: its connection number and the requests it carried.
fn server_conn(r: &Response) -> (String, u32) {
    let line = r
        .line("conn ")
        .unwrap_or_else(|| panic!("no conn line in {:?}", r.text()));
    let mut words = line.split_whitespace();
    let id = words.next().unwrap_or_default().to_string();
    let n = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    (id, n)
}

fn reuse_cfg(port: u16, mode: &str, server: SocketAddr) -> String {
    format!(
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 20s\n    timeout server 20s\n\
         frontend f\n    bind 127.0.0.1:{port}\n    default_backend b\n\
         backend b\n    http-reuse {mode}\n    server s {server}\n"
    )
}

/// `http-reuse safe` (the default): a client's first request never goes on a connection
/// another client's request used; its later requests may. `never` shares nothing between
/// clients, and a client's later requests go on its own connection again.
#[test]
fn http_reuse_safe_keeps_first_requests_on_their_own_connection() {
    let c = cluster();
    for mode in ["safe", "never"] {
        let port = free_port(Ipv4Addr::LOCALHOST);
        let p = Proxy::start(&reuse_cfg(port, mode, c.a.addr()));
        let mut alice = Conn::open(p.addr());
        let (a1, _) = server_conn(&alice.get("/app", &[]));
        let mut bob = Conn::open(p.addr());
        let (b1, b1_count) = server_conn(&bob.get("/app", &[]));
        assert_ne!(
            a1, b1,
            "{mode}: bob's first request on alice's server connection"
        );
        assert_eq!(
            b1_count, 1,
            "{mode}: a fresh connection for a first request"
        );
        let (b2, b2_count) = server_conn(&bob.get("/app", &[]));
        assert!(
            b2_count > 1,
            "{mode}: a later request on a pooled connection"
        );
        if mode == "never" {
            assert_eq!(b2, b1, "never: bob's own connection, not alice's");
        }
    }
}

/// A backend that answers the first request of each connection and closes the connection,
/// unanswered, on the second: a pooled connection that dies under a request. Counts requests.
fn closes_on_second_request() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind(free_addr(loopback(4))).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || serve_once_then_drop(conn, &seen));
        }
    });
    (addr, requests)
}

fn serve_once_then_drop(mut conn: std::net::TcpStream, seen: &AtomicUsize) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    for answered in 0.. {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        seen.fetch_add(1, Ordering::SeqCst);
        buf.clear();
        if answered > 0 {
            return; // dropped unanswered
        }
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    }
}

/// A pooled connection that dies under a request: an idempotent GET is sent again on a
/// fresh connection (the client sees 200), a POST is never sent twice (the client sees a
/// 502). HAProxy 2.6 (without `retry-on`) sends neither again and closes the client
/// connection in both cases.
#[test]
fn a_post_is_never_replayed_after_a_failed_reuse() {
    for (method, status, sent) in [("GET", Some(200), 3), ("POST", Some(502), 2)] {
        let (server, requests) = closes_on_second_request();
        let port = free_port(Ipv4Addr::LOCALHOST);
        // `always`: the POST may take the pooled connection, so the failure can happen.
        let p = Proxy::start(&reuse_cfg(port, "always", server));
        let mut conn = Conn::open(p.addr());
        assert_eq!(conn.get("/one", &[]).status, 200);
        conn.send(
            format!("{method} /two HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi").as_bytes(),
        );
        let got = conn.response(false).ok().map(|r| r.status);
        let (status, sent) = if e2e::proxy::is_reference_haproxy() {
            (None, 2)
        } else {
            (status, sent)
        };
        assert_eq!(got, status, "{method}");
        assert_eq!(
            requests.load(Ordering::SeqCst),
            sent,
            "{method}: requests the server got"
        );
    }
}
