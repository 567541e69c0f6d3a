//! `forward-engine nat`: plain TCP balanced by the kernel's NAT, in network namespaces the
//! tests make: a client, the balancer (runs the proxy, forwards), and two nodes.
//!
//! ```text
//! client 10.1.0.2 ── 10.1.0.1 balancer 10.3.0.1 ── 10.3.0.2 node1
//!                                      10.4.0.1 ── 10.4.0.2 node2
//! ```
//! The nodes have no route back to the client: only the balancer's source rewriting
//! (masquerade) makes their answers come back, as the engine promises.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use e2e::ffmpeg::{ffmpeg_publish, FPS};
use e2e::netns::{link, Netns};
use e2e::tcp::{Pattern, IO_LIMIT};
use e2e::{pump, wait_until, End, Nginx, Proxy, Reply, Signal, TcpClient, TcpServer};

const NODE1: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 2);
const NODE2: Ipv4Addr = Ipv4Addr::new(10, 4, 0, 2);
const FRONT: &str = "10.1.0.1:1935";
/// IPv6 (`topology6`): unique local addresses, on the tests' own veths only.
const NODE1_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 3, 0, 0, 0, 0, 0, 2);
const NODE2_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 4, 0, 0, 0, 0, 0, 2);
const FRONT_V6: &str = "[fd00:1::1]:1935";
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

struct Topology {
    client: Netns,
    lb: Netns,
    node1: Netns,
    node2: Netns,
}

fn topology(tag: &str) -> Topology {
    let t = Topology {
        client: Netns::new(&format!("nat{tag}-c")),
        lb: Netns::new(&format!("nat{tag}-lb")),
        node1: Netns::new(&format!("nat{tag}-n1")),
        node2: Netns::new(&format!("nat{tag}-n2")),
    };
    link(&t.lb, "c0", "10.1.0.1/24", &t.client, "l0", "10.1.0.2/24");
    t.client.ip(&["route", "add", "default", "via", "10.1.0.1"]);
    link(&t.lb, "n1", "10.3.0.1/24", &t.node1, "l0", "10.3.0.2/24");
    link(&t.lb, "n2", "10.4.0.1/24", &t.node2, "l0", "10.4.0.2/24");
    t.lb.sysctl("net.ipv4.ip_forward", "1");
    t
}

/// [`topology`] with IPv6 beside IPv4: the same veths get unique local addresses (without
/// duplicate address detection, which would hold them back a second or two), the client a
/// default route through the balancer, and the balancer forwards IPv6. The nodes again have
/// no route back to the client.
///
/// ```text
/// client fd00:1::2 ── fd00:1::1 balancer fd00:3::1 ── fd00:3::2 node1
///                                        fd00:4::1 ── fd00:4::2 node2
/// ```
fn topology6(tag: &str) -> Topology {
    let t = topology(tag);
    let addr = |ns: &Netns, a: &str, dev: &str| ns.ip(&["addr", "add", a, "dev", dev, "nodad"]);
    addr(&t.lb, "fd00:1::1/64", "c0");
    addr(&t.client, "fd00:1::2/64", "l0");
    addr(&t.lb, "fd00:3::1/64", "n1");
    addr(&t.node1, "fd00:3::2/64", "l0");
    addr(&t.lb, "fd00:4::1/64", "n2");
    addr(&t.node2, "fd00:4::2/64", "l0");
    t.client
        .ip(&["-6", "route", "add", "default", "via", "fd00:1::1"]);
    t.lb.sysctl("net.ipv6.conf.all.forwarding", "1");
    t
}

/// A [`TcpServer`] in a node's namespace, dropped there: its drop wakes its accept loop by
/// connecting to it, which only works from inside.
struct NodeServer<'a> {
    ns: &'a Netns,
    server: Option<TcpServer>,
}

