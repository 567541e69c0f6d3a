use super::*;
use crate::config::{self, Balance};
use crate::config::{Loc, Proxy, ProxyKind, ServerParams};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::net::Ipv4Addr;

fn set(balance: Balance, servers: &[(&str, u32, bool)]) -> ServerSet {
    ServerSet::from_config(&proxy(balance, servers))
}

fn proxy(balance: Balance, servers: &[(&str, u32, bool)]) -> Proxy {
    let mut p = Proxy::new("be", ProxyKind::Backend, Loc::default());
    p.balance = balance;
    for (i, (name, weight, backup)) in servers.iter().enumerate() {
        p.servers.push(config::Server {
            dns: None,
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
    p
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
    s.servers()[0].set_state(ServerState::Down);
    assert_eq!(counts(&s, 10)["b"], 10);
    s.servers()[1].set_state(ServerState::Down);
    assert_eq!(counts(&s, 10)["bk"], 10);
    s.servers()[2].set_state(ServerState::Maint);
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
    let _busy = s.servers()[0].claim();
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
    let mut p = proxy(Balance::First, &[("a", 1, false), ("b", 1, false)]);
    p.servers[0].params.maxconn = Some(1);
    let s = ServerSet::from_config(&p);
    let _held = s.servers()[0].claim();
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
            dns: None,
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

fn server_config(name: &str, weight: u32) -> config::Server {
    config::Server {
        dns: None,
        name: name.to_string(),
        addr: "127.0.0.9:1935".parse().unwrap(),
        params: ServerParams {
            weight,
            ..ServerParams::default()
        },
        loc: Loc::default(),
    }
}

#[test]
fn added_servers_take_traffic_and_get_fresh_ids() {
    let s = set(Balance::RoundRobin, &[("a", 1, false), ("b", 1, false)]);
    let c = s.add(&server_config("c", 1)).unwrap();
    assert_eq!(c.index, 2);
    let picked: HashSet<String> = (0..6)
        .map(|_| s.pick_server(ctx(&[])).unwrap().name.clone())
        .collect();
    assert!(picked.contains("c"), "{picked:?}");
    assert_eq!(
        s.add(&server_config("c", 1)).unwrap_err(),
        MembershipError::Exists {
            backend: "be".into(),
            server: "c".into()
        }
    );
}

#[test]
fn removed_servers_are_retired_and_ids_not_reused() {
    let s = set(Balance::RoundRobin, &[("a", 1, false), ("b", 1, false)]);
    let busy = s.servers()[1].claim();
    assert!(matches!(
        s.remove("b"),
        Err(MembershipError::Busy { current: 1, .. })
    ));
    drop(busy);
    let b = s.remove("b").unwrap();
    assert!(b.is_retired());
    assert!((0..4).all(|_| s.pick_server(ctx(&[])).unwrap().name == "a"));
    // "b" had id 1; a new server gets 2, so a session that tried "b" never avoids it.
    assert_eq!(s.add(&server_config("c", 1)).unwrap().index, 2);
    assert!(matches!(
        s.remove("zz"),
        Err(MembershipError::NoSuchServer { .. })
    ));
}

#[test]
fn avoid_names_server_ids_after_a_removal() {
    let s = set(
        Balance::RoundRobin,
        &[("a", 1, false), ("b", 1, false), ("c", 1, false)],
    );
    s.remove("a").unwrap();
    // "c" (id 2) is now at position 1: avoiding id 2 must leave "b" only.
    assert!((0..4).all(|_| s.pick_server(ctx(&[2])).unwrap().name == "b"));
}

#[test]
fn drain_and_maint_take_no_new_flows_and_ready_restores() {
    let s = set(Balance::RoundRobin, &[("a", 1, false), ("b", 1, false)]);
    let b = s.server("b").unwrap();
    for admin in [Admin::Drain, Admin::Maint] {
        b.set_admin(admin);
        assert!((0..4).all(|_| s.pick_server(ctx(&[])).unwrap().name == "a"));
    }
    assert_eq!(b.state(), ServerState::Maint);
    b.set_admin(Admin::Drain);
    assert!(b.takes_persistent(), "drain keeps persistent sessions");
    b.set_admin(Admin::Ready);
    assert_eq!(b.state(), ServerState::Up);
    let picked: HashSet<String> = (0..4)
        .map(|_| s.pick_server(ctx(&[])).unwrap().name.clone())
        .collect();
    assert_eq!(picked.len(), 2);
}

#[test]
fn weight_changes_follow_through_picks_and_rings() {
    let s = hashed(Balance::Uri, true);
    let key = |i: usize| format!("/live/stream{i}/seg.ts");
    let before: Vec<String> = (0..200).map(|i| pick_uri(&s, &key(i))).collect();
    let heavy = s.servers()[0].clone();
    s.set_weight(&heavy, heavy.weight() * 4);
    let after: Vec<String> = (0..200).map(|i| pick_uri(&s, &key(i))).collect();
    let to_heavy = |v: &[String]| v.iter().filter(|n| **n == heavy.name).count();
    assert!(to_heavy(&after) > to_heavy(&before), "{before:?} {after:?}");
    // Keys only move toward the reweighted server.
    assert!(before
        .iter()
        .zip(&after)
        .all(|(b, a)| b == a || *a == heavy.name));
}

#[test]
fn a_moved_server_is_reached_at_its_new_address() {
    let s = set(Balance::RoundRobin, &[("a", 1, false)]);
    let a = s.server("a").unwrap();
    a.set_addr("127.0.0.77:8080".parse().unwrap());
    assert_eq!(a.addr(), "127.0.0.77:8080".parse().unwrap());
}

/// The server `s` picks for a request to `target`.
fn pick_uri(s: &ServerSet, target: &str) -> String {
    struct Target<'t>(&'t str);
    impl RequestKey for Target<'_> {
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
    let req = Target(target);
    let mut c = ctx(&[]);
    c.request = Some(&req);
    s.pick_server(c).unwrap().name.clone()
}

/// A backend as an operator writes it, parsed from text: what independent instances read.
fn from_text(servers: &[&str]) -> ServerSet {
    let mut text = String::from(
        "backend hls\n    mode http\n    balance uri depth 2\n    hash-type consistent sdbm avalanche\n",
    );
    for (i, name) in servers.iter().enumerate() {
        text.push_str(&format!("    server {name} 127.0.0.{}:5080\n", i + 2));
    }
    let cfg = config::parse_str(&text, std::path::Path::new("scale.cfg")).expect("valid");
    ServerSet::from_config(cfg.proxy("hls").expect("backend"))
}

fn owners_of(s: &ServerSet, keys: usize) -> Vec<String> {
    (0..keys)
        .map(|k| pick_uri(s, &format!("/live/stream{k}/seg.ts")))
        .collect()
}

/// Instances behind ECMP share nothing but the config: 10 000 stream paths map alike on two
/// of them; a fifth server takes 15–25 % of the paths (only to itself); a server taken out at
/// run time moves only the paths it held.
#[test]
fn instances_built_from_one_config_agree_and_changes_move_few_keys() {
    let four = ["ams1", "ams2", "ams3", "ams4"];
    let one = owners_of(&from_text(&four), 10_000);
    let two = owners_of(&from_text(&four), 10_000);
    assert_eq!(one, two, "two instances disagree");

    let five = owners_of(
        &from_text(&["ams1", "ams2", "ams3", "ams4", "ams5"]),
        10_000,
    );
    let moved: Vec<_> = one.iter().zip(&five).filter(|(a, b)| a != b).collect();
    let share = moved.len() as f64 / 10_000.0;
    assert!(
        (0.15..=0.25).contains(&share),
        "a fifth server moved {share}"
    );
    assert!(moved.iter().all(|(_, to)| *to == "ams5"), "moved elsewhere");

    let set = from_text(&four);
    set.remove("ams3").expect("idle server removed");
    let after = owners_of(&set, 10_000);
    for (k, (before, now)) in one.iter().zip(&after).enumerate() {
        if before != "ams3" {
            assert_eq!(before, now, "key {k} moved although its server stayed");
        } else {
            assert_ne!(now, "ams3");
        }
    }
}
