//! dnsmasq (Debian's `dnsmasq-base`) as the DNS server the proxy's `resolvers` ask: A records
//! from a hosts file the test rewrites (`set_hosts`, then SIGHUP makes dnsmasq read it again)
//! and SRV records from the command line (changing those means [`Dnsmasq::restart`]).

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::{self, kill_now};
use crate::util::{require_tool, wait_until, TestDir};

pub struct Dnsmasq {
    addr: SocketAddr,
    dir: TestDir,
    srv: Vec<String>,
    child: Option<Child>,
}

impl Dnsmasq {
    /// Starts dnsmasq on `addr` (UDP) serving the `hosts` text (`IP NAME` lines) and the
    /// `--srv-host` values in `srv` (`_svc._tcp.name,target,port,priority,weight`), with a
    /// TTL of 1 s on every answer.
    pub fn start(addr: SocketAddr, hosts: &str, srv: &[&str]) -> Dnsmasq {
        let mut d = Dnsmasq {
            addr,
            dir: TestDir::new("dnsmasq"),
            srv: srv.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        d.set_hosts(hosts);
        d.spawn();
        d
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn spawn(&mut self) {
        let bin = require_tool("dnsmasq");
        let mut cmd = Command::new(bin);
        cmd.arg("--keep-in-foreground")
            .arg("--conf-file=/dev/null")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--bind-interfaces")
            .arg(format!("--listen-address={}", self.addr.ip()))
            .arg(format!("--port={}", self.addr.port()))
            .arg(format!("--addn-hosts={}", self.dir.join("hosts").display()))
            .arg("--local-ttl=1")
            .arg("--pid-file=")
            .arg("--user=root")
            .arg(format!(
                "--log-facility={}",
                self.dir.join("dnsmasq.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for s in &self.srv {
            cmd.arg(format!("--srv-host={s}"));
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dnsmasq: {e}"));
        self.child = Some(child);
        let addr = self.addr;
        wait_until("dnsmasq answers", Duration::from_secs(10), || {
            answers(addr).then_some(())
        });
    }

    /// Rewrites the hosts file and tells a running dnsmasq to read it again.
    pub fn set_hosts(&mut self, hosts: &str) {
        std::fs::write(self.dir.join("hosts"), hosts).expect("write hosts file");
        if let Some(child) = self.child.as_mut() {
            process::signal(child, nix::sys::signal::Signal::SIGHUP);
        }
    }

    /// Stops dnsmasq and starts it again on the same address with other SRV records.
    pub fn restart(&mut self, srv: &[&str]) {
        if let Some(mut c) = self.child.take() {
            kill_now(&mut c);
        }
        self.srv = srv.iter().map(|s| s.to_string()).collect();
        self.spawn();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_now(&mut c);
        }
    }
}

/// Whether something answers a DNS query (any answer) on `addr`.
fn answers(addr: SocketAddr) -> bool {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    // A query for `.` type NS, id 0x4242, by hand: the harness only probes readiness.
    let query = [
        0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1,
    ];
    if sock.send_to(&query, addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(sock.recv_from(&mut buf), Ok((n, _)) if n >= 12 && buf[..2] == [0x42, 0x42])
}
