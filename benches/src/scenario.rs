//! The scenarios, their timings, and the interleaved runner: for each repetition every variant
//! runs once, in an order rotated by one each repetition (A B C, B C A, …) so that no variant
//! always runs right after the same neighbour or always first.

use crate::error::{BenchError, Result};
use crate::hop::{self, Engine, Hop, Mode, Spec, Variant};
use crate::measure::{self, Pids, Snapshot, Window};
use crate::peers::backend::Backend;
use crate::peers::bulk::{self, Direction};
use crate::peers::nginx::{Nginx, OBJECT_PATH};
use crate::peers::tls::{self, CertFiles};
use crate::peers::{h2load, idle, ingest, rate, rtmp, wrk};
use crate::pin::Plan;
use crate::procfs;
use crate::record::{IdleMemory, RunRecord, Unit};
use crate::stats::percentile;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Frontends (hops) listen here, backends there: loopback only, away from 127.0.0.1 where the
/// e2e tests and the demo bind.
pub const FRONT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 77, 1));
pub const BACK_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 77, 2));

/// How long a hop may take to listen in a run, and in an availability probe (a proxy that
/// keeps a bind closed because it lacks the feature must not cost the whole run much time).
pub(crate) const START_LIMIT: Duration = Duration::from_secs(5);

/// Reloads in a `--quick` run of the reload scenario (its window is shorter).
const QUICK_RELOADS: usize = 3;
/// Record changes in a `--quick` run of the dns-change scenario.
const QUICK_DNS_CHANGES: usize = 2;
const PROBE_LIMIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Ingest {
        flows: usize,
        mbit: f64,
    },
    Bulk(Direction),
    ConnRate,
    HttpKeepAlive,
    HttpsHandshake,
    HttpsBulk,
    /// Many small requests on a few kept TLS connections, by h2load: HTTP/2 streams
    /// (`h2`), or HTTP/1.1 requests one at a time per connection.
    HttpsRequests {
        h2: bool,
    },
    /// Real ffmpeg publishers into nginx-rtmp.
    RtmpFfmpeg {
        publishers: usize,
    },
    /// HTTPS bulk inside a qemu VM, kTLS vs userspace: booted by the xtask, reported by
    /// `crate::vm` (never through [`run`]).
    HttpsBulkVm,
    /// Up to `flows` echoed flows held open and silent: what the hop's memory grows by.
    Idle {
        flows: usize,
    },
    /// The ingest load while the hop is reloaded `reloads` times inside the window; the flows
    /// open in `reloads + 1` generations, one before the window and one after each reload, as
    /// publishers come and go (see `crate::reload`).
    Reload {
        flows: usize,
        mbit: f64,
        reloads: usize,
    },
    /// The ingest load while the hop's servers come from DNS and the records change `changes`
    /// times inside the window (an address added, then another removed; see
    /// `crate::dnschange`).
    DnsChange {
        flows: usize,
        mbit: f64,
        changes: usize,
    },
    /// Ingest, and bulk, with client, balancer and backend in network namespaces of their
    /// own (see `crate::netns`); the floor is routing, not a direct connection.
    NsIngest {
        flows: usize,
        mbit: f64,
    },
    NsBulk(Direction),
    /// SRT-like ingest over UDP: `flows` paced flows of 1316-byte datagrams at `mbit` each,
    /// a 44-byte reply per 4 datagrams; the reference peer is nginx `stream`, not HAProxy
    /// (see `crate::srtingest`).
    SrtIngest {
        flows: usize,
        mbit: f64,
    },
}

impl Kind {
    pub fn unit(self) -> Unit {
        match self {
            Kind::Ingest { .. }
            | Kind::Bulk(_)
            | Kind::Reload { .. }
            | Kind::DnsChange { .. }
            | Kind::NsIngest { .. }
            | Kind::NsBulk(_)
            | Kind::SrtIngest { .. }
            | Kind::HttpsBulk
            | Kind::RtmpFfmpeg { .. }
            | Kind::HttpsBulkVm => Unit::Gbit,
            Kind::ConnRate => Unit::Connection,
            Kind::HttpKeepAlive | Kind::HttpsRequests { .. } => Unit::Request,
            Kind::HttpsHandshake => Unit::Handshake,
            Kind::Idle { .. } => Unit::Flow,
        }
    }

    /// HTTP scenarios run the proxy once (its HTTP engine); TCP ones once per engine.
    pub fn needs_http(self) -> bool {
        matches!(
            self,
            Kind::HttpKeepAlive
                | Kind::HttpsHandshake
                | Kind::HttpsBulk
                | Kind::HttpsRequests { .. }
                | Kind::HttpsBulkVm
        )
    }

    /// Runs the proxy once per TCP forward engine (which the runner probes first).
    pub fn uses_tcp_engines(self) -> bool {
        !self.needs_http() && !matches!(self, Kind::SrtIngest { .. })
    }

    /// Runs in network namespaces, against routing instead of a direct connection.
    pub fn namespaced(self) -> bool {
        matches!(self, Kind::NsIngest { .. } | Kind::NsBulk(_))
    }

    /// The variant whose cost is subtracted: what the load costs without a hop.
    pub fn baseline(self) -> Variant {
        if self.namespaced() {
            Variant::Routing
        } else {
            Variant::Direct
        }
    }

    /// The peer the ratios (×HAProxy columns) compare with: HAProxy, except over UDP, which
    /// HAProxy community does not proxy: nginx's `stream` module there.
    pub fn reference(self) -> Variant {
        match self {
            Kind::SrtIngest { .. } => Variant::NginxStream,
            _ => Variant::Haproxy,
        }
    }

