//! `show sess` and `show flows`: the established flows of the flow table, with the names
//! the registry gives their frontend, backend and server.

use std::collections::HashMap;
use std::fmt::Write;

use crate::counters::{counters_key, now_ms, FlowView, FLOWS};
use crate::plan::Registry;

/// One flow with its names resolved.
struct Named<'r> {
    flow: FlowView,
    frontend: &'r str,
    backend: &'r str,
    server: String,
    age_secs: u64,
}

fn named(reg: &Registry, flows: Vec<FlowView>) -> Vec<Named<'_>> {
    let mut fronts = HashMap::new();
    let mut backs = HashMap::new();
    for p in reg.proxies() {
        if let Some(c) = &p.frontend {
            fronts.insert(counters_key(c), p.name.as_str());
        }
        if let Some(set) = &p.backend {
            backs.insert(
                counters_key(&set.stats.traffic),
                (p.name.as_str(), set.clone()),
            );
        }
    }
    let now = now_ms();
    flows
        .into_iter()
        .map(|flow| {
            let m = flow.meta;
            let back = m.backend.and_then(|k| backs.get(&k));
            let server = match (back, m.server) {
                (Some((_, set)), Some((id, _))) => set
                    .servers()
                    .iter()
                    .find(|s| s.index == id)
                    .map_or_else(|| "<removed>".to_string(), |s| s.name.clone()),
                _ => "<none>".to_string(),
            };
            Named {
                frontend: fronts.get(&m.frontend).copied().unwrap_or("<reloaded>"),
                backend: back.map_or("<NONE>", |(name, _)| name),
                server,
                age_secs: now.saturating_sub(m.started_ms) / 1000,
                flow,
            }
        })
        .collect()
}

/// `show sess`: one line per flow in HAProxy's `key=value` manner.
pub fn sess(reg: &Registry) -> String {
    render_sess(reg, FLOWS.snapshot())
}

fn render_sess(reg: &Registry, flows: Vec<FlowView>) -> String {
    let mut out = String::new();
    for n in named(reg, flows) {
        let m = n.flow.meta;
        let proto = if m.client.is_ipv4() { "tcpv4" } else { "tcpv6" };
        let srv_addr = m
            .server
            .map_or_else(|| "-".to_string(), |(_, a)| a.to_string());
        let _ = writeln!(
            out,
            "0x{:x}: proto={proto} src={} fe={} be={} srv={} srv_addr={srv_addr} engine={} \
             age={}s bytes_in={} bytes_out={}",
            m.id,
            m.client,
            n.frontend,
            n.backend,
            n.server,
            m.engine,
            n.age_secs,
            n.flow.bytes_up,
            n.flow.bytes_down
        );
    }
    out
}

/// `show flows`: the same as a table with a header line.
pub fn table(reg: &Registry) -> String {
    render_table(reg, FLOWS.snapshot())
}

fn render_table(reg: &Registry, flows: Vec<FlowView>) -> String {
    let mut out = String::from(
        "# id client frontend backend server server_addr engine age_s bytes_in bytes_out\n",
    );
    for n in named(reg, flows) {
        let m = n.flow.meta;
        let srv_addr = m
            .server
            .map_or_else(|| "-".to_string(), |(_, a)| a.to_string());
        let _ = writeln!(
            out,
            "{} {} {} {} {} {srv_addr} {} {} {} {}",
            m.id,
            m.client,
            n.frontend,
            n.backend,
            n.server,
            m.engine,
            n.age_secs,
            n.flow.bytes_up,
            n.flow.bytes_down
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::FlowTable;
    use crate::plan::TEST_CONFIG;

    #[test]
    fn flows_are_named_from_the_registry() {
        let cfg =
            crate::config::parse_str(TEST_CONFIG, std::path::Path::new("t.cfg")).expect("config");
        let reg = Registry::from_config(&cfg);
        let table: &'static FlowTable = Box::leak(Box::new(FlowTable::new()));
        let fe = reg.frontend("rtmp_lb").expect("fe");
        let set = reg.backend("backend_rtmp").expect("be");
        let ams2 = set.server("ams2").expect("ams2");
        let flow = table.enter("127.0.0.1:5000".parse().unwrap(), &fe, "-");
        flow.set_server(&set.stats.traffic, ams2.index, ams2.addr(), "splice");
        flow.bytes()
            .down
            .fetch_add(42, std::sync::atomic::Ordering::Relaxed);
        let _waiting = table.enter("127.0.0.2:5001".parse().unwrap(), &fe, "-");
        let sess = render_sess(&reg, table.snapshot());
        let lines: Vec<&str> = sess.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].contains(
                "proto=tcpv4 src=127.0.0.1:5000 fe=rtmp_lb be=backend_rtmp srv=ams2 \
                 srv_addr=172.30.0.48:1935 engine=splice age=0s bytes_in=0 bytes_out=42"
            ),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("be=<NONE> srv=<none>"), "{}", lines[1]);
        let t = render_table(&reg, table.snapshot());
        assert!(t.starts_with("# id client frontend backend server"));
        assert!(t.lines().nth(1).is_some_and(|l| l.ends_with(
            " 127.0.0.1:5000 rtmp_lb backend_rtmp ams2 172.30.0.48:1935 splice 0 0 42"
        )));
    }
}