impl<'a> NodeServer<'a> {
    fn start(ns: &'a Netns, ip: impl Into<IpAddr>) -> NodeServer<'a> {
        let addr = SocketAddr::new(ip.into(), 9000);
        let server = ns.run(|| TcpServer::start(addr));
        NodeServer {
            ns,
            server: Some(server),
        }
    }
}

impl std::ops::Deref for NodeServer<'_> {
    type Target = TcpServer;
    fn deref(&self) -> &TcpServer {
        self.server.as_ref().expect("a running server")
    }
}

impl Drop for NodeServer<'_> {
    fn drop(&mut self) {
        let server = self.server.take();
        self.ns.run(move || drop(server));
    }
}

fn front() -> SocketAddr {
    FRONT.parse().expect("front address")
}

/// `nft ARGS` in the balancer's namespace: its stdout, or `None` when nft fails (no table).
fn nft(lb: &Netns, args: &[&str]) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", lb.name(), "nft"])
        .args(args)
        .output()
        .expect("run nft");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The servers the IPv4 table's slot map names now, each once, in slot order of first use.
fn slot_servers(lb: &Netns) -> Vec<String> {
    slot_servers_in(lb, "ip")
}

/// The same in our table of `family` (`ip`, `ip6`).
fn slot_servers_in(lb: &Netns, family: &str) -> Vec<String> {
    let Some(table) = nft(lb, &["list", "table", family, "amsproxy_nat"]) else {
        return Vec::new();
    };
    let mut servers = Vec::new();
    let elements = table
        .lines()
        .filter(|l| l.contains("elements") && l.contains(" . "))
        .flat_map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>());
    for e in elements {
        // `SLOT : ADDR . PORT`; IPv6 addresses have colons of their own.
        if let Some((_, server)) = e.split_once(" : ") {
            let server = server.trim().trim_end_matches('}').trim().to_string();
            if !servers.contains(&server) {
                servers.push(server);
            }
        }
    }
    servers
}

/// Waits until the slot map names exactly `want` (addresses as nft prints them, `IP . PORT`).
fn wait_slots(lb: &Netns, want: &[SocketAddr]) {
    wait_slots_in(lb, "ip", want)
}

/// The same in our table of `family`.
fn wait_slots_in(lb: &Netns, family: &str, want: &[SocketAddr]) {
    let mut want: Vec<String> = want
        .iter()
        .map(|a| format!("{} . {}", a.ip(), a.port()))
        .collect();
    want.sort();
    wait_until(
        &format!("the slot map to name {want:?}"),
        Duration::from_secs(20),
        || {
            let mut got = slot_servers_in(lb, family);
            got.sort();
            (got == want).then_some(())
        },
    );
}

/// One runtime API command on `sock`, its whole answer.
fn api(sock: &std::path::Path, command: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock)
        .unwrap_or_else(|e| panic!("{}: {e}", sock.display()));
    s.write_all(format!("{command}\n").as_bytes())
        .expect("send the command");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read the answer");
    answer
}

/// `cfg` with a runtime API socket in `dir`.
fn with_api(cfg: &str, dir: &e2e::TestDir) -> (String, std::path::PathBuf) {
    let sock = dir.join("admin.sock");
    let cfg = cfg.replacen(
        "global\n",
        &format!(
            "global\n    stats socket {} mode 600 level admin expose-fd listeners\n",
            sock.display()
        ),
        1,
    );
    (cfg, sock)
}

fn start_proxy(lb: &Netns, cfg: &str) -> Proxy {
    lb.run(|| Proxy::spawn(cfg))
}

fn cfg(servers: &[(&str, SocketAddr)], check: bool, extra_backend: &str) -> String {
    let check = if check {
        " check inter 300 fall 2 rise 1"
    } else {
        ""
    };
    let servers: String = servers
        .iter()
        .map(|(name, addr)| format!("    server {name} {addr}{check}\n"))
        .collect();
    format!(
        "global\n    log stderr local0\n\
         defaults\n    mode tcp\n    log global\n    option tcplog\n    timeout connect 2s\n\
         \x20   timeout client 60s\n    timeout server 60s\n\
         frontend rtmp\n    bind :1935\n    default_backend nodes\n\
         backend nodes\n    forward-engine nat\n{extra_backend}{servers}"
    )
}

