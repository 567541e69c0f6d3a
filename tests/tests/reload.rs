//! Configuration reload inside the running process (SIGHUP, SIGUSR2): established RTMP and
//! RTMPS publishes run on across three reloads on one TCP connection each, byte for byte
//! (the frames the nginx-rtmp node recorded equal those of a publish straight to it);
//! HTTP clients that open a connection per request see no failure while reloads happen;
//! a broken config or a port that cannot be bound keeps the running config serving and is
//! named with `file:line`; listeners are added and closed; no second process appears.
//!
//! Waits poll observable state (the proxy's log lines, listening sockets) with generous
//! bounds; nothing asserts how long anything took.

use e2e::ffmpeg::{ffmpeg_publish, rtmp_handshake, FPS};
use e2e::http_client::csv_field;
use e2e::nginx::http_get;
use e2e::nginx_http::NginxHttp;
use e2e::process::is_listening;
use e2e::tls::{KeyKind, TestCa};
use e2e::util::{require_tool, wait_until};
use e2e::{free_addr, free_port, loopback, Nginx, Proxy, Signal, TestDir};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Length of the publishes that run across the reloads.
const SECONDS: u32 = 45;
/// Bound for a reload to be logged as done (or failed).
const RELOAD_LIMIT: Duration = Duration::from_secs(30);

/// Sends `sig` and waits until the proxy logged the `n`th reload outcome (done or failed).
fn reload(proxy: &mut Proxy, sig: Signal, n: usize) {
    proxy.signal(sig);
    wait_until(&format!("reload {n} to finish"), RELOAD_LIMIT, || {
        let log = proxy.stderr();
        let outcomes =
            log.matches("reload done: ").count() + log.matches("reload failed (").count();
        (outcomes >= n).then_some(())
    });
}

/// Writes `cfg` over the running proxy's config file.
fn rewrite(proxy: &Proxy, cfg: &str) {
    std::fs::write(proxy.config_path(), cfg).expect("rewriting the config");
}

/// Processes whose command line names this proxy's config: the proxy itself, and any
/// process a reload would have started beside it.
fn processes_of(proxy: &Proxy) -> Vec<u32> {
    let cfg = proxy.config_path().display().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&cfg) {
            pids.push(pid);
        }
    }
    pids
}

fn refused(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_err()
}

struct Rtmp {
    rtmp: u16,
    rtmps: u16,
    extra: u16,
    moved: u16,
    stats: u16,
}

/// The RTMP config at reload `step`: 0 as started; 1 adds server ams2; 2 lowers rtmp_lb's
/// maxconn and adds frontend `extra` (a new listener); 3 moves rtmp_lb from its first port
/// to another (one listener closed while the publish it accepted goes on, one added).
fn rtmp_cfg(p: &Rtmp, node: &Nginx, crt: &Path, step: u8) -> String {
    let node = node.rtmp_addr();
    let rtmp_bind = if step >= 3 { p.moved } else { p.rtmp };
    let maxconn = if step >= 2 { 50 } else { 100 };
    let mut cfg = format!(
        "global
    nbthread 2

defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s

listen stats
    bind 127.0.0.1:{stats}
    mode http
    stats enable
    stats uri /stats

frontend rtmp_lb
    bind 127.0.0.1:{rtmp_bind}
    maxconn {maxconn}
    default_backend backend_rtmp

listen rtmps
    bind 127.0.0.1:{rtmps} ssl crt {crt}
    server node {node} check inter 500ms

backend backend_rtmp
    balance roundrobin
    server ams1 {node} check inter 500ms
",
        stats = p.stats,
        rtmps = p.rtmps,
        crt = crt.display(),
    );
    if step >= 1 {
        cfg.push_str(&format!("    server ams2 {node} check inter 500ms\n"));
    }
    if step >= 2 {
        cfg.push_str(&format!(
            "\nfrontend extra\n    bind 127.0.0.1:{}\n    default_backend backend_rtmp\n",
            p.extra
        ));
    }
    cfg
}

