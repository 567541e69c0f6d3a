//! The loader against the fixtures in `tests/configs/` (the seeds and the bad corpus), and
//! `load`'s own duties: directories, several files, unreadable input, error order.
//!
//! Fixture paths are relative to the workspace root, which these tests pass as the working
//! directory (cargo runs unit tests from the package directory).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::keywords::{self, Scope};
use super::*;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> PathBuf {
    workspace().join("tests/configs").join(name)
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn load_fixture(names: &[&str]) -> Result<Config, ConfigErrors> {
    let paths: Vec<PathBuf> = names.iter().map(|n| fixture(n)).collect();
    load_with(&paths, &workspace(), &no_env)
}

fn lines_of(errors: &ConfigErrors) -> Vec<String> {
    errors.0.iter().map(ToString::to_string).collect()
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("proxy-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn seed000_is_valid() {
    let config = load_fixture(&["seed000.cfg"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.global.maxconn, Some(2000));
    let names: Vec<_> = config.proxies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "stats",
            "rtmp_lb",
            "backend_rtmp",
            "http_lb",
            "backend_http"
        ]
    );
    let stats = config
        .proxy("stats")
        .and_then(|p| p.stats.clone())
        .unwrap_or_default();
    assert_eq!(stats.realm.as_deref(), Some("Haproxy Statistics"));
    let rtmp = config
        .proxy_backend("backend_rtmp")
        .map(|b| b.servers.len());
    assert_eq!(rtmp, Some(2));
}

#[test]
fn seed001_fixed_is_valid() {
    let config = load_fixture(&["seed001-fixed.cfg"]).unwrap_or_else(|e| panic!("{e}"));
    let https = config
        .proxy("frontend_https")
        .cloned()
        .unwrap_or_else(|| panic!("no frontend_https"));
    assert_eq!(https.mode, Mode::Http, "inherited from defaults");
    assert_eq!(https.timeouts.tunnel, Some(Duration::from_secs(7200)));
    assert_eq!(https.errorfiles.len(), 7);
    assert!(https
        .errorfiles
        .iter()
        .all(|e| e.path.is_file() && e.loc.line >= 18));
    assert!(https.binds.iter().all(|b| b.ssl.is_some()));
    let http_lb = config
        .proxy("http_lb")
        .cloned()
        .unwrap_or_else(|| panic!("no http_lb"));
    let reqadd = http_lb.http_rules.first().map(|r| r.action.clone());
    assert_eq!(
        reqadd,
        Some(HttpAction::AddHeader {
            name: "X-Forwarded-Proto".into(),
            value: "http".into()
        })
    );
    let rtmp = config
        .proxy("rtmp_lb")
        .cloned()
        .unwrap_or_else(|| panic!("no rtmp_lb"));
    assert!(
        rtmp.options.tcplog && !rtmp.options.httplog,
        "httplog falls back to tcplog in mode tcp"
    );
    let backend = config
        .proxy_backend("backend_http")
        .cloned()
        .unwrap_or_else(|| panic!("no backend_http"));
    assert_eq!(
        backend.cookie.map(|c| (c.name, c.mode, c.nocache)),
        Some(("JSESSIONID".into(), CookieMode::Prefix, true))
    );
    let rtmps = config
        .proxy("rtmps")
        .map(|p| p.servers.iter().map(|s| s.name.clone()).collect::<Vec<_>>());
    assert_eq!(rtmps, Some(vec!["rtmp".to_string(), "rtmp2".to_string()]));
}

#[test]
fn seed001_reports_the_443_conflict_and_the_duplicate_server() {
    let errors = load_fixture(&["seed001.cfg"])
        .map(|_| ())
        .expect_err("seed 001 has errors");
    let file = fixture("seed001.cfg").display().to_string();
    let lines = lines_of(&errors);
    let conflict = format!("{file}:70: bind *:443 conflicts with 'frontend_https' at {file}:54");
    let duplicate = format!(
        "{file}:72: duplicate server name 'rtmp' in listen 'rtmps' (first defined at {file}:71)"
    );
    assert!(lines.iter().any(|l| l.starts_with(&conflict)), "{lines:#?}");
    assert!(lines.contains(&duplicate), "{lines:#?}");
}

/// The bad corpus: each file's first line is `# expect: LINE: SUBSTRING`, and the file
/// must give exactly that one error.
#[test]
fn bad_corpus() {
    let dir = fixture("bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cfg"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "only {} bad configs", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let Some((line, needle)) = expectation(&text) else {
            failures.push(format!(
                "{}: no '# expect: LINE: SUBSTRING' first line",
                file.display()
            ));
            continue;
        };
        let want = format!("{}:{line}: ", file.display());
        let got = match load_with(std::slice::from_ref(file), &workspace(), &no_env) {
            Ok(_) => Vec::new(),
            Err(errors) => lines_of(&errors),
        };
        let matches = got
            .iter()
            .any(|l| l.starts_with(&want) && l.contains(needle));
        if !matches || got.len() != 1 {
            failures.push(format!(
                "{}: want line {line} with {needle:?}, got {got:#?}",
                file.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Parses `# expect: LINE: SUBSTRING`.
fn expectation(text: &str) -> Option<(usize, &str)> {
    let rest = text.lines().next()?.strip_prefix("# expect: ")?;
    let (line, needle) = rest.split_once(": ")?;
    Some((line.parse().ok()?, needle))
}

#[test]
fn directory_gives_its_cfg_files_in_order() {
    let scratch = Scratch::new("dir");
    scratch.write("20-backend.cfg", b"backend be\n server s 10.0.0.1:80\n");
    scratch.write(
        "10-frontend.cfg",
        b"frontend fe\n bind :80\n default_backend be\n",
    );
    scratch.write("README", b"not a config\n");
    let config = load_with(std::slice::from_ref(&scratch.0), &scratch.0, &no_env)
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<_> = config.proxies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["fe", "be"]);
}

#[test]
fn defaults_carry_over_files_but_sections_do_not() {
    let scratch = Scratch::new("files");
    let a = scratch.write("a.cfg", b"defaults\n mode http\n");
    let b = scratch.write("b.cfg", b" retries 2\nlisten l\n bind :80\n stats enable\n");
    let errors = load_with(&[a.clone(), b.clone()], &scratch.0, &no_env)
        .map(|_| ())
        .expect_err("b starts outside any section");
    let lines = lines_of(&errors);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines.iter().all(|l| l.starts_with(&format!(
        "{}:1: 'retries' found before any section",
        b.display()
    ))));
    let c = scratch.write("c.cfg", b"listen l\n bind :80\n stats enable\n");
    let config = load_with(&[a, c], &scratch.0, &no_env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.proxy("l").map(|p| p.mode), Some(Mode::Http));
}

#[test]
fn unreadable_input() {
    let scratch = Scratch::new("unreadable");
    let missing = scratch.0.join("missing.cfg");
    let lines = load_with(std::slice::from_ref(&missing), &scratch.0, &no_env)
        .map(|_| ())
        .map_err(|e| lines_of(&e));
    let want = format!("{}:0: cannot read configuration file", missing.display());
    assert!(
        lines
            .as_ref()
            .err()
            .is_some_and(|l| l.len() == 1 && l.iter().all(|l| l.starts_with(&want))),
        "{lines:?}"
    );

    let empty = Scratch::new("empty-dir");
    let lines = load_with(std::slice::from_ref(&empty.0), &scratch.0, &no_env)
        .map(|_| ())
        .map_err(|e| lines_of(&e));
    assert!(lines
        .err()
        .is_some_and(|l| l.iter().any(|l| l.contains("no *.cfg file"))));

    let bad = scratch.write("latin1.cfg", b"global\n maxconn 1\n description caf\xe9\n");
    let lines = load_with(std::slice::from_ref(&bad), &scratch.0, &no_env)
        .map(|_| ())
        .map_err(|e| lines_of(&e));
    assert_eq!(
        lines,
        Err(vec![format!("{}:3: invalid UTF-8 text", bad.display())])
    );
}

#[test]
fn errors_are_all_reported_in_order() {
    let text = "frontend fe\n bind :80\n default_backend nope\n frob\nbackend b\n server s 10.0.0.1:0\n maxconn 5\n";
    let lines = parse_str(text, Path::new("all.cfg"))
        .map(|_| ())
        .map_err(|e| lines_of(&e));
    let lines = lines.err().unwrap_or_default();
    let numbers: Vec<_> = lines
        .iter()
        .map(|l| l.split(':').nth(1).unwrap_or_default().to_string())
        .collect();
    assert_eq!(numbers, ["3", "4", "6", "7"], "{lines:#?}");
}

#[test]
fn parse_str_expands_the_process_environment() {
    // PATH is set in any test environment; only its non-emptiness is checked.
    let config = parse_str("global\n node \"$PATH\"\n", Path::new("env.cfg"))
        .unwrap_or_else(|e| panic!("{e}"));
    let node = config.global.node.unwrap_or_default();
    assert!(!node.is_empty() && node != "$PATH");
}

#[test]
fn display_is_file_line_reason() {
    let errors = parse_str("bogus\n", Path::new("/etc/x.cfg"))
        .map(|_| ())
        .expect_err("bad");
    assert_eq!(errors.to_string(), "/etc/x.cfg:1: 'bogus' found before any section (global, defaults, frontend, backend, listen or udp-lb)");
}

/// Random lines built from keywords and troublesome words must give errors, never a panic.
/// (No word is a resolvable `host:port`, so nothing reaches the resolver.)
#[test]
fn random_input_never_panics() {
    const WORDS: &[&str] = &[
        "global",
        "defaults",
        "frontend",
        "backend",
        "listen",
        "f",
        "b",
        "server",
        "bind",
        "s1",
        "10.0.0.1:80",
        ":80",
        "*:0",
        "[::1]:1",
        "ipv6@:1",
        "'",
        "\"",
        "\\",
        "#",
        "\"$X\"",
        "\"${\"",
        "if",
        "unless",
        "{",
        "}",
        "!",
        "ssl",
        "crt",
        "weight",
        "300",
        "0",
        "-1",
        "99999999999999999999",
        "timeout",
        "client",
        "5s",
        "30d",
        "option",
        "no",
        "stats",
        "cookie",
        "redirect",
        "http-request",
        "reqadd",
        "X:\\ y",
        "mode",
        "http",
        "tcp",
        "\t",
        "default_backend",
        "use_backend",
        "default-server",
        "errorfile",
        "503",
        "é",
        "\\x4",
        "acl",
        "balance",
        "forward-engine",
        "maxconn",
        "nbthread",
        "enable",
        "admin",
        "auth",
        "scheme",
        "code",
        "deny",
        "deny_status",
        "add-header",
        "insert",
        "prefix",
        "maxidle",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        // xorshift64: deterministic, no dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        usize::try_from(state % n as u64).unwrap_or(0)
    };
    for _ in 0..2000 {
        let mut text = String::new();
        for _ in 0..(1 + next(12)) {
            for _ in 0..(1 + next(6)) {
                text.push_str(WORDS.get(next(WORDS.len())).copied().unwrap_or_default());
                text.push(if next(5) == 0 { '\t' } else { ' ' });
            }
            text.push_str(if next(4) == 0 { "\r\n" } else { "\n" });
        }
        let _ = parse_str(&text, Path::new("random.cfg"));
    }
}

#[test]
fn http_rules_are_kept_in_haproxy_evaluation_order() {
    let text = "defaults\n    mode http\nfrontend f\n    bind :8080\n    redirect scheme https\n    reqadd X-A:\\ 1\n    http-request set-header X-B 2\n    default_backend b\nbackend b\n    server s 127.0.0.1:80\n";
    let cfg = parse_str(text, Path::new("order.cfg")).expect("valid config");
    let origins: Vec<RuleOrigin> = cfg.proxies[0].http_rules.iter().map(|r| r.origin).collect();
    assert_eq!(
        origins,
        vec![
            RuleOrigin::HttpRequest,
            RuleOrigin::Reqadd,
            RuleOrigin::Redirect
        ]
    );
    let lines: Vec<usize> = cfg.proxies[0]
        .http_rules
        .iter()
        .map(|r| r.loc.line)
        .collect();
    assert_eq!(lines, vec![7, 6, 5]);
}

/// One line for every keyword the parser knows. A test below fails for a keyword without one,
/// so a new keyword cannot skip the check.
fn sample_line(keyword: &str, errorfile: &Path) -> Option<String> {
    let line = match keyword {
        "acl" => "acl a path_beg /x",
        "balance" => "balance leastconn",
        "bind" => "bind 127.0.0.1:3",
        "capture" => "capture request header Host len 64",
        "cookie" => "cookie SRV insert",
        "default-server" => "default-server inter 3s",
        "default_backend" => "default_backend b",
        "dgram-bind" => "dgram-bind 127.0.0.1:4201,127.0.0.1:4202",
        "description" => "description edge nodes",
        "errorfile" => return Some(format!("errorfile 503 {}", errorfile.display())),
        "forward-engine" => "forward-engine copy",
        "http-check" => "http-check expect status 200",
        "http-request" => "http-request deny",
        "http-response" => "http-response del-header Server",
        "http-reuse" => "http-reuse always",
        "hash-type" => "hash-type consistent",
        "id" => "id 42",
        "log" => "log 127.0.0.1:514 local0",
        "maxconn" => "maxconn 10",
        "mode" => "mode http",
        "redirect" => "redirect scheme https",
        "reqadd" => r"reqadd X-A:\ b",
        "retries" => "retries 5",
        "server" => "server s2 127.0.0.1:4",
        "server-template" => "server-template ams 1-3 ams.test:5080 resolvers dns init-addr none",
        "stats" => "stats enable",
        "stats admin" => "stats admin if TRUE",
        "use_backend" => "use_backend b",
        "ca-base" => "ca-base /etc/ssl/certs",
        "chroot" => "chroot /var/empty",
        "crt-base" => "crt-base /etc/ssl/private",
        "daemon" => "daemon",
        "group" => "group nogroup",
        "hard-stop-after" => "hard-stop-after 10s",
        "log-tag" => "log-tag lb",
        "nbproc" => "nbproc 1",
        "nbthread" => "nbthread 2",
        "node" => "node lb1",
        "pidfile" => "pidfile /run/lb.pid",
        "ssl-default-bind-ciphers" => "ssl-default-bind-ciphers ECDHE-RSA-AES128-GCM-SHA256",
        "ssl-default-bind-ciphersuites" => "ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256",
        "ssl-default-bind-options" => "ssl-default-bind-options no-tlsv13",
        "tune.bufsize" => "tune.bufsize 32768",
        "tune.sockmap.budget" => "tune.sockmap.budget 8m",
        "tune.ssl.default-dh-param" => "tune.ssl.default-dh-param 2048",
        "tune.ssl.ktls" => "tune.ssl.ktls off",
        "ulimit-n" => "ulimit-n 4096",
        "user" => "user nobody",
        other => match other.split_once(' ') {
            Some(("option", name)) => return Some(format!("option {name}")),
            Some(("timeout", name)) => return Some(format!("timeout {name} 7s")),
            _ => return None,
        },
    };
    Some(line.to_string())
}

/// Keywords accepted without changing the model, each with why that is not a silent no-op.
const ACCEPTED_AS_IS: &[(&str, &str)] = &[(
    "nbproc",
    "only 'nbproc 1' is accepted: the one process this proxy always is; any other value is refused",
)];

/// The parsed model of `text` (its Debug form), or the lines of its errors.
fn model(text: &str) -> Result<String, Vec<usize>> {
    parse_str(text, Path::new("walk.cfg"))
        .map(|c| format!("{c:?}"))
        .map_err(|e| e.0.iter().map(|e| e.line).collect())
}

/// Every keyword the parser accepts either changes the parsed model or is refused with its
/// line: a directive that parses and does nothing hides a mistake (it once hid `send-proxy`).
/// The sample goes last in the file, so that adding it moves no other line.
#[test]
fn every_accepted_keyword_acts_or_is_refused() {
    let errorfile = workspace().join("tests/configs/errors/503.http");
    let global_extra = ["log", "maxconn", "description", "stats"];
    let mut quiet = Vec::new();
    let proxies = keywords::all().map(|k| (k, false));
    let globals = keywords::global_only()
        .chain(global_extra)
        .map(|k| (k, true));
    for (keyword, global) in proxies.chain(globals) {
        let line = sample_line(keyword, &errorfile)
            .unwrap_or_else(|| panic!("no sample line for '{keyword}': add one to sample_line"));
        let base = if global {
            "global\n".to_string()
        } else {
            let scope = [
                Scope::Listen,
                Scope::Backend,
                Scope::Frontend,
                Scope::Defaults,
                Scope::UdpLb,
            ]
            .into_iter()
            .find(|s| keywords::allowed(keyword, *s))
            .unwrap_or_else(|| panic!("'{keyword}' is allowed nowhere"));
            let mode = if keyword == "mode" {
                ""
            } else {
                " mode http\n"
            };
            match scope {
                // A `resolvers` section first, for `server-template` to name.
                Scope::Listen => format!(
                    "resolvers dns\n nameserver a 127.0.0.1:53\n\
                     backend b\n mode http\n server s 127.0.0.1:2\n\
                     listen l\n{mode} bind 127.0.0.1:1\n server s 127.0.0.1:2\n"
                ),
                Scope::Backend => format!(
                    "resolvers dns\n nameserver a 127.0.0.1:53\n\
                     backend b\n{mode} server s 127.0.0.1:2\n"
                ),
                Scope::Frontend => format!(
                    "backend b\n mode http\n server s 127.0.0.1:2\n\
                     frontend f\n{mode} bind 127.0.0.1:1\n use_backend b\n"
                ),
                Scope::Defaults => format!("defaults\n{mode}"),
                Scope::UdpLb => UDP_BASE.to_string(),
            }
        };
        let before = model(&base).unwrap_or_else(|l| panic!("base for '{keyword}' fails at {l:?}"));
        let sample_at = base.lines().count() + 1;
        match model(&format!("{base} {line}\n")) {
            Err(lines) => assert!(
                lines.contains(&sample_at),
                "'{line}' broke another line ({lines:?}) instead of being refused at {sample_at}"
            ),
            Ok(after) if after == before => {
                if !ACCEPTED_AS_IS.iter().any(|(k, _)| *k == keyword) {
                    quiet.push(line);
                }
            }
            Ok(_) => {}
        }
    }
    assert!(
        quiet.is_empty(),
        "accepted, yet the parsed model is the same as without them: {quiet:#?}"
    );
}

/// The option words a refusal lists as supported (`… (supported: a, b, c and …)`).
fn supported_words(refusal: &str) -> Vec<String> {
    let list = refusal
        .split_once("(supported: ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(list, _)| list)
        .unwrap_or_else(|| panic!("no supported list in {refusal:?}"));
    let list = list.split(" and ").next().unwrap_or(list);
    list.split(", ").map(str::to_string).collect()
}

fn first_error(text: &str) -> String {
    match parse_str(text, Path::new("walk.cfg")) {
        Ok(_) => panic!("{text:?} was accepted"),
        Err(e) => e.0[0].reason.clone(),
    }
}

/// A config with the options under test in place, and the sample line of one option.
type Section = dyn Fn(&str) -> String;
type Sample = fn(&str, &Path) -> String;

/// Every server and bind option the parser says it supports changes the parsed model: the
/// list comes from the parser's own refusal of an unknown option, so a new option cannot
/// skip the check (`send-proxy` was once parsed and ignored).
#[test]
fn every_server_and_bind_option_acts() {
    // `resolvers`, `init-addr` and `resolve-prefer` act on host names (and `resolvers` names
    // a section).
    let server = |opts: &str| {
        let addr = if opts.contains("resolvers dns") {
            "ams.test:2 init-addr none"
        } else if opts.contains("init-addr") || opts.contains("resolve-prefer") {
            "localhost:2"
        } else {
            "127.0.0.1:2"
        };
        format!(
            "resolvers dns\n nameserver a 127.0.0.1:53\n\
             backend b\n server s {addr}{opts}\n"
        )
    };
    let bind = |opts: &str| format!("listen l\n bind 127.0.0.1:1{opts}\n server s 127.0.0.1:2\n");
    let crt = workspace().join("tests/configs/errors/503.http");
    let cases: [(&Section, Sample); 2] = [
        (&server, |opt, _| match opt {
            "inter" | "fastinter" | "downinter" => format!("{opt} 3s"),
            "rise" | "fall" | "weight" | "maxconn" | "maxqueue" | "port" => format!("{opt} 7"),
            "cookie" => "cookie c1".into(),
            "addr" => "addr 127.0.0.9".into(),
            "proxy-v2-options" => "send-proxy-v2 proxy-v2-options crc32c".into(),
            "check-ssl" => "check-ssl verify none".into(),
            "check-sni" => "check-sni site.test".into(),
            "verify" => "verify none".into(),
            "resolvers" => "resolvers dns".into(),
            "resolve-prefer" => "resolve-prefer ipv4".into(),
            "init-addr" => "init-addr none".into(),
            other => other.into(),
        }),
        (&bind, |opt, crt| match opt {
            "ssl" | "crt" => format!("ssl crt {}", crt.display()),
            "alpn" => format!("ssl crt {} alpn h2,http/1.1", crt.display()),
            "ssl-min-ver" => format!("ssl crt {} ssl-min-ver TLSv1.3", crt.display()),
            "name" => "name web".into(),
            "maxconn" => "maxconn 9".into(),
            other => other.into(),
        }),
    ];
    let mut quiet = Vec::new();
    for (section, sample) in cases {
        let words = supported_words(&first_error(&section(" bogus-option")));
        assert!(words.len() > 5, "{words:?}");
        let before = model(&section("")).expect("base");
        for word in words {
            let opts = format!(" {}", sample(&word, &crt));
            // A bind with `ssl` but a certificate that is not one still parses: certificates
            // are read by the TLS room at compile time, not here.
            let after =
                model(&section(&opts)).unwrap_or_else(|l| panic!("'{opts}' refused at {l:?}"));
            if after == before {
                quiet.push(opts);
            }
        }
    }
    assert!(quiet.is_empty(), "options that change nothing: {quiet:?}");
}

/// The smallest valid `udp-lb` section, the base its keywords are tried on.
const UDP_BASE: &str = "udp-lb u\n dgram-bind 127.0.0.1:1\n server s 127.0.0.1:2\n";

/// The same walk for the `udp-lb` section: every keyword the matrix lets into it changes the
/// model there, and every other proxy keyword is refused with its line (none is parsed and
/// forgotten, since the UDP room reads only what it acts on).
#[test]
fn every_udp_lb_keyword_acts_or_is_refused() {
    let errorfile = workspace().join("tests/configs/errors/503.http");
    let before = model(UDP_BASE).expect("base");
    let sample_at = UDP_BASE.lines().count() + 1;
    let mut quiet = Vec::new();
    for keyword in keywords::all() {
        let mut line = sample_line(keyword, &errorfile).expect("sample");
        if keyword == "http-check" {
            line = format!("option httpchk GET /\n {line}");
        }
        let at = sample_at + line.lines().count() - 1;
        let result = model(&format!("{UDP_BASE} {line}\n"));
        match (keywords::allowed(keyword, Scope::UdpLb), result) {
            (true, Ok(after)) if after == before => quiet.push(line),
            (true, Ok(_)) => {}
            (true, Err(lines)) => panic!("'{line}' refused in udp-lb at {lines:?}"),
            (false, Err(lines)) => assert!(lines.contains(&at), "'{line}': {lines:?}"),
            (false, Ok(_)) => panic!("'{line}' accepted in udp-lb, yet not in its matrix"),
        }
    }
    assert!(
        quiet.is_empty(),
        "accepted in udp-lb, yet acting on nothing: {quiet:#?}"
    );
}

/// The `udp-lb` section: its balance words, its server options that act on flows or checks,
/// and the TCP-only ones refused with the server's line.
#[test]
fn udp_lb_section() {
    let cfg = parse_str(
        "defaults\n mode http\n timeout client 9s\n\
         udp-lb srt\n dgram-bind 127.0.0.1:4200,127.0.0.2:4200\n balance hash\n\
         timeout client 30s\n maxconn 500\n option httpchk GET /LiveApp/rest/v2/version\n\
         server n1 127.0.0.3:4200 check port 5080 weight 3\n\
         server n2 127.0.0.4:4200 backup disabled\n",
        Path::new("u.cfg"),
    )
    .expect("valid");
    let u = cfg.proxy("srt").expect("udp-lb");
    assert_eq!(u.kind, ProxyKind::UdpLb);
    assert_eq!(u.dgram_binds.len(), 2);
    assert_eq!((u.balance, u.hash_type.consistent), (Balance::Source, true));
    assert_eq!(u.timeouts.client, Some(std::time::Duration::from_secs(30)));
    assert_eq!(u.mode, Mode::Tcp, "defaults are not inherited");
    assert_eq!(u.maxconn, Some(500));
    let n1 = &u.servers[0].params;
    assert_eq!((n1.check, n1.check_port, n1.weight), (true, Some(5080), 3));
    assert!(u.servers[1].params.backup && u.servers[1].params.disabled);
    let lines = |text: &str| model(text).err().unwrap_or_default();
    assert_eq!(lines("udp-lb u\n server s 127.0.0.1:2\n"), [1]);
    assert_eq!(lines("udp-lb u\n dgram-bind 127.0.0.1:1\n"), [1]);
    assert_eq!(
        lines(&format!("{UDP_BASE} server t 127.0.0.1:3 send-proxy\n")),
        [4]
    );
    assert_eq!(lines(&format!("{UDP_BASE} balance uri\n")), [4]);
    assert_eq!(lines(&format!("{UDP_BASE} bind :80\n")), [4]);
    assert_eq!(lines(&format!("{UDP_BASE} frob\n")), [4]);
    assert_eq!(
        lines(&format!(
            "{UDP_BASE}udp-lb v\n dgram-bind 127.0.0.1:1\n server s 127.0.0.1:2\n"
        )),
        [5]
    );
    let used = "frontend f\n bind :1\n default_backend u\n";
    assert_eq!(lines(&format!("{UDP_BASE}{used}")), [6]);
}
