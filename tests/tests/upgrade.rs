//! Binary upgrade (`proxy -f CFG -x SOCKET -sf OLDPID`): the new process takes the old one's
//! listening sockets and its established `mode tcp` flows; the old one exits as soon as its
//! last flow has left or ended. Checked with real clients: an ffmpeg RTMP publish recorded by
//! an nginx-rtmp node (frames equal a publish straight to the node, the node's connection is
//! the same one before and after), a bulk transfer both ways with SHA-256 at both ends, an
//! HTTP keep-alive connection (which cannot move: the old process finishes it), and a loop
//! of connections through the upgrade (none refused, each byte-exact).
//!
//! The old process serves the hand-over on `PROXY_UPGRADE_SOCKET` (the runtime API's
//! `stats socket … expose-fd listeners` is wired to the same code). Waits poll observable
//! state with generous bounds; nothing asserts how long anything took.

use e2e::ffmpeg::{ffmpeg_publish, FPS};
use e2e::http_client::Conn;
use e2e::nginx_http::NginxHttp;
use e2e::process::connections_to;
use e2e::tcp::{Pattern, Pump, IO_LIMIT};
use e2e::util::wait_until;
use e2e::{free_addr, free_port, loopback, pump, Nginx, Proxy, Reply, TcpClient, TcpServer};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Bound for the old process to exit once the new one serves. Far shorter than the flows
/// that run across the upgrade, so an old process that waited for them would fail.
const EXIT_LIMIT: Duration = Duration::from_secs(15);
const MIB: u64 = 1024 * 1024;

/// The old process, serving the hand-over on its runtime API socket (`stats socket … level
/// admin expose-fd listeners`, as an operator's config has it) in a folder of its own; the
/// new process, started with the same config, binds its own socket at the same path.
fn start_old(cfg: &mut String) -> (Proxy, PathBuf) {
    let dir = e2e::TestDir::new("upgrade");
    let sock = dir.join("admin.sock");
    let line = format!(
        "    stats socket {} mode 600 level admin expose-fd listeners\n",
        sock.display()
    );
    *cfg = match cfg.strip_prefix("global\n") {
        Some(rest) => format!("global\n{line}{rest}"),
        None => format!("global\n{line}\n{cfg}"),
    };
    let old = Proxy::start(cfg);
    // The folder must outlive the test's use of the socket path.
    std::mem::forget(dir);
    (old, sock)
}

/// `proxy -f CFG -x SOCKET -sf OLDPID`, and the old process's exit: its last log line says
/// how many flows moved and how many it finished.
fn upgrade(old: &mut Proxy, cfg: &str, sock: &std::path::Path) -> Proxy {
    let pid = old.pid().to_string();
    let sock = sock.display().to_string();
    let new = Proxy::start_with(cfg, &["-x", &sock, "-sf", &pid]);
    let status = old.wait_exit(EXIT_LIMIT).unwrap_or_else(|| {
        panic!(
            "the old process still runs {EXIT_LIMIT:?} after the upgrade:\n{}\nnew:\n{}",
            old.stderr(),
            new.stderr()
        )
    });
    assert!(status.success(), "old process: {status}\n{}", old.stderr());
    new
}

fn assert_moved(old: &Proxy, new: &Proxy, moved: usize, finished: usize) {
    let want = format!(
        "upgrade: old process exiting: {moved} flow(s) moved to the new process, {finished} \
         session(s) finished here"
    );
    assert!(
        old.stderr().contains(&want),
        "want {want:?} in:\n{}",
        old.stderr()
    );
    let want = format!("upgrade: adopted {moved} flow(s) from the old process");
    assert!(
        new.stderr().contains(&want),
        "want {want:?} in:\n{}",
        new.stderr()
    );
    assert!(
        new.stderr()
            .contains("taken over from the previous process"),
        "the listener came from the old process:\n{}",
        new.stderr()
    );
}

fn tcp_cfg(engine: &str, port: u16, server: SocketAddr) -> String {
    format!(
        "global
    nbthread 2

defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    forward-engine {engine}
    server s1 {server}
"
    )
}

