//! Turning the validated config into what the workers run: frontends wired to backends,
//! listeners to open, limits. Parts of a config this build cannot serve yet are reported here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crate::balance::ServerSet;
use crate::config::{Bind, Config, Loc, Mode, Proxy, SslBind, Timeouts};
use crate::forward::{Engine, FlowHistory, FlowParams, IdleLimits};
use crate::http;
use crate::log::AccessLog;
use crate::stats::Registry;
use crate::tcp::{Backend, Frontend};
use crate::tls;

use super::limit::ConnLimit;
use super::RuntimeError;

/// What accepted connections of a bind are handed to.
#[derive(Clone)]
pub enum Service {
    Tcp(Arc<Frontend>),
    Http(Arc<http::Frontend>),
}

impl Service {
    pub fn name(&self) -> &str {
        match self {
            Service::Tcp(f) => &f.name,
            Service::Http(f) => &f.name,
        }
    }

    /// For the start-up report: where traffic goes.
    pub fn destination(&self) -> String {
        match self {
            Service::Tcp(f) => format!(
                "backend {} (forward engine {})",
                f.backend.set.backend,
                f.backend.engine.name()
            ),
            Service::Http(_) => "HTTP rules".to_string(),
        }
    }
}

pub struct PlannedBind {
    pub addr: SocketAddr,
    pub loc: Loc,
    pub service: Service,
    pub limit: Arc<ConnLimit>,
    /// `ssl`: the handshake (and kTLS) in front of the service.
    pub tls: Option<Arc<tls::Acceptor>>,
}

pub struct Plan {
    pub binds: Vec<PlannedBind>,
    pub backends: Vec<(Arc<Backend>, Option<std::time::Duration>)>,
    /// Sections this build accepts in the config but does not serve yet, with the reason.
    pub not_served: Vec<String>,
    /// Live figures of every section; the data path below holds the same `Arc`s.
    pub registry: Arc<Registry>,
    /// Certificate files the control thread watches for reloads.
    pub certs: tls::CertWatch,
}

impl Plan {
    /// `ktls`: TLS sessions may be handed to the kernel (the start-up probe said so).
    pub fn build(cfg: &Config, ktls: bool) -> Result<Plan, RuntimeError> {
        let bufsize = cfg.global.bufsize();
        let mut certs = tls::Builder::new(ktls && cfg.global.ktls_allowed());
        let mut backends: HashMap<String, Arc<Backend>> = HashMap::new();
        let mut plan = Plan {
            binds: Vec::new(),
            backends: Vec::new(),
            not_served: Vec::new(),
            registry: Arc::new(Registry::from_config(cfg)),
            certs: tls::CertWatch::default(),
        };
        for fe in cfg.frontends() {
            if let Some(why) = not_served_reason(fe) {
                plan.not_served.push(format!(
                    "{} '{}' at {}: {why}",
                    fe.kind.keyword(),
                    fe.name,
                    fe.loc
                ));
                continue;
            }
            let limit = ConnLimit::new(fe.maxconn.or(cfg.global.maxconn));
            if fe.mode == Mode::Http {
                let service = http_service(cfg, fe, bufsize, &mut backends, &mut plan)?;
                plan.add_binds(fe, &service, &limit, &mut certs)?;
                continue;
            }
            let be_proxy = backend_of(cfg, fe)?;
            let backend = shared_backend(be_proxy, &mut backends, &mut plan)?;
            let frontend = Arc::new(Frontend {
                name: fe.name.clone(),
                backend,
                flow: FlowParams {
                    limits: flow_limits(&fe.timeouts, &be_proxy.timeouts),
                    bufsize,
                },
                dont_log_null: fe.options.dontlognull,
                conns: AtomicUsize::new(0),
                stats: plan.registry.frontend(&fe.name).unwrap_or_default(),
                access_log: AccessLog::for_proxy(fe),
            });
            plan.add_binds(fe, &Service::Tcp(frontend), &limit, &mut certs)?;
        }
        plan.certs = certs.watch();
        Ok(plan)
    }

