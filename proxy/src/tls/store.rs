//! The certificates of one `crt` list: files and directories, loaded at start, swapped whole
//! on reload. Handshakes read the current set through an `ArcSwap` (no lock shared with the
//! control thread that reloads); a reload that fails leaves the previous set in place.
//!
//! SNI: the first certificate whose SAN (or CN-less SAN list, as browsers do) covers the
//! requested name wins, in load order; without SNI or without a match the first certificate
//! loaded is the default, as in HAProxy.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::pem;

/// One loaded certificate and the file it came from (for logs).
#[derive(Debug)]
struct Entry {
    key: Arc<CertifiedKey>,
    path: PathBuf,
}

#[derive(Debug, Default)]
struct CertSet {
    entries: Vec<Entry>,
}

/// What a file looked like when last loaded: a change of any part means "load again".
type Stamp = Vec<(PathBuf, Option<(SystemTime, u64, u64, u64)>)>;

#[derive(Debug)]
pub struct CertStore {
    sources: Vec<PathBuf>,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertSet>,
    /// Stamp of the last load attempt (successful or not): a broken file is not retried
    /// every poll, only when it changes again. Touched by the control thread only.
    last: Mutex<Stamp>,
}

impl CertStore {
    /// Loads every source; the error names the first file that cannot be used.
    pub fn load(sources: &[PathBuf], provider: Arc<CryptoProvider>) -> Result<CertStore, String> {
        let stamp = stamp(sources);
        let set = load_set(sources, &provider)?;
        Ok(CertStore {
            sources: sources.to_vec(),
            provider,
            current: ArcSwap::from_pointee(set),
            last: Mutex::new(stamp),
        })
    }

    pub fn sources(&self) -> &[PathBuf] {
        &self.sources
    }

    /// Number of certificates in the current set.
    pub fn len(&self) -> usize {
        self.current.load().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads again when a file changed since the last attempt (or always with `force`, as on
    /// SIGHUP). `None`: nothing changed; `Some(Ok(n))`: n certificates now in use;
    /// `Some(Err(why))`: the new files were rejected and the old set stays.
    pub fn reload(&self, force: bool) -> Option<Result<usize, String>> {
        let now = stamp(&self.sources);
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if !force && *last == now {
                return None;
            }
            *last = now;
        }
        Some(load_set(&self.sources, &self.provider).map(|set| {
            let n = set.entries.len();
            self.current.store(Arc::new(set));
            n
        }))
    }

    /// The certificate for `sni` (see the module comment).
    pub fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let set = self.current.load();
        let by_name = sni
            .and_then(|name| ServerName::try_from(name).ok())
            .and_then(|name| set.entries.iter().find(|e| covers(e, &name)));
        by_name
            .or_else(|| set.entries.first())
            .map(|e| e.key.clone())
    }

    /// The file the certificate for `sni` came from (tests and logs).
    pub fn path_for(&self, sni: Option<&str>) -> Option<PathBuf> {
        let picked = self.pick(sni)?;
        let set = self.current.load();
        let found = set.entries.iter().find(|e| Arc::ptr_eq(&e.key, &picked));
        found.map(|e| e.path.clone())
    }
}

fn covers(e: &Entry, name: &ServerName<'_>) -> bool {
    let Some(leaf) = e.key.cert.first() else {
        return false;
    };
    webpki::EndEntityCert::try_from(leaf)
        .and_then(|c| c.verify_is_valid_for_subject_name(name))
        .is_ok()
}

/// rustls asks the store for a certificate during each handshake.
#[derive(Debug)]
pub struct Resolver(pub Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.pick(hello.server_name())
    }
}

fn load_set(sources: &[PathBuf], provider: &CryptoProvider) -> Result<CertSet, String> {
    let mut entries = Vec::new();
    for source in sources {
        for path in files_of(source)? {
            let key = pem::load(&path, provider)?;
            entries.push(Entry { key, path });
        }
    }
    if entries.is_empty() {
        return Err("no certificate loaded".into());
    }
    Ok(CertSet { entries })
}

/// A file is itself; a directory is its certificate files in name order (the first is the
/// directory's default). Files HAProxy keeps beside certificates are skipped.
fn files_of(source: &Path) -> Result<Vec<PathBuf>, String> {
    let shown = source.display();
    let meta = std::fs::metadata(source).map_err(|e| format!("cannot read '{shown}': {e}"))?;
    if !meta.is_dir() {
        return Ok(vec![source.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(source)
        .map_err(|e| format!("cannot list '{shown}': {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && !skipped(p))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("directory '{shown}' has no certificate file"));
    }
    Ok(files)
}

fn skipped(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    name.starts_with('.')
        || [".key", ".ocsp", ".issuer", ".sctl", ".bak", "~"]
            .iter()
            .any(|s| name.ends_with(s))
}

/// Modification time, size, inode and a hash of the contents of every file the sources stand
/// for (and of each directory, whose listing changes when a file is added or removed). The
/// hash catches a file rewritten in place with the same length within one tick of the
/// kernel's coarse file clock, which the first three miss (seen in a test under qemu); PEM
/// files are a few KiB, read once a second.
fn stamp(sources: &[PathBuf]) -> Stamp {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut add = |p: &Path| {
        let m = std::fs::metadata(p).ok();
        let contents = |m: &std::fs::Metadata| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            if m.is_file() {
                std::fs::read(p).ok()?.hash(&mut h);
            }
            Some(h.finish())
        };
        let s = m.and_then(|m| Some((m.modified().ok()?, m.len(), m.ino(), contents(&m)?)));
        out.push((p.to_path_buf(), s));
    };
    for source in sources {
        add(source);
        if source.is_dir() {
            if let Ok(files) = files_of(source) {
                files.iter().for_each(|f| add(f));
            }
        }
    }
    out
}
