//! Which lines go where: the global `log` targets take the process's own messages (besides
//! stderr), and each proxy's access lines go to its own targets (`log global` adds the global
//! ones). Resolved once at start into index lists, so sending a line is a lookup-free
//! `try_send` on the data path.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::{Config, LogDest, Mode, Proxy};

use super::sink::{Sink, TargetSpec};
use super::syslog::Sender;

/// Syslog severity of traffic lines, as HAProxy's (`info`).
const TRAFFIC: u8 = 6;

struct System {
    sink: Sink,
    /// The global targets less `stderr`, which prints process messages already.
    process: Arc<[usize]>,
    proxies: HashMap<String, Arc<[usize]>>,
    /// Proxies whose only target is the debug-mode stderr (`-d` without a `log` line).
    debug_only: HashSet<String>,
}

static SYSTEM: OnceLock<System> = OnceLock::new();

/// Opens every `log` target of `cfg` and starts the logger thread. Without any target this
/// does nothing: as in HAProxy, a proxy without `log` lines logs no traffic, unless the
/// process runs in debug mode (`-d`), where such a proxy's lines go to stderr through the
/// logger thread. Only the first call in a process has an effect.
pub fn start(cfg: &Config) -> io::Result<()> {
    if SYSTEM.get().is_some() {
        return Ok(());
    }
    let r = resolve(cfg, super::debug_mode());
    if r.specs.is_empty() {
        return Ok(());
    }
    let sink = Sink::start(r.specs, sender(cfg))?;
    let _ = SYSTEM.set(System {
        sink,
        process: r.process,
        proxies: r.proxies,
        debug_only: r.debug_only,
    });
    Ok(())
}

/// Every target in one table, and who sends to which (indexes into `specs`).
struct Resolved {
    specs: Vec<TargetSpec>,
    process: Arc<[usize]>,
    proxies: HashMap<String, Arc<[usize]>>,
    debug_only: HashSet<String>,
}

/// The global targets first, then each proxy's own; in debug mode a proxy with none gets
/// one raw stderr target (shared), so `-d` shows the traffic as before any `log` line.
fn resolve(cfg: &Config, debug: bool) -> Resolved {
    let mut specs: Vec<TargetSpec> = cfg
        .global
        .logs
        .iter()
        .map(TargetSpec::from_config)
        .collect();
    let global: Vec<usize> = (0..specs.len()).collect();
    let mut proxies = HashMap::new();
    let mut debug_target = None;
    let mut debug_only = HashSet::new();
    for p in &cfg.proxies {
        let mut mine: Vec<usize> = if p.log.global {
            global.clone()
        } else {
            Vec::new()
        };
        for t in &p.log.targets {
            mine.push(specs.len());
            specs.push(TargetSpec::from_config(t));
        }
        if debug && mine.is_empty() {
            mine.push(debug_stderr(&mut specs, &mut debug_target));
            debug_only.insert(p.name.clone());
        }
        proxies.insert(p.name.clone(), mine.into());
    }
    let process: Vec<usize> = global
        .iter()
        .copied()
        .filter(|&i| specs[i].dest != LogDest::Stderr)
        .collect();
    Resolved {
        specs,
        process: process.into(),
        proxies,
        debug_only,
    }
}

/// The index of the shared debug-mode stderr target, added on first use.
fn debug_stderr(specs: &mut Vec<TargetSpec>, at: &mut Option<usize>) -> usize {
    *at.get_or_insert_with(|| {
        specs.push(TargetSpec {
            dest: LogDest::Stderr,
            facility: 16,
            level: 7,
            minlevel: 0,
            format: super::Format::Raw,
            // Long request lines stay whole on a terminal.
            len: 64 * 1024,
        });
        specs.len() - 1
    })
}

