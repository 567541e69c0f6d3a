//! SRT ingest over UDP through a `udp-lb` section: real ffmpeg publishers (caller mode,
//! MPEG-TS) and real ffmpeg SRT listeners standing in for Ant Media Server nodes, all on
//! 127.0.0.0/8.
//!
//! - two publishers spread round robin over two nodes, each recording decodable with as many
//!   frames as a publish straight to a listener gives; datagrams a stranger sends to a flow's
//!   server socket are dropped and counted (`proxy_udp_frontend_datagrams_dropped_total`);
//! - `balance source` keeps a caller on its node publish after publish;
//! - a node killed (its SRT listener and its liveness port): its flow ends, a new publish goes
//!   to the survivor;
//! - 10 000 new source ports against `maxconn 100` while a stream runs: the stream's flow is
//!   never reclaimed, its recording has a direct publish's frame count, and the reclaimed
//!   flows are summed up in a line a second rather than logged one by one.

use e2e::srt::{SrtListener, SrtPublisher};
use e2e::{free_port, loopback, wait_until, Proxy};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;

const SLACK: Duration = Duration::from_secs(20);
/// Long enough for a listener to see its caller's end (SRT's peer idle timeout is 5 s).
const LISTENER_END: Duration = Duration::from_secs(15);

/// A free UDP port on `ip` (the harness hands out ports free for TCP; checked for UDP too).
fn udp_port(ip: Ipv4Addr) -> u16 {
    loop {
        let p = free_port(ip);
        if UdpSocket::bind((ip, p)).is_ok() {
            return p;
        }
    }
}

struct Lb {
    proxy: Proxy,
    addr: SocketAddr,
    stats: SocketAddr,
}

/// The proxy with a stats page (its TCP bind also tells when the proxy is up) and one
/// `udp-lb srt` section with `lines` (balance, servers, limits) added.
fn start_lb(lines: &str) -> Lb {
    let stats = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, udp_port(Ipv4Addr::LOCALHOST)));
    let cfg = format!(
        "listen stats
    bind {stats}
    mode http
    timeout client 10s
    timeout connect 2s
    timeout server 10s
    stats enable
    stats uri /stats

udp-lb srt
    dgram-bind {addr}
{lines}"
    );
    Lb {
        proxy: Proxy::start(&cfg),
        addr,
        stats,
    }
}

/// The Prometheus page of the stats listener.
fn metrics(stats: SocketAddr) -> String {
    let mut s = TcpStream::connect(stats).expect("stats");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(b"GET /stats;metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

/// The value of the series starting with `series` (name and labels), 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The flow lines of the proxy's stderr (one per ended flow).
fn flow_lines(proxy: &Proxy) -> Vec<String> {
    proxy
        .stderr()
        .lines()
        .filter(|l| l.contains(" udp in="))
        .map(str::to_string)
        .collect()
}

/// Frames of a publish straight to a listener: what a hop must deliver.
fn direct_frames(ip: Ipv4Addr, seconds: u32) -> u64 {
    let addr = SocketAddr::from((ip, udp_port(ip)));
    let mut l = SrtListener::start(addr, 60);
    thread::sleep(Duration::from_millis(500));
    let mut p = SrtPublisher::start(addr, "direct", seconds);
    assert!(p.wait(SLACK).is_some_and(|s| s.success()), "{}", p.log());
    l.finish(LISTENER_END);
    let frames = l.frames();
    assert!(frames > 0, "direct publish recorded nothing: {}", l.log());
    frames
}

/// A recording through the proxy has the frames of a direct one. One frame either way is
/// what two direct runs of the same publish differ by (where ffmpeg's `-t` and the
/// listener's stream start fall); a hop that loses or reorders datagrams costs far more
/// (SRT drops whole late packets, each a part of a frame).
fn assert_frames(got: u64, direct: u64, log: &str) {
    assert!(
        got.abs_diff(direct) <= 1,
        "{got} frames through the proxy, {direct} direct; listener log:\n{log}"
    );
}

/// Local ports of the proxy's UDP sockets bound to the wildcard address: its flows' server
/// sockets (the `dgram-bind` socket is on 127.0.0.1).
fn flow_ports(pid: u32) -> Vec<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().to_string();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/udp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (ip, port) = f.get(1)?.split_once(':')?;
            (ip == "00000000" && inodes.contains(*f.get(9)?))
                .then(|| u16::from_str_radix(port, 16).ok())?
        })
        .collect()
}