    /// How the report names [`Kind::reference`] in column heads.
    pub fn reference_name(self) -> &'static str {
        match self.reference() {
            Variant::NginxStream => "nginx",
            _ => "HAProxy",
        }
    }

    fn needs_tls(self) -> bool {
        matches!(
            self,
            Kind::HttpsHandshake | Kind::HttpsBulk | Kind::HttpsRequests { .. }
        )
    }

    /// The hop's TLS bind offers h2 first, as a browser-facing HTTPS frontend does: the
    /// HTTP/1.1 and HTTP/2 request scenarios share the config, only the client differs.
    fn alpn(self) -> Option<&'static str> {
        matches!(self, Kind::HttpsRequests { .. }).then_some("h2,http/1.1")
    }

    /// Repetitions, warm-up and measured window; `quick` keeps the whole bench under 5 min.
    pub fn timing(self, quick: bool) -> Timing {
        let (reps, warm, win) = match (self, quick) {
            (Kind::Ingest { .. } | Kind::NsIngest { .. } | Kind::SrtIngest { .. }, true) => {
                (3, 0.5, 1.5)
            }
            (Kind::Ingest { .. } | Kind::NsIngest { .. } | Kind::SrtIngest { .. }, false) => {
                (6, 2.0, 10.0)
            }
            // The window holds every reload and the generation of flows after it.
            (Kind::Reload { .. }, true) => (2, 0.5, 4.0),
            (Kind::Reload { .. }, false) => (3, 2.0, 12.0),
            // Each record edit is left 2.4 s or more: a resolution and the checks of a new
            // address, then a generation of flows (see `crate::dnschange`).
            (Kind::DnsChange { .. }, true) => (1, 0.5, 12.0),
            (Kind::DnsChange { .. }, false) => (3, 2.0, 18.0),
            // Publishers need a second to connect and handshake.
            (Kind::RtmpFfmpeg { .. }, true) => (3, 2.0, 2.0),
            (Kind::RtmpFfmpeg { .. }, false) => (6, 3.0, 10.0),
            // Warm-up: flows settle after the last one opened; window: the hop's idle CPU.
            // Memory barely varies between runs, so one repetition does for a quick look.
            (Kind::Idle { .. }, true) => (1, 1.0, 1.0),
            (Kind::Idle { .. }, false) => (3, 2.0, 5.0),
            (_, true) => (3, 0.2, 1.0),
            (_, false) => (6, 1.0, 5.0),
        };
        Timing {
            reps,
            warmup: Duration::from_secs_f64(warm),
            window: Duration::from_secs_f64(win),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub reps: usize,
    pub warmup: Duration,
    pub window: Duration,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub title: &'static str,
    pub kind: Kind,
    /// Part of `--quick` when no scenario is named (the 5-minute budget decides).
    pub in_quick: bool,
}

pub fn all() -> Vec<Scenario> {
    let s = |name, title, kind| Scenario {
        name,
        title,
        kind,
        in_quick: true,
    };
    vec![
        s(
            "ingest-200x4",
            "RTMP-like ingest: 200 flows x 4 Mbit/s, 4 KiB chunks, 16 B ack per 64 KiB",
            Kind::Ingest {
                flows: 200,
                mbit: 4.0,
            },
        ),
        s(
            "ingest-1000x1",
            "RTMP-like ingest: 1000 flows x 1 Mbit/s, 4 KiB chunks, 16 B ack per 64 KiB",
            Kind::Ingest {
                flows: 1000,
                mbit: 1.0,
            },
        ),
        s("bulk-up", "one bulk TCP flow, client to backend", Kind::Bulk(Direction::Up)),
        s("bulk-down", "one bulk TCP flow, backend to client", Kind::Bulk(Direction::Down)),
        s(
            "conn-rate",
            "new TCP connections/s: 32 in parallel, 64 B request, 64 B answer, server closes",
            Kind::ConnRate,
        ),
        s(
            "http-keepalive",
            "HTTP/1.1 keep-alive, 1 KiB objects, wrk -t1 -c16",
            Kind::HttpKeepAlive,
        ),
        s(
            "https-handshake",
            "HTTPS new connections/s: full TLS handshake (no resumption) + one 1 KiB GET, 4 in parallel",
            Kind::HttpsHandshake,
        ),
        s(
            "https-keepalive",
            "HTTPS HTTP/1.1 keep-alive, 1 KiB objects: h2load --h1, 16 TLS connections (TLS terminated by the hop; direct: by nginx)",
            Kind::HttpsRequests { h2: false },
        ),
        s(
            "https-h2",
            "HTTPS HTTP/2, 1 KiB objects: h2load, 2 TLS connections x 8 concurrent streams (TLS and HTTP/2 terminated by the hop; direct: by nginx)",
            Kind::HttpsRequests { h2: true },
        ),
        s(
            "https-bulk",
            "one bulk HTTPS download (TLS terminated by the hop; direct: by nginx)",
            Kind::HttpsBulk,
        ),
        s(
            "idle-10k",
            "idle flows: 10 000 echoed mode-tcp flows (fewer where the open-file limit says so) \
             held open and silent after 16 B each way; hop RSS growth per 1000 flows",
            Kind::Idle { flows: 10_000 },
        ),
        Scenario {
            in_quick: false,
            ..s(
                crate::vm::SCENARIO,
                "HTTPS bulk download inside a qemu VM (Linux 6.12, TCG): kTLS vs userspace rustls, AES-128-GCM and ChaCha20 (relative figures only)",
                Kind::HttpsBulkVm,
            )
        },
        // Not in the default --quick set (its 5-minute budget): name them with --scenario.
        Scenario {
            in_quick: false,
            ..s(
                "reload",
                "reload under ingest: 200 flows x 4 Mbit/s opened in 4 (quick) / 6 generations, \
                 one after each of 3 / 5 reloads in the window (proxy: SIGHUP; HAProxy: -W, \
                 SIGUSR2 to the master; no hard-stop-after)",
                Kind::Reload {
                    flows: 200,
                    mbit: 4.0,
                    reloads: 5,
                },
            )
        },
        Scenario {
            in_quick: false,
            ..s(
                "dns-change",
                "DNS change under ingest: 200 flows x 4 Mbit/s to server-template filled from \
                 dnsmasq (2 of 3 addresses named); 2 (quick) / 3 changes in the window, each an \
                 address added then another removed; flows opened in generations, one after \
                 each record edit",
                Kind::DnsChange {
                    flows: 200,
                    mbit: 4.0,
                    changes: 3,
                },
            )
        },
        Scenario {
            in_quick: false,
            ..s(
                "ns-ingest-200x4",
                "RTMP-like ingest across network namespaces (client, balancer, backend on veth): \
                 200 flows x 4 Mbit/s; floor = routing",
                Kind::NsIngest {
                    flows: 200,
                    mbit: 4.0,
                },
            )
        },
        Scenario {
            in_quick: false,
            ..s(
                "ns-ingest-1000x1",
                "RTMP-like ingest across network namespaces: 1000 flows x 1 Mbit/s; floor = routing",
                Kind::NsIngest {
                    flows: 1000,
                    mbit: 1.0,
                },
            )
        },
        Scenario {
            in_quick: false,
            ..s(
                "ns-bulk-up",
                "one bulk TCP flow across network namespaces, client to backend; floor = routing",
                Kind::NsBulk(Direction::Up),
            )
        },
        Scenario {
            in_quick: false,
            ..s(
                "ns-bulk-down",
                "one bulk TCP flow across network namespaces, backend to client; floor = routing",
                Kind::NsBulk(Direction::Down),
            )
        },
        Scenario {
            in_quick: false,
            ..s(
                "srt-ingest",
                "SRT-like ingest over UDP: 100 flows x 4 Mbit/s of 1316 B datagrams, a 44 B \
                 reply per 4 datagrams; reference peer nginx stream (1 worker), not HAProxy \
                 (no UDP in HAProxy community)",
                Kind::SrtIngest {
                    flows: 100,
                    mbit: 4.0,
                },
            )
        },
        Scenario {
            in_quick: false,
            ..s(
                "rtmp-ffmpeg",
                "real RTMP: 20 ffmpeg publishers (-re, ~2 Mbit/s clip, stream copy) into nginx-rtmp",
                Kind::RtmpFfmpeg { publishers: 20 },
            )
        },
    ]
}

/// Everything the runs share.
pub struct Ctx {
    pub plan: Plan,
    pub proxy_bin: PathBuf,
    /// Configs, logs, certificates of this bench run.
    pub work: PathBuf,
    pub quick: bool,
    /// Proxy variants for TCP scenarios (engines this build has, or the one asked for).
    pub tcp_engines: Vec<Engine>,
    /// The engine the proxy runs with in HTTP scenarios.
    pub http_engine: Engine,
    probes: Mutex<Probes>,
}

#[derive(Default)]
struct Probes {
    clip: Option<PathBuf>,
    http: Option<std::result::Result<(), String>>,
    tls: Option<std::result::Result<(), String>>,
    cert: Option<std::sync::Arc<CertFiles>>,
}

impl Ctx {
    pub fn new(
        plan: Plan,
        proxy_bin: PathBuf,
        work: PathBuf,
        quick: bool,
        tcp_engines: Vec<Engine>,
        http_engine: Engine,
    ) -> Ctx {
        Ctx {
            plan,
            proxy_bin,
            work,
            quick,
            tcp_engines,
            http_engine,
            probes: Mutex::new(Probes::default()),
        }
    }
}

/// The result of one scenario: its runs, or why it did not run for some variant.
pub struct Outcome {
    pub scenario: Scenario,
    pub variants: Vec<Variant>,
    pub records: Vec<RunRecord>,
    /// (variant label, why it was not run)
    pub unavailable: Vec<(String, String)>,
}

pub fn run(ctx: &Ctx, sc: &Scenario, unavailable_engines: &[(String, String)]) -> Outcome {
    let mut variants = vec![Variant::Direct, Variant::Haproxy];
    let mut unavailable = Vec::new();
    if let Kind::Idle { flows } = sc.kind {
        // splice-auto changes nothing on a silent flow; copy is the engine that holds
        // buffers, auto what an operator gets.
        let engines = ctx.tcp_engines.iter().copied();
        variants.extend(
            engines
                .filter(|e| IDLE_ENGINES.contains(e))
                .map(Variant::Proxy),
        );
        let idle_label = |l: &str| IDLE_ENGINES.iter().any(|e| Variant::Proxy(*e).label() == l);
        let notes = unavailable_engines.iter().filter(|(l, _)| idle_label(l));
        unavailable.extend(notes.cloned());
        let (n, limit) = idle_capacity(flows);
        println!(
            "  {}: {n} flows (asked {flows}; open-file limit {limit}: each flow holds 2 \
             descriptors in the bench, client and backend, and 2 in the hop)",
            sc.name
        );
    } else if sc.kind.namespaced() {
        (variants, unavailable) = crate::nsrun::variants(ctx, unavailable_engines);
    } else if matches!(sc.kind, Kind::SrtIngest { .. }) {
        // UDP: no HAProxy, no TCP forward engines.
        (variants, unavailable) = crate::srtingest::variants(ctx);
    } else if matches!(sc.kind, Kind::Reload { .. }) {
        // splice-auto changes nothing about how HAProxy reloads.
        variants.extend(ctx.tcp_engines.iter().map(|e| Variant::Proxy(*e)));
        unavailable.extend_from_slice(unavailable_engines);
    } else if matches!(sc.kind, Kind::DnsChange { .. }) {
        // What an operator gets (auto); the engines move bytes, not server changes.
        variants.extend(
            ctx.tcp_engines
                .iter()
                .map(|e| Variant::Proxy(*e))
                .filter(|v| crate::dnschange::runs(*v)),
        );
        if !ctx.tcp_engines.contains(&Engine::Auto) {
            unavailable.push((
                Variant::Proxy(Engine::Auto).label(),
                "dns-change runs the proxy with forward-engine auto only".into(),
            ));
        }
    } else if !sc.kind.needs_http() {
        variants.push(Variant::HaproxySplice);
        variants.extend(ctx.tcp_engines.iter().map(|e| Variant::Proxy(*e)));
        unavailable.extend_from_slice(unavailable_engines);
    }
    // The HTTP scenarios share one nginx; it also serves the proxy's availability probe.
    let mut nginx = None;
    let mut cert = None;
    if sc.kind.needs_http() {
        match http_setup(ctx, sc.kind) {
            Ok((n, c)) => {
                nginx = Some(n);
                cert = c;
            }
            Err(e) => {
                println!("  {}: cannot set up backends: {e}", sc.name);
                return Outcome {
                    scenario: sc.clone(),
                    variants: vec![],
                    records: vec![],
                    unavailable: vec![("all".into(), e.to_string())],
                };
            }
        }
        let n = nginx.as_ref().expect("set above");
        match proxy_serves(ctx, sc.kind, n, cert.as_deref()) {
            Ok(()) => variants.push(Variant::Proxy(ctx.http_engine)),
            Err(why) => {
                println!("  {}: proxy: {why}", sc.name);
                unavailable.push((Variant::Proxy(ctx.http_engine).label(), why));
            }
        }
    }
    let timing = sc.kind.timing(ctx.quick);
    let mut records = Vec::new();
    for rep in 0..timing.reps {
        for j in 0..variants.len() {
            let v = variants[(j + rep) % variants.len()];
            let rec = run_once(ctx, sc, v, rep, timing, nginx.as_ref(), cert.as_deref());
            println!("{}", progress_line(sc, &rec, timing.reps));
            records.push(rec);
        }
    }
    Outcome {
        scenario: sc.clone(),
        variants,
        records,
        unavailable,
    }
}

fn progress_line(sc: &Scenario, r: &RunRecord, reps: usize) -> String {
    let head = format!("  [{} {}/{}] {:<20}", sc.name, r.rep + 1, reps, r.variant);
    if let Some(f) = &r.failure {
        return format!("{head} FAILED: {f}");
    }
    if let Some(m) = &r.idle {
        return idle_line(&head, m);
    }
    let reload = r.reload.as_ref().map_or(String::new(), |f| {
        format!(
            "  reloads {}/{}, flows cut {}, hop processes after {}",
            f.done,
            f.asked,
            f.flows_cut,
            f.processes_after.map_or("-".into(), |n| n.to_string())
        )
    });
    let srt = r.srt.as_ref().map_or(String::new(), |f| {
        format!(
            "  p50 {}  datagrams sent {} lost {} reordered {} blocked {}  replies {}/{}",
            r.p50_us.map_or("-".into(), |u| format!("{u} µs")),
            f.sent,
            f.lost,
            f.reordered,
            f.send_blocked,
            f.replies_received,
            f.replies_sent
        )
    });
    let syscalls = r
        .syscalls_per_unit
        .map_or(String::new(), |n| format!("  syscalls/unit {n:.2}"));
    let dns = r.dns.as_ref().map_or(String::new(), |f| {
        format!(
            "  edits {}, adds with flows {}/{}, flows to removed {}, held across removal {}, \
             hop maintenance lines {}, flows per address {:?}",
            f.changes,
            f.adds_with_flows,
            f.adds,
            f.flows_to_removed,
            f.held_across_removal,
            f.hop_maintenance_lines
                .map_or("-".into(), |n| n.to_string()),
            f.per_address
        )
    });
    let unit = sc.kind.unit();
    let (scale, cost) = unit.cost_scale();
    let fmt = |x: Option<f64>| x.map_or("-".into(), |v| format!("{:.3}", v * scale));
    format!(
        "{head} {:>10.3} {}  {cost}: machine {} attributed {} hop-process {}  p99 {}  errors {}{reload}{dns}{srt}{syscalls}  (bg {:.0}% busy, load {})",
        r.rate().unwrap_or(0.0),
        unit.rate_label(),
        fmt(r.machine_per_unit()),
        fmt(r.attributed_per_unit()),
        fmt(r.hop_per_unit()),
        r.p99_us.map_or("-".into(), |u| format!("{:.2} ms", u as f64 / 1e3)),
        r.errors,
        r.background.busy_pct,
        r.background
            .loadavg_1m
            .map_or("-".into(), |l| format!("{l:.2}")),
    )
}

fn idle_line(head: &str, m: &IdleMemory) -> String {
    let mib = |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0));
    let per_1000 = m
        .growth_per_1000_kib()
        .map_or("-".into(), |k| format!("{:+.2}", k / 1024.0));
    format!(
        "{head} {} flows held (opened in {:.1} s), hop RSS {} -> {} MiB, {per_1000} MiB per \
         1000 flows",
        m.flows,
        m.setup_s,
        mib(m.rss_base_kib),
        mib(m.rss_held_kib),
    )
}

