//! rustls server settings of one `bind … ssl` line.
//!
//! Only TLS 1.2 and 1.3, and only rustls' suites (AEAD with forward secrecy: AES-GCM and
//! ChaCha20-Poly1305): nothing weak can be negotiated, whatever the client offers. Every suite
//! rustls offers is one the kernel can carry (kTLS), so a handshake never rules kTLS out.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::ServerConfig;
use rustls::version::{TLS12, TLS13};
use rustls::{CipherSuite, SupportedCipherSuite, SupportedProtocolVersion};

use crate::config::SslBind;

use super::store::{CertStore, Resolver};

/// The crypto provider every TLS listener uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What the config asked for that this build cannot honour exactly, for a start-up warning.
pub fn notes(ssl: &SslBind) -> Option<String> {
    let mut notes = Vec::new();
    if let Some(v @ ("SSLv3" | "TLSv1.0" | "TLSv1.1")) = ssl.min_ver.as_deref() {
        notes.push(format!(
            "ssl-min-ver {v}: versions below TLSv1.2 are never offered (they are broken); \
             TLSv1.2 is the minimum"
        ));
    }
    let skipped: Vec<&str> = ssl
        .ciphers
        .iter()
        .chain(&ssl.ciphersuites)
        .flatten()
        .map(String::as_str)
        .filter(|n| matches!(suite_by_name(n), Ok(None)))
        .collect();
    if !skipped.is_empty() {
        notes.push(format!(
            "not offered (rustls has no such suite: no DHE, CBC or CCM): {}",
            skipped.join(":")
        ));
    }
    (!notes.is_empty()).then(|| notes.join("; "))
}

/// The OpenSSL names of the TLS 1.2 suites rustls offers, and the IANA names of its TLS 1.3
/// ones (what `ciphers` and `ciphersuites` lines use).
const SUITES: &[(&str, CipherSuite)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
];

/// `Ok(Some(suite))` for a suite rustls offers; `Ok(None)` for a well-formed OpenSSL or IANA
/// suite name that rustls does not offer (DHE, CBC, CCM: skipped with a note, so the common
/// published lists load); `Err` for anything else (a typo, or OpenSSL's cipher-string words
/// such as `HIGH` or `!aNULL`, which name no suite).
fn suite_by_name(name: &str) -> Result<Option<CipherSuite>, String> {
    if let Some((_, s)) = SUITES.iter().find(|(n, _)| *n == name) {
        return Ok(Some(*s));
    }
    let openssl = is_openssl_suite_name(name);
    let iana13 = ["TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256"].contains(&name);
    if openssl || iana13 {
        Ok(None)
    } else {
        Err(format!(
            "unknown cipher suite '{name}' (give suite names, e.g. {})",
            SUITES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(":")
        ))
    }
}

/// An OpenSSL TLS ≤ 1.2 suite name: `[ECDHE-|DHE-][RSA-|ECDSA-]CIPHER-MAC`.
fn is_openssl_suite_name(name: &str) -> bool {
    let mut parts: Vec<&str> = name.split('-').collect();
    if parts.first().is_some_and(|p| matches!(*p, "ECDHE" | "DHE")) {
        parts.remove(0);
    }
    if parts.first().is_some_and(|p| matches!(*p, "RSA" | "ECDSA")) {
        parts.remove(0);
    }
    let cipher = parts.first().copied().unwrap_or("");
    let tail = parts.get(1..).unwrap_or_default().join("-");
    let known_cipher = matches!(cipher, "AES128" | "AES256" | "CHACHA20");
    let known_tail = matches!(
        tail.as_str(),
        "GCM-SHA256" | "GCM-SHA384" | "SHA" | "SHA256" | "SHA384" | "POLY1305" | "CCM" | "CCM8"
    );
    known_cipher && known_tail
}

