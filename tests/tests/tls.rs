//! TLS termination through the proxy: RTMPS publish and play against nginx-rtmp (plain RTMP
//! behind the proxy, as seed 001's `listen rtmps`), SNI from a certificate directory, every
//! key format certbot or openssl writes, TLS versions, certificate reload on change and on
//! SIGHUP, bad certificate files as `file:line` config errors, and testssl.sh's verdict.
//! HTTPS and WSS (`bind … ssl` in `mode http`): curl and python3-websockets through the proxy
//! to nginx echo nodes and WebSocket nodes, seed 001's `frontend_https`.
//!
//! This host has no kTLS: these tests run the userspace rustls path; the kernel path runs in
//! `cargo xtask vmtest`. Certificates are made at test time (`e2e::tls`).

use e2e::ffmpeg::{ffmpeg_play, ffmpeg_publish, FPS};
use e2e::http_client::{curl, ok_text, WsServer};
use e2e::nginx::rtmp_pair;
use e2e::nginx_http::{after, echoed, served_by_owner, NginxHttp};
use e2e::tls::{s_client, wss_exchange, KeyKind, TestCa};
use e2e::util::{poll_until, require_tool, wait_until};
use e2e::{free_addr, free_port, hex, loopback, proxy_bin, Proxy, Signal, TestDir};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn tls_listen(port: u16, crt: &Path, extra: &str, servers: &[String]) -> String {
    let mut cfg = format!(
        "global
    nbthread 2

defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s

listen rtmps
    mode tcp
    bind 127.0.0.1:{port} ssl crt {} {extra}
",
        crt.display()
    );
    for (i, s) in servers.iter().enumerate() {
        cfg.push_str(&format!("    server rtmp{i} {s} check inter 500ms\n"));
    }
    cfg
}

/// A proxy with one TLS bind in front of a server that is never reached (handshake tests).
fn tls_proxy(crt: &Path, extra: &str) -> Proxy {
    let port = free_port(Ipv4Addr::LOCALHOST);
    let dead = format!("127.0.0.1:{}", free_port(Ipv4Addr::LOCALHOST));
    Proxy::start(&tls_listen(port, crt, extra, &[dead]))
}

/// Seed 001's `listen rtmps`: ffmpeg publishes with `rtmps://` through the proxy to two
/// nginx-rtmp nodes speaking plain RTMP, and a player decodes it back through the proxy.
#[test]
fn rtmps_publish_and_play_through_the_proxy() {
    let dir = TestDir::new("rtmps");
    let ca = TestCa::new(dir.path());
    let crt = ca.leaf("site", &["rtmps.test"], KeyKind::EcPkcs8, false);
    let (a, b) = rtmp_pair();
    let port = free_port(Ipv4Addr::LOCALHOST);
    let proxy = Proxy::start(&tls_listen(
        port,
        &crt,
        "",
        &[a.rtmp_addr().to_string(), b.rtmp_addr().to_string()],
    ));
    assert!(
        proxy
            .stderr()
            .contains("(TLS, 1 certificate(s), userspace rustls)"),
        "start-up line per listener: {}",
        proxy.stderr()
    );
    let url = format!("rtmps://127.0.0.1:{port}/live/secure");
    let mut publisher = ffmpeg_publish(&url, 14);
    wait_until(
        "the publish to reach a node",
        Duration::from_secs(20),
        || {
            let on = |n: &e2e::Nginx| n.streams().contains(&"secure".to_string());
            (on(&a) || on(&b)).then_some(())
        },
    );
    let play = ffmpeg_play(&url, 5);
    assert!(
        play.frames >= 2 * FPS as u64,
        "decoded {} frames of 5 s of {FPS} fps over RTMPS; ffmpeg: {:?} {}",
        play.frames,
        play.status,
        play.log
    );
    publisher.wait_success(Duration::from_secs(30));
}

