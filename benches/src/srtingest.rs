//! The SRT ingest scenario (issue #17): N paced UDP flows of 1316-byte datagrams, as SRT
//! callers publishing to Ant Media Server's port 4200, each answered by sparse ACK-sized
//! replies; straight to the backend (the floor), through nginx's `stream` UDP proxy (the
//! reference peer) and through this proxy's `udp-lb` section.
//!
//! Reported per variant, besides the usual CPU figures (hop cost per Gbit against direct, the
//! hop process alone): one-way latency percentiles of the datagrams received in the window
//! (the backend reads each one's send timestamp), datagrams lost (sent and never received,
//! over the whole run), reordered, and replies received against those the backend sent.
//!
//! This proxy's kernel path for UDP flows does not exist yet: its row says so.

use crate::error::Result;
use crate::hop::{self, Variant};
use crate::peers::datagram::DATAGRAM_LEN;
use crate::peers::srt;
use crate::peers::udp_backend::UdpBackend;
use crate::record::{RunRecord, SrtFigures};
use crate::scenario::{self, Ctx, Timing, BACK_IP, FRONT_IP, START_LIMIT};
use crate::udphop::{self, UdpSpec};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// The flows' sockets bind here (each its own port): away from the hop's and backend's
/// addresses, so that no datagram can be mistaken for another's.
const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 77, 3));

/// How long the datagrams in flight when the load stops may take to arrive, and the replies
/// to them.
const DRAIN: Duration = Duration::from_secs(2);

/// The row of the kernel path this proxy does not have yet.
pub const KERNEL_LABEL: &str = "proxy kernel";
const KERNEL_MISSING: &str = "not built yet: udp-lb forwards in userspace only (the in-kernel \
                              path for established flows does not exist; `forward-engine` is \
                              refused in a udp-lb section)";

/// The load of one run.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub flows: usize,
    pub mbit: f64,
}

/// The variants to run (direct, nginx stream, this proxy's userspace path) and those that
/// cannot run here, with why.
pub fn variants(ctx: &Ctx) -> (Vec<Variant>, Vec<(String, String)>) {
    let mut run = vec![Variant::Direct];
    let mut not = Vec::new();
    match udphop::nginx_stream_missing() {
        None => run.push(Variant::NginxStream),
        Some(why) => not.push((Variant::NginxStream.label(), why)),
    }
    match proxy_refusal(ctx) {
        None => run.push(Variant::ProxyUdp),
        Some(why) => not.push((Variant::ProxyUdp.label(), why)),
    }
    not.push((KERNEL_LABEL.into(), KERNEL_MISSING.into()));
    (run, not)
}

/// What `proxy -c` says against a `udp-lb` config, if it refuses it (a build without it).
fn proxy_refusal(ctx: &Ctx) -> Option<String> {
    let spec = UdpSpec {
        frontend: SocketAddr::new(FRONT_IP, 4200),
        backend: SocketAddr::new(BACK_IP, 4200),
    };
    let text = udphop::render_udp_lb(&spec);
    match hop::proxy_refusal(&ctx.proxy_bin, &text, &ctx.work, "udp-lb") {
        Ok(None) => None,
        Ok(Some(why)) => Some(format!("`proxy -c` refuses a udp-lb section: {why}")),
        Err(e) => Some(e.to_string()),
    }
}

/// One run of `v`: figures into `rec`.
pub fn run(ctx: &Ctx, v: Variant, timing: Timing, load: Load, rec: &mut RunRecord) -> Result<()> {
    let backend = UdpBackend::start(BACK_IP)?;
    let hop = match v {
        Variant::Direct => None,
        _ => {
            let spec = UdpSpec {
                frontend: hop::free_udp_addr(FRONT_IP)?,
                backend: backend.addr,
            };
            let h = udphop::start(v, &spec, &ctx.work, &ctx.plan, &ctx.proxy_bin, START_LIMIT)?;
            Some((h, spec.frontend))
        }
    };
    let target = hop.as_ref().map_or(backend.addr, |(_, f)| *f);
    let params = srt::Params {
        flows: load.flows,
        mbit_per_flow: load.mbit,
    };
    let client = srt::Client::start(CLIENT_IP, target, params)?;
    let b = backend.shared();
    let (w, bytes) = scenario::measured(
        scenario::pids(hop.as_ref().map(|(h, _)| h), &[]),
        timing,
        || b.bytes.load(Relaxed),
        || {
            b.recording.store(true, Relaxed);
            std::thread::sleep(timing.window);
            b.recording.store(false, Relaxed);
        },
    );
    rec.window = Some(w);
    rec.units = scenario::gbit(bytes);
    rec.offered_rate = Some(load.flows as f64 * load.mbit / 1e3);
    client.quiet();
    let c = client.shared.clone();
    let sent = c.sent.load(Relaxed);
    scenario::wait_for(DRAIN, || b.received.load(Relaxed) >= sent);
    scenario::wait_for(DRAIN, || {
        c.replies.load(Relaxed) >= b.replies_sent.load(Relaxed)
    });
    client.finish();
    let f = figures(&c, b);
    rec.lost_bytes = Some(f.lost * DATAGRAM_LEN as i64);
    rec.errors = c.errors.load(Relaxed) + b.errors.load(Relaxed);
    rec.srt = Some(f);
    scenario::latencies(&b.latencies_us, rec);
    let mut hop = hop.map(|(h, _)| h);
    scenario::check_alive(&mut hop)
}

fn figures(c: &srt::Shared, b: &crate::peers::udp_backend::Shared) -> SrtFigures {
    let sent = c.sent.load(Relaxed);
    let received = b.received.load(Relaxed);
    SrtFigures {
        sent,
        received,
        lost: sent as i64 - received as i64,
        reordered: b.reordered.load(Relaxed),
        send_blocked: c.send_blocked.load(Relaxed),
        replies_sent: b.replies_sent.load(Relaxed),
        replies_received: c.replies.load(Relaxed),
    }
}
