//! TLS termination through the proxy: RTMPS publish and play against nginx-rtmp (plain RTMP
//! behind the proxy, as seed 001's `listen rtmps`), SNI from a certificate directory, every
//! key format certbot or openssl writes, TLS versions, certificate reload on change and on
//! SIGHUP, bad certificate files as `file:line` config errors, and testssl.sh's verdict.
//!
//! This host has no kTLS: these tests run the userspace rustls path; the kernel path runs in
//! `cargo xtask vmtest`. Certificates are made at test time (`e2e::tls`).

use e2e::ffmpeg::{ffmpeg_play, ffmpeg_publish, FPS};
use e2e::nginx::rtmp_pair;
use e2e::tls::{s_client, KeyKind, TestCa};
use e2e::util::{poll_until, require_tool, wait_until};
use e2e::{free_port, proxy_bin, Proxy, Signal, TestDir};
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

/// testssl.sh against the TLS listener: no SSLv2/SSLv3/TLS 1.0/TLS 1.1, no weak cipher
/// family offered. Its summary is printed (run with `--nocapture` to keep it).
#[test]
fn testssl_finds_no_old_protocol_or_weak_cipher() {
    let testssl = require_tool("testssl");
    let dir = TestDir::new("testssl");
    let ca = TestCa::new(dir.path());
    let crt = ca.leaf("site", &["site.test"], KeyKind::EcPkcs8, false);
    let proxy = tls_proxy(&crt, "");
    let json = dir.join("testssl.json");
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
        .arg(proxy.addr().to_string())
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
