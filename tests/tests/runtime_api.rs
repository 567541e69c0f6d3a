//! The runtime API (`stats socket`), spoken to with `socat` as operators' scripts do, in front
//! of real nginx nodes: `show info|stat|servers state|sess`, drain (no new flow, the
//! established one goes on), maint and ready, weight, a changed address, `add server` with
//! the backend's `default-server check` taking traffic once its checks pass, `del server`,
//! `set maxconn frontend`; levels and bad commands; and the same commands put to HAProxy 2.6
//! on the same config (CSV header, `show servers state` columns, error texts).

use e2e::http_client::{curl, ok_text, Conn};
use e2e::nginx_http::{after, NginxHttp};
use e2e::util::{require_tool, TestDir};
use e2e::{free_addr, free_port, loopback, wait_until, Proxy};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A bound against hanging, not a speed requirement.
const LIMIT: Duration = Duration::from_secs(20);

/// `echo INPUT | socat stdio UNIX-CONNECT:SOCK`: what the socket answered before closing.
fn socat(sock: &Path, input: &str) -> String {
    let mut child = Command::new(require_tool("socat"))
        .args(["-t", "20", "stdio"])
        .arg(format!("UNIX-CONNECT:{}", sock.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running socat");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{input}\n").as_bytes())
        .expect("writing to socat");
    drop(stdin);
    let out = child.wait_with_output().expect("socat");
    assert!(
        out.status.success(),
        "socat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Setup {
    proxy: Proxy,
    dir: TestDir,
    nodes: Vec<NginxHttp>,
    fe_http: SocketAddr,
    fe_tcp: SocketAddr,
}

impl Setup {
    fn admin(&self, cmd: &str) -> String {
        socat(&self.dir.join("admin.sock"), cmd)
    }

    fn user(&self, cmd: &str) -> String {
        socat(&self.dir.join("user.sock"), cmd)
    }

    /// The nodes that answered `n` new connections' requests through `fe`.
    fn answers(&self, fe: SocketAddr, n: usize) -> Vec<String> {
        let url = format!("http://{fe}/");
        (0..n)
            .map(|_| {
                let text = ok_text(&curl(&[&url]));
                after(&text, "node ").concat()
            })
            .collect()
    }

    /// The `status` column of `be/srv` in `show stat`.
    fn status(&self, backend: &str, server: &str) -> String {
        let csv = self.admin("show stat");
        let header: Vec<&str> = csv.lines().next().unwrap_or("").split(',').collect();
        let at = header.iter().position(|c| *c == "status").expect("status");
        csv.lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&backend) && f.get(1) == Some(&server))
            .and_then(|f| f.get(at).map(|s| s.to_string()))
            .unwrap_or_default()
    }
}

fn config(dir: &Path, fe_http: SocketAddr, fe_tcp: SocketAddr, nodes: &[&NginxHttp]) -> String {
    let [n1, n2] = [nodes[0].addr(), nodes[1].addr()];
    format!(
        "global
    # One worker: a lowered maxconn binds from each worker's next accept (README).
    nbthread 1
    stats socket {admin} mode 600 level admin
    stats socket {user} level user
    stats socket {oper}

defaults
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend fe_http
    bind {fe_http}
    mode http
    default_backend be_http

frontend fe_tcp
    bind {fe_tcp}
    mode tcp
    default_backend be_tcp

backend be_http
    mode http
    server n1 {n1}
    server n2 {n2}

backend be_tcp
    mode tcp
    default-server check inter 300ms rise 2 fall 2
    server n1 {n1}
    server n2 {n2}
",
        admin = dir.join("admin.sock").display(),
        user = dir.join("user.sock").display(),
        oper = dir.join("oper.sock").display(),
    )
}

fn setup(haproxy: bool) -> Setup {
    let nodes: Vec<NginxHttp> = (1..=3)
        .map(|i| NginxHttp::start(&format!("n{i}"), free_addr(loopback(10 + i)), None))
        .collect();
    let dir = TestDir::new("api");
    let fe_http = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
    let fe_tcp = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
    let cfg = config(dir.path(), fe_http, fe_tcp, &[&nodes[0], &nodes[1]]);
    let proxy = if haproxy {
        Proxy::start_haproxy(&cfg)
    } else {
        Proxy::start(&cfg)
    };
    Setup {
        proxy,
        dir,
        nodes,
        fe_http,
        fe_tcp,
    }
}

