//! The DNS change scenario (issue #16): the ingest load of `ingest-200x4` while the servers of
//! the hop's backend come from DNS and the records change inside the measured window, as an
//! autoscaling group or Kubernetes adds and retires nodes.
//!
//! The backend is `server-template b 4 NAME:PORT resolvers bench … check` in both hops (the
//! same HAProxy-syntax text), filled from a dnsmasq the bench starts on a loopback address.
//! Three bench backends listen on three loopback addresses, one port; the records always name
//! two of them. One change is two record edits: the missing address is added, then the oldest
//! of the other two removed. The flows open in generations, one before the window and one
//! after each edit (once the hops had time to resolve and check), as publishers come and go.
//!
//! Direct, the floor, has no DNS client: the bench spreads each generation over the
//! addresses the records name at that moment, as a client following DNS itself would.
//!
//! Reported per variant: bytes lost and flows cut (the flows on a removed address must go on:
//! both hops put its server in maintenance and keep its established flows), whether each
//! added address got flows of the generation after it, flows of generations opened after a
//! removal that still reached the removed address, flows held across removals, and the flows
//! each address received.

use crate::error::{BenchError, Result};
use crate::hop::{self, Engine, Hop, Mode, Spec, Variant};
use crate::measure::Pids;
use crate::peers::backend::Backend;
use crate::peers::dnsmasq::Dnsmasq;
use crate::peers::ingest;
use crate::record::{DnsFigures, RunRecord};
use crate::reload::{generations, open_generation, sleep_until, teardown};
use crate::scenario::{self, Ctx, Timing, FRONT_IP, START_LIMIT};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// The load of one run.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub flows: usize,
    pub mbit: f64,
    /// Changes (each an add, then a removal) inside the window.
    pub changes: usize,
}

/// The name the records answer, and the addresses they may name (the bench backends).
const NAME: &str = "ingest.bench.test";
pub const ADDRS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 77, 11),
    Ipv4Addr::new(127, 0, 77, 12),
    Ipv4Addr::new(127, 0, 77, 13),
];
const DNS_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 77, 53));

/// Part of each interval between record edits left to the hops before the next generation
/// opens: a resolution (at most `hold valid`, 1 s, the records' TTL) and `rise 2` checks
/// 200 ms apart fit in the 1.8 s this leaves in a `--quick` window.
const SETTLE: f64 = 0.75;

/// How long a generation's flows may take to reach the backends once connected to the hop.
const ARRIVE_LIMIT: Duration = Duration::from_secs(2);

/// One record edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    /// The address (index into [`ADDRS`]) now in the records.
    Add(usize),
    Remove(usize),
}

/// The edits of `changes` changes, starting from addresses 0 and 1: add the missing one, then
/// remove the oldest, so that each address in turn is retired and comes back.
pub fn edits(changes: usize) -> Vec<Edit> {
    let mut live = vec![0, 1];
    let mut out = Vec::new();
    for _ in 0..changes {
        let missing = (0..ADDRS.len()).find(|i| !live.contains(i)).unwrap_or(0);
        live.push(missing);
        out.push(Edit::Add(missing));
        let oldest = live.remove(0);
        out.push(Edit::Remove(oldest));
    }
    out
}

/// The hosts file naming `live` addresses.
fn hosts(live: &[usize]) -> String {
    live.iter()
        .map(|&i| format!("{} {NAME}\n", ADDRS[i]))
        .collect()
}

/// The config: the bench's usual one, with its `server` line replaced by a template filled
/// from `dns`, and the `resolvers` section. Short resolution and check intervals, so that a
/// change reaches the hop within a generation's interval.
pub fn render(v: Variant, frontend: SocketAddr, port: u16, dns: SocketAddr) -> String {
    let spec = Spec {
        mode: Mode::Tcp,
        frontend,
        backend: SocketAddr::new(IpAddr::V4(ADDRS[0]), port),
        tls_cert: None,
        maxconn: Spec::MAXCONN,
        alpn: None,
        master_worker: false,
    };
    let base = hop::render(v, &spec);
    let template = format!(
        "    server-template b 4 {NAME}:{port} resolvers bench resolve-prefer ipv4 init-addr \
         none check inter 200ms rise 2 fall 3\n"
    );
    let mut c = base.replace(&format!("    server b1 {}\n", spec.backend), &template);
    let _ = write!(
        c,
        "\nresolvers bench\n    nameserver dns1 {dns}\n    hold valid 1s\n    hold obsolete 0s\n    \
         timeout resolve 250ms\n    timeout retry 250ms\n    resolve_retries 3\n"
    );
    c
}

/// A free UDP port on `ip` (bound and released, as [`hop::free_addr`] does for TCP).
fn free_udp(ip: IpAddr) -> Result<SocketAddr> {
    let s = UdpSocket::bind(SocketAddr::new(ip, 0))
        .map_err(|e| BenchError::io(format!("bind udp {ip}:0"), e))?;
    s.local_addr().map_err(|e| BenchError::io("local_addr", e))
}

