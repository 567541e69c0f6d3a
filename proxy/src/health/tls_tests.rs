//! `check-ssl` against scripted servers on loopback: a rustls server (rcgen certificate made
//! at run time), a plain HTTP server, a silent one and one that hangs up.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::check::{self, Budget, Probes};
use super::http::HttpProbe;
use super::tls::TlsProbe;
use super::Outcome;
use crate::config::{CheckExpect, CheckRequest, ExpectMatch, HttpCheck, Loc, ServerParams};

const SECOND: Duration = Duration::from_secs(1);

/// What a TLS server saw of one check: the SNI and the request head, if any.
type Seen = (Option<String>, Vec<u8>);

fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
    (l, addr)
}

fn server_config() -> Arc<ServerConfig> {
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let cert = rcgen::CertificateParams::new(vec!["site.test".to_string()])
        .and_then(|p| p.self_signed(&key))
        .unwrap_or_else(|e| panic!("{e}"));
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(vec![cert.der().clone()], key)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    Arc::new(config)
}

/// A TLS server answering `answer` to one request (or nothing when the client sends none).
fn tls_server(answer: &'static [u8]) -> (SocketAddr, mpsc::Receiver<Seen>) {
    let (l, addr) = listener();
    let config = server_config();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok((tcp, _)) = l.accept() else { return };
        let _ = tcp.set_read_timeout(Some(5 * SECOND));
        let Ok(conn) = ServerConnection::new(config) else {
            return;
        };
        let mut s = StreamOwned::new(conn, tcp);
        let head = read_head(&mut s);
        if !head.is_empty() {
            let _ = s.write_all(answer);
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        let sni = s.conn.server_name().map(str::to_string);
        let _ = tx.send((sni, head));
    });
    (addr, rx)
}

/// The bytes up to the end of a request head (or what came before the peer stopped).
pub(super) fn read_head(s: &mut impl Read) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// A plain server: `answer` to whatever comes first (a TLS ClientHello), then `hold`.
fn plain_server(answer: &'static [u8], hold: Duration) -> SocketAddr {
    let (l, addr) = listener();
    thread::spawn(move || {
        let Ok((mut tcp, _)) = l.accept() else { return };
        let mut buf = [0u8; 1024];
        let _ = tcp.read(&mut buf);
        let _ = tcp.write_all(answer);
        thread::sleep(hold);
        drop::<TcpStream>(tcp);
    });
    addr
}

fn liveness() -> HttpProbe {
    let check = HttpCheck {
        request: CheckRequest {
            method: "GET".into(),
            uri: "/liveness".into(),
            ..CheckRequest::haproxy_default()
        },
        expects: vec![CheckExpect {
            negate: false,
            matcher: ExpectMatch::Status(vec![(200, 200)]),
            comment: None,
            loc: Loc::default(),
        }],
        loc: Loc::default(),
    };
    HttpProbe::new(&check, 16 * 1024)
}

fn run(addr: SocketAddr, sni: Option<&str>, http: Option<&HttpProbe>, inter: Duration) -> Outcome {
    let params = ServerParams {
        check_ssl: true,
        verify_none: true,
        check_sni: sni.map(str::to_string),
        ..ServerParams::default()
    };
    let tls = TlsProbe::new(&params, addr.ip()).unwrap_or_else(|e| panic!("{e}"));
    let probes = Probes {
        http,
        tls: Some(&tls),
    };
    compio::runtime::Runtime::new()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
        .block_on(check::run(
            addr,
            Budget::new(None, None, inter),
            probes,
            &params,
        ))
}

fn summary(o: &Outcome) -> (&'static str, Option<u16>, &str) {
    (o.status.code(), o.code, o.info.as_str())
}

#[test]
fn a_completed_handshake_alone_is_l6ok_without_sni_for_an_address() {
    let (addr, seen) = tls_server(b"");
    let o = run(addr, None, None, 5 * SECOND);
    assert_eq!(summary(&o), ("L6OK", None, ""));
    let (sni, head) = seen.recv_timeout(5 * SECOND).unwrap_or_default();
    assert_eq!((sni, head), (None, vec![]), "no SNI, no request");
}

#[test]
fn the_http_check_runs_over_tls_with_check_sni() {
    let (addr, seen) = tls_server(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nalive\n");
    let probe = liveness();
    let o = run(addr, Some("site.test"), Some(&probe), 5 * SECOND);
    assert_eq!(summary(&o), ("L7OK", Some(200), ""));
    let (sni, head) = seen.recv_timeout(5 * SECOND).unwrap_or_default();
    assert_eq!(sni.as_deref(), Some("site.test"));
    assert_eq!(head, b"GET /liveness HTTP/1.0\r\nConnection: close\r\n\r\n");

    let (addr, _) = tls_server(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
    let o = run(addr, Some("site.test"), Some(&probe), 5 * SECOND);
    assert_eq!(summary(&o), ("L7STS", Some(503), "Service Unavailable"));
}

#[test]
fn plain_http_on_the_tls_port_is_l6rsp() {
    let addr = plain_server(b"HTTP/1.1 400 Bad Request\r\n\r\n", SECOND);
    let probe = liveness();
    let o = run(addr, None, Some(&probe), 5 * SECOND);
    assert_eq!(summary(&o), ("L6RSP", None, "SSL handshake failure"));
}

#[test]
fn a_hang_up_during_the_handshake_is_l6rsp() {
    let addr = plain_server(b"", Duration::ZERO);
    let o = run(addr, None, None, 5 * SECOND);
    assert_eq!(
        summary(&o),
        ("L6RSP", None, "Connection closed during SSL handshake")
    );
}

#[test]
fn silence_during_the_handshake_is_l6tout() {
    let addr = plain_server(b"", 3 * SECOND);
    let o = run(addr, None, None, Duration::from_millis(300));
    assert_eq!(summary(&o), ("L6TOUT", None, ""));
}