fn count(answers: &[String], node: &str) -> usize {
    answers.iter().filter(|a| *a == node).count()
}

#[test]
fn show_commands_answer_in_haproxys_formats() {
    let s = setup(false);
    let info = s.admin("show info");
    assert!(
        info.contains(&format!("\nPid: {}\n", s.proxy.pid())),
        "{info}"
    );
    assert!(info.ends_with("\n\n"), "an empty line ends each answer");
    let stat = s.user("show stat");
    assert!(
        stat.starts_with("# pxname,svname,qcur,qmax,scur,"),
        "{stat}"
    );
    for row in [
        "fe_http,FRONTEND,",
        "be_tcp,n1,",
        "be_tcp,n2,",
        "be_tcp,BACKEND,",
    ] {
        assert!(stat.lines().any(|l| l.starts_with(row)), "{row} in {stat}");
    }
    let state = s.user("show servers state be_tcp");
    let lines: Vec<&str> = state.lines().collect();
    assert_eq!(lines[0], "1");
    assert!(lines[1].starts_with("# be_id be_name srv_id srv_name srv_addr"));
    assert_eq!(lines[2].split(' ').nth(3), Some("n1"));
    assert_eq!(lines[3].split(' ').nth(3), Some("n2"));
    assert_eq!(lines[4], "", "then the empty line");
    // Several commands on a line, each answered in turn.
    assert_eq!(
        s.admin("show cli level; user; show cli level"),
        "admin\n\n\nuser\n\n"
    );
    // `show sess` lists an established flow with its server and engine.
    let mut held = Conn::open(s.fe_tcp);
    let owner = after(&held.get("/", &[]).text(), "node ").concat();
    let sess = s.admin("show sess");
    assert!(
        sess.lines().any(|l| l.contains("fe=fe_tcp be=be_tcp")
            && l.contains(&format!("srv={owner}"))
            && l.contains("engine=")),
        "{sess}"
    );
    // An HTTP connection shows the server of its latest request and its bytes.
    let mut web = Conn::open(s.fe_http);
    let served_by = after(&web.get("/", &[]).text(), "node ").concat();
    let sess = s.admin("show sess");
    let line = sess
        .lines()
        .find(|l| l.contains("fe=fe_http"))
        .unwrap_or_else(|| panic!("no fe_http flow in {sess}"));
    assert!(
        line.contains(&format!("be=be_http srv={served_by} "))
            && line.contains("engine=http")
            && !line.contains("bytes_out=0"),
        "{line}"
    );
    drop(web);
    let flows = s.admin("show flows");
    assert!(
        flows.starts_with("# id client frontend backend server"),
        "{flows}"
    );
    drop(held);
}

