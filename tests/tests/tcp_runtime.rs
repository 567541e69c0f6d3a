//! The proxy process around mode tcp sessions: event drivers (io_uring and the epoll
//! fallback), the access-log line, balancing and redispatch, `maxconn`, graceful stop, and
//! start-up failures. Backends are the harness's `TcpServer`s on 127.0.0.x.

use e2e::http_client::csv_field;
use e2e::tcp::{End, Reply, TcpClient, TcpServer, IO_LIMIT};
use e2e::{free_addr, free_port, loopback, pump, wait_until, Proxy};
use nix::sys::signal::Signal;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

fn cfg(port: u16, frontend_extra: &str, backend_extra: &str, servers: &[String]) -> String {
    let servers: String = servers.iter().map(|s| format!("    {s}\n")).collect();
    format!(
        "global
    nbthread 2

defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend fe
    bind 127.0.0.1:{port}
{frontend_extra}
    default_backend be

backend be
{backend_extra}
{servers}"
    )
}

/// The access-log lines of the proxy's stderr, without its `[LEVEL]` diagnostics.
fn traffic_lines(stderr: &str) -> impl Iterator<Item = &str> {
    stderr.lines().filter(|l| !l.starts_with('['))
}

fn one_server(server: &TcpServer) -> Vec<String> {
    vec![format!("server s1 {}", server.addr())]
}

fn proxy_for(server: &TcpServer, args: &[&str]) -> Proxy {
    let port = free_port(Ipv4Addr::LOCALHOST);
    Proxy::start_with(&cfg(port, "", "", &one_server(server)), args)
}

/// The epoll fallback carries a flow as intact as io_uring does, half-close included.
#[test]
fn epoll_fallback_moves_bytes_intact() {
    let server = TcpServer::start(free_addr(loopback(2)));
    let proxy = proxy_for(&server, &["--driver", "poll"]);
    assert!(
        proxy.stderr().contains("event driver epoll"),
        "start-up line:\n{}",
        proxy.stderr()
    );
    pump(proxy.addr(), &server, 256 * MIB, 256 * MIB).assert_intact(256 * MIB, 256 * MIB);

    let c = TcpClient::connect(proxy.addr(), Reply::AfterEof { bytes: MIB });
    c.send(MIB).expect("upload");
    c.shutdown_write();
    let got = c.read_all();
    assert_eq!(
        (got.bytes, got.end),
        (MIB, End::Eof),
        "reply after half-close"
    );
}

/// Without `--driver`, this kernel has io_uring and the proxy says it uses it.
#[test]
fn io_uring_is_used_and_reported() {
    let server = TcpServer::start(free_addr(loopback(2)));
    let proxy = proxy_for(&server, &[]);
    assert!(
        proxy
            .stderr()
            .contains("event driver io_uring (COOP_TASKRUN)"),
        "start-up line:\n{}",
        proxy.stderr()
    );
    pump(proxy.addr(), &server, MIB, MIB).assert_intact(MIB, MIB);
}

/// One tcplog line per session: frontend, backend/server, bytes sent to the client, state.
#[test]
fn session_log_line_reports_the_session() {
    let server = TcpServer::start(free_addr(loopback(2)));
    let proxy = proxy_for(&server, &[]);
    pump(proxy.addr(), &server, 1000, 123_456).assert_intact(1000, 123_456);
    let line = wait_until("the session's log line", Duration::from_secs(10), || {
        proxy
            .stderr()
            .lines()
            .find(|l| l.contains(" fe be/s1 "))
            .map(str::to_string)
    });
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert!(
        fields[0].starts_with("127.0.0.1:"),
        "client field in {line}"
    );
    assert_eq!(fields[2], "fe");
    assert_eq!(fields[3], "be/s1");
    assert_eq!(fields[5], "123456", "bytes to the client in {line}");
    assert_eq!(fields[6], "--", "termination state in {line}");
}