/// One `nat up=P/B down=P/B` log line of frontend `rtmp` to `server`: (up bytes, down bytes).
fn flow_lines(proxy: &Proxy, server: &str) -> Vec<(u64, u64)> {
    proxy
        .stderr()
        .lines()
        .filter(|l| l.contains(&format!(" rtmp nodes/{server} ")))
        .filter_map(|l| {
            let rest = l.split(" nat up=").nth(1)?;
            let (up, down) = rest.split_once(" down=")?;
            let bytes = |s: &str| s.split('/').nth(1)?.trim().parse::<u64>().ok();
            Some((bytes(up)?, bytes(down)?))
        })
        .collect()
}

/// IP bytes that carry `payload` bytes of TCP: the payload plus, per segment, at most 52
/// bytes of IPv4 and TCP headers (timestamps), over segments of at least 500 bytes, plus the
/// handshake and close.
fn carries(ip_bytes: u64, payload: u64) -> bool {
    ip_bytes >= payload && ip_bytes <= payload + payload / 500 * 52 + 64 * 52
}

/// Two RTMP publishes spread over both nodes and arrive whole; a node dies, leaves the slot
/// table, and a new publish goes to the survivor while the survivor's running publish goes
/// on whole. Each flow gets a log line.
#[test]
fn rtmp_publishes_spread_and_a_dead_node_leaves_rotation() {
    const SECONDS: u32 = 6;
    let t = topology("r");
    let mut n1 = t.node1.run(|| Nginx::rtmp_recording(NODE1));
    let mut n2 = t.node2.run(|| Nginx::rtmp_recording(NODE2));
    let (a1, a2) = (n1.rtmp_addr(), n2.rtmp_addr());
    let proxy = start_proxy(&t.lb, &cfg(&[("ams1", a1), ("ams2", a2)], true, ""));
    wait_slots(&t.lb, &[a1, a2]);
    let url = |s: &str| format!("rtmp://{FRONT}/live/{s}");

    let mut a = t.client.run(|| ffmpeg_publish(&url("a"), SECONDS));
    let mut b = t.client.run(|| ffmpeg_publish(&url("b"), SECONDS));
    let on = |ns: &Netns, n: &Nginx| ns.run(|| n.streams());
    let (s1, s2) = wait_until("both publishes on a node", Duration::from_secs(20), || {
        let (s1, s2) = (on(&t.node1, &n1), on(&t.node2, &n2));
        (s1.len() + s2.len() == 2).then_some((s1, s2))
    });
    assert_eq!(
        (s1.len(), s2.len()),
        (1, 1),
        "round robin puts one publish on each node"
    );
    a.wait_success(Duration::from_secs(30));
    b.wait_success(Duration::from_secs(30));
    let full = u64::from(SECONDS * FPS);
    assert_eq!(t.node1.run(|| n1.recorded_frames(&[&s1[0]])), [full]);
    assert_eq!(t.node2.run(|| n2.recorded_frames(&[&s2[0]])), [full]);
    wait_until("a log line per flow", Duration::from_secs(20), || {
        let lines = [flow_lines(&proxy, "ams1"), flow_lines(&proxy, "ams2")];
        lines.iter().all(|l| l.len() == 1).then_some(())
    });

    // A long publish on one node; the other dies.
    let mut c = t.client.run(|| ffmpeg_publish(&url("c"), 3 * SECONDS));
    let c_on_1 = wait_until("publish c on a node", Duration::from_secs(20), || {
        let (s1, s2) = (on(&t.node1, &n1), on(&t.node2, &n2));
        if s1.contains(&"c".to_string()) {
            Some(true)
        } else if s2.contains(&"c".to_string()) {
            Some(false)
        } else {
            None
        }
    });
    let ((live_ns, live), dead, live_addr) = if c_on_1 {
        ((&t.node1, &n1), &mut n2, a1)
    } else {
        ((&t.node2, &n2), &mut n1, a2)
    };
    dead.stop();
    // Out of rotation once the checks saw it fail (inter 300 ms × fall 2).
    wait_slots(&t.lb, &[live_addr]);
    let mut d = t.client.run(|| ffmpeg_publish(&url("d"), SECONDS));
    wait_until("publish d on the survivor", Duration::from_secs(20), || {
        live_ns
            .run(|| live.streams())
            .contains(&"d".to_string())
            .then_some(())
    });
    c.wait_success(Duration::from_secs(40));
    d.wait_success(Duration::from_secs(30));
    assert_eq!(
        live_ns.run(|| live.recorded_frames(&["c", "d"])),
        [3 * full, full],
        "the survivor's running publish and the new one, whole"
    );
}

