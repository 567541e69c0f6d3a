//! The PROXY protocol both ways (issue #13), against real peers:
//!
//! * `server … send-proxy|send-proxy-v2`: the header a recording backend gets, byte for byte,
//!   for every forward engine and in mode http (where a connection naming one client must
//!   never serve another), and a real HAProxy with `bind … accept-proxy` behind the proxy
//!   seeing the client's address;
//! * `bind … accept-proxy` behind a real HAProxy that sends the header: the original client
//!   in the access-log line, ACL `src`, X-Forwarded-For, `send-proxy` onward, on a TLS bind;
//!   a missing or malformed header closes the connection before anything reaches a server.
//!
//! Clients connect from 127.0.0.5 (bound before connecting) so that their address differs
//! from every hop's (127.0.0.1).

use e2e::http_client::{connect_from, curl, raw_exchange, status_of, Conn};
use e2e::recorder::{requests_from, Recorder};
use e2e::tls::ensure_example_cert;
use e2e::{free_addr, free_port, loopback, wait_until, Proxy};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));
const OTHER_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6));
const V2_SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

fn local_port() -> u16 {
    free_port(Ipv4Addr::LOCALHOST)
}

const DEFAULTS: &str = "defaults
    timeout connect 2s
    timeout client 10s
    timeout server 10s
";

/// CRC32C (Castagnoli), to check a v2 header's checksum TLV independently of the proxy's.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82F6_3B78 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// The v2 header with a CRC32C TLV for a TCP/IPv4 client, as the protocol spells it.
fn v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else {
        panic!("IPv4 ends only")
    };
    let mut h = V2_SIG.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0x00, 12 + 7]);
    h.extend_from_slice(&s.ip().octets());
    h.extend_from_slice(&d.ip().octets());
    h.extend_from_slice(&s.port().to_be_bytes());
    h.extend_from_slice(&d.port().to_be_bytes());
    h.extend_from_slice(&[0x03, 0x00, 0x04, 0, 0, 0, 0]);
    let sum = crc32c(&h).to_be_bytes();
    let at = h.len() - 4;
    h[at..].copy_from_slice(&sum);
    h
}

/// One GET through `addr` from `src`; the client's own address (to predict the header).
fn get_from(src: IpAddr, addr: SocketAddr, path: &str) -> SocketAddr {
    let mut c = Conn::open_from(src, addr);
    let me = c.stream.local_addr().expect("client address");
    let r = c.get(path, &["Connection: close"]);
    assert_eq!(r.status, 200, "GET {path} through {addr}: {}", r.text());
    me
}

fn tcp_proxy_cfg(port: u16, engine: &str, server: &str) -> String {
    format!(
        "global\n    nbthread 1\n{DEFAULTS}    mode tcp\n\
         frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n\
         backend be\n    forward-engine {engine}\n    server s {server}\n"
    )
}

/// The header goes out before any client byte whichever engine then moves the flow: copy,
/// splice(2) and sockmap all get the server socket only after it was written.
#[test]
fn send_proxy_headers_are_byte_exact_for_every_engine() {
    for engine in ["copy", "splice", "sockmap"] {
        let v1 = Recorder::start(free_addr(loopback(2)));
        let port = local_port();
        let proxy = Proxy::start(&tcp_proxy_cfg(
            port,
            engine,
            &format!("{} send-proxy", v1.addr()),
        ));
        let me = get_from(CLIENT, proxy.addr(), "/v1");
        let got = v1.wait_requests(1);
        let expected = format!(
            "PROXY TCP4 127.0.0.5 127.0.0.1 {} {port}\r\nGET /v1 HTTP/1.1\r\n",
            me.port()
        );
        assert!(
            got[0].starts_with(expected.as_bytes()),
            "{engine}: the backend got {:?}",
            String::from_utf8_lossy(&got[0])
        );
        drop(proxy);

        let v2 = Recorder::start(free_addr(loopback(2)));
        let port = local_port();
        let proxy = Proxy::start(&tcp_proxy_cfg(
            port,
            engine,
            &format!("{} send-proxy-v2 proxy-v2-options crc32c", v2.addr()),
        ));
        let me = get_from(CLIENT, proxy.addr(), "/v2");
        let got = v2.wait_requests(1);
        let mut expected = v2_header(me, SocketAddr::from(([127, 0, 0, 1], port)));
        expected.extend_from_slice(b"GET /v2 HTTP/1.1\r\n");
        assert!(
            got[0].starts_with(&expected),
            "{engine}: the backend got {:02x?}",
            &got[0][..got[0].len().min(48)]
        );
    }
}