/// Weighted round robin spreads connections 3:1, and a dead server (nothing listening) is
/// skipped by redispatch on the last retry, so no client is refused.
#[test]
fn roundrobin_weights_and_redispatch() {
    let a = TcpServer::start(free_addr(loopback(2)));
    let b = TcpServer::start(free_addr(loopback(3)));
    let dead = free_addr(loopback(4));
    let servers = vec![
        format!("server a {} weight 3", a.addr()),
        format!("server b {} weight 1", b.addr()),
        format!("server dead {dead} weight 1"),
    ];
    let port = free_port(Ipv4Addr::LOCALHOST);
    let proxy = Proxy::start(&cfg(
        port,
        "",
        "    retries 1\n    option redispatch",
        &servers,
    ));
    for _ in 0..25 {
        let c = TcpClient::connect(proxy.addr(), Reply::AfterEof { bytes: 5 });
        c.shutdown_write();
        let got = c.read_all();
        assert_eq!(
            (got.bytes, got.end),
            (5, End::Eof),
            "every client is served"
        );
    }
    let (na, nb) = (a.accepted(), b.accepted());
    assert_eq!(na + nb, 25, "every connection reached a live server");
    assert!(
        na > 2 * nb && nb >= 3,
        "weights 3:1 (the dead server's share redispatched): a={na} b={nb}"
    );
    // The log line follows the close the client saw: wait for all of them.
    let log = wait_until("25 session log lines", Duration::from_secs(10), || {
        let log = proxy.stderr();
        let served = log
            .lines()
            .filter(|l| (l.contains(" be/a ") || l.contains(" be/b ")) && l.contains(" -- "));
        (served.count() == 25).then_some(log)
    });
    // Traffic lines only: `-d` also prints `[DEBUG] connect to be/dead failed` diagnostics.
    assert!(
        !traffic_lines(&log).any(|l| l.contains(" be/dead ")),
        "no session ends on the dead server:\n{log}"
    );
}

/// Without redispatch and retries, a connection that lands on a dead server is closed and
/// logged as a server-side connect failure (`SC`).
#[test]
fn dead_server_without_redispatch_is_logged_sc() {
    let dead = free_addr(loopback(4));
    let port = free_port(Ipv4Addr::LOCALHOST);
    let proxy = Proxy::start(&cfg(
        port,
        "",
        "    retries 0",
        &[format!("server dead {dead}")],
    ));
    let mut s = TcpStream::connect(proxy.addr()).expect("connect to the proxy");
    s.set_read_timeout(Some(IO_LIMIT)).unwrap();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the client gets no data, only a close");
    let line = wait_until("the session's log line", Duration::from_secs(10), || {
        traffic_lines(&proxy.stderr())
            .find(|l| l.contains(" be/dead "))
            .map(str::to_string)
    });
    assert!(line.contains(" SC "), "termination state in {line}");
}

/// `maxconn 1`: a second client waits in the backlog, unserved, until the first one leaves.
#[test]
fn maxconn_holds_excess_connections_in_the_backlog() {
    let server = TcpServer::start(free_addr(loopback(2)));
    let port = free_port(Ipv4Addr::LOCALHOST);
    let proxy = Proxy::start(&cfg(port, "    maxconn 1", "", &one_server(&server)));
    let first = TcpClient::connect(proxy.addr(), Reply::AfterEof { bytes: 10 });
    server.wait_received(first.id, 0, IO_LIMIT);
    let second = TcpClient::connect(proxy.addr(), Reply::AfterEof { bytes: 20 });
    second
        .send(1000)
        .expect("the kernel accepts the second client's bytes");
    second.shutdown_write();
    // While the first session lives, the backend must not see the second one.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.accepted(),
        1,
        "the second connection must wait, not be forwarded"
    );
    first.shutdown_write();
    assert_eq!(first.read_all().bytes, 10);
    let got = second.read_all();
    assert_eq!(
        (got.bytes, got.end),
        (20, End::Eof),
        "the second client is served afterwards"
    );
    assert_eq!(server.accepted(), 2);
}

/// SIGTERM closes the listener at once but lets an established flow finish; then the proxy
/// exits 0.
#[test]
fn sigterm_drains_established_flows() {
    let server = TcpServer::start(free_addr(loopback(2)));
    let mut proxy = proxy_for(&server, &[]);
    let c = TcpClient::connect(proxy.addr(), Reply::AfterEof { bytes: 4 * MIB });
    server.wait_received(c.id, 0, IO_LIMIT);
    proxy.signal(Signal::SIGTERM);
    wait_until("the listener to close", Duration::from_secs(10), || {
        TcpStream::connect(proxy.addr()).is_err().then_some(())
    });
    assert!(
        proxy.try_status().is_none(),
        "the proxy must wait for the open flow"
    );
    let sent = c
        .send(2 * MIB)
        .expect("the established flow still carries data");
    c.shutdown_write();
    let got = c.read_all();
    assert_eq!((got.bytes, got.end), (4 * MIB, End::Eof));
    assert_eq!(got.sha256, c.expected_from_server(4 * MIB));
    assert_eq!(server.report(c.id, IO_LIMIT).received.sha256, sent);
    let status = proxy
        .wait_exit(Duration::from_secs(20))
        .expect("the proxy exits once drained");
    assert!(status.success(), "exit status {status}");
}

