//! Servers discovered through DNS, against a real DNS server (dnsmasq) on loopback: a
//! `server-template` filled from A records follows the records as they change (a server whose
//! record goes is put in maintenance while its established request finishes; a record added
//! back takes a free slot and gets traffic once its checks pass), SRV records give each slot
//! its port and weight, and a DNS server answering garbage changes nothing and is logged once.
//! A record set too large for one UDP answer (TC) is read over TCP, as it is from a
//! `tcp@` nameserver.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use e2e::dnsmasq::Dnsmasq;
use e2e::http_client::{csv_column, csv_field, Conn, Response};
use e2e::nginx::http_get;
use e2e::nginx_http::NginxHttp;
use e2e::util::poll_until;
use e2e::{free_port, loopback, wait_until, Proxy};

const LIMIT: Duration = Duration::from_secs(30);

fn node(r: &Response) -> String {
    r.line("node ")
        .unwrap_or_else(|| panic!("no node line in {:?}", r.text()))
}

/// A port free on every one of `ips` (A records carry no port: the nodes share one).
fn port_free_on(ips: &[Ipv4Addr]) -> u16 {
    loop {
        let port = free_port(ips[0]);
        if ips
            .iter()
            .all(|ip| TcpListener::bind(SocketAddr::from((*ip, port))).is_ok())
        {
            return port;
        }
    }
}

/// The nodes that answer `n` new connections (one request each, so round robin moves on).
fn nodes_of(proxy: SocketAddr, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| node(&Conn::open(proxy).get("/", &["Connection: close"])))
        .collect()
}

/// As [`nodes_of`] while waiting: an answer without a node (503 before DNS filled any slot)
/// counts as none.
fn nodes_seen(proxy: SocketAddr, n: usize) -> Vec<String> {
    (0..n)
        .filter_map(|_| {
            Conn::open(proxy)
                .get("/", &["Connection: close"])
                .line("node ")
        })
        .collect()
}

/// The frontend comes first: [`Proxy::addr`] is the first bind.
fn head(proxy_port: u16, stats: u16, dns: SocketAddr) -> String {
    head_with(proxy_port, stats, &dns.to_string(), "")
}

/// As [`head`], the nameserver's address as written (`tcp@…`) and `extra` resolvers lines.
fn head_with(proxy_port: u16, stats: u16, dns: &str, extra: &str) -> String {
    format!(
        "resolvers dns\n    nameserver local {dns}\n    hold valid 1s\n    timeout resolve 200ms\n\
         \x20   timeout retry 300ms\n    resolve_retries 2\n{extra}\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 20s\n    timeout server 20s\n\
         frontend f\n    bind 127.0.0.1:{proxy_port}\n    default_backend ams\n\
         listen stats\n    bind 127.0.0.1:{stats}\n    stats enable\n    stats uri /stats\n    stats show-legends\n"
    )
}

#[test]
fn a_records_fill_slots_and_a_removed_record_drains_its_server() {
    let (ip2, ip3) = (loopback(2), loopback(3));
    let port = port_free_on(&[ip2, ip3]);
    let n2 = NginxHttp::start("ams2", SocketAddr::from((ip2, port)), None);
    let n3 = NginxHttp::start("ams3", SocketAddr::from((ip3, port)), None);
    let both = format!("{ip2} ams.test\n{ip3} ams.test\n");
    let mut dns = Dnsmasq::start(SocketAddr::from((ip2, free_port(ip2))), &both, &[]);
    let (pport, stats) = (
        free_port(Ipv4Addr::LOCALHOST),
        free_port(Ipv4Addr::LOCALHOST),
    );
    let cfg = format!(
        "{}backend ams\n    balance roundrobin\n\
         \x20   server-template ams 3 ams.test:{port} check inter 200ms rise 2 fall 1 resolvers dns \
         init-addr none resolve-prefer ipv4\n",
        head(pport, stats, dns.addr())
    );
    let proxy = Proxy::start(&cfg);
    let lb = proxy.addr();

    // Both records take a slot and both nodes get traffic; the third slot stays free.
    wait_until("both nodes get traffic", LIMIT, || {
        let seen = nodes_seen(lb, 4);
        (seen.iter().any(|n| n == "ams2") && seen.iter().any(|n| n == "ams3")).then_some(())
    });
    let addrs: Vec<String> = ["ams1", "ams2", "ams3"]
        .iter()
        .map(|s| csv_field(stats, "ams", s, "addr"))
        .collect();
    assert!(addrs.contains(&format!("{ip2}:{port}")), "{addrs:?}");
    assert!(addrs.contains(&format!("{ip3}:{port}")), "{addrs:?}");
    assert_eq!(
        csv_field(stats, "ams", "ams3", "status"),
        "MAINT",
        "no third record"
    );
    let slot3 = ["ams1", "ams2", "ams3"]
        .into_iter()
        .find(|s| csv_field(stats, "ams", s, "addr") == format!("{ip3}:{port}"))
        .expect("a slot holds 127.0.0.3");

    // Two long requests, one per node (round robin), established before the record goes.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let mut c = Conn::open(lb);
            c.send(b"GET /slow HTTP/1.1\r\nHost: lb.example\r\nConnection: close\r\n\r\n");
            c
        })
        .collect();
    wait_until("both nodes hold a slow request", LIMIT, || {
        let on = |n: &NginxHttp| n.requests().iter().any(|l| l.contains("/slow"));
        (on(&n2) && on(&n3)).then_some(())
    });
    dns.set_hosts(&format!("{ip2} ams.test\n"));
    wait_until("ams3's server goes to maintenance", LIMIT, || {
        proxy
            .stderr()
            .contains("is going into maintenance")
            .then_some(())
    });
    // The stats page and the metrics show it.
    assert_eq!(csv_field(stats, "ams", slot3, "status"), "MAINT");
    assert!(csv_field(stats, "ams", slot3, "addr").starts_with("0.0.0.0:"));
    let (_, metrics) = http_get(
        SocketAddr::from((Ipv4Addr::LOCALHOST, stats)),
        "/stats;metrics",
    )
    .expect("metrics");
    let maint = format!("server=\"{slot3}\",state=\"MAINT\"");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("haproxy_server_status")
                && l.contains(&maint)
                && l.ends_with(" 1")),
        "no {maint} 1 in the metrics"
    );
    // New requests avoid it…
    assert!(
        nodes_of(lb, 6).iter().all(|n| n == "ams2"),
        "traffic after the record went"
    );
    // …while its established request finishes.
    for mut c in slow {
        let r = c.response(false).expect("the slow answer");
        assert_eq!(r.text().lines().last(), Some("slow"), "{:?}", r.text());
    }

    // The record comes back: a slot takes it, and once its checks pass it gets traffic.
    dns.set_hosts(&both);
    wait_until("ams3 gets traffic again", LIMIT, || {
        nodes_seen(lb, 4).iter().any(|n| n == "ams3").then_some(())
    });
    assert!(proxy.stderr().contains("is taking address"));
}