/// `log-tag` or HAProxy's default tag, so syslog rules written for HAProxy
/// (`programname == haproxy`) keep matching after the switch.
fn sender(cfg: &Config) -> Sender {
    let tag = cfg
        .global
        .log_tag
        .clone()
        .unwrap_or_else(|| "haproxy".into());
    Sender {
        tag,
        pid: std::process::id(),
        hostname: hostname(),
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Waits up to `limit` for queued lines to be sent (at shutdown).
pub fn flush(limit: Duration) {
    if let Some(sys) = SYSTEM.get() {
        sys.sink.flush(limit);
    }
}

/// A process message for the global targets (stderr has it already).
pub(super) fn process_message(level: log::Level, text: &std::fmt::Arguments<'_>) {
    let Some(sys) = SYSTEM.get() else { return };
    if sys.process.is_empty() {
        return;
    }
    // HAProxy's severities for its own messages, matching the words the stderr logger prints.
    let severity = match level {
        log::Level::Error => 1,
        log::Level::Warn => 4,
        log::Level::Info => 5,
        log::Level::Debug | log::Level::Trace => 7,
    };
    sys.sink.send(&sys.process, severity, &text.to_string());
}

/// Which line a proxy logs, as HAProxy's options choose it: `option httplog` one line per
/// HTTP request, `option tcplog` one per session at its end, neither HAProxy's default format,
/// one `Connect from` line when a connection is accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LineFormat {
    #[default]
    Connect,
    Tcp,
    Http,
}

impl LineFormat {
    /// The format of `proxy`'s options. `option httplog` on a mode tcp proxy was turned into
    /// `tcplog` by the config room, as HAProxy does.
    pub fn of(proxy: &Proxy) -> LineFormat {
        let o = &proxy.options;
        match (proxy.mode, o.httplog, o.tcplog) {
            (Mode::Http, true, _) => LineFormat::Http,
            (_, _, true) | (_, true, _) => LineFormat::Tcp,
            _ => LineFormat::Connect,
        }
    }

    /// The whole line of the proxy's mode: what `-d` shows of a proxy that logs nowhere.
    fn full(proxy: &Proxy) -> LineFormat {
        match proxy.mode {
            Mode::Http => LineFormat::Http,
            Mode::Tcp => LineFormat::Tcp,
        }
    }
}

/// Where one proxy's access lines go. Cheap to clone; held by the data path's frontend.
#[derive(Clone, Debug, Default)]
pub struct AccessLog {
    to: Option<(Sink, Arc<[usize]>)>,
    format: LineFormat,
}

impl AccessLog {
    /// The targets of `proxy` as `start` resolved them; a proxy without any logs nothing.
    pub fn for_proxy(proxy: &Proxy) -> AccessLog {
        let mut format = LineFormat::of(proxy);
        let to = SYSTEM.get().and_then(|sys| {
            if sys.debug_only.contains(&proxy.name) {
                format = LineFormat::full(proxy);
            }
            let targets = sys.proxies.get(&proxy.name)?;
            (!targets.is_empty()).then(|| (sys.sink.clone(), targets.clone()))
        });
        AccessLog { to, format }
    }

    /// A handle on explicit targets (tests, and callers that manage their own sink).
    pub fn with_sink(sink: Sink, targets: Arc<[usize]>, format: LineFormat) -> AccessLog {
        AccessLog {
            to: Some((sink, targets)),
            format,
        }
    }

    /// Whether `format` lines sent here go anywhere: callers skip formatting what nobody logs.
    pub fn logs(&self, format: LineFormat) -> bool {
        self.to.is_some() && self.format == format
    }

    /// HAProxy's default-format line, for a proxy with neither `option tcplog` nor
    /// `option httplog`: `Connect from CLIENT to LOCAL (FRONTEND/MODE)`.
    pub fn connected(&self, client: SocketAddr, to: SocketAddr, proxy: &str, http: bool) {
        if self.logs(LineFormat::Connect) {
            let mode = if http { "HTTP" } else { "TCP" };
            self.send(format_args!(
                "Connect from {client} to {to} ({proxy}/{mode})"
            ));
        }
    }

    /// Sends one traffic line of the proxy's format; never blocks. Formats nothing when the
    /// proxy has no target or logs another format.
    pub fn send_as(&self, format: LineFormat, line: impl Display) {
        if self.format == format {
            self.send(line);
        }
    }

    /// Sends a line whatever the proxy's format: the one line a UDP flow gets when it ends
    /// (a `udp-lb` section has no `option tcplog`/`httplog` to choose between).
    pub fn send_flow_line(&self, line: impl Display) {
        self.send(line);
    }

    fn send(&self, line: impl Display) {
        if let Some((sink, targets)) = &self.to {
            sink.send(targets, TRAFFIC, &line.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(text: &str) -> Config {
        crate::config::parse_str(text, Path::new("t.cfg")).expect("valid config")
    }

    #[test]
    fn proxies_get_global_and_own_targets() {
        let c = cfg("
global
    log 127.0.0.1:5514 local0 info
    log-tag lb
frontend a
    bind :1
    log global
    log 127.0.0.2:5514 local1
    default_backend b
frontend c
    bind :2
    default_backend b
backend b
    server s 127.0.0.1:9
");
        let r = resolve(&c, false);
        assert_eq!(r.specs.len(), 2);
        assert_eq!(&*r.process, &[0]);
        assert_eq!(r.proxies.get("a").map(|t| t.to_vec()), Some(vec![0, 1]));
        assert_eq!(r.proxies.get("c").map(|t| t.to_vec()), Some(vec![]));
        assert_eq!(r.specs[1].facility, 17);
        assert_eq!(sender(&c).tag, "lb");
    }

    #[test]
    fn stderr_targets_do_not_repeat_process_messages() {
        let c = cfg("global\n    log stderr local0\n    log 127.0.0.1 local1\n");
        let r = resolve(&c, false);
        assert_eq!(r.specs.len(), 2);
        assert_eq!(&*r.process, &[1]);
    }

    #[test]
    fn only_debug_mode_gives_a_silent_proxy_stderr() {
        let c = cfg("global\n    log 127.0.0.1 local1\n\
             frontend quiet\n    bind :1\n    default_backend b\n\
             frontend talks\n    bind :2\n    log global\n    default_backend b\n\
             backend b\n    server s 127.0.0.1:9\n");
        let r = resolve(&c, false);
        assert!(
            r.proxies["quiet"].is_empty(),
            "no `log` line: no traffic lines"
        );
        assert_eq!(&*r.proxies["talks"], &[0]);
        let d = resolve(&c, true);
        let quiet = &d.proxies["quiet"];
        assert_eq!(quiet.len(), 1);
        assert_eq!(d.specs[quiet[0]].dest, LogDest::Stderr);
        assert_eq!(
            d.proxies["b"], d.proxies["quiet"],
            "one shared stderr target"
        );
        assert_eq!(
            &*d.proxies["talks"],
            &[0],
            "explicit targets are kept as they are"
        );
    }

    #[test]
    fn the_default_tag_is_haproxys() {
        let c = cfg("global\n    maxconn 10\n");
        let s = sender(&c);
        assert_eq!(s.tag, "haproxy");
        assert_eq!(s.pid, std::process::id());
    }

    #[test]
    fn access_lines_reach_the_proxys_target() {
        let listener = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let c = cfg(&format!(
            "frontend a\n    bind :1\n    log {} local0 info\n    default_backend b\n\
             backend b\n    server s 127.0.0.1:9\n",
            listener.local_addr().expect("addr")
        ));
        let r = resolve(&c, false);
        let sink = Sink::start(r.specs, sender(&c)).expect("sink");
        let log = AccessLog::with_sink(sink, r.proxies["a"].clone(), LineFormat::Tcp);
        log.send_as(
            LineFormat::Tcp,
            "127.0.0.1:5000 [x] a b/s 0/0/1 0 -- 1/1/1/1/0 0/0",
        );
        let mut buf = [0u8; 1024];
        let n = listener.recv(&mut buf).expect("a datagram");
        let line = String::from_utf8_lossy(&buf[..n]);
        assert!(line.starts_with("<134>"), "{line}");
        assert!(line.contains(" haproxy["), "{line}");
        assert!(line.ends_with("a b/s 0/0/1 0 -- 1/1/1/1/0 0/0\n"), "{line}");
    }
}
