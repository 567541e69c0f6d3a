//! TLS termination: certificates (PEM file or directory, SNI, hot reload), the rustls
//! handshake over the thread's io_uring runtime, and kernel offload (kTLS) with a probe and a
//! userspace fallback.
//!
//! Modules, one concern each:
//! - `pem`: one PEM bundle → one certified key (any order, RSA/ECDSA, PKCS#1/8/SEC1);
//! - `store`: the certificates of a `crt` list, SNI choice, reload on change;
//! - `config`: rustls settings of a bind (versions, ALPN, kTLS needs);
//! - `handshake`: the handshake, one record at a time, bounded in time;
//! - `stream`: a userspace rustls stream; `ktls`: probe, key install, kernel-record I/O;
//! - `flow`: a TLS client paired with a plain server (RTMPS), with the forward room's close
//!   protocol (see LIFECYCLE.md beside this file).
//!
//! [`TlsClient`] is the accepted, decrypted stream whatever carries it; it implements
//! compio's `AsyncRead`/`AsyncWrite` through `&TlsClient`, which is how HTTP runs over TLS.

mod config;
mod flow;
mod handshake;
pub mod ktls;
mod pem;
mod splice;
mod store;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use compio::buf::{BufResult, IoBuf, IoBufMut};
use compio::io::{AsyncRead, AsyncWrite};
use compio::net::TcpStream;
use rustls::crypto::CryptoProvider;
use rustls::server::ServerConfig;

use crate::config::{Loc, SslBind};
use crate::counters::{Live, Process, PROCESS};

pub use config::notes;
pub use flow::{forward, forward_counted};
pub use ktls::KtlsStream;
pub use store::CertStore;
pub use stream::TlsStream;

