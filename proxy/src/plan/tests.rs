//! HTTPS as the plan serves it: a `mode http` bind with `ssl` runs the HTTP session over the
//! TLS stream, with kTLS where the kernel has it. Rust peers on both sides (a rustls client,
//! a plain HTTP server), so the test also runs in `cargo xtask vmtest` (filter
//! `http_over_tls`), where `PROXY_REQUIRE_KTLS=1` makes a session the kernel did not take a
//! failure. On a host without kTLS it checks the userspace path.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use sha2::{Digest, Sha256};

use std::sync::Arc;

use super::*;
use crate::counters::{Process, PROCESS};
use crate::http::StatsAnswer;

const BODY: usize = 6 << 20;

/// This test serves no stats page; the stats room (above this one) is not needed for it.
struct NoPages;

impl StatsPages for NoPages {
    fn page(
        &self,
        _: &crate::config::StatsSpec,
        _: &str,
        _: &str,
        _: Option<&[u8]>,
    ) -> StatsAnswer {
        self.prometheus()
    }

    fn prometheus(&self) -> StatsAnswer {
        StatsAnswer {
            status: 503,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

fn body() -> Vec<u8> {
    (0..BODY as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// A certificate bundle for `site.test` (leaf, CA, key) and the roots that trust it.
fn certificate() -> (String, RootCertStore) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).expect("CA cert");
    let key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["site.test".to_string()])
        .expect("leaf params")
        .signed_by(&key, &ca, &ca_key)
        .expect("leaf cert");
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).expect("CA into roots");
    let bundle = format!("{}{}{}", leaf.pem(), ca.pem(), key.serialize_pem());
    (bundle, roots)
}

/// One HTTP/1.1 exchange as a server: returns the request head it got, after answering
/// with `BODY` bytes of known length and closing.
fn http_peer() -> (SocketAddr, std::thread::JoinHandle<String>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().expect("peer accept");
        s.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            if r.read_line(&mut head).unwrap_or(0) == 0 {
                break;
            }
        }
        let mut w = s;
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
        let _ = w.write_all(answer.as_bytes());
        let _ = w.write_all(&body());
        head
    });
    (addr, h)
}

/// The proxy side: the plan of `cfg`, its one bind served for one connection.
fn serve_one(cfg: &str) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let cfg = crate::config::parse_str(cfg, std::path::Path::new("https.cfg")).expect("cfg");
    let env = Env {
        ktls: crate::tls::ktls::support().available(),
        engines: crate::forward::probed(),
        pages: &|_| Arc::new(NoPages),
        previous: None,
    };
    let plan = compile(&cfg, &env).expect("plan");
    let bind = plan
        .binds
        .into_iter()
        .next()
        .expect("the HTTPS bind is opened");
    let (Service::Http(fe), Some(tls)) = (bind.service, bind.tls) else {
        panic!("an HTTP service behind TLS");
    };
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let h = std::thread::spawn(move || {
        let rt = compio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let l = compio::net::TcpListener::from_std(l).expect("listener");
            let (s, peer) = l.accept().await.expect("accept");
            let origin = crate::upstream::Origin {
                src: peer,
                dst: s.local_addr().expect("local address"),
            };
            crate::http::run_tls_session(s, origin, fe, tls).await;
        });
    });
    (addr, h)
}

/// Reads one response (head, then exactly Content-Length bytes) from `tls`.
fn response(tls: &mut impl Read) -> (String, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).expect("response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length: ")
                .or(l.strip_prefix("Content-Length: "))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head}"));
    let mut body = vec![0u8; len];
    tls.read_exact(&mut body).expect("response body");
    (head, body)
}