    /// The HTTP room speaks HTTP/1.1 only: `h2` in a `mode http` bind's ALPN would make
    /// browsers talk HTTP/2 to it, so it is left out (they fall back to HTTP/1.1) and said.
    fn http_alpn(&mut self, fe: &Proxy, ssl: &SslBind, b: &Bind) -> SslBind {
        let mut ssl = ssl.clone();
        if fe.mode == Mode::Http && ssl.alpn.iter().any(|p| p == "h2") {
            ssl.alpn.retain(|p| p != "h2");
            self.not_served.push(format!(
                "bind {} at {}: alpn h2 left out, HTTP/2 is not served (clients use HTTP/1.1)",
                b.addr, b.loc
            ));
        }
        ssl
    }

    /// Certificates are loaded here, so a bad `crt` stops the start (and `-c`) with the bind's
    /// line. Both modes serve `ssl` binds: RTMPS in `mode tcp`, HTTPS/WSS in `mode http`.
    fn add_binds(
        &mut self,
        fe: &Proxy,
        service: &Service,
        limit: &Arc<ConnLimit>,
        certs: &mut tls::Builder,
    ) -> Result<(), RuntimeError> {
        for b in &fe.binds {
            let tls = match &b.ssl {
                None => None,
                Some(ssl) => {
                    if let Some(note) = tls::notes(ssl) {
                        self.not_served
                            .push(format!("bind {} at {}: {note}", b.addr, b.loc));
                    }
                    let ssl = &self.http_alpn(fe, ssl, b);
                    let timeout = fe.timeouts.client.unwrap_or(tls::DEFAULT_HANDSHAKE_TIMEOUT);
                    let acceptor = certs.acceptor(ssl, &b.loc, timeout).map_err(|e| match e {
                        tls::TlsError::Config { loc, reason } => RuntimeError::Plan { loc, reason },
                        other => RuntimeError::Plan {
                            loc: b.loc.clone(),
                            reason: other.to_string(),
                        },
                    })?;
                    Some(acceptor)
                }
            };
            self.binds.push(PlannedBind {
                addr: b.addr,
                loc: b.loc.clone(),
                service: service.clone(),
                limit: limit.clone(),
                tls,
            });
        }
        Ok(())
    }
}

/// One server set per backend, shared by every frontend (tcp or http) that uses it, so that
/// health state and connection counts are the backend's, not a frontend's.
fn shared_backend(
    be: &Proxy,
    backends: &mut HashMap<String, Arc<Backend>>,
    plan: &mut Plan,
) -> Result<Arc<Backend>, RuntimeError> {
    if let Some(b) = backends.get(&be.name) {
        return Ok(b.clone());
    }
    let b = Arc::new(backend_from(be, &plan.registry)?);
    backends.insert(be.name.clone(), b.clone());
    plan.backends.push((b.clone(), be.timeouts.check));
    Ok(b)
}

/// An HTTP frontend: its server sets, then its rules compiled by the HTTP room.
fn http_service(
    cfg: &Config,
    fe: &Proxy,
    bufsize: usize,
    backends: &mut HashMap<String, Arc<Backend>>,
    plan: &mut Plan,
) -> Result<Service, RuntimeError> {
    for name in http::backend_names(fe) {
        let be = cfg.proxy_backend(&name).ok_or_else(|| RuntimeError::Plan {
            loc: fe.loc.clone(),
            reason: format!("backend '{name}' not found"),
        })?;
        shared_backend(be, backends, plan)?;
    }
    // The registry's counters: the stats page reads what the sessions write.
    let frontend = http::Frontend::build(cfg, fe, bufsize, backends, &plan.registry);
    let frontend = frontend.map_err(|e| match e {
        http::HttpError::Config { loc, reason } => RuntimeError::Plan { loc, reason },
        other => RuntimeError::Plan {
            loc: fe.loc.clone(),
            reason: other.to_string(),
        },
    })?;
    Ok(Service::Http(Arc::new(frontend)))
}

/// Nothing is refused whole any more: TLS binds of `mode http` are skipped one by one in
/// `add_binds` (serving TLS as plain HTTP would be worse than not serving).
fn not_served_reason(_fe: &Proxy) -> Option<&'static str> {
    None
}