/// One backend per address of [`ADDRS`], all on one port (the template's).
fn start_backends() -> Result<Vec<Backend>> {
    let mut last = None;
    for _ in 0..5 {
        let first = Backend::start(IpAddr::V4(ADDRS[0]))?;
        let port = first.addr.port();
        let rest: Result<Vec<Backend>> = ADDRS[1..]
            .iter()
            .map(|ip| Backend::start_on(SocketAddr::new(IpAddr::V4(*ip), port)))
            .collect();
        match rest {
            Ok(mut r) => {
                r.insert(0, first);
                return Ok(r);
            }
            // The port is taken on another address: try another one.
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| BenchError::Run("no common backend port".into())))
}

/// Flows each backend has seen.
fn flows(backends: &[Backend]) -> Vec<u64> {
    backends
        .iter()
        .map(|b| b.counters.flows.load(Relaxed))
        .collect()
}

/// Flows open on backend `b` now, of those counted after `base` (the readiness probes, which
/// are not flows of the load); no flow ends normally before the teardown.
fn open_on(b: &Backend, base: u64) -> u64 {
    let c = &b.counters;
    let ended = c.finished.load(Relaxed) + c.errors.load(Relaxed);
    c.flows.load(Relaxed).saturating_sub(base + ended)
}

/// Where a generation's flows go: the hop's frontend, or (direct) each live address.
enum Target {
    Hop(SocketAddr),
    Direct(u16),
}

impl Target {
    /// Opens `n` flows: one client to the hop, or one client per live address; each with
    /// its number of flows.
    fn open(&self, n: usize, live: &[usize], mbit: f64) -> Vec<(usize, Result<ingest::Client>)> {
        let params = |flows| ingest::Params {
            flows,
            mbit_per_flow: mbit,
        };
        match *self {
            Target::Hop(a) => vec![(n, open_generation(a, params(n)))],
            Target::Direct(port) => generations(n, live.len())
                .into_iter()
                .zip(live)
                .filter(|(k, _)| *k > 0)
                .map(|(k, &i)| {
                    let to = SocketAddr::new(IpAddr::V4(ADDRS[i]), port);
                    (k, open_generation(to, params(k)))
                })
                .collect(),
        }
    }
}

pub fn run(ctx: &Ctx, v: Variant, timing: Timing, load: Load, rec: &mut RunRecord) -> Result<()> {
    let backends = start_backends()?;
    let port = backends[0].addr.port();
    let live = vec![0, 1];
    let dir = ctx.work.join(format!(
        "dnsmasq-{}-{}",
        v.label().replace(' ', "-"),
        rec.rep
    ));
    let dns = Dnsmasq::start(free_udp(DNS_IP)?, &hosts(&live), &dir)?;
    let (mut hop, target) = start_hop(ctx, v, port, dns.addr)?;
    let base = match target {
        Target::Hop(frontend) => wait_servers_up(frontend, &backends, Duration::from_secs(10))?,
        Target::Direct(_) => flows(&backends),
    };
    let edits = edits(load.changes);
    let sizes = generations(load.flows, edits.len() + 1);
    let mut clients = Vec::new();
    for (n, c) in target.open(sizes[0], &live, load.mbit) {
        let c = c?;
        c.wait_connected(n, Duration::from_secs(15))?;
        clients.push(c);
    }
    let mut s = State {
        backends: &backends,
        base,
        dns,
        live,
        target,
        mbit: load.mbit,
        clients,
        figs: DnsFigures {
            changes: edits.len(),
            ..DnsFigures::default()
        },
        trouble: None,
    };
    let p = Pids {
        hop: hop.as_ref().map(|h| h.pid),
        others: vec![],
        hop_tree: false,
    };
    let received = || {
        backends
            .iter()
            .map(|b| b.counters.received.load(Relaxed))
            .sum()
    };
    let (w, bytes) = scenario::measured(p, timing, received, || {
        let start = Instant::now();
        s.recording(true);
        let gap = timing.window.div_f64((edits.len() + 1) as f64);
        for (k, (&edit, &n)) in edits.iter().zip(&sizes[1..]).enumerate() {
            let at = start + gap * (k as u32 + 1);
            sleep_until(at);
            s.apply(edit);
            sleep_until(at + gap.mul_f64(SETTLE));
            s.open_after(edit, n);
        }
        sleep_until(start + timing.window);
        s.recording(false);
    });
    rec.window = Some(w);
    rec.units = scenario::gbit(bytes);
    rec.offered_rate = Some(load.flows as f64 * load.mbit / 1e3);
    let refs: Vec<&Backend> = backends.iter().collect();
    teardown(s.clients, &refs, rec);
    s.figs.per_address = flows(&backends)
        .into_iter()
        .zip(&s.base)
        .map(|(now, b)| now - b)
        .collect();
    s.figs.flows_cut = rec.errors;
    s.figs.hop_maintenance_lines = hop.as_ref().map(|h| h.log_count("maintenance"));
    rec.dns = Some(s.figs);
    if let Some(e) = s.trouble {
        return Err(e);
    }
    scenario::check_alive(&mut hop)
}