#[test]
fn http_over_tls_serves_bodies_byte_exact_with_ktls_where_available() {
    let ktls = crate::tls::ktls::support();
    let required = std::env::var("PROXY_REQUIRE_KTLS").is_ok_and(|v| v == "1");
    assert!(
        !required || ktls.available(),
        "kTLS required but {}",
        ktls.describe()
    );
    let (bundle, roots) = certificate();
    let dir = std::env::temp_dir().join(format!("proxy-https-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let crt = dir.join("site.pem");
    std::fs::write(&crt, bundle).expect("bundle");
    let (peer, peer_thread) = http_peer();
    let cfg = format!(
        "defaults\n mode http\n timeout connect 5s\n timeout client 60s\n timeout server 60s\n\
         frontend f\n bind 127.0.0.1:1 ssl crt {}\n \
         http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}\n \
         redirect scheme https if !{{ ssl_fc }}\n default_backend b\n\
         backend b\n server s {peer}\n",
        crt.display()
    );
    let kernel_before = Process::read(&PROCESS.ktls_sessions);
    let spliced_before = Process::read(&PROCESS.http_spliced_bytes);
    let (addr, proxy_thread) = serve_one(&cfg);

    let client =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = ServerName::try_from("site.test").expect("name");
    let mut conn = ClientConnection::new(Arc::new(client), name).expect("client");
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(b"GET /seg0.ts HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .expect("request");
    let (head, got) = response(&mut tls);
    assert!(head.starts_with("HTTP/1.1 200 "), "not redirected: {head}");
    assert_eq!(
        Sha256::digest(&got).to_vec(),
        Sha256::digest(body()).to_vec(),
        "{BODY} bytes through HTTPS"
    );
    let seen = peer_thread.join().expect("peer");
    assert!(
        seen.to_ascii_lowercase()
            .contains("\r\nx-forwarded-proto: https\r\n"),
        "{seen}"
    );
    tls.conn.send_close_notify();
    let _ = tls.flush();
    let mut rest = Vec::new();
    // The proxy answers our close_notify with its own (a clean end: Ok, not an error).
    let end = tls.read_to_end(&mut rest);
    assert!(
        end.is_ok() && rest.is_empty(),
        "{end:?} {} bytes",
        rest.len()
    );
    proxy_thread.join().expect("proxy session");
    if ktls.available() {
        let kernel_after = Process::read(&PROCESS.ktls_sessions);
        assert!(kernel_after > kernel_before, "the kernel took the session");
        // The kernel encrypts what enters the kTLS socket: the body was spliced into it
        // (all but what came with the response head, at most one buffer).
        let spliced = Process::read(&PROCESS.http_spliced_bytes) - spliced_before;
        assert!(
            spliced >= (BODY - 16 * 1024) as u64,
            "spliced {spliced} of {BODY}"
        );
    }
}

/// A backend no frontend routes to is still health-checked, as HAProxy does.
#[test]
fn unused_backends_are_checked_too() {
    let cfg = crate::config::parse_str(
        "defaults\n mode tcp\n timeout connect 1s\n timeout client 1s\n timeout server 1s\n\
         frontend f\n bind 127.0.0.1:1\n default_backend used\n\
         backend used\n server a 127.0.0.1:2 check\n\
         backend spare\n server b 127.0.0.1:3 check\n",
        std::path::Path::new("spare.cfg"),
    )
    .expect("cfg");
    let env = Env {
        ktls: false,
        engines: crate::forward::probed(),
        pages: &|_| Arc::new(NoPages),
        previous: None,
    };
    let plan = compile(&cfg, &env).expect("plan");
    let mut checked: Vec<&str> = plan
        .checked
        .iter()
        .map(|c| c.servers.backend.as_str())
        .collect();
    checked.sort_unstable();
    assert_eq!(checked, ["spare", "used"]);
}

/// A nat frontend opens no listener: the plan hands it to the nat room with its backend's
/// servers (health-checked as any backend's) and its idle timeout.
#[test]
fn nat_frontends_get_no_listener() {
    let cfg = crate::config::parse_str(
        "defaults\n mode tcp\n timeout connect 1s\n timeout client 30s\n timeout server 1s\n\
         frontend rtmp\n bind :1935\n default_backend nodes\n\
         frontend other\n bind 127.0.0.1:1\n default_backend plain\n\
         backend nodes\n forward-engine nat\n timeout tunnel 1h\n server a 10.0.0.1:1935 check\n\
         backend plain\n server b 127.0.0.1:3\n",
        std::path::Path::new("nat.cfg"),
    )
    .expect("cfg");
    let env = Env {
        ktls: false,
        engines: crate::forward::probed(),
        pages: &|_| Arc::new(NoPages),
        previous: None,
    };
    let plan = compile(&cfg, &env).expect("plan");
    let binds: Vec<String> = plan.binds.iter().map(|b| b.frontend.clone()).collect();
    assert_eq!(binds, ["other"]);
    assert_eq!(plan.nat.len(), 1);
    let fe = &plan.nat[0];
    assert_eq!(fe.name, "rtmp");
    assert_eq!(fe.binds, ["0.0.0.0:1935".parse().unwrap()]);
    assert_eq!(
        fe.idle,
        Some(Duration::from_secs(3600)),
        "timeout tunnel wins"
    );
    assert_eq!(fe.set.stats.engine(), Some("nat"));
    assert!(plan.checked.iter().any(|c| c.servers.backend == "nodes"));
}
