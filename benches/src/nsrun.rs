//! The namespace scenarios (issue #19): ingest and bulk loads from a client namespace through
//! a balancer namespace to a backend namespace (see `crate::netns`). The floor is `routing`:
//! the balancer only forwards and the client talks to the backend's address. Against it run
//! this proxy with `forward-engine sockmap` and `auto`, HAProxy, and this proxy with
//! `forward-engine nat` where the proxy accepts that on a `mode tcp` frontend (else the table
//! says why not, in the proxy's words). Hop cost = whole-machine CPU minus routing's.

use crate::error::{BenchError, Result};
use crate::hop::{self, Engine, Hop, Mode, Spec, Variant};
use crate::netns::{self, Topology};
use crate::peers::backend::Backend;
use crate::peers::{bulk, ingest};
use crate::record::RunRecord;
use crate::scenario::{self, Ctx, Kind, Timing, START_LIMIT};
use std::net::SocketAddr;

/// The frontend's port on the balancer (the namespace is fresh, so any port is free).
const FRONT_PORT: u16 = 1935;

/// The variants of a namespace scenario, and a note for each one that cannot run.
pub fn variants(
    ctx: &Ctx,
    engine_notes: &[(String, String)],
) -> (Vec<Variant>, Vec<(String, String)>) {
    let mut run = vec![Variant::Routing];
    let mut not_run = Vec::new();
    for e in [Engine::Sockmap, Engine::Auto] {
        let v = Variant::Proxy(e);
        if ctx.tcp_engines.contains(&e) {
            run.push(v);
            continue;
        }
        let why = engine_notes
            .iter()
            .find(|(label, _)| *label == v.label())
            .map_or_else(
                || "not run: --engine named another engine".to_string(),
                |(_, why)| why.clone(),
            );
        not_run.push((v.label(), why));
    }
    run.push(Variant::Haproxy);
    let nat = Variant::Proxy(Engine::Nat);
    match nat_refusal(ctx) {
        None => run.push(nat),
        Some(why) => {
            println!("  {}: not available: {why}", nat.label());
            not_run.push((nat.label(), format!("not available: {why}")));
        }
    }
    (run, not_run)
}

/// What `proxy -c` says against `forward-engine nat` on this scenario's frontend; `None` when
/// it accepts it.
fn nat_refusal(ctx: &Ctx) -> Option<String> {
    let spec = spec(SocketAddr::new(netns::BACK_IP, FRONT_PORT + 1));
    let text = hop::render(Variant::Proxy(Engine::Nat), &spec);
    match hop::proxy_refusal(&ctx.proxy_bin, &text, &ctx.work, "nat") {
        Ok(refusal) => refusal,
        Err(e) => Some(e.to_string()),
    }
}

fn spec(backend: SocketAddr) -> Spec {
    Spec {
        mode: Mode::Tcp,
        frontend: SocketAddr::new(netns::FRONT_IP, FRONT_PORT),
        backend,
        tls_cert: None,
        maxconn: Spec::MAXCONN,
        alpn: None,
        master_worker: false,
    }
}

pub fn run(ctx: &Ctx, kind: Kind, v: Variant, timing: Timing, rec: &mut RunRecord) -> Result<()> {
    // Declared first, so dropped last: after the load, the hop and the backend it holds.
    let topo = Topology::new()?;
    let backend = topo.backend.run(|| Backend::start(netns::BACK_IP))?;
    let (mut hop, target) = match v {
        Variant::Routing => (None, backend.addr),
        _ => {
            let spec = spec(backend.addr);
            let mut h = topo
                .balancer
                .run(|| Hop::spawn(v, &spec, &ctx.work, &ctx.plan, &ctx.proxy_bin))?;
            topo.client
                .run(|| h.wait_listening(spec.frontend, START_LIMIT))?;
            (Some(h), spec.frontend)
        }
    };
    match kind {
        Kind::NsIngest { flows, mbit } => {
            let params = ingest::Params {
                flows,
                mbit_per_flow: mbit,
            };
            let client = topo.client.run(|| ingest::Client::start(target, params))?;
            scenario::ingest_measure(hop.as_ref(), &backend, client, params, timing, rec)?;
        }
        Kind::NsBulk(d) => {
            let client = topo.client.run(|| bulk::Client::start(target, d))?;
            scenario::bulk_measure(hop.as_ref(), &backend, client, d, timing, rec)?;
        }
        _ => return Err(BenchError::Run("not a namespace scenario".into())),
    }
    scenario::check_alive(&mut hop)
}
