//! Process lifecycle: worker threads (one compio runtime per core), listeners, signals,
//! graceful stop, privilege drop. This room never parses config.

mod control;
pub mod driver;
mod limit;
mod listen;
mod listeners;
mod notify;
mod privileges;
mod process;
mod reload;
mod signals;
pub mod upgrade;
mod worker;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::path::PathBuf;

use crate::config::{Config, ConfigError, Loc};
use crate::counters::PROCESS;
use crate::plan::{self, Plan, Registry};
use crate::stats::Pages;

pub use control::RuntimeControl;
pub use driver::DriverChoice;
pub use limit::ConnLimit;
pub use listeners::Key as ListenerKey;
pub use reload::{Outcome as ReloadOutcome, ReloadReport, Reloader};
use worker::{Inbox, Shutdown};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Every problem of the config, each as `file:line: reason`, one per line.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Config(Vec<ConfigError>),
    #[error("{loc}: cannot bind {addr}: {source}")]
    Bind {
        loc: Loc,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot drop privileges: {0}")]
    Privileges(String),
    #[error("cannot start: {0}")]
    Io(#[from] std::io::Error),
    #[error("signal handling: {0}")]
    Signal(#[from] nix::Error),
    #[error(transparent)]
    Api(#[from] crate::api::ApiError),
    #[error("binary upgrade: {0}")]
    Upgrade(#[from] upgrade::UpgradeError),
    #[error(transparent)]
    Nat(#[from] crate::nat::NatError),
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub driver: DriverChoice,
    /// `-x SOCKET`: take the listening sockets (and, with `-sf`, the flows) from the process
    /// serving on that hand-over socket.
    pub take_over: Option<PathBuf>,
    /// `-sf PID…`: processes told to finish (SIGUSR1) once this one serves.
    pub finish: Vec<i32>,
}

/// How often certificate files are checked for changes.
const CERT_POLL: Duration = Duration::from_secs(1);

/// Default for `hard-stop-after`: how long established flows may finish after a stop signal.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// The config files read and compiled in one pass: every problem of both stages, or the
/// config with its plan. `ktls`: whether TLS sessions may go to the kernel; `start_log`: start
/// the log system first (the frontends' access-log handles point into it), which a config
/// with problems never does; `previous`: on a reload, the running plan's registry, whose
/// counters and servers the new plan carries over.
fn load(
    files: &[PathBuf],
    ktls: bool,
    start_log: bool,
    previous: Option<&Registry>,
) -> Result<(Config, Plan), RuntimeError> {
    let (cfg, mut problems) = crate::config::load_partial(files);
    if start_log && problems.is_empty() {
        crate::log::start(&cfg)?;
    }
    let env = plan::Env {
        ktls,
        engines: crate::forward::probed(),
        pages: &|registry: Arc<Registry>| Arc::new(Pages::new(registry)),
        previous,
    };
    match plan::compile(&cfg, &env) {
        Ok(plan) if problems.is_empty() => Ok((cfg, plan)),
        Ok(_) => Err(RuntimeError::Config(problems)),
        Err(more) => {
            problems.extend(more.into_iter().map(ConfigError::from));
            problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
            problems.dedup();
            Err(RuntimeError::Config(problems))
        }
    }
}

/// Everything `run` would refuse before opening a socket: the `-c` check. `Ok` carries the
/// warnings the start would log (lines served differently from what they say, missing
/// timeouts).
pub fn check(files: &[PathBuf]) -> Result<Vec<String>, RuntimeError> {
    load(files, false, false, None).map(|(_, plan)| plan.notes)
}

/// Runs the proxy until a stop signal and the drain that follows; SIGHUP and SIGUSR2 reload
/// the config in place ([`Reloader`]).
pub fn run(files: &[PathBuf], opts: &RunOptions) -> Result<(), RuntimeError> {
    signals::block()?;
    let ktls = crate::tls::ktls::support().available();
    let (cfg, plan) = load(files, ktls, true, None)?;
    process::give_back_free_heap();
    let cfg = &cfg;
    match cfg.global.ulimit_n {
        Some(n) => process::set_file_limit(n)?,
        None => process::raise_file_limit(),
    }
    refuse_nat_without_root(cfg, &plan)?;
    let maxconn = session_limit(cfg, &plan);
    let workers = cfg
        .global
        .nbthread
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // Every bind is opened here, before any worker starts, so a port conflict stops the start
    // with the bind's line instead of leaving a half-started proxy. The workers find their
    // dups in their inboxes when they start.
    let (inherited, flows_conn) = match &opts.take_over {
        Some(path) => {
            let handover = upgrade::take_over(path)?;
            (handover.listeners, handover.flows)
        }
        None => Default::default(),
    };
    let mut listeners = listeners::Listeners::inheriting(inherited);
    let prepared = listeners.prepare(&plan)?;
    // Bound before chroot and the privilege drop, served once the workers run.
    let api = crate::api::bind(&cfg.global)?;
    let udp = listeners::start_udp(&plan)?;
    let inboxes: Vec<Arc<Inbox>> = (0..workers).map(|_| Arc::default()).collect();
    let global = ConnLimit::new(Some(maxconn));
    plan.registry.process().set_maxconn(maxconn);
    let _pidfile = cfg
        .global
        .pidfile
        .as_deref()
        .map(process::PidFile::write)
        .transpose()?;
    report_start(cfg, &plan, workers, opts.driver)?;
    let first = reload::Start {
        files,
        ktls,
        choice: opts.driver,
        listeners,
        prepared,
    };
    // Shared: the runtime API's `reload` calls the same function as the signals.
    let reloader = Arc::new(Reloader::start(
        first,
        cfg,
        plan,
        inboxes.clone(),
        global.clone(),
    )?);
    if let Some(dir) = &cfg.global.chroot {
        process::enter_chroot(dir)?;
    }
    privileges::drop_privileges(cfg.global.user.as_deref(), cfg.global.group.as_deref())?;
    if let Some(bytes) = cfg.global.sockmap_budget {
        crate::forward::set_sockmap_budget(bytes);
    }

    let stop = Arc::new(Shutdown::default());
    for (id, inbox) in inboxes.into_iter().enumerate() {
        let (stop, global, choice) = (stop.clone(), global.clone(), opts.driver);
        std::thread::Builder::new()
            .name(format!("worker-{id}"))
            .spawn(move || worker::run_worker(id, inbox, global, stop, choice))?;
    }
    let control = control::RuntimeControl::new(reloader.clone());
    let _api = api.serve(Arc::new(control))?;
    finish_old(opts, flows_conn, &reloader);
    notify::ready();
    let stopped = wait_for_stop(
        &stop,
        cfg.global.hard_stop_after.unwrap_or(DEFAULT_GRACE),
        &reloader,
    );
    udp.stop();
    reloader.stop_nat();
    crate::log::flush(Duration::from_millis(500));
    stopped
}

/// The nat engine runs nft(8) whenever a table changes, which needs CAP_NET_ADMIN in that
/// program: a process that dropped to another `user` would keep serving with a table it
/// can no longer change, so the start is refused instead.
fn refuse_nat_without_root(cfg: &Config, plan: &Plan) -> Result<(), RuntimeError> {
    if plan.nat.is_empty() || (cfg.global.user.is_none() && cfg.global.group.is_none()) {
        return Ok(());
    }
    Err(crate::nat::NatError::Probe(
        "'user'/'group' in global: the nat engine rewrites its nftables table with nft(8)          for as long as it runs and needs root for it; remove them to use forward-engine nat"
            .to_string(),
    )
    .into())
}

/// `-sf`: the old processes stop accepting (SIGUSR1, their soft stop) and, with `-x`, hand
/// over their flows; what cannot move they finish within their `hard-stop-after`.
fn finish_old(
    opts: &RunOptions,
    flows_conn: Option<std::os::unix::net::UnixStream>,
    reloader: &Reloader,
) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    for &pid in &opts.finish {
        if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGUSR1) {
            log::warn!("-sf {pid}: cannot signal it: {e}");
        }
    }
    let (Some(path), false) = (&opts.take_over, opts.finish.is_empty()) else {
        return;
    };
    match upgrade::adopt_flows(flows_conn, path, reloader) {
        Ok(_) => {}
        Err(upgrade::UpgradeError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            log::info!("upgrade: the old process had no flow left to hand over")
        }
        Err(e) => log::warn!("upgrade: flows not taken over ({e}); the old process finishes them"),
    }
}

/// Descriptors one flow may hold: its two sockets, and two pipes (four descriptors) where a
/// flow may be spliced (the splice engine, `auto`'s bulk flows, large HTTP bodies).
fn fds_per_flow(plan: &Plan) -> u64 {
    let splice_here = crate::forward::probed().splice.is_ok();
    let may_splice = plan.binds.iter().any(|b| match &b.service {
        plan::Service::Tcp(fe) => matches!(
            fe.backend.engine,
            crate::forward::Engine::Splice | crate::forward::Engine::Auto
        ),
        plan::Service::Http(_) => true,
    });
    if splice_here && may_splice {
        6
    } else {
        2
    }
}

/// The process's session limit: `maxconn`, or what the open-file limit allows at the
/// descriptors a flow needs here. A configured `maxconn` the limit cannot carry is said at
/// start; the accept loop then stops at `maxconn` while splice falls back to copy for flows
/// that find no pipe.
fn session_limit(cfg: &Config, plan: &Plan) -> u32 {
    let per_flow = fds_per_flow(plan);
    let limit = process::file_limit();
    let fits = process::maxconn_for(limit, per_flow);
    match cfg.global.maxconn {
        None => fits,
        Some(m) if m > fits => {
            log::warn!(
                "maxconn {m} needs about {} open files ({per_flow} per flow here) but the limit \
                 is {limit}: beyond about {fits} flows splice falls back to copy and new \
                 connections may be refused; raise ulimit-n or the hard limit \
                 (LimitNOFILE= in a systemd unit)",
                u64::from(m) * per_flow + process::RESERVED_FDS
            );
            m
        }
        Some(m) => m,
    }
}

fn report_start(
    cfg: &Config,
    plan: &Plan,
    workers: usize,
    choice: DriverChoice,
) -> Result<(), RuntimeError> {
    let probe = driver::build_runtime(choice)?;
    let uring = probe.driver_type().is_iouring();
    let info = plan.registry.process();
    info.set_threads(workers);
    info.set_driver(if uring { "io_uring" } else { "epoll" });
    info.set_features(vec![
        ("io_uring", uring),
        ("ktls", crate::tls::ktls::support().available()),
    ]);
    log::info!(
        "proxy {} starting: {workers} worker(s), event driver {}, {}, {}",
        env!("CARGO_PKG_VERSION"),
        driver::driver_name(probe.driver_type()),
        crate::forward::summary(),
        crate::tls::ktls::support().describe(),
    );
    if let Some(dir) = &cfg.global.chroot {
        log::info!(
            "chroot {}: certificate reloads read their files inside it",
            dir.display()
        );
    }
    for b in &plan.binds {
        log::info!(
            "frontend {} listening on {}{}{}{} -> {}",
            b.service.name(),
            b.addr,
            b.name
                .as_ref()
                .map(|n| format!(" (bind {n})"))
                .unwrap_or_default(),
            if b.accept_proxy.is_some() {
                " (accept-proxy)"
            } else {
                ""
            },
            b.tls
                .as_ref()
                .map(|t| format!(" ({})", t.describe()))
                .unwrap_or_default(),
            b.service.destination()
        );
    }
    for fe in &plan.nat {
        log::info!("{}", fe.describe());
    }
    for line in &plan.notes {
        log::warn!("{line}");
    }
    Ok(())
}

/// Live client connections, both modes, counted from their accept on.
fn session_count() -> usize {
    PROCESS
        .sessions()
        .max(PROCESS.accepted.load(Ordering::Relaxed))
}

/// After the stop: until every accept loop has seen it (bounded by `deadline`). A loop may be
/// taking a connection as the stop comes; once the loop ends, that connection is counted.
fn wait_accept_loops(deadline: Instant) {
    while PROCESS.accept_loops.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Blocks on signals. The first stop signal closes the listeners and lets sessions finish for
/// up to `grace`; a second one, or the end of the grace period, ends the process at once.
fn wait_for_stop(
    stop: &Shutdown,
    grace: Duration,
    reloader: &Reloader,
) -> Result<(), RuntimeError> {
    // Certificates are polled for changes (certbot renewals) between signals; SIGHUP and
    // SIGUSR2 reload the whole config, certificates included.
    loop {
        match signals::poll(CERT_POLL)? {
            Some(signals::Request::Stop) => break,
            Some(signals::Request::Reload(name)) => {
                log::info!("{name}: reloading the configuration");
                let _ = reloader.reload();
            }
            None => reloader.check_certs(false),
        }
    }
    notify::stopping();
    reloader.release_listeners();
    stop.trigger();
    let deadline = Instant::now() + grace;
    wait_accept_loops(deadline);
    log::info!(
        "stopping: listeners closed, {} session(s) may finish within {grace:?}",
        session_count()
    );
    while session_count() > 0 && Instant::now() < deadline {
        if signals::poll(Duration::from_millis(100))? == Some(signals::Request::Stop) {
            log::warn!(
                "second stop signal: exiting now with {} session(s) open",
                session_count()
            );
            return Ok(());
        }
    }
    let left = session_count();
    if left > 0 {
        log::warn!("grace period over: closing {left} session(s)");
    }
    upgrade::report_exit(left);
    Ok(())
}
