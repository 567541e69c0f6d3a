//! The registry: every proxy of the config with the live objects the data path updates. Built
//! with the plan, before any worker runs, and never changed afterwards, so readers (the stats
//! page, the exporter) walk it without locks while sessions bump the same atomics.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::config::{Balance, Config, Mode, Proxy, ProxyKind, ServerParams};
use crate::counters::{Counters, ProcessInfo};
use crate::upstream::ServerSet;

/// One `frontend`, `backend` or `listen` section.
#[derive(Debug)]
pub struct ProxyEntry {
    pub name: String,
    /// HAProxy's `iid`: `id N`, else the position in the config, from 1.
    pub id: u32,
    /// `description TEXT`.
    pub description: Option<String>,
    pub kind: ProxyKind,
    pub mode: Mode,
    pub balance: Balance,
    /// Session limit of the frontend side (`maxconn` of the section, else the global one).
    pub maxconn: Option<u32>,
    /// The limit in force: `maxconn`, or what the runtime API's `set maxconn frontend` set
    /// (0: none).
    live_maxconn: AtomicU32,
    /// Session limit shown for the backend side: HAProxy's default `fullconn`, a tenth of the
    /// limits of the frontends that can send traffic here.
    pub fullconn: Option<u32>,
    /// Counters of the frontend side, shared with the data path's frontend.
    pub frontend: Option<Arc<Counters>>,
    /// Servers of the backend side, shared with the data path's backend and the checker.
    pub backend: Option<Arc<ServerSet>>,
    /// The section's `default-server` settings, for servers added at run time.
    pub default_server: ServerParams,
}

#[derive(Debug, Default)]
pub struct Registry {
    proxies: Vec<ProxyEntry>,
    process: ProcessInfo,
}

impl ProxyEntry {
    /// The frontend's session limit now (the stats' `slim`).
    pub fn frontend_limit(&self) -> Option<u32> {
        Some(self.live_maxconn.load(Ordering::Relaxed)).filter(|n| *n > 0)
    }

    /// Records a limit the runtime changed (the gate itself lives in the runtime).
    pub fn set_frontend_limit(&self, n: u32) {
        self.live_maxconn.store(n, Ordering::Relaxed);
    }
}

impl Registry {
    /// One entry per section, with fresh counters and server sets the plan then hands to the
    /// data path (`frontend`, `backend`), so both sides share the same atomics.
    pub fn from_config(cfg: &Config) -> Registry {
        Registry::build(cfg, None)
    }

    /// A reload's registry: frontends of `previous` with the same name keep their counters,
    /// backends their servers as [`ServerSet::from_config_keeping`] carries them, and the
    /// process facts (start time, threads, driver, probes) stay.
    pub fn from_config_keeping(cfg: &Config, previous: &Registry) -> Registry {
        Registry::build(cfg, Some(previous))
    }

    fn build(cfg: &Config, previous: Option<&Registry>) -> Registry {
        let frontend = |p: &Proxy| {
            previous
                .and_then(|r| r.frontend(&p.name))
                .unwrap_or_default()
        };
        let backend = |p: &Proxy| match previous.and_then(|r| r.backend(&p.name)) {
            Some(set) => Arc::new(ServerSet::from_config_keeping(p, &set)),
            None => Arc::new(ServerSet::from_config(p)),
        };
        let proxies = cfg
            .proxies
            .iter()
            .enumerate()
            .map(|(i, p)| ProxyEntry {
                name: p.name.clone(),
                id: p
                    .id
                    .unwrap_or_else(|| u32::try_from(i + 1).unwrap_or(u32::MAX)),
                description: p.description.clone(),
                kind: p.kind,
                mode: p.mode,
                balance: p.balance,
                maxconn: p.maxconn.or(cfg.global.maxconn),
                live_maxconn: AtomicU32::new(p.maxconn.or(cfg.global.maxconn).unwrap_or(0)),
                fullconn: p.kind.has_backend().then(|| fullconn(cfg, p)).flatten(),
                frontend: p.kind.has_stats_rows().0.then(|| frontend(p)),
                backend: p.kind.has_stats_rows().1.then(|| backend(p)),
                default_server: p.default_server.clone(),
            })
            .collect();
        let registry = Registry {
            proxies,
            process: previous.map_or_else(ProcessInfo::default, |r| r.process.carried()),
        };
        registry
            .process
            .set_identity(cfg.global.node.clone(), cfg.global.description.clone());
        // A reload keeps the running workers, whatever a changed `nbthread` says.
        if let (Some(n), None) = (cfg.global.nbthread, previous) {
            registry.process.set_threads(n);
        }
        if let Some(n) = cfg.global.maxconn {
            registry.process.set_maxconn(n);
        }
        registry
    }

