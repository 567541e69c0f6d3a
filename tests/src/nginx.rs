//! nginx with the RTMP module as a stand-in for an Ant Media Server node.
//!
//! See `nginx_conf` for how two nodes share streams (`live` pushes to the peer's `relay`,
//! `live` pulls from its own `relay`) and why they do not simply push to each other's `live`.

use crate::nginx_conf::{NginxConf, LIVE_APP, RELAY_APP, RTMP_MODULE};
use crate::ports::{free_port, loopback};
use crate::process::{self, is_listening};
use crate::util::{require_file, require_tool, tail, TestDir};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READY_LIMIT: Duration = Duration::from_secs(10);

/// One nginx-rtmp node: RTMP on `rtmp_port`, HTTP on `http_port` (`/stat` and a `/` page that
/// says `node NAME`). Killed on drop.
pub struct Nginx {
    conf: NginxConf,
    child: Option<Child>,
    dir: TestDir,
}

impl Nginx {
    /// Starts a node on `addr` that pushes every publish to the peers in `push_to` (their RTMP
    /// addresses). Waits until both ports listen.
    pub fn rtmp(addr: Ipv4Addr, rtmp_port: u16, http_port: u16, push_to: &[SocketAddr]) -> Nginx {
        Nginx::rtmp_with(addr, rtmp_port, http_port, push_to, false)
    }

    /// A node alone (no peer) that records every publish of `live` to
    /// [`Nginx::recording`] (what it received, frame for frame) and serves it as HLS under
    /// `/hls/STREAM/index.m3u8` on its HTTP port, naming itself in `X-Node`.
    pub fn rtmp_recording(addr: Ipv4Addr) -> Nginx {
        let (rtmp, http) = (free_port(addr), free_port(addr));
        Nginx::rtmp_with(addr, rtmp, http, &[], true)
    }

    /// The file a recording node wrote for `stream` (complete once the publish ended).
    pub fn recording(&self, stream: &str) -> PathBuf {
        self.dir.join("rec").join(format!("{stream}.flv"))
    }

    /// Frames of each recording in `streams`, once the node has closed every publish (its
    /// recordings are then complete).
    pub fn recorded_frames(&self, streams: &[&str]) -> Vec<u64> {
        crate::util::wait_until(
            "the node to close the recordings",
            Duration::from_secs(20),
            || self.streams().is_empty().then_some(()),
        );
        streams
            .iter()
            .map(|name| {
                crate::ffmpeg::ffprobe_count_frames(&self.recording(name).display().to_string())
                    .unwrap_or_else(|e| panic!("counting the frames of {name}: {e}"))
            })
            .collect()
    }

    fn rtmp_with(
        addr: Ipv4Addr,
        rtmp_port: u16,
        http_port: u16,
        push_to: &[SocketAddr],
        record: bool,
    ) -> Nginx {
        require_tool("nginx");
        require_file(RTMP_MODULE, "libnginx-mod-rtmp");
        let dir = TestDir::new(&format!("nginx-{addr}"));
        let conf = NginxConf {
            name: format!("{addr}"),
            addr,
            rtmp_port,
            http_port,
            push_to: push_to.to_vec(),
            dir: dir.path().to_path_buf(),
            user_root: nix::unistd::geteuid().is_root(),
            record: record.then(|| dir.join("rec")),
            hls: record.then(|| dir.join("hls")),
        };
        for made in [&conf.record, &conf.hls].into_iter().flatten() {
            std::fs::create_dir_all(made)
                .unwrap_or_else(|e| panic!("creating {}: {e}", made.display()));
        }
        conf.write()
            .unwrap_or_else(|e| panic!("writing {}: {e}", conf.conf_path().display()));
        let mut n = Nginx {
            conf,
            child: None,
            dir,
        };
        n.start();
        n
    }

    /// (Re)starts the node with the same config and ports; waits until both ports listen.
    pub fn start(&mut self) {
        assert!(
            self.child.is_none(),
            "nginx {} is already running",
            self.name()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stderr.log"))
            .expect("nginx stderr.log");
        let child = Command::new(require_tool("nginx"))
            .args(self.conf.args())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nginx: {e}"));
        let pid = child.id();
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "nginx {} exited at start-up ({status}):\n{}\n{}",
                    self.name(),
                    self.stderr_log(),
                    tail(&self.error_log(), 4000)
                );
            }
            if is_listening(pid, self.rtmp_addr()) && is_listening(pid, self.http_addr()) {
                return;
            }
            if start.elapsed() > READY_LIMIT {
                panic!(
                    "nginx {} did not listen within {READY_LIMIT:?}:\n{}",
                    self.name(),
                    tail(&self.error_log(), 4000)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the node with SIGKILL, as a crash would (its connections are closed by the kernel,
    /// with a reset where data was unread), and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            process::kill_now(&mut c);
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn name(&self) -> &str {
        &self.conf.name
    }

    pub fn rtmp_addr(&self) -> SocketAddr {
        self.conf.rtmp_addr()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.conf.http_addr()
    }

    /// `rtmp://ADDR:PORT/live/STREAM` on this node directly.
    pub fn url(&self, stream: &str) -> String {
        format!("rtmp://{}/{LIVE_APP}/{stream}", self.rtmp_addr())
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.conf.error_log()).unwrap_or_default()
    }

    fn stderr_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// A plain HTTP/1.0 GET on the node's HTTP port: (status, body).
    pub fn http_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.http_addr(), path)
    }