fn run_once(
    ctx: &Ctx,
    sc: &Scenario,
    v: Variant,
    rep: usize,
    timing: Timing,
    nginx: Option<&Nginx>,
    cert: Option<&CertFiles>,
) -> RunRecord {
    // The sample also lets the previous run's sockets and processes wind down.
    let bg = measure::background(Duration::from_millis(if ctx.quick { 100 } else { 250 }));
    let mut rec = RunRecord::new(sc.name, &v.label(), rep, bg);
    crate::profile::set_run(&ctx.work, sc.name, &v.label(), rep);
    let res = match (sc.kind, nginx) {
        (Kind::Ingest { flows, mbit }, _) => ingest_run(ctx, v, timing, flows, mbit, &mut rec),
        (Kind::Bulk(d), _) => bulk_run(ctx, v, timing, d, &mut rec),
        (Kind::ConnRate, _) => rate_run(ctx, v, timing, &mut rec),
        (Kind::RtmpFfmpeg { publishers }, _) => rtmp_run(ctx, v, timing, publishers, &mut rec),
        (Kind::Idle { flows }, _) => idle_run(ctx, v, timing, flows, &mut rec),
        (
            Kind::Reload {
                flows,
                mbit,
                reloads,
            },
            _,
        ) => {
            let load = crate::reload::Load {
                flows,
                mbit,
                reloads: if ctx.quick { QUICK_RELOADS } else { reloads },
            };
            crate::reload::run(ctx, v, timing, load, &mut rec)
        }
        (
            Kind::DnsChange {
                flows,
                mbit,
                changes,
            },
            _,
        ) => {
            let load = crate::dnschange::Load {
                flows,
                mbit,
                changes: if ctx.quick {
                    QUICK_DNS_CHANGES
                } else {
                    changes
                },
            };
            crate::dnschange::run(ctx, v, timing, load, &mut rec)
        }
        (Kind::NsIngest { .. } | Kind::NsBulk(_), _) => {
            crate::nsrun::run(ctx, sc.kind, v, timing, &mut rec)
        }
        (Kind::SrtIngest { flows, mbit }, _) => {
            let load = crate::srtingest::Load { flows, mbit };
            crate::srtingest::run(ctx, v, timing, load, &mut rec)
        }
        (k, Some(n)) => http_run(ctx, k, v, timing, n, cert, &mut rec),
        (_, None) => Err(BenchError::Run("no HTTP backend".into())),
    };
    if let Err(e) = res {
        rec.failure = Some(e.to_string());
    } else if rec.units <= 0.0 {
        rec.failure = Some("nothing delivered in the measured window".into());
    }
    rec.syscalls_per_unit = crate::profile::take_syscalls()
        .filter(|_| rec.units > 0.0)
        .map(|n| n as f64 / rec.units);
    rec
}