fn backend_of<'a>(cfg: &'a Config, fe: &'a Proxy) -> Result<&'a Proxy, RuntimeError> {
    if let Some(rule) = fe.use_backends.iter().find(|r| r.cond.is_some()) {
        return Err(RuntimeError::Plan {
            loc: rule.loc.clone(),
            reason: "conditional 'use_backend' in mode tcp is not supported yet".into(),
        });
    }
    let name = fe
        .use_backends
        .first()
        .map(|r| &r.backend)
        .or(fe.default_backend.as_ref());
    match name {
        Some(name) => cfg.proxy_backend(name).ok_or_else(|| RuntimeError::Plan {
            loc: fe.loc.clone(),
            reason: format!("backend '{name}' not found"),
        }),
        None if fe.kind.has_backend() => Ok(fe),
        None => Err(RuntimeError::Plan {
            loc: fe.loc.clone(),
            reason: "no backend to send traffic to".into(),
        }),
    }
}

/// The server set comes from the registry, so the stats page sees the set the data path and
/// the health checker use.
fn backend_from(p: &Proxy, registry: &Registry) -> Result<Backend, RuntimeError> {
    let set = registry
        .backend(&p.name)
        .unwrap_or_else(|| Arc::new(ServerSet::from_config(p)));
    let engine = engine_for(p)?;
    set.stats.set_engine(engine.name());
    Ok(Backend {
        set,
        connect_timeout: p.timeouts.connect,
        retries: p.retries,
        redispatch: p.options.redispatch,
        engine,
        history: FlowHistory::default(),
        conns: AtomicUsize::new(0),
    })
}

/// `forward-engine`: the forward room probes the kernel once and says which engine serves;
/// forcing an engine this kernel lacks is a config error rather than a silent fallback.
fn engine_for(p: &Proxy) -> Result<Engine, RuntimeError> {
    crate::forward::choose(p.engine).map_err(|reason| RuntimeError::Plan {
        loc: p.loc.clone(),
        reason,
    })
}

fn flow_limits(fe: &Timeouts, be: &Timeouts) -> IdleLimits {
    IdleLimits::from_timeouts(&Timeouts {
        client: fe.client,
        client_fin: fe.client_fin,
        server: be.server,
        server_fin: be.server_fin,
        tunnel: be.tunnel,
        ..Timeouts::default()
    })
}

