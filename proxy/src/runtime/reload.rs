//! Reloading the configuration inside the running process (SIGHUP, SIGUSR2, the runtime
//! API's `reload`): the files are read and compiled again; a config with any problem, or a
//! new listener that cannot be bound, leaves the running plan as it is and names every
//! problem. Otherwise the new plan is swapped in: listeners kept, added or closed
//! (`listeners.rs`), frontends' counters and unchanged servers carried over by name (the
//! plan's registry), the health checker restarted on the new servers, certificates read
//! again. Established flows hold `Arc`s of the objects they started with and run to their
//! natural end; no second process is started, so none lingers.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::limit::ConnLimit;
use super::listeners::{Key, Listeners, Prepared};
use super::worker::Inbox;
use super::{driver, session_limit, DriverChoice, RuntimeError};
use crate::config::{Config, LogTarget, ProxyLog};
use crate::health::{self, CheckedBackend, Checker};
use crate::plan::{Plan, Registry};
use crate::tls::CertWatch;

/// What a reload changed, for its log line and the runtime API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub listeners_kept: Vec<Key>,
    pub listeners_added: Vec<Key>,
    pub listeners_closed: Vec<Key>,
    /// `backend/server` of servers carried as they were (state, counters, flows).
    pub servers_kept: Vec<String>,
    pub servers_added: Vec<String>,
    pub servers_removed: Vec<String>,
    /// Set when the `log` lines changed: they are not applied (see [`LogLines`]).
    pub logs_kept: bool,
}

impl fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs = |keys: &[Key]| {
            if keys.is_empty() {
                String::new()
            } else {
                let list: Vec<String> = keys.iter().map(|(a, _)| a.to_string()).collect();
                format!(" ({})", list.join(", "))
            }
        };
        write!(
            f,
            "listeners {} kept, {} added{}, {} closed{}; servers {} kept, {} added, {} removed",
            self.listeners_kept.len(),
            self.listeners_added.len(),
            addrs(&self.listeners_added),
            self.listeners_closed.len(),
            addrs(&self.listeners_closed),
            self.servers_kept.len(),
            self.servers_added.len(),
            self.servers_removed.len(),
        )?;
        if self.logs_kept {
            write!(
                f,
                "; log targets unchanged (restart to apply new `log` lines)"
            )?;
        }
        Ok(())
    }
}

/// A reload's outcome: the report, or every problem (`file:line: reason`) that kept the
/// running config.
pub type Outcome = Result<ReloadReport, Vec<String>>;

/// What the start hands over: how to read the config again, and the first plan's sockets.
pub(super) struct Start<'a> {
    pub files: &'a [PathBuf],
    pub ktls: bool,
    pub choice: DriverChoice,
    pub listeners: Listeners,
    pub prepared: Prepared,
}

/// What the running process serves and how to replace it. Shared by the control thread
/// (signals) and the runtime API; one reload runs at a time.
pub struct Reloader {
    files: Vec<PathBuf>,
    ktls: bool,
    choice: DriverChoice,
    state: Mutex<State>,
    registry: ArcSwap<Registry>,
    last: Mutex<Option<Outcome>>,
    /// Round-robin over the workers for adopted flows.
    next_worker: std::sync::atomic::AtomicUsize,
}

struct State {
    listeners: Listeners,
    inboxes: Vec<Arc<Inbox>>,
    checker: Option<Checker>,
    certs: CertWatch,
    global: Arc<ConnLimit>,
    logs: LogLines,
    /// The kernel's NAT for `forward-engine nat` frontends, once a plan had any.
    nat: Option<crate::nat::NatEngine>,
}

impl Reloader {
    /// Puts the first plan to work: its listeners (bound by [`Listeners::prepare`] before
    /// anything else started) go to the workers' inboxes and its checker starts.
    pub(super) fn start(
        first: Start<'_>,
        cfg: &Config,
        plan: Plan,
        inboxes: Vec<Arc<Inbox>>,
        global: Arc<ConnLimit>,
    ) -> Result<Reloader, RuntimeError> {
        let Start {
            files,
            ktls,
            choice,
            mut listeners,
            prepared,
        } = first;
        let nat = start_nat(None, &plan)?;
        listeners.commit(prepared, &plan, &inboxes);
        let checker = start_checker(&plan, choice)?;
        start_resolver(cfg, &plan, choice)?;
        Ok(Reloader {
            files: files.to_vec(),
            ktls,
            choice,
            registry: ArcSwap::new(plan.registry.clone()),
            state: Mutex::new(State {
                listeners,
                inboxes,
                checker: Some(checker),
                certs: plan.certs,
                global,
                logs: LogLines::of(cfg),
                nat,
            }),
            last: Mutex::new(None),
            next_worker: Default::default(),
        })
    }

