//! Test certificates made at test time with the `openssl` command (never committed: `*.pem`
//! is ignored), and `openssl s_client` as a TLS client that verifies against the test CA.
//!
//! * `TestCa::new(dir)`: a CA; `leaf(name, sans, kind)` writes `name.pem` (chain + key, in the
//!   key format `kind` asks for) and returns its path.
//! * `s_client(addr, sni, ca, extra)`: one handshake; the peer's subject CN and whether the
//!   chain verified.

use crate::util::require_tool;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Key type and PEM form of a test certificate's private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256, PKCS#8 (`PRIVATE KEY`).
    EcPkcs8,
    /// ECDSA P-256, SEC1 (`EC PRIVATE KEY`).
    EcSec1,
    /// RSA 2048, PKCS#8.
    RsaPkcs8,
    /// RSA 2048, PKCS#1 (`RSA PRIVATE KEY`).
    RsaPkcs1,
}

pub struct TestCa {
    dir: PathBuf,
    cert: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) -> String {
    let out = Command::new(require_tool("openssl"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("openssl {args:?}: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl TestCa {
    pub fn new(dir: &Path) -> TestCa {
        let ca = TestCa {
            dir: dir.to_path_buf(),
            cert: dir.join("ca.crt"),
        };
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=proxy e2e CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            dir,
        );
        ca
    }

    /// The CA certificate (for `curl --cacert`, `s_client -CAfile`).
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// Writes `name.pem`: the leaf certificate (CN = first SAN), the CA, then the key (or the
    /// key first when `key_first`), and returns its path.
    pub fn leaf(&self, name: &str, sans: &[&str], kind: KeyKind, key_first: bool) -> PathBuf {
        let key = format!("{name}.key.tmp");
        let gen: &[&str] = match kind {
            KeyKind::EcPkcs8 | KeyKind::EcSec1 => &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
            KeyKind::RsaPkcs8 | KeyKind::RsaPkcs1 => &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
        };
        let mut args = gen.to_vec();
        args.extend(["-out", &key]);
        openssl(&args, &self.dir);
        let key_pem = match kind {
            KeyKind::EcPkcs8 | KeyKind::RsaPkcs8 => openssl(&["pkey", "-in", &key], &self.dir),
            KeyKind::EcSec1 => openssl(&["ec", "-in", &key], &self.dir),
            KeyKind::RsaPkcs1 => openssl(&["rsa", "-traditional", "-in", &key], &self.dir),
        };
        let csr = format!("{name}.csr.tmp");
        let subj = format!("/CN={}", sans.first().copied().unwrap_or(name));
        openssl(
            &["req", "-new", "-key", &key, "-subj", &subj, "-out", &csr],
            &self.dir,
        );
        let ext = format!("{name}.ext.tmp");
        let alt: Vec<String> = sans.iter().map(|s| format!("DNS:{s}")).collect();
        std::fs::write(
            self.dir.join(&ext),
            format!("subjectAltName={}\n", alt.join(",")),
        )
        .expect("writing the extension file");
        let crt = format!("{name}.crt.tmp");
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ],
            &self.dir,
        );
        let leaf = std::fs::read_to_string(self.dir.join(&crt)).expect("leaf cert");
        let ca = std::fs::read_to_string(&self.cert).expect("CA cert");
        let chain = format!("{leaf}{ca}");
        let bundle = if key_first {
            format!("{key_pem}{chain}")
        } else {
            format!("{chain}{key_pem}")
        };
        for f in [&key, &csr, &ext, &crt] {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
        let path = self.dir.join(format!("{name}.pem"));
        std::fs::write(&path, bundle).expect("writing the bundle");
        path
    }
}

/// What one `openssl s_client` handshake showed.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The peer certificate's subject CN, `None` when no handshake happened.
    pub cn: Option<String>,
    /// `Verify return code: 0 (ok)` against the CA given.
    pub verified: bool,
    /// The negotiated protocol (`TLSv1.3`, …).
    pub protocol: Option<String>,
    pub output: String,
}