/// The source address a PROXY header at the start of `conn` names.
fn header_source(conn: &[u8]) -> Option<IpAddr> {
    let text = String::from_utf8_lossy(conn);
    let line = text.strip_prefix("PROXY TCP4 ")?.split("\r\n").next()?;
    line.split(' ').next()?.parse().ok()
}

/// The request paths on one backend connection.
fn paths(conn: &[u8]) -> Vec<String> {
    let at = requests_from(conn).unwrap_or(0);
    String::from_utf8_lossy(&conn[at..])
        .lines()
        .filter_map(|l| l.strip_prefix("GET "))
        .filter_map(|l| l.split(' ').next().map(String::from))
        .collect()
}

/// Mode http: every server connection starts with the header of the client it serves, and a
/// connection that named one client never carries another's request (the keep-alive pool
/// would otherwise hand client A's connection to client B, passing B off as A).
#[test]
fn http_connections_naming_a_client_serve_only_that_client() {
    let rec = Recorder::start(free_addr(loopback(2)));
    let port = local_port();
    let proxy = Proxy::start(&format!(
        "global\n    nbthread 1\n{DEFAULTS}    mode http\n    option http-keep-alive\n\
         frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n\
         backend be\n    server s {} send-proxy\n",
        rec.addr()
    ));
    for (client, name) in [(CLIENT, "a"), (OTHER_CLIENT, "b")] {
        let mut c = Conn::open_from(client, proxy.addr());
        for n in 1..=2 {
            let r = c.get(&format!("/{name}{n}"), &[]);
            assert_eq!(r.status, 200, "{name}{n}");
        }
    }
    let conns = wait_until(
        "all four requests at the backend",
        Duration::from_secs(15),
        || {
            let conns = rec.connections();
            let total: usize = conns.iter().map(|c| paths(c).len()).sum();
            (total == 4).then_some(conns)
        },
    );
    for conn in &conns {
        let src = header_source(conn);
        let want = match src {
            Some(ip) if ip == CLIENT => "/a",
            Some(ip) if ip == OTHER_CLIENT => "/b",
            other => panic!("a connection without a client's header: {other:?}"),
        };
        for p in paths(conn) {
            assert!(
                p.starts_with(want),
                "request {p} on a connection that named {src:?}"
            );
        }
    }
}

/// HAProxy's frontend answers with the addresses its `accept-proxy` bind received.
fn haproxy_backend(v1: SocketAddr, v2: SocketAddr) -> Proxy {
    let answer = "http-request return status 200 content-type text/plain \
                  lf-string \"src=%[src] dst=%[dst]:%[dst_port]\\n\"";
    Proxy::start_haproxy(&format!(
        "global\n    nbthread 1\n{DEFAULTS}    mode http\n\
         frontend pp_v1\n    bind {v1} accept-proxy\n    {answer}\n\
         frontend pp_v2\n    bind {v2} accept-proxy\n    {answer}\n"
    ))
}

/// A real `accept-proxy` peer behind the proxy: mode tcp with v1, mode http with v2 (and the
/// checksum TLV, which HAProxy verifies) both tell it the client's address and the address
/// the client connected to.
#[test]
fn haproxy_behind_the_proxy_sees_the_client() {
    let (hv1, hv2) = (free_addr(loopback(3)), free_addr(loopback(3)));
    let _haproxy = haproxy_backend(hv1, hv2);
    let (tcp_port, http_port) = (local_port(), local_port());
    let _proxy = Proxy::start(&format!(
        "global\n    nbthread 1\n{DEFAULTS}\
         frontend tcp_fe\n    mode tcp\n    bind 127.0.0.1:{tcp_port}\n    default_backend to_v1\n\
         backend to_v1\n    mode tcp\n    server h {hv1} send-proxy\n\
         frontend http_fe\n    mode http\n    bind 127.0.0.1:{http_port}\n    default_backend to_v2\n\
         backend to_v2\n    mode http\n    server h {hv2} send-proxy-v2 proxy-v2-options crc32c\n"
    ));
    for port in [tcp_port, http_port] {
        let mut c = Conn::open_from(CLIENT, SocketAddr::from(([127, 0, 0, 1], port)));
        let r = c.get("/", &["Connection: close"]);
        assert_eq!(
            (r.status, r.text()),
            (200, format!("src=127.0.0.5 dst=127.0.0.1:{port}\n")),
            "through port {port}"
        );
    }
}

/// HAProxy hops in mode tcp that send the header (v1, v2) to the proxy's accept-proxy binds.
fn haproxy_front(hops: &[(u16, u16, &str)]) -> Proxy {
    let mut cfg = format!("global\n    nbthread 1\n{DEFAULTS}    mode tcp\n");
    for (hop, to, how) in hops {
        cfg.push_str(&format!(
            "listen hop_{hop}\n    bind 127.0.0.1:{hop}\n    server us 127.0.0.1:{to} {how}\n"
        ));
    }
    Proxy::start_haproxy(&cfg)
}