    pub fn proxies(&self) -> &[ProxyEntry] {
        &self.proxies
    }

    pub fn proxy(&self, name: &str) -> Option<&ProxyEntry> {
        self.proxies.iter().find(|p| p.name == name)
    }

    /// The frontend counters of a `frontend`/`listen` section.
    pub fn frontend(&self, name: &str) -> Option<Arc<Counters>> {
        self.proxy(name).and_then(|p| p.frontend.clone())
    }

    /// The server set of a `backend`/`listen` section.
    pub fn backend(&self, name: &str) -> Option<Arc<ServerSet>> {
        self.proxy(name).and_then(|p| p.backend.clone())
    }

    pub fn process(&self) -> &ProcessInfo {
        &self.process
    }
}

/// A tenth of the summed `maxconn` of the frontends routing to `backend` (at least 1); `None`
/// when none routes there or one of them has no known limit.
fn fullconn(cfg: &Config, backend: &Proxy) -> Option<u32> {
    let mut sum: u64 = 0;
    let mut any = false;
    for fe in cfg.frontends().filter(|fe| routes_to(fe, &backend.name)) {
        sum += u64::from(fe.maxconn.or(cfg.global.maxconn)?);
        any = true;
    }
    any.then(|| u32::try_from((sum / 10).max(1)).unwrap_or(u32::MAX))
}

fn routes_to(fe: &Proxy, backend: &str) -> bool {
    let named = fe.default_backend.as_deref() == Some(backend)
        || fe.use_backends.iter().any(|u| u.backend == backend);
    let itself = fe.name == backend && fe.default_backend.is_none() && fe.use_backends.is_empty();
    named || itself
}

/// A small config the registry's and the stats room's tests share: a stats `listen`, an RTMP
/// frontend and its backend of two servers.
#[cfg(test)]
pub(crate) const TEST_CONFIG: &str = "
global
    maxconn 2000
    nbthread 2

listen stats
    bind :6080
    mode http
    stats enable
    stats hide-version
    stats realm Haproxy\\ Statistics
    stats uri /haproxy_stats
    stats auth Username:Password

frontend rtmp_lb
    bind *:1935
    mode tcp
    default_backend backend_rtmp

backend backend_rtmp
    mode tcp
    server ams1 172.30.0.42:1935 check
    server ams2 172.30.0.48:1935 check
";

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        crate::config::parse_str(TEST_CONFIG, std::path::Path::new("test.cfg"))
            .expect("valid config")
    }

    #[test]
    fn every_section_gets_its_sides() {
        let reg = Registry::from_config(&config());
        let kinds: Vec<_> = reg
            .proxies()
            .iter()
            .map(|p| (p.name.as_str(), p.frontend.is_some(), p.backend.is_some()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("stats", true, true),
                ("rtmp_lb", true, false),
                ("backend_rtmp", false, true)
            ]
        );
        assert_eq!(reg.proxy("rtmp_lb").map(|p| p.id), Some(2));
        assert_eq!(reg.proxy("rtmp_lb").and_then(|p| p.maxconn), Some(2000));
        assert_eq!(
            reg.proxy("backend_rtmp").and_then(|p| p.fullconn),
            Some(200)
        );
        assert_eq!(reg.proxy("stats").and_then(|p| p.fullconn), Some(200));
        assert_eq!(reg.proxy("rtmp_lb").and_then(|p| p.fullconn), None);
        let set = reg.backend("backend_rtmp").expect("backend");
        assert_eq!(set.servers().len(), 2);
        assert!(reg.backend("rtmp_lb").is_none());
        assert!(reg.frontend("nope").is_none());
    }

    #[test]
    fn handles_are_shared_not_copied() {
        let reg = Registry::from_config(&config());
        let a = reg.frontend("rtmp_lb").expect("frontend");
        let b = reg.frontend("rtmp_lb").expect("frontend");
        assert!(Arc::ptr_eq(&a, &b));
        let _s = a.open_session();
        assert_eq!(b.current.load(Ordering::Relaxed), 1);
    }
}