mod stream;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A `bind … ssl` line that cannot be served: `file:line: reason`.
    #[error("{loc}: {reason}")]
    Config { loc: Loc, reason: String },
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
    #[error("client closed the connection during the TLS handshake")]
    HandshakeEof,
    #[error("TLS: {0}")]
    Handshake(#[from] rustls::Error),
    #[error("bad TLS record: {0}")]
    BadRecord(&'static str),
    #[error("kTLS: {0}")]
    Ktls(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How long a handshake may take when the frontend sets no `timeout client`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS side of one `bind … ssl` line.
pub struct Acceptor {
    config: Arc<ServerConfig>,
    store: Arc<CertStore>,
    handshake_timeout: Duration,
    /// Try to hand sessions to the kernel.
    ktls: bool,
}

impl Acceptor {
    pub fn new(
        ssl: &SslBind,
        store: Arc<CertStore>,
        provider: Arc<CryptoProvider>,
        handshake_timeout: Duration,
        ktls: bool,
    ) -> Result<Acceptor, String> {
        let config = config::server_config(ssl, store.clone(), provider, ktls)?;
        Ok(Acceptor {
            config,
            store,
            handshake_timeout,
            ktls,
        })
    }

    pub fn store(&self) -> &Arc<CertStore> {
        &self.store
    }

    pub fn ktls(&self) -> bool {
        self.ktls
    }

    /// For the start-up line of the listener.
    pub fn describe(&self) -> String {
        let carrier = if self.ktls {
            "kTLS"
        } else {
            "userspace rustls"
        };
        format!("TLS, {} certificate(s), {carrier}", self.store.len())
    }

    /// Handshake, then the kernel takes the session if it can. Failures are counted for the
    /// `proxy_tls_handshake_failures_total` metric.
    pub async fn accept(&self, tcp: TcpStream) -> Result<TlsClient, TlsError> {
        let result = self.accept_counted(tcp).await;
        if result.is_err() {
            Process::add(&PROCESS.tls_handshake_failures, 1);
        }
        result
    }

    /// The handshake of a `bind … ssl` client, in `mode tcp` and `mode http` alike. `active`
    /// is the mode's live-session count: the handshake is counted in it so that a drain at
    /// shutdown waits for it too. A failed handshake is logged and gives `None`: the session
    /// ends before any server is picked or request read.
    pub async fn accept_logged(
        &self,
        client: TcpStream,
        peer: SocketAddr,
        frontend: &str,
        active: &AtomicUsize,
    ) -> Option<TlsClient> {
        let accepted = {
            let _active = Live::enter(active);
            let _ = client.set_nodelay(true);
            self.accept(client).await
        };
        match accepted {
            Ok(c) => Some(c),
            Err(e) => {
                log::info!("frontend {frontend}: TLS handshake with {peer} failed: {e}");
                None
            }
        }
    }

    async fn accept_counted(&self, tcp: TcpStream) -> Result<TlsClient, TlsError> {
        let conn = handshake::handshake(&tcp, self.config.clone(), self.handshake_timeout).await?;
        if !self.ktls {
            Process::add(&PROCESS.tls_user_sessions, 1);
            return Ok(TlsClient::User(Box::new(TlsStream::new(tcp, conn))));
        }
        match ktls::install(&tcp, conn) {
            Ok(k) => {
                Process::add(&PROCESS.ktls_sessions, 1);
                Ok(TlsClient::Kernel(k))
            }
            Err(ktls::Refused::Fallback(conn, why)) => {
                log::debug!("kTLS not used for this session: {why}");
                Process::add(&PROCESS.tls_user_sessions, 1);
                Ok(TlsClient::User(Box::new(TlsStream::new(tcp, *conn))))
            }
            Err(ktls::Refused::Broken(e)) => Err(e),
        }
    }
}

/// Marks a session whose client sent FIN without close_notify, and counts it once
/// (`proxy_tls_truncated_total`).
fn note_truncated(flag: &std::cell::Cell<bool>) {
    if !flag.replace(true) {
        Process::add(&PROCESS.tls_truncated, 1);
    }
}

/// An accepted TLS connection after its handshake: plaintext in and out.
pub enum TlsClient {
    /// Boxed: a rustls session is large, and clients are moved between tasks by value.
    User(Box<TlsStream>),
    Kernel(KtlsStream),
}

impl TlsClient {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            TlsClient::User(s) => s.tcp(),
            TlsClient::Kernel(s) => s.tcp(),
        }
    }

    pub fn is_kernel(&self) -> bool {
        matches!(self, TlsClient::Kernel(_))
    }

    /// The protocol the client and the bind agreed on by ALPN (`h2`, `http/1.1`), if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            TlsClient::User(s) => s.alpn(),
            TlsClient::Kernel(s) => s.alpn(),
        }
    }

    /// Whether the client ended its stream with a FIN and no close_notify (seen once the
    /// stream's end was read): an attacker on the path can cut a stream short that way, so
    /// the session is logged `CD` rather than as a clean end.
    pub fn truncated(&self) -> bool {
        match self {
            TlsClient::User(s) => s.truncated(),
            TlsClient::Kernel(s) => s.truncated(),
        }
    }

    /// Plaintext into `dst`; `Ok(0)` when the client finished.
    pub async fn read_plain(&self, dst: &mut [u8]) -> std::io::Result<usize> {
        match self {
            TlsClient::User(s) => s.read_plain(dst).await,
            TlsClient::Kernel(s) => s.read_plain(dst).await,
        }
    }

    pub async fn write_plain(&self, data: &[u8]) -> std::io::Result<()> {
        match self {
            TlsClient::User(s) => s.write_plain(data).await,
            TlsClient::Kernel(s) => s.write_plain(data).await,
        }
    }

    /// close_notify and FIN.
    pub async fn finish(&self) -> std::io::Result<()> {
        match self {
            TlsClient::User(s) => s.finish().await,
            TlsClient::Kernel(s) => s.finish().await,
        }
    }
}