    /// The stop of the nat engine, if one runs: its table leaves the kernel unless a newer
    /// process took it over.
    pub(super) fn stop_nat(&self) {
        if let Some(nat) = self.lock_state().nat.take() {
            nat.stop();
        }
    }

    /// Dups of the open listening sockets, for a binary upgrade to hand over.
    pub(super) fn listener_sockets(&self) -> Vec<(Key, std::net::TcpListener)> {
        self.lock_state().listeners.sockets()
    }

    /// The `mode tcp` frontend named `name` now serving: where an adopted flow resumes.
    pub(super) fn tcp_frontend(&self, name: &str) -> Option<Arc<crate::tcp::Frontend>> {
        self.lock_state().listeners.tcp_frontend(name)
    }

    /// Starts a flow taken over from the previous process on one of the workers, in turn.
    pub(super) fn adopt(
        &self,
        client: std::os::fd::OwnedFd,
        server: std::os::fd::OwnedFd,
        info: crate::tcp::handover::FlowInfo,
        fe: Arc<crate::tcp::Frontend>,
    ) {
        let state = self.lock_state();
        let mut slots = vec![state.global.take_over()];
        slots.extend(
            state
                .listeners
                .frontend_limit(&fe.name)
                .map(|l| l.take_over()),
        );
        let n = state.inboxes.len().max(1);
        let next = self
            .next_worker
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % n;
        if let Some(inbox) = state.inboxes.get(next) {
            inbox.send_flow(super::worker::AdoptedFlow {
                client,
                server,
                info,
                fe,
                slots,
            });
        }
    }

    /// The stop: the listening sockets are no longer kept for a hand-over.
    pub(super) fn release_listeners(&self) {
        self.lock_state().listeners.release_sockets();
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The registry of the plan now serving (stats, runtime API).
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.load_full()
    }

    /// A dup of every listening socket in force (the runtime API's `_getsocks`).
    pub fn listening_sockets(&self) -> Vec<std::os::fd::OwnedFd> {
        let sockets = self.lock_state().listeners.sockets();
        sockets.into_iter().map(|(_, s)| s.into()).collect()
    }

    /// The `maxconn` gate of frontend `name` in the plan in force.
    pub fn frontend_limit(&self, name: &str) -> Option<Arc<ConnLimit>> {
        self.lock_state().listeners.frontend_limit(name)
    }

    /// The certificate files of the plan in force.
    pub fn certificate_files(&self) -> Vec<std::path::PathBuf> {
        self.lock_state().certs.files()
    }

    /// The last reload's outcome; `None` before the first.
    pub fn last_outcome(&self) -> Option<Outcome> {
        self.lock_last().clone()
    }

    /// Reads and compiles the config files again and swaps the result in, or keeps the
    /// running plan and says why. Logs one summary line (or every problem) either way.
    pub fn reload(&self) -> Outcome {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // systemd (`Type=notify`) shows the unit reloading until READY=1 again.
        super::notify::reloading();
        let outcome = self.swap(&mut state);
        super::notify::ready();
        match &outcome {
            Ok(report) => log::info!("reload done: {report}"),
            Err(problems) => {
                for p in problems {
                    log::error!("reload refused: {p}");
                }
                log::error!(
                    "reload failed ({} problem(s)): the running configuration is kept",
                    problems.len()
                );
            }
        }
        *self.lock_last() = Some(outcome.clone());
        super::process::give_back_free_heap();
        outcome
    }