#[test]
fn two_publishers_spread_round_robin_and_strangers_are_dropped() {
    // Long enough that both flows still run once both listeners have probed their input
    // (ffmpeg writes its first bytes after about 5 s of analysis).
    let seconds = 14;
    let direct = thread::spawn(move || direct_frames(loopback(4), seconds));
    let n1 = SocketAddr::from((loopback(2), udp_port(loopback(2))));
    let n2 = SocketAddr::from((loopback(3), udp_port(loopback(3))));
    let mut l1 = SrtListener::start(n1, 60);
    let mut l2 = SrtListener::start(n2, 60);
    let lb = start_lb(&format!(
        "    balance roundrobin\n    timeout client 3s\n    server n1 {n1}\n    server n2 {n2}\n"
    ));
    let mut a = SrtPublisher::start(lb.addr, "live/a", seconds);
    thread::sleep(Duration::from_secs(1));
    let mut b = SrtPublisher::start(lb.addr, "live/b", seconds);
    wait_until("both nodes to record", SLACK, || {
        (l1.recorded() > 0 && l2.recorded() > 0).then_some(())
    });
    // A stranger writes to each flow's server socket: dropped there, counted.
    let ports = flow_ports(lb.proxy.pid());
    assert_eq!(
        ports.len(),
        2,
        "two flows, two server sockets: {ports:?}\n{}",
        std::fs::read_to_string(format!("/proc/{}/net/udp", lb.proxy.pid())).unwrap_or_default()
    );
    let stranger = UdpSocket::bind((loopback(9), 0)).expect("stranger");
    for port in &ports {
        for _ in 0..5 {
            stranger
                .send_to(b"not from the server", (Ipv4Addr::LOCALHOST, *port))
                .expect("send");
        }
    }
    let dropped = wait_until("the strangers' datagrams to be counted", SLACK, || {
        let m = metrics(lb.stats);
        let d = metric(
            &m,
            "proxy_udp_frontend_datagrams_dropped_total{proxy=\"srt\"}",
        );
        (d >= 10.0).then_some(d)
    });
    assert!(a.wait(SLACK).is_some_and(|s| s.success()), "{}", a.log());
    assert!(b.wait(SLACK).is_some_and(|s| s.success()), "{}", b.log());
    l1.finish(LISTENER_END);
    l2.finish(LISTENER_END);
    let direct = direct.join().expect("direct run");
    assert_frames(l1.frames(), direct, &l1.log());
    assert_frames(l2.frames(), direct, &l2.log());
    let lines = wait_until("both flows to end and be logged", SLACK, || {
        let l = flow_lines(&lb.proxy);
        (l.len() == 2).then_some(l)
    });
    assert!(lines.iter().any(|l| l.contains(" srt/n1 ")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains(" srt/n2 ")), "{lines:?}");
    assert!(
        lines.iter().all(|l| l.contains(" cD ")),
        "ended idle: {lines:?}"
    );
    let m = metrics(lb.stats);
    for n in ["n1", "n2"] {
        let series = format!("proxy_udp_server_datagrams_in_total{{proxy=\"srt\",server=\"{n}\"}}");
        assert!(metric(&m, &series) > 100.0, "{series}\n{m}");
        let back = format!("proxy_udp_server_datagrams_out_total{{proxy=\"srt\",server=\"{n}\"}}");
        assert!(metric(&m, &back) > 0.0, "{back}");
    }
    assert!(
        metric(&m, "haproxy_frontend_sessions_total{proxy=\"srt\"}") == 2.0,
        "{m}"
    );
    assert!(dropped >= 10.0);
    let per_server: f64 = ["n1", "n2"]
        .iter()
        .map(|n| {
            let series =
                format!("proxy_udp_server_datagrams_dropped_total{{proxy=\"srt\",server=\"{n}\"}}");
            metric(&m, &series)
        })
        .sum();
    assert!(
        per_server >= 10.0,
        "the strangers show on their servers' rows\n{m}"
    );
}