#[test]
fn srv_records_give_each_slot_its_port_and_weight() {
    let ip = loopback(4);
    let a = NginxHttp::start("srv-a", SocketAddr::from((ip, free_port(ip))), None);
    let b = NginxHttp::start("srv-b", SocketAddr::from((ip, free_port(ip))), None);
    let hosts = format!("{ip} a.ams.test\n{ip} b.ams.test\n");
    // SRV weight 256 → weight 2, 768 → weight 4 (HAProxy's weight / 256 + 1).
    let srv_a = format!("_http._tcp.ams.test,a.ams.test,{},0,256", a.addr().port());
    let srv_b = format!("_http._tcp.ams.test,b.ams.test,{},0,768", b.addr().port());
    let dns = Dnsmasq::start(
        SocketAddr::from((ip, free_port(ip))),
        &hosts,
        &[&srv_a, &srv_b],
    );
    let (pport, stats) = (
        free_port(Ipv4Addr::LOCALHOST),
        free_port(Ipv4Addr::LOCALHOST),
    );
    let cfg = format!(
        "{}backend ams\n    balance roundrobin\n\
         \x20   server-template s 3 _http._tcp.ams.test resolvers dns init-addr none \
         resolve-prefer ipv4\n",
        head(pport, stats, dns.addr())
    );
    let proxy = Proxy::start(&cfg);
    let rows = || -> Vec<(String, String)> {
        ["s1", "s2", "s3"]
            .iter()
            .map(|s| {
                (
                    csv_field(stats, "ams", s, "addr"),
                    csv_field(stats, "ams", s, "weight"),
                )
            })
            .collect()
    };
    let want_a = (a.addr().to_string(), "2".to_string());
    let want_b = (b.addr().to_string(), "4".to_string());
    wait_until(
        "both SRV records fill a slot with their weight",
        LIMIT,
        || {
            let r = rows();
            (r.contains(&want_a) && r.contains(&want_b)).then_some(())
        },
    );
    // Weighted round robin over one full cycle (2 + 4): each node its share.
    let seen = nodes_of(proxy.addr(), 12);
    let on_b = seen.iter().filter(|n| *n == "srv-b").count();
    assert_eq!((seen.len() - on_b, on_b), (4, 8), "{seen:?}");
}