/// A directory of certificates: SNI picks by SAN, the first file is the default, and the
/// chain verifies against the test CA.
#[test]
fn sni_picks_the_certificate_from_a_directory() {
    let dir = TestDir::new("sni");
    let ca = TestCa::new(dir.path());
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    let a = ca.leaf("a", &["a.test"], KeyKind::EcPkcs8, false);
    let b = ca.leaf("b", &["b.test", "*.b.test"], KeyKind::RsaPkcs1, true);
    std::fs::rename(&a, certs.join("10-a.pem")).expect("move a");
    std::fs::rename(&b, certs.join("20-b.pem")).expect("move b");
    let proxy = tls_proxy(&certs, "");
    let addr = proxy.addr();
    for (sni, want) in [
        (Some("a.test"), "a.test"),
        (Some("b.test"), "b.test"),
        (Some("x.b.test"), "b.test"),
        (Some("unknown.test"), "a.test"),
        (None, "a.test"),
    ] {
        let h = s_client(addr, sni, ca.cert(), &[]);
        assert_eq!(h.cn.as_deref(), Some(want), "SNI {sni:?}:\n{}", h.output);
        if sni == Some(want) {
            assert!(h.verified, "chain of {want} did not verify:\n{}", h.output);
        }
    }
}

/// Every key form a certbot or openssl user ends up with, key before or after the chain.
#[test]
fn every_key_format_serves_a_verified_handshake() {
    let dir = TestDir::new("keys");
    let ca = TestCa::new(dir.path());
    for (i, kind) in [
        KeyKind::EcPkcs8,
        KeyKind::EcSec1,
        KeyKind::RsaPkcs8,
        KeyKind::RsaPkcs1,
    ]
    .into_iter()
    .enumerate()
    {
        let crt = ca.leaf(&format!("k{i}"), &["site.test"], kind, i % 2 == 1);
        let proxy = tls_proxy(&crt, "");
        let h = s_client(proxy.addr(), Some("site.test"), ca.cert(), &[]);
        assert!(h.verified, "{kind:?}: {}", h.output);
    }
}

/// TLS 1.2 and 1.3 only; `ssl-min-ver TLSv1.3` leaves 1.3 alone; ALPN is offered.
#[test]
fn only_tls12_and_tls13_are_spoken() {
    let dir = TestDir::new("versions");
    let ca = TestCa::new(dir.path());
    let crt = ca.leaf("site", &["site.test"], KeyKind::EcPkcs8, false);
    let proxy = tls_proxy(&crt, "alpn h2,http/1.1");
    let addr = proxy.addr();
    let v12 = s_client(addr, Some("site.test"), ca.cert(), &["-tls1_2"]);
    assert_eq!(v12.protocol.as_deref(), Some("TLSv1.2"), "{}", v12.output);
    let v13 = s_client(
        addr,
        Some("site.test"),
        ca.cert(),
        &["-tls1_3", "-alpn", "http/1.1"],
    );
    assert_eq!(v13.protocol.as_deref(), Some("TLSv1.3"), "{}", v13.output);
    assert!(
        v13.output.contains("ALPN protocol: http/1.1"),
        "{}",
        v13.output
    );
    for old in ["-tls1_1", "-tls1"] {
        let h = s_client(addr, Some("site.test"), ca.cert(), &[old]);
        assert!(h.cn.is_none(), "{old} must fail:\n{}", h.output);
    }
    let only13 = tls_proxy(&crt, "ssl-min-ver TLSv1.3");
    let h = s_client(only13.addr(), Some("site.test"), ca.cert(), &["-tls1_2"]);
    assert!(
        h.cn.is_none(),
        "TLS 1.2 with ssl-min-ver TLSv1.3:\n{}",
        h.output
    );
}

