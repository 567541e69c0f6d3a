//! nginx as an HTTP backend standing in for an Ant Media Server node, with the echo module
//! (`libnginx-mod-http-echo`):
//!
//! * `/app…`: sets `JSESSIONID=sess-NAME` and answers `node NAME`, the `Cookie` it got, its
//!   connection serial and request count on that connection, then the request head exactly as
//!   received (`$echo_client_request_headers`);
//! * `/body`: echoes the request body;
//! * `/slow`: answers after 3 s (for `timeout server`);
//! * `/liveness`: a health URL whose answer the test switches with [`NginxHttp::set_liveness`]
//!   (`200 alive`, `503`, or `200 sick`), read by nginx from a file's presence on each request;
//! * `/hls/…`: static files from a folder (HLS playlists and segments);
//! * everything else: `node NAME`.
//!
//! Every request line nginx receives is written to `access.log`, so a test can check what the
//! backend saw (and that it never saw a smuggled request).

use crate::process::{self, is_listening};
use crate::util::{require_file, require_tool, tail, TestDir};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the Debian package `libnginx-mod-http-echo` installs the module.
pub const ECHO_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_echo_module.so";

const READY_LIMIT: Duration = Duration::from_secs(10);

/// The answers of a node's `/liveness`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// `200` with body `alive`.
    Alive,
    /// `503 Service Temporarily Unavailable` (nginx's reason phrase).
    Down,
    /// `200` with body `sick`: a status check passes, a body check for `alive` fails.
    Sick,
}

pub struct NginxHttp {
    name: String,
    addr: SocketAddr,
    dir: TestDir,
    child: Option<Child>,
}

impl NginxHttp {
    /// Starts a node called `name` on `addr`, serving `hls_dir` under `/hls/` if given.
    pub fn start(name: &str, addr: SocketAddr, hls_dir: Option<&Path>) -> NginxHttp {
        NginxHttp::start_with(name, addr, hls_dir, None)
    }

    /// Starts a node that speaks TLS on `addr` with `pem` (certificate chain and key in one
    /// file, as `TestCa::leaf` writes it); the SNI of each request goes to [`Self::snis`].
    pub fn start_tls(name: &str, addr: SocketAddr, pem: &Path) -> NginxHttp {
        NginxHttp::start_with(name, addr, None, Some(pem))
    }

    fn start_with(
        name: &str,
        addr: SocketAddr,
        hls_dir: Option<&Path>,
        tls: Option<&Path>,
    ) -> NginxHttp {
        require_tool("nginx");
        require_file(ECHO_MODULE, "libnginx-mod-http-echo");
        let dir = TestDir::new(&format!("nginx-http-{name}"));
        std::fs::create_dir_all(dir.join("tmp")).expect("nginx tmp folder");
        let conf = render(name, addr, dir.path(), hls_dir, tls);
        std::fs::write(dir.join("nginx.conf"), conf).expect("writing nginx.conf");
        let mut n = NginxHttp {
            name: name.to_string(),
            addr,
            dir,
            child: None,
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("stderr.log")).expect("stderr.log");
        let child = Command::new(require_tool("nginx"))
            .arg("-p")
            .arg(format!("{}/", self.dir.path().display()))
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .arg("-e")
            .arg(self.dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nginx: {e}"));
        let pid = child.id();
        self.child = Some(child);
        let start = Instant::now();
        while !is_listening(pid, self.addr) {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "nginx {} exited at start-up ({status}):\n{}",
                    self.name,
                    tail(&self.error_log(), 4000)
                );
            }
            assert!(
                start.elapsed() < READY_LIMIT,
                "nginx {} did not listen on {} within {READY_LIMIT:?}",
                self.name,
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Kills the node (SIGKILL, as a crash) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            process::kill_now(&mut c);
        }
    }

