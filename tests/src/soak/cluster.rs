//! The soak's cluster: two nginx-rtmp nodes, two nginx HTTP nodes (HLS files, an echo of
//! request bodies), a WebSocket echo server and a byte-checking TCP server, behind one proxy
//! with RTMP, RTMPS, mode-tcp (auto and copy engines), HTTP and WebSocket frontends and a
//! stats listener for its metrics.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::http_client::WsServer;
use crate::nginx::Nginx;
use crate::nginx_http::NginxHttp;
use crate::ports::{free_addr, free_port, loopback};
use crate::proxy::Proxy;
use crate::tcp::{Pattern, TcpServer};
use crate::tls::{KeyKind, TestCa};
use crate::util::TestDir;

/// Size of the HLS segment the HTTP nodes serve.
pub const SEGMENT_BYTES: u64 = 512 * 1024;
/// Seed of the segment's content (the client checks its digest).
pub const SEGMENT_SEED: u64 = 0x50A4;

/// Where the load generators send their traffic.
#[derive(Clone)]
pub struct Targets {
    pub rtmp: SocketAddr,
    pub rtmps: SocketAddr,
    /// mode tcp to the byte-checking server, `forward-engine auto` and `copy`.
    pub tcp_auto: SocketAddr,
    pub tcp_copy: SocketAddr,
    pub http: SocketAddr,
    pub ws: SocketAddr,
    pub checked: std::sync::Arc<TcpServer>,
}

pub struct Cluster {
    pub rtmp: [Nginx; 2],
    pub http: [NginxHttp; 2],
    _ws: WsServer,
    checked: std::sync::Arc<TcpServer>,
    pub proxy: Proxy,
    ca: TestCa,
    /// The certificate the RTMPS bind serves; replaced in place by a fault.
    pub pem: PathBuf,
    binds: Binds,
    _dir: TestDir,
}

#[derive(Debug, Clone, Copy)]
struct Binds {
    rtmp: SocketAddr,
    rtmps: SocketAddr,
    tcp_auto: SocketAddr,
    tcp_copy: SocketAddr,
    http: SocketAddr,
    ws: SocketAddr,
    stats: SocketAddr,
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = TestDir::new("soak");
        let hls = dir.join("hls");
        std::fs::create_dir_all(&hls).expect("hls folder");
        write_segment(&hls.join("seg.ts"));
        let rtmp = rtmp_nodes();
        let http = [
            NginxHttp::start("w1", free_addr(loopback(4)), Some(&hls)),
            NginxHttp::start("w2", free_addr(loopback(5)), Some(&hls)),
        ];
        let ws = WsServer::start("ws", free_addr(loopback(6)));
        let checked = std::sync::Arc::new(TcpServer::start(free_addr(loopback(7))));
        let ca = TestCa::new(dir.path());
        let pem = ca.leaf("soak", &["localhost"], KeyKind::EcPkcs8, false);
        let here = loopback(1);
        let binds = Binds {
            rtmp: free_addr(here),
            rtmps: free_addr(here),
            tcp_auto: free_addr(here),
            tcp_copy: free_addr(here),
            http: free_addr(here),
            ws: free_addr(here),
            stats: free_addr(here),
        };
        let cfg = config(&binds, &rtmp, &http, ws.addr, checked.addr(), &pem);
        let proxy = Proxy::start(&cfg);
        Cluster {
            rtmp,
            http,
            _ws: ws,
            checked,
            proxy,
            ca,
            pem,
            binds,
            _dir: dir,
        }
    }

    pub fn targets(&self) -> Targets {
        Targets {
            rtmp: self.binds.rtmp,
            rtmps: self.binds.rtmps,
            tcp_auto: self.binds.tcp_auto,
            tcp_copy: self.binds.tcp_copy,
            http: self.binds.http,
            ws: self.binds.ws,
            checked: self.checked.clone(),
        }
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.binds.stats
    }

    /// Writes a fresh certificate over the RTMPS bind's file (a renewal), atomically.
    pub fn replace_certificate(&self, generation: u32) {
        let fresh = self.ca.leaf(
            &format!("soak-{generation}"),
            &["localhost"],
            KeyKind::EcPkcs8,
            false,
        );
        std::fs::rename(&fresh, &self.pem).expect("replacing the certificate");
    }
}

fn rtmp_nodes() -> [Nginx; 2] {
    let (a, b) = (loopback(2), loopback(3));
    [
        Nginx::rtmp(a, free_port(a), free_port(a), &[]),
        Nginx::rtmp(b, free_port(b), free_port(b), &[]),
    ]
}

fn write_segment(path: &Path) {
    let mut f = std::fs::File::create(path).expect("segment file");
    Pattern::new(SEGMENT_SEED)
        .write_to(&mut f, SEGMENT_BYTES)
        .expect("writing the segment");
}

fn config(
    b: &Binds,
    rtmp: &[Nginx; 2],
    http: &[NginxHttp; 2],
    ws: SocketAddr,
    checked: SocketAddr,
    pem: &Path,
) -> String {
    format!(
        "global
    nbthread 2

defaults
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    retries 2
    option redispatch

frontend rtmp
    bind {rtmp}
    bind {rtmps} ssl crt {pem}
    mode tcp
    default_backend rtmp_nodes

backend rtmp_nodes
    mode tcp
    balance roundrobin
    server n1 {n1} check inter 1s fall 2 rise 2
    server n2 {n2} check inter 1s fall 2 rise 2

frontend tcp_auto
    bind {tcp_auto}
    mode tcp
    default_backend checked_auto

backend checked_auto
    mode tcp
    server s1 {checked}

frontend tcp_copy
    bind {tcp_copy}
    mode tcp
    default_backend checked_copy

backend checked_copy
    mode tcp
    forward-engine copy
    server s1 {checked}

frontend web
    bind {web}
    mode http
    option forwardfor
    default_backend web_nodes

backend web_nodes
    mode http
    balance roundrobin
    cookie JSESSIONID prefix nocache
    option httpchk GET /liveness
    server w1 {w1} cookie w1 check inter 1s fall 2 rise 2
    server w2 {w2} cookie w2 check inter 1s fall 2 rise 2

frontend ws
    bind {wsb}
    mode http
    default_backend ws_node

backend ws_node
    mode http
    timeout tunnel 60s
    server ws1 {ws}

listen stats
    bind {stats}
    mode http
    stats enable
    stats uri /stats
",
        rtmp = b.rtmp,
        rtmps = b.rtmps,
        pem = pem.display(),
        n1 = rtmp[0].rtmp_addr(),
        n2 = rtmp[1].rtmp_addr(),
        tcp_auto = b.tcp_auto,
        tcp_copy = b.tcp_copy,
        web = b.http,
        w1 = http[0].addr(),
        w2 = http[1].addr(),
        wsb = b.ws,
        stats = b.stats,
    )
}
