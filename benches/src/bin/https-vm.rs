//! The `https-bulk-vm` program, run by the VM's init (see `benches/src/vm.rs`): a plain HTTP
//! backend serving a large patterned body ← the proxy binary (`mode http`, `bind … ssl`,
//! `nbthread 1`) ← a rustls client downloading it and checking every byte. Each suite runs
//! once with `tune.ssl.ktls on` (the kernel must take the session: `TlsTxSw` grows) and once
//! with `off` (it must not), the order alternating. One `VMBENCH {json}` line per run.

use anyhow::{bail, Context, Result};
use benches::peers::tls::{make_cert, suite_client_config, SNI};
use benches::procfs::{read_stat, read_task_stat, ticks_per_sec};
use benches::vm::{fill, first_mismatch, Carrier, VmRun, SUITES};
use clap::Parser;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Cli {
    /// The proxy binary (static, in the initramfs).
    #[arg(long)]
    proxy: PathBuf,
    /// Body size in MiB.
    #[arg(long, default_value_t = 128)]
    mib: u64,
    /// Repetitions of every (suite, carrier) pair.
    #[arg(long, default_value_t = 1)]
    reps: usize,
    /// Where configs, the certificate and proxy logs go.
    #[arg(long, default_value = "/tmp")]
    dir: PathBuf,
}

const CHUNK: usize = 256 * 1024;
/// A run on TCG moves tens of MB/s at worst; anything slower is stuck.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    let cli = Cli::parse();
    match run_all(&cli) {
        Ok(true) => println!("VMBENCH-DONE ok"),
        Ok(false) => {
            println!("VMBENCH-DONE failed");
            std::process::exit(1);
        }
        Err(e) => {
            println!("VMBENCH-DONE error: {e:#}");
            std::process::exit(2);
        }
    }
}

/// True when every run counted.
fn run_all(cli: &Cli) -> Result<bool> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let body = cli.mib << 20;
    let backend = start_backend(body)?;
    let cert = make_cert(&cli.dir).context("certificate")?;
    let mut all_ok = true;
    for rep in 0..cli.reps {
        for (i, suite) in SUITES.into_iter().enumerate() {
            // Which carrier goes first alternates per suite and per repetition, so neither
            // always runs first (on a cold VM) or right after the other suite.
            let order = if (rep + i).is_multiple_of(2) {
                Carrier::BOTH
            } else {
                [Carrier::Userspace, Carrier::Ktls]
            };
            for carrier in order {
                let mut r = VmRun {
                    kernel: kernel.clone(),
                    suite: suite.to_string(),
                    carrier,
                    rep,
                    bytes: 0,
                    secs: 0.0,
                    proxy_cpu_s: 0.0,
                    client_cpu_s: 0.0,
                    machine_cpu_s: 0.0,
                    ktls_tx_sockets: None,
                    failure: None,
                };
                let spec = RunSpec {
                    proxy: &cli.proxy,
                    dir: &cli.dir,
                    cert: &cert.combined,
                    backend,
                    body,
                };
                if let Err(e) = one_run(&spec, &mut r) {
                    r.failure = Some(format!("{e:#}"));
                }
                all_ok &= r.ok();
                println!("{}", r.line());
            }
        }
    }
    Ok(all_ok)
}

/// The backend: every connection gets one `200` with `body` pattern bytes, then a close.
fn start_backend(body: u64) -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("backend bind")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = serve(s, body);
            });
        }
    });
    Ok(addr)
}

fn serve(mut s: TcpStream, body: u64) -> std::io::Result<()> {
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 || head.len() > 65536 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {body}\r\n\r\n"
    );
    s.write_all(answer.as_bytes())?;
    let mut chunk = vec![0u8; CHUNK];
    let mut sent = 0u64;
    while sent < body {
        let n = (body - sent).min(CHUNK as u64) as usize;
        fill(sent, &mut chunk[..n]);
        s.write_all(&chunk[..n])?;
        sent += n as u64;
    }
    Ok(())
}

struct RunSpec<'a> {
    proxy: &'a Path,
    dir: &'a Path,
    cert: &'a Path,
    backend: SocketAddr,
    body: u64,
}

fn one_run(spec: &RunSpec<'_>, r: &mut VmRun) -> Result<()> {
    let front = free_port()?;
    let cfg = spec.dir.join(format!("https-{}.cfg", r.carrier.keyword()));
    std::fs::write(&cfg, config(r.carrier, front, spec.cert, spec.backend))?;
    let log = spec
        .dir
        .join(format!("proxy-{}-{}.log", r.suite, r.carrier.keyword()));
    let mut proxy = Proxy::start(spec.proxy, &cfg, &log, front)?;
    let tls0 = tls_tx_sockets();
    let (m0, p0, c0) = (machine_ticks()?, proxy.cpu_ticks()?, thread_cpu_s());
    let t0 = Instant::now();
    let got = download(front, &r.suite, spec.body);
    r.secs = t0.elapsed().as_secs_f64();
    let (m1, p1, c1) = (machine_ticks()?, proxy.cpu_ticks()?, thread_cpu_s());
    let tls1 = tls_tx_sockets();
    proxy.stop();
    let hz = ticks_per_sec();
    r.machine_cpu_s = m1.saturating_sub(m0) as f64 / hz;
    r.proxy_cpu_s = p1.saturating_sub(p0) as f64 / hz;
    r.client_cpu_s = c1 - c0;
    r.ktls_tx_sockets = tls0.zip(tls1).map(|(a, b)| b.saturating_sub(a));
    r.bytes = got.with_context(|| format!("download (proxy log: {})", proxy_tail(&log)))?;
    check_carrier(r)
}