    /// Starts a stopped node again with the same config; waits until it listens.
    pub fn restart(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    /// What `/liveness` answers from now on: nginx tests for the flag files on each request,
    /// so no reload is needed.
    pub fn set_liveness(&self, liveness: Liveness) {
        for (flag, on) in [
            ("down", liveness == Liveness::Down),
            ("sick", liveness == Liveness::Sick),
        ] {
            let path = self.dir.join(flag);
            if on {
                std::fs::write(&path, flag).expect("writing a liveness flag");
            } else if path.exists() {
                std::fs::remove_file(&path).expect("removing a liveness flag");
            }
        }
    }

    /// The SNI of each request a TLS node answered (`-` for none), in order.
    pub fn snis(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("sni.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Request lines nginx received, in order.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// How many request lines this node received that contain `part`.
    pub fn served(&self, part: &str) -> usize {
        self.requests().iter().filter(|l| l.contains(part)).count()
    }
}

/// The values of header `name` in the request head an nginx echo node printed (`/app…`).
pub fn echoed(body: &str, name: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim_end().to_string())
        .collect()
}

/// What follows `prefix` on each line of `text` that starts with it: `node ` gives the
/// nodes that answered a run of echo requests, in order.
pub fn after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect()
}

/// Requests containing `part` served by the node named `owner` and by the other node of the
/// pair: a sticky client's requests must all land on its owner, none elsewhere.
pub fn served_by_owner(owner: &str, a: &NginxHttp, b: &NginxHttp, part: &str) -> (usize, usize) {
    if owner == a.name() {
        (a.served(part), b.served(part))
    } else {
        (b.served(part), a.served(part))
    }
}

impl Drop for NginxHttp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "[e2e] nginx {} error.log (tail):\n{}",
                self.name,
                tail(&self.error_log(), 3000)
            );
        }
        self.stop();
    }
}

fn render(
    name: &str,
    addr: SocketAddr,
    dir: &Path,
    hls: Option<&Path>,
    tls: Option<&Path>,
) -> String {
    let d = dir.display();
    let mut c = String::new();
    let _ = writeln!(c, "load_module {ECHO_MODULE};");
    if nix::unistd::geteuid().is_root() {
        c.push_str("user root;\n");
    }
    c.push_str("daemon off;\nmaster_process off;\nworker_processes 1;\n");
    let _ = writeln!(c, "pid {d}/nginx.pid;\nerror_log {d}/error.log info;");
    c.push_str("events { worker_connections 256; }\nhttp {\n");
    c.push_str("    log_format e2e '$request';\n    log_format sni '$ssl_server_name';\n");
    let _ = writeln!(c, "    access_log {d}/access.log e2e;");
    for (directive, sub) in [
        ("client_body_temp_path", "body"),
        ("proxy_temp_path", "proxy"),
        ("fastcgi_temp_path", "fastcgi"),
        ("uwsgi_temp_path", "uwsgi"),
        ("scgi_temp_path", "scgi"),
    ] {
        let _ = writeln!(c, "    {directive} {d}/tmp/{sub};");
    }
    c.push_str("    keepalive_timeout 75s;\n    client_body_buffer_size 1m;\n");
    c.push_str("    types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }\n");
    match tls {
        None => {
            let _ = writeln!(c, "    server {{\n        listen {addr};");
        }
        Some(pem) => {
            let pem = pem.display();
            let _ = writeln!(
                c,
                "    server {{\n        listen {addr} ssl;\n        ssl_certificate {pem};\n        \
                 ssl_certificate_key {pem};\n        access_log {d}/access.log e2e;\n        \
                 access_log {d}/sni.log sni;"
            );
        }
    }
    let _ = writeln!(
        c,
        "        location /app {{ default_type text/plain; \
         add_header Set-Cookie \"JSESSIONID=sess-{name}; Path=/\" always; \
         echo \"node {name}\"; echo \"cookie $http_cookie\"; \
         echo \"conn $connection $connection_requests\"; \
         echo -n $echo_client_request_headers; }}"
    );
    c.push_str(
        "        location /body { default_type text/plain; echo_read_request_body; \
         echo_request_body; }\n",
    );
    c.push_str("        location /slow { default_type text/plain; echo_sleep 3; echo slow; }\n");
    let _ = writeln!(
        c,
        "        location = /liveness {{ default_type text/plain; \
         if (-f {d}/down) {{ return 503; }} if (-f {d}/sick) {{ return 200 \"sick\\n\"; }} \
         return 200 \"alive\\n\"; }}"
    );
    if let Some(h) = hls {
        let _ = writeln!(c, "        location /hls/ {{ alias {}/; }}", h.display());
    }
    let _ = writeln!(
        c,
        "        location / {{ default_type text/plain; echo \"node {name}\"; }}"
    );
    c.push_str("    }\n}\n");
    c
}

/// The folder of a node's files (for tests that add HLS files after start).
pub fn hls_folder(dir: &TestDir) -> PathBuf {
    let p = dir.join("hls");
    std::fs::create_dir_all(&p).expect("hls folder");
    p
}