/// A transfer of `SIZE` each way is under way (the backend got its first MiB) when the
/// upgrade starts; it ends in the new process with both digests intact.
fn bulk_transfer_moves_byte_exact(engine: &str) {
    const SIZE: u64 = 768 * MIB;
    let server = TcpServer::start(free_addr(loopback(2)));
    let mut cfg = tcp_cfg(engine, free_port(Ipv4Addr::LOCALHOST), server.addr());
    let (mut old, sock) = start_old(&mut cfg);
    let c = TcpClient::connect(old.addr(), Reply::Concurrent { bytes: SIZE });
    let (client_sent, client_received, new) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let d = c
                .send(SIZE)
                .unwrap_or_else(|(e, n)| panic!("client send failed after {n} bytes: {e}"));
            c.shutdown_write();
            d
        });
        let reader = s.spawn(|| c.read_all());
        server.wait_received(c.id, MIB, IO_LIMIT);
        let new = upgrade(&mut old, &cfg, &sock);
        (
            writer.join().expect("writer"),
            reader.join().expect("reader"),
            new,
        )
    });
    let p = Pump {
        client_sent,
        client_received,
        expected_down: Pattern::new(c.server_seed).digest(SIZE),
        server: server.report(c.id, IO_LIMIT),
    };
    p.assert_intact(SIZE, SIZE);
    assert_moved(&old, &new, 1, 0);
}

#[test]
fn bulk_transfer_moves_byte_exact_copy() {
    bulk_transfer_moves_byte_exact("copy")
}

#[test]
fn bulk_transfer_moves_byte_exact_splice() {
    bulk_transfer_moves_byte_exact("splice")
}

/// The sockmap engine loads BPF programs: root only, said loudly (as engines.rs does).
fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the sockmap engine loads BPF programs and needs root (CAP_BPF, CAP_NET_ADMIN); run \
         these tests as root (CI does)"
    );
}

#[test]
fn bulk_transfer_moves_byte_exact_sockmap() {
    require_root();
    bulk_transfer_moves_byte_exact("sockmap")
}

/// Idle timeout of `an_idle_flow_keeps_its_idle_time`, and how long the flow is idle in the
/// old process before the upgrade: if the new process started the timer again the flow
/// would end no sooner than `IDLE_BEFORE + IDLE_LIMIT` after its last byte.
const IDLE_LIMIT: Duration = Duration::from_secs(6);
const IDLE_BEFORE: Duration = Duration::from_secs(4);

/// A flow idle for 4 s in the old process ends at its 6 s idle timeout counted from its last
/// byte, not 6 s after the hand-over: the time it spent idle in the old process moves with it.
/// The bound checked (8 s) lies halfway between the two.
fn an_idle_flow_keeps_its_idle_time(engine: &str) {
    use std::io::{Read, Write};
    let backend = std::net::TcpListener::bind(free_addr(loopback(2))).expect("bind");
    let cfg_timeouts = tcp_cfg(
        engine,
        free_port(Ipv4Addr::LOCALHOST),
        backend.local_addr().expect("addr"),
    )
    .replace("timeout client 60s", "timeout client 6s")
    .replace("timeout server 60s", "timeout server 6s");
    let mut cfg = cfg_timeouts;
    let (mut old, sock) = start_old(&mut cfg);
    let mut client = std::net::TcpStream::connect(old.addr()).expect("connect");
    client.write_all(b"sixteen bytes..!").expect("write");
    let (mut server_side, _) = backend.accept().expect("accept");
    let mut got = [0u8; 16];
    server_side
        .read_exact(&mut got)
        .expect("the backend gets the bytes");
    let last_byte = std::time::Instant::now();
    std::thread::sleep(IDLE_BEFORE);
    let new = upgrade(&mut old, &cfg, &sock);
    assert_moved(&old, &new, 1, 0);
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut rest = [0u8; 16];
    let end = client.read(&mut rest);
    let idle = last_byte.elapsed();
    assert!(
        matches!(end, Ok(0))
            || end
                .as_ref()
                .is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
        "the proxy ends the idle flow: {end:?}"
    );
    assert!(
        idle >= IDLE_LIMIT - Duration::from_millis(500) && idle < Duration::from_secs(8),
        "the flow ended {idle:?} after its last byte; its idle timeout is {IDLE_LIMIT:?}, \
         of which {IDLE_BEFORE:?} passed in the old process\nnew:\n{}",
        new.stderr()
    );
}

#[test]
fn an_idle_flow_keeps_its_idle_time_copy() {
    an_idle_flow_keeps_its_idle_time("copy")
}