/// Starts the hop for `v` in front of `backend` (none for direct); returns it and the address
/// the load must connect to.
fn start_hop(
    ctx: &Ctx,
    v: Variant,
    mode: Mode,
    backend: SocketAddr,
    tls_cert: Option<PathBuf>,
    alpn: Option<&'static str>,
) -> Result<(Option<Hop>, SocketAddr)> {
    start_hop_sized(ctx, v, mode, backend, tls_cert, alpn, Spec::MAXCONN)
}

/// As [`start_hop`], with the hop's `maxconn`.
fn start_hop_sized(
    ctx: &Ctx,
    v: Variant,
    mode: Mode,
    backend: SocketAddr,
    tls_cert: Option<PathBuf>,
    alpn: Option<&'static str>,
    maxconn: usize,
) -> Result<(Option<Hop>, SocketAddr)> {
    if v == Variant::Direct {
        return Ok((None, backend));
    }
    let spec = Spec {
        mode,
        frontend: hop::free_addr(FRONT_IP)?,
        backend,
        tls_cert,
        maxconn,
        alpn,
        master_worker: false,
    };
    let h = Hop::start(v, &spec, &ctx.work, &ctx.plan, &ctx.proxy_bin, START_LIMIT)?;
    Ok((Some(h), spec.frontend))
}