/// The hop for `v` (none for direct) with the template filled from `dns`, and where the load
/// connects.
fn start_hop(ctx: &Ctx, v: Variant, port: u16, dns: SocketAddr) -> Result<(Option<Hop>, Target)> {
    if v == Variant::Direct {
        return Ok((None, Target::Direct(port)));
    }
    let frontend = hop::free_addr(FRONT_IP)?;
    let text = render(v, frontend, port, dns);
    let h = Hop::start_text(
        v,
        &text,
        frontend,
        &ctx.work,
        &ctx.plan,
        &ctx.proxy_bin,
        START_LIMIT,
    )?;
    Ok((Some(h), Target::Hop(frontend)))
}

/// What the measured window changes and counts.
struct State<'a> {
    backends: &'a [Backend],
    /// The backends' flow counts before the load (the readiness probes).
    base: Vec<u64>,
    dns: Dnsmasq,
    /// Indices into [`ADDRS`] the records name now, oldest first.
    live: Vec<usize>,
    target: Target,
    mbit: f64,
    clients: Vec<ingest::Client>,
    figs: DnsFigures,
    /// The first thing that went wrong (the window goes on; the run is reported failed).
    trouble: Option<BenchError>,
}

impl State<'_> {
    fn recording(&self, on: bool) {
        for c in &self.clients {
            c.shared.recording.store(on, Relaxed);
        }
    }

    /// Makes the record edit: hosts file rewritten, dnsmasq told.
    fn apply(&mut self, edit: Edit) {
        match edit {
            Edit::Add(i) => self.live.push(i),
            Edit::Remove(i) => {
                self.live.retain(|&x| x != i);
                self.figs.held_across_removal += open_on(&self.backends[i], self.base[i]);
            }
        }
        if let Err(e) = self.dns.set_hosts(&hosts(&self.live)) {
            self.trouble.get_or_insert(e);
        }
    }

    /// Opens the generation of `n` flows that follows `edit`, and counts where they went.
    fn open_after(&mut self, edit: Edit, n: usize) {
        let before = flows(self.backends);
        for (_, c) in self.target.open(n, &self.live, self.mbit) {
            match c {
                Ok(c) => self.clients.push(c),
                Err(e) => {
                    self.trouble.get_or_insert(e);
                }
            }
        }
        let expected = before.iter().sum::<u64>() + n as u64;
        scenario::wait_for(ARRIVE_LIMIT, || {
            flows(self.backends).iter().sum::<u64>() >= expected
        });
        let after = flows(self.backends);
        let got = |i: usize| after[i] - before[i];
        match edit {
            Edit::Add(i) => {
                self.figs.adds += 1;
                self.figs.adds_with_flows += usize::from(got(i) > 0);
            }
            Edit::Remove(i) => self.figs.flows_to_removed += got(i),
        }
    }
}

/// Waits until the hop sends flows to both first addresses (`init-addr none`: the slots start
/// in maintenance until the first answer and their checks): one echoed byte at a time through
/// the hop until each of them has answered one. Returns the backends' flow counts then, which
/// the run's counts start from.
fn wait_servers_up(
    frontend: SocketAddr,
    backends: &[Backend],
    limit: Duration,
) -> Result<Vec<u64>> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let seen = flows(backends);
        if seen[0] > 0 && seen[1] > 0 {
            return Ok(seen);
        }
        if !echo_once(frontend) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Err(BenchError::Run(format!(
        "the hop did not send flows to both first DNS addresses within {limit:?}"
    )))
}

/// One connection through the hop that sends `E` and reads it back (the backend's echo mode).
fn echo_once(frontend: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&frontend, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut b = [0u8; 1];
    s.write_all(b"E").is_ok() && s.read_exact(&mut b).is_ok()
}

/// Whether the variant runs in this scenario: the proxy with `auto` only (what an operator
/// gets); HAProxy plain.
pub fn runs(v: Variant) -> bool {
    matches!(
        v,
        Variant::Direct | Variant::Haproxy | Variant::Proxy(Engine::Auto)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_adds_the_missing_address_then_retires_the_oldest() {
        use Edit::*;
        assert_eq!(
            edits(3),
            vec![Add(2), Remove(0), Add(0), Remove(1), Add(1), Remove(2)]
        );
        assert_eq!(
            hosts(&[0, 2]),
            format!("127.0.77.11 {NAME}\n127.0.77.13 {NAME}\n")
        );
    }

    #[test]
    fn config_fills_the_backend_from_dns() {
        let c = render(
            Variant::Haproxy,
            "127.0.77.1:4000".parse().unwrap(),
            5000,
            "127.0.77.53:5353".parse().unwrap(),
        );
        assert!(!c.contains("server b1"), "{c}");
        assert!(
            c.contains("    server-template b 4 ingest.bench.test:5000 resolvers bench "),
            "{c}"
        );
        assert!(c.contains("resolvers bench\n    nameserver dns1 127.0.77.53:5353\n"));
        let p = render(
            Variant::Proxy(Engine::Auto),
            "127.0.77.1:4000".parse().unwrap(),
            5000,
            "127.0.77.53:5353".parse().unwrap(),
        );
        assert_eq!(p.replace("    forward-engine auto\n", ""), c);
    }
}