    /// The parsed `/stat` page.
    pub fn stat(&self) -> std::io::Result<Stat> {
        let (status, body) = self.http_get("/stat")?;
        if status != 200 {
            return Err(std::io::Error::other(format!("/stat answered {status}")));
        }
        Ok(Stat::parse(&body))
    }

    /// Streams being published on this node by a client directly (ffmpeg, or ffmpeg through the
    /// proxy), in application `live`. Pushes from the peer land in `relay` and are not counted;
    /// pulls into `live` for a local player are published by a relay session, which is not
    /// counted either (see `Client::is_relay`). Panics if /stat cannot be read.
    pub fn streams(&self) -> Vec<String> {
        let stat = self
            .stat()
            .unwrap_or_else(|e| panic!("reading /stat of nginx {}: {e}", self.name()));
        stat.published(LIVE_APP)
    }

    /// Streams the peers pushed to this node (application `relay`).
    pub fn relayed_streams(&self) -> Vec<String> {
        let stat = self
            .stat()
            .unwrap_or_else(|e| panic!("reading /stat of nginx {}: {e}", self.name()));
        stat.app(RELAY_APP)
            .map(|a| {
                a.streams
                    .iter()
                    .filter(|s| s.clients.iter().any(|c| c.publishing))
                    .map(|s| s.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "[e2e] nginx {} error.log (tail):\n{}",
                self.name(),
                tail(&self.error_log(), 3000)
            );
        }
        self.stop();
    }
}

/// Two nodes on 127.0.0.2 and 127.0.0.3 (fresh ports), each pushing its publishes to the other,
/// so that a stream published on either can be played from both.
pub fn rtmp_pair() -> (Nginx, Nginx) {
    let (ip_a, ip_b) = (loopback(2), loopback(3));
    let (rtmp_a, http_a) = (free_port(ip_a), free_port(ip_a));
    let (rtmp_b, http_b) = (free_port(ip_b), free_port(ip_b));
    let a = Nginx::rtmp(ip_a, rtmp_a, http_a, &[SocketAddr::from((ip_b, rtmp_b))]);
    let b = Nginx::rtmp(ip_b, rtmp_b, http_b, &[SocketAddr::from((ip_a, rtmp_a))]);
    (a, b)
}

/// A minimal HTTP/1.0 GET (no keep-alive, body read to EOF).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("HTTP answer without a header end"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    Ok((status, body.to_string()))
}

/// What nginx-rtmp's `/stat` (`rtmp_stat all`) reports, reduced to what the tests use.
#[derive(Debug, Clone, Default)]
pub struct Stat {
    /// Connections the node accepted since it started (all of them: players, publishers,
    /// health checks, peers' relays).
    pub naccepted: u64,
    pub apps: Vec<App>,
}

#[derive(Debug, Clone, Default)]
pub struct App {
    pub name: String,
    pub streams: Vec<Stream>,
}

#[derive(Debug, Clone, Default)]
pub struct Stream {
    pub name: String,
    pub clients: Vec<Client>,
}

/// One session attached to a stream.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// The peer's IP for an accepted connection; `HOST:PORT/APP` for a relay session this node
    /// opened itself (an outgoing push, or a pull that feeds a local player).
    pub address: String,
    /// ffmpeg says `FMLE/3.0 (compatible; Lavf…`, nginx's own relay sessions say
    /// `ngx-local-relay`, and a push arriving from a peer says `LNX.11,1,102,55`.
    pub flashver: String,
    /// `<publishing/>`: this session feeds the stream.
    pub publishing: bool,
}

impl Client {
    /// A session nginx opened itself (push out, or pull in).
    pub fn is_relay(&self) -> bool {
        self.address.contains('/') || self.flashver == "ngx-local-relay"
    }
}

