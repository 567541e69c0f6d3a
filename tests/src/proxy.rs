//! The proxy under test, started from a config text.
//!
//! `E2E_PROXY=haproxy` runs HAProxy (`haproxy -db -f cfg`) in its place with the same config:
//! the reference implementation, to check that a test asserts what HAProxy does (or to see where
//! this proxy deliberately differs). `PROXY_BIN=/path` runs another build of the proxy.

use crate::process::{self, is_listening};
use crate::util::{require_tool, tail, workspace_root, TestDir};
use nix::sys::signal::Signal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// How long `Proxy::start` waits for every bind to listen: the sockmap probe verifies BPF
/// programs at start, which takes seconds of CPU on a loaded 2-core machine.
const READY_LIMIT: Duration = Duration::from_secs(30);
/// SIGTERM → SIGKILL grace on drop.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The proxy binary the tests run: `$PROXY_BIN` if set, else `proxy` next to the test binary's
/// profile folder (`<target>/debug/proxy` for `cargo test`, which also honours
/// `CARGO_TARGET_DIR`), else `<workspace>/target/debug/proxy`.
pub fn proxy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PROXY_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "PROXY_BIN={} does not exist", p.display());
        return p;
    }
    let mut candidates = Vec::new();
    // <target>/<profile>/deps/<test-binary>
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join("proxy"));
        }
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("debug").join("proxy"));
    }
    candidates.push(workspace_root().join("target").join("debug").join("proxy"));
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "the proxy binary is missing (looked at {}): run `cargo build -p proxy` \
         or `cargo xtask test`",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Which program plays the proxy: ours, or HAProxy as the reference (`E2E_PROXY=haproxy`).
fn proxy_command(cfg: &Path) -> Command {
    match std::env::var("E2E_PROXY").as_deref() {
        Ok("haproxy") => haproxy_command(cfg),
        Ok("") | Err(_) => {
            let mut c = Command::new(proxy_bin());
            // Debug mode: proxies without a `log` line print their traffic lines to stderr,
            // which the tests read (without `-d` they log nothing, as HAProxy).
            c.arg("-d").arg("-f").arg(cfg);
            c
        }
        Ok(other) => panic!("E2E_PROXY={other}: only `haproxy` (or unset) is known"),
    }
}

fn haproxy_command(cfg: &Path) -> Command {
    let mut c = Command::new(require_tool("haproxy"));
    c.arg("-db").arg("-f").arg(cfg);
    c
}

/// True when the tests run against HAProxy instead of this proxy.
pub fn is_reference_haproxy() -> bool {
    std::env::var("E2E_PROXY").as_deref() == Ok("haproxy")
}

/// A running proxy. Killed on drop (SIGTERM, then SIGKILL after a grace).
pub struct Proxy {
    child: Child,
    dir: TestDir,
    binds: Vec<SocketAddr>,
    status: Option<ExitStatus>,
}

impl Proxy {
    /// Writes `cfg` to a test folder, starts `proxy -f that.cfg` with stderr captured to a file,
    /// and waits until every `bind` address listens. Panics with the proxy's stderr if it exits
    /// or does not listen within 10 s.
    pub fn start(cfg: &str) -> Proxy {
        Proxy::start_with(cfg, &[])
    }

    /// As [`Proxy::start`], with extra command-line arguments (e.g. `--driver poll`).
    pub fn start_with(cfg: &str, args: &[&str]) -> Proxy {
        let mut p = Proxy::spawn_with(cfg, args);
        p.wait_ready();
        p
    }

