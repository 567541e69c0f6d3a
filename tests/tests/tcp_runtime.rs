//! The proxy process around mode tcp sessions: event drivers (io_uring and the epoll
//! fallback), the access-log line, balancing and redispatch, `maxconn`, graceful stop, and
//! start-up failures. Backends are the harness's `TcpServer`s on 127.0.0.x.

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
    assert!(
        !log.contains(" be/dead "),
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
        proxy
            .stderr()
            .lines()
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
