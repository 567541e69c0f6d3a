//! Several instances that agree without sharing state: two proxies started from the same
//! configuration send every HLS path (`balance uri` + `hash-type consistent`) and every
//! persistence cookie to the same node, as instances behind ECMP or a cloud L4 balancer must;
//! and three instances behind a router's ECMP route (network namespaces, see
//! docs/scale-out.md) keep doing so when one of them dies, for HTTP and for RTMP publishes
//! (`balance source` + `hash-type consistent` in `mode tcp`) alike, and HLS players of those
//! publishes reach the node that has them through any instance.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use e2e::ffmpeg::{ffmpeg_publish, rtmp_handshake_open, Publisher, FPS};
use e2e::http_client::{Conn, Response};
use e2e::netns::{link, Netns};
use e2e::nginx::Nginx;
use e2e::nginx_conf::LIVE_APP;
use e2e::nginx_http::NginxHttp;
use e2e::process::connections_to;
use e2e::{free_addr, free_port, loopback, wait_until, Proxy, Signal};

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
/// The RTMP port on the VIP.
const RTMP_PORT: u16 = 1935;
/// Length of each RTMP publish through the instances.
const SECONDS: u32 = 12;
/// RTMP publishers, each from an address of its own (10.4.K.2).
const SOURCES: usize = 4;
/// Bound on the new connections one source opens to see every instance it should reach:
/// with three instances equally likely, missing one in 40 tries has odds of 3 × (2/3)^40.
const PROBES: usize = 40;

/// The same config on every instance but the `X-Instance` header that tells the test who
/// served a request. `rtmp` are the nginx-rtmp nodes ams1 and ams2, and `hls` their HTTP ports,
/// where they serve what is published to them as HLS.
fn ecmp_cfg(instance: &str, rtmp: [SocketAddr; 2], hls: [SocketAddr; 2]) -> String {
    format!(
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
         frontend f\n    bind {VIP}:80\n    http-response set-header X-Instance {instance}\n\
         \x20   use_backend cookies if {{ path_beg /app }}\n\
         \x20   use_backend live if {{ path_beg /hls/ }}\n    default_backend hls\n\
         backend hls\n    balance uri depth 2\n    hash-type consistent sdbm avalanche\n\
         \x20   server ams1 10.3.0.2:8080\n    server ams2 10.3.0.3:8080\n\
         backend live\n    balance uri depth 2\n    hash-type consistent sdbm avalanche\n\
         \x20   server ams1 {}\n    server ams2 {}\n\
         backend cookies\n    cookie JSESSIONID prefix nocache\n\
         \x20   server ams1 10.3.0.2:8080 cookie ams1\n    server ams2 10.3.0.3:8080 cookie ams2\n\
         frontend rtmp\n    mode tcp\n    bind {VIP}:{RTMP_PORT}\n    default_backend rtmp\n\
         backend rtmp\n    mode tcp\n    balance source\n    hash-type consistent sdbm avalanche\n\
         \x20   server ams1 {}\n    server ams2 {}\n",
        hls[0], hls[1], rtmp[0], rtmp[1]
    )
}

fn instance(r: &Response) -> String {
    r.header("x-instance")
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no X-Instance in {:?}", r.headers))
}

/// client, src1..src4 ── router ══ECMP══ lb1, lb2, lb3 (VIP on lo) ── router ── backends
/// (ams1, ams2: an HTTP node and an nginx-rtmp node each).
struct Topology {
    client: Netns,
    /// RTMP publishers, one namespace per client address. In `mode tcp` the stream name is
    /// inside RTMP, so what keeps a stream on one node is what an operator would use there:
    /// `balance source` with `hash-type consistent`, keyed on the client address. ffmpeg cannot
    /// choose the address it connects from, but a process started in a namespace has that
    /// namespace's only address, so each namespace is one client address, as separate
    /// publishers (encoders, sites) are in production.
    sources: Vec<Netns>,
    router: Netns,
    lbs: Vec<Netns>,
    backends: Netns,
}