#[test]
fn server_commands_act_on_traffic() {
    let s = setup(false);
    // Both nodes take new flows at first.
    let before = s.answers(s.fe_tcp, 4);
    assert_eq!(
        (count(&before, "n1"), count(&before, "n2")),
        (2, 2),
        "{before:?}"
    );

    // Drain: an established flow goes on, new flows go to the other node.
    let mut held = Conn::open(s.fe_tcp);
    let owner = after(&held.get("/", &[]).text(), "node ").concat();
    let other = if owner == "n1" { "n2" } else { "n1" };
    assert_eq!(
        s.admin(&format!("set server be_tcp/{owner} state drain")),
        "\n"
    );
    assert_eq!(s.status("be_tcp", &owner), "DRAIN");
    let drained = s.answers(s.fe_tcp, 4);
    assert_eq!(
        count(&drained, other),
        4,
        "no new flow to {owner}: {drained:?}"
    );
    let again = after(&held.get("/", &[]).text(), "node ").concat();
    assert_eq!(again, owner, "the established flow continues on {owner}");

    // Maint, then ready again.
    assert_eq!(s.admin(&format!("disable server be_tcp/{owner}")), "\n");
    assert_eq!(s.status("be_tcp", &owner), "MAINT");
    assert_eq!(count(&s.answers(s.fe_tcp, 4), other), 4);
    assert_eq!(
        s.admin(&format!("set server be_tcp/{owner} state ready")),
        "\n"
    );
    let ready = s.answers(s.fe_tcp, 4);
    assert_eq!(count(&ready, &owner), 2, "{ready:?}");
    drop(held);

    // Weight 0 takes a server out of the rotation of the HTTP backend.
    assert_eq!(s.admin("set server be_http/n1 weight 0"), "\n");
    assert_eq!(s.admin("get weight be_http/n1"), "0 (initial 1)\n\n");
    assert_eq!(count(&s.answers(s.fe_http, 4), "n2"), 4);
    assert_eq!(s.admin("set weight be_http/n1 1"), "\n");

    // A new address holds for HTTP keep-alive too: idle pooled connections to the old one
    // are not reused for the server.
    let n3 = s.nodes[2].addr();
    let mut keep = Conn::open(s.fe_http);
    let mut ask = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| after(&keep.get("/", &[]).text(), "node ").concat())
            .collect()
    };
    let warm = ask(4);
    assert_eq!(count(&warm, "n2"), 2, "{warm:?}");
    s.admin(&format!(
        "set server be_http/n2 addr {} port {}",
        n3.ip(),
        n3.port()
    ));
    let later = ask(4);
    assert_eq!(
        (count(&later, "n1"), count(&later, "n3")),
        (2, 2),
        "{later:?}"
    );

    // A new server, with `check` from default-server, takes flows once its checks pass.
    assert_eq!(
        s.admin(&format!("add server be_tcp/n3 {n3}")),
        "New server registered.\n\n"
    );
    assert!(s.admin("show servers state be_tcp").contains(" n3 "));
    wait_until("n3 UP", LIMIT, || {
        (s.status("be_tcp", "n3") == "UP").then_some(())
    });
    let three = s.answers(s.fe_tcp, 6);
    assert_eq!(count(&three, "n3"), 2, "{three:?}");

    // Delete: maintenance first (HAProxy's rule), then it takes no flow.
    assert_eq!(
        s.admin("del server be_tcp/n3"),
        "Only servers in maintenance mode can be deleted.\n\n"
    );
    assert_eq!(
        s.admin("set server be_tcp/n3 state maint; del server be_tcp/n3"),
        "\nServer deleted.\n\n"
    );
    assert!(!s.admin("show servers state be_tcp").contains(" n3 "));
    let served = s.nodes[2].served("GET / ");
    s.answers(s.fe_tcp, 4);
    assert_eq!(
        s.nodes[2].served("GET / "),
        served,
        "a deleted server gets nothing"
    );

    // A new address takes effect for new connections.
    let answer = s.admin(&format!(
        "set server be_tcp/n2 addr {} port {}",
        n3.ip(),
        n3.port()
    ));
    assert!(
        answer.starts_with("IP changed from '127.0.0.12' to '127.0.0.13'"),
        "{answer}"
    );
    let moved = s.answers(s.fe_tcp, 4);
    assert_eq!(
        (count(&moved, "n1"), count(&moved, "n3")),
        (2, 2),
        "{moved:?}"
    );
}

#[test]
fn frontend_maxconn_changes_at_run_time() {
    let s = setup(false);
    assert_eq!(s.admin("set maxconn frontend fe_tcp 1"), "\n");
    let stat = s.admin("show stat fe_tcp 1 -1");
    assert!(stat
        .lines()
        .nth(1)
        .is_some_and(|l| l.starts_with("fe_tcp,FRONTEND,")));
    let mut held = Conn::open(s.fe_tcp);
    held.get("/", &[]);
    // A second client waits in the backlog while the one slot is held…
    let url = format!("http://{}/", s.fe_tcp);
    let mut waiting = Command::new(require_tool("curl"))
        .args(["-s", "--max-time", "20", &url])
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        waiting.try_wait().expect("curl").is_none(),
        "served beyond maxconn 1"
    );
    // …and is served as soon as the limit is raised, the first still open.
    assert_eq!(s.admin("set maxconn frontend fe_tcp 10"), "\n");
    let out = waiting.wait_with_output().expect("curl");
    assert!(String::from_utf8_lossy(&out.stdout).contains("node "));
    drop(held);
    assert_eq!(
        s.admin("set maxconn frontend nope 10"),
        "No such frontend.\n\n"
    );
}