/// 1 GiB each way at once through the kernel's NAT, intact; the log line counts the bytes of
/// both directions.
#[test]
fn a_gib_each_way_arrives_intact_and_is_logged() {
    let t = topology("b");
    let server = NodeServer::start(&t.node1, NODE1);
    let proxy = start_proxy(&t.lb, &cfg(&[("s1", server.addr())], false, ""));
    wait_slots(&t.lb, &[server.addr()]);
    let p = t.client.run(|| pump(front(), &server, GIB, GIB));
    p.assert_intact(GIB, GIB);
    let lines = wait_until("the flow's log line", Duration::from_secs(20), || {
        let l = flow_lines(&proxy, "s1");
        (!l.is_empty()).then_some(l)
    });
    let (up, down) = lines[0];
    // The pump's 40-byte request header goes up before the data.
    assert!(carries(up, GIB + 40), "up: {up} IP bytes for 1 GiB");
    assert!(carries(down, GIB), "down: {down} IP bytes for 1 GiB");
}

/// A client on the balancer itself (in its namespace, where a probe or an ffmpeg on the
/// host would run) connects to the bind address and is balanced like a forwarded one: one
/// connection to each node by round robin, both intact, and each flow logged from its
/// conntrack events with the bytes that carried it. The nodes have no route to the client
/// network: the masquerade makes their answers come back.
#[test]
fn a_client_on_the_balancer_is_balanced() {
    let t = topology("o");
    let s1 = NodeServer::start(&t.node1, NODE1);
    let s2 = NodeServer::start(&t.node2, NODE2);
    let dir = e2e::TestDir::new("nat-local");
    let (config, sock) = with_api(
        &cfg(&[("s1", s1.addr()), ("s2", s2.addr())], false, ""),
        &dir,
    );
    let proxy = start_proxy(&t.lb, &config);
    wait_slots(&t.lb, &[s1.addr(), s2.addr()]);

    one_on_each(
        || {
            t.lb.run(|| TcpClient::connect(front(), Reply::Concurrent { bytes: MIB }))
        },
        &s1,
        &s2,
    );
    // Loopback is left alone (a loopback source may not leave the host): under `bind :1935`
    // 127.0.0.1:1935 is the host's own, where nothing listens, not a connection that hangs.
    let loopback = t.lb.run(|| {
        TcpStream::connect_timeout(&"127.0.0.1:1935".parse().unwrap(), Duration::from_secs(3))
            .err()
            .map(|e| e.kind())
    });
    assert_eq!(loopback, Some(std::io::ErrorKind::ConnectionRefused));
    let lines = wait_until("a log line per flow", Duration::from_secs(20), || {
        let l = [flow_lines(&proxy, "s1"), flow_lines(&proxy, "s2")];
        l.iter().all(|l| l.len() == 1).then_some(l)
    });
    for l in lines {
        let (up, down) = l[0];
        // The 40-byte request header goes up before the data.
        assert!(
            carries(up, MIB + 40) && carries(down, MIB),
            "{up} up, {down} down"
        );
    }
    let log = proxy.stderr();
    let flows: Vec<&str> = log.lines().filter(|l| l.contains(" nat up=")).collect();
    assert_eq!(flows.len(), 2, "{log}");
    assert!(
        flows.iter().all(|l| l.contains("10.1.0.1:")),
        "the client is the balancer's own address: {log}"
    );
    let stat = api(&sock, "show stat");
    for s in ["s1", "s2"] {
        assert!(
            stat.lines()
                .any(|l| l.starts_with(&format!("nodes,{s},")) && stot(l) == Some(1)),
            "{s} counted one session: {stat}"
        );
    }
}

