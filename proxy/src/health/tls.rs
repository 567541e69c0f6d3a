//! `check-ssl`: the client side of TLS for health checks, written here with rustls rather than
//! taken from the tls room, which sits above this one and serves clients, not servers.
//!
//! Only `verify none` is built (the config refuses `check-ssl` without it): the server's
//! certificate is not checked against any CA, but the handshake's signatures still are, so a
//! peer must hold the key of the certificate it shows.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use compio::buf::BufResult;
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

use crate::config::ServerParams;

use super::conn::CheckIo;
use super::error::CheckError;

/// TLS bytes asked of the socket per read. Small on purpose: the plaintext one read yields
/// always fits rustls' receive buffer, which is drained before the next read.
const READ_CHUNK: usize = 4096;

/// HAProxy's texts (`conn_err_code_str`) for a failed handshake, all reported as L6RSP.
const FAILURE: &str = "SSL handshake failure";
const CLOSED: &str = "Connection closed during SSL handshake";
const ABORTED: &str = "Connection error during SSL handshake";

/// One server's TLS check settings, built once and used by every check of it.
#[derive(Debug)]
pub struct TlsProbe {
    config: Arc<ClientConfig>,
    /// `check-sni`, or the server's IP address, for which rustls sends no SNI at all.
    name: ServerName<'static>,
}

impl TlsProbe {
    pub fn new(params: &ServerParams, target: IpAddr) -> Result<TlsProbe, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(NoVerify(provider.signature_verification_algorithms));
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let name = match &params.check_sni {
            Some(sni) => ServerName::try_from(sni.clone())
                .map_err(|_| rustls::Error::General(format!("bad check-sni '{sni}'")))?,
            None => ServerName::IpAddress(target.into()),
        };
        Ok(TlsProbe {
            config: Arc::new(config),
            name,
        })
    }
}

/// `verify none`: any certificate is accepted, the handshake signatures are still verified.
#[derive(Debug)]
struct NoVerify(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A TLS session over the check's connection.
pub struct TlsStream {
    tcp: TcpStream,
    conn: ClientConnection,
    /// Reused for every read from the socket.
    inbuf: Vec<u8>,
}

/// Why reading from the peer stopped.
enum PullError {
    Io(io::Error),
    Tls(rustls::Error),
}

/// Runs the client handshake on a connected socket; the caller bounds it in time.
pub async fn connect(tcp: TcpStream, probe: &TlsProbe) -> Result<TlsStream, CheckError> {
    let conn = ClientConnection::new(probe.config.clone(), probe.name.clone())
        .map_err(|_| failed(FAILURE))?;
    let mut s = TlsStream {
        tcp,
        conn,
        inbuf: Vec::with_capacity(READ_CHUNK),
    };
    while s.conn.is_handshaking() {
        s.flush().await.map_err(aborted)?;
        match s.pull().await {
            Ok(true) => {}
            Ok(false) => return Err(failed(CLOSED)),
            Err(PullError::Io(e)) => return Err(aborted(e)),
            Err(PullError::Tls(e)) => {
                log::debug!("check TLS handshake: {e}");
                return Err(failed(FAILURE));
            }
        }
    }
    // The client's last flight (its Finished) is still queued.
    s.flush().await.map_err(aborted)?;
    Ok(s)
}

fn failed(text: &str) -> CheckError {
    CheckError::Handshake(text.to_string())
}

fn aborted(e: io::Error) -> CheckError {
    CheckError::Handshake(format!("{ABORTED} ({})", super::outcome::os_text(&e)))
}

impl TlsStream {
    /// Sends everything rustls has queued for the peer.
    async fn flush(&mut self) -> io::Result<()> {
        let mut w = &self.tcp;
        while self.conn.wants_write() {
            let mut out = Vec::new();
            self.conn.write_tls(&mut out)?;
            w.write_all(out).await.0?;
        }
        Ok(())
    }

    /// Reads one chunk from the socket into rustls; `Ok(false)` at the socket's end.
    async fn pull(&mut self) -> Result<bool, PullError> {
        let mut buf = std::mem::take(&mut self.inbuf);
        buf.clear();
        let mut r = &self.tcp;
        let BufResult(got, buf) = r.read(buf).await;
        let n = got.map_err(PullError::Io)?;
        let mut rest = buf.get(..n).unwrap_or_default();
        while !rest.is_empty() {
            self.conn.read_tls(&mut rest).map_err(PullError::Io)?;
            if let Err(e) = self.conn.process_new_packets() {
                // rustls queued an alert telling the server why; best effort.
                let _ = self.flush().await;
                return Err(PullError::Tls(e));
            }
        }
        self.inbuf = buf;
        Ok(n > 0)
    }

    /// Ends the session with a close_notify, best effort, and closes the socket.
    pub async fn close(mut self) {
        self.conn.send_close_notify();
        let _ = self.flush().await;
        let _ = self.tcp.close().await;
    }
}

impl CheckIo for TlsStream {
    async fn send(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        io::Write::write_all(&mut self.conn.writer(), &bytes)?;
        self.flush().await
    }

    async fn recv(&mut self, mut buf: Vec<u8>, want: usize) -> (io::Result<usize>, Vec<u8>) {
        loop {
            let len = buf.len();
            buf.resize(len + want, 0);
            let got = io::Read::read(
                &mut self.conn.reader(),
                buf.get_mut(len..).unwrap_or_default(),
            );
            buf.truncate(len + *got.as_ref().unwrap_or(&0));
            match got {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Data, or the server's close_notify (0).
                other => return (other, buf),
            }
            match self.pull().await {
                Ok(true) => {}
                // The socket closed without close_notify: the answer ends there, as over TCP.
                Ok(false) => return (Ok(0), buf),
                Err(PullError::Io(e)) => return (Err(e), buf),
                Err(PullError::Tls(e)) => {
                    return (Err(io::Error::new(io::ErrorKind::InvalidData, e)), buf)
                }
            }
        }
    }
}
