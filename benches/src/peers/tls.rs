//! HTTPS load: a rustls client that never resumes a session (each connection is a full
//! handshake: ECDHE + an ECDSA P-256 signature checked by the client), used for new
//! connections per second and for one bulk download. The certificate is made at run time.

use crate::error::{BenchError, Result};
use crate::peers::nginx::{TlsFiles, BIG_PATH, OBJECT_LEN, OBJECT_PATH};
use crate::peers::Threads;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme,
    SupportedProtocolVersion,
};
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SNI: &str = "bench.local";

/// Certificate and key as nginx wants them, plus the combined PEM HAProxy's `crt` takes.
pub struct CertFiles {
    pub split: TlsFiles,
    pub combined: PathBuf,
}

pub fn make_cert(dir: &Path) -> Result<CertFiles> {
    let ck = rcgen::generate_simple_self_signed(vec![SNI.to_string()])
        .map_err(|e| BenchError::Run(format!("certificate generation: {e}")))?;
    let cert = ck.cert.pem();
    let key = ck.key_pair.serialize_pem();
    let files = CertFiles {
        split: TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        },
        combined: dir.join("combined.pem"),
    };
    let w = |p: &Path, s: &str| fs::write(p, s).map_err(|e| BenchError::io("write pem", e));
    w(&files.split.cert, &cert)?;
    w(&files.split.key, &key)?;
    w(&files.combined, &format!("{cert}{key}"))?;
    Ok(files)
}

/// Accepts any certificate (it is our own throw-away one) but still checks the handshake
/// signature, so the client does the work a real client does per handshake.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub fn client_config() -> Result<Arc<ClientConfig>> {
    let provider = rustls::crypto::ring::default_provider();
    config_with(provider, rustls::DEFAULT_VERSIONS)
}

/// A TLS 1.3 client offering only `suite` (named as rustls names it, e.g.
/// `TLS13_AES_128_GCM_SHA256`), so a run measures exactly that cipher.
pub fn suite_client_config(suite: &str) -> Result<Arc<ClientConfig>> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|s| format!("{:?}", s.suite()) == suite);
    if provider.cipher_suites.is_empty() {
        return Err(BenchError::Run(format!("rustls has no suite {suite}")));
    }
    config_with(provider, &[&rustls::version::TLS13])
}

/// A client that checks handshake signatures but not the certificate, and never resumes, so
/// every connection is a full handshake.
fn config_with(
    provider: CryptoProvider,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(provider);
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| BenchError::Run(format!("rustls config: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    cfg.resumption = Resumption::disabled();
    Ok(Arc::new(cfg))
}

fn connect(
    cfg: &Arc<ClientConfig>,
    addr: SocketAddr,
) -> std::io::Result<(ClientConnection, TcpStream)> {
    let name = ServerName::try_from(SNI).expect("static name is valid");
    let conn = ClientConnection::new(cfg.clone(), name).map_err(std::io::Error::other)?;
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok((conn, sock))
}

fn request(path: &str, close: bool) -> String {
    let conn = if close { "close" } else { "keep-alive" };
    format!("GET {path} HTTP/1.1\r\nHost: {SNI}\r\nConnection: {conn}\r\n\r\n")
}

/// One full handshake and one small GET with `Connection: close`; true when the whole
/// answer arrived.
pub fn one_connection(cfg: &Arc<ClientConfig>, addr: SocketAddr) -> bool {
    let Ok((mut conn, mut sock)) = connect(cfg, addr) else {
        return false;
    };
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    if tls
        .write_all(request(OBJECT_PATH, true).as_bytes())
        .is_err()
    {
        return false;
    }
    let mut got = Vec::with_capacity(2048);
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A server that closes without close_notify: the answer may still be whole.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(_) => return false,
        }
    }
    got.starts_with(b"HTTP/1.1 200") && got.len() > OBJECT_LEN
}

#[derive(Debug, Default)]
pub struct Shared {
    pub completed: AtomicU64,
    pub errors: AtomicU64,
    /// Bulk: plaintext bytes received.
    pub bytes: AtomicU64,
    pub recording: AtomicBool,
    pub latencies_us: Mutex<Vec<u64>>,
    stop: AtomicBool,
}

/// Threads looping [`one_connection`] (handshakes) or one bulk download.
pub type Load = Threads<Shared>;

impl Load {
    pub fn handshakes(addr: SocketAddr, threads: usize) -> Result<Load> {
        let cfg = client_config()?;
        let mut load = Threads::new(Shared::default(), |s| &s.stop);
        for _ in 0..threads {
            let cfg = cfg.clone();
            load.spawn("bench-tls-hs", "tls", move |s| {
                handshake_loop(&cfg, addr, &s)
            })?;
        }
        Ok(load)
    }

    pub fn bulk(addr: SocketAddr) -> Result<Load> {
        let cfg = client_config()?;
        let mut load = Threads::new(Shared::default(), |s| &s.stop);
        load.spawn("bench-tls-bulk", "tls", move |s| {
            if bulk_download(&cfg, addr, &s).is_err() && !s.stop.load(Relaxed) {
                s.errors.fetch_add(1, Relaxed);
            }
        })?;
        Ok(load)
    }

    pub fn finish(mut self) {
        self.stop();
    }
}

/// Bounded by the stop flag and by an error budget (a broken hop must not spin for minutes).
fn handshake_loop(cfg: &Arc<ClientConfig>, addr: SocketAddr, s: &Shared) {
    while !s.stop.load(Relaxed) && s.errors.load(Relaxed) < 1000 {
        let t = Instant::now();
        if one_connection(cfg, addr) {
            s.completed.fetch_add(1, Relaxed);
            if s.recording.load(Relaxed) {
                if let Ok(mut v) = s.latencies_us.lock() {
                    v.push(t.elapsed().as_micros() as u64);
                }
            }
        } else {
            s.errors.fetch_add(1, Relaxed);
        }
    }
}

fn bulk_download(cfg: &Arc<ClientConfig>, addr: SocketAddr, s: &Shared) -> std::io::Result<()> {
    let (mut conn, mut sock) = connect(cfg, addr)?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(request(BIG_PATH, true).as_bytes())?;
    let mut buf = vec![0u8; 256 * 1024];
    while !s.stop.load(Relaxed) {
        match tls.read(&mut buf)? {
            0 => return Err(ErrorKind::UnexpectedEof.into()),
            n => {
                s.bytes.fetch_add(n as u64, Relaxed);
            }
        }
    }
    Ok(())
}