/// Two connections made by `connect`, one after the other: round robin puts one on each
/// server, and each carries 1 MiB up and 1 MiB down intact.
fn one_on_each(connect: impl Fn() -> TcpClient, s1: &TcpServer, s2: &TcpServer) {
    let (n1, n2) = (s1.accepted(), s2.accepted());
    let first = connect();
    let (a, b, nb) = wait_until("the first connection on a node", IO_LIMIT, || {
        match (s1.accepted() - n1, s2.accepted() - n2) {
            (1, 0) => Some((s1, s2, n2)),
            (0, 1) => Some((s2, s1, n1)),
            _ => None,
        }
    });
    let second = connect();
    wait_until("the second connection on the other node", IO_LIMIT, || {
        (b.accepted() == nb + 1).then_some(())
    });
    assert_eq!(
        (s1.accepted() - n1, s2.accepted() - n2),
        (1, 1),
        "round robin: one connection each"
    );
    for (c, server) in [(&first, a), (&second, b)] {
        let sent = c.send(MIB).expect("send");
        c.shutdown_write();
        let got = c.read_all();
        assert_eq!((got.end, got.bytes), (End::Eof, MIB));
        assert_eq!(got.sha256, c.expected_from_server(MIB));
        let r = server.report(c.id, IO_LIMIT);
        assert_eq!((r.received.end, r.received.bytes), (End::Eof, MIB));
        assert_eq!(r.received.sha256, sent);
    }
}

/// IPv6: a frontend on a unique local address balances clients from the network and from
/// the balancer itself over two IPv6 nodes (round robin, one of each on each node), every
/// flow intact, and every flow logged from its conntrack events (AF_INET6 entries) with the
/// client it came from. The IPv6 table goes with the stop.
#[test]
fn ipv6_clients_are_balanced() {
    let t = topology6("6");
    let s1 = NodeServer::start(&t.node1, NODE1_V6);
    let s2 = NodeServer::start(&t.node2, NODE2_V6);
    let config = cfg(&[("s1", s1.addr()), ("s2", s2.addr())], false, "")
        .replace("    bind :1935\n", &format!("    bind {FRONT_V6}\n"));
    let mut proxy = start_proxy(&t.lb, &config);
    wait_slots_in(&t.lb, "ip6", &[s1.addr(), s2.addr()]);
    let front: SocketAddr = FRONT_V6.parse().expect("front address");
    let connect =
        |ns: &Netns| ns.run(|| TcpClient::connect(front, Reply::Concurrent { bytes: MIB }));
    one_on_each(|| connect(&t.client), &s1, &s2);
    one_on_each(|| connect(&t.lb), &s1, &s2);
    let lines = wait_until("a log line per flow", Duration::from_secs(20), || {
        let l = [flow_lines(&proxy, "s1"), flow_lines(&proxy, "s2")];
        l.iter().all(|l| l.len() == 2).then_some(l)
    });
    for (up, down) in lines.iter().flatten() {
        assert!(
            carries(*up, MIB + 40) && carries(*down, MIB),
            "{up} up, {down} down"
        );
    }
    let log = proxy.stderr();
    let flows: Vec<&str> = log.lines().filter(|l| l.contains(" nat up=")).collect();
    let from = |client: &str| flows.iter().filter(|l| l.contains(client)).count();
    assert_eq!(
        (from("fd00:1::2"), from("fd00:1::1")),
        (2, 2),
        "two flows from the client, two from the balancer: {log}"
    );
    proxy.signal(Signal::SIGTERM);
    assert!(proxy.wait_exit(Duration::from_secs(20)).is_some());
    let tables = nft(&t.lb, &["list", "tables"]).expect("nft list tables");
    assert!(
        !tables.contains("amsproxy_nat"),
        "table left behind: {tables}"
    );
}