    /// Certificate files changed on disk (or `force`) are read again.
    pub fn check_certs(&self, force: bool) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.certs.check(force);
    }

    fn lock_last(&self) -> std::sync::MutexGuard<'_, Option<Outcome>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn swap(&self, state: &mut State) -> Outcome {
        let old = self.registry();
        let (cfg, plan) =
            super::load(&self.files, self.ktls, false, Some(&old)).map_err(problems)?;
        let prepared = state.listeners.prepare(&plan).map_err(problems)?;
        state.nat = start_nat(state.nat.take(), &plan).map_err(problems)?;
        let diff = state.listeners.commit(prepared, &plan, &state.inboxes);
        // The old checker's loops end before the new ones start: no server is checked twice.
        if let Some(c) = state.checker.take() {
            c.stop();
        }
        match start_checker(&plan, self.choice) {
            Ok(c) => state.checker = Some(c),
            Err(e) => log::error!("reload: the health checker cannot start: {e}"),
        }
        // The previous plan's resolver ends by itself once its server sets are dropped.
        if let Err(e) = start_resolver(&cfg, &plan, self.choice) {
            log::error!("reload: the DNS resolver cannot start: {e}");
        }
        let maxconn = session_limit(&cfg, &plan);
        state.global.set_max(Some(maxconn));
        plan.registry.process().set_maxconn(maxconn);
        let (servers_kept, servers_added, servers_removed) = server_diff(&old, &plan.registry);
        let logs = LogLines::of(&cfg);
        let logs_kept = logs != state.logs;
        if logs_kept {
            log::warn!(
                "reload: the `log` lines changed; the log targets opened at start stay in use \
                 (a restart applies the new ones)"
            );
        }
        for line in &plan.notes {
            log::warn!("{line}");
        }
        state.certs = plan.certs;
        self.registry.store(plan.registry);
        Ok(ReloadReport {
            listeners_kept: diff.kept,
            listeners_added: diff.added,
            listeners_closed: diff.removed,
            servers_kept,
            servers_added,
            servers_removed,
            logs_kept,
        })
    }
}

/// The nat engine for `plan`: `running` gets the plan's frontends (the kernel's table follows
/// within a tick; established flows stay as they are), or one starts for the first plan that
/// has nat frontends, probing the kernel.
fn start_nat(
    running: Option<crate::nat::NatEngine>,
    plan: &Plan,
) -> Result<Option<crate::nat::NatEngine>, RuntimeError> {
    match running {
        Some(engine) => {
            engine.update(plan.nat.clone());
            Ok(Some(engine))
        }
        None if plan.nat.is_empty() => Ok(None),
        None => Ok(Some(crate::nat::NatEngine::start(plan.nat.clone())?)),
    }
}

fn problems(e: RuntimeError) -> Vec<String> {
    match e {
        RuntimeError::Config(list) => list.iter().map(ToString::to_string).collect(),
        other => vec![other.to_string()],
    }
}

fn start_checker(plan: &Plan, choice: DriverChoice) -> Result<Checker, RuntimeError> {
    let checked = plan
        .checked
        .iter()
        .map(|c| CheckedBackend {
            servers: c.servers.clone(),
            timeout: c.timeout,
            connect_timeout: c.connect_timeout,
            http: c.http.clone(),
            response_limit: c.response_limit,
        })
        .collect();
    Ok(health::spawn_checker(checked, move || {
        driver::build_runtime(choice)
    })?)
}

/// The DNS resolver for the plan's servers that follow `resolvers` (none when no server
/// does).
fn start_resolver(cfg: &Config, plan: &Plan, choice: DriverChoice) -> Result<(), RuntimeError> {
    let sets: Vec<_> = plan.checked.iter().map(|c| c.servers.clone()).collect();
    crate::discovery::spawn(cfg, &sets, move || driver::build_runtime(choice))?;
    Ok(())
}

