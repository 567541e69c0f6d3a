//! Directives that act on the process, the listeners and the log lines rather than on one
//! request: `chroot`, `pidfile`, `ulimit-n`, `bind … maxconn`, the access-log formats chosen by
//! `option tcplog|httplog` (HAProxy's default "Connect from" line without either), and
//! `ssl-default-bind-*`. Each test asserts what a client, a backend or the kernel's view of the
//! process (/proc) shows; each passes with `E2E_PROXY=haproxy` too.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::http_client::{curl, Conn};
use e2e::nginx_http::NginxHttp;
use e2e::tls::{KeyKind, TestCa};
use e2e::util::{poll_until, TestDir};
use e2e::{free_addr, free_port, loopback, Proxy};

const TIMEOUTS: &str = " timeout connect 2s\n timeout client 10s\n timeout server 10s\n";

#[test]
fn chroot_pidfile_and_ulimit_act() {
    let dir = TestDir::new("chroot");
    let jail = dir.join("jail");
    std::fs::create_dir_all(&jail).expect("jail");
    let pidfile = dir.join("proxy.pid");
    let node = NginxHttp::start("n1", free_addr(loopback(2)), None);
    let port = free_port(Ipv4Addr::LOCALHOST);
    let cfg = format!(
        "global\n chroot {}\n pidfile {}\n ulimit-n 4096\n\
         defaults\n mode http\n{TIMEOUTS}\
         frontend f\n bind 127.0.0.1:{port}\n default_backend b\n\
         backend b\n server s {}\n",
        jail.display(),
        pidfile.display(),
        node.addr()
    );
    let p = Proxy::start(&cfg);
    if e2e::proxy::is_reference_haproxy() {
        // A deliberate difference: HAProxy writes its pidfile only in daemon or master-worker
        // mode; this proxy always runs in the foreground under a service manager and writes it.
        assert!(!pidfile.exists(), "HAProxy -db writes no pidfile");
    } else {
        let written = std::fs::read_to_string(&pidfile).expect("pidfile written");
        assert_eq!(written.trim(), p.pid().to_string());
    }
    let root = std::fs::read_link(format!("/proc/{}/root", p.pid())).expect("root link");
    assert_eq!(root, jail, "the process runs inside its chroot");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", p.pid())).expect("limits");
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .map(str::to_string);
    if e2e::proxy::is_reference_haproxy() {
        // HAProxy 2.6 raises the soft limit to the hard one whatever ulimit-n says.
        assert!(
            open_files.and_then(|n| n.parse::<u64>().ok()) >= Some(4096),
            "{limits}"
        );
    } else {
        assert_eq!(open_files.as_deref(), Some("4096"), "{limits}");
    }
    let r = Conn::open(p.addr()).get("/", &[]);
    assert_eq!(r.status, 200, "traffic flows from inside the chroot");
    assert!(r.text().contains("node n1"), "{}", r.text());
}

/// A backend that counts the connections it accepts and holds each until its client side
/// ends (EOF), then closes it.
fn holding_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(free_addr(loopback(3))).expect("backend");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            c.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut conn, &mut std::io::sink());
            });
        }
    });
    (addr, count)
}

/// `bind … maxconn 2`: a third client waits in the listen backlog until one of the first
/// two leaves, then goes through.
#[test]
fn bind_maxconn_holds_the_third_connection_back() {
    let (backend, accepted) = holding_backend();
    let port = free_port(Ipv4Addr::LOCALHOST);
    let cfg = format!(
        "defaults\n mode tcp\n{TIMEOUTS}\
         frontend f\n bind 127.0.0.1:{port} maxconn 2\n default_backend b\n\
         backend b\n server s {backend}\n"
    );
    let p = Proxy::start(&cfg);
    let mut clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(p.addr()).expect("connect"))
        .collect();
    let two = poll_until(Duration::from_secs(5), || {
        (accepted.load(Ordering::SeqCst) == 2).then_some(())
    });
    assert!(two.is_some(), "two connections reach the backend");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "the third is held back");
    drop(clients.remove(0));
    let three = poll_until(Duration::from_secs(5), || {
        (accepted.load(Ordering::SeqCst) == 3).then_some(())
    });
    assert!(three.is_some(), "a freed slot lets the third through");
}