/// Sleeps through the warm-up, then measures a window around `during`, reading `counter`
/// at both edges; returns the window and the counter's growth.
pub(crate) fn measured<F: FnMut()>(
    pids: Pids,
    timing: Timing,
    counter: impl Fn() -> u64,
    mut during: F,
) -> (Window, u64) {
    std::thread::sleep(timing.warmup);
    let profile = crate::profile::start(pids.hop);
    let (s0, c0) = (Snapshot::take(&pids), counter());
    during();
    let (s1, c1) = (Snapshot::take(&pids), counter());
    if let Some(p) = profile {
        p.finish();
    }
    (Window::between(&s0, &s1, &pids), c1.saturating_sub(c0))
}

/// Bytes sent and never received, once every flow closed; with flows still open it is only a
/// note, not proof of loss: their bytes may still have been queued in the hop.
pub(crate) fn record_loss(rec: &mut RunRecord, unfinished: u64, lost: i64) {
    if unfinished == 0 {
        rec.lost_bytes = Some(lost);
    } else {
        rec.note = Some(format!(
            "{unfinished} flows not closed 10 s after the load stopped; {lost} bytes not \
             (yet) received"
        ));
    }
}

pub(crate) fn pids(hop: Option<&Hop>, others: &[u32]) -> Pids {
    Pids {
        hop: hop.map(|h| h.pid),
        others: others.to_vec(),
        hop_tree: false,
    }
}

pub(crate) fn check_alive(hop: &mut Option<Hop>) -> Result<()> {
    match hop {
        Some(h) => {
            if h.alive() {
                Ok(())
            } else {
                Err(BenchError::peer(
                    h.variant.label(),
                    format!("died during the run: {}", h.log_tail()),
                ))
            }
        }
        None => Ok(()),
    }
}

pub(crate) fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

pub(crate) fn latencies(v: &Mutex<Vec<u64>>, rec: &mut RunRecord) {
    if let Ok(v) = v.lock() {
        rec.p50_us = percentile(&v, 50.0);
        rec.p99_us = percentile(&v, 99.0);
    }
}

pub(crate) fn gbit(bytes: u64) -> f64 {
    bytes as f64 * 8.0 / 1e9
}

fn ingest_run(
    ctx: &Ctx,
    v: Variant,
    timing: Timing,
    flows: usize,
    mbit: f64,
    rec: &mut RunRecord,
) -> Result<()> {
    let backend = Backend::start(BACK_IP)?;
    let (mut hop, target) = start_hop(ctx, v, Mode::Tcp, backend.addr, None, None)?;
    let params = ingest::Params {
        flows,
        mbit_per_flow: mbit,
    };
    let client = ingest::Client::start(target, params)?;
    ingest_measure(hop.as_ref(), &backend, client, params, timing, rec)?;
    check_alive(&mut hop)
}