/// An RTMP and an RTMPS publish through the proxy, a third straight to the node, all of
/// the same length; three reloads (and a refused one) while they run.
#[test]
fn rtmp_and_rtmps_publishes_run_across_three_reloads() {
    let dir = TestDir::new("reload-rtmp");
    let ca = TestCa::new(dir.path());
    let crt = ca.leaf("site", &["rtmps.test"], KeyKind::EcPkcs8, false);
    let node = Nginx::rtmp_recording(loopback(2));
    let lo = Ipv4Addr::LOCALHOST;
    let p = Rtmp {
        rtmp: free_port(lo),
        rtmps: free_port(lo),
        extra: free_port(lo),
        moved: free_port(lo),
        stats: free_port(lo),
    };
    let mut proxy = Proxy::start(&rtmp_cfg(&p, &node, &crt, 0));
    let pid = proxy.pid();

    let mut through = ffmpeg_publish(
        &format!("rtmp://127.0.0.1:{}/live/through", p.rtmp),
        SECONDS,
    );
    let mut secure = ffmpeg_publish(
        &format!("rtmps://127.0.0.1:{}/live/secure", p.rtmps),
        SECONDS,
    );
    let mut direct = ffmpeg_publish(&node.url("direct"), SECONDS);
    wait_until(
        "the three publishes to reach the node",
        Duration::from_secs(20),
        || {
            let s = node.streams();
            ["through", "secure", "direct"]
                .iter()
                .all(|n| s.contains(&n.to_string()))
                .then_some(())
        },
    );
    let on_air = |pubs: &mut [&mut e2e::Publisher], when: &str| {
        for p in pubs.iter_mut() {
            assert!(
                p.try_status().is_none(),
                "{} ended {when}: {}",
                p.url(),
                p.log()
            );
        }
    };

    std::thread::sleep(Duration::from_secs(5));
    rewrite(&proxy, &rtmp_cfg(&p, &node, &crt, 1));
    reload(&mut proxy, Signal::SIGHUP, 1);
    assert!(
        proxy.stderr().contains(
            "reload done: listeners 3 kept, 0 added, 0 closed; servers 2 kept, 1 added, 0 removed"
        ),
        "a server added, every other carried:\n{}",
        proxy.stderr()
    );
    on_air(&mut [&mut through, &mut secure], "after the first reload");

    // A broken config: refused with its line, the running one kept.
    let broken = rtmp_cfg(&p, &node, &crt, 2) + "    no-such-keyword here\n";
    let line = broken.lines().count();
    rewrite(&proxy, &broken);
    reload(&mut proxy, Signal::SIGUSR2, 2);
    let named = format!("reload refused: {}:{line}: ", proxy.config_path().display());
    assert!(
        proxy.stderr().contains(&named),
        "want {named:?} in:\n{}",
        proxy.stderr()
    );
    assert!(
        !is_listening(pid, SocketAddr::from((lo, p.extra))),
        "nothing of it applied"
    );

    std::thread::sleep(Duration::from_secs(5));
    rewrite(&proxy, &rtmp_cfg(&p, &node, &crt, 2));
    reload(&mut proxy, Signal::SIGUSR2, 3);
    rtmp_handshake(SocketAddr::from((lo, p.extra)), Duration::from_secs(10))
        .expect("the added listener accepts and reaches the node");
    assert_eq!(
        csv_field(p.stats, "rtmp_lb", "FRONTEND", "slim"),
        "50",
        "maxconn followed"
    );
    on_air(&mut [&mut through, &mut secure], "after the second reload");

    std::thread::sleep(Duration::from_secs(5));
    rewrite(&proxy, &rtmp_cfg(&p, &node, &crt, 3));
    reload(&mut proxy, Signal::SIGHUP, 4);
    let first = SocketAddr::from((lo, p.rtmp));
    assert!(!is_listening(pid, first), "the removed listener is closed");
    assert!(refused(first), "the removed listener refuses connections");
    assert!(
        is_listening(pid, SocketAddr::from((lo, p.moved))),
        "the moved bind listens"
    );
    on_air(&mut [&mut through, &mut secure], "after the third reload");

    through.wait_success(Duration::from_secs(30));
    secure.wait_success(Duration::from_secs(30));
    direct.wait_success(Duration::from_secs(30));
    // One connection each, end to end: the frontends' session totals (carried over the
    // reloads with their counters) count the publish alone.
    assert_eq!(csv_field(p.stats, "rtmp_lb", "FRONTEND", "stot"), "1");
    assert_eq!(csv_field(p.stats, "rtmps", "FRONTEND", "stot"), "1");
    assert_eq!(processes_of(&proxy), [pid], "one process, the one started");

    let [reference, through, secure] = node.recorded_frames(&["direct", "through", "secure"])[..]
    else {
        unreachable!("three recordings asked for")
    };
    assert_eq!(
        reference,
        u64::from(SECONDS * FPS),
        "the publish without the proxy"
    );
    assert_eq!(through, reference, "RTMP across the reloads");
    assert_eq!(secure, reference, "RTMPS across the reloads");
}

