//! TLS room tests. Certificates are made here at run time (rcgen), never stored.
//!
//! kTLS tests need a kernel with `CONFIG_TLS`: where it is missing they print a loud
//! `SKIPPED` line and return, unless `PROXY_REQUIRE_KTLS=1` (set by `cargo xtask vmtest`),
//! where a missing kTLS is a failure. `PROXY_TEST_BIG_MIB` sets the size of the bulk
//! integrity test (default 32; the VM runs 256).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedCipherSuite};
use sha2::{Digest, Sha256};

use super::*;
use crate::config::SslBind;
use crate::counters::PROCESS;
use crate::forward::{FlowEnd, FlowParams};

/// A test CA and leaf certificates it signs.
pub(crate) struct Pki {
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
}

pub(crate) struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "proxy test CA");
        let ca_cert = p.self_signed(&ca_key).expect("CA cert");
        Pki { ca_cert, ca_key }
    }

    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
        let cert = p
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .expect("leaf cert");
        Leaf {
            cert_pem: format!("{}{}", cert.pem(), self.ca_cert.pem()),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn roots(&self) -> RootCertStore {
        let mut r = RootCertStore::empty();
        r.add(self.ca_cert.der().clone()).expect("CA into roots");
        r
    }
}

/// A folder under the target dir for one test's files.
fn test_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("proxy-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("test dir");
    d
}

fn write(p: &Path, s: &str) {
    std::fs::write(p, s).expect("write test file");
}

fn provider() -> Arc<CryptoProvider> {
    config::provider()
}

#[test]
fn pem_in_any_order_loads_and_leaf_is_first() {
    let pki = Pki::new();
    let leaf = pki.leaf(&["a.test"]);
    let key_first = format!("{}{}", leaf.key_pem, leaf.cert_pem);
    let ck = pem::parse(key_first.as_bytes(), &provider()).expect("key first");
    assert_eq!(ck.cert.len(), 2);
    // Chain written CA first: the leaf is still put first.
    let ca_pem = pki.ca_cert.pem();
    let leaf_only = leaf.cert_pem.replace(&ca_pem, "");
    let reordered = format!("{ca_pem}{}{leaf_only}", leaf.key_pem);
    let ck2 = pem::parse(reordered.as_bytes(), &provider()).expect("CA first");
    assert_eq!(ck2.cert.first(), ck.cert.first());
}

#[test]
fn bad_pem_files_say_what_is_wrong() {
    let pki = Pki::new();
    let a = pki.leaf(&["a.test"]);
    let b = pki.leaf(&["b.test"]);
    let p = provider();
    let err = |s: &str| pem::parse(s.as_bytes(), &p).err().unwrap_or_default();
    assert!(
        err(&a.cert_pem).contains("no private key"),
        "{}",
        err(&a.cert_pem)
    );
    assert!(err(&a.key_pem).contains("no certificate"));
    let mismatched = format!("{}{}", a.cert_pem, b.key_pem);
    assert!(
        err(&mismatched).contains("does not match"),
        "{}",
        err(&mismatched)
    );
    let cut = a.cert_pem.replace("-----END CERTIFICATE-----", "");
    assert!(!err(&format!("{cut}{}", a.key_pem)).is_empty());
    let dir = test_dir("bad");
    let missing = dir.join("missing.pem");
    let e = pem::load(&missing, &p).err().unwrap_or_default();
    assert!(
        e.contains("cannot read") && e.contains("missing.pem"),
        "{e}"
    );
}

#[test]
fn config_errors_carry_the_bind_line() {
    let dir = test_dir("cfgerr");
    let cfg_text = format!(
        "frontend f\n bind 127.0.0.1:1 ssl crt {}\n default_backend b\nbackend b\n server s 127.0.0.1:2\n",
        dir.join("nope.pem").display()
    );
    let cfg = crate::config::parse_str(&cfg_text, Path::new("t.cfg")).expect("parses");
    let errors: Vec<String> = check_config(&cfg).iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("t.cfg:2: cannot read"), "{errors:?}");
}