fn traffic_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| !l.starts_with('['))
        .map(String::from)
        .collect()
}

/// Behind HAProxy: the client's address, not the hop's, is what the proxy acts on — the log
/// line, `src` in an ACL (127.0.0.5 passes, 127.0.0.6 is denied: both would share the hop's
/// address without the header), and X-Forwarded-For.
#[test]
fn accept_proxy_behind_haproxy_uses_the_client_address() {
    let rec = Recorder::start(free_addr(loopback(2)));
    let (u1, u2, h1, h2) = (local_port(), local_port(), local_port(), local_port());
    let proxy = Proxy::start(&format!(
        "global\n    nbthread 1\n{DEFAULTS}    mode http\n\
         frontend web\n    bind 127.0.0.1:{u1} accept-proxy\n    bind 127.0.0.1:{u2} accept-proxy\n\
         \x20   option forwardfor\n    http-request deny unless {{ src 127.0.0.5 }}\n\
         \x20   default_backend be\n\
         backend be\n    server rec {}\n",
        rec.addr()
    ));
    let _hops = haproxy_front(&[(h1, u1, "send-proxy"), (h2, u2, "send-proxy-v2")]);
    for (hop, path) in [(h1, "/via-v1"), (h2, "/via-v2")] {
        let hop = SocketAddr::from(([127, 0, 0, 1], hop));
        let me = get_from(CLIENT, hop, path);
        let mut denied = Conn::open_from(OTHER_CLIENT, hop);
        let r = denied.get(path, &["Connection: close"]);
        assert_eq!(r.status, 403, "127.0.0.6 is not allowed");
        let line = wait_until("the request's log line", Duration::from_secs(10), || {
            traffic_lines(&proxy.stderr())
                .into_iter()
                .find(|l| l.contains(&format!("GET {path} ")) && l.contains(" 200 "))
        });
        assert!(
            line.starts_with(&format!("{me} ")),
            "the log names the client {me}: {line}"
        );
    }
    // The backend's keep-alive pool may carry both requests on one connection.
    let heads = wait_until(
        "both requests at the backend",
        Duration::from_secs(15),
        || {
            let heads = request_heads(&rec.connections());
            (heads.len() >= 2).then_some(heads)
        },
    );
    assert_eq!(heads.len(), 2, "the denied requests reached no server");
    for head in &heads {
        assert!(
            head.contains("\r\nx-forwarded-for: 127.0.0.5\r\n"),
            "X-Forwarded-For names the client: {head}"
        );
    }
}