/// The ingest load's measured window and teardown, once its flows are starting: rate, loss,
/// errors, latencies into `rec`.
pub(crate) fn ingest_measure(
    hop: Option<&Hop>,
    backend: &Backend,
    client: ingest::Client,
    params: ingest::Params,
    timing: Timing,
    rec: &mut RunRecord,
) -> Result<()> {
    let (flows, mbit) = (params.flows, params.mbit_per_flow);
    client.wait_connected(flows, Duration::from_secs(15))?;
    let shared = client.shared.clone();
    let counters = backend.counters.clone();
    let (w, bytes) = measured(
        pids(hop, &[]),
        timing,
        || counters.received.load(Relaxed),
        || {
            shared.recording.store(true, Relaxed);
            std::thread::sleep(timing.window);
            shared.recording.store(false, Relaxed);
        },
    );
    rec.window = Some(w);
    rec.units = gbit(bytes);
    rec.offered_rate = Some(flows as f64 * mbit / 1e3);
    let sent = client.finish();
    wait_for(Duration::from_secs(10), || {
        counters.finished.load(Relaxed) >= flows as u64
    });
    let lost = sent as i64 - counters.received.load(Relaxed) as i64;
    record_loss(rec, shared.unfinished.load(Relaxed), lost);
    rec.errors = shared.errors.load(Relaxed) + counters.errors.load(Relaxed);
    latencies(&shared.latencies_us, rec);
    Ok(())
}

fn bulk_run(
    ctx: &Ctx,
    v: Variant,
    timing: Timing,
    d: Direction,
    rec: &mut RunRecord,
) -> Result<()> {
    let backend = Backend::start(BACK_IP)?;
    let (mut hop, target) = start_hop(ctx, v, Mode::Tcp, backend.addr, None, None)?;
    let client = bulk::Client::start(target, d)?;
    bulk_measure(hop.as_ref(), &backend, client, d, timing, rec)?;
    check_alive(&mut hop)
}

/// The bulk flow's measured window and teardown, once it is connected.
pub(crate) fn bulk_measure(
    hop: Option<&Hop>,
    backend: &Backend,
    client: bulk::Client,
    d: Direction,
    timing: Timing,
    rec: &mut RunRecord,
) -> Result<()> {
    let counters = backend.counters.clone();
    let shared = client.shared.clone();
    // Count what the receiving side got: that is what was delivered.
    let counter = || match d {
        Direction::Up => counters.received.load(Relaxed),
        Direction::Down => shared.bytes.load(Relaxed),
    };
    let (w, bytes) = measured(pids(hop, &[]), timing, counter, || {
        std::thread::sleep(timing.window)
    });
    rec.window = Some(w);
    rec.units = gbit(bytes);
    if d == Direction::Down {
        backend.stop_downloads();
    }
    let got = client.finish()?;
    wait_for(Duration::from_secs(5), || {
        counters.finished.load(Relaxed) >= 1
    });
    rec.lost_bytes = Some(match d {
        Direction::Up => got as i64 - counters.received.load(Relaxed) as i64,
        Direction::Down => counters.sent.load(Relaxed) as i64 - got as i64,
    });
    rec.errors = counters.errors.load(Relaxed);
    Ok(())
}

fn rate_run(ctx: &Ctx, v: Variant, timing: Timing, rec: &mut RunRecord) -> Result<()> {
    let backend = Backend::start(BACK_IP)?;
    let (mut hop, target) = start_hop(ctx, v, Mode::Tcp, backend.addr, None, None)?;
    let client = rate::Client::start(target, 32)?;
    let shared = client.shared.clone();
    let (w, n) = measured(
        pids(hop.as_ref(), &[]),
        timing,
        || shared.completed.load(Relaxed),
        || {
            shared.recording.store(true, Relaxed);
            std::thread::sleep(timing.window);
            shared.recording.store(false, Relaxed);
        },
    );
    rec.window = Some(w);
    rec.units = n as f64;
    client.finish();
    rec.errors = shared.errors.load(Relaxed) + backend.counters.errors.load(Relaxed);
    latencies(&shared.latencies_us, rec);
    check_alive(&mut hop)
}

fn rtmp_run(
    ctx: &Ctx,
    v: Variant,
    timing: Timing,
    publishers: usize,
    rec: &mut RunRecord,
) -> Result<()> {
    let clip = {
        let mut p = ctx.probes.lock().expect("probe lock");
        match &p.clip {
            Some(c) => c.clone(),
            None => {
                let c = rtmp::make_clip(&ctx.work, &ctx.plan)?;
                p.clip = Some(c.clone());
                c
            }
        }
    };
    let port = || hop::free_addr(BACK_IP).map(|a| a.port());
    let node = rtmp::RtmpNode::start(&ctx.work, &ctx.plan, BACK_IP, port()?, port()?)?;
    let (mut hop, target) = start_hop(ctx, v, Mode::Tcp, node.rtmp, None, None)?;
    let mut pubs = rtmp::Publishers::start(&ctx.plan, &clip, target, publishers)?;
    let mut others = pubs.pids();
    others.push(node.pid());
    let (w, bytes) = measured(
        pids(hop.as_ref(), &others),
        timing,
        || node.bytes_in(),
        || std::thread::sleep(timing.window),
    );
    rec.window = Some(w);
    rec.units = gbit(bytes);
    rec.errors = pubs.exited() as u64;
    check_alive(&mut hop)
}

/// The proxy engines the idle scenario runs.
const IDLE_ENGINES: [Engine; 2] = [Engine::Copy, Engine::Auto];