/// One handshake with `addr` (SNI `sni` if given), verifying against `ca`; `extra` adds
/// options such as `-tls1_2`. Bounded by `timeout 10`.
pub fn s_client(addr: SocketAddr, sni: Option<&str>, ca: &Path, extra: &[&str]) -> Handshake {
    let mut c = Command::new(require_tool("timeout"));
    c.arg("10").arg(require_tool("openssl")).arg("s_client");
    c.arg("-connect").arg(addr.to_string());
    match sni {
        Some(n) => c.args(["-servername", n]),
        None => c.arg("-noservername"),
    };
    c.arg("-CAfile").arg(ca).args(extra);
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("openssl s_client: {e}"));
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let cn = output
        .lines()
        .find_map(|l| l.strip_prefix("subject="))
        .and_then(|s| s.split("CN = ").nth(1).or_else(|| s.split("CN=").nth(1)))
        .map(|s| s.split(',').next().unwrap_or(s).trim().to_string());
    let verified = output.contains("Verify return code: 0 (ok)");
    // `New, TLSv1.3, Cipher is …`: printed for every completed handshake.
    let protocol = output
        .lines()
        .find_map(|l| l.strip_prefix("New, "))
        .and_then(|l| l.split(',').next())
        .map(|s| s.trim().to_string());
    Handshake {
        cn,
        verified,
        protocol,
        output,
    }
}

/// `tests/configs/certs/example.pem`, which the seed 001 fixture names: made on demand (a
/// certificate is never committed), for `proxy -c` to load.
pub fn ensure_example_cert() -> PathBuf {
    let dir = crate::util::workspace_root().join("tests/configs/certs");
    let path = dir.join("example.pem");
    if path.is_file() {
        return path;
    }
    std::fs::create_dir_all(&dir).expect("tests/configs/certs");
    // Built beside, then renamed: parallel tests never see half a file.
    let tmp = crate::util::TestDir::new("example-cert");
    let ca = TestCa::new(tmp.path());
    let made = ca.leaf(
        "example",
        &["example.com", "www.example.com"],
        KeyKind::EcPkcs8,
        false,
    );
    let staged = dir.join(format!(".example.pem.{}", std::process::id()));
    std::fs::copy(&made, &staged).expect("staging example.pem");
    std::fs::rename(&staged, &path).expect("placing example.pem");
    path
}

/// Connects over TLS (trusting `ca`), sends `first`, stays idle `idle` seconds, sends
/// `second`, prints both answers: python3-websockets as in `http_client::ws_exchange`, with an
/// SSL context that trusts the test CA.
const WSS_CLIENT: &str = r#"
import asyncio, ssl, sys, websockets
url, ca, cookie, idle = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
async def main():
    ctx = ssl.create_default_context(cafile=ca)
    headers = {"Cookie": cookie} if cookie else {}
    async with websockets.connect(url, ssl=ctx, extra_headers=headers, ping_interval=None, open_timeout=10) as ws:
        await ws.send("first")
        print(await asyncio.wait_for(ws.recv(), 10), flush=True)
        await asyncio.sleep(idle)
        await ws.send("second")
        print(await asyncio.wait_for(ws.recv(), 10), flush=True)
asyncio.run(main())
"#;

/// Runs the WSS client against `url` (`wss://…`): the two answers it got, or its error output.
/// Bounded by `timeout 60`.
pub fn wss_exchange(
    url: &str,
    ca: &Path,
    cookie: &str,
    idle_secs: f64,
) -> Result<Vec<String>, String> {
    let idle = idle_secs.to_string();
    crate::http_client::run_ws_client(
        "wss-client",
        WSS_CLIENT,
        &[url.as_ref(), ca.as_ref(), cookie.as_ref(), idle.as_ref()],
    )
}

/// How [`tls_send_and_end`]'s client ends its side of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsEnd {
    /// close_notify, then FIN: the stream ended on purpose.
    CloseNotify,
    /// FIN alone: as a client that died, or an attacker cutting the stream, leaves it.
    BareFin,
}

/// A rustls client (trusting `ca`, SNI `name`) that sends `data` to `addr`, ends its side as
/// `end` says, then reads until the other side's end. Returns the client's own address (to
/// find the session's log line) and whether the peer ended with close_notify.
pub fn tls_send_and_end(
    addr: SocketAddr,
    name: &str,
    ca: &Path,
    data: &[u8],
    end: TlsEnd,
) -> (SocketAddr, bool) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("CA added");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server = ServerName::try_from(name.to_string()).expect("server name");
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), server).expect("client");
    let tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .ok();
    let local = tcp.local_addr().expect("local address");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(data).expect("send through TLS");
    if end == TlsEnd::CloseNotify {
        tls.conn.send_close_notify();
    }
    tls.flush().expect("flush");
    tls.sock
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let mut sink = Vec::new();
    let clean = match tls.read_to_end(&mut sink) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
        Err(e) => panic!("reading to the end: {e}"),
    };
    (local, clean)
}