fn topology() -> Topology {
    let t = Topology {
        client: Netns::new("so-client"),
        sources: (1..=SOURCES)
            .map(|k| Netns::new(&format!("so-src{k}")))
            .collect(),
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
    for (i, src) in t.sources.iter().enumerate() {
        let k = i + 1;
        let (here, there) = (format!("10.4.{k}.1/24"), format!("10.4.{k}.2/24"));
        link(r, &format!("s{k}"), &here, src, "s0", &there);
        src.ip(&["route", "add", "default", "via", &format!("10.4.{k}.1")]);
    }
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

/// Where one connection went: index of the instance (0 = lb1) and of the node (0 = ams1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route {
    instance: usize,
    node: usize,
}

/// Each node's count of accepted RTMP connections.
fn accepted(t: &Topology, nodes: &[Nginx]) -> Vec<u64> {
    t.backends.run(|| {
        nodes
            .iter()
            .map(|n| {
                n.stat()
                    .unwrap_or_else(|e| panic!("/stat of {}: {e}", n.name()))
                    .naccepted
            })
            .collect()
    })
}

/// One new RTMP connection from `src` to the VIP, through the RTMP handshake with the node
/// behind it, held open while the test finds where it went: the instance is the one whose
/// namespace holds the accepted end (its peer is this connection's local address), the node
/// is the one whose count of accepted connections grew, by one. Nothing else connects to the
/// nodes meanwhile: no health checks, and the publishes are connected before any probe runs
/// beside them.
fn probe(t: &Topology, src: &Netns, nodes: &[Nginx]) -> Route {
    let vip = SocketAddr::from((VIP.parse::<Ipv4Addr>().expect("vip"), RTMP_PORT));
    let before = accepted(t, nodes);
    let conn = src
        .run(|| rtmp_handshake_open(vip, Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("RTMP handshake from {}: {e}", src.name()));
    let local = conn.local_addr().expect("local address");
    let after = accepted(t, nodes);
    let holders: Vec<usize> = (0..t.lbs.len())
        .filter(|&i| t.lbs[i].run(|| !connections_to(local).is_empty()))
        .collect();
    drop(conn);
    let grew: Vec<usize> = (0..nodes.len())
        .filter(|&i| after[i] != before[i])
        .collect();
    match (&holders[..], &grew[..]) {
        (&[instance], &[node]) if after[node] == before[node] + 1 => Route { instance, node },
        _ => panic!(
            "RTMP connection from {local}: held by instances {holders:?}, nodes' accepted \
             connections {before:?} -> {after:?}"
        ),
    }
}

/// Opens connections from `src` until each instance of `want` has carried one (at most
/// [`PROBES`]); every one must reach the same node and none an instance outside `want`.
/// Returns that node.
fn node_of(t: &Topology, src: &Netns, nodes: &[Nginx], want: &BTreeSet<usize>) -> usize {
    let (mut node, mut seen) = (None, BTreeSet::new());
    for _ in 0..PROBES {
        let r = probe(t, src, nodes);
        assert!(
            want.contains(&r.instance),
            "a connection from {} went to instance {} (want {want:?})",
            src.name(),
            r.instance
        );
        assert_eq!(
            *node.get_or_insert(r.node),
            r.node,
            "{} reached both nodes (through instances {seen:?} and {})",
            src.name(),
            r.instance
        );
        seen.insert(r.instance);
        if seen == *want {
            return r.node;
        }
    }
    panic!(
        "{PROBES} connections from {} were carried by instances {seen:?}, not all of {want:?}",
        src.name()
    )
}

/// The instance that forwards a publish, from the address the node sees it come from: each
/// instance connects from its own uplink address, 10.2.N.2.
fn instance_of(address: &str) -> Option<usize> {
    let n: usize = address
        .strip_prefix("10.2.")?
        .strip_suffix(".2")?
        .parse()
        .ok()?;
    n.checked_sub(1)
}

/// Where each of the `names` is published, read from the nodes' /stat: the node that has it
/// and the instance it comes through. Waits until all are there.
fn locate(t: &Topology, nodes: &[Nginx], names: &[String]) -> BTreeMap<String, Route> {
    wait_until(
        "the publishes to reach the nodes",
        Duration::from_secs(20),
        || {
            let mut found = BTreeMap::new();
            for (node, n) in nodes.iter().enumerate() {
                let stat = t.backends.run(|| n.stat()).ok()?;
                for s in stat.app(LIVE_APP).map(|a| &a.streams[..]).unwrap_or(&[]) {
                    for c in s.clients.iter().filter(|c| c.publishing && !c.is_relay()) {
                        let instance = instance_of(&c.address)
                            .unwrap_or_else(|| panic!("publisher from {}", c.address));
                        found.insert(s.name.clone(), Route { instance, node });
                    }
                }
            }
            names.iter().all(|n| found.contains_key(n)).then_some(found)
        },
    )
}

/// Each stream path reaches one node whichever instance a new connection lands on.
fn paths_agree(t: &Topology, vip: SocketAddr) {
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
}

/// A cookie set through one instance is honoured by the others.
fn cookies_agree(t: &Topology, vip: SocketAddr) {
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
}

/// Keep-alive connections that landed on instances other than `victim` (by name).
fn hold_keep_alive(t: &Topology, vip: SocketAddr, victim: &str) -> Vec<(Conn, String)> {
    let held: Vec<(Conn, String)> = t.client.run(|| {
        (0..12)
            .map(|_| {
                let mut c = Conn::open(vip);
                let who = instance(&c.get("/", &[]));
                (c, who)
            })
            .filter(|(_, who)| who != victim)
            .collect()
    });
    assert!(!held.is_empty(), "no connection landed beside {victim}");
    held
}

#[test]
fn three_instances_behind_ecmp_agree_and_survive_one_loss() {
    let t = topology();
    let vip: SocketAddr = format!("{VIP}:80").parse().expect("vip");
    let (http, nodes): (Vec<NginxHttp>, Vec<Nginx>) = t.backends.run(|| {
        let ams = |n: u8| Ipv4Addr::new(10, 3, 0, n);
        (
            vec![
                NginxHttp::start("ams1", "10.3.0.2:8080".parse().expect("addr"), None),
                NginxHttp::start("ams2", "10.3.0.3:8080".parse().expect("addr"), None),
            ],
            vec![Nginx::rtmp_recording(ams(2)), Nginx::rtmp_recording(ams(3))],
        )
    });
    let rtmp = [nodes[0].rtmp_addr(), nodes[1].rtmp_addr()];
    let hls = [nodes[0].http_addr(), nodes[1].http_addr()];
    let mut lbs: Vec<Proxy> = t
        .lbs
        .iter()
        .enumerate()
        .map(|(i, ns)| ns.run(|| Proxy::start(&ecmp_cfg(&format!("lb{}", i + 1), rtmp, hls))))
        .collect();
    paths_agree(&t, vip);
    cookies_agree(&t, vip);

    // Each client address reaches one node through every instance, and the addresses use
    // both nodes (the ring and the addresses are fixed, so this split is too).
    let all: BTreeSet<usize> = (0..3).collect();
    let owner: Vec<usize> = t
        .sources
        .iter()
        .map(|src| node_of(&t, src, &nodes, &all))
        .collect();
    assert_eq!(
        owner.iter().collect::<BTreeSet<_>>().len(),
        2,
        "sources per node: {owner:?}"
    );

    // One publish per source, each on its source's node, and played as HLS from there.
    let names = hls_names(&t, vip, &nodes, &owner);
    let url = |name: &str| format!("rtmp://{VIP}:{RTMP_PORT}/{LIVE_APP}/{name}");
    let mut publishers: Vec<Publisher> = t
        .sources
        .iter()
        .zip(&names)
        .map(|(src, name)| src.run(|| ffmpeg_publish(&url(name), SECONDS)))
        .collect();
    let placed = locate(&t, &nodes, &names);
    for (k, name) in names.iter().enumerate() {
        assert_eq!(placed[name].node, owner[k], "{name}: placed {placed:?}");
    }
    hls_served(&t, vip, &nodes, &names, &placed);

    // The instance with the fewest publishes dies (so that most run on the survivors), with
    // keep-alive HTTP connections held on the others; its next hop goes.
    let load = |i: usize| placed.values().filter(|r| r.instance == i).count();
    let victim = (0..3).min_by_key(|&i| load(i)).expect("three instances");
    let victim_name = format!("lb{}", victim + 1);
    let held = hold_keep_alive(&t, vip, &victim_name);
    for p in publishers.iter_mut() {
        assert!(p.try_status().is_none(), "{} ended: {}", p.url(), p.log());
    }
    lbs[victim].signal(Signal::SIGKILL);
    t.router
        .ip(&["nexthop", "del", "id", &(victim + 1).to_string()]);

    // New flows go to the survivors; each client address still reaches its node.
    t.client.run(|| {
        for k in 0..15 {
            let r = Conn::open(vip).get(&format!("/after/{k}"), &["Connection: close"]);
            assert_ne!(
                instance(&r),
                victim_name,
                "a new flow went to the dead instance"
            );
        }
    });
    let survivors: BTreeSet<usize> = all.iter().copied().filter(|&i| i != victim).collect();
    for (k, src) in t.sources.iter().enumerate() {
        let node = node_of(&t, src, &nodes, &survivors);
        assert_eq!(
            node,
            owner[k],
            "{} moved node after {victim_name} died",
            src.name()
        );
    }

    // Established flows on the survivors are untouched.
    for (mut c, who) in held {
        let r = c.get("/still", &[]);
        assert_eq!(
            (r.status, instance(&r)),
            (200, who),
            "a survivor's flow moved"
        );
    }
    publishes_end_intact(&t, &nodes, &names, &mut publishers, &placed, victim);
    drop(lbs);
    drop((http, nodes));
}

/// The node that answered an HLS request (its `X-Node`), as an index into `nodes`.
fn hls_node(r: &Response, nodes: &[Nginx]) -> usize {
    let name = r
        .header("x-node")
        .unwrap_or_else(|| panic!("no X-Node in {:?}", r.headers));
    nodes
        .iter()
        .position(|n| n.name() == name)
        .unwrap_or_else(|| panic!("X-Node {name} is no node"))
}

/// A stream name for each source (`owner[k]`: the node its address reaches) whose HLS path the
/// instances send to that same node. nginx-rtmp serves HLS only for what is published to it
/// (an Ant Media cluster serves any stream from any node), so the test names each stream the
/// way an operator with these two rings would point players: it asks the VIP where a path
/// goes before anything is published, since a 404 still names the node. Deterministic: the
/// ring depends on the configuration only.
fn hls_names(t: &Topology, vip: SocketAddr, nodes: &[Nginx], owner: &[usize]) -> Vec<String> {
    t.client.run(|| {
        let node_for = |name: &str| {
            let path = format!("/hls/{name}/index.m3u8");
            let r = Conn::open(vip).get(&path, &["Connection: close"]);
            assert_eq!(r.status, 404, "{path} before any publish");
            hls_node(&r, nodes)
        };
        (1..=SOURCES)
            .map(|k| {
                (0..32)
                    .map(|j| format!("src{k}-{j}"))
                    .find(|name| node_for(name) == owner[k - 1])
                    .unwrap_or_else(|| {
                        panic!("no name of source {k} maps to node {}", owner[k - 1])
                    })
            })
            .collect()
    })
}

/// Players fetch each stream's playlist and newest segment through new connections to the VIP,
/// so ECMP spreads them over the instances: every answer is a real playlist or MPEG-TS segment
/// from the node that has the publish, whichever instance carried the request.
fn hls_served(
    t: &Topology,
    vip: SocketAddr,
    nodes: &[Nginx],
    names: &[String],
    placed: &BTreeMap<String, Route>,
) {
    let mut instances = BTreeSet::new();
    t.client.run(|| {
        for name in names {
            let (want, playlist) = (placed[name].node, format!("/hls/{name}/index.m3u8"));
            let get = |path: &str| {
                let r = Conn::open(vip).get(path, &["Connection: close"]);
                assert_eq!(hls_node(&r, nodes), want, "{path}: {placed:?}");
                r
            };
            wait_until(&playlist, Duration::from_secs(8), || {
                (get(&playlist).status == 200).then_some(())
            });
            for _ in 0..6 {
                let list = get(&playlist);
                let text = list.text();
                assert!(text.starts_with("#EXTM3U"), "{playlist}: {text}");
                let segment = text
                    .lines()
                    .rev()
                    .find(|l| !l.starts_with('#') && !l.is_empty())
                    .unwrap_or_else(|| panic!("{playlist} lists no segment: {text}"));
                let ts = get(&format!("/hls/{name}/{segment}"));
                let body = &ts.body;
                assert_eq!(ts.status, 200, "{name}/{segment}");
                assert!(
                    !body.is_empty()
                        && body.len() % 188 == 0
                        && body.chunks(188).all(|p| p[0] == 0x47),
                    "{name}/{segment} is not MPEG-TS ({} bytes)",
                    body.len()
                );
                instances.insert(instance(&list));
                instances.insert(instance(&ts));
            }
        }
    });
    assert_eq!(instances.len(), 3, "HLS requests spread over {instances:?}");
}

/// Every publish through a survivor ends well and its node recorded every frame; one through
/// the dead instance was cut (its publisher would reconnect: same address, same node).
fn publishes_end_intact(
    t: &Topology,
    nodes: &[Nginx],
    names: &[String],
    publishers: &mut [Publisher],
    placed: &BTreeMap<String, Route>,
    victim: usize,
) {
    for (name, p) in names.iter().zip(publishers.iter_mut()) {
        if placed[name].instance == victim {
            p.wait_at_most(Duration::from_secs(u64::from(SECONDS) + 30));
            p.kill();
        } else {
            p.wait_success(Duration::from_secs(30));
        }
    }
    let full = u64::from(SECONDS * FPS);
    for (i, n) in nodes.iter().enumerate() {
        let here: Vec<&str> = names
            .iter()
            .filter(|s| placed[*s].node == i)
            .map(String::as_str)
            .collect();
        let frames = t.backends.run(|| n.recorded_frames(&here));
        for (name, got) in here.iter().zip(frames) {
            if placed[*name].instance == victim {
                assert!(got < full, "{name} through the dead instance: {got} frames");
            } else {
                assert_eq!(got, full, "{name} through a survivor: {placed:?}");
            }
        }
    }
}
