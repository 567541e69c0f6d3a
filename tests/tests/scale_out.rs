//! Several instances that agree without sharing state: two proxies started from the same
//! configuration send every HLS path (`balance uri` + `hash-type consistent`) and every
//! persistence cookie to the same node, as instances behind ECMP or a cloud L4 balancer must;
//! and three instances behind a router's ECMP route (network namespaces, see
//! docs/scale-out.md) keep doing so when one of them dies.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};

use e2e::http_client::{Conn, Response};
use e2e::netns::{link, Netns};
use e2e::nginx_http::NginxHttp;
use e2e::{free_addr, free_port, loopback, Proxy, Signal};

fn cfg(port: u16, a: &NginxHttp, b: &NginxHttp) -> String {
    format!(
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
         frontend f\n    bind 127.0.0.1:{port}\n    use_backend cookies if {{ path_beg /app }}\n\
         \x20   default_backend hls\n\
         backend hls\n    balance uri depth 2\n    hash-type consistent sdbm avalanche\n\
         \x20   server ams1 {}\n    server ams2 {}\n\
         backend cookies\n    cookie JSESSIONID prefix nocache\n\
         \x20   server ams1 {} cookie ams1\n    server ams2 {} cookie ams2\n",
        a.addr(),
        b.addr(),
        a.addr(),
        b.addr()
    )
}

fn node(r: &Response) -> String {
    r.line("node ")
        .unwrap_or_else(|| panic!("no node line in {:?}", r.text()))
}

#[test]
fn two_instances_route_every_path_and_cookie_alike() {
    let a = NginxHttp::start("ams1", free_addr(loopback(2)), None);
    let b = NginxHttp::start("ams2", free_addr(loopback(3)), None);
    let one = Proxy::start(&cfg(free_port(Ipv4Addr::LOCALHOST), &a, &b));
    let two = Proxy::start(&cfg(free_port(Ipv4Addr::LOCALHOST), &a, &b));
    let (mut c1, mut c2) = (Conn::open(one.addr()), Conn::open(two.addr()));
    let mut per_node = [0usize; 2];
    for stream in 0..40 {
        let owner = node(&c1.get(&format!("/live/cam{stream}/index.m3u8"), &[]));
        for seg in ["index.m3u8", "seg1.ts", "seg2.ts"] {
            let path = format!("/live/cam{stream}/{seg}");
            assert_eq!(node(&c1.get(&path, &[])), owner, "instance one, {path}");
            assert_eq!(node(&c2.get(&path, &[])), owner, "instance two, {path}");
        }
        per_node[usize::from(owner.contains("ams2"))] += 1;
    }
    assert!(
        per_node.iter().all(|n| *n >= 8),
        "streams spread: {per_node:?}"
    );
    // A session cookie set through one instance is honoured by the other.
    let set = c1.get("/app", &[]);
    let cookie = set
        .header("set-cookie")
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no cookie in {:?}", set.text()));
    let first = node(&set);
    for _ in 0..10 {
        let header = format!("Cookie: {cookie}");
        assert_eq!(node(&c2.get("/app", &[&header])), first, "{cookie}");
    }
}

/// The service address every instance holds on its loopback.
const VIP: &str = "10.9.9.9";

/// The same config on every instance but the `X-Instance` header that tells the test who
/// served a request.
fn ecmp_cfg(instance: &str) -> String {
    format!(
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
         frontend f\n    bind {VIP}:80\n    http-response set-header X-Instance {instance}\n\
         \x20   use_backend cookies if {{ path_beg /app }}\n    default_backend hls\n\
         backend hls\n    balance uri depth 2\n    hash-type consistent sdbm avalanche\n\
         \x20   server ams1 10.3.0.2:8080\n    server ams2 10.3.0.3:8080\n\
         backend cookies\n    cookie JSESSIONID prefix nocache\n\
         \x20   server ams1 10.3.0.2:8080 cookie ams1\n    server ams2 10.3.0.3:8080 cookie ams2\n"
    )
}

fn instance(r: &Response) -> String {
    r.header("x-instance")
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no X-Instance in {:?}", r.headers))
}

/// client ── router ══ECMP══ lb1, lb2, lb3 (VIP on lo) ── router ── backends (ams1, ams2).
struct Topology {
    client: Netns,
    router: Netns,
    lbs: Vec<Netns>,
    backends: Netns,
}