impl AsyncRead for &TlsClient {
    async fn read<B: IoBufMut>(&mut self, mut buf: B) -> BufResult<usize, B> {
        let dst = buf.ensure_init();
        let res = self.read_plain(dst).await;
        if let Ok(n) = res {
            // SAFETY: `ensure_init` initialised the whole capacity and `n` ≤ its length.
            unsafe { buf.set_len(n) };
        }
        BufResult(res, buf)
    }
}

impl AsyncWrite for &TlsClient {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            TlsClient::User(s) => (&**s).write(buf).await,
            TlsClient::Kernel(s) => (&*s).write(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            TlsClient::User(s) => (&**s).flush().await,
            TlsClient::Kernel(s) => (&*s).flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        self.finish().await
    }
}

/// Builds the acceptor of a `bind … ssl` line, sharing certificate stores between binds with
/// the same `crt` list (one load, one reload). Errors carry the bind's `file:line`.
pub struct Builder {
    stores: HashMap<Vec<PathBuf>, Arc<CertStore>>,
    provider: Arc<CryptoProvider>,
    /// Offer sessions to the kernel (the probe said it can take them).
    ktls: bool,
}

impl Builder {
    pub fn new(ktls: bool) -> Builder {
        Builder {
            stores: HashMap::new(),
            provider: config::provider(),
            ktls,
        }
    }

    pub fn acceptor(
        &mut self,
        ssl: &SslBind,
        loc: &Loc,
        handshake_timeout: Duration,
    ) -> Result<Arc<Acceptor>, TlsError> {
        let provider = self.provider.clone();
        let fail = |reason: String| TlsError::Config {
            loc: loc.clone(),
            reason,
        };
        let store = match self.stores.get(&ssl.crt) {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(CertStore::load(&ssl.crt, provider.clone()).map_err(fail)?);
                self.stores.insert(ssl.crt.clone(), s.clone());
                s
            }
        };
        let acceptor =
            Acceptor::new(ssl, store, provider, handshake_timeout, self.ktls).map_err(fail)?;
        Ok(Arc::new(acceptor))
    }

    /// Everything the control thread watches for reloads.
    pub fn watch(&self) -> CertWatch {
        CertWatch(self.stores.values().cloned().collect())
    }
}

/// Checks every config's `bind … ssl` certificates (for `proxy -c` and the start), returning
/// each unusable one as `file:line: reason`.
pub fn check_config(cfg: &crate::config::Config) -> Vec<TlsError> {
    let mut b = Builder::new(false);
    let mut errors = Vec::new();
    for fe in cfg.frontends() {
        for bind in &fe.binds {
            if let Some(ssl) = &bind.ssl {
                if let Err(e) = b.acceptor(ssl, &bind.loc, DEFAULT_HANDSHAKE_TIMEOUT) {
                    errors.push(e);
                }
            }
        }
    }
    errors
}

/// The certificate stores of the running process: polled by the control thread, reloaded
/// on change or on SIGHUP.
#[derive(Default, Clone)]
pub struct CertWatch(Vec<Arc<CertStore>>);

impl CertWatch {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The certificate files and directories loaded (`show ssl cert`), each once.
    pub fn files(&self) -> Vec<std::path::PathBuf> {
        let mut out: Vec<std::path::PathBuf> = Vec::new();
        for path in self.0.iter().flat_map(|s| s.sources()) {
            if !out.contains(path) {
                out.push(path.clone());
            }
        }
        out
    }

    /// `force`: reload even unchanged files (SIGHUP). Logs what happened.
    pub fn check(&self, force: bool) {
        for store in &self.0 {
            let shown: Vec<String> = store
                .sources()
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            match store.reload(force) {
                None => {}
                Some(Ok(n)) => log::info!(
                    "certificates reloaded from {}: {n} in use for new handshakes",
                    shown.join(", ")
                ),
                Some(Err(why)) => log::warn!(
                    "certificates in {} not reloaded, the previous ones stay in use: {why}",
                    shown.join(", ")
                ),
            }
        }
    }
}