/// The `stot` column of a `show stat` line.
fn stot(line: &str) -> Option<u64> {
    line.split(',').nth(7)?.parse().ok()
}

/// The proxy's own health check to a server on the balancer host (here the balancer's own
/// address and the frontend's port, where nothing listens) reaches that address, not the
/// table: the server stays down. Were the check balanced, it would reach the live node, and
/// the server would come back up (rise 1).
#[test]
fn health_checks_from_the_balancer_are_not_balanced() {
    let t = topology("k");
    let s1 = NodeServer::start(&t.node1, NODE1);
    let own: SocketAddr = "10.3.0.1:1935".parse().expect("address");
    let _proxy = start_proxy(&t.lb, &cfg(&[("s1", s1.addr()), ("here", own)], true, ""));
    wait_slots(&t.lb, &[s1.addr()]);
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        let mut got = slot_servers(&t.lb);
        got.sort();
        assert_eq!(
            got,
            [format!("{} . {}", NODE1, 9000)],
            "the server on the balancer came back up: its check was balanced"
        );
    }
}

/// Half-close each way and resets each way pass through unchanged (the kernel forwards the
/// segments themselves).
#[test]
fn half_close_and_reset_pass_through() {
    let t = topology("h");
    let server = NodeServer::start(&t.node1, NODE1);
    let _proxy = start_proxy(&t.lb, &cfg(&[("s1", server.addr())], false, ""));
    wait_slots(&t.lb, &[server.addr()]);
    t.client.run(|| {
        // Client first: its FIN reaches the server, whose reply after it arrives whole.
        let c = TcpClient::connect(front(), Reply::AfterEof { bytes: 4 * MIB });
        let sent = c.send(MIB).expect("send");
        c.shutdown_write();
        let got = c.read_all();
        let r = server.report(c.id, IO_LIMIT);
        assert_eq!((r.received.end, r.received.bytes), (End::Eof, MIB));
        assert_eq!(r.received.sha256, sent);
        assert_eq!((got.end, got.bytes), (End::Eof, 4 * MIB));
        assert_eq!(got.sha256, c.expected_from_server(4 * MIB));

        // Server first: the client reads EOF and can still send.
        let c = TcpClient::connect(front(), Reply::Concurrent { bytes: MIB });
        let got = c.read_all();
        assert_eq!((got.end, got.bytes), (End::Eof, MIB));
        let sent = c.send(MIB).expect("send after the server's FIN");
        c.shutdown_write();
        let r = server.report(c.id, IO_LIMIT);
        assert_eq!((r.received.end, r.received.bytes), (End::Eof, MIB));
        assert_eq!(r.received.sha256, sent);

        // The server resets: the client sees a reset.
        let c = TcpClient::connect(front(), Reply::ThenReset { bytes: 64 * 1024 });
        let got = c.read_all();
        assert_eq!(got.end, End::Reset, "after {} bytes", got.bytes);

        // The client resets: the server sees a reset.
        let c = TcpClient::connect(front(), Reply::AfterEof { bytes: 0 });
        c.send(64 * 1024).expect("send");
        let id = c.id;
        server.wait_received(id, 64 * 1024, IO_LIMIT);
        c.reset();
        assert_eq!(server.report(id, IO_LIMIT).received.end, End::Reset);
    });
}