#[test]
fn levels_and_bad_commands() {
    let s = setup(false);
    assert_eq!(
        s.user("set server be_tcp/n1 state maint"),
        "Permission denied\n\n"
    );
    assert_eq!(
        s.status("be_tcp", "n1"),
        "UP",
        "a refused command changes nothing"
    );
    assert_eq!(s.user("show sess"), "Permission denied\n\n");
    let oper = socat(
        &s.dir.join("oper.sock"),
        "show cli level; show sess; del server be_tcp/n1",
    );
    assert!(
        oper.starts_with("operator\n\n"),
        "the default level is operator: {oper}"
    );
    assert!(oper.ends_with("Permission denied\n\n"), "{oper}");
    // A bad command gets one line and the connection answers the next command.
    let bad = s.admin("frobnicate; show cli level");
    let lines: Vec<&str> = bad.lines().collect();
    assert!(lines[0].starts_with("Unknown command"), "{bad}");
    assert_eq!(&lines[1..], ["", "admin", ""]);
    assert_eq!(
        s.admin("set server be_tcp/n1 state sleepy"),
        "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n"
    );
    assert_eq!(
        s.admin("set server nope/n1 weight 1"),
        "No such backend.\n\n"
    );
    let long = format!("show info {}; show cli level", "x".repeat(20_000));
    assert!(s.admin(&long).starts_with("Command line too long"));
    // Prompt mode: several lines on one connection.
    let prompt = s.admin("prompt\nshow cli level\nquit");
    assert_eq!(prompt, "\n> admin\n\n> ");
}

/// The commands scripts depend on, put to HAProxy 2.6 and to this proxy on the same config.
#[test]
fn answers_match_haproxy() {
    let ours = setup(false);
    let theirs = setup(true);
    let header = |s: &Setup| {
        s.admin("show stat")
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    };
    let (ours_h, theirs_h) = (header(&ours), header(&theirs));
    let ours_cols: Vec<&str> = ours_h.trim_end_matches(',').split(',').collect();
    let theirs_cols: Vec<&str> = theirs_h.split(',').collect();
    assert_eq!(
        ours_cols[..],
        theirs_cols[..ours_cols.len()],
        "the static columns, up to HAProxy's `-` (its extra modules' fields)"
    );
    assert_eq!(theirs_cols[ours_cols.len()], "-");

    // Once both have checked every server (srv_check_status 6, HAProxy's L4OK).
    let state = |s: &Setup| {
        wait_until("checks done", LIMIT, || {
            let text = s.admin("show servers state be_tcp");
            let rows = text.lines().skip(2).filter(|l| !l.is_empty());
            rows.clone().count().eq(&2).then_some(())?;
            rows.clone()
                .all(|l| l.split(' ').nth(10) == Some("6"))
                .then_some(text.clone())
        })
    };
    let (ours_s, theirs_s) = (state(&ours), state(&theirs));
    let ol: Vec<&str> = ours_s.lines().collect();
    let tl: Vec<&str> = theirs_s.lines().collect();
    assert_eq!(ol[..2], tl[..2], "version line and column list");
    assert_eq!(ol.len(), tl.len());
    for (o, t) in ol[2..].iter().zip(&tl[2..]).filter(|(o, _)| !o.is_empty()) {
        let (o, t): (Vec<&str>, Vec<&str>) = (o.split(' ').collect(), t.split(' ').collect());
        assert_eq!(o.len(), t.len(), "{o:?} vs {t:?}");
        // be_name, srv_id, srv_name, srv_addr, admin state, weights, check status, result
        // and health, check state, fqdn, srvrecord (the ports differ: two sets of nodes).
        for at in [1, 2, 3, 4, 6, 7, 8, 10, 11, 12, 13, 17, 19] {
            assert_eq!(o[at], t[at], "column {at}: {o:?} vs {t:?}");
        }
    }
    for cmd in [
        "set server be_tcp/zz state ready",
        "set server zz/n1 state ready",
        "set server be_tcp state ready",
        "set server be_tcp/n1 state bogus",
        "set server be_tcp/n1 weight 300",
        "del server be_tcp/n1",
        "set maxconn frontend zz 10",
        "show servers state zz",
    ] {
        // HAProxy ends a few answers without the empty line (`del server`'s refusal).
        assert_eq!(
            ours.admin(cmd).trim_end(),
            theirs.admin(cmd).trim_end(),
            "{cmd}"
        );
    }
    for cmd in ["set server be_tcp/n1 state maint", "show sess"] {
        assert_eq!(ours.user(cmd), theirs.user(cmd), "{cmd} at level user");
    }
    let first_word = |t: String| t.split([',', '.']).next().unwrap_or("").to_string();
    assert_eq!(
        first_word(ours.admin("frobnicate")),
        first_word(theirs.admin("frobnicate")),
        "an unknown command"
    );
}