/// The suites `ssl` asks for (both lists), or every suite rustls offers where it asks for
/// none. `Err` names an unknown suite, or a list that leaves nothing to negotiate.
fn suites(
    ssl: &SslBind,
    offered: &[SupportedCipherSuite],
) -> Result<Vec<SupportedCipherSuite>, String> {
    let pick =
        |list: &Option<Vec<String>>, tls13: bool| -> Result<Vec<SupportedCipherSuite>, String> {
            let of_version = offered
                .iter()
                .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)) == tls13);
            let Some(names) = list else {
                return Ok(of_version.copied().collect());
            };
            let mut out = Vec::new();
            for name in names {
                if let Some(id) = suite_by_name(name)? {
                    out.extend(offered.iter().filter(|s| s.suite() == id).copied());
                }
            }
            Ok(out)
        };
    let mut all = pick(&ssl.ciphers, false)?;
    all.extend(pick(&ssl.ciphersuites, true)?);
    if all.is_empty() {
        return Err("the cipher lists leave no suite rustls can offer".to_string());
    }
    Ok(all)
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
    let versions: &[&'static SupportedProtocolVersion] =
        match (ssl.min_ver.as_deref(), ssl.max_ver.as_deref()) {
            (Some("TLSv1.3"), Some(max)) if max != "TLSv1.3" => {
                return Err("ssl-min-ver TLSv1.3 is above ssl-max-ver".to_string())
            }
            (Some("TLSv1.3"), _) => &[&TLS13],
            (_, Some("TLSv1.2")) => &[&TLS12],
            (_, Some(max)) if max != "TLSv1.3" => {
                return Err(format!(
                    "ssl-max-ver {max}: TLSv1.2 is the lowest version offered"
                ))
            }
            _ => &[&TLS12, &TLS13],
        };
    let provider = Arc::new(CryptoProvider {
        cipher_suites: suites(ssl, &provider.cipher_suites)?,
        ..(*provider).clone()
    });
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(store)));
    cfg.alpn_protocols = ssl.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    // The server's order of suites (the list's, else rustls' strongest first), as HAProxy's
    // default; `prefer-client-ciphers` lets the client's order win.
    cfg.ignore_client_order = !ssl.prefer_client_ciphers;
    if ktls {
        cfg.enable_secret_extraction = true;
        cfg.send_tls13_tickets = 0;
    }
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ssl: &SslBind) -> Vec<CipherSuite> {
        suites(ssl, &provider().cipher_suites)
            .expect("suites")
            .iter()
            .map(|s| s.suite())
            .collect()
    }

    #[test]
    fn debian_default_lists_load_and_filter() {
        let ssl = SslBind {
            ciphers: Some(
                "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES128-GCM-SHA256"
                    .split(':')
                    .map(String::from)
                    .collect(),
            ),
            ciphersuites: Some(vec!["TLS_AES_256_GCM_SHA384".into()]),
            ..SslBind::default()
        };
        assert_eq!(
            names(&ssl),
            [
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                CipherSuite::TLS13_AES_256_GCM_SHA384
            ]
        );
        assert!(notes(&ssl).is_some_and(|n| n.contains("DHE-RSA-AES128-GCM-SHA256")));
        assert_eq!(
            names(&SslBind::default()).len(),
            provider().cipher_suites.len()
        );
    }

    fn check_suites(ssl: &SslBind) -> Result<(), String> {
        suites(ssl, &provider().cipher_suites).map(|_| ())
    }

    #[test]
    fn unknown_names_and_empty_lists_are_refused() {
        for list in [
            vec!["HIGH".to_string()],
            vec!["ECDHE-RSA-AES128-GCM-SHA257".into()],
        ] {
            let ssl = SslBind {
                ciphers: Some(list.clone()),
                ..SslBind::default()
            };
            assert!(
                check_suites(&ssl).is_err_and(|e| e.contains("unknown cipher suite")),
                "{list:?}"
            );
        }
        let only_dhe = SslBind {
            ciphers: Some(vec!["DHE-RSA-AES256-GCM-SHA384".into()]),
            ciphersuites: Some(vec!["TLS_AES_128_CCM_SHA256".into()]),
            ..SslBind::default()
        };
        assert!(check_suites(&only_dhe).is_err_and(|e| e.contains("no suite")));
    }
}