/// A reload that removes the server of an established flow: the flow goes on (its conntrack
/// entry keeps its translation), new connections go to the remaining server. Then the stop
/// takes the table out of the kernel and connections are no longer translated.
#[test]
fn a_reload_keeps_established_flows_and_the_stop_leaves_nothing() {
    let t = topology("l");
    let s1 = NodeServer::start(&t.node1, NODE1);
    let s2 = NodeServer::start(&t.node2, NODE2);
    let both = [("s1", s1.addr()), ("s2", s2.addr())];
    let dir = e2e::TestDir::new("nat-reload");
    let (config, sock) = with_api(&cfg(&both, false, ""), &dir);
    let mut proxy = start_proxy(&t.lb, &config);
    wait_slots(&t.lb, &[s1.addr(), s2.addr()]);

    let held = t
        .client
        .run(|| TcpClient::connect(front(), Reply::AfterEof { bytes: MIB }));
    held.send(MIB).expect("send before the reload");
    let (holder, other, kept) = wait_until("the held flow's server", IO_LIMIT, || {
        match (s1.accepted(), s2.accepted()) {
            (1, 0) => Some((&*s1, &*s2, "s2")),
            (0, 1) => Some((&*s2, &*s1, "s1")),
            _ => None,
        }
    });
    holder.wait_received(held.id, MIB, IO_LIMIT);
    // The runtime API and the stats rows see the flow the kernel carries.
    let removed = if kept == "s1" { "s2" } else { "s1" };
    let sess = wait_until("the flow in show sess", Duration::from_secs(10), || {
        let sess = api(&sock, "show sess");
        sess.contains("engine=nat").then_some(sess)
    });
    assert!(
        sess.lines().any(|l| l.contains("fe=rtmp be=nodes")
            && l.contains(&format!("srv={removed} "))
            && l.contains("engine=nat")),
        "{sess}"
    );
    let stat = api(&sock, "show stat");
    assert!(
        stat.lines().any(|l| l.starts_with("nodes,BACKEND,0,0,1,")),
        "one current session on the backend: {stat}"
    );

    let remaining: Vec<(&str, SocketAddr)> =
        both.iter().copied().filter(|(n, _)| *n == kept).collect();
    let (config, _) = with_api(&cfg(&remaining, false, ""), &dir);
    std::fs::write(proxy.config_path(), config).expect("rewrite");
    proxy.signal(Signal::SIGHUP);
    wait_slots(&t.lb, &[other.addr()]);

    // The held flow goes on to the removed server.
    held.send(MIB).expect("send after the reload");
    held.shutdown_write();
    let got = held.read_all();
    let r = holder.report(held.id, IO_LIMIT);
    assert_eq!(r.received.bytes, 2 * MIB);
    assert_eq!(r.received.end, End::Eof);
    // Each send starts the client's pattern over: the server got it twice.
    let mut twice = Vec::new();
    for _ in 0..2 {
        let pattern = Pattern::new(held.client_seed());
        pattern.write_to(&mut twice, MIB).expect("pattern");
    }
    assert_eq!(
        r.received.sha256,
        e2e::tcp::sha256(&twice),
        "the held flow's upload, across the reload"
    );
    assert_eq!((got.end, got.bytes), (End::Eof, MIB));
    // New connections go to the server the reload kept.
    let p = t.client.run(|| pump(front(), other, 1000, 1000));
    p.assert_intact(1000, 1000);

    proxy.signal(Signal::SIGTERM);
    assert!(
        proxy.wait_exit(Duration::from_secs(20)).is_some(),
        "the proxy should exit"
    );
    let tables = nft(&t.lb, &["list", "tables"]).expect("nft list tables");
    assert!(
        !tables.contains("amsproxy_nat"),
        "our table left behind: {tables}"
    );
    let refused = t.client.run(|| {
        TcpStream::connect_timeout(&front(), Duration::from_secs(5))
            .err()
            .map(|e| e.kind())
    });
    assert_eq!(
        refused,
        Some(std::io::ErrorKind::ConnectionRefused),
        "with the table gone the balancer itself answers (nothing listens there)"
    );
}