/// certbot renews the file: the next handshake gets the new certificate with no restart; a
/// broken file keeps the old one and says why; SIGHUP reloads at once.
#[test]
fn certificate_replaced_on_disk_is_served_next() {
    let dir = TestDir::new("reload");
    let ca = TestCa::new(dir.path());
    let live = dir.join("live.pem");
    let first = ca.leaf("one", &["one.test"], KeyKind::EcPkcs8, false);
    std::fs::copy(&first, &live).expect("install first");
    let mut proxy = tls_proxy(&live, "");
    let addr = proxy.addr();
    assert_eq!(
        s_client(addr, None, ca.cert(), &[]).cn.as_deref(),
        Some("one.test")
    );

    let second = ca.leaf("two", &["two.test"], KeyKind::RsaPkcs8, true);
    std::fs::copy(&second, &live).expect("install second");
    wait_until("the renewed certificate", Duration::from_secs(15), || {
        (s_client(addr, None, ca.cert(), &[]).cn.as_deref() == Some("two.test")).then_some(())
    });

    std::fs::write(&live, "-----BEGIN CERTIFICATE-----\nbroken\n").expect("break it");
    wait_until(
        "the reload failure in the log",
        Duration::from_secs(15),
        || proxy.stderr().contains("not reloaded").then_some(()),
    );
    assert_eq!(
        s_client(addr, None, ca.cert(), &[]).cn.as_deref(),
        Some("two.test")
    );

    let third = ca.leaf("three", &["three.test"], KeyKind::EcSec1, false);
    std::fs::copy(&third, &live).expect("install third");
    proxy.signal(Signal::SIGHUP);
    let got = poll_until(Duration::from_secs(15), || {
        let cn = s_client(addr, None, ca.cert(), &[]).cn;
        (cn.as_deref() == Some("three.test")).then_some(())
    });
    assert!(got.is_some(), "after SIGHUP: {}", proxy.stderr());
    assert!(
        proxy.try_status().is_none(),
        "SIGHUP must not stop the proxy"
    );
}

/// `proxy -c` names the bind line and what is wrong with each bad certificate file.
#[test]
fn bad_certificate_files_are_config_errors_with_the_line() {
    let dir = TestDir::new("badcrt");
    let ca = TestCa::new(dir.path());
    let good = ca.leaf("good", &["good.test"], KeyKind::EcPkcs8, false);
    let other = ca.leaf("other", &["other.test"], KeyKind::EcPkcs8, false);
    let text = |p: &Path| std::fs::read_to_string(p).expect("read");
    let (good_text, other_text) = (text(&good), text(&other));
    let cert_of = |t: &str| t[..t.find("-----BEGIN PRIVATE KEY").expect("key")].to_string();
    let key_of = |t: &str| t[t.find("-----BEGIN PRIVATE KEY").expect("key")..].to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        ("missing.pem", String::new(), "cannot read"),
        ("nokey.pem", cert_of(&good_text), "no private key"),
        ("nocert.pem", key_of(&good_text), "no certificate"),
        (
            "mismatch.pem",
            format!("{}{}", cert_of(&good_text), key_of(&other_text)),
            "does not match",
        ),
        ("garbage.pem", "hello\n".into(), "no certificate"),
    ];
    for (name, content, want) in cases {
        let path = dir.join(name);
        if !content.is_empty() {
            std::fs::write(&path, content).expect("write case");
        }
        let cfg = dir.join(&format!("{name}.cfg"));
        std::fs::write(
            &cfg,
            format!(
                "defaults\n mode tcp\n\nlisten rtmps\n bind 127.0.0.1:1 ssl crt {}\n server s 127.0.0.1:2\n",
                path.display()
            ),
        )
        .expect("write cfg");
        let out = Command::new(proxy_bin())
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .expect("run proxy -c");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        let line = format!("{}:5: ", cfg.display());
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&line) && l.contains(want)),
            "{name}: want '{line}… {want}' in:\n{stderr}"
        );
    }
    // An empty directory has nothing to serve.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).expect("empty dir");
    let mut p = Proxy::spawn(&tls_listen(1, &empty, "", &["127.0.0.1:2".into()]));
    let status = p.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(!status.success());
    assert!(
        p.stderr().contains("has no certificate file"),
        "{}",
        p.stderr()
    );
}

