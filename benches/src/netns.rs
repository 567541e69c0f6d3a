//! The namespace scenarios' topology (issue #19): client, balancer and backend each in a
//! network namespace of their own, joined by two veth pairs, so that traffic crosses a real
//! routed hop instead of loopback:
//!
//! ```text
//! client 10.77.1.1 ── veth ── 10.77.1.2 balancer 10.77.2.1 ── veth ── 10.77.2.2 backend
//! ```
//!
//! The client and the backend route everything through the balancer, and the balancer
//! forwards (`ip_forward=1`), so the `routing` variant connects to the backend's address
//! directly and the packets cross the balancer without a process touching them. The same
//! commands as the e2e tests' namespaces (`ip netns`, `ip link … type veth`), copied here
//! because the bench does not depend on the test crate. Made per run and removed on drop,
//! also when the run fails; needs root.

use crate::error::{BenchError, Result};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::process::Command;

/// The balancer's address on the client side: hops listen here.
pub const FRONT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 1, 2));
/// The backend's address.
pub const BACK_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 2, 2));

/// One named network namespace, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace `NAME-PID` with its loopback up.
    pub fn new(name: &str) -> Result<Netns> {
        let name = format!("{name}-{}", std::process::id());
        // A namespace left by a bench that was killed: its name is ours to reuse.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]).map_err(|e| {
            BenchError::Run(format!(
                "the namespace scenarios make network namespaces and need root \
                 (CAP_SYS_ADMIN, CAP_NET_ADMIN): {e}"
            ))
        })?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS…`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs `f` on a thread that has entered the namespace: sockets it makes, processes it
    /// starts and threads it spawns (which inherit the namespace and the CPU pinning of the
    /// calling thread) live there.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).map_err(|e| BenchError::io(path.clone(), e))?;
                // SAFETY: setns(2) on an open namespace file; it changes only this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    let e = std::io::Error::last_os_error();
                    return Err(BenchError::io(format!("setns {path}"), e));
                }
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(BenchError::Run(format!("a thread in {path} panicked"))))
        })
    }

    /// `sysctl -w KEY=VALUE` inside the namespace (its /proc/sys/net is its own).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(|| std::fs::write(&path, value).map_err(|e| BenchError::io(path.clone(), e)))
    }
}

impl Drop for Netns {
    /// The veth ends inside go with it; the namespace itself goes once the last socket and
    /// process in it are gone.
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| BenchError::io("run ip (iproute2)", e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(BenchError::Run(format!(
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// A veth pair: `a_if` in `a` with `a_addr` (CIDR), `b_if` in `b` with `b_addr`, both up.
fn link(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) -> Result<()> {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ])?;
    a.ip(&["addr", "add", a_addr, "dev", a_if])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["addr", "add", b_addr, "dev", b_if])?;
    b.ip(&["link", "set", b_if, "up"])
}

/// Client, balancer, backend. Field order is drop order: the namespaces go last-made first.
pub struct Topology {
    pub client: Netns,
    pub balancer: Netns,
    pub backend: Netns,
}

impl Topology {
    pub fn new() -> Result<Topology> {
        let t = Topology {
            client: Netns::new("nsb-client")?,
            balancer: Netns::new("nsb-lb")?,
            backend: Netns::new("nsb-backend")?,
        };
        link(
            &t.client,
            "cl0",
            "10.77.1.1/24",
            &t.balancer,
            "lb-cl",
            "10.77.1.2/24",
        )?;
        link(
            &t.balancer,
            "lb-be",
            "10.77.2.1/24",
            &t.backend,
            "be0",
            "10.77.2.2/24",
        )?;
        t.client
            .ip(&["route", "add", "default", "via", "10.77.1.2"])?;
        t.backend
            .ip(&["route", "add", "default", "via", "10.77.2.1"])?;
        // Every variant runs with forwarding on, so that only the hop differs between runs:
        // routing needs it, nat may, and the proxies do not care.
        t.balancer.sysctl("net.ipv4.ip_forward", "1")?;
        Ok(t)
    }
}
