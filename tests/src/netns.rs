//! Network namespaces a test makes (and always removes, on drop, also when it fails): a
//! topology of its own (routers, several proxy instances) without touching the host's
//! interfaces or routes. Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); without it the test
//! fails saying so.
//!
//! A process started from a thread inside a namespace ([`Netns::run`]) lives in it, and the
//! harness's readiness checks (`/proc/thread-self/net/tcp`) look there too, so the usual
//! helpers (`Proxy::start`, `NginxHttp::start`, `Conn::open`) work unchanged inside.

use std::fs::File;
use std::process::Command;

use nix::sched::{setns, CloneFlags};

use crate::util::require_tool;

pub struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace `NAME-PID` with its loopback up.
    pub fn new(name: &str) -> Netns {
        let name = format!("{name}-{}", std::process::id());
        let _ = Command::new(require_tool("ip"))
            .args(["netns", "del", &name])
            .output();
        let out = Command::new(require_tool("ip"))
            .args(["netns", "add", &name])
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "this test makes network namespaces and needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN): \
             `ip netns add {name}` said {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS…`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let out = Command::new(require_tool("ip"))
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip -n {} {}: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `sysctl -w KEY=VALUE` inside the namespace (its /proc/sys/net is its own).
    pub fn sysctl(&self, key: &str, value: &str) {
        self.run(|| {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            std::fs::write(&path, value).unwrap_or_else(|e| panic!("{path}: {e}"));
        });
    }

    /// Runs `f` on a thread that has entered the namespace; sockets and processes it makes
    /// live there.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A veth pair between two namespaces: `a_if` in `a` with `a_addr` (CIDR), `b_if` in `b`
/// with `b_addr`, both up.
pub fn link(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
    a.ip(&["addr", "add", a_addr, "dev", a_if]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["addr", "add", b_addr, "dev", b_if]);
    b.ip(&["link", "set", b_if, "up"]);
}