#[test]
fn an_idle_flow_keeps_its_idle_time_splice() {
    an_idle_flow_keeps_its_idle_time("splice")
}

#[test]
fn an_idle_flow_keeps_its_idle_time_sockmap() {
    require_root();
    an_idle_flow_keeps_its_idle_time("sockmap")
}

/// Length of the publishes that run across the upgrade.
const SECONDS: u32 = 20;

/// An RTMP publish runs across the upgrade on one connection to the node, and the node
/// records as many frames as from a publish straight to it.
fn rtmp_publish_moves(engine: &str) {
    let node = Nginx::rtmp_recording(loopback(2));
    let port = free_port(Ipv4Addr::LOCALHOST);
    let mut cfg = tcp_cfg(engine, port, node.rtmp_addr());
    let (mut old, sock) = start_old(&mut cfg);
    let mut through = ffmpeg_publish(&format!("rtmp://127.0.0.1:{port}/live/through"), SECONDS);
    let mut direct = ffmpeg_publish(&node.url("direct"), SECONDS);
    wait_until(
        "both publishes to reach the node",
        Duration::from_secs(20),
        || {
            let s = node.streams();
            (s.contains(&"through".to_string()) && s.contains(&"direct".to_string())).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let before: BTreeSet<SocketAddr> = connections_to(node.rtmp_addr()).into_iter().collect();
    assert_eq!(before.len(), 2, "the proxy's and the direct publisher's");
    let new = upgrade(&mut old, &cfg, &sock);
    assert_moved(&old, &new, 1, 0);
    std::thread::sleep(Duration::from_secs(3));
    for p in [&mut through, &mut direct] {
        assert!(p.try_status().is_none(), "{} ended: {}", p.url(), p.log());
    }
    let after: BTreeSet<SocketAddr> = connections_to(node.rtmp_addr()).into_iter().collect();
    assert_eq!(
        after, before,
        "the same connections to the node: no reconnect"
    );
    through.wait_success(Duration::from_secs(30));
    direct.wait_success(Duration::from_secs(30));
    let [reference, through] = node.recorded_frames(&["direct", "through"])[..] else {
        unreachable!("two recordings asked for")
    };
    assert_eq!(
        reference,
        u64::from(SECONDS * FPS),
        "the publish without the proxy"
    );
    assert_eq!(through, reference, "RTMP across the upgrade");
}

#[test]
fn rtmp_publish_moves_copy() {
    rtmp_publish_moves("copy")
}

#[test]
fn rtmp_publish_moves_splice() {
    rtmp_publish_moves("splice")
}

/// An HTTP keep-alive connection cannot move: the old process answers its next request and
/// exits once the client closes it; new connections go to the new process.
#[test]
fn http_keep_alive_is_finished_by_the_old_process() {
    let web = NginxHttp::start("web", free_addr(loopback(2)), None);
    let port = free_port(Ipv4Addr::LOCALHOST);
    let mut cfg = format!(
        "global
    nbthread 2

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    server web {}
",
        web.addr()
    );
    let (mut old, sock) = start_old(&mut cfg);
    let mut conn = Conn::open(old.addr());
    let first = conn.get("/", &[]);
    let pid = old.pid().to_string();
    let sock_s = sock.display().to_string();
    let new = Proxy::start_with(&cfg, &["-x", &sock_s, "-sf", &pid]);
    wait_until("the old process to hand its flows over", EXIT_LIMIT, || {
        old.stderr()
            .contains("upgrade: 0 flow(s) moved to the new process; 1 session(s) stay here")
            .then_some(())
    });
    let again = conn.get("/", &[]);
    assert_eq!(
        again.status, first.status,
        "the old process answers on the same connection"
    );
    assert!(
        old.try_status().is_none(),
        "the old process waits for its session"
    );
    let mut other = Conn::open(new.addr());
    assert_eq!(
        other.get("/", &[]).status,
        first.status,
        "a new connection is served"
    );
    drop(conn);
    let status = old
        .wait_exit(EXIT_LIMIT)
        .expect("the old process exits after its session");
    assert!(status.success());
    assert_moved_none(&old);
}

fn assert_moved_none(old: &Proxy) {
    let want = "upgrade: old process exiting: 0 flow(s) moved to the new process, 1 session(s) \
                finished here (0 of them cut at hard-stop-after)";
    assert!(
        old.stderr().contains(want),
        "want {want:?} in:\n{}",
        old.stderr()
    );
}

/// Connections opened one after another while the upgrade runs: none is refused and each
/// carries its bytes intact, whichever process accepted it.
#[test]
fn no_connection_is_refused_during_the_upgrade() {
    let server = TcpServer::start(free_addr(loopback(2)));
    let mut cfg = tcp_cfg("copy", free_port(Ipv4Addr::LOCALHOST), server.addr());
    let (mut old, sock) = start_old(&mut cfg);
    let addr = old.addr();
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let new = std::thread::scope(|s| {
        let looping = s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                pump(addr, &server, 4096, 4096).assert_intact(4096, 4096);
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
        wait_until("the first connections", IO_LIMIT, || {
            (done.load(Ordering::SeqCst) >= 20).then_some(())
        });
        let new = upgrade(&mut old, &cfg, &sock);
        let at_exit = done.load(Ordering::SeqCst);
        wait_until("connections after the old process exited", IO_LIMIT, || {
            (done.load(Ordering::SeqCst) >= at_exit + 20).then_some(())
        });
        stop.store(true, Ordering::SeqCst);
        looping.join().expect("every connection intact");
        new
    });
    assert!(new
        .stderr()
        .contains("taken over from the previous process"));
}

#[test]
fn rtmp_publish_moves_sockmap() {
    require_root();
    rtmp_publish_moves("sockmap")
}

/// A hand-over that fails part way keeps the flow with the old process: a peer asks for the
/// flows, receives the offer and goes away without answering. The flow carries on in the old
/// process, byte-exact, and is logged there.
#[test]
fn a_hand_over_cut_part_way_keeps_the_flow() {
    let server = TcpServer::start(free_addr(loopback(2)));
    let mut cfg = tcp_cfg("copy", free_port(Ipv4Addr::LOCALHOST), server.addr());
    let (old, sock) = start_old(&mut cfg);
    let c = TcpClient::connect(old.addr(), Reply::AfterEof { bytes: 4 * MIB });
    let first = c.send(MIB).unwrap_or_else(|(e, _)| panic!("send: {e}"));
    server.wait_received(c.id, MIB, IO_LIMIT);
    let offer = offer_and_leave(&sock);
    assert!(
        offer.starts_with("flow id=1 fe=fe be=be srv=s1 "),
        "{offer}"
    );
    wait_until("the old process to keep the flow", IO_LIMIT, || {
        old.stderr()
            .contains("upgrade: hand-over failed")
            .then_some(())
    });
    let rest = c
        .send(MIB)
        .unwrap_or_else(|(e, _)| panic!("send after the cut: {e}"));
    c.shutdown_write();
    let got = c.read_all();
    assert_eq!((got.bytes, got.end), (4 * MIB, e2e::End::Eof));
    assert_eq!(got.sha256, c.expected_from_server(4 * MIB));
    let report = server.report(c.id, IO_LIMIT);
    // Each send starts the client's pattern again: the upload is its first MiB twice.
    let mut upload = Vec::new();
    for _ in 0..2 {
        Pattern::new(c.client_seed())
            .write_to(&mut upload, MIB)
            .expect("pattern");
    }
    assert_eq!(first, rest);
    assert_eq!(
        report.received.bytes,
        2 * MIB,
        "both halves of the upload arrived"
    );
    assert_eq!(
        report.received.sha256,
        e2e::tcp::sha256(&upload),
        "the upload, byte-exact"
    );
    assert!(
        old.stderr().contains(" 4194304 --"),
        "the old process logs the flow at its end:\n{}",
        old.stderr()
    );
}

/// `CMD` on a runtime API socket, non-interactive: the answer up to the close.
fn api(sock: &std::path::Path, cmd: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("runtime API socket");
    s.set_read_timeout(Some(IO_LIMIT)).expect("timeout");
    s.write_all(format!("{cmd}\n").as_bytes()).expect("command");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("answer");
    out
}

/// An adopted flow is the new process's like its own: it shows in `show sess`, and it holds
/// its slot under the frontend's `maxconn`, so that with `maxconn 1` the next connection
/// waits in the backlog (no connection to the server) until the adopted flow ends.
#[test]
fn an_adopted_flow_shows_and_holds_its_maxconn_slot() {
    let server = TcpServer::start(free_addr(loopback(2)));
    let mut cfg = tcp_cfg("copy", free_port(Ipv4Addr::LOCALHOST), server.addr())
        .replace("frontend fe\n", "frontend fe\n    maxconn 1\n");
    let (mut old, sock) = start_old(&mut cfg);
    let c = TcpClient::connect(old.addr(), Reply::AfterEof { bytes: 4096 });
    c.send(MIB).expect("the first MiB");
    server.wait_received(c.id, MIB, IO_LIMIT);
    let new = upgrade(&mut old, &cfg, &sock);
    assert_moved(&old, &new, 1, 0);
    let me = c.stream.local_addr().expect("client address").to_string();
    let sess = api(&sock, "show sess");
    assert!(
        sess.lines().any(|l| l.contains(&me) && l.contains("fe=fe")),
        "the adopted flow from {me} in:\n{sess}"
    );
    let waiting = std::net::TcpStream::connect(new.addr()).expect("the backlog takes it");
    // Time for a wrongly accepted connection to reach the server; its absence is the check.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.accepted(),
        1,
        "a second flow was let in beside the adopted one under maxconn 1"
    );
    c.shutdown_write();
    let got = c.read_all();
    assert_eq!(got.bytes, 4096, "the adopted flow ends whole");
    wait_until(
        "the waiting connection to reach the server",
        IO_LIMIT,
        || (server.accepted() == 2).then_some(()),
    );
    drop(waiting);
}

/// What a half-closed flow carries each way: `before` bytes in the old process, `after` in
/// the new one. More than a socket's buffers after the move, so that the new process must
/// move them (a flow left in the old process, or one whose live direction did not resume,
/// stalls).
const HALF_BEFORE: u64 = 70_000;
const HALF_AFTER: u64 = 3 * MIB;

fn pattern(seed: u64, len: u64) -> Vec<u8> {
    let mut v = Vec::new();
    Pattern::new(seed).write_to(&mut v, len).expect("pattern");
    v
}

/// A client and the backend's end of its flow through `old`, with read timeouts.
fn half_close_pair(
    old: &Proxy,
    backend: &std::net::TcpListener,
) -> (std::net::TcpStream, std::net::TcpStream) {
    let client = std::net::TcpStream::connect(old.addr()).expect("connect");
    let (server, _) = backend.accept().expect("accept");
    for s in [&client, &server] {
        s.set_read_timeout(Some(IO_LIMIT)).expect("timeout");
    }
    (client, server)
}

/// Asks the old process for its flows as a new process would, reads the offer and goes away
/// without answering: the hand-over is cut part way.
fn offer_and_leave(sock: &std::path::Path) -> String {
    use std::io::{Read, Write};
    let mut peer = std::os::unix::net::UnixStream::connect(sock).expect("hand-over socket");
    peer.write_all(b"_getflows\n").expect("write");
    let mut len = [0u8; 4];
    peer.read_exact(&mut len).expect("the offer's length");
    let mut offer = vec![0u8; u32::from_be_bytes(len) as usize];
    // Read without taking the descriptors: the kernel closes the copies they carried.
    peer.read_exact(&mut offer).expect("the offer");
    String::from_utf8_lossy(&offer).to_string()
}

/// `from` sends `bytes` and half-closes; `to` reads them and the FIN.
fn half_close(from: &mut std::net::TcpStream, to: &mut std::net::TcpStream, bytes: &[u8]) {
    use std::io::{Read, Write};
    from.write_all(bytes).expect("write before the FIN");
    from.shutdown(std::net::Shutdown::Write).expect("FIN");
    let mut got = Vec::new();
    to.read_to_end(&mut got).expect("the bytes and the FIN");
    assert!(
        got == bytes,
        "{} bytes before the FIN, byte-exact",
        bytes.len()
    );
}

/// `reader` sees EOF and nothing before it.
fn assert_eof(reader: &mut std::net::TcpStream, what: &str) {
    use std::io::Read;
    let mut rest = Vec::new();
    let end = reader.read_to_end(&mut rest);
    assert_eq!((end.ok(), rest.len()), (Some(0), 0), "{what}");
}

/// `reader` reads exactly `want`, which `writer` writes meanwhile (more than the sockets
/// buffer, so the two run at once).
fn carry(writer: &mut std::net::TcpStream, reader: &mut std::net::TcpStream, want: &[u8]) {
    use std::io::{Read, Write};
    std::thread::scope(|s| {
        s.spawn(|| writer.write_all(want).expect("write"));
        let mut got = vec![0u8; want.len()];
        reader.read_exact(&mut got).expect("read");
        assert!(got == want, "{} bytes arrived, not byte-exact", want.len());
    });
}

/// The access line of the flow: one in both processes together, with `down` bytes to the
/// client and a clean end, from the new process.
fn assert_one_line(old: &Proxy, new: &Proxy, down: u64) {
    let want = format!(" {down} --");
    wait_until("the flow's access line", IO_LIMIT, || {
        new.stderr().contains(&want).then_some(())
    });
    let lines = |p: &Proxy| {
        p.stderr()
            .lines()
            .filter(|l| l.contains(" fe be/s1 "))
            .count()
    };
    assert_eq!(
        (lines(old), lines(new)),
        (0, 1),
        "one access line, from the new process, with {want:?}:\nold:\n{}\nnew:\n{}",
        old.stderr(),
        new.stderr()
    );
}

/// The moved flow in the new process's `show sess`, with the old process's bytes.
fn assert_sess_bytes(sock: &std::path::Path, up: u64, down: u64) {
    let sess = api(sock, "show sess");
    let want = format!("bytes_in={up} bytes_out={down}");
    assert!(
        sess.lines()
            .any(|l| l.contains("fe=fe") && l.contains(&want)),
        "{want} in:\n{sess}"
    );
}

/// The client half-closes (an RTMP player that shut its write side) and the backend goes on
/// sending: the flow moves in the upgrade, the old process exits at once, the backend's
/// further bytes reach the client byte-exact, and its close reaches the client as EOF.
fn client_half_closed_flow_moves(engine: &str) {
    let backend = std::net::TcpListener::bind(free_addr(loopback(2))).expect("bind");
    let to = backend.local_addr().expect("addr");
    let mut cfg = tcp_cfg(engine, free_port(Ipv4Addr::LOCALHOST), to);
    let (mut old, sock) = start_old(&mut cfg);
    let (mut client, mut server) = half_close_pair(&old, &backend);
    let up = pattern(1, 5000);
    half_close(&mut client, &mut server, &up);
    let down = pattern(2, HALF_BEFORE + HALF_AFTER);
    let (before, after) = down.split_at(HALF_BEFORE as usize);
    carry(&mut server, &mut client, before);
    let new = upgrade(&mut old, &cfg, &sock);
    assert_moved(&old, &new, 1, 0);
    assert_sess_bytes(&sock, up.len() as u64, HALF_BEFORE);
    carry(&mut server, &mut client, after);
    drop(server);
    assert_eof(&mut client, "EOF after the backend's close");
    assert_one_line(&old, &new, HALF_BEFORE + HALF_AFTER);
}

#[test]
fn a_client_half_closed_flow_moves_copy() {
    client_half_closed_flow_moves("copy")
}

#[test]
fn a_client_half_closed_flow_moves_splice() {
    client_half_closed_flow_moves("splice")
}

#[test]
fn a_client_half_closed_flow_moves_sockmap() {
    require_root();
    client_half_closed_flow_moves("sockmap")
}

/// The opposite half: the backend half-closes and the client goes on sending. Its further
/// bytes reach the backend byte-exact after the move, and its FIN reaches the backend as
/// EOF, which ends the flow.
fn server_half_closed_flow_moves(engine: &str) {
    use std::net::Shutdown;
    let backend = std::net::TcpListener::bind(free_addr(loopback(2))).expect("bind");
    let to = backend.local_addr().expect("addr");
    let mut cfg = tcp_cfg(engine, free_port(Ipv4Addr::LOCALHOST), to);
    let (mut old, sock) = start_old(&mut cfg);
    let (mut client, mut server) = half_close_pair(&old, &backend);
    let down = pattern(3, 5000);
    half_close(&mut server, &mut client, &down);
    let up = pattern(4, HALF_BEFORE + HALF_AFTER);
    let (before, after) = up.split_at(HALF_BEFORE as usize);
    carry(&mut client, &mut server, before);
    let new = upgrade(&mut old, &cfg, &sock);
    assert_moved(&old, &new, 1, 0);
    assert_sess_bytes(&sock, HALF_BEFORE, down.len() as u64);
    carry(&mut client, &mut server, after);
    client.shutdown(Shutdown::Write).expect("client FIN");
    assert_eof(&mut server, "EOF after the client's FIN");
    assert_one_line(&old, &new, down.len() as u64);
}

#[test]
fn a_server_half_closed_flow_moves_copy() {
    server_half_closed_flow_moves("copy")
}

#[test]
fn a_server_half_closed_flow_moves_splice() {
    server_half_closed_flow_moves("splice")
}

#[test]
fn a_server_half_closed_flow_moves_sockmap() {
    require_root();
    server_half_closed_flow_moves("sockmap")
}

/// A half-closed flow offered and not taken (the peer reads the offer and goes away) resumes
/// in the old process with only its live direction: the offer says which one ended, the
/// backend's further bytes reach the client byte-exact, its close reaches it as EOF, and the
/// old process logs the flow.
#[test]
fn a_half_closed_flow_not_taken_resumes_in_the_old_process() {
    let backend = std::net::TcpListener::bind(free_addr(loopback(2))).expect("bind");
    let to = backend.local_addr().expect("addr");
    let mut cfg = tcp_cfg("copy", free_port(Ipv4Addr::LOCALHOST), to);
    let (old, sock) = start_old(&mut cfg);
    let (mut client, mut server) = half_close_pair(&old, &backend);
    half_close(&mut client, &mut server, b"");
    let offer = offer_and_leave(&sock);
    assert!(offer.ends_with(" ended=up"), "{offer}");
    wait_until("the old process to keep the flow", IO_LIMIT, || {
        old.stderr()
            .contains("upgrade: hand-over failed")
            .then_some(())
    });
    let down = pattern(5, HALF_AFTER);
    carry(&mut server, &mut client, &down);
    drop(server);
    assert_eof(&mut client, "EOF after the close");
    let want = format!(" {HALF_AFTER} --");
    wait_until("the flow's access line", IO_LIMIT, || {
        old.stderr().contains(&want).then_some(())
    });
}

/// A half-closed flow keeps its idle time and its half-closed limit across the upgrade: the
/// client half-closed, the server says nothing, `timeout server-fin` (6 s) bounds the wait;
/// 4 s of it pass in the old process, and the new one ends the flow at 6 s from the last
/// byte (`sD`), not 6 s after the hand-over, nor at the 60 s idle limit.
fn a_half_closed_flow_keeps_its_fin_timeout(engine: &str) {
    use std::io::Read;
    let backend = std::net::TcpListener::bind(free_addr(loopback(2))).expect("bind");
    let to = backend.local_addr().expect("addr");
    let mut cfg = tcp_cfg(engine, free_port(Ipv4Addr::LOCALHOST), to).replace(
        "timeout server 60s",
        "timeout server 60s\n    timeout server-fin 6s",
    );
    let (mut old, sock) = start_old(&mut cfg);
    let (mut client, mut server) = half_close_pair(&old, &backend);
    half_close(&mut client, &mut server, b"sixteen bytes..!");
    let last_byte = std::time::Instant::now();
    std::thread::sleep(IDLE_BEFORE);
    let new = upgrade(&mut old, &cfg, &sock);
    assert_moved(&old, &new, 1, 0);
    let mut rest = Vec::new();
    let end = client.read_to_end(&mut rest);
    let idle = last_byte.elapsed();
    assert!(
        end.is_ok_and(|n| n == 0),
        "the proxy ends the flow: {rest:?}"
    );
    assert!(
        idle >= IDLE_LIMIT - Duration::from_millis(500) && idle < Duration::from_secs(8),
        "the flow ended {idle:?} after its last byte; its server-fin timeout is {IDLE_LIMIT:?}, \
         of which {IDLE_BEFORE:?} passed in the old process\nnew:\n{}",
        new.stderr()
    );
    wait_until("the flow's access line", IO_LIMIT, || {
        new.stderr().contains(" 0 sD ").then_some(())
    });
}

#[test]
fn a_half_closed_flow_keeps_its_fin_timeout_copy() {
    a_half_closed_flow_keeps_its_fin_timeout("copy")
}

#[test]
fn a_half_closed_flow_keeps_its_fin_timeout_sockmap() {
    require_root();
    a_half_closed_flow_keeps_its_fin_timeout("sockmap")
}