/// kTLS runs must have had the kernel take the session; userspace runs must not.
fn check_carrier(r: &VmRun) -> Result<()> {
    match (r.carrier, r.ktls_tx_sockets) {
        (Carrier::Ktls, Some(n)) if n >= 1 => Ok(()),
        (Carrier::Ktls, n) => bail!("kTLS did not engage (TlsTxSw grew by {n:?})"),
        // No tls_stat at all: no tls module, so certainly no kTLS.
        (Carrier::Userspace, Some(0) | None) => Ok(()),
        (Carrier::Userspace, n) => bail!("userspace run used kTLS (TlsTxSw grew by {n:?})"),
    }
}

fn config(carrier: Carrier, front: u16, cert: &Path, backend: SocketAddr) -> String {
    format!(
        "global\n    nbthread 1\n    tune.ssl.ktls {}\n\
         defaults\n    mode http\n    timeout connect 5s\n    timeout client 120s\n    timeout server 120s\n\
         frontend https\n    bind 127.0.0.1:{front} ssl crt {}\n    default_backend b\n\
         backend b\n    server s {backend}\n",
        carrier.keyword(),
        cert.display()
    )
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The proxy process of one run; killed when dropped.
struct Proxy {
    child: Child,
}

impl Proxy {
    fn start(bin: &Path, cfg: &Path, log: &Path, port: u16) -> Result<Proxy> {
        let out = std::fs::File::create(log)?;
        let child = Command::new(bin)
            .arg("-f")
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut p = Proxy { child };
        // A plain connect is enough to know it listens (the TLS bind then sees a client
        // that leaves during the handshake: one failed handshake in its counters).
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(st)) = p.child.try_wait() {
                bail!("proxy exited at start ({st}): {}", proxy_tail(log));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(p);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        p.stop();
        bail!("proxy not listening after 30 s: {}", proxy_tail(log))
    }

    fn cpu_ticks(&self) -> Result<u64> {
        Ok(read_task_stat(self.child.id())?.cpu_ticks)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn proxy_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(6).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
}

/// GET through the proxy with only `suite` offered; returns the body bytes received, all
/// checked against the pattern, or why not.
fn download(front: u16, suite: &str, want: u64) -> Result<u64> {
    let cfg = suite_client_config(suite)?;
    let name = rustls::pki_types::ServerName::try_from(SNI)?;
    let mut conn = rustls::ClientConnection::new(cfg, name)?;
    let mut sock = TcpStream::connect(("127.0.0.1", front))?;
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(
        format!("GET /big HTTP/1.1\r\nHost: {SNI}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut buf = vec![0u8; CHUNK];
    let (len, mut got, mut have) = read_head(&mut tls, &mut buf)?;
    if len != want {
        bail!("Content-Length {len}, expected {want}");
    }
    let negotiated = tls
        .conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()));
    if negotiated.as_deref() != Some(suite) {
        bail!("negotiated {negotiated:?}, not {suite}");
    }
    loop {
        if let Some(bad) = first_mismatch(got, &buf[..have]) {
            bail!("body byte {bad} differs from the pattern");
        }
        got += have as u64;
        if got >= want {
            break;
        }
        have = match tls.read(&mut buf) {
            Ok(0) => bail!("connection closed after {got} of {want} bytes"),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => 0,
            Err(e) => return Err(e).context(format!("after {got} of {want} bytes")),
        };
    }
    if got != want {
        bail!("{got} bytes, more than the {want} announced");
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Ok(got)
}

/// Reads until the end of the response head; returns the Content-Length, 0 (body bytes
/// checked so far) and how many body bytes are at the start of `buf`.
fn read_head(tls: &mut impl Read, buf: &mut [u8]) -> Result<(u64, u64, usize)> {
    let mut head = Vec::new();
    loop {
        let n = tls.read(buf)?;
        if n == 0 {
            bail!("closed before the response head ended");
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
            if !text.starts_with("http/1.1 200") {
                bail!("answer: {}", text.lines().next().unwrap_or(""));
            }
            let len = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .context("no Content-Length")?;
            let rest = head.len() - (end + 4);
            buf[..rest].copy_from_slice(&head[end + 4..]);
            return Ok((len, 0, rest));
        }
        if head.len() > 65536 {
            bail!("response head over 64 KiB");
        }
    }
}

fn machine_ticks() -> Result<u64> {
    Ok(read_stat()?.all.busy())
}

/// CPU time of the calling thread (the client: decryption and the pattern check).
fn thread_cpu_s() -> f64 {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_THREAD needs nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// `TlsTxSw` of `/proc/net/tls_stat`: sockets that got kernel TX crypto so far (`None`
/// without the tls module).
fn tls_tx_sockets() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/tls_stat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("TlsTxSw"))
        .and_then(|v| v.trim().parse().ok())
}