/// A client that speaks plain text to the TLS port, or nothing at all, is dropped (the
/// latter at `timeout client`), and the listener keeps serving.
#[test]
fn plain_text_and_silent_clients_are_dropped() {
    use std::io::{Read, Write};
    let dir = TestDir::new("plain");
    let ca = TestCa::new(dir.path());
    let crt = ca.leaf("site", &["site.test"], KeyKind::EcPkcs8, false);
    let port = free_port(Ipv4Addr::LOCALHOST);
    let metrics_port = free_port(Ipv4Addr::LOCALHOST);
    let mut cfg = tls_listen(port, &crt, "", &["127.0.0.1:2".into()])
        .replace("timeout client 30s", "timeout client 1s");
    cfg.push_str(&format!(
        "
listen metrics
    mode http
    bind 127.0.0.1:{metrics_port}
    http-request use-service prometheus-exporter if {{ path /metrics }}
"
    ));
    let proxy = Proxy::start(&cfg);
    let mut s = std::net::TcpStream::connect(proxy.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
    let mut buf = [0u8; 64];
    assert!(
        matches!(s.read(&mut buf), Ok(0) | Err(_)),
        "closed on plain text"
    );
    // A silent client is closed by the proxy (EOF or reset), not left to our read timeout.
    let mut silent = std::net::TcpStream::connect(proxy.addr()).expect("connect");
    silent.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let closed = match silent.read(&mut buf) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    };
    assert!(closed, "the handshake timeout closes a silent client");
    let h = s_client(proxy.addr(), Some("site.test"), ca.cert(), &[]);
    assert!(h.verified, "still serving: {}", h.output);
    // Each failed handshake has its line (queued by the worker, written by the log thread).
    e2e::wait_until(
        "a line per failed handshake",
        Duration::from_secs(10),
        || {
            let log = proxy.stderr();
            let lines = log
                .lines()
                .filter(|l| l.contains("TLS handshake with 127.0.0.1:") && l.contains(" failed"))
                .count();
            (lines >= 2).then_some(())
        },
    );

    // Both failures and the good handshake are counted for Prometheus.
    let out = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{metrics_port}/metrics")])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let metric = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in:\n{text}"))
    };
    assert!(
        metric("proxy_tls_handshake_failures_total") >= 2.0,
        "{text}"
    );
    let done = metric("proxy_tls_handshakes_total{carrier=\"userspace\"}")
        + metric("proxy_tls_handshakes_total{carrier=\"kernel\"}");
    assert!(done >= 1.0, "the verified handshake is counted: {text}");
}