fn http_cfg(port: u16, extra: u16, web: SocketAddr, step: u8) -> String {
    let mut cfg = format!(
        "global
    nbthread 2

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend web
    bind 127.0.0.1:{port}
    maxconn {}
    default_backend be

backend be
    server n1 {web} check inter 500ms
",
        1000 - u32::from(step) * 100
    );
    if step >= 1 {
        cfg.push_str(&format!("    server n2 {web} check inter 500ms\n"));
    }
    if step >= 2 {
        cfg.push_str(&format!(
            "\nfrontend other\n    bind 127.0.0.1:{extra}\n    default_backend be\n"
        ));
    }
    cfg
}

/// wrk and curl, each opening a connection per request, through three reloads: every
/// request answered 2xx, none failed.
#[test]
fn http_clients_see_no_failure_across_reloads() {
    let web = NginxHttp::start("web", free_addr(loopback(2)), None);
    let lo = Ipv4Addr::LOCALHOST;
    let (port, extra) = (free_port(lo), free_port(lo));
    let mut proxy = Proxy::start(&http_cfg(port, extra, web.addr(), 0));
    let url = format!("http://127.0.0.1:{port}/");
    let wrk = std::thread::spawn({
        let url = url.clone();
        move || {
            Command::new(require_tool("wrk"))
                .args(["-t", "2", "-c", "8", "-d", "15s", "--timeout", "10s"])
                .args(["-H", "Connection: close", &url])
                .output()
                .expect("running wrk")
        }
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let curls = std::thread::spawn({
        let (url, stop) = (url.clone(), stop.clone());
        move || {
            let (mut ok, mut bad) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = Command::new(require_tool("curl"))
                    .args([
                        "-sS",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "--max-time",
                        "10",
                        &url,
                    ])
                    .output()
                    .expect("running curl");
                let code = String::from_utf8_lossy(&out.stdout).to_string();
                if out.status.success() && code.starts_with('2') {
                    ok += 1;
                } else {
                    bad.push(format!("{code} {}", String::from_utf8_lossy(&out.stderr)));
                }
            }
            (ok, bad)
        }
    });
    for step in 1..=3u8 {
        std::thread::sleep(Duration::from_secs(3));
        rewrite(&proxy, &http_cfg(port, extra, web.addr(), step));
        reload(&mut proxy, Signal::SIGHUP, usize::from(step));
    }
    let out = wrk.join().expect("wrk thread");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, bad) = curls.join().expect("curl thread");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests: u64 = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in")
                .and_then(|(n, _)| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no request count in wrk's output:\n{text}"));
    assert!(requests > 0, "{text}");
    eprintln!("across three reloads: wrk {requests} requests, curl {ok}");
    assert!(!text.contains("Non-2xx"), "every answer 2xx:\n{text}");
    assert!(
        !text.contains("Socket errors"),
        "no failed request:\n{text}"
    );
    assert!(ok > 0 && bad.is_empty(), "curl: {ok} ok, failures: {bad:?}");
    assert_eq!(
        proxy.stderr().matches("reload done: ").count(),
        3,
        "{}",
        proxy.stderr()
    );
    assert_eq!(
        http_get(SocketAddr::from((lo, extra)), "/")
            .map(|r| r.0)
            .ok(),
        Some(200)
    );
    assert_eq!(processes_of(&proxy), [proxy.pid()]);
}

/// A reload that cannot bind a new listener (the port is taken) fails as a whole: nothing
/// of the new config applies, the running one serves, and the next good reload works.
#[test]
fn a_reload_that_cannot_bind_keeps_the_running_config() {
    let web = NginxHttp::start("web", free_addr(loopback(2)), None);
    let lo = Ipv4Addr::LOCALHOST;
    let (port, extra) = (free_port(lo), free_port(lo));
    let mut proxy = Proxy::start(&http_cfg(port, extra, web.addr(), 0));
    // Taken without SO_REUSEPORT, so the proxy's bind fails.
    let squatter = std::net::TcpListener::bind((lo, extra)).expect("taking the port");
    rewrite(&proxy, &http_cfg(port, extra, web.addr(), 2));
    reload(&mut proxy, Signal::SIGHUP, 1);
    let log = proxy.stderr();
    assert!(
        log.contains(&format!("cannot bind 127.0.0.1:{extra}")) && log.contains("reload failed ("),
        "{log}"
    );
    assert!(!log.contains("reload done"), "{log}");
    assert_eq!(
        http_get(SocketAddr::from((lo, port)), "/")
            .map(|r| r.0)
            .ok(),
        Some(200)
    );
    drop(squatter);
    reload(&mut proxy, Signal::SIGHUP, 2);
    assert!(
        proxy
            .stderr()
            .contains("reload done: listeners 1 kept, 1 added"),
        "{}",
        proxy.stderr()
    );
    assert_eq!(
        http_get(SocketAddr::from((lo, extra)), "/")
            .map(|r| r.0)
            .ok(),
        Some(200)
    );
}