/// `expose-fd listeners`: HAProxy 2.6 started with `-x` takes this proxy's listening socket
/// over its runtime API (HAProxy's own protocol), binding nothing anew, and serves on it.
#[test]
fn haproxy_takes_the_listeners_over_expose_fd() {
    let node = NginxHttp::start("n1", free_addr(loopback(11)), None);
    let dir = TestDir::new("api-x");
    let sock = dir.join("admin.sock");
    let fe = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
    let body = format!(
        "defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend fe
    bind {fe}
    default_backend be

backend be
    server n1 {}
",
        node.addr()
    );
    let ours = Proxy::start(&format!(
        "global\n    stats socket {} level admin expose-fd listeners\n\n{body}",
        sock.display()
    ));
    let ours_inodes = e2e::process::listening_inodes(ours.pid(), fe);
    assert_eq!(ours_inodes.len(), 1, "one listening socket for {fe}");
    let sock_arg = sock.display().to_string();
    let theirs = Proxy::start_haproxy_with(&body, &["-x", &sock_arg]);
    let theirs_inodes = e2e::process::listening_inodes(theirs.pid(), fe);
    assert_eq!(
        theirs_inodes, ours_inodes,
        "HAProxy listens on the socket it was handed, not one of its own"
    );
    assert!(ours.stderr().contains("1 listening socket(s) handed over"));
    drop(ours);
    let text = ok_text(&curl(&[&format!("http://{fe}/")]));
    assert_eq!(
        after(&text, "node ").concat(),
        "n1",
        "served by HAProxy on it"
    );
    // A socket without `expose-fd listeners` refuses.
    let plain = TestDir::new("api-plain");
    let plain_sock = plain.join("s.sock");
    let _p = Proxy::start(&format!(
        "global\n    stats socket {} level admin\n\n{}",
        plain_sock.display(),
        body.replace(
            &fe.port().to_string(),
            &free_port(Ipv4Addr::LOCALHOST).to_string()
        )
    ));
    assert_eq!(
        socat(&plain_sock, "_getsocks"),
        "_getsocks needs 'expose-fd listeners' on this stats socket.\n\n"
    );
}

/// `reload` on the socket is the SIGHUP reload: a config with a third server is swapped in
/// (the server shows in `show stat`), a broken one is refused with its line and the running
/// configuration keeps serving.
#[test]
fn reload_on_the_socket_swaps_the_config_or_keeps_it() {
    let s = setup(false);
    let path = s.proxy.config_path();
    let cfg = s.proxy.config();
    let third = format!("    server n3 {}\n", s.nodes[2].addr());
    let grown = cfg.replacen("    server n2 ", &format!("{}    server n2 ", third), 1);
    std::fs::write(&path, &grown).expect("writing the new config");
    let answer = s.admin("reload");
    assert!(answer.starts_with("Success=1\n"), "{answer}");
    assert!(answer.contains("reload done"), "{answer}");
    assert!(
        s.admin("show stat").contains("be_http,n3,"),
        "n3 after the reload"
    );
    std::fs::write(
        &path,
        format!("{grown}\nbackend broken\n    balance nonsense\n"),
    )
    .expect("writing a broken config");
    let answer = s.admin("reload");
    assert!(answer.starts_with("Success=0\n"), "{answer}");
    assert!(
        answer.contains(&format!("{}:", path.display())),
        "file:line: {answer}"
    );
    let mut c = Conn::open(s.fe_http);
    assert_eq!(
        c.get("/", &[]).status,
        200,
        "the running config still serves"
    );
}