/// A client that ends with a FIN and no close_notify may have been cut short by someone on the
/// path (a truncation attack): its session is logged `CD` and counted in
/// `proxy_tls_truncated_total`, while one that sends close_notify is logged `--`. Both reach
/// the backend whole and get the proxy's close_notify back.
#[test]
fn a_fin_without_close_notify_is_logged_as_a_truncation() {
    use e2e::tls::{tls_send_and_end, TlsEnd};
    use std::io::Read;
    let dir = TestDir::new("truncation");
    let ca = TestCa::new(dir.path());
    let crt = ca.leaf("site", &["site.test"], KeyKind::EcPkcs8, false);
    // A backend that reads each connection to its end, then closes.
    let backend = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let backend_addr = backend.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in backend.incoming().flatten() {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let _ = (&s).read_to_end(&mut got);
            });
        }
    });
    let port = free_port(Ipv4Addr::LOCALHOST);
    let metrics_port = free_port(Ipv4Addr::LOCALHOST);
    let mut cfg = tls_listen(port, &crt, "", &[backend_addr.to_string()]);
    cfg.push_str(&format!(
        "
listen metrics
    mode http
    bind 127.0.0.1:{metrics_port}
    http-request use-service prometheus-exporter if {{ path /metrics }}
"
    ));
    let proxy = Proxy::start(&cfg);
    let line_of = |client: std::net::SocketAddr| -> String {
        let start = format!("{client} [");
        e2e::wait_until("the session's log line", Duration::from_secs(10), || {
            proxy
                .stderr()
                .lines()
                .find(|l| l.starts_with(&start))
                .map(str::to_string)
        })
    };
    let (clean, got_close_notify) = tls_send_and_end(
        proxy.addr(),
        "site.test",
        ca.cert(),
        b"publish",
        TlsEnd::CloseNotify,
    );
    assert!(got_close_notify, "the proxy ends with close_notify");
    let clean_line = line_of(clean);
    assert!(clean_line.contains(" -- "), "{clean_line}");
    let (cut, got_close_notify) = tls_send_and_end(
        proxy.addr(),
        "site.test",
        ca.cert(),
        b"publish",
        TlsEnd::BareFin,
    );
    assert!(got_close_notify, "the proxy still ends with close_notify");
    let cut_line = line_of(cut);
    assert!(cut_line.contains(" CD "), "{cut_line}");
    let out = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{metrics_port}/metrics")])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let truncated = text
        .lines()
        .find_map(|l| l.strip_prefix("proxy_tls_truncated_total "))
        .unwrap_or_else(|| panic!("no proxy_tls_truncated_total in:\n{text}"));
    assert_eq!(
        truncated.trim(),
        "1",
        "one truncated session, the clean one not counted"
    );
}

/// testssl.sh against the HTTPS listener (seed 001's `frontend_https`): no SSLv2/SSLv3/
/// TLS 1.0/TLS 1.1, no weak cipher family offered. Its summary is printed (run with
/// `--nocapture` to keep it).
#[test]
fn testssl_finds_no_old_protocol_or_weak_cipher() {
    let testssl = require_tool("testssl");
    let site = https_site();
    let json = site.dir.join("testssl.json");
    let out = Command::new(require_tool("timeout"))
        .arg("600")
        .arg(testssl)
        .args([
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "--sneaky",
            "-p",
            "-s",
            "-f",
        ])
        .arg("--jsonfile")
        .arg(&json)
        .arg(format!("127.0.0.1:{}", site.tls))
        .output()
        .expect("run testssl.sh");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}");
    let report = std::fs::read_to_string(&json).unwrap_or_default();
    let findings: Vec<(String, String, String)> = parse_findings(&report);
    assert!(!findings.is_empty(), "no testssl.sh findings:\n{text}");
    let finding = |id: &str| {
        findings
            .iter()
            .find(|(i, _, _)| i == id)
            .map(|(_, _, f)| f.clone())
            .unwrap_or_default()
    };
    for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        assert!(
            finding(old).starts_with("not offered"),
            "{old}: {}",
            finding(old)
        );
    }
    for new in ["TLS1_2", "TLS1_3"] {
        assert!(
            finding(new).starts_with("offered"),
            "{new}: {}",
            finding(new)
        );
    }
    for weak in [
        "cipherlist_NULL",
        "cipherlist_aNULL",
        "cipherlist_EXPORT",
        "cipherlist_LOW",
        "cipherlist_3DES_IDEA",
        "cipherlist_AVERAGE",
    ] {
        let f = finding(weak);
        assert!(f.starts_with("not offered"), "{weak}: {f}");
    }
}

