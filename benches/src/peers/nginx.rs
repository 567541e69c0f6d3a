//! nginx as the HTTP backend (standing in for Ant Media Server's HTTP side): a 1 KiB object
//! for the keep-alive scenario, a large sparse file for bulk HTTPS, and (for the direct HTTPS
//! runs) a TLS listener of its own. One process, pinned to the load CPU.

use crate::error::{BenchError, Result};
use crate::pin::Plan;
use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub const NGINX: &str = "/usr/sbin/nginx";
/// The small object of the keep-alive scenario.
pub const OBJECT_PATH: &str = "/obj";
pub const OBJECT_LEN: usize = 1024;
/// The bulk object: sparse, so it costs no disk and reads come from zero pages.
pub const BIG_PATH: &str = "/big";
const BIG_LEN: u64 = 64 << 30;

pub struct Nginx {
    pub http: SocketAddr,
    /// TLS listener (certificate and key files given at start).
    pub https: Option<SocketAddr>,
    child: Child,
    dir: PathBuf,
}

pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Nginx {
    pub fn start(
        dir: &Path,
        plan: &Plan,
        http: SocketAddr,
        https: Option<(SocketAddr, &TlsFiles)>,
    ) -> Result<Nginx> {
        let dir = dir.join("nginx");
        for sub in ["tmp", "www"] {
            fs::create_dir_all(dir.join(sub))
                .map_err(|e| BenchError::io(format!("mkdir {}", dir.display()), e))?;
        }
        let big = dir.join("www").join(BIG_PATH.trim_start_matches('/'));
        let f = fs::File::create(&big).map_err(|e| BenchError::io("create big file", e))?;
        f.set_len(BIG_LEN)
            .map_err(|e| BenchError::io("size big file", e))?;
        let conf = dir.join("nginx.conf");
        fs::write(&conf, render(&dir, http, https))
            .map_err(|e| BenchError::io("write nginx.conf", e))?;
        let log =
            fs::File::create(dir.join("stderr.log")).map_err(|e| BenchError::io("nginx log", e))?;
        let child = plan
            .load_command(NGINX)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| BenchError::io("start nginx", e))?;
        let mut n = Nginx {
            http,
            https: https.map(|(a, _)| a),
            child,
            dir,
        };
        n.wait_listening()?;
        Ok(n)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_listening(&mut self) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(st)) = self.child.try_wait() {
                let log = fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                return Err(BenchError::peer("nginx", format!("exited ({st}): {log}")));
            }
            let up = |a: SocketAddr| TcpStream::connect_timeout(&a, Duration::from_millis(100));
            if up(self.http).is_ok() && self.https.is_none_or(|a| up(a).is_ok()) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(BenchError::peer("nginx", "not listening after 5 s"))
    }
}

impl Drop for Nginx {
    /// Also removes the 64 GiB sparse file: it costs no disk, but would if anyone copied the
    /// results folder.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(self.dir.join("www").join(BIG_PATH.trim_start_matches('/')));
    }
}

fn render(dir: &Path, http: SocketAddr, https: Option<(SocketAddr, &TlsFiles)>) -> String {
    let d = dir.display();
    let mut c = String::new();
    // As root, nginx would switch to a user that may not exist; as anyone else it cannot.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        c.push_str("user root;\n");
    }
    c.push_str("daemon off;\nmaster_process off;\nworker_processes 1;\n");
    let _ = writeln!(c, "pid {d}/nginx.pid;\nerror_log {d}/error.log warn;");
    c.push_str("events { worker_connections 4096; }\nhttp {\n    access_log off;\n");
    // A keep-alive connection must outlive the run (nginx closes after 1000 by default).
    c.push_str("    keepalive_requests 10000000;\n    keepalive_timeout 120s;\n");
    for (directive, sub) in [
        ("client_body_temp_path", "client_body"),
        ("proxy_temp_path", "proxy"),
        ("fastcgi_temp_path", "fastcgi"),
        ("uwsgi_temp_path", "uwsgi"),
        ("scgi_temp_path", "scgi"),
    ] {
        let _ = writeln!(c, "    {directive} {d}/tmp/{sub};");
    }
    c.push_str("    sendfile on;\n    server {\n");
    let _ = writeln!(c, "        listen {http};");
    if let Some((addr, tls)) = https {
        // `http2`: the direct runs of the HTTP/2 scenario; clients that offer no h2 by ALPN
        // (the handshake and bulk loads) still get HTTP/1.1.
        let _ = writeln!(c, "        listen {addr} ssl http2;");
        let _ = writeln!(c, "        ssl_certificate {};", tls.cert.display());
        let _ = writeln!(c, "        ssl_certificate_key {};", tls.key.display());
        // Every handshake a full one, as in the proxied runs' client.
        c.push_str("        ssl_session_cache off;\n        ssl_session_tickets off;\n");
    }
    let _ = writeln!(c, "        root {d}/www;");
    let _ = writeln!(
        c,
        "        location = {OBJECT_PATH} {{ default_type application/octet-stream; return 200 \"{}\"; }}",
        "x".repeat(OBJECT_LEN)
    );
    c.push_str("    }\n}\n");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_has_object_and_tls() {
        let tls = TlsFiles {
            cert: "/c.pem".into(),
            key: "/k.pem".into(),
        };
        let c = render(
            Path::new("/w"),
            "127.0.77.2:80".parse().unwrap(),
            Some(("127.0.77.2:443".parse().unwrap(), &tls)),
        );
        assert!(c.contains("listen 127.0.77.2:80;"));
        assert!(c.contains("listen 127.0.77.2:443 ssl http2;"));
        assert!(c.contains(&"x".repeat(OBJECT_LEN)));
        assert!(c.contains("root /w/www;"));
    }
}
