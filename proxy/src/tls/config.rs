//! rustls server settings of one `bind … ssl` line.
//!
//! Only TLS 1.2 and 1.3, and only rustls' suites (AEAD with forward secrecy: AES-GCM and
//! ChaCha20-Poly1305): nothing weak can be negotiated, whatever the client offers. Every suite
//! rustls offers is one the kernel can carry (kTLS), so a handshake never rules kTLS out.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::ServerConfig;
use rustls::version::{TLS12, TLS13};
use rustls::SupportedProtocolVersion;

use crate::config::SslBind;

use super::store::{CertStore, Resolver};

/// The crypto provider every TLS listener uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What the config asked for that this build cannot honour exactly, for a start-up warning.
pub fn notes(ssl: &SslBind) -> Option<String> {
    match ssl.min_ver.as_deref() {
        Some(v @ ("SSLv3" | "TLSv1.0" | "TLSv1.1")) => Some(format!(
            "ssl-min-ver {v}: versions below TLSv1.2 are never offered (they are broken); \
             TLSv1.2 is the minimum"
        )),
        _ => None,
    }
}

/// `ktls`: the kernel can take the session over, so the secrets must be extractable and no
/// TLS 1.3 ticket may be sent after the handshake (the kernel would have to encrypt it, and
/// a record queued in rustls at extraction time would be lost).
pub fn server_config(
    ssl: &SslBind,
    store: Arc<CertStore>,
    provider: Arc<CryptoProvider>,
    ktls: bool,
) -> Result<Arc<ServerConfig>, String> {
    let versions: &[&'static SupportedProtocolVersion] = match ssl.min_ver.as_deref() {
        Some("TLSv1.3") => &[&TLS13],
        _ => &[&TLS12, &TLS13],
    };
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(store)));
    cfg.alpn_protocols = ssl.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    // The operator's order of suites (rustls' strongest first), as HAProxy's default
    // `prefer-client-ciphers` off.
    cfg.ignore_client_order = true;
    if ktls {
        cfg.enable_secret_extraction = true;
        cfg.send_tls13_tickets = 0;
    }
    Ok(Arc::new(cfg))
}
