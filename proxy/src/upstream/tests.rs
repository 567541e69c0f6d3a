use super::*;
use crate::config::{self, Balance};
use crate::config::{Loc, Proxy, ProxyKind, ServerParams};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::sync::Arc;

fn set(balance: Balance, servers: &[(&str, u32, bool)]) -> ServerSet {
    let mut p = Proxy::new("be", ProxyKind::Backend, Loc::default());
    p.balance = balance;
    for (i, (name, weight, backup)) in servers.iter().enumerate() {
        p.servers.push(config::Server {
            name: name.to_string(),
            addr: format!("127.0.0.{}:1935", i + 2).parse().unwrap(),
            params: ServerParams {
                weight: *weight,
                backup: *backup,
                ..ServerParams::default()
            },
            loc: Loc::default(),
        });
    }
    ServerSet::from_config(&p)
}

fn ctx(avoid: &[usize]) -> PickContext<'_> {
    PickContext::new(IpAddr::V4(Ipv4Addr::LOCALHOST), avoid)
}

fn counts(set: &ServerSet, n: usize) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for _ in 0..n {
        let s = set.pick_server(ctx(&[])).expect("a server");
        *c.entry(s.name.clone()).or_default() += 1;
    }
    c
}

#[test]
fn roundrobin_follows_weights() {
    let s = set(Balance::RoundRobin, &[("a", 3, false), ("b", 1, false)]);
    let c = counts(&s, 400);
    assert_eq!(c["a"], 300);
    assert_eq!(c["b"], 100);
}

#[test]
fn down_servers_are_skipped_and_backups_take_over() {
    let s = set(
        Balance::RoundRobin,
        &[("a", 1, false), ("b", 1, false), ("bk", 1, true)],
    );
    assert!(!counts(&s, 10).contains_key("bk"));
    s.servers[0].set_state(ServerState::Down);
    assert_eq!(counts(&s, 10)["b"], 10);
    s.servers[1].set_state(ServerState::Down);
    assert_eq!(counts(&s, 10)["bk"], 10);
    s.servers[2].set_state(ServerState::Maint);
    assert!(s.pick_server(ctx(&[])).is_none());
}

#[test]
fn weight_zero_gets_no_traffic() {
    let s = set(Balance::RoundRobin, &[("a", 0, false), ("b", 1, false)]);
    assert_eq!(counts(&s, 5)["b"], 5);
}

#[test]
fn avoid_moves_away_from_tried_servers() {
    let s = set(Balance::RoundRobin, &[("a", 1, false), ("b", 1, false)]);
    for _ in 0..5 {
        assert_eq!(s.pick_server(ctx(&[0])).unwrap().name, "b");
    }
}

#[test]
fn leastconn_prefers_idle_server() {
    let s = set(Balance::LeastConn, &[("a", 1, false), ("b", 1, false)]);
    let _busy = s.servers[0].claim();
    for _ in 0..5 {
        assert_eq!(s.pick_server(ctx(&[])).unwrap().name, "b");
    }
}

#[test]
fn source_is_stable_per_client() {
    let s = set(
        Balance::Source,
        &[("a", 1, false), ("b", 1, false), ("c", 1, false)],
    );
    let first = s.pick_server(ctx(&[])).unwrap().name.clone();
    for _ in 0..10 {
        assert_eq!(s.pick_server(ctx(&[])).unwrap().name, first);
    }
}

#[test]
fn first_fills_servers_in_order() {
    let mut s = set(Balance::First, &[("a", 1, false), ("b", 1, false)]);
    Arc::get_mut(&mut s.servers[0]).unwrap().maxconn = Some(1);
    let _held = s.servers[0].claim();
    assert_eq!(s.pick_server(ctx(&[])).unwrap().name, "b");
    drop(_held);
    assert_eq!(s.pick_server(ctx(&[])).unwrap().name, "a");
}

fn hashed(balance: Balance, consistent: bool) -> ServerSet {
    let mut p = Proxy::new("be", ProxyKind::Backend, Loc::default());
    p.balance = balance;
    p.hash_type.consistent = consistent;
    // Similar keys (one stream folder after another) need the avalanche mix on a ring, as
    // HAProxy's documentation advises for sdbm.
    p.hash_type.avalanche = consistent;
    p.balance_args.depth = Some(2);
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        p.servers.push(config::Server {
            name: name.to_string(),
            addr: format!("127.0.0.{}:80", i + 2).parse().unwrap(),
            params: ServerParams::default(),
            loc: Loc::default(),
        });
    }
    ServerSet::from_config(&p)
}

struct Req(&'static str);

impl RequestKey for Req {
    fn target(&self) -> &str {
        self.0
    }
    fn query_param(&self, _: &str) -> Option<&[u8]> {
        None
    }
    fn header(&self, _: &str) -> Option<&[u8]> {
        None
    }
}

#[test]
fn uri_hashing_is_stable_and_cut_at_its_depth() {
    for consistent in [false, true] {
        let s = hashed(Balance::Uri, consistent);
        let pick = |target: &'static str| {
            let req = Req(target);
            let ctx = PickContext {
                request: Some(&req),
                ..ctx(&[])
            };
            s.pick_server(ctx).expect("a server").name.clone()
        };
        // depth 2: every segment of one stream's folder goes to one server.
        let first = pick("/live/cam1/seg1.ts");
        for seg in ["/live/cam1/seg2.ts", "/live/cam1/index.m3u8?x=1"] {
            assert_eq!(pick(seg), first, "{seg}");
        }
        let spread: HashSet<String> = (0..30)
            .map(|i| pick(Box::leak(format!("/live/cam{i}/seg.ts").into_boxed_str())))
            .collect();
        assert!(
            spread.len() > 1,
            "streams spread over servers ({consistent})"
        );
    }
}

#[test]
fn a_missing_key_falls_back_to_round_robin() {
    let s = hashed(Balance::UrlParam, true);
    let req = Req("/no/params");
    let names: HashSet<String> = (0..6)
        .map(|_| {
            let ctx = PickContext {
                request: Some(&req),
                ..ctx(&[])
            };
            s.pick_server(ctx).expect("a server").name.clone()
        })
        .collect();
    assert_eq!(names.len(), 3);
}