#[test]
fn balance_source_keeps_a_caller_on_its_node() {
    let n1 = SocketAddr::from((loopback(2), udp_port(loopback(2))));
    let n2 = SocketAddr::from((loopback(3), udp_port(loopback(3))));
    let lb = start_lb(&format!(
        "    balance source\n    timeout client 2s\n    server n1 {n1}\n    server n2 {n2}\n"
    ));
    for round in 0..3 {
        let mut nodes = [SrtListener::start(n1, 60), SrtListener::start(n2, 60)];
        thread::sleep(Duration::from_millis(500));
        let mut p = SrtPublisher::start(lb.addr, &format!("live/s{round}"), 3);
        assert!(p.wait(SLACK).is_some_and(|s| s.success()), "{}", p.log());
        let node = wait_until("a node to record the publish", SLACK, || {
            (0..2).find(|i| nodes[*i].recorded() > 0)
        });
        nodes[node].finish(LISTENER_END);
        assert!(nodes[node].frames() > 0, "{}", nodes[node].log());
        assert_eq!(
            nodes[1 - node].recorded(),
            0,
            "round {round}: both nodes got it"
        );
        for l in &mut nodes {
            l.kill();
        }
        let lines = wait_until("the flow to end", SLACK, || {
            let l = flow_lines(&lb.proxy);
            (l.len() == round + 1).then_some(l)
        });
        let server = |l: &String| l.contains(" srt/n1 ");
        assert!(
            lines.iter().all(server) || !lines.iter().any(server),
            "one node for every publish of 127.0.0.1: {lines:?}"
        );
        assert_eq!(
            ["n1", "n2"][node],
            if server(&lines[0]) { "n1" } else { "n2" }
        );
    }
}

#[test]
fn a_dead_node_s_flow_ends_and_new_publishes_go_to_the_survivor() {
    let n1 = SocketAddr::from((loopback(2), udp_port(loopback(2))));
    let n2 = SocketAddr::from((loopback(3), udp_port(loopback(3))));
    // Each node's liveness port (Ant Media's 5080), checked over TCP.
    let live1 = TcpListener::bind((loopback(2), 0)).expect("liveness 1");
    let live2 = TcpListener::bind((loopback(3), 0)).expect("liveness 2");
    let (c1, c2) = (
        live1.local_addr().expect("a").port(),
        live2.local_addr().expect("a").port(),
    );
    let mut live = [Some(live1), Some(live2)];
    let lb = start_lb(&format!(
        "    balance roundrobin\n    timeout client 3s\n    timeout check 1s\n\
         server n1 {n1} check port {c1} inter 300 fall 2 rise 1\n\
         server n2 {n2} check port {c2} inter 300 fall 2 rise 1\n"
    ));
    let mut nodes = [SrtListener::start(n1, 90), SrtListener::start(n2, 90)];
    thread::sleep(Duration::from_millis(500));
    let mut a = SrtPublisher::start(lb.addr, "live/a", 30);
    let dead = wait_until("the publish to reach a node", SLACK, || {
        (0..2).find(|i| nodes[*i].recorded() > 0)
    });
    let survivor = 1 - dead;
    nodes[dead].kill();
    live[dead] = None;
    let name = ["n1", "n2"][dead];
    let ended = wait_until("the dead node's flow to end", SLACK, || {
        flow_lines(&lb.proxy)
            .into_iter()
            .find(|l| l.contains(&format!(" srt/{name} ")))
    });
    assert!(ended.contains(" SD ") || ended.contains(" cD "), "{ended}");
    let _ = a.wait(Duration::ZERO); // a caller of a dead node: stopped, not waited for
    let mut b = SrtPublisher::start(lb.addr, "live/b", 4);
    assert!(b.wait(SLACK).is_some_and(|s| s.success()), "{}", b.log());
    nodes[survivor].finish(LISTENER_END);
    let frames = nodes[survivor].frames();
    assert!(
        frames > 0,
        "survivor recorded nothing: {}",
        nodes[survivor].log()
    );
    let m = metrics(lb.stats);
    let series = format!("haproxy_server_status{{proxy=\"srt\",server=\"{name}\",state=\"DOWN\"}}");
    assert_eq!(metric(&m, &series), 1.0, "{m}");
}