impl Stat {
    pub fn app(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.name == name)
    }

    /// Streams of application `app` that a directly connected client publishes.
    pub fn published(&self, app: &str) -> Vec<String> {
        self.app(app)
            .map(|a| {
                a.streams
                    .iter()
                    .filter(|s| s.clients.iter().any(|c| c.publishing && !c.is_relay()))
                    .map(|s| s.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Parses the XML of `/stat`. nginx-rtmp writes a fixed, flat shape (no attributes, no
    /// CDATA), so a tag walker is enough: `rtmp/server/application/live/stream/client`.
    pub fn parse(xml: &str) -> Stat {
        let mut stat = Stat::default();
        let mut path: Vec<String> = Vec::new();
        let mut rest = xml;
        while let Some(lt) = rest.find('<') {
            let text = &rest[..lt];
            let Some(gt) = rest[lt..].find('>') else {
                break;
            };
            let tag = &rest[lt + 1..lt + gt];
            rest = &rest[lt + gt + 1..];
            if tag.starts_with('?') || tag.starts_with('!') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                // Closing tag: `text` is the element's content when it had no children.
                let value = unescape(text.trim());
                let parent = path.len().checked_sub(2).map(|i| path[i].as_str());
                match (parent, name) {
                    (Some("rtmp"), "naccepted") => stat.naccepted = value.parse().unwrap_or(0),
                    (Some("application"), "name") => {
                        if let Some(app) = stat.apps.last_mut() {
                            app.name = value;
                        }
                    }
                    (Some("stream"), "name") => {
                        if let Some(s) = last_stream(&mut stat) {
                            s.name = value;
                        }
                    }
                    (Some("client"), "address") => {
                        if let Some(c) = last_client(&mut stat) {
                            c.address = value;
                        }
                    }
                    (Some("client"), "flashver") => {
                        if let Some(c) = last_client(&mut stat) {
                            c.flashver = value;
                        }
                    }
                    _ => {}
                }
                path.pop();
                continue;
            }
            if let Some(name) = tag.strip_suffix('/') {
                let name = name.trim();
                if name == "publishing" && path.last().map(String::as_str) == Some("client") {
                    if let Some(c) = last_client(&mut stat) {
                        c.publishing = true;
                    }
                }
                continue;
            }
            let name = tag.split_whitespace().next().unwrap_or("");
            match name {
                "application" => stat.apps.push(App::default()),
                "stream" => {
                    if let Some(app) = stat.apps.last_mut() {
                        app.streams.push(Stream::default());
                    }
                }
                "client" if path.last().map(String::as_str) == Some("stream") => {
                    if let Some(s) = last_stream(&mut stat) {
                        s.clients.push(Client::default());
                    }
                }
                _ => {}
            }
            path.push(name.to_string());
        }
        stat
    }
}

fn last_stream(stat: &mut Stat) -> Option<&mut Stream> {
    stat.apps.last_mut()?.streams.last_mut()
}

fn last_client(stat: &mut Stat) -> Option<&mut Client> {
    last_stream(stat)?.clients.last_mut()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shapes seen on nginx-rtmp 1.2.2 (Debian 12): a node with a direct publish that it pushes
    /// out, and a peer holding the pushed copy in `relay` plus a pull feeding a local player.
    #[test]
    fn stat_parse_tells_direct_publishes_from_relays() {
        let origin = r#"<?xml version="1.0" encoding="utf-8" ?>
<rtmp><nginx_version>1.22.1</nginx_version><naccepted>7</naccepted>
<server><application><name>live</name><live>
<stream><name>test</name><time>2464</time>
<client><id>3</id><address>127.0.0.3:19350/relay</address><time>2464</time><flashver>ngx-local-relay</flashver><dropped>0</dropped><active/></client>
<client><id>2</id><address>127.0.0.1</address><time>2640</time><flashver>FMLE/3.0 (compatible; Lavf59.27</flashver><dropped>0</dropped><publishing/><active/></client>
<meta><video><width>320</width></video><audio></audio></meta>
<nclients>2</nclients><publishing/><active/></stream>
<nclients>2</nclients></live></application>
<application><name>relay</name><live><nclients>0</nclients></live></application>
</server></rtmp>"#;
        let s = Stat::parse(origin);
        assert_eq!(s.naccepted, 7);
        assert_eq!(s.published("live"), ["test"]);
        assert!(s.published("relay").is_empty());
        assert_eq!(s.app("live").unwrap().streams[0].clients.len(), 2);

        let peer = r#"<rtmp><server><application><name>live</name><live>
<stream><name>test</name>
<client><id>8</id><address>127.0.0.3:19350/relay</address><flashver>ngx-local-relay</flashver><publishing/><active/></client>
<client><id>7</id><address>127.0.0.1</address><flashver>LNX 9,0,124,2</flashver><active/></client>
<publishing/></stream></live></application>
<application><name>relay</name><live><stream><name>test</name>
<client><id>6</id><address>127.0.0.1</address><flashver>LNX.11,1,102,55</flashver><publishing/><active/></client>
<publishing/></stream></live></application></server></rtmp>"#;
        let s = Stat::parse(peer);
        assert!(
            s.published("live").is_empty(),
            "a pull is not a direct publish"
        );
        assert_eq!(s.published("relay"), ["test"]);
    }
}
