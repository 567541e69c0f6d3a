//! `cargo xtask run`: the proxy in the foreground. Without `--config`, a local demo: two
//! nginx-rtmp nodes standing in for Ant Media Server (`ams1` on 127.0.0.2, `ams2` on
//! 127.0.0.3; RTMP 1935, HTTP 5080) behind `examples/demo.cfg`. Ctrl-C stops everything.

#[path = "../../tests/src/nginx_conf.rs"]
mod nginx_conf;

use anyhow::{bail, Context, Result};
use nginx_conf::NginxConf;
use nix::sys::signal::{self, SigHandler, Signal};
use nix::unistd::Pid;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    STOP.store(true, Ordering::SeqCst);
}

/// A child that is stopped (SIGTERM, then SIGKILL after a grace) when dropped.
struct Guard {
    name: String,
    child: Child,
}

impl Guard {
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        let _ = signal::kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < grace {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "xtask: {} did not stop within {grace:?}; killing it",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

pub fn run(config: Option<&Path>) -> Result<()> {
    crate::setup::setup()?;
    println!("\n==> cargo build --release -p proxy");
    crate::run_checked(crate::cargo().args(["build", "--release", "-p", "proxy"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_absolute() {
                t
            } else {
                crate::root().join(t)
            }
        })
        .unwrap_or_else(|| crate::root().join("target"));
    let bin = target.join("release").join("proxy");

    // Handle Ctrl-C ourselves: the terminal sends SIGINT to the children too, but the backends
    // must go even if the proxy ignores it, and we must live to clean up.
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { signal::signal(sig, SigHandler::Handler(on_signal)) }
            .context("installing the signal handler")?;
    }

    let (cfg, backends) = match config {
        Some(c) => (
            c.canonicalize()
                .with_context(|| format!("config {}", c.display()))?,
            Vec::new(),
        ),
        None => (
            crate::root().join("examples").join("demo.cfg"),
            start_demo_backends(&target.join("demo"))?,
        ),
    };
    // The demo's HTTPS and RTMPS listeners use a self-signed certificate made here (never
    // committed); a config of the caller's is left to its own paths.
    let demo_cert = match config {
        Some(_) => None,
        None => Some(demo_cert(&target.join("demo"))?),
    };

    let mut command = Command::new(&bin);
    if let Some(pem) = &demo_cert {
        command.env("DEMO_CERT", pem);
    }
    let mut proxy = Guard {
        name: "proxy".into(),
        child: command
            .arg("-f")
            .arg(&cfg)
            .current_dir(crate::root())
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?,
    };
    println!(
        "\n==> {} -f {} (pid {})",
        bin.display(),
        cfg.display(),
        proxy.child.id()
    );
    if config.is_none() {
        print_demo_help();
    }

    let mut backends = backends;
    let mut warned = vec![false; backends.len()];
    let status = loop {
        if STOP.load(Ordering::SeqCst) {
            println!("\nxtask: stopping");
            break None;
        }
        if let Some(s) = proxy.exited() {
            break Some(s);
        }
        for (b, w) in backends.iter_mut().zip(warned.iter_mut()) {
            if !*w {
                if let Some(s) = b.exited() {
                    eprintln!(
                        "xtask: backend {} exited ({s}); the proxy keeps running",
                        b.name
                    );
                    *w = true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    proxy.stop(Duration::from_secs(10));
    drop(backends);
    match status {
        Some(s) if !s.success() => bail!("the proxy exited: {s}"),
        Some(s) => {
            println!("xtask: the proxy exited ({s})");
            Ok(())
        }
        None => Ok(()),
    }
}

const DEMO_NODES: [(&str, Ipv4Addr); 2] = [
    ("ams1", Ipv4Addr::new(127, 0, 0, 2)),
    ("ams2", Ipv4Addr::new(127, 0, 0, 3)),
];
const RTMP_PORT: u16 = 1935;
const HTTP_PORT: u16 = 5080;

fn start_demo_backends(dir: &Path) -> Result<Vec<Guard>> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("nginx is not installed (cargo xtask setup installs nginx-light)")?;
    let mut addrs = vec![];
    for (_, ip) in DEMO_NODES {
        for port in [RTMP_PORT, HTTP_PORT] {
            let a = SocketAddr::from((ip, port));
            TcpListener::bind(a)
                .with_context(|| format!("{a} is taken: is another demo (or an nginx) running?"))?;
            addrs.push(a);
        }
    }
    let user_root = nix::unistd::geteuid().is_root();
    let mut guards = Vec::new();
    for (i, (name, ip)) in DEMO_NODES.iter().enumerate() {
        let (_, peer) = DEMO_NODES[1 - i];
        let conf = NginxConf {
            name: name.to_string(),
            addr: *ip,
            rtmp_port: RTMP_PORT,
            http_port: HTTP_PORT,
            push_to: vec![SocketAddr::from((peer, RTMP_PORT))],
            dir: dir.join(name),
            user_root,
            record: None,
            hls: None,
        };
        let _ = std::fs::remove_dir_all(&conf.dir);
        conf.write()
            .with_context(|| format!("writing {}", conf.conf_path().display()))?;
        let log = std::fs::File::create(conf.dir.join("stderr.log"))?;
        let child = Command::new(nginx)
            .args(conf.args())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting nginx")?;
        guards.push(Guard {
            name: format!("nginx {name}"),
            child,
        });
        println!(
            "==> backend {name}: rtmp://{} http://{} (nginx-rtmp, files in {})",
            conf.rtmp_addr(),
            conf.http_addr(),
            conf.dir.display()
        );
    }
    let start = Instant::now();
    for a in addrs {
        while TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_err() {
            if let Some((g, s)) = guards
                .iter_mut()
                .find_map(|g| g.exited().map(|s| (g.name.clone(), s)))
            {
                bail!(
                    "{g} exited at start-up ({s}); see its error.log under {}",
                    dir.display()
                );
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("the demo backends do not listen on {a}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(guards)
}

/// A self-signed ECDSA certificate for `localhost` and 127.0.0.1, key and chain in one PEM
/// file as certbot's `fullchain + privkey` concatenation. Made once and reused.
fn demo_cert(dir: &Path) -> Result<PathBuf> {
    let pem = dir.join("demo.pem");
    if pem.exists() {
        return Ok(pem);
    }
    std::fs::create_dir_all(dir)?;
    let (key, crt) = (dir.join("demo.key"), dir.join("demo.crt"));
    crate::run_checked(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "365",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .stderr(Stdio::null()),
    )
    .context("making the demo certificate with openssl")?;
    let mut bundle = std::fs::read(&crt)?;
    bundle.extend(std::fs::read(&key)?);
    std::fs::write(&pem, bundle)?;
    Ok(pem)
}

fn print_demo_help() {
    println!(
        r#"
The demo is up: the proxy listens on 127.0.0.1:1935 (RTMP), 1936 (RTMPS), 5080 (HTTP),
5443 (HTTPS, self-signed certificate in target/demo/demo.pem) and 6080 (stats page and
Prometheus metrics) in front of ams1 (127.0.0.2) and ams2 (127.0.0.3). Each node pushes what
it receives to the other, so a stream can be played from either. In another terminal:

  publish:  ffmpeg -re -f lavfi -i testsrc=size=640x360:rate=25 -c:v libx264 -preset veryfast \
              -tune zerolatency -g 25 -pix_fmt yuv420p -f flv rtmp://127.0.0.1:1935/live/test
  play:     ffplay rtmp://127.0.0.1:1935/live/test
            (headless: ffmpeg -i rtmp://127.0.0.1:1935/live/test -f null -)
  http:     curl -i http://127.0.0.1:5080/   answers "node ams1" or "node ams2"
  https:    curl -i --cacert target/demo/demo.pem https://localhost:5443/
  rtmps:    ffmpeg -i rtmps://127.0.0.1:1936/live/test -f null -   (self-signed: ffmpeg does
            not verify by default)
  stats:    http://127.0.0.1:6080/haproxy_stats  (user admin, password demo; ;csv and ;json too)
  metrics:  curl http://127.0.0.1:6080/metrics
  streams:  curl http://127.0.0.2:5080/stat  (each node's nginx-rtmp statistics)

Publish before you play: a node asked for a stream nobody publishes yet waits for it, and
then refuses a publish of that name. Ctrl-C stops the proxy and both backends.
"#
    );
}