#[test]
fn ten_thousand_spoofed_ports_do_not_evict_an_established_flow() {
    let seconds = 10;
    let direct = thread::spawn(move || direct_frames(loopback(5), seconds));
    let n1 = SocketAddr::from((loopback(2), udp_port(loopback(2))));
    let lb = start_lb(&format!(
        "    maxconn 100\n    timeout client 3s\n    server n1 {n1}\n"
    ));
    let mut l = SrtListener::start(n1, 60);
    thread::sleep(Duration::from_millis(500));
    let mut p = SrtPublisher::start(lb.addr, "live/kept", seconds);
    wait_until("the stream to reach its node", SLACK, || {
        (l.recorded() > 0).then_some(())
    });
    let spoofer_ip = loopback(6);
    let mut sent = 0u32;
    let payload = [0x5a_u8; 1316];
    for port in 20_000u16..32_000 {
        if sent == 10_000 {
            break;
        }
        let Ok(s) = UdpSocket::bind((spoofer_ip, port)) else {
            continue;
        };
        if s.send_to(&payload, lb.addr).is_ok() {
            sent += 1;
        }
    }
    assert_eq!(sent, 10_000);
    assert!(p.wait(SLACK).is_some_and(|s| s.success()), "{}", p.log());
    l.finish(LISTENER_END);
    let direct = direct.join().expect("direct run");
    assert_frames(l.frames(), direct, &l.log());
    let kept = wait_until("the stream's flow to end", SLACK, || {
        let lines = flow_lines(&lb.proxy);
        let mine: Vec<String> = lines
            .into_iter()
            .filter(|l| l.starts_with("127.0.0.1:") || l.contains("] 127.0.0.1:"))
            .collect();
        (!mine.is_empty()).then_some(mine)
    });
    assert_eq!(kept.len(), 1, "one flow for the whole stream: {kept:?}");
    assert!(
        kept[0].contains(" cD "),
        "ended idle, not reclaimed: {kept:?}"
    );
    let m = metrics(lb.stats);
    assert!(
        metric(&m, "haproxy_frontend_max_sessions{proxy=\"srt\"}") <= 100.0,
        "{m}"
    );
    // Reclaimed unanswered flows are summed up, not logged one by one: at most the flows the
    // table held at the end get lines of their own.
    let logged = flow_lines(&lb.proxy).len();
    assert!(
        logged <= 101,
        "{logged} flow lines for a flood of 10 000 ports"
    );
    assert!(
        lb.proxy.stderr().contains("reclaimed at maxconn 100"),
        "no summary of the reclaimed flows"
    );
}

/// A configuration reload (SIGHUP) while a stream runs: the `udp-lb` section keeps its
/// socket and its flows (the stream records as a direct publish does, in one flow), and its
/// servers' health, checked by the reloaded checker, still steers the running section: a
/// node whose liveness port closes after the reload gets no new flow.
#[test]
fn a_reload_keeps_the_stream_and_the_health_checks() {
    let seconds = 10;
    let direct = thread::spawn(move || direct_frames(loopback(7), seconds));
    let n1 = SocketAddr::from((loopback(2), udp_port(loopback(2))));
    let live = TcpListener::bind((loopback(2), 0)).expect("liveness");
    let port = live.local_addr().expect("addr").port();
    let mut lb = start_lb(&format!(
        "    timeout client 3s\n    timeout check 1s\n\
         server n1 {n1} check port {port} inter 300 fall 2 rise 1\n"
    ));
    let mut l = SrtListener::start(n1, 60);
    thread::sleep(Duration::from_millis(500));
    let mut p = SrtPublisher::start(lb.addr, "live/reload", seconds);
    wait_until("the stream to reach its node", SLACK, || {
        (l.recorded() > 0).then_some(())
    });
    lb.proxy.signal(e2e::Signal::SIGHUP);
    wait_until("the reload to finish", SLACK, || {
        lb.proxy.stderr().contains("reload done").then_some(())
    });
    assert!(p.wait(SLACK).is_some_and(|s| s.success()), "{}", p.log());
    l.finish(LISTENER_END);
    assert_frames(l.frames(), direct.join().expect("direct run"), &l.log());
    let lines = wait_until("the stream's flow to end", SLACK, || {
        let l = flow_lines(&lb.proxy);
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(lines.len(), 1, "one flow across the reload: {lines:?}");
    drop(live);
    let down = "haproxy_server_status{proxy=\"srt\",server=\"n1\",state=\"DOWN\"}";
    wait_until("n1 to be DOWN", SLACK, || {
        (metric(&metrics(lb.stats), down) == 1.0).then_some(())
    });
    let dropped = "proxy_udp_frontend_datagrams_dropped_total{proxy=\"srt\"}";
    let before = metric(&metrics(lb.stats), dropped);
    let client = UdpSocket::bind((loopback(8), 0)).expect("client");
    client.send_to(b"hello", lb.addr).expect("send");
    wait_until("a datagram with no server up to be dropped", SLACK, || {
        (metric(&metrics(lb.stats), dropped) > before).then_some(())
    });
}