/// A port already taken by another program stops the start with the bind's line and exit 1.
#[test]
fn busy_port_fails_the_start_with_the_bind_line() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().unwrap().port();
    let server: SocketAddr = free_addr(loopback(2));
    let mut proxy = Proxy::spawn(&cfg(port, "", "", &[format!("server s1 {server}")]));
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("the proxy must exit");
    assert_eq!(status.code(), Some(1));
    let err = proxy.stderr();
    assert!(
        err.contains("proxy.cfg:11: cannot bind 127.0.0.1:"),
        "stderr:\n{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Server `maxconn` and the backend queue.

/// A frontend in front of `be`, whose servers are `servers` (with their `maxconn`), and a stats
/// page; `mode` and `backend_extra` (e.g. `timeout queue 1s`) as given.
fn queue_cfg(port: u16, stats: u16, mode: &str, backend_extra: &str, servers: &str) -> String {
    format!(
        "global
    nbthread 2

defaults
    mode {mode}
    timeout connect 2s
    timeout client 30s
    timeout server 30s

listen stats
    bind 127.0.0.1:{stats}
    mode http
    stats enable
    stats uri /stats

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
{backend_extra}
    server {servers}
"
    )
}

/// The `fe` frontend's address (the stats listener is the first bind).
fn front(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// `server … maxconn 1`: a second client waits in the backend queue (counted in `qcur`, not
/// sent to the server) and gets the slot, bytes intact, when the first client leaves.
#[test]
fn server_maxconn_queues_the_second_client_until_the_first_leaves() {
    let server = TcpServer::start(free_addr(loopback(2)));
    let (port, stats) = (
        free_port(Ipv4Addr::LOCALHOST),
        free_port(Ipv4Addr::LOCALHOST),
    );
    let servers = format!("s1 {} maxconn 1", server.addr());
    let _proxy = Proxy::start(&queue_cfg(
        port,
        stats,
        "tcp",
        "    timeout queue 60s",
        &servers,
    ));
    let first = TcpClient::connect(front(port), Reply::AfterEof { bytes: 10 });
    server.wait_received(first.id, 0, IO_LIMIT);
    let second = TcpClient::connect(front(port), Reply::AfterEof { bytes: 20 });
    let sent = second.send(100_000).expect("the second client's upload");
    second.shutdown_write();
    wait_until("the second client queued", Duration::from_secs(20), || {
        (csv_field(stats, "be", "BACKEND", "qcur") == "1").then_some(())
    });
    assert_eq!(
        server.accepted(),
        1,
        "a queued session must not reach the server"
    );
    assert_eq!(csv_field(stats, "be", "s1", "slim"), "1");
    assert_eq!(csv_field(stats, "be", "s1", "scur"), "1");

    first.shutdown_write();
    assert_eq!(first.read_all().bytes, 10);
    let got = second.read_all();
    assert_eq!((got.bytes, got.end), (20, End::Eof), "the second is served");
    assert_eq!(got.sha256, second.expected_from_server(20));
    let report = server.report(second.id, IO_LIMIT);
    assert_eq!(report.received.bytes, 100_000);
    assert_eq!(
        report.received.sha256, sent,
        "upload intact after the queue"
    );
    wait_until("the queue empty", Duration::from_secs(20), || {
        (csv_field(stats, "be", "BACKEND", "qcur") == "0").then_some(())
    });
    assert_eq!(csv_field(stats, "be", "BACKEND", "qmax"), "1");
    assert_eq!(server.accepted(), 2);
}

/// With `timeout queue 1s` and the slot never freed, the queued client is closed with `sQ`.
#[test]
fn a_queued_session_times_out_with_sq() {
    let server = TcpServer::start(free_addr(loopback(2)));
    let (port, stats) = (
        free_port(Ipv4Addr::LOCALHOST),
        free_port(Ipv4Addr::LOCALHOST),
    );
    let servers = format!("s1 {} maxconn 1", server.addr());
    let proxy = Proxy::start(&queue_cfg(
        port,
        stats,
        "tcp",
        "    timeout queue 1s",
        &servers,
    ));
    let first = TcpClient::connect(front(port), Reply::AfterEof { bytes: 10 });
    server.wait_received(first.id, 0, IO_LIMIT);
    let second = TcpClient::connect(front(port), Reply::AfterEof { bytes: 20 });
    let started = std::time::Instant::now();
    let got = second.read_all();
    eprintln!("queued client closed after {:?}", started.elapsed());
    assert_eq!(got.bytes, 0, "the queued client gets nothing but a close");
    let line = wait_until(
        "the queued session's log line",
        Duration::from_secs(10),
        || {
            traffic_lines(&proxy.stderr())
                .find(|l| l.contains(" fe be/<NOSRV> "))
                .map(str::to_string)
        },
    );
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[6], "sQ", "termination state in {line}");
    assert_eq!(csv_field(stats, "be", "BACKEND", "qmax"), "1");
    assert_eq!(csv_field(stats, "be", "BACKEND", "qcur"), "0");
    assert_eq!(
        server.accepted(),
        1,
        "the queued session never reached the server"
    );
    first.shutdown_write();
    assert_eq!(first.read_all().bytes, 10);
}

/// `mode http`: a request queued behind a server's only slot is answered 503 once `timeout
/// queue` passes, logged `sQ`.
#[test]
fn a_queued_http_request_gets_503_after_the_queue_timeout() {
    // A server that accepts and never answers: the first request holds the only slot.
    let silent = TcpListener::bind(free_addr(loopback(2))).expect("bind the silent server");
    let (port, stats) = (
        free_port(Ipv4Addr::LOCALHOST),
        free_port(Ipv4Addr::LOCALHOST),
    );
    let servers = format!("s1 {} maxconn 1", silent.local_addr().expect("addr"));
    let proxy = Proxy::start(&queue_cfg(
        port,
        stats,
        "http",
        "    timeout queue 1s",
        &servers,
    ));
    let req = b"GET / HTTP/1.1\r\nHost: q\r\n\r\n";
    let mut first = TcpStream::connect(front(port)).expect("connect");
    std::io::Write::write_all(&mut first, req).expect("first request");
    silent.set_nonblocking(true).expect("nonblocking accept");
    let _held = wait_until(
        "the first request at the server",
        Duration::from_secs(20),
        || silent.accept().ok(),
    );
    let got = e2e::http_client::raw_exchange(front(port), req);
    assert_eq!(
        e2e::http_client::status_of(&got),
        Some(503),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let line = wait_until("the 503's log line", Duration::from_secs(10), || {
        traffic_lines(&proxy.stderr())
            .find(|l| l.contains(" 503 "))
            .map(str::to_string)
    });
    assert!(line.contains(" sQ"), "termination state in {line}");
    // No server was assigned: HAProxy names none, waited the whole `timeout queue` (%Tw) and
    // never connected (%Tc -1).
    let timers = line
        .split_once(" be/<NOSRV> ")
        .map(|(_, rest)| rest.split(' ').next().unwrap_or_default())
        .unwrap_or_else(|| panic!("no server in {line}"));
    let t: Vec<i64> = timers.split('/').filter_map(|v| v.parse().ok()).collect();
    assert_eq!(t.len(), 5, "%TR/%Tw/%Tc/%Tr/%Ta in {line}");
    assert!(t[1] >= 1000, "%Tw is the queue timeout in {line}");
    assert_eq!((t[2], t[3]), (-1, -1), "nothing connected in {line}");
    assert_eq!(csv_field(stats, "be", "BACKEND", "qmax"), "1");
}

/// A request whose persistence cookie names a full server waits for that server (in its own
/// queue, its `qcur`), not for the other free one, and gets 503 when `timeout queue` passes.
#[test]
fn a_cookie_pinned_request_waits_in_its_servers_queue() {
    let ams1 = TcpListener::bind(free_addr(loopback(2))).expect("bind ams1");
    let ams2 = TcpListener::bind(free_addr(loopback(3))).expect("bind ams2");
    let (port, stats) = (
        free_port(Ipv4Addr::LOCALHOST),
        free_port(Ipv4Addr::LOCALHOST),
    );
    let servers = format!(
        "ams1 {} maxconn 1 maxqueue 5 cookie ams1\n    server ams2 {} cookie ams2",
        ams1.local_addr().expect("addr"),
        ams2.local_addr().expect("addr")
    );
    let extra = "    timeout queue 1s\n    cookie SRV insert indirect nocache";
    let proxy = Proxy::start(&queue_cfg(port, stats, "http", extra, &servers));
    let req = b"GET / HTTP/1.1\r\nHost: q\r\nCookie: SRV=ams1\r\n\r\n";
    let mut first = TcpStream::connect(front(port)).expect("connect");
    std::io::Write::write_all(&mut first, req).expect("first request");
    ams1.set_nonblocking(true).expect("nonblocking accept");
    let _held = wait_until("the first request at ams1", Duration::from_secs(20), || {
        ams1.accept().ok()
    });
    let mut second = TcpStream::connect(front(port)).expect("connect");
    std::io::Write::write_all(&mut second, req).expect("second request");
    wait_until(
        "the pinned request queued on ams1",
        Duration::from_secs(20),
        || (csv_field(stats, "be", "ams1", "qcur") == "1").then_some(()),
    );
    assert_eq!(csv_field(stats, "be", "BACKEND", "qcur"), "0");
    assert_eq!(csv_field(stats, "be", "ams1", "qlimit"), "5");
    assert_eq!(csv_field(stats, "be", "ams2", "qlimit"), "");
    second.set_read_timeout(Some(IO_LIMIT)).expect("timeout");
    let mut got = Vec::new();
    let _ = second.read_to_end(&mut got);
    assert_eq!(
        e2e::http_client::status_of(&got),
        Some(503),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(csv_field(stats, "be", "ams1", "qmax"), "1");
    assert_eq!(csv_field(stats, "be", "BACKEND", "qmax"), "0");
    // The cookie assigned ams1 before the wait: HAProxy's line names it, unlike a timeout in
    // the backend's queue (`<NOSRV>`).
    let line = wait_until("the 503's log line", Duration::from_secs(10), || {
        traffic_lines(&proxy.stderr())
            .find(|l| l.contains(" 503 "))
            .map(str::to_string)
    });
    assert!(line.contains(" be/ams1 ") && line.contains(" sQ"), "{line}");
    ams2.set_nonblocking(true).expect("nonblocking accept");
    assert!(ams2.accept().is_err(), "nothing went to the free ams2");
    drop(proxy);
}

/// Without `maxconn`, the session limit is what the open-file limit allows at the descriptors
/// a flow may hold here (two sockets, plus two pipes where flows may be spliced), shown on the
/// stats page; a configured `maxconn` the limit cannot carry is said at start. (HAProxy derives
/// its own default, so this is this proxy's behaviour, not checked against HAProxy.)
#[test]
fn maxconn_follows_the_descriptors_a_flow_needs() {
    if e2e::proxy::is_reference_haproxy() {
        eprintln!("SKIPPED under E2E_PROXY=haproxy: HAProxy computes its own default maxconn");
        return;
    }
    let server = TcpServer::start(free_addr(loopback(2)));
    let port = free_port(Ipv4Addr::LOCALHOST);
    let stats = free_port(Ipv4Addr::LOCALHOST);
    let text = |maxconn: &str| {
        format!(
            "global\n ulimit-n 1064\n{maxconn}\
             defaults\n timeout connect 2s\n timeout client 10s\n timeout server 10s\n\
             listen stats\n bind 127.0.0.1:{stats}\n mode http\n stats enable\n stats uri /st\n\
             frontend f\n bind 127.0.0.1:{port}\n mode tcp\n default_backend b\n\
             backend b\n mode tcp\n forward-engine splice\n server s {}\n",
            server.addr()
        )
    };
    let p = Proxy::start(&text(""));
    let page = e2e::http_client::curl(&[&format!("http://127.0.0.1:{stats}/st")]);
    let page = String::from_utf8_lossy(&page.stdout);
    // (1064 - 64 reserved) / 6 descriptors per spliced flow.
    assert!(page.contains("maxconn = 166<"), "{page}");
    drop(p);
    let p = Proxy::start(&text(" maxconn 5000\n"));
    let said = wait_until("the maxconn warning", Duration::from_secs(5), || {
        p.stderr()
            .lines()
            .find(|l| l.contains("maxconn 5000 needs about 30064 open files"))
            .map(str::to_string)
    });
    assert!(said.contains("the limit is 1064"), "{said}");
}
