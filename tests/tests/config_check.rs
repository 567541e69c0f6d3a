//! `proxy -c -f FILE` against the config fixtures in `tests/configs/`:
//! - every `bad/*.cfg` exits 1 and prints `FILE:LINE: …` as its first line announces
//!   (`# expect: LINE: SUBSTRING`);
//! - the seed 000 config and the fixed seed 001 config are valid (exit 0);
//! - seed 001 as published exits 1, reporting both the :443 clash and the duplicate server.
//!
//! The binary is not built by this test: run `cargo build -p proxy` first.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `<target>/debug/proxy`, where `<target>` is `$CARGO_TARGET_DIR` (relative to the
/// workspace root when relative) or `<workspace>/target`.
fn proxy_bin() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    };
    let bin = target.join("debug").join("proxy");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p proxy` first",
        bin.display()
    );
    bin
}

struct Check {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `proxy -c -f FILE` from the workspace root, where the fixtures' relative paths
/// (errorfiles) point from. `file` is relative to the root and appears so in messages.
fn check(file: &str) -> Check {
    let output = Command::new(proxy_bin())
        .args(["-c", "-f", file])
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("running the proxy: {e}"));
    Check {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Parses a fixture's first line, `# expect: LINE: SUBSTRING`.
fn expectation(text: &str) -> Option<(usize, String)> {
    let rest = text.lines().next()?.strip_prefix("# expect: ")?;
    let (line, needle) = rest.split_once(": ")?;
    Some((line.parse().ok()?, needle.to_string()))
}

#[test]
fn bad_configs_are_refused_with_their_line() {
    assert_corpus_refused("bad", 20);
}

/// Configs whose syntax is fine but that the start would refuse (rules, ACLs, engines):
/// `-c` must find those too, without opening a socket.
#[test]
fn configs_the_start_would_refuse_fail_the_check() {
    assert_corpus_refused("bad-runtime", 2);
}

fn assert_corpus_refused(folder: &str, at_least: usize) {
    let dir = workspace_root().join("tests/configs").join(folder);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".cfg"))
        .collect();
    names.sort();
    assert!(
        names.len() >= at_least,
        "only {} bad configs in {}",
        names.len(),
        dir.display()
    );

    let mut failures = Vec::new();
    for name in &names {
        let file = format!("tests/configs/{folder}/{name}");
        let text = std::fs::read_to_string(workspace_root().join(&file)).unwrap_or_default();
        let Some((line, needle)) = expectation(&text) else {
            failures.push(format!(
                "{file}: first line is not '# expect: LINE: SUBSTRING'"
            ));
            continue;
        };
        let result = check(&file);
        let prefix = format!("{file}:{line}: ");
        let reported = result
            .stderr
            .lines()
            .any(|l| l.starts_with(&prefix) && l.contains(&needle));
        if result.code != Some(1) || !reported {
            failures.push(format!(
                "{file}: want exit 1 and '{prefix}…{needle}…', got exit {:?} and stderr:\n{}",
                result.code, result.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `-c` on `file` exits 0 and says the configuration is valid.
fn assert_valid(file: &str) {
    let result = check(file);
    assert_eq!(result.code, Some(0), "stderr:\n{}", result.stderr);
    assert!(
        result.stdout.contains("Configuration file is valid"),
        "stdout:\n{}",
        result.stdout
    );
}

/// Problems of every stage (a line the parser refuses, a reference the model check refuses,
/// a regex the HTTP rules refuse, a certificate the TLS room cannot read) are named in one run,
/// each exactly once, one line each, in line order.
#[test]
fn every_problem_is_named_in_one_run() {
    let file = "tests/configs/four-problems.cfg";
    let c = check(file);
    assert_eq!(c.code, Some(1), "{}", c.stderr);
    let lines: Vec<&str> = c.stderr.lines().collect();
    let expected = [
        (9, "cannot read '/nonexistent/site.pem'"),
        (10, "invalid regex '([unclosed': unclosed character class"),
        (12, "backend 'missing_be' not found"),
        (15, "'weight' must be between 0 and 256, got 999"),
    ];
    assert_eq!(lines.len(), expected.len(), "{}", c.stderr);
    for (line, (n, needle)) in lines.iter().zip(expected) {
        let prefix = format!("{file}:{n}: ");
        assert!(
            line.starts_with(&prefix) && line.contains(needle),
            "{line:?} should start with {prefix:?} and say {needle:?}"
        );
    }
}

/// Seed 000 sets no timeout at all: valid, with HAProxy's warning for each proxy.
#[test]
fn seed000_warns_about_its_missing_timeouts() {
    let c = check("tests/configs/seed000.cfg");
    assert_eq!(c.code, Some(0), "{}", c.stderr);
    assert!(
        c.stderr.contains(
            "frontend 'rtmp_lb' at tests/configs/seed000.cfg:17: missing timeouts (client)"
        ),
        "{}",
        c.stderr
    );
    assert!(
        c.stderr.contains("listen 'stats' at tests/configs/seed000.cfg:7: missing timeouts (client, connect, server)")
            && c.stderr.contains("request heads are still bounded at 60 s"),
        "{}",
        c.stderr
    );
}

#[test]
fn seed000_is_valid() {
    assert_valid("tests/configs/seed000.cfg");
}

#[test]
fn seed001_fixed_is_valid() {
    // `-c` loads the certificates the config names; the fixture's is made at test time.
    e2e::tls::ensure_example_cert();
    assert_valid("tests/configs/seed001-fixed.cfg");
}

#[test]
fn seed001_as_published_is_refused() {
    let file = "tests/configs/seed001.cfg";
    let result = check(file);
    assert_eq!(result.code, Some(1), "stderr:\n{}", result.stderr);
    let conflict = format!("{file}:70: bind *:443 conflicts with 'frontend_https' at {file}:54");
    let duplicate = format!(
        "{file}:72: duplicate server name 'rtmp' in listen 'rtmps' (first defined at {file}:71)"
    );
    assert!(
        result.stderr.lines().any(|l| l.starts_with(&conflict)),
        "no :443 conflict in:\n{}",
        result.stderr
    );
    assert!(
        result.stderr.lines().any(|l| l.starts_with(&duplicate)),
        "no duplicate 'rtmp' in:\n{}",
        result.stderr
    );
}