/// HTTPS as the plan serves it: a `mode http` bind with `ssl` runs the HTTP session over the
/// TLS stream, with kTLS where the kernel has it. Rust peers on both sides (a rustls client,
/// a plain HTTP server), so the test also runs in `cargo xtask vmtest` (filter
/// `http_over_tls`), where `PROXY_REQUIRE_KTLS=1` makes a session the kernel did not take a
/// failure. On a host without kTLS it checks the userspace path.
#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};
    use sha2::{Digest, Sha256};

    use super::*;

    const BODY: usize = 6 << 20;

    fn body() -> Vec<u8> {
        (0..BODY as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    /// A certificate bundle for `site.test` (leaf, CA, key) and the roots that trust it.
    fn certificate() -> (String, RootCertStore) {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).expect("CA cert");
        let key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["site.test".to_string()])
            .expect("leaf params")
            .signed_by(&key, &ca, &ca_key)
            .expect("leaf cert");
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).expect("CA into roots");
        let bundle = format!("{}{}{}", leaf.pem(), ca.pem(), key.serialize_pem());
        (bundle, roots)
    }

    /// One HTTP/1.1 exchange as a server: returns the request head it got, after answering
    /// with `BODY` bytes of known length and closing.
    fn http_peer() -> (SocketAddr, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().expect("peer accept");
            s.set_read_timeout(Some(Duration::from_secs(60))).ok();
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut head = String::new();
            while !head.ends_with("\r\n\r\n") {
                if r.read_line(&mut head).unwrap_or(0) == 0 {
                    break;
                }
            }
            let mut w = s;
            let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
            let _ = w.write_all(answer.as_bytes());
            let _ = w.write_all(&body());
            head
        });
        (addr, h)
    }

    /// The proxy side: the plan of `cfg`, its one bind served for one connection.
    fn serve_one(cfg: &str) -> (SocketAddr, std::thread::JoinHandle<()>) {
        let cfg = crate::config::parse_str(cfg, std::path::Path::new("https.cfg")).expect("cfg");
        let plan = Plan::build(&cfg, crate::tls::ktls::support().available()).expect("plan");
        let bind = plan
            .binds
            .into_iter()
            .next()
            .expect("the HTTPS bind is opened");
        let (Service::Http(fe), Some(tls)) = (bind.service, bind.tls) else {
            panic!("an HTTP service behind TLS");
        };
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let h = std::thread::spawn(move || {
            let rt = compio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async move {
                let l = compio::net::TcpListener::from_std(l).expect("listener");
                let (s, peer) = l.accept().await.expect("accept");
                crate::http::run_tls_session(s, peer, fe, tls).await;
            });
        });
        (addr, h)
    }

    /// Reads one response (head, then exactly Content-Length bytes) from `tls`.
    fn response(tls: &mut impl Read) -> (String, Vec<u8>) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            tls.read_exact(&mut byte).expect("response head");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("content-length: ")
                    .or(l.strip_prefix("Content-Length: "))
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no Content-Length in {head}"));
        let mut body = vec![0u8; len];
        tls.read_exact(&mut body).expect("response body");
        (head, body)
    }

    #[test]
    fn http_over_tls_serves_bodies_byte_exact_with_ktls_where_available() {
        let ktls = crate::tls::ktls::support();
        let required = std::env::var("PROXY_REQUIRE_KTLS").is_ok_and(|v| v == "1");
        assert!(
            !required || ktls.available(),
            "kTLS required but {}",
            ktls.describe()
        );
        let (bundle, roots) = certificate();
        let dir = std::env::temp_dir().join(format!("proxy-https-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let crt = dir.join("site.pem");
        std::fs::write(&crt, bundle).expect("bundle");
        let (peer, peer_thread) = http_peer();
        let cfg = format!(
            "defaults\n mode http\n timeout connect 5s\n timeout client 60s\n timeout server 60s\n\
             frontend f\n bind 127.0.0.1:1 ssl crt {}\n \
             http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}\n \
             redirect scheme https if !{{ ssl_fc }}\n default_backend b\n\
             backend b\n server s {peer}\n",
            crt.display()
        );
        let kernel_before = crate::tls::ktls::KERNEL_SESSIONS.load(Ordering::Relaxed);
        let spliced_before = crate::http::SPLICED_BYTES.load(Ordering::Relaxed);
        let (addr, proxy_thread) = serve_one(&cfg);

        let client =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        let name = ServerName::try_from("site.test").expect("name");
        let mut conn = ClientConnection::new(Arc::new(client), name).expect("client");
        let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        tls.write_all(b"GET /seg0.ts HTTP/1.1\r\nHost: site.test\r\n\r\n")
            .expect("request");
        let (head, got) = response(&mut tls);
        assert!(head.starts_with("HTTP/1.1 200 "), "not redirected: {head}");
        assert_eq!(
            Sha256::digest(&got).to_vec(),
            Sha256::digest(body()).to_vec(),
            "{BODY} bytes through HTTPS"
        );
        let seen = peer_thread.join().expect("peer");
        assert!(
            seen.to_ascii_lowercase()
                .contains("\r\nx-forwarded-proto: https\r\n"),
            "{seen}"
        );
        tls.conn.send_close_notify();
        let _ = tls.flush();
        let mut rest = Vec::new();
        // The proxy answers our close_notify with its own (a clean end: Ok, not an error).
        let end = tls.read_to_end(&mut rest);
        assert!(
            end.is_ok() && rest.is_empty(),
            "{end:?} {} bytes",
            rest.len()
        );
        proxy_thread.join().expect("proxy session");
        if ktls.available() {
            let kernel_after = crate::tls::ktls::KERNEL_SESSIONS.load(Ordering::Relaxed);
            assert!(kernel_after > kernel_before, "the kernel took the session");
            // The kernel encrypts what enters the kTLS socket: the body was spliced into it
            // (all but what came with the response head, at most one buffer).
            let spliced = crate::http::SPLICED_BYTES.load(Ordering::Relaxed) - spliced_before;
            assert!(
                spliced >= (BODY - 16 * 1024) as u64,
                "spliced {spliced} of {BODY}"
            );
        }
    }
}
