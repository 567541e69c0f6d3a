//! RTMP through the proxy in mode tcp, against two nginx-rtmp nodes (127.0.0.2 and 127.0.0.3)
//! that push their publishes to each other, as the seeds' `frontend rtmp_lb` → `backend_rtmp`
//! does with two Ant Media Server nodes.
//!
//! Which node received a publish is read from the nodes' `/stat` pages (`Nginx::streams`
//! counts only direct publishes, not the copies pushed between nodes). Waits poll observable
//! state with generous bounds; nothing asserts how long anything took.

use e2e::ffmpeg::{ffmpeg_play, ffmpeg_publish, rtmp_handshake, Publisher, FPS};
use e2e::nginx::{rtmp_pair, Nginx};
use e2e::util::{poll_until, wait_until};
use e2e::{free_port, Proxy};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Bound for a publish to show up on a node's /stat.
const VISIBLE_LIMIT: Duration = Duration::from_secs(20);
/// Bound beyond its own length for a publish to end.
const PUBLISH_SLACK: Duration = Duration::from_secs(30);

fn proxy_cfg(port: u16, a: &Nginx, b: &Nginx) -> String {
    format!(
        "global
    nbthread 2

defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend rtmp_lb
    bind 127.0.0.1:{port}
    mode tcp
    default_backend backend_rtmp

backend backend_rtmp
    mode tcp
    balance roundrobin
{}    server ams1 {} check inter 500ms fall 2 rise 2
    server ams2 {} check inter 500ms fall 2 rise 2
",
        engine_line(),
        a.rtmp_addr(),
        b.rtmp_addr()
    )
}

/// `E2E_ENGINE=copy|splice|sockmap` runs these tests with that forward engine forced (the
/// engine tests in engines.rs run a publish/play with each; this runs the whole file).
fn engine_line() -> String {
    match std::env::var("E2E_ENGINE") {
        Ok(e) if !e.is_empty() => format!("    forward-engine {e}\n"),
        _ => String::new(),
    }
}

/// A two-node cluster behind a freshly started proxy.
fn cluster() -> (Nginx, Nginx, Proxy) {
    let (a, b) = rtmp_pair();
    let port = free_port(Ipv4Addr::LOCALHOST);
    let proxy = Proxy::start(&proxy_cfg(port, &a, &b));
    (a, b, proxy)
}

fn lb_url(proxy: &Proxy, stream: &str) -> String {
    format!("rtmp://{}/live/{stream}", proxy.addr())
}

/// Polls both nodes until every name in `names` has been seen published on one of them;
/// returns name → index of the node (0 = `nodes[0]`). Panics if a name shows up on two nodes
/// (a direct publish exists once) or if not all show up within the bound.
fn locate(nodes: &[&Nginx], names: &[String]) -> BTreeMap<String, usize> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut stat_errors = String::new();
    let found = poll_until(VISIBLE_LIMIT, || {
        for (i, n) in nodes.iter().enumerate() {
            // A node may be dead on purpose: a failed /stat just means "nothing seen there".
            let stat = match n.stat() {
                Ok(s) => s,
                Err(e) => {
                    stat_errors = format!("{}: {e}", n.name());
                    continue;
                }
            };
            for s in stat.published("live") {
                if names.contains(&s) {
                    if let Some(&j) = seen.get(&s) {
                        assert_eq!(j, i, "stream {s} published on two nodes");
                    }
                    seen.insert(s, i);
                }
            }
        }
        (seen.len() == names.len()).then_some(())
    });
    assert!(
        found.is_some(),
        "not every publish became visible on a node within {VISIBLE_LIMIT:?}: \
         wanted {names:?}, saw {seen:?} (last /stat error: {stat_errors})"
    );
    seen
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn publish_all(proxy: &Proxy, names: &[String], seconds: u32) -> Vec<Publisher> {
    names
        .iter()
        .map(|n| ffmpeg_publish(&lb_url(proxy, n), seconds))
        .collect()
}

/// Waits until `k` RTMP handshakes in a row through the proxy succeed. With round robin and
/// a dead server still in rotation, every other connection would fail; `k` in a row means the
/// proxy no longer sends new connections to a dead server.
fn wait_all_new_connections_succeed(proxy: &Proxy, k: usize, what: &str) {
    let mut streak = 0;
    wait_until(what, Duration::from_secs(30), || {
        match rtmp_handshake(proxy.addr(), Duration::from_secs(5)) {
            Ok(()) => streak += 1,
            Err(_) => streak = 0,
        }
        (streak >= k).then_some(())
    });
}

