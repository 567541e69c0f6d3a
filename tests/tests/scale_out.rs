//! Several instances that agree without sharing state: two proxies started from the same
//! configuration send every HLS path (`balance uri` + `hash-type consistent`) and every
//! persistence cookie to the same node, as instances behind ECMP or a cloud L4 balancer must.

use std::net::Ipv4Addr;

use e2e::http_client::{Conn, Response};
use e2e::nginx_http::NginxHttp;
use e2e::{free_addr, free_port, loopback, Proxy};

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
