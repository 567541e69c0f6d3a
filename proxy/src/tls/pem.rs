//! One PEM file → one certified key. The file is what certbot users build with
//! `cat fullchain.pem privkey.pem > site.pem` (or the other way round): any number of
//! certificates and exactly one private key, in any order, the key in PKCS#1 (`RSA PRIVATE
//! KEY`), SEC1 (`EC PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`) form.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Largest certificate file read: a chain with its key is a few KiB; anything this big is
/// not a certificate file and must not be read whole into memory.
const MAX_FILE: u64 = 1024 * 1024;

/// Loads `path`; the error says what is wrong with the file in words an operator can act on.
pub fn load(path: &Path, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, String> {
    let bytes = read_bounded(path)?;
    parse(&bytes, provider).map_err(|e| format!("'{}': {e}", path.display()))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read '{shown}': {e}"))?;
    if !meta.is_file() {
        return Err(format!("'{shown}' is not a regular file"));
    }
    if meta.len() > MAX_FILE {
        return Err(format!("'{shown}' is larger than {MAX_FILE} bytes"));
    }
    std::fs::read(path).map_err(|e| format!("cannot read '{shown}': {e}"))
}

/// Parses a PEM bundle held in memory (see the module comment for what it may hold).
pub fn parse(bytes: &[u8], provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, String> {
    let chain = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM certificate: {}", pem_error(&e)))?;
    if chain.is_empty() {
        return Err("no certificate in it (expected '-----BEGIN CERTIFICATE-----')".into());
    }
    let key = match PrivateKeyDer::from_pem_slice(bytes) {
        Ok(k) => k,
        Err(pem::Error::NoItemsFound) => {
            return Err(
                "no private key in it (append the key: cat fullchain.pem privkey.pem)".into(),
            )
        }
        Err(e) => return Err(format!("bad PEM private key: {}", pem_error(&e))),
    };
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("unusable private key: {e}"))?;
    for cert in &chain {
        webpki::EndEntityCert::try_from(cert)
            .map_err(|e| format!("a certificate cannot be parsed: {e:?}"))?;
    }
    leaf_first(chain, signing).map(Arc::new)
}

/// Puts the certificate that matches the key first (the leaf), whatever order the file had
/// the chain in; no certificate matching the key is the classic "wrong key file" mistake.
fn leaf_first(
    chain: Vec<CertificateDer<'static>>,
    key: Arc<dyn rustls::sign::SigningKey>,
) -> Result<CertifiedKey, String> {
    for i in 0..chain.len() {
        let mut ordered = chain.clone();
        let leaf = ordered.remove(i);
        ordered.insert(0, leaf);
        let ck = CertifiedKey::new(ordered, key.clone());
        match ck.keys_match() {
            Ok(()) => return Ok(ck),
            // The provider cannot tell (no public key from the signer): trust the file order.
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                return Ok(CertifiedKey::new(chain, key))
            }
            Err(_) => continue,
        }
    }
    Err("the private key does not match any certificate in the file".into())
}

fn pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "section not terminated (missing '{}')",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "malformed section start '{}'",
            String::from_utf8_lossy(line)
        ),
        pem::Error::Base64Decode(e) => format!("bad base64: {e}"),
        other => format!("{other:?}"),
    }
}
