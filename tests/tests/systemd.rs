//! Running under systemd: the `Type=notify` messages a service manager receives over
//! `$NOTIFY_SOCKET` (here a datagram socket the test binds, as systemd does), and the drop
//! to `user`/`group` that must keep the sockmap engine splicing flows.

use e2e::tcp::TcpServer;
use e2e::{free_addr, free_port, loopback, pump, Proxy, Signal, TestDir};
use std::net::Ipv4Addr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A bound on each wait for a message: start-up loads and verifies BPF programs, seconds of
/// CPU on a loaded 2-core machine. Never an assertion about speed.
const MESSAGE_LIMIT: Duration = Duration::from_secs(60);

fn tcp_cfg(port: u16, server: std::net::SocketAddr, global: &str, engine: &str) -> String {
    format!(
        "global\n    nbthread 2\n{global}
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    forward-engine {engine}
    server s1 {server}
"
    )
}

/// The manager's end: one datagram is one message, `KEY=VALUE` lines.
struct Manager {
    socket: UnixDatagram,
}

impl Manager {
    fn bind(addr: &SocketAddr) -> Manager {
        let socket = UnixDatagram::bind_addr(addr).expect("binding the notify socket");
        socket
            .set_read_timeout(Some(MESSAGE_LIMIT))
            .expect("read timeout");
        Manager { socket }
    }

    /// The next message's lines; panics (with the proxy's log) when none comes.
    fn next(&self, proxy: &Proxy, waiting_for: &str) -> Vec<String> {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no notify message ({waiting_for}) within {MESSAGE_LIMIT:?}: {e}\n{}",
                proxy.stderr()
            )
        });
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// READY=1 once the proxy listens, RELOADING=1 with MONOTONIC_USEC then READY=1 around a
/// SIGHUP, STOPPING=1 on SIGTERM, in that order and nothing in between.
fn notify_sequence(manager: &Manager, notify_socket: &str) {
    let server = TcpServer::start(free_addr(loopback(2)));
    let port = free_port(Ipv4Addr::LOCALHOST);
    let cfg = tcp_cfg(port, server.addr(), "", "copy");
    let mut proxy = Proxy::start_with_env(&cfg, &[], &[("NOTIFY_SOCKET", notify_socket)]);
    assert_eq!(manager.next(&proxy, "READY=1"), ["READY=1"]);
    // The listener answers once READY=1 was sent.
    pump(proxy.addr(), &server, 1000, 1000).assert_intact(1000, 1000);

    let before = monotonic_usec();
    proxy.signal(Signal::SIGHUP);
    let reloading = manager.next(&proxy, "RELOADING=1");
    assert_eq!(
        reloading.len(),
        2,
        "RELOADING=1 and MONOTONIC_USEC: {reloading:?}"
    );
    assert_eq!(reloading[0], "RELOADING=1");
    let stamp: u64 = reloading[1]
        .strip_prefix("MONOTONIC_USEC=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("MONOTONIC_USEC=<µs> expected: {reloading:?}"));
    assert!(
        stamp >= before && stamp <= monotonic_usec(),
        "MONOTONIC_USEC {stamp} is CLOCK_MONOTONIC taken at the reload (after {before})"
    );
    assert_eq!(
        manager.next(&proxy, "READY=1 after the reload"),
        ["READY=1"]
    );

    proxy.signal(Signal::SIGTERM);
    assert_eq!(manager.next(&proxy, "STOPPING=1"), ["STOPPING=1"]);
    let status = proxy.wait_exit(MESSAGE_LIMIT).expect("the proxy exits");
    assert!(status.success(), "clean exit after SIGTERM: {status}");
}

/// CLOCK_MONOTONIC in µs, the clock of MONOTONIC_USEC.
fn monotonic_usec() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    assert_eq!(r, 0, "clock_gettime");
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000
}

#[test]
fn notify_over_a_path_socket() {
    let dir = TestDir::new("notify");
    let path = dir.join("notify.sock");
    let manager = Manager::bind(&SocketAddr::from_pathname(&path).expect("path"));
    notify_sequence(&manager, path.to_str().expect("utf-8 path"));
}