#[test]
fn sni_picks_by_san_and_first_file_is_default() {
    let pki = Pki::new();
    let dir = test_dir("sni");
    for (file, names) in [
        ("10-a.pem", &["a.test"][..]),
        ("20-b.pem", &["*.b.test"][..]),
    ] {
        let l = pki.leaf(names);
        write(&dir.join(file), &format!("{}{}", l.cert_pem, l.key_pem));
    }
    write(&dir.join("ignored.key"), "not a certificate");
    let store = CertStore::load(std::slice::from_ref(&dir), provider()).expect("dir loads");
    assert_eq!(store.len(), 2);
    let file = |sni| {
        store
            .path_for(sni)
            .and_then(|p| p.file_name().map(|n| n.to_owned()))
    };
    assert_eq!(file(Some("x.b.test")).as_deref(), Some("20-b.pem".as_ref()));
    assert_eq!(file(Some("a.test")).as_deref(), Some("10-a.pem".as_ref()));
    assert_eq!(
        file(Some("other.test")).as_deref(),
        Some("10-a.pem".as_ref())
    );
    assert_eq!(file(None).as_deref(), Some("10-a.pem".as_ref()));
}

#[test]
fn reload_takes_new_files_and_keeps_old_on_error() {
    let pki = Pki::new();
    let dir = test_dir("reload");
    let path = dir.join("site.pem");
    let first = pki.leaf(&["site.test"]);
    write(&path, &format!("{}{}", first.cert_pem, first.key_pem));
    let store = CertStore::load(std::slice::from_ref(&path), provider()).expect("loads");
    let before = store.pick(None).and_then(|k| k.cert.first().cloned());
    assert!(store.reload(false).is_none(), "nothing changed yet");
    // Rewritten in place, same length (the same two blocks in the other order), and within
    // the same tick of the file clock (the mtime set back): only the contents tell.
    let mtime = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    write(&path, &format!("{}{}", first.key_pem, first.cert_pem));
    let file = std::fs::File::options()
        .write(true)
        .open(&path)
        .expect("open");
    file.set_modified(mtime).expect("set mtime");
    assert!(
        matches!(store.reload(false), Some(Ok(1))),
        "same length and mtime"
    );
    let second = pki.leaf(&["site.test"]);
    write(&path, &format!("{}{}", second.key_pem, second.cert_pem));
    assert!(matches!(store.reload(false), Some(Ok(1))));
    let after = store.pick(None).and_then(|k| k.cert.first().cloned());
    assert_ne!(before, after, "the new certificate is served");
    write(&path, "garbage");
    assert!(matches!(store.reload(false), Some(Err(_))));
    assert_eq!(
        store.pick(None).and_then(|k| k.cert.first().cloned()),
        after
    );
    assert!(
        store.reload(false).is_none(),
        "a broken file is not retried until it changes"
    );
}

#[test]
fn record_headers_are_checked() {
    assert_eq!(handshake::body_len(&[22, 3, 1, 0, 5]).ok(), Some(5));
    assert!(
        handshake::body_len(b"GET /").is_err(),
        "plain HTTP on a TLS port"
    );
    assert!(
        handshake::body_len(&[23, 3, 3, 0xff, 0xff]).is_err(),
        "too long"
    );
}

#[test]
fn ktls_config_sends_no_tickets() {
    let pki = Pki::new();
    let dir = test_dir("tickets");
    let l = pki.leaf(&["t.test"]);
    let path = dir.join("t.pem");
    write(&path, &format!("{}{}", l.cert_pem, l.key_pem));
    let store = Arc::new(CertStore::load(std::slice::from_ref(&path), provider()).expect("loads"));
    let ssl = SslBind::default();
    let k = config::server_config(&ssl, store.clone(), provider(), true).expect("config");
    assert_eq!(k.send_tls13_tickets, 0);
    assert!(k.enable_secret_extraction);
    let min13 = SslBind {
        min_ver: Some("TLSv1.3".into()),
        ..SslBind::default()
    };
    let c = config::server_config(&min13, store, provider(), false).expect("config");
    assert!(!c.enable_secret_extraction);
    assert!(config::notes(&SslBind {
        min_ver: Some("TLSv1.0".into()),
        ..SslBind::default()
    })
    .is_some());
}

// ---- end to end through `Acceptor` + `flow::forward`, client and backend in threads ----

/// What one proxied session did.
struct Outcome {
    kernel: bool,
    ulp_engaged: bool,
    end: FlowEnd,
    up: u64,
    down: u64,
}