/// (id, severity, finding) of testssl.sh's flat JSON (one object per finding).
fn parse_findings(json: &str) -> Vec<(String, String, String)> {
    let field = |obj: &str, key: &str| -> String {
        let pat = format!("\"{key}\"");
        let Some(at) = obj.find(&pat) else {
            return String::new();
        };
        let rest = &obj[at + pat.len()..];
        let rest = rest.trim_start().trim_start_matches(':').trim_start();
        let rest = rest.strip_prefix('"').unwrap_or(rest);
        rest.split('"').next().unwrap_or("").to_string()
    };
    json.split('{')
        .skip(1)
        .map(|obj| {
            (
                field(obj, "id"),
                field(obj, "severity"),
                field(obj, "finding"),
            )
        })
        .filter(|(id, _, _)| !id.is_empty())
        .collect()
}

// ---- HTTPS and WSS (`bind … ssl` in `mode http`) ----

/// Two nginx echo nodes behind seed 001's HTTP part: `http_lb` (plain) and `frontend_https`
/// (`ssl`), each with its `reqadd X-Forwarded-Proto`, a frontend with one plain and one TLS
/// bind that sets the header from `ssl_fc`, and `backend_secure` with seed 001's
/// `redirect scheme https if ! { ssl_fc }`.
struct HttpsSite {
    dir: TestDir,
    ca: TestCa,
    a: NginxHttp,
    b: NginxHttp,
    proxy: Proxy,
    plain: u16,
    tls: u16,
    both_plain: u16,
    both_tls: u16,
}

fn https_site() -> HttpsSite {
    let dir = TestDir::new("https");
    let ca = TestCa::new(dir.path());
    let crt = ca.leaf("site", &["localhost"], KeyKind::EcPkcs8, false);
    let hls = dir.join("hls");
    std::fs::create_dir_all(&hls).expect("hls folder");
    let a = NginxHttp::start("ams1", free_addr(loopback(2)), Some(&hls));
    let b = NginxHttp::start("ams2", free_addr(loopback(3)), Some(&hls));
    let [plain, tls, both_plain, both_tls] = [(); 4].map(|()| free_port(Ipv4Addr::LOCALHOST));
    let crt = crt.display();
    let cfg = format!(
        r"global
    nbthread 2

defaults
    mode http
    option forwardfor
    option http-server-close
    option httplog
    timeout connect 2s
    timeout client 20s
    timeout server 20s

frontend http_lb
    bind 127.0.0.1:{plain}
    reqadd X-Forwarded-Proto:\ http
    use_backend backend_secure if {{ path_beg /secure }}
    default_backend backend_http

frontend frontend_https
    bind 127.0.0.1:{tls} ssl crt {crt}
    reqadd X-Forwarded-Proto:\ https
    use_backend backend_secure if {{ path_beg /secure }}
    default_backend backend_http

frontend both
    bind 127.0.0.1:{both_plain}
    bind 127.0.0.1:{both_tls} ssl crt {crt}
    http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
    http-request set-header X-Forwarded-Proto http if !{{ ssl_fc }}
    default_backend backend_http

backend backend_http
    cookie JSESSIONID prefix nocache
    server ams1 {} cookie ams1
    server ams2 {} cookie ams2

backend backend_secure
    redirect scheme https if ! {{ ssl_fc }}
    server ams1 {}
",
        a.addr(),
        b.addr(),
        a.addr()
    );
    let proxy = Proxy::start(&cfg);
    HttpsSite {
        dir,
        ca,
        a,
        b,
        proxy,
        plain,
        tls,
        both_plain,
        both_tls,
    }
}

impl HttpsSite {
    /// curl over HTTPS to `localhost:port`, trusting only the test CA.
    fn https(&self, port: u16, args: &[&str], paths: &[&str]) -> std::process::Output {
        let urls: Vec<String> = paths
            .iter()
            .map(|p| format!("https://localhost:{port}{p}"))
            .collect();
        let ca = self.ca.cert().display().to_string();
        let mut all: Vec<&str> = vec!["--cacert", &ca];
        all.extend_from_slice(args);
        all.extend(urls.iter().map(String::as_str));
        curl(&all)
    }
}