/// The harness itself, without the proxy: ffmpeg publishes to one node directly, the stream is
/// seen on that node only (as a direct publish) and pushed to the other, and a player on the
/// other node decodes it. If this fails, the environment is broken, not the proxy.
#[test]
fn cluster_works_without_the_proxy() {
    let (a, b) = rtmp_pair();
    assert_eq!(
        a.http_get("/").unwrap(),
        (200, format!("node {}\n", a.name()))
    );
    let mut publisher = ffmpeg_publish(&a.url("direct"), 12);
    let at = locate(&[&a, &b], &["direct".to_string()]);
    assert_eq!(at["direct"], 0);
    wait_until("the push to reach the peer", VISIBLE_LIMIT, || {
        b.relayed_streams()
            .contains(&"direct".to_string())
            .then_some(())
    });
    assert!(
        b.streams().is_empty(),
        "a pushed copy is not a direct publish"
    );
    let play = ffmpeg_play(&b.url("direct"), 4);
    assert!(
        play.frames >= 2 * FPS as u64,
        "played {} frames of 4 s of {FPS} fps from the peer; ffmpeg: {:?} {}",
        play.frames,
        play.status,
        play.log
    );
    publisher.wait_success(PUBLISH_SLACK);
}

/// (a) A publish through the proxy can be played back through the proxy: two players at once,
/// which round robin sends to different nodes (the origin and its peer).
#[test]
fn publish_and_play_through_proxy() {
    let (a, b, proxy) = cluster();
    let mut publisher = ffmpeg_publish(&lb_url(&proxy, "show"), 16);
    locate(&[&a, &b], &["show".to_string()]);
    let plays: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| ffmpeg_play(&lb_url(&proxy, "show"), 5)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, play) in plays.iter().enumerate() {
        assert!(
            play.frames >= 50,
            "player {i} decoded {} frames of a 5 s, {FPS} fps play through the proxy \
             (want >= 50); ffmpeg: {:?} {}",
            play.frames,
            play.status,
            play.log
        );
    }
    publisher.wait_success(PUBLISH_SLACK);
}

/// (b) Round robin spreads publishes over both nodes.
#[test]
fn publishes_spread_across_backends() {
    let (a, b, proxy) = cluster();
    let names = names("spread", 4);
    let mut pubs = publish_all(&proxy, &names, 8);
    let at = locate(&[&a, &b], &names);
    let on_a = at.values().filter(|&&i| i == 0).count();
    let on_b = at.values().filter(|&&i| i == 1).count();
    assert!(
        on_a >= 1 && on_b >= 1,
        "4 publishes through roundrobin should reach both nodes: {at:?}"
    );
    for p in &mut pubs {
        p.wait_success(PUBLISH_SLACK);
    }
}

/// (c) A node dies under traffic: once its health checks fail, every new publish goes to the
/// survivor and succeeds, and the survivor's own publishes go on undisturbed. (d) The node comes
/// back: after its rise checks it receives new publishes again.
#[test]
fn failover_and_recovery() {
    let (mut a, b, proxy) = cluster();

    // Traffic on both nodes.
    let before = names("before", 4);
    let mut before_pubs = publish_all(&proxy, &before, 120);
    let at = locate(&[&a, &b], &before);
    assert!(
        at.values().any(|&i| i == 0) && at.values().any(|&i| i == 1),
        "publishes should reach both nodes before the kill: {at:?}"
    );

    // (c) Kill node a (SIGKILL, as a crash).
    a.stop();
    for (i, name) in before.iter().enumerate() {
        if at[name] == 0 {
            // Its backend is gone: the proxy must not leave the publisher hanging.
            let Some(s) = before_pubs[i].wait_at_most(Duration::from_secs(30)) else {
                panic!("publisher {name} lost its node but was not disconnected");
            };
            assert!(
                !s.success(),
                "publisher {name} lost its node, yet ffmpeg reported success"
            );
        }
    }
    wait_all_new_connections_succeed(&proxy, 6, "the proxy to take the dead node out");

    let during = names("during", 4);
    let mut during_pubs = publish_all(&proxy, &during, 6);
    let at_during = locate(&[&a, &b], &during);
    assert!(
        at_during.values().all(|&i| i == 1),
        "with node a down every publish must reach b: {at_during:?}"
    );
    for p in &mut during_pubs {
        p.wait_success(PUBLISH_SLACK);
    }
    // The survivor's publishes from before the kill are still on air.
    let live_on_b = b.streams();
    for (i, name) in before.iter().enumerate() {
        if at[name] == 1 {
            assert!(
                before_pubs[i].try_status().is_none(),
                "publisher {name} on the surviving node ended: {}",
                before_pubs[i].log()
            );
            assert!(
                live_on_b.contains(name),
                "{name} vanished from b: {live_on_b:?}"
            );
        }
    }

    // (d) Restart a on the same ports; new publishes reach it again once it rises.
    a.start();
    let mut reached_a = false;
    let mut history = Vec::new();
    for round in 0..10 {
        let batch = names(&format!("after{round}-"), 2);
        let mut pubs = publish_all(&proxy, &batch, 4);
        let at_after = locate(&[&a, &b], &batch);
        for p in &mut pubs {
            p.wait_success(PUBLISH_SLACK);
        }
        reached_a |= at_after.values().any(|&i| i == 0);
        history.push(at_after);
        if reached_a {
            break;
        }
    }
    assert!(
        reached_a,
        "after its restart node a never received a publish: {history:?}"
    );
    drop(before_pubs);
}