/// A binary upgrade (`-x SOCKET -sf OLDPID`): the new process takes the table over (its pid
/// becomes the owner), the old one exits without deleting it, an established flow runs on
/// through the hand-over, and the new process's stop then takes the table out.
#[test]
fn a_binary_upgrade_adopts_the_table() {
    let t = topology("u");
    let server = NodeServer::start(&t.node1, NODE1);
    let dir = e2e::TestDir::new("nat-upgrade");
    let (old_cfg, sock) = with_api(&cfg(&[("s1", server.addr())], false, ""), &dir);
    let mut old = start_proxy(&t.lb, &old_cfg);
    wait_slots(&t.lb, &[server.addr()]);
    let held = t
        .client
        .run(|| TcpClient::connect(front(), Reply::AfterEof { bytes: MIB }));
    held.send(MIB).expect("send before the upgrade");
    server.wait_received(held.id, MIB, IO_LIMIT);

    // The new process's own API socket: the old one removes its path when it exits.
    let new_dir = e2e::TestDir::new("nat-upgrade-new");
    let (new_cfg, new_sock) = with_api(&cfg(&[("s1", server.addr())], false, ""), &new_dir);
    let new_cfg_path = new_dir.join("proxy.cfg");
    std::fs::write(&new_cfg_path, new_cfg).expect("the new process's config");
    let stderr = std::fs::File::create(dir.join("new.log")).expect("new.log");
    let mut new = t.lb.run(|| {
        Command::new(e2e::proxy_bin())
            .arg("-f")
            .arg(&new_cfg_path)
            .arg("-x")
            .arg(&sock)
            .arg("-sf")
            .arg(old.pid().to_string())
            .stdout(stderr.try_clone().expect("dup"))
            .stderr(stderr)
            .spawn()
            .expect("start the new process")
    });
    let status = old.wait_exit(Duration::from_secs(20));
    let new_log = || std::fs::read_to_string(dir.join("new.log")).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "the old process should exit cleanly: {status:?}\n{}\nnew:\n{}",
        old.stderr(),
        new_log()
    );
    let owner = format!("{:#010x}", new.id());
    wait_until(
        "the new process to own the table",
        Duration::from_secs(10),
        || {
            nft(&t.lb, &["list", "set", "ip", "amsproxy_nat", "owner"])
                .is_some_and(|s| s.contains(&owner))
                .then_some(())
        },
    );
    wait_slots(&t.lb, &[server.addr()]);
    // The flow made before the upgrade is followed by the new process (from its dump of
    // the kernel's entries).
    wait_until(
        "the held flow in the new process's show sess",
        Duration::from_secs(10),
        || {
            api(&new_sock, "show sess")
                .lines()
                .any(|l| l.contains("fe=rtmp be=nodes srv=s1 ") && l.contains("engine=nat"))
                .then_some(())
        },
    );

    held.send(MIB).expect("send after the upgrade");
    held.shutdown_write();
    let got = held.read_all();
    let r = server.report(held.id, IO_LIMIT);
    assert_eq!((r.received.bytes, r.received.end), (2 * MIB, End::Eof));
    assert_eq!(
        (got.bytes, got.end),
        (MIB, End::Eof),
        "the reply after the upgrade"
    );
    let p = t.client.run(|| pump(front(), &server, 1000, 1000));
    p.assert_intact(1000, 1000);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(new.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = new.wait().expect("wait for the new process");
    assert!(status.success(), "new process: {status}\n{}", new_log());
    let tables = nft(&t.lb, &["list", "tables"]).expect("nft list tables");
    assert!(
        !tables.contains("amsproxy_nat"),
        "table left behind: {tables}"
    );
}

/// The start is refused, with the reason, where the kernel would not carry the flows: a
/// balancer that does not forward (`net.ipv4.ip_forward` 0, a fresh namespace's default).
/// Nothing is left in the kernel.
#[test]
fn a_balancer_that_does_not_forward_refuses_to_start() {
    let lb = Netns::new("natf-lb");
    let mut proxy = start_proxy(
        &lb,
        &cfg(&[("s1", "10.3.0.2:9000".parse().unwrap())], false, ""),
    );
    let status = proxy
        .wait_exit(Duration::from_secs(20))
        .expect("the start should be refused");
    assert!(!status.success());
    let log = proxy.stderr();
    assert!(
        log.contains("forward-engine nat cannot start") && log.contains("net.ipv4.ip_forward"),
        "{log}"
    );
    let tables = nft(&lb, &["list", "tables"]).expect("nft list tables");
    assert!(!tables.contains("amsproxy_nat"), "{tables}");
}