/// curl verifies the proxy's certificate against the test CA and gets nginx's answer; the
/// backend sees `X-Forwarded-Proto: https` (seed 001's `reqadd` on the TLS frontend, and
/// `set-header … if { ssl_fc }` on a frontend with both kinds of bind); `redirect scheme https
/// if ! { ssl_fc }` leaves TLS requests alone while plain ones are still redirected.
#[test]
fn https_reaches_nginx_with_forwarded_proto_and_no_redirect() {
    let s = https_site();
    let log = s.proxy.stderr();
    assert!(
        log.contains(&format!(
            "listening on 127.0.0.1:{} (TLS, 1 certificate(s), ",
            s.tls
        )),
        "the HTTPS listener is reported with its TLS carrier:\n{log}"
    );
    assert!(!log.contains("HTTPS is not served"), "{log}");

    let text = ok_text(&s.https(s.tls, &["-i"], &["/app/hello"]));
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\r\n\r\nnode ams"), "nginx's body: {text}");
    assert_eq!(echoed(&text, "x-forwarded-proto"), ["https"], "{text}");
    assert_eq!(echoed(&text, "x-forwarded-for"), ["127.0.0.1"], "{text}");

    let plain = ok_text(&curl(&[&format!("http://127.0.0.1:{}/app/p", s.plain)]));
    assert_eq!(echoed(&plain, "x-forwarded-proto"), ["http"], "{plain}");
    let both_tls = ok_text(&s.https(s.both_tls, &[], &["/app/b"]));
    assert_eq!(
        echoed(&both_tls, "x-forwarded-proto"),
        ["https"],
        "{both_tls}"
    );
    let both_plain = ok_text(&curl(&[&format!(
        "http://127.0.0.1:{}/app/b",
        s.both_plain
    )]));
    assert_eq!(
        echoed(&both_plain, "x-forwarded-proto"),
        ["http"],
        "{both_plain}"
    );

    // `redirect scheme https if ! { ssl_fc }`: served over TLS, redirected over plain HTTP.
    let secure = ok_text(&s.https(s.tls, &["-i"], &["/secure/page"]));
    assert!(secure.starts_with("HTTP/1.1 200 OK\r\n"), "{secure}");
    assert!(secure.contains("node ams1"), "{secure}");
    let redirected = ok_text(&curl(&[
        "-i",
        "-H",
        "Host: lb.example:5080",
        &format!("http://127.0.0.1:{}/secure/page", s.plain),
    ]));
    assert!(
        redirected.starts_with("HTTP/1.1 302 Found\r\n"),
        "{redirected}"
    );
    assert!(
        redirected.contains("\r\nlocation: https://lb.example:5080/secure/page\r\n"),
        "{redirected}"
    );
    let secure_seen =
        s.a.requests()
            .iter()
            .filter(|r| r.contains("/secure"))
            .count();
    assert_eq!(secure_seen, 1, "only the TLS request reached a server");
}

/// Seed 001's `cookie JSESSIONID prefix nocache` over HTTPS: the first answer sets the
/// prefixed cookie, and twenty requests carrying it, all on one TLS connection (curl reuses
/// it: one connect in all), reach the same node, which sees its own cookie value.
#[test]
fn cookie_stickiness_and_keep_alive_over_https() {
    let s = https_site();
    let first = ok_text(&s.https(s.tls, &["-i"], &["/app/login"]));
    let set = echoed(&first, "set-cookie");
    let owner = first
        .lines()
        .find_map(|l| l.strip_prefix("node "))
        .unwrap_or_else(|| panic!("no node line: {first}"))
        .trim()
        .to_string();
    assert_eq!(set, [format!("JSESSIONID={owner}~sess-{owner}; Path=/")]);
    let cookie = format!("Cookie: JSESSIONID={owner}~sess-{owner}");
    let paths: Vec<String> = (0..20).map(|i| format!("/app/sticky/{i}")).collect();
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    let text = ok_text(&s.https(
        s.tls,
        &["-H", &cookie, "-w", "connects=%{num_connects}\n"],
        &paths,
    ));
    assert_eq!(after(&text, "node "), vec![owner.as_str(); 20], "{text}");
    let connects = after(&text, "connects=");
    let mut want = vec!["0"; 20];
    want[0] = "1";
    assert_eq!(connects, want, "all twenty on one TLS connection");
    assert!(
        text.lines()
            .filter(|l| l.starts_with("cookie "))
            .all(|l| l == format!("cookie JSESSIONID=sess-{owner}")),
        "the server sees its own value, without the prefix: {text}"
    );
    let (on_owner, elsewhere) = served_by_owner(&owner, &s.a, &s.b, "/app/sticky/");
    assert_eq!((on_owner, elsewhere), (20, 0));
}

