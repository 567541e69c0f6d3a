//! A hand-driven HTTP/2 client over TLS (rustls, ALPN `h2`, trusting the test CA), for what
//! no ordinary client does on purpose: open streams and reset them at once (Rapid Reset,
//! CVE-2023-44487), with the exact pace and batching the test asks for. Frames are written
//! by hand (RFC 9113 §4, §6); request heads use HPACK literals without indexing, so no
//! dynamic table is involved. Reads see the server's frames until GOAWAY or EOF.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
/// RST_STREAM's CANCEL, what a browser sends for a request it no longer needs.
pub const CANCEL: u32 = 0x8;
/// GOAWAY's code for a peer that is generating excessive load.
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// What the server said at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    GoAway {
        last_stream: u32,
        code: u32,
    },
    /// The connection closed (or failed) without a GOAWAY.
    Closed(String),
    /// Still open when the wait ended.
    Open,
}

pub struct RawH2 {
    tls: StreamOwned<ClientConnection, TcpStream>,
    /// Frames written and not yet sent: a whole batch leaves in as few records as TLS allows.
    out: Vec<u8>,
    /// Bytes read and not yet a whole frame: kept from one wait to the next.
    input: Vec<u8>,
    next_stream: u32,
    authority: String,
}

impl RawH2 {
    /// TLS with ALPN `h2` to `addr` (SNI `name`), the preface and an empty SETTINGS.
    pub fn connect(addr: SocketAddr, name: &str, ca: &Path) -> RawH2 {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
            roots.add(cert.expect("CA certificate")).expect("CA added");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let server = ServerName::try_from(name.to_string()).expect("server name");
        let conn = ClientConnection::new(Arc::new(config), server).expect("TLS client");
        let tcp = TcpStream::connect(addr).expect("connect");
        // The handshake is bounded too; `wait_end` sets its own waits.
        tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut tls = StreamOwned::new(conn, tcp);
        tls.write_all(PREFACE).expect("preface");
        let mut c = RawH2 {
            tls,
            out: Vec::new(),
            input: Vec::new(),
            next_stream: 1,
            authority: format!("{name}:{}", addr.port()),
        };
        c.frame(SETTINGS, 0, 0, &[]);
        c.flush();
        assert_eq!(
            c.tls.conn.alpn_protocol(),
            Some(&b"h2"[..]),
            "the proxy must agree on h2 by ALPN"
        );
        c
    }

    fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = payload.len() as u32;
        self.out.extend_from_slice(&len.to_be_bytes()[1..]);
        self.out.push(kind);
        self.out.push(flags);
        self.out
            .extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        self.out.extend_from_slice(payload);
    }

    /// A GET for `path` on a new stream (queued); returns the stream id.
    pub fn get(&mut self, path: &str) -> u32 {
        let id = self.next_stream;
        self.next_stream += 2;
        let mut block = vec![0x82, 0x87]; // :method GET, :scheme https (static table)
        literal(&mut block, 0x04, path.as_bytes()); // :path
        literal(&mut block, 0x01, self.authority.clone().as_bytes()); // :authority
        self.frame(HEADERS, END_STREAM | END_HEADERS, id, &block);
        id
    }

    /// RST_STREAM(CANCEL) for `stream` (queued).
    pub fn reset(&mut self, stream: u32) {
        self.frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes());
    }

    /// Sends what is queued; a failure (the server closed) is left for [`RawH2::wait_end`].
    pub fn flush(&mut self) -> bool {
        let out = std::mem::take(&mut self.out);
        self.tls
            .write_all(&out)
            .and_then(|()| self.tls.flush())
            .is_ok()
    }

    /// Reads frames for up to `limit`, acknowledging SETTINGS, until a GOAWAY or the end.
    pub fn wait_end(&mut self, limit: Duration) -> End {
        let start = Instant::now();
        // Each read waits at most this long, so that a short wait stays short.
        let slice = limit.clamp(Duration::from_millis(1), Duration::from_millis(200));
        self.tls.sock.set_read_timeout(Some(slice)).ok();
        let mut chunk = [0u8; 16384];
        while start.elapsed() < limit {
            if let Some(end) = self.frames() {
                return end;
            }
            match self.tls.read(&mut chunk) {
                Ok(0) => return End::Closed("EOF".into()),
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return End::Closed(e.to_string()),
            }
        }
        End::Open
    }

    /// Takes the complete frames off the input; `Some` at a GOAWAY.
    fn frames(&mut self) -> Option<End> {
        let mut buf = std::mem::take(&mut self.input);
        let end = self.take_frames(&mut buf);
        self.input = buf;
        end
    }

    fn take_frames(&mut self, buf: &mut Vec<u8>) -> Option<End> {
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                return None;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let payload: Vec<u8> = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            if kind == SETTINGS && flags & ACK == 0 {
                self.frame(SETTINGS, ACK, 0, &[]);
                self.flush();
            }
            if kind == GOAWAY && payload.len() >= 8 {
                let word = |i: usize| {
                    u32::from_be_bytes([payload[i], payload[i + 1], payload[i + 2], payload[i + 3]])
                };
                return Some(End::GoAway {
                    last_stream: word(0) & 0x7fff_ffff,
                    code: word(4),
                });
            }
        }
        None
    }
}

/// HPACK "literal header field without indexing, indexed name" (RFC 7541 §6.2.2), for names
/// of the static table (index < 15) and values shorter than 127 bytes.
fn literal(block: &mut Vec<u8>, name_index: u8, value: &[u8]) {
    assert!(name_index < 15 && value.len() < 127);
    block.push(name_index);
    block.push(value.len() as u8);
    block.extend_from_slice(value);
}