/// Descriptors the bench keeps free for everything but the idle flows.
const IDLE_FD_RESERVE: u64 = 1024;

/// Flows opened and held a little over a second before the baseline is read: first-use
/// allocations (pools, tables) land in the baseline, and `auto`'s history counts them as
/// long-lived, as an RTMP backend's would be, so it picks for idle flows what it picks there.
const IDLE_WARM_FLOWS: usize = 64;
const IDLE_WARM_HOLD: Duration = Duration::from_millis(1200);

/// How many of `want` idle flows the open-file limit allows (raised to what they need where
/// the bench may, as root), and that limit.
fn idle_capacity(want: usize) -> (usize, u64) {
    let need = 2 * want as u64 + IDLE_FD_RESERVE;
    let limit = idle::raise_nofile(need);
    let n = want.min(idle::flows_for_limit(limit, IDLE_FD_RESERVE));
    (n, limit)
}

/// The hop's RSS with `flows` silent echoed flows open, against its RSS after a warm-up;
/// the window measures the hop's CPU while they idle.
fn idle_run(ctx: &Ctx, v: Variant, timing: Timing, want: usize, rec: &mut RunRecord) -> Result<()> {
    let (flows, limit) = idle_capacity(want);
    if flows == 0 {
        return Err(BenchError::Run(format!(
            "the open-file limit ({limit}) leaves no room for idle flows"
        )));
    }
    let backend = Backend::start(BACK_IP)?;
    // Room for the flows, the warm-up's and the availability probe's.
    let maxconn = flows + IDLE_WARM_FLOWS + 100;
    let (mut hop, target) = start_hop_sized(ctx, v, Mode::Tcp, backend.addr, None, None, maxconn)?;
    let warm = idle::Flows::open(target, IDLE_WARM_FLOWS)?;
    std::thread::sleep(IDLE_WARM_HOLD);
    drop(warm);
    std::thread::sleep(Duration::from_millis(300));
    let rss = || hop.as_ref().and_then(|h| procfs::rss_kib(h.pid));
    let rss_base_kib = rss();
    let held = idle::Flows::open(target, flows)?;
    let (w, _) = measured(
        pids(hop.as_ref(), &[]),
        timing,
        || 0,
        || std::thread::sleep(timing.window),
    );
    rec.idle = Some(IdleMemory {
        flows: held.len(),
        setup_s: held.setup.as_secs_f64(),
        rss_base_kib,
        rss_held_kib: w.hop_rss_kib,
    });
    rec.units = held.len() as f64;
    rec.window = Some(w);
    drop(held);
    check_alive(&mut hop)
}

/// nginx (plain HTTP, plus TLS for the HTTPS scenarios) and the certificate, made once.
fn http_setup(ctx: &Ctx, kind: Kind) -> Result<(Nginx, Option<std::sync::Arc<CertFiles>>)> {
    let cert = if kind.needs_tls() {
        Some(cert_once(ctx)?)
    } else {
        None
    };
    let http = hop::free_addr(BACK_IP)?;
    let https = match &cert {
        Some(c) => Some((hop::free_addr(BACK_IP)?, &c.split)),
        None => None,
    };
    let n = Nginx::start(&ctx.work, &ctx.plan, http, https)?;
    Ok((n, cert))
}

fn cert_once(ctx: &Ctx) -> Result<std::sync::Arc<CertFiles>> {
    let mut p = ctx.probes.lock().expect("probe lock");
    if let Some(c) = &p.cert {
        return Ok(c.clone());
    }
    let c = std::sync::Arc::new(tls::make_cert(&ctx.work)?);
    p.cert = Some(c.clone());
    Ok(c)
}

/// Whether this proxy build serves mode http (and TLS, for the HTTPS scenarios): `proxy -c`
/// accepts the config, the proxy starts, and a real request through it gets a 200. Cached.
fn proxy_serves(
    ctx: &Ctx,
    kind: Kind,
    nginx: &Nginx,
    cert: Option<&CertFiles>,
) -> std::result::Result<(), String> {
    let tls = kind.needs_tls();
    {
        let p = ctx.probes.lock().expect("probe lock");
        let cached = if tls { &p.tls } else { &p.http };
        if let Some(r) = cached {
            return r.clone();
        }
    }
    let r = probe_http(ctx, nginx, cert.filter(|_| tls)).map_err(|why| {
        let what = if tls { "HTTPS (TLS)" } else { "HTTP mode" };
        format!("{what} not available in this build ({why})")
    });
    let mut p = ctx.probes.lock().expect("probe lock");
    if tls {
        p.tls = Some(r.clone());
    } else {
        p.http = Some(r.clone());
    }
    r
}

fn probe_http(
    ctx: &Ctx,
    nginx: &Nginx,
    cert: Option<&CertFiles>,
) -> std::result::Result<(), String> {
    let v = Variant::Proxy(ctx.http_engine);
    let spec = Spec {
        mode: Mode::Http,
        frontend: hop::free_addr(FRONT_IP).map_err(|e| e.to_string())?,
        backend: nginx.http,
        tls_cert: cert.map(|c| c.combined.clone()),
        maxconn: Spec::MAXCONN,
        alpn: None,
        master_worker: false,
    };
    let tag = if cert.is_some() { "https" } else { "http" };
    if !hop::proxy_check(&ctx.proxy_bin, &hop::render(v, &spec), &ctx.work, tag)
        .map_err(|e| e.to_string())?
    {
        return Err("`proxy -c` rejects the config".into());
    }
    let _hop = Hop::start(v, &spec, &ctx.work, &ctx.plan, &ctx.proxy_bin, PROBE_LIMIT)
        .map_err(|e| e.to_string())?;
    let ok = match cert {
        Some(_) => tls::client_config()
            .map(|cfg| tls::one_connection(&cfg, spec.frontend))
            .unwrap_or(false),
        None => plain_get_ok(spec.frontend),
    };
    if ok {
        Ok(())
    } else {
        Err("started, but a GET through it did not get a 200 answer".into())
    }
}