/// Serves one TLS connection on a fresh runtime: handshake, kTLS if `ktls`, then forward to
/// `backend`. Returns the listening address and the join handle.
fn serve_one(
    store: Arc<CertStore>,
    ssl: SslBind,
    ktls: bool,
    backend: SocketAddr,
) -> (SocketAddr, std::thread::JoinHandle<Result<Outcome, String>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let h = std::thread::spawn(move || {
        let rt = compio::runtime::Runtime::new().map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let l = compio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?;
            let (tcp, _) = l.accept().await.map_err(|e| e.to_string())?;
            let acc = Acceptor::new(&ssl, store, provider(), Duration::from_secs(10), ktls)?;
            let client = acc.accept(tcp).await.map_err(|e| e.to_string())?;
            let kernel = client.is_kernel();
            let ulp_engaged = ktls::is_engaged(std::os::fd::AsRawFd::as_raw_fd(client.tcp()));
            let server = compio::net::TcpStream::connect(backend)
                .await
                .map_err(|e| e.to_string())?;
            let mut p = FlowParams::default();
            p.limits.idle = Some(Duration::from_secs(60));
            let s = forward(client, server, p).await;
            Ok(Outcome {
                kernel,
                ulp_engaged,
                end: s.end,
                up: s.bytes_up,
                down: s.bytes_down,
            })
        })
    });
    (addr, h)
}

/// A backend that hashes everything it receives until EOF while sending `send` bytes of a
/// pattern, then closes its write side. Returns (bytes received, their SHA-256).
fn sink_backend(send: u64) -> (SocketAddr, std::thread::JoinHandle<(u64, Vec<u8>)>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("backend accept");
        s.set_read_timeout(Some(Duration::from_secs(120))).ok();
        let mut w = s.try_clone().expect("clone");
        let writer = std::thread::spawn(move || {
            pattern_write(&mut w, send);
            let _ = w.shutdown(std::net::Shutdown::Write);
        });
        let got = hash_until_eof(&mut s);
        let _ = writer.join();
        got
    });
    (addr, h)
}

fn pattern(n: u64) -> impl Iterator<Item = Vec<u8>> {
    let chunk: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut left = n;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let k = left.min(chunk.len() as u64) as usize;
        left -= k as u64;
        Some(chunk[..k].to_vec())
    })
}

fn pattern_digest(n: u64) -> Vec<u8> {
    let mut h = Sha256::new();
    pattern(n).for_each(|c| h.update(&c));
    h.finalize().to_vec()
}

fn pattern_write(w: &mut impl Write, n: u64) {
    for c in pattern(n) {
        if w.write_all(&c).is_err() {
            return;
        }
    }
}

fn hash_until_eof(r: &mut impl Read) -> (u64, Vec<u8>) {
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 65536];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
        }
    }
    (n, h.finalize().to_vec())
}

struct ClientRun {
    received: u64,
    digest: Vec<u8>,
    /// The server ended with close_notify (not a bare FIN).
    clean_close: bool,
}

/// How the test client ends its side of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientEnd {
    /// close_notify, as a well-behaved client does (the FIN follows when it closes).
    CloseNotify,
    /// A FIN and no close_notify: what a truncation attack, or a careless client, sends.
    BareFin,
}