/// Without `option tcplog|httplog` a proxy with a `log` line writes HAProxy's default line,
/// one "Connect from" per connection; `option tcplog` on an HTTP frontend gives tcplog lines
/// (no request line); `option httplog` the request line.
#[test]
fn log_lines_follow_the_log_options() {
    let node = NginxHttp::start("n1", free_addr(loopback(2)), None);
    let ports: Vec<u16> = (0..3).map(|_| free_port(Ipv4Addr::LOCALHOST)).collect();
    let cfg = format!(
        "defaults\n mode http\n{TIMEOUTS}\
         frontend plain\n bind 127.0.0.1:{}\n log stderr local0\n default_backend b\n\
         frontend tcpfmt\n bind 127.0.0.1:{}\n log stderr local0\n option tcplog\n default_backend b\n\
         frontend httpfmt\n bind 127.0.0.1:{}\n log stderr local0\n option httplog\n default_backend b\n\
         backend b\n server s {}\n",
        ports[0],
        ports[1],
        ports[2],
        node.addr()
    );
    let p = Proxy::start(&cfg);
    for (port, path) in ports.iter().zip(["/plain", "/tcpfmt", "/httpfmt"]) {
        let r = Conn::open(SocketAddr::from((Ipv4Addr::LOCALHOST, *port))).get(path, &[]);
        assert_eq!(r.status, 200);
    }
    let wait_for = |needle: &str| {
        poll_until(Duration::from_secs(10), || {
            p.stderr()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{}", p.stderr()))
    };
    let connect = wait_for("(plain/HTTP)");
    assert!(
        connect.contains("Connect from 127.0.0.1:")
            && connect.contains(&format!("to 127.0.0.1:{}", ports[0])),
        "{connect}"
    );
    let tcp = wait_for(" tcpfmt b/s ");
    assert!(!tcp.contains("GET "), "tcplog has no request line: {tcp}");
    let http = wait_for(" httpfmt b/s ");
    assert!(http.contains("\"GET /httpfmt HTTP/1.1\""), "{http}");
    let stderr = p.stderr();
    assert!(
        !stderr.contains("\"GET /plain"),
        "the default format logs no request"
    );
    assert!(!stderr.contains("(tcpfmt/HTTP)") && !stderr.contains("(httpfmt/HTTP)"));
}

/// `ssl-default-bind-ciphersuites` and `-options` apply to a `bind … ssl` that says nothing
/// itself: a TLS 1.3 client offering only another suite is refused, one offering the
/// configured suite gets through; TLS 1.2 is not offered after `no-tlsv12`.
#[test]
fn ssl_default_bind_settings_limit_what_is_offered() {
    let dir = TestDir::new("ssl-defaults");
    let ca = TestCa::new(dir.path());
    let crt = ca.leaf("site.test", &["site.test"], KeyKind::EcPkcs8, false);
    let node = NginxHttp::start("n1", free_addr(loopback(2)), None);
    let port = free_port(Ipv4Addr::LOCALHOST);
    let cfg = format!(
        "global\n ssl-default-bind-ciphersuites TLS_AES_256_GCM_SHA384\n\
         \x20ssl-default-bind-options no-tlsv12\n\
         defaults\n mode http\n{TIMEOUTS}\
         frontend f\n bind 127.0.0.1:{port} ssl crt {}\n default_backend b\n\
         backend b\n server s {}\n",
        crt.display(),
        node.addr()
    );
    let _p = Proxy::start(&cfg);
    let resolve = format!("site.test:{port}:127.0.0.1");
    let url = format!("https://site.test:{port}/");
    let cacert = ca.cert().display().to_string();
    let get = |extra: &[&str]| {
        let mut args = vec![
            "--cacert",
            &cacert,
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
        ];
        args.extend_from_slice(extra);
        args.extend(["-w", "%{http_code}", &url]);
        let out = curl(&args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        get(&["--tlsv1.3", "--tls13-ciphers", "TLS_AES_256_GCM_SHA384"]),
        "200"
    );
    assert_eq!(
        get(&["--tlsv1.3", "--tls13-ciphers", "TLS_AES_128_GCM_SHA256"]),
        "000",
        "a suite left out of the list is not negotiated"
    );
    assert_eq!(
        get(&["--tlsv1.2", "--tls-max", "1.2"]),
        "000",
        "TLS 1.2 is not offered after no-tlsv12"
    );
}