fn plain_get_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {OBJECT_PATH} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

fn http_run(
    ctx: &Ctx,
    kind: Kind,
    v: Variant,
    timing: Timing,
    nginx: &Nginx,
    cert: Option<&CertFiles>,
    rec: &mut RunRecord,
) -> Result<()> {
    let tls_cert = cert.map(|c| c.combined.clone());
    let (mut hop, mut target) = start_hop(ctx, v, Mode::Http, nginx.http, tls_cert, kind.alpn())?;
    if v == Variant::Direct && kind.needs_tls() {
        target = nginx
            .https
            .ok_or_else(|| BenchError::Run("nginx has no TLS listener".into()))?;
    }
    match kind {
        Kind::HttpKeepAlive => {
            let p = pids(hop.as_ref(), &[nginx.pid()]);
            wrk_run(ctx, p, target, timing, rec)?
        }
        Kind::HttpsRequests { h2 } => {
            let p = pids(hop.as_ref(), &[nginx.pid()]);
            h2load_run(ctx, p, target, timing, h2, rec)?
        }
        Kind::HttpsHandshake => {
            let load = tls::Load::handshakes(target, 4)?;
            let s = load.shared.clone();
            let (w, n) = measured(
                pids(hop.as_ref(), &[nginx.pid()]),
                timing,
                || s.completed.load(Relaxed),
                || {
                    s.recording.store(true, Relaxed);
                    std::thread::sleep(timing.window);
                    s.recording.store(false, Relaxed);
                },
            );
            load.finish();
            rec.window = Some(w);
            rec.units = n as f64;
            rec.errors = s.errors.load(Relaxed);
            latencies(&s.latencies_us, rec);
        }
        Kind::HttpsBulk => {
            let load = tls::Load::bulk(target)?;
            let s = load.shared.clone();
            let (w, bytes) = measured(
                pids(hop.as_ref(), &[nginx.pid()]),
                timing,
                || s.bytes.load(Relaxed),
                || std::thread::sleep(timing.window),
            );
            load.finish();
            rec.window = Some(w);
            rec.units = gbit(bytes);
            rec.errors = s.errors.load(Relaxed);
        }
        _ => return Err(BenchError::Run("not an HTTP scenario".into())),
    }
    check_alive(&mut hop)
}

/// wrk runs as its own process, so the window is the whole wrk run (its start-up is a few ms).
fn wrk_run(
    ctx: &Ctx,
    pid: Pids,
    target: SocketAddr,
    timing: Timing,
    rec: &mut RunRecord,
) -> Result<()> {
    let secs = Duration::from_secs(timing.window.as_secs_f64().ceil() as u64);
    let s0 = Snapshot::take(&pid);
    let r = wrk::run(&ctx.plan, target, OBJECT_PATH, 16, secs)?;
    let s1 = Snapshot::take(&pid);
    rec.window = Some(Window::between(&s0, &s1, &pid));
    rec.units = r.requests as f64;
    rec.p50_us = r.p50_us;
    rec.p99_us = r.p99_us;
    rec.errors = r.errors;
    Ok(())
}

/// h2load runs as its own process, so the window is the whole run (as with wrk). HTTP/2:
/// 2 connections x 8 streams; HTTP/1.1: 16 connections, one request at a time each, the same
/// 16 requests in flight.
fn h2load_run(
    ctx: &Ctx,
    pid: Pids,
    target: SocketAddr,
    timing: Timing,
    h2: bool,
    rec: &mut RunRecord,
) -> Result<()> {
    let secs = Duration::from_secs(timing.window.as_secs_f64().ceil() as u64);
    let (connections, streams) = if h2 { (2, 8) } else { (16, 1) };
    let s0 = Snapshot::take(&pid);
    let r = h2load::run(
        &ctx.plan,
        target,
        OBJECT_PATH,
        h2load::Load {
            connections,
            streams,
            h1: !h2,
        },
        secs,
    )?;
    let s1 = Snapshot::take(&pid);
    rec.window = Some(Window::between(&s0, &s1, &pid));
    rec.units = r.requests as f64;
    rec.errors = r.errors;
    Ok(())
}

/// Which explicit engines this proxy build accepts: `proxy -c` must accept
/// `forward-engine X`, and the proxy must then start with it (the engine may be known to the
/// config checker but missing from the build, which only the start reveals).
pub fn detect_engines(
    proxy_bin: &std::path::Path,
    work: &std::path::Path,
    plan: &Plan,
) -> Vec<(Engine, std::result::Result<(), String>)> {
    Engine::EXPLICIT
        .iter()
        .map(|&e| (e, probe_engine(proxy_bin, work, plan, e)))
        .collect()
}

fn probe_engine(
    proxy_bin: &std::path::Path,
    work: &std::path::Path,
    plan: &Plan,
    e: Engine,
) -> std::result::Result<(), String> {
    let spec = Spec {
        mode: Mode::Tcp,
        frontend: hop::free_addr(FRONT_IP).map_err(|x| x.to_string())?,
        // Nothing listens there; the probe only needs the proxy to start.
        backend: hop::free_addr(BACK_IP).map_err(|x| x.to_string())?,
        tls_cert: None,
        maxconn: Spec::MAXCONN,
        alpn: None,
        master_worker: false,
    };
    let v = Variant::Proxy(e);
    match hop::proxy_check(proxy_bin, &hop::render(v, &spec), work, e.keyword()) {
        Ok(true) => {}
        Ok(false) => return Err("`proxy -c` rejects it".into()),
        Err(x) => return Err(x.to_string()),
    }
    Hop::start(v, &spec, work, plan, proxy_bin, PROBE_LIMIT)
        .map(drop)
        .map_err(|x| x.to_string())
}