/// Servers of `new` carried from `old` (the same `Arc`), new ones, and those of `old` gone.
pub(super) fn server_diff(
    old: &Registry,
    new: &Registry,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let servers = |r: &Registry| {
        r.proxies()
            .iter()
            .filter_map(|p| p.backend.clone())
            .flat_map(|set| {
                set.servers()
                    .iter()
                    .map(|s| (format!("{}/{}", set.backend, s.name), s.clone()))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let (before, after) = (servers(old), servers(new));
    let carried = |s: &Arc<crate::upstream::Server>,
                   list: &[(String, Arc<crate::upstream::Server>)]| {
        list.iter().any(|(_, o)| Arc::ptr_eq(o, s))
    };
    let (mut kept, mut added, mut removed) = (Vec::new(), Vec::new(), Vec::new());
    for (name, s) in &after {
        if carried(s, &before) {
            kept.push(name.clone());
        } else {
            added.push(name.clone());
        }
    }
    for (name, s) in &before {
        if !carried(s, &after) {
            removed.push(name.clone());
        }
    }
    (kept, added, removed)
}

/// The `log` lines of a config. The log system opens its targets once, at start, and the
/// frontends' access-log handles point into it; a reload that changes them keeps the old
/// targets and says so, rather than half-applying them.
#[derive(Debug, PartialEq)]
struct LogLines {
    global: Vec<LogTarget>,
    tag: Option<String>,
    proxies: Vec<(String, ProxyLog)>,
}

impl LogLines {
    fn of(cfg: &Config) -> LogLines {
        LogLines {
            global: cfg.global.logs.clone(),
            tag: cfg.global.log_tag.clone(),
            proxies: cfg
                .proxies
                .iter()
                .filter(|p| p.log != ProxyLog::default())
                .map(|p| (p.name.clone(), p.log.clone()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(text: &str, previous: Option<&Registry>) -> Registry {
        let cfg = crate::config::parse_str(text, std::path::Path::new("r.cfg")).expect("cfg");
        match previous {
            Some(p) => Registry::from_config_keeping(&cfg, p),
            None => Registry::from_config(&cfg),
        }
    }

    const BEFORE: &str = "frontend f\n bind 127.0.0.1:1\n default_backend b\n\
                          backend b\n server a 127.0.0.1:2 check\n server c 127.0.0.1:3 check\n\
                          server d 127.0.0.1:4\n";

    #[test]
    fn servers_and_frontends_are_carried_by_name() {
        let old = registry(BEFORE, None);
        let a = old.backend("b").expect("b").servers()[0].clone();
        a.set_state(crate::upstream::ServerState::Down);
        let _flow = a.claim();
        old.frontend("f").expect("f").open_session();
        // c moves to another address, d gets a weight, e is new.
        let new = registry(
            "frontend f\n bind 127.0.0.1:1\n default_backend b\n\
             backend b\n server a 127.0.0.1:2 check\n server c 127.0.0.1:9 check\n\
             server d 127.0.0.1:4 weight 5\n server e 127.0.0.1:5\n",
            Some(&old),
        );
        let set = new.backend("b").expect("b");
        assert!(Arc::ptr_eq(&set.servers()[0], &a), "a is the same server");
        assert_eq!(set.servers()[0].current(), 1, "its established flow counts");
        assert_eq!(set.servers()[0].state(), crate::upstream::ServerState::Down);
        assert_eq!(set.servers()[2].weight(), 5, "d follows the new config");
        assert!(
            Arc::ptr_eq(
                &old.frontend("f").expect("f"),
                &new.frontend("f").expect("f")
            ),
            "frontend counters carried"
        );
        assert_eq!(new.process().start_ms, old.process().start_ms);
        let (kept, added, removed) = server_diff(&old, &new);
        assert_eq!(kept, ["b/a"]);
        assert_eq!(added, ["b/c", "b/d", "b/e"]);
        assert_eq!(removed, ["b/c", "b/d"]);
    }

    #[test]
    fn a_carried_down_server_stays_down_when_its_settings_change() {
        let old = registry(BEFORE, None);
        old.backend("b").expect("b").servers()[0].set_state(crate::upstream::ServerState::Down);
        let new = registry(
            "backend b\n server a 127.0.0.1:2 check weight 3\n",
            Some(&old),
        );
        let a = &new.backend("b").expect("b").servers()[0];
        assert_eq!(a.state(), crate::upstream::ServerState::Down);
        assert_eq!(a.weight(), 3);
    }

    #[test]
    fn log_lines_are_compared() {
        let parse =
            |t: &str| crate::config::parse_str(t, std::path::Path::new("l.cfg")).expect("cfg");
        let plain =
            parse("frontend f\n bind :1\n default_backend b\nbackend b\n server s 127.0.0.1:2\n");
        let more = parse("frontend f\n bind :1\n default_backend b\nbackend b\n server s 127.0.0.1:2\nbackend c\n server s 127.0.0.1:3\n");
        let logged = parse("global\n log 127.0.0.1:514 local0\nfrontend f\n bind :1\n log global\n default_backend b\nbackend b\n server s 127.0.0.1:2\n");
        assert_eq!(
            LogLines::of(&plain),
            LogLines::of(&more),
            "a section without logs"
        );
        assert_ne!(LogLines::of(&plain), LogLines::of(&logged));
    }
}