/// systemd hands services in containers (and `systemd-run --user`) an abstract name, `@…`.
#[test]
fn notify_over_an_abstract_socket() {
    let name = format!("proxy-e2e-notify-{}", std::process::id());
    let manager = Manager::bind(&SocketAddr::from_abstract_name(name.as_bytes()).expect("name"));
    notify_sequence(&manager, &format!("@{name}"));
}

/// A field of /proc/PID/status (`Uid:`, `CapEff:`), its first value.
fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
        .to_string()
}

/// Capability numbers (linux/capability.h).
const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Started as root with `user nobody` / `group nogroup` and `forward-engine sockmap`: the
/// process runs as nobody, keeps exactly CAP_BPF, CAP_NET_ADMIN and CAP_NET_BIND_SERVICE, and
/// its flows are still redirected by the sockmap program (every byte, none copied).
#[test]
fn privilege_drop_keeps_sockmap_splicing() {
    drop_and_splice(None);
}

/// The same start with no more than the unit's `CapabilityBoundingSet=` (setpriv sets it, as
/// systemd would): binding, loading the BPF programs and the drop all work within it.
#[test]
fn unit_capability_bounding_set_is_enough() {
    let unit =
        std::fs::read_to_string(e2e::util::workspace_root().join("packaging/amsproxy.service"))
            .expect("the unit");
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit has CapabilityBoundingSet=")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let bounding = format!("-all,{}", caps.join(","));
    let setpriv = e2e::util::require_tool("setpriv");
    let setpriv = setpriv.to_str().expect("utf-8 path");
    drop_and_splice(Some(&[setpriv, "--bounding-set", &bounding]));
}

fn drop_and_splice(wrapper: Option<&[&str]>) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test starts the proxy as root to drop to 'nobody' and loads BPF programs: \
         run it as root (CI does)"
    );
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("passwd")
        .expect("Debian has a 'nobody' user");
    let server = TcpServer::start(free_addr(loopback(2)));
    let port = free_port(Ipv4Addr::LOCALHOST);
    let global = "    user nobody\n    group nogroup\n";
    let cfg = tcp_cfg(port, server.addr(), global, "sockmap");
    let proxy = match wrapper {
        None => Proxy::start_with_env(&cfg, &[], &[]),
        Some(w) => Proxy::start_wrapped(&cfg, w),
    };
    let pid = proxy.pid();

    assert_eq!(
        status_field(pid, "Uid:"),
        nobody.uid.to_string(),
        "real uid"
    );
    let effective = u64::from_str_radix(&status_field(pid, "CapEff:"), 16).expect("hex caps");
    let wanted = [CAP_BPF, CAP_NET_ADMIN, CAP_NET_BIND_SERVICE]
        .iter()
        .fold(0u64, |m, c| m | 1 << c);
    assert_eq!(
        effective, wanted,
        "effective capabilities after the drop: {effective:#x}, want {wanted:#x} \
         (CAP_SYS_ADMIN {} must be gone)",
        CAP_SYS_ADMIN
    );
    let bounding = u64::from_str_radix(&status_field(pid, "CapBnd:"), 16).expect("hex caps");
    assert_eq!(
        bounding, wanted,
        "nothing else can be regained (bounding set)"
    );

    const MIB: u64 = 1024 * 1024;
    for _ in 0..3 {
        pump(proxy.addr(), &server, 4 * MIB, 4 * MIB).assert_intact(4 * MIB, 4 * MIB);
    }
    let log = e2e::wait_until("the flows' sockmap lines", MESSAGE_LIMIT, || {
        let log = proxy.stderr();
        (log.matches("sockmap flow").count() >= 3).then_some(log)
    });
    assert!(
        log.contains("running as user 'nobody'"),
        "the drop is logged:\n{log}"
    );
    assert!(
        !log.contains("flow not registered"),
        "a flow fell back to copy after the drop:\n{log}"
    );
    for line in log.lines().filter(|l| l.contains("sockmap flow")) {
        let redirected = |after: &str| -> u64 {
            line.split(after)
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("byte counts in {line:?}"))
        };
        assert!(
            redirected(" up ") > 0 && redirected(" down ") > 0,
            "the kernel redirected both directions of this flow: {line}"
        );
    }
}
