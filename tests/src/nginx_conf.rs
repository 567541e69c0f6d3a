//! The nginx.conf of one nginx-rtmp node. Std only: `xtask run` includes this file with
//! `#[path]` so that the demo cluster and the test clusters are the same thing.
//!
//! # How two nodes share streams
//!
//! A publish must be playable from either node (the balancer may send the player anywhere),
//! but nginx-rtmp only serves a stream on the node that received it. The obvious
//! `push rtmp://PEER/live` on both nodes loops: the peer sees the pushed stream as a new publish
//! and pushes it back, which is refused ("already publishing") and retried, and within seconds
//! each node holds dozens of relay sessions. So the copy goes into a second application:
//!
//! * `live`: where clients publish and play. A publish here is pushed to `PEER/relay`.
//!   A play of a stream that has no publisher here pulls it from this node's own `relay`.
//! * `relay`: only receives the peers' pushes; it pushes and pulls nothing, so nothing loops.
//!
//! A stream pulled into `live` comes from a relay session, which nginx-rtmp does not push on.
//! One limit follows: if a player asks a node for a stream before anyone publishes it, that node
//! starts the pull, and a publish of the same name to that node is then refused. Tests (and the
//! demo) publish first and play afterwards.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Where the Debian package `libnginx-mod-rtmp` installs the module.
pub const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// The application clients publish to and play from.
pub const LIVE_APP: &str = "live";
/// The application that receives the peers' pushes.
pub const RELAY_APP: &str = "relay";

#[derive(Debug, Clone)]
pub struct NginxConf {
    /// Shown by `GET /` on the HTTP port: `node NAME`.
    pub name: String,
    pub addr: Ipv4Addr,
    pub rtmp_port: u16,
    pub http_port: u16,
    /// RTMP addresses of the peers this node pushes its publishes to.
    pub push_to: Vec<SocketAddr>,
    /// Folder for the pid file, logs and temp paths (nginx -p).
    pub dir: PathBuf,
    /// `user root;` lets a root-started nginx keep root (its default user may not exist).
    pub user_root: bool,
    /// `record all` of the `live` application into this folder (`NAME.flv` per publish), so
    /// a test can count what the node received.
    pub record: Option<PathBuf>,
    /// HLS of the `live` application written into this folder (`NAME/index.m3u8` and its
    /// segments, one per keyframe second) and served on the HTTP port under `/hls/`, each
    /// answer (a 404 too) naming the node in `X-Node`: what an edge serves to players.
    pub hls: Option<PathBuf>,
}

impl NginxConf {
    pub fn rtmp_addr(&self) -> SocketAddr {
        SocketAddr::from((self.addr, self.rtmp_port))
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from((self.addr, self.http_port))
    }

    pub fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    pub fn conf_path(&self) -> PathBuf {
        self.dir.join("nginx.conf")
    }

    /// The nginx.conf text. A single process (`master_process off`): one pid to kill, and a
    /// SIGKILL leaves no orphaned worker behind.
    pub fn render(&self) -> String {
        let dir = self.dir.display();
        let mut c = String::new();
        let _ = writeln!(c, "# generated for node {}", self.name);
        let _ = writeln!(c, "load_module {RTMP_MODULE};");
        if self.user_root {
            c.push_str("user root;\n");
        }
        c.push_str("daemon off;\nmaster_process off;\nworker_processes 1;\n");
        let _ = writeln!(c, "pid {dir}/nginx.pid;");
        let _ = writeln!(c, "error_log {dir}/error.log info;");
        c.push_str("events { worker_connections 1024; }\n\n");

        c.push_str("rtmp {\n    server {\n");
        let _ = writeln!(c, "        listen {};", self.rtmp_addr());
        c.push_str("        chunk_size 4096;\n");
        let _ = writeln!(c, "        application {LIVE_APP} {{");
        c.push_str("            live on;\n");
        match &self.record {
            Some(dir) => {
                let _ = writeln!(
                    c,
                    "            record all;\n            record_path {};\n            record_unique off;",
                    dir.display()
                );
            }
            None => c.push_str("            record off;\n"),
        }
        if let Some(dir) = &self.hls {
            let _ = writeln!(
                c,
                "            hls on;\n            hls_path {};\n            hls_nested on;\n            \
                 hls_fragment 1s;\n            hls_playlist_length 6s;",
                dir.display()
            );
        }
        if !self.push_to.is_empty() {
            for peer in &self.push_to {
                let _ = writeln!(c, "            push rtmp://{peer}/{RELAY_APP};");
            }
            let _ = writeln!(
                c,
                "            pull rtmp://{}/{RELAY_APP};",
                self.rtmp_addr()
            );
        }
        c.push_str("        }\n");
        let _ = writeln!(c, "        application {RELAY_APP} {{");
        c.push_str("            live on;\n            record off;\n        }\n");
        c.push_str("    }\n}\n\n");

        c.push_str("http {\n");
        c.push_str("    access_log off;\n");
        for (directive, sub) in [
            ("client_body_temp_path", "client_body"),
            ("proxy_temp_path", "proxy"),
            ("fastcgi_temp_path", "fastcgi"),
            ("uwsgi_temp_path", "uwsgi"),
            ("scgi_temp_path", "scgi"),
        ] {
            let _ = writeln!(c, "    {directive} {dir}/tmp/{sub};");
        }
        c.push_str("    server {\n");
        let _ = writeln!(c, "        listen {};", self.http_addr());
        c.push_str("        location /stat { rtmp_stat all; }\n");
        if let Some(dir) = &self.hls {
            let _ = writeln!(
                c,
                "        location /hls/ {{ alias {}/; \
                 types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }} \
                 add_header Cache-Control no-cache always; add_header X-Node {} always; }}",
                dir.display(),
                self.name
            );
        }
        let _ = writeln!(
            c,
            "        location / {{ default_type text/plain; return 200 \"node {}\\n\"; }}",
            self.name
        );
        c.push_str("    }\n}\n");
        c
    }

    /// Creates the folders `render` refers to and writes the config file.
    pub fn write(&self) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(self.dir.join("tmp"))?;
        let path = self.conf_path();
        std::fs::write(&path, self.render())?;
        Ok(path)
    }

    /// Arguments for `nginx`: prefix, config, and `-e` so that nothing is written to
    /// /var/log/nginx before the config is read.
    pub fn args(&self) -> Vec<String> {
        vec![
            "-p".into(),
            format!("{}/", self.dir.display()),
            "-c".into(),
            self.conf_path().display().to_string(),
            "-e".into(),
            self.error_log().display().to_string(),
        ]
    }
}