/// A rustls client restricted to `suite` (and its version): sends `send` bytes, then ends
/// its side as `end` says, then reads to the end.
fn client(
    addr: SocketAddr,
    roots: RootCertStore,
    suite: Option<SupportedCipherSuite>,
    send: u64,
    key_update: bool,
    end: ClientEnd,
) -> Result<ClientRun, String> {
    let mut prov = rustls::crypto::ring::default_provider();
    if let Some(s) = suite {
        prov.cipher_suites = vec![s];
    }
    let versions = match suite {
        Some(SupportedCipherSuite::Tls12(_)) => vec![&rustls::version::TLS12],
        Some(SupportedCipherSuite::Tls13(_)) => vec![&rustls::version::TLS13],
        None => vec![&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let cfg = ClientConfig::builder_with_provider(Arc::new(prov))
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("site.test").map_err(|e| e.to_string())?;
    let mut conn = ClientConnection::new(Arc::new(cfg), name).map_err(|e| e.to_string())?;
    let mut tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(120))).ok();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    // The first bytes go out right behind the handshake: they must not be lost to kTLS.
    let mut sent = 0u64;
    for c in pattern(send) {
        tls.write_all(&c)
            .map_err(|e| format!("client write: {e}"))?;
        sent += c.len() as u64;
        if key_update && sent >= send / 2 && sent - (c.len() as u64) < send / 2 {
            tls.conn.refresh_traffic_keys().map_err(|e| e.to_string())?;
        }
    }
    match end {
        ClientEnd::CloseNotify => tls.conn.send_close_notify(),
        ClientEnd::BareFin => {}
    }
    tls.flush().map_err(|e| format!("client flush: {e}"))?;
    if end == ClientEnd::BareFin {
        tls.sock
            .shutdown(std::net::Shutdown::Write)
            .map_err(|e| format!("client shutdown: {e}"))?;
    }
    let mut h = Sha256::new();
    let mut received = 0u64;
    let mut buf = vec![0u8; 65536];
    let clean_close = loop {
        match tls.read(&mut buf) {
            Ok(0) => break true,
            Ok(k) => {
                h.update(&buf[..k]);
                received += k as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break false,
            Err(e) => return Err(format!("client read after {received} bytes: {e}")),
        }
    };
    Ok(ClientRun {
        received,
        digest: h.finalize().to_vec(),
        clean_close,
    })
}

fn site_store(pki: &Pki, name: &str) -> Arc<CertStore> {
    let dir = test_dir(name);
    let l = pki.leaf(&["site.test"]);
    let path = dir.join("site.pem");
    write(&path, &format!("{}{}", l.cert_pem, l.key_pem));
    Arc::new(CertStore::load(std::slice::from_ref(&path), provider()).expect("loads"))
}

/// One session both ways with checksums; returns what the proxy side saw.
fn roundtrip(ktls: bool, suite: Option<SupportedCipherSuite>, up: u64, down: u64) -> Outcome {
    let out = roundtrip_ending(ktls, suite, up, down, ClientEnd::CloseNotify);
    assert_eq!(out.end, FlowEnd::Closed);
    out
}

/// As [`roundtrip`], the client ending its side as `end` says; the flow's end is left to the
/// caller to check.
fn roundtrip_ending(
    ktls: bool,
    suite: Option<SupportedCipherSuite>,
    up: u64,
    down: u64,
    end: ClientEnd,
) -> Outcome {
    let pki = Pki::new();
    let store = site_store(&pki, "rt");
    let (backend, be) = sink_backend(down);
    let (addr, srv) = serve_one(store, SslBind::default(), ktls, backend);
    let run = client(addr, pki.roots(), suite, up, false, end).expect("client");
    let (got, got_digest) = be.join().expect("backend thread");
    let out = srv.join().expect("proxy thread").expect("proxy session");
    assert_eq!(got, up, "bytes client → backend");
    assert_eq!(got_digest, pattern_digest(up), "client → backend content");
    assert_eq!(run.received, down, "bytes backend → client");
    assert_eq!(run.digest, pattern_digest(down), "backend → client content");
    assert!(
        run.clean_close,
        "the client got close_notify before the FIN"
    );
    assert_eq!((out.up, out.down), (up, down));
    out
}

/// A client that ends with a FIN and no close_notify: every byte still goes through and the
/// server still gets its FIN, but the flow ends `ClientTruncated` (logged `CD`) and is
/// counted; `roundtrip` checks that close_notify gives `Closed`.
fn bare_fin_is_a_truncation(ktls: bool) {
    let load = || {
        PROCESS
            .tls_truncated
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = load();
    let out = roundtrip_ending(ktls, None, 1 << 20, 1 << 20, ClientEnd::BareFin);
    assert_eq!(out.kernel, ktls);
    assert_eq!(out.end, FlowEnd::ClientTruncated);
    assert_eq!(out.end.term().to_string(), "CD");
    assert!(load() > before, "the truncation is counted");
}

#[test]
fn userspace_bare_fin_is_a_truncation() {
    bare_fin_is_a_truncation(false);
}

/// The same through kTLS, where the FIN is seen by splice(2) reading 0 (a close_notify is a
/// control record splice refuses).
#[test]
fn ktls_bare_fin_is_a_truncation() {
    if ktls_or_skip("ktls_bare_fin_is_a_truncation") {
        bare_fin_is_a_truncation(true);
    }
}

#[test]
fn userspace_tls_both_directions_with_close_notify() {
    let out = roundtrip(false, None, 3 << 20, 2 << 20);
    assert!(!out.kernel && !out.ulp_engaged);
}

#[test]
fn userspace_survives_key_update() {
    let pki = Pki::new();
    let store = site_store(&pki, "ku-user");
    let (backend, be) = sink_backend(1000);
    let (addr, srv) = serve_one(store, SslBind::default(), false, backend);
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let run = client(
        addr,
        pki.roots(),
        Some(suite),
        1 << 20,
        true,
        ClientEnd::CloseNotify,
    )
    .expect("client");
    let (got, digest) = be.join().expect("backend");
    let out = srv.join().expect("proxy thread").expect("session");
    assert_eq!((got, digest), (1 << 20, pattern_digest(1 << 20)));
    assert_eq!(run.received, 1000);
    assert_eq!(out.end, FlowEnd::Closed);
}

/// `true` when kTLS tests can run here; prints a loud SKIPPED line otherwise (and fails
/// where kTLS is required).
fn ktls_or_skip(test: &str) -> bool {
    let s = ktls::support();
    if s.available() {
        return true;
    }
    let required = std::env::var("PROXY_REQUIRE_KTLS").is_ok_and(|v| v == "1");
    assert!(!required, "{test}: kTLS required but {}", s.describe());
    eprintln!(
        "SKIPPED {test}: {} (runs in `cargo xtask vmtest`)",
        s.describe()
    );
    false
}

fn ktls_suite(suite: SupportedCipherSuite, test: &str) {
    if !ktls_or_skip(test) {
        return;
    }
    let cipher = ktls::Cipher::of_suite(suite.suite()).expect("kernel cipher");
    assert!(
        ktls::support().has(cipher),
        "kernel lacks {}",
        cipher.name()
    );
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let (sessions, spliced) = (
        load(&PROCESS.ktls_sessions),
        load(&PROCESS.ktls_spliced_flows),
    );
    let out = roundtrip(true, Some(suite), 1 << 20, 1 << 20);
    assert!(out.kernel, "{test}: the session stayed in userspace");
    assert!(out.ulp_engaged, "{test}: TCP_ULP is not \"tls\"");
    assert!(
        load(&PROCESS.ktls_sessions) > sessions,
        "{test}: kTLS session not counted"
    );
    assert!(
        load(&PROCESS.ktls_spliced_flows) > spliced,
        "{test}: bytes did not move by splice(2)"
    );
}

macro_rules! ktls_suite_tests {
    ($($name:ident => $suite:ident,)*) => {$(
        #[test]
        fn $name() {
            ktls_suite(rustls::crypto::ring::cipher_suite::$suite, stringify!($name));
        }
    )*};
}

ktls_suite_tests! {
    ktls_tls13_aes128 => TLS13_AES_128_GCM_SHA256,
    ktls_tls13_aes256 => TLS13_AES_256_GCM_SHA384,
    ktls_tls13_chacha => TLS13_CHACHA20_POLY1305_SHA256,
    ktls_tls12_aes128 => TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ktls_tls12_aes256 => TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ktls_tls12_chacha => TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
}

/// A KeyUpdate from the client cannot be followed by the kernel: the session must end with a
/// reset toward the backend, never pass bytes decrypted with the wrong keys.
#[test]
fn ktls_key_update_ends_the_session_cleanly() {
    if !ktls_or_skip("ktls_key_update_ends_the_session_cleanly") {
        return;
    }
    let pki = Pki::new();
    let store = site_store(&pki, "ku-k");
    let (backend, be) = sink_backend(0);
    let (addr, srv) = serve_one(store, SslBind::default(), true, backend);
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let _ = client(
        addr,
        pki.roots(),
        Some(suite),
        1 << 20,
        true,
        ClientEnd::CloseNotify,
    );
    let (got, _) = be.join().expect("backend");
    let out = srv.join().expect("proxy thread").expect("session");
    assert!(out.kernel);
    assert!(
        got <= 1 << 19,
        "nothing after the KeyUpdate reached the backend ({got})"
    );
    assert_eq!(out.end, FlowEnd::ClientAbort);
}

/// Bulk integrity both ways through the kTLS path (userspace where the kernel has none).
#[test]
fn bulk_integrity_both_ways() {
    let mib: u64 = std::env::var("PROXY_TEST_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let ktls = ktls::support().available();
    let out = roundtrip(ktls, None, mib << 20, mib << 20);
    assert_eq!(out.kernel, ktls);
    eprintln!(
        "bulk_integrity_both_ways: {mib} MiB each way, {}",
        if ktls { "kTLS" } else { "userspace rustls" }
    );
}