/// A multi-MiB file (an HLS segment's worth of bytes) over HTTPS arrives byte-exact.
#[test]
fn large_file_over_https_is_byte_exact() {
    let s = https_site();
    let body: Vec<u8> = (0..12_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(s.dir.join("hls/seg0.ts"), &body).expect("segment");
    let out_file = s.dir.join("seg0.out");
    let out = s.https(
        s.tls,
        &[
            "-o",
            &out_file.display().to_string(),
            "-w",
            "%{http_code} %{size_download}",
        ],
        &["/hls/seg0.ts"],
    );
    assert_eq!(ok_text(&out), "200 12000000");
    let got = std::fs::read(&out_file).expect("downloaded file");
    let sha = |b: &[u8]| hex(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    assert_eq!(
        sha(&got),
        sha(&body),
        "sha256 of the body through the proxy"
    );
}

/// WSS: python3-websockets over TLS (trusting the test CA) through the proxy to plain
/// WebSocket nodes picked by cookie; the tunnel idles past `timeout client` (1 s) within
/// `timeout tunnel`, and is logged as a 101 like a plain tunnel.
#[test]
fn wss_idles_past_timeout_client_within_timeout_tunnel() {
    let dir = TestDir::new("wss");
    let ca = TestCa::new(dir.path());
    let crt = ca.leaf("site", &["localhost"], KeyKind::EcPkcs8, false);
    let w1 = WsServer::start("ws1", free_addr(loopback(6)));
    let w2 = WsServer::start("ws2", free_addr(loopback(7)));
    let port = free_port(Ipv4Addr::LOCALHOST);
    let cfg = format!(
        "defaults\n    mode http\n    option httplog\n    option http-server-close\n\
         \x20   timeout connect 2s\n    timeout client 1s\n    timeout server 1s\n\
         \x20   timeout tunnel 30s\n\
         frontend wss\n    bind 127.0.0.1:{port} ssl crt {}\n    default_backend ws_nodes\n\
         backend ws_nodes\n    cookie JSESSIONID prefix\n\
         \x20   server ws1 {} cookie ws1\n    server ws2 {} cookie ws2\n",
        crt.display(),
        w1.addr,
        w2.addr
    );
    let p = Proxy::start(&cfg);
    let url = format!("wss://localhost:{port}/socket");
    for target in ["ws1", "ws2"] {
        let got = wss_exchange(&url, ca.cert(), &format!("JSESSIONID={target}~abc"), 3.0)
            .unwrap_or_else(|e| panic!("WSS through the proxy failed: {e}\n{}", p.stderr()));
        assert_eq!(got, [format!("{target}:first"), format!("{target}:second")]);
    }
    let logged = poll_until(Duration::from_secs(10), || {
        let log = p.stderr();
        ["ws_nodes/ws1", "ws_nodes/ws2"]
            .iter()
            .all(|s| log.lines().any(|l| l.contains(s) && l.contains(" 101 ")))
            .then_some(())
    });
    assert!(logged.is_some(), "both tunnels logged:\n{}", p.stderr());
}