fn topology() -> Topology {
    let t = Topology {
        client: Netns::new("so-client"),
        router: Netns::new("so-router"),
        lbs: (1..=3).map(|n| Netns::new(&format!("so-lb{n}"))).collect(),
        backends: Netns::new("so-be"),
    };
    let r = &t.router;
    r.sysctl("net.ipv4.ip_forward", "1");
    // L4 hashing: flows of one client address spread over the instances.
    r.sysctl("net.ipv4.fib_multipath_hash_policy", "1");
    link(r, "r0", "10.1.0.1/24", &t.client, "c0", "10.1.0.2/24");
    t.client.ip(&["route", "add", "default", "via", "10.1.0.1"]);
    link(r, "rb", "10.3.0.1/24", &t.backends, "b0", "10.3.0.2/24");
    t.backends.ip(&["addr", "add", "10.3.0.3/24", "dev", "b0"]);
    t.backends
        .ip(&["route", "add", "default", "via", "10.3.0.1"]);
    for (i, lb) in t.lbs.iter().enumerate() {
        let n = i + 1;
        let (here, there) = (format!("10.2.{n}.1/24"), format!("10.2.{n}.2/24"));
        link(r, &format!("r{n}"), &here, lb, "l0", &there);
        lb.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
        lb.ip(&["route", "add", "default", "via", &format!("10.2.{n}.1")]);
        let (id, via, dev) = (n.to_string(), format!("10.2.{n}.2"), format!("r{n}"));
        r.ip(&["nexthop", "add", "id", &id, "via", &via, "dev", &dev]);
    }
    // A resilient group: when a next hop goes, only its flows move (as docs/scale-out.md says).
    r.ip(&[
        "nexthop",
        "add",
        "id",
        "100",
        "group",
        "1/2/3",
        "type",
        "resilient",
        "buckets",
        "64",
    ]);
    r.ip(&["route", "add", &format!("{VIP}/32"), "nhid", "100"]);
    t
}

#[test]
fn three_instances_behind_ecmp_agree_and_survive_one_loss() {
    let t = topology();
    let vip: SocketAddr = format!("{VIP}:80").parse().expect("vip");
    let nodes: Vec<NginxHttp> = t.backends.run(|| {
        vec![
            NginxHttp::start("ams1", "10.3.0.2:8080".parse().expect("addr"), None),
            NginxHttp::start("ams2", "10.3.0.3:8080".parse().expect("addr"), None),
        ]
    });
    let mut lbs: Vec<Proxy> = t
        .lbs
        .iter()
        .enumerate()
        .map(|(i, ns)| ns.run(|| Proxy::start(&ecmp_cfg(&format!("lb{}", i + 1)))))
        .collect();

    // Each stream path reaches one node whichever instance a new connection lands on.
    let mut served_by = BTreeSet::new();
    t.client.run(|| {
        for stream in 0..20 {
            let mut owner = None;
            for seg in 0..6 {
                let path = format!("/live/cam{stream}/seg{seg}.ts");
                let r = Conn::open(vip).get(&path, &["Connection: close"]);
                served_by.insert(instance(&r));
                let n = node(&r);
                assert_eq!(owner.get_or_insert(n.clone()), &n, "{path}");
            }
        }
    });
    assert_eq!(served_by.len(), 3, "flows spread over {served_by:?}");

    // A cookie set through one instance is honoured by the others.
    t.client.run(|| {
        let set = Conn::open(vip).get("/app", &["Connection: close"]);
        let cookie = set
            .header("set-cookie")
            .and_then(|v| v.split(';').next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no cookie in {:?}", set.text()));
        let (first, mut instances) = (node(&set), BTreeSet::new());
        for _ in 0..12 {
            let header = format!("Cookie: {cookie}");
            let r = Conn::open(vip).get("/app", &[&header, "Connection: close"]);
            instances.insert(instance(&r));
            assert_eq!(node(&r), first, "{cookie}");
        }
        assert!(
            instances.len() >= 2,
            "the cookie was tried on {instances:?} only"
        );
    });

    // Keep-alive connections held on the survivors, then lb1 dies and its next hop goes.
    let held: Vec<(Conn, String)> = t.client.run(|| {
        (0..12)
            .map(|_| {
                let mut c = Conn::open(vip);
                let who = instance(&c.get("/", &[]));
                (c, who)
            })
            .filter(|(_, who)| who != "lb1")
            .collect()
    });
    assert!(!held.is_empty(), "no connection landed on lb2 or lb3");
    lbs[0].signal(Signal::SIGKILL);
    t.router.ip(&["nexthop", "del", "id", "1"]);
    t.client.run(|| {
        for k in 0..15 {
            let r = Conn::open(vip).get(&format!("/after/{k}"), &["Connection: close"]);
            assert_ne!(instance(&r), "lb1", "a new flow went to the dead instance");
        }
    });
    for (mut c, who) in held {
        let r = c.get("/still", &[]);
        assert_eq!(
            (r.status, instance(&r)),
            (200, who),
            "a survivor's flow moved"
        );
    }
    drop(lbs);
    drop(nodes);
}
