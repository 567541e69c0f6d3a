//! dnsmasq (Debian's `dnsmasq-base`, installed by `cargo xtask setup`) as the DNS server the
//! hops' `resolvers` ask in the `dns-change` scenario: A records from a hosts file the bench
//! rewrites, then SIGHUP makes dnsmasq read it again. Every answer carries a TTL of 1 s.

use crate::error::{BenchError, Result};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// How long dnsmasq may take to answer after it is started.
const START_LIMIT: Duration = Duration::from_secs(10);

pub struct Dnsmasq {
    pub addr: SocketAddr,
    hosts: PathBuf,
    child: Child,
}

impl Dnsmasq {
    /// Starts dnsmasq on `addr` (UDP) serving the `hosts` text (`IP NAME` lines); its files
    /// (hosts, log) go under `dir`.
    pub fn start(addr: SocketAddr, hosts: &str, dir: &Path) -> Result<Dnsmasq> {
        std::fs::create_dir_all(dir)
            .map_err(|e| BenchError::io(format!("mkdir {}", dir.display()), e))?;
        let hosts_path = dir.join("hosts");
        write(&hosts_path, hosts)?;
        let child = Command::new(DNSMASQ)
            .arg("--keep-in-foreground")
            .arg("--conf-file=/dev/null")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--bind-interfaces")
            .arg(format!("--listen-address={}", addr.ip()))
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--addn-hosts={}", hosts_path.display()))
            .arg("--local-ttl=1")
            .arg("--pid-file=")
            .arg("--user=root")
            .arg(format!(
                "--log-facility={}",
                dir.join("dnsmasq.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::io(format!("start {DNSMASQ}"), e))?;
        let mut d = Dnsmasq {
            addr,
            hosts: hosts_path,
            child,
        };
        d.wait_answering()?;
        Ok(d)
    }

    fn wait_answering(&mut self) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < START_LIMIT {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::peer(
                    "dnsmasq",
                    format!("exited at start ({status})"),
                ));
            }
            if answers(self.addr) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(BenchError::peer(
            "dnsmasq",
            format!("no answer on {} after {START_LIMIT:?}", self.addr),
        ))
    }

    /// Rewrites the hosts file and tells dnsmasq to read it again.
    pub fn set_hosts(&mut self, hosts: &str) -> Result<()> {
        write(&self.hosts, hosts)?;
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
        Ok(())
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| BenchError::io(format!("write {}", path.display()), e))
}

/// Whether something answers a DNS query (any answer) on `addr`.
fn answers(addr: SocketAddr) -> bool {
    let Ok(sock) = UdpSocket::bind(SocketAddr::new(addr.ip(), 0)) else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    // A query for `.` type NS, id 0x4242, by hand: only a readiness probe, whose answer is
    // not decoded beyond its id.
    let query = [
        0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1,
    ];
    if sock.send_to(&query, addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(sock.recv_from(&mut buf), Ok((n, _)) if n >= 12 && buf[..2] == [0x42, 0x42])
}