/// A DNS server that answers every query with garbage, a reply with another id and a
/// truncated reply, and never a usable answer.
struct BadDns {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl BadDns {
    fn start() -> BadDns {
        let sock = UdpSocket::bind((loopback(5), 0)).expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let addr = sock.local_addr().expect("addr");
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, s) = (queries.clone(), stop.clone());
        thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                q.fetch_add(1, Ordering::Relaxed);
                let query = &buf[..n];
                let _ = sock.send_to(b"\xde\xad\xbe\xef garbage", from);
                // The query turned into a reply (QR set) with another id…
                let mut reply = query.to_vec();
                if reply.len() >= 12 {
                    reply[2] |= 0x80;
                    reply[0] ^= 0xff;
                    let _ = sock.send_to(&reply, from);
                    // …and with the right id but truncated (TC set).
                    reply[0] ^= 0xff;
                    reply[2] |= 0x02;
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        BadDns {
            addr,
            queries,
            stop,
        }
    }
}

impl Drop for BadDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn malformed_answers_are_logged_once_and_change_nothing() {
    let ip = loopback(2);
    let n = NginxHttp::start("steady", SocketAddr::from((ip, free_port(ip))), None);
    let bad = BadDns::start();
    let (pport, stats) = (
        free_port(Ipv4Addr::LOCALHOST),
        free_port(Ipv4Addr::LOCALHOST),
    );
    let cfg = format!(
        "{}backend ams\n    server s1 ams.test:{} resolvers dns init-addr {ip}\n",
        head(pport, stats, bad.addr),
        n.addr().port()
    );
    let proxy = Proxy::start(&cfg);
    // Several resolutions' worth of bad packets.
    wait_until("the bad DNS server is asked again and again", LIMIT, || {
        (bad.queries.load(Ordering::Relaxed) >= 6).then_some(())
    });
    let log = proxy.stderr();
    for what in [
        "malformed answer",
        "truncated answer",
        "does not match the query",
    ] {
        let lines = log.lines().filter(|l| l.contains(what)).count();
        assert_eq!(lines, 1, "'{what}' logged {lines} times:\n{log}");
    }
    assert_eq!(csv_field(stats, "ams", "s1", "addr"), n.addr().to_string());
    assert_eq!(csv_field(stats, "ams", "s1", "status"), "no check");
    assert_eq!(nodes_of(proxy.addr(), 3), ["steady"; 3]);
}

/// The number of A records of `many.test`: more than one 512-byte UDP answer holds (dnsmasq
/// puts 30 in it and sets TC).
const MANY: u8 = 50;

/// `many.test` with [`MANY`] addresses (none listens: only the slots' addresses are read).
fn many_hosts() -> (String, Vec<String>) {
    let ips: Vec<Ipv4Addr> = (1..=MANY).map(|i| Ipv4Addr::new(127, 0, 9, i)).collect();
    let hosts = ips.iter().map(|ip| format!("{ip} many.test\n")).collect();
    (hosts, ips.iter().map(|ip| ip.to_string()).collect())
}

/// The `addr` column of every server row of backend `ams`, from one stats CSV.
fn server_addrs(stats: u16) -> Vec<String> {
    csv_column(stats, "ams", "addr")
        .into_iter()
        .filter(|(sv, _)| sv != "FRONTEND" && sv != "BACKEND")
        .map(|(_, addr)| addr)
        .collect()
}

/// A `server-template` with a slot per record of `many.test`, asked through `nameserver`
/// (`IP:PORT` or `tcp@IP:PORT`) at `accepted_payload_size 512`: once every slot holds its
/// address, returns the proxy (for its log).
fn every_record_fills_a_slot(nameserver: impl Fn(SocketAddr) -> String) -> Proxy {
    let ip = loopback(7);
    let (hosts, ips) = many_hosts();
    let dns = Dnsmasq::start(SocketAddr::from((ip, free_port(ip))), &hosts, &[]);
    let (pport, stats) = (
        free_port(Ipv4Addr::LOCALHOST),
        free_port(Ipv4Addr::LOCALHOST),
    );
    let cfg = format!(
        "{}backend ams\n    server-template m {MANY} many.test:8080 resolvers dns init-addr none \
         resolve-prefer ipv4\n",
        head_with(
            pport,
            stats,
            &nameserver(dns.addr()),
            "    accepted_payload_size 512\n"
        )
    );
    let proxy = Proxy::start(&cfg);
    let mut want: Vec<String> = ips.iter().map(|ip| format!("{ip}:8080")).collect();
    want.sort();
    let mut last = Vec::new();
    let filled = poll_until(LIMIT, || {
        last = server_addrs(stats);
        last.sort();
        (last == want).then_some(())
    });
    assert!(
        filled.is_some(),
        "not every record took a slot: {last:?}\n{}",
        proxy.stderr()
    );
    // Several resolutions more (TTL 1 s): the set stays whole.
    thread::sleep(Duration::from_millis(2500));
    let mut again = server_addrs(stats);
    again.sort();
    assert_eq!(again, want);
    drop(dns);
    proxy
}

#[test]
fn a_truncated_udp_answer_is_asked_again_over_tcp() {
    let proxy = every_record_fills_a_slot(|dns| dns.to_string());
    let log = proxy.stderr();
    let said = log
        .lines()
        .filter(|l| l.contains("asked again over TCP"))
        .count();
    assert_eq!(said, 1, "the TCP retry logged {said} times:\n{log}");
}

#[test]
fn a_tcp_nameserver_is_asked_over_tcp() {
    let proxy = every_record_fills_a_slot(|dns| format!("tcp@{dns}"));
    // Over UDP the answer would have been truncated, and said so.
    let log = proxy.stderr();
    assert!(!log.contains("truncated"), "a UDP answer was read:\n{log}");
}
