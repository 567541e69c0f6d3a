//! Real RTMP: ffmpeg publishers (`-re`, stream copy of a clip made once, so encoding costs
//! nothing per run) into one nginx-rtmp node, the same node config the e2e tests and the demo
//! use. Bytes delivered are what nginx-rtmp counts as received (`bytes_in` of its /stat page).

#[path = "../../../tests/src/nginx_conf.rs"]
#[allow(dead_code)]
mod nginx_conf;

use crate::error::{BenchError, Result};
use crate::pin::Plan;
use nginx_conf::NginxConf;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub const FFMPEG: &str = "/usr/bin/ffmpeg";

/// Encodes the clip every publisher loops: 4 s of 640x360 at 25 fps, ~2 Mbit/s, 1 s GOP.
pub fn make_clip(dir: &Path, plan: &Plan) -> Result<PathBuf> {
    let clip = dir.join("clip.flv");
    if clip.exists() {
        return Ok(clip);
    }
    let out = plan
        .load_command(FFMPEG)
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25",
            "-t",
            "4",
        ])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"])
        .args([
            "-b:v", "2M", "-maxrate", "2M", "-bufsize", "1M", "-pix_fmt", "yuv420p",
        ])
        .args(["-f", "flv"])
        .arg(&clip)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| BenchError::io("run ffmpeg", e))?;
    if !out.status.success() {
        return Err(BenchError::Run(format!(
            "ffmpeg could not make the clip: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(clip)
}

/// One nginx-rtmp node on the load CPU.
pub struct RtmpNode {
    pub rtmp: SocketAddr,
    http: SocketAddr,
    child: Child,
}

impl RtmpNode {
    pub fn start(
        dir: &Path,
        plan: &Plan,
        ip: IpAddr,
        rtmp_port: u16,
        http_port: u16,
    ) -> Result<Self> {
        let IpAddr::V4(addr) = ip else {
            return Err(BenchError::Run(
                "nginx-rtmp node needs an IPv4 address".into(),
            ));
        };
        let conf = NginxConf {
            name: "bench".into(),
            addr,
            rtmp_port,
            http_port,
            push_to: vec![],
            dir: dir.join("nginx-rtmp"),
            // SAFETY: geteuid has no preconditions.
            user_root: unsafe { libc::geteuid() } == 0,
            record: None,
            hls: None,
        };
        conf.write()
            .map_err(|e| BenchError::io("write nginx-rtmp config", e))?;
        let child = plan
            .load_command("/usr/sbin/nginx")
            .args(conf.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::io("start nginx-rtmp", e))?;
        let mut node = RtmpNode {
            rtmp: conf.rtmp_addr(),
            http: conf.http_addr(),
            child,
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(st)) = node.child.try_wait() {
                let log = std::fs::read_to_string(conf.error_log()).unwrap_or_default();
                return Err(BenchError::peer(
                    "nginx-rtmp",
                    format!("exited ({st}): {log}"),
                ));
            }
            if TcpStream::connect_timeout(&node.rtmp, Duration::from_millis(100)).is_ok() {
                return Ok(node);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(BenchError::peer("nginx-rtmp", "not listening after 5 s"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Bytes received over RTMP by this node since it started (0 when the page is unreadable).
    pub fn bytes_in(&self) -> u64 {
        stat_page(self.http)
            .and_then(|page| parse_bytes_in(&page))
            .unwrap_or(0)
    }
}

fn stat_page(addr: SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /stat HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut page = String::new();
    s.read_to_string(&mut page).ok()?;
    Some(page)
}

/// The first `<bytes_in>` of the stat XML is the node-wide total.
pub fn parse_bytes_in(xml: &str) -> Option<u64> {
    let start = xml.find("<bytes_in>")? + "<bytes_in>".len();
    let end = start + xml[start..].find('<')?;
    xml[start..end].trim().parse().ok()
}

impl Drop for RtmpNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` looping publishers to `target`, streams `s0`…; killed when dropped.
pub struct Publishers {
    children: Vec<Child>,
}

impl Publishers {
    pub fn start(plan: &Plan, clip: &Path, target: SocketAddr, n: usize) -> Result<Self> {
        let mut children = Vec::with_capacity(n);
        for i in 0..n {
            let c = plan
                .load_command(FFMPEG)
                .args(["-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"])
                .args(["-re", "-stream_loop", "-1", "-i"])
                .arg(clip)
                .args(["-c", "copy", "-rw_timeout", "10000000", "-f", "flv"])
                .arg(format!("rtmp://{target}/live/s{i}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| BenchError::io("start ffmpeg publisher", e))?;
            children.push(c);
        }
        Ok(Publishers { children })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|c| c.id()).collect()
    }

    /// Publishers that have exited (a refused or broken publish).
    pub fn exited(&mut self) -> usize {
        let mut n = 0;
        for c in &mut self.children {
            if matches!(c.try_wait(), Ok(Some(_))) {
                n += 1;
            }
        }
        n
    }
}

impl Drop for Publishers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_in_is_the_first_total() {
        let xml = "<rtmp><uptime>5</uptime><bytes_in>12345</bytes_in><server>\
                   <application><bytes_in>7</bytes_in></application></server></rtmp>";
        assert_eq!(super::parse_bytes_in(xml), Some(12345));
        assert_eq!(super::parse_bytes_in("<rtmp></rtmp>"), None);
    }
}
