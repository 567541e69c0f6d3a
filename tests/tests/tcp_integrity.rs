//! Mode tcp moves bytes exactly and passes on how a connection ends: bulk data in both
//! directions compared by SHA-256, half-close in each direction, resets in each direction, and
//! the idle timeouts. The backend is the harness's `TcpServer` on 127.0.0.2; each test runs its
//! own proxy in front of it.

use e2e::tcp::{End, Reply, TcpClient, TcpServer, IO_LIMIT};
use e2e::{free_addr, free_port, hex, loopback, pump, Proxy};
use std::net::Ipv4Addr;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

fn proxy_cfg(port: u16, server: &TcpServer, client_timeout: &str, server_timeout: &str) -> String {
    format!(
        "global
    nbthread 2

defaults
    mode tcp
    timeout connect 2s
    timeout client {client_timeout}
    timeout server {server_timeout}

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    server s1 {} check inter 500ms
",
        server.addr()
    )
}

/// A backend and a proxy in front of it.
fn setup_with(client_timeout: &str, server_timeout: &str) -> (TcpServer, Proxy) {
    let server = TcpServer::start(free_addr(loopback(2)));
    let port = free_port(Ipv4Addr::LOCALHOST);
    let proxy = Proxy::start(&proxy_cfg(port, &server, client_timeout, server_timeout));
    (server, proxy)
}

fn setup() -> (TcpServer, Proxy) {
    setup_with("30s", "30s")
}

/// 1 GiB up and 1 GiB down at the same time on one connection, both intact.
#[test]
fn one_gib_each_way_intact() {
    let (server, proxy) = setup();
    let p = pump(proxy.addr(), &server, GIB, GIB);
    p.assert_intact(GIB, GIB);
}

/// Many small connections in a row, each intact (the per-connection set-up and tear-down).
#[test]
fn many_short_connections_intact() {
    let (server, proxy) = setup();
    for i in 0..50u64 {
        let (up, down) = (i * 997 % 70_000, i * 7919 % 130_000);
        pump(proxy.addr(), &server, up, down).assert_intact(up, down);
    }
}

/// The client shuts down its write side first: the backend sees EOF after all the data, and
/// its reply, sent only after that EOF, still reaches the client in full.
#[test]
fn half_close_client_first() {
    let (server, proxy) = setup();
    let c = TcpClient::connect(proxy.addr(), Reply::AfterEof { bytes: 4 * MIB });
    let sent = c
        .send(MIB)
        .unwrap_or_else(|(e, n)| panic!("send failed after {n} bytes: {e}"));
    c.shutdown_write();
    let got = c.read_all();
    let r = server.report(c.id, IO_LIMIT);
    assert_eq!(
        r.received.end,
        End::Eof,
        "the backend should see the client's FIN"
    );
    assert_eq!(r.received.bytes, MIB);
    assert_eq!(
        r.received.sha256,
        sent,
        "upload digest: backend {} vs client {}",
        hex(&r.received.sha256),
        hex(&sent)
    );
    assert_eq!(
        got.bytes,
        4 * MIB,
        "the reply after the half-close must arrive in full"
    );
    assert_eq!(got.sha256, c.expected_from_server(4 * MIB), "reply digest");
    assert_eq!(got.end, End::Eof);
}

/// The backend shuts down its write side first: the client reads everything and EOF, and can
/// still send; the backend receives all of it and then the client's EOF.
#[test]
fn half_close_server_first() {
    let (server, proxy) = setup();
    let c = TcpClient::connect(proxy.addr(), Reply::Concurrent { bytes: 4 * MIB });
    let got = c.read_all();
    assert_eq!(got.end, End::Eof, "the client should see the backend's FIN");
    assert_eq!(got.bytes, 4 * MIB);
    assert_eq!(
        got.sha256,
        c.expected_from_server(4 * MIB),
        "download digest"
    );
    // The backend has closed its side; ours must still reach it.
    let sent = c
        .send(MIB)
        .unwrap_or_else(|(e, n)| panic!("send after the backend's FIN failed after {n}: {e}"));
    c.shutdown_write();
    let r = server.report(c.id, IO_LIMIT);
    assert_eq!(r.sent.end, End::Eof);
    assert_eq!(r.received.bytes, MIB, "bytes sent after the backend's FIN");
    assert_eq!(
        r.received.sha256, sent,
        "digest of the data sent after the FIN"
    );
    assert_eq!(r.received.end, End::Eof);
}

/// The backend resets (SO_LINGER 0 close) after sending a little: the client sees a reset, not
/// a clean EOF that would pass a cut-off stream as complete.
///
/// HAProxy 2.6 fails this one on purpose of its own: it closes the client side with a FIN
/// (`E2E_PROXY=haproxy` shows it). This proxy passes the reset on (see forward/LIFECYCLE.md).
#[test]
fn backend_reset_reaches_client() {
    let (server, proxy) = setup();
    let c = TcpClient::connect(proxy.addr(), Reply::ThenReset { bytes: 256 * 1024 });
    let got = c.read_all();
    let r = server.report(c.id, IO_LIMIT);
    assert_eq!(r.sent.end, End::Reset, "the backend should have reset");
    assert!(got.bytes <= 256 * 1024);
    assert_eq!(
        got.end,
        End::Reset,
        "the client read {} bytes and then {:?}; a backend reset must reach the client as a \
         reset (ECONNRESET)",
        got.bytes,
        got.end
    );
}

/// The client resets: the backend sees a reset too.
#[test]
fn client_reset_reaches_backend() {
    let (server, proxy) = setup();
    let c = TcpClient::connect(proxy.addr(), Reply::AfterEof { bytes: 0 });
    c.send(64 * 1024)
        .unwrap_or_else(|(e, n)| panic!("send failed after {n} bytes: {e}"));
    let id = c.id;
    // Only reset once the backend has everything: then the proxy has a connected pair.
    server.wait_received(id, 64 * 1024, IO_LIMIT);
    c.reset();
    let r = server.report(id, IO_LIMIT);
    assert_eq!(r.received.bytes, 64 * 1024);
    assert_eq!(
        r.received.end,
        End::Reset,
        "a client reset must reach the backend as a reset (ECONNRESET)"
    );
}

/// `timeout client 1s` / `timeout server 1s`: a connection where nobody sends is closed by the
/// proxy, on both sides. The 20 s read limit only keeps a broken proxy from hanging the test.
///
/// How it is closed is left open: HAProxy sends a FIN (the client reads EOF), while
/// forward/LIFECYCLE.md has this proxy reset both sides on expiry (`cD`/`sD`). Either way the
/// client must see the end of the connection, not its own read limit.
#[test]
fn idle_connection_is_closed_by_timeouts() {
    let (server, proxy) = setup_with("1s", "1s");
    let c = TcpClient::connect(proxy.addr(), Reply::AfterEof { bytes: 0 });
    server.wait_received(c.id, 0, IO_LIMIT);
    c.set_read_timeout(Duration::from_secs(20));
    let got = c.read_all();
    assert_eq!(got.bytes, 0);
    // An idle flow has nothing in flight: the proxy closes it with a FIN, as HAProxy does.
    assert!(
        matches!(got.end, End::Eof),
        "an idle connection should be closed (FIN) by the proxy's timeouts (client read: {:?})",
        got.end
    );
    let r = server.report(c.id, Duration::from_secs(20));
    assert!(
        matches!(r.received.end, End::Eof),
        "the backend side of the idle connection should be closed too: {:?}",
        r.received.end
    );
}