/// Every request head the backend got, lower-cased, over all its connections.
fn request_heads(conns: &[Vec<u8>]) -> Vec<String> {
    conns
        .iter()
        .flat_map(|c| {
            let at = requests_from(c).unwrap_or(c.len());
            String::from_utf8_lossy(&c[at..])
                .to_ascii_lowercase()
                .split_terminator("\r\n\r\n")
                .map(|h| format!("{h}\r\n"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Mode tcp passes the received addresses on: the server behind gets a header naming the
/// client and the address it connected to (HAProxy's hop), not the hop's connection.
#[test]
fn accept_proxy_in_mode_tcp_passes_the_origin_on() {
    let rec = Recorder::start(free_addr(loopback(2)));
    let (us, hop) = (local_port(), local_port());
    let proxy = Proxy::start(&format!(
        "global\n    nbthread 1\n{DEFAULTS}    mode tcp\n\
         frontend fe\n    bind 127.0.0.1:{us} accept-proxy\n    default_backend be\n\
         backend be\n    server rec {} send-proxy\n",
        rec.addr()
    ));
    let _hop = haproxy_front(&[(hop, us, "send-proxy-v2")]);
    let me = get_from(CLIENT, SocketAddr::from(([127, 0, 0, 1], hop)), "/tcp");
    let got = rec.wait_requests(1);
    let expected = format!("PROXY TCP4 127.0.0.5 127.0.0.1 {} {hop}\r\n", me.port());
    assert!(
        got[0].starts_with(expected.as_bytes()),
        "the backend got {:?}",
        String::from_utf8_lossy(&got[0])
    );
    let line = wait_until("the session's log line", Duration::from_secs(10), || {
        traffic_lines(&proxy.stderr())
            .into_iter()
            .find(|l| l.contains(" fe be/rec "))
    });
    assert!(line.starts_with(&format!("{me} ")), "log line: {line}");
}

/// `accept-proxy ssl`: the header comes before the TLS handshake (HAProxy's hop passes the
/// client's TLS bytes through after it).
#[test]
fn accept_proxy_on_a_tls_bind() {
    let rec = Recorder::start(free_addr(loopback(2)));
    let (us, hop) = (local_port(), local_port());
    let cert = ensure_example_cert();
    let _proxy = Proxy::start(&format!(
        "global\n    nbthread 1\n{DEFAULTS}    mode http\n\
         frontend tls\n    bind 127.0.0.1:{us} accept-proxy ssl crt {}\n\
         \x20   option forwardfor\n    default_backend be\n\
         backend be\n    server rec {}\n",
        cert.display(),
        rec.addr()
    ));
    let _hop = haproxy_front(&[(hop, us, "send-proxy")]);
    let out = curl(&[
        "-k",
        "--interface",
        "127.0.0.5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("https://127.0.0.1:{hop}/tls"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = rec.wait_requests(1);
    let head = String::from_utf8_lossy(&got[0]).to_ascii_lowercase();
    assert!(
        head.starts_with("get /tls ") && head.contains("\r\nx-forwarded-for: 127.0.0.5\r\n"),
        "{head}"
    );
}

/// The `ereq` column of a row of the stats CSV.
fn ereq(stats: SocketAddr, proxy: &str) -> Option<u64> {
    let mut c = Conn::open(stats);
    let csv = c.get("/stats;csv", &["Connection: close"]).text();
    let mut lines = csv.lines();
    let columns: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
    let at = columns.iter().position(|c| *c == "ereq")?;
    let row = lines.find(|l| l.starts_with(&format!("{proxy},FRONTEND,")))?;
    row.split(',').nth(at)?.parse().ok()
}

/// A connection without a valid header is closed before anything reaches a server, logged,
/// and counted in the frontend's `ereq`; a valid header on the same bind passes (so each
/// refusal is the header's doing). Silence is cut by `timeout client`.
#[test]
fn a_malformed_header_is_refused() {
    let rec = Recorder::start(free_addr(loopback(2)));
    let (port, stats) = (local_port(), local_port());
    let proxy = Proxy::start(&format!(
        "global\n    nbthread 1\n\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 1s\n    timeout server 10s\n\
         frontend fe\n    bind 127.0.0.1:{port} accept-proxy\n    option forwardfor\n\
         \x20   default_backend be\n\
         backend be\n    server rec {}\n\
         listen stats\n    bind 127.0.0.1:{stats}\n    stats enable\n    stats uri /stats\n",
        rec.addr()
    ));
    let request = "GET /sneaky HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut bad_family = V2_SIG.to_vec();
    bad_family.extend_from_slice(&[0x21, 0x41, 0x00, 0x0c, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
    bad_family.extend_from_slice(request.as_bytes());
    for (bad, what) in [
        (
            format!("PROXY TCP4 1.2.3.4 nonsense\r\n{request}").into_bytes(),
            "invalid PROXY protocol header",
        ),
        (
            request.as_bytes().to_vec(),
            "does not look like a PROXY protocol header",
        ),
        (bad_family, "unknown address family"),
    ] {
        let got = raw_exchange(proxy.addr(), &bad);
        assert!(got.is_empty(), "{what}: answered {got:?}");
        wait_until(what, Duration::from_secs(10), || {
            proxy.stderr().contains(what).then_some(())
        });
    }
    // Nothing at all: closed once `timeout client` (1 s) ran out.
    let mut silent = connect_from(CLIENT, proxy.addr());
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = silent.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut by timeout client"
    );
    wait_until("the timeout's log line", Duration::from_secs(10), || {
        proxy
            .stderr()
            .contains("Timeout while waiting for PROXY protocol header")
            .then_some(())
    });
    // The control: a valid header on the same bind is served, with its address.
    let mut ok = connect_from(CLIENT, proxy.addr());
    ok.write_all(b"PROXY TCP4 198.51.100.7 127.0.0.1 1234 80\r\nGET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    ok.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = Vec::new();
    let _ = ok.read_to_end(&mut answer);
    assert_eq!(status_of(&answer), Some(200), "{answer:?}");
    let got = rec.wait_requests(1);
    assert_eq!(got.len(), 1, "only the valid connection reached the server");
    let head = String::from_utf8_lossy(&got[0]).to_ascii_lowercase();
    assert!(
        head.starts_with("get /ok ") && head.contains("x-forwarded-for: 198.51.100.7\r\n"),
        "{head}"
    );
    let refused = wait_until("ereq 4", Duration::from_secs(10), || {
        let n = ereq(SocketAddr::from(([127, 0, 0, 1], stats)), "fe")?;
        (n == 4).then_some(n)
    });
    assert_eq!(refused, 4, "three malformed headers and one timeout");
}
