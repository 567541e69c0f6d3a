//! Syslog targets: a `log ADDR FACILITY LEVEL` line sends HAProxy-compatible RFC 3164 datagrams
//! (access lines in `tcplog` format and the process's own messages), the level filters, and a
//! unix datagram socket (as `/dev/log`) works like UDP. The receiving ends are sockets the
//! tests own; the backend is the harness's `TcpServer`.

use e2e::tcp::TcpServer;
use e2e::{free_addr, free_port, loopback, pump, Proxy, Signal, TestDir};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The largest wait for one datagram; generous, never an assertion about speed.
const RECV_LIMIT: Duration = Duration::from_secs(20);

fn config(target: &str, level: &str, port: u16, server: &TcpServer) -> String {
    format!(
        "global
    log {target} local0 {level}
    nbthread 1

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend fe_syslog
    bind 127.0.0.1:{port}
    default_backend be_syslog

backend be_syslog
    server s1 {}
",
        server.addr()
    )
}

/// Something that hands out datagrams.
trait Datagrams {
    fn next(&self, limit: Duration) -> Option<String>;
}

impl Datagrams for UdpSocket {
    fn next(&self, limit: Duration) -> Option<String> {
        self.set_read_timeout(Some(limit.max(Duration::from_millis(1))))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        let n = self.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Datagrams for UnixDatagram {
    fn next(&self, limit: Duration) -> Option<String> {
        self.set_read_timeout(Some(limit.max(Duration::from_millis(1))))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        let n = self.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

/// Datagrams until one satisfies `want` (returned with everything seen before it).
fn wait_for(rx: &dyn Datagrams, want: impl Fn(&str) -> bool) -> (Option<String>, Vec<String>) {
    let deadline = Instant::now() + RECV_LIMIT;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.next(left) {
            Some(d) if want(&d) => return (Some(d), seen),
            Some(d) => seen.push(d),
            None => break,
        }
    }
    (None, seen)
}

/// Checks the RFC 3164 header HAProxy sends (`<PRI>Mmm dd hh:mm:ss haproxy[pid]: `) and
/// returns the message after it.
fn rfc3164_message(datagram: &str, pri: u8, pid: u32) -> &str {
    let prefix = format!("<{pri}>");
    let rest = datagram
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("expected {prefix}: {datagram:?}"));
    let (stamp, rest) = rest.split_at(15);
    assert!(MONTHS.contains(&&stamp[..3]), "month in {datagram:?}");
    let day = stamp[4..6].trim_start();
    assert!(
        day.parse::<u32>().is_ok_and(|d| (1..=31).contains(&d)),
        "day in {datagram:?}"
    );
    let b = stamp.as_bytes();
    assert!(
        b[3] == b' ' && b[6] == b' ' && b[9] == b':' && b[12] == b':',
        "time layout in {datagram:?}"
    );
    let tag = format!(" haproxy[{pid}]: ");
    let msg = rest
        .strip_prefix(&tag)
        .unwrap_or_else(|| panic!("expected {tag:?} after the time: {datagram:?}"));
    assert!(datagram.ends_with('\n'), "a newline ends it: {datagram:?}");
    assert!(datagram.len() <= 1024, "HAProxy's default length limit");
    msg.trim_end_matches('\n')
}

/// `ip:port [date] frontend backend/server Tw/Tc/Tt bytes term ac/fc/bc/sc/rc sq/bq`.
fn assert_tcplog(msg: &str, bytes_down: u64) {
    let f: Vec<&str> = msg.split(' ').collect();
    assert_eq!(f.len(), 9, "tcplog fields: {msg:?}");
    let (ip, port) = f[0].rsplit_once(':').expect("client ip:port");
    assert_eq!(ip, "127.0.0.1");
    assert!(port.parse::<u16>().is_ok(), "{msg:?}");
    assert!(
        f[1].starts_with('[') && f[1].ends_with(']') && f[1].len() == 26,
        "{msg:?}"
    );
    assert_eq!(f[2], "fe_syslog");
    assert_eq!(f[3], "be_syslog/s1");
    let timers: Vec<&str> = f[4].split('/').collect();
    assert_eq!(timers.len(), 3, "{msg:?}");
    assert!(timers.iter().all(|t| t.parse::<i64>().is_ok()), "{msg:?}");
    assert_eq!(f[5], bytes_down.to_string(), "bytes sent to the client");
    assert_eq!(f[6], "--", "a clean close");
    let conns: Vec<&str> = f[7].split('/').collect();
    assert_eq!(conns.len(), 5, "{msg:?}");
    assert!(conns.iter().all(|c| c.parse::<u64>().is_ok()), "{msg:?}");
    assert_eq!(f[8], "0/0");
}

fn is_access_line(d: &str) -> bool {
    d.contains(" fe_syslog be_syslog/s1 ")
}

/// The first access line that arrives on `rx`.
fn access_line(rx: &dyn Datagrams) -> String {
    let (line, others) = wait_for(rx, is_access_line);
    line.unwrap_or_else(|| panic!("no access line arrived; got {others:?}"))
}

/// An echo server and a proxy in front of it that logs to `target` at `level`.
fn logging_proxy(target: &str, level: &str) -> (TcpServer, Proxy) {
    let server = TcpServer::start(free_addr(loopback(2)));
    let port = free_port(Ipv4Addr::LOCALHOST);
    let proxy = Proxy::start(&config(target, level, port, &server));
    (server, proxy)
}

#[test]
fn access_lines_reach_a_udp_syslog_in_rfc3164() {
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind the syslog listener");
    let target = rx.local_addr().expect("addr").to_string();
    let (server, proxy) = logging_proxy(&target, "info");

    pump(proxy.addr(), &server, 1000, 2000).assert_intact(1000, 2000);

    let line = access_line(&rx);
    // local0 (16) * 8 + info (6)
    let msg = rfc3164_message(&line, 134, proxy.pid());
    assert_tcplog(msg, 2000);
}

/// `log ADDR format rfc5424 FACILITY LEVEL`: `<PRI>1 TIMESTAMP HOST TAG PID - - MSG`.
#[test]
fn access_lines_in_rfc5424_when_asked() {
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind the syslog listener");
    let target = format!("{} format rfc5424", rx.local_addr().expect("addr"));
    let (server, proxy) = logging_proxy(&target, "info");

    pump(proxy.addr(), &server, 10, 20).assert_intact(10, 20);

    let line = access_line(&rx);
    let rest = line
        .strip_prefix("<134>1 ")
        .unwrap_or_else(|| panic!("RFC 5424 header with PRI 134 and version 1: {line:?}"));
    let f: Vec<&str> = rest.splitn(7, ' ').collect();
    assert_eq!(f.len(), 7, "{line:?}");
    assert!(
        f[0].len() >= 20 && f[0].as_bytes()[10] == b'T',
        "ISO timestamp: {line:?}"
    );
    assert_eq!(f[2], "haproxy", "app name: {line:?}");
    assert_eq!(f[3], proxy.pid().to_string(), "proc id: {line:?}");
    assert_eq!(
        (f[4], f[5]),
        ("-", "-"),
        "no msgid, no structured data: {line:?}"
    );
    assert_tcplog(f[6].trim_end_matches('\n'), 20);
}

#[test]
fn process_messages_go_to_the_global_target_and_levels_filter() {
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind the syslog listener");
    let target = rx.local_addr().expect("addr").to_string();
    let (server, mut proxy) = logging_proxy(&target, "notice");

    pump(proxy.addr(), &server, 10, 20).assert_intact(10, 20);
    proxy.signal(Signal::SIGTERM);
    assert!(
        proxy.wait_exit(Duration::from_secs(20)).is_some(),
        "the proxy should stop on SIGTERM"
    );
    // Everything the proxy sent is in the socket buffer now; read until it is quiet.
    let mut all = Vec::new();
    while let Some(d) = rx.next(Duration::from_millis(500)) {
        all.push(d);
    }
    // Our start and stop notices go to the global targets too; HAProxy logs none of its own
    // at these moments (its server UP/DOWN alerts do go there, as ours do).
    if !e2e::proxy::is_reference_haproxy() {
        assert!(
            all.iter().any(|d| d.starts_with("<133>")),
            "notice-level process messages (local0 * 8 + 5) should arrive: {all:?}"
        );
    }
    assert!(
        !all.iter().any(|d| is_access_line(d)),
        "access lines are info, above the target's notice level: {all:?}"
    );
}

#[test]
fn a_unix_datagram_socket_target_works_like_dev_log() {
    let dir = TestDir::new("syslog-unix");
    let path = dir.join("log.sock");
    let rx = UnixDatagram::bind(&path).expect("bind the unix syslog socket");
    let target = path.to_str().expect("utf-8 path").to_string();
    let (server, proxy) = logging_proxy(&target, "info");

    pump(proxy.addr(), &server, 500, 700).assert_intact(500, 700);

    let line = access_line(&rx);
    assert_tcplog(rfc3164_message(&line, 134, proxy.pid()), 700);
}