    /// As [`Proxy::start_with`], with extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub fn start_with_env(cfg: &str, args: &[&str], env: &[(&str, &str)]) -> Proxy {
        let mut p = Proxy::spawn_program_env(cfg, args, env, &proxy_command);
        p.wait_ready();
        p
    }

    /// This proxy started through `wrapper` (a program and its arguments that end by running
    /// the command after them, e.g. `setpriv --bounding-set …`), with the usual `-d -f cfg`.
    pub fn start_wrapped(cfg: &str, wrapper: &[&str]) -> Proxy {
        let (program, wrapper_args) = wrapper.split_first().expect("a wrapper program");
        let build = |cfg: &Path| {
            let mut c = Command::new(program);
            c.args(wrapper_args)
                .arg(proxy_bin())
                .arg("-d")
                .arg("-f")
                .arg(cfg);
            c
        };
        let mut p = Proxy::spawn_program_env(cfg, &[], &[], &build);
        p.wait_ready();
        p
    }

    /// Starts the proxy without waiting for its listeners (for tests of start-up failures).
    pub fn spawn(cfg: &str) -> Proxy {
        Proxy::spawn_with(cfg, &[])
    }

    /// HAProxy itself, whatever `E2E_PROXY` says: a hop in front of the proxy under test, or a
    /// backend behind it, that speaks a protocol as the reference implementation does.
    pub fn start_haproxy(cfg: &str) -> Proxy {
        let mut p = Proxy::spawn_program(cfg, &[], &haproxy_command);
        p.wait_ready();
        p
    }

    /// HAProxy with extra arguments (`-x SOCKET`: take the listening sockets of a running
    /// process over its runtime API).
    pub fn start_haproxy_with(cfg: &str, args: &[&str]) -> Proxy {
        let mut p = Proxy::spawn_program(cfg, args, &haproxy_command);
        p.wait_ready();
        p
    }

    fn spawn_with(cfg: &str, args: &[&str]) -> Proxy {
        Proxy::spawn_program(cfg, args, &proxy_command)
    }

    fn spawn_program(cfg: &str, args: &[&str], program: &dyn Fn(&Path) -> Command) -> Proxy {
        Proxy::spawn_program_env(cfg, args, &[], program)
    }

    fn spawn_program_env(
        cfg: &str,
        args: &[&str],
        env: &[(&str, &str)],
        program: &dyn Fn(&Path) -> Command,
    ) -> Proxy {
        let dir = TestDir::new("proxy");
        let cfg_path = dir.join("proxy.cfg");
        std::fs::write(&cfg_path, cfg).expect("writing the proxy config");
        let stderr = std::fs::File::create(dir.join("stderr.log")).expect("creating stderr.log");
        let stdout = stderr.try_clone().expect("dup stderr.log");
        let child = program(&cfg_path)
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the proxy: {e}"));
        Proxy {
            child,
            binds: bind_addrs(cfg),
            dir,
            status: None,
        }
    }

    fn wait_ready(&mut self) {
        let pid = self.child.id();
        let start = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
                panic!(
                    "the proxy exited during start-up ({status}); config:\n{}\nstderr:\n{}",
                    self.config(),
                    self.stderr()
                );
            }
            let waiting: Vec<_> = self
                .binds
                .iter()
                .filter(|a| !is_listening(pid, **a))
                .collect();
            if waiting.is_empty() {
                return;
            }
            if start.elapsed() > READY_LIMIT {
                panic!(
                    "the proxy did not listen on {waiting:?} within {READY_LIMIT:?}; \
                     config:\n{}\nstderr:\n{}",
                    self.config(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first `bind` address of the config.
    pub fn addr(&self) -> SocketAddr {
        *self.binds.first().expect("the config has no bind line")
    }

    /// All `bind` addresses, in config order.
    pub fn binds(&self) -> &[SocketAddr] {
        &self.binds
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The proxy's own test folder (for files that live as long as it does).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("proxy.cfg")
    }

    pub fn config(&self) -> String {
        std::fs::read_to_string(self.config_path()).unwrap_or_default()
    }

    /// Everything the proxy wrote to stderr (and stdout) so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    pub fn signal(&mut self, sig: Signal) {
        process::signal(&mut self.child, sig);
    }

    /// Waits for the proxy to exit, at most `limit`; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = process::wait_timeout(&mut self.child, limit);
        }
        self.status
    }

    /// `None` while the proxy runs.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.wait_exit(Duration::ZERO)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.status = Some(process::terminate(&mut self.child, STOP_GRACE));
        }
        if std::thread::panicking() {
            eprintln!(
                "[e2e] proxy (pid {}, {}) stderr:\n{}",
                self.child.id(),
                self.status.map(|s| s.to_string()).unwrap_or_default(),
                tail(&self.stderr(), 8000)
            );
        }
    }
}

/// The listening addresses of a config: every `bind` line's address list (`a:p,b:q`).
/// A wildcard or empty host listens on all addresses; it is probed as 127.0.0.1.
pub fn bind_addrs(cfg: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in cfg.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next() != Some("bind") {
            continue;
        }
        let Some(list) = words.next() else { continue };
        for item in list.split(',') {
            let item = item.strip_prefix("ipv4@").unwrap_or(item);
            let Some((host, port)) = item.rsplit_once(':') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let ip = match host {
                "" | "*" | "0.0.0.0" => IpAddr::V4(Ipv4Addr::LOCALHOST),
                h => match h.trim_matches(['[', ']']).parse::<IpAddr>() {
                    Ok(ip) => ip,
                    Err(_) => continue,
                },
            };
            out.push(SocketAddr::new(ip, port));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_are_found() {
        let cfg = "frontend a\n    bind 127.0.0.1:1935 # rtmp\n    bind :5080,127.0.0.4:81\n\
                   backend b\n    server s 127.0.0.2:1 check\n";
        let got: Vec<String> = bind_addrs(cfg).iter().map(|a| a.to_string()).collect();
        assert_eq!(got, ["127.0.0.1:1935", "127.0.0.1:5080", "127.0.0.4:81"]);
    }
}
