//! Every external program the repo runs must come from a Debian package of setup's
//! `PACKAGES` (its `programs`) or from `BASE_PROGRAMS`. The test scans the Rust sources, so it
//! fails on any machine, not only on a fresh one where the program happens to be missing
//! (vmtest's `cannot run "depmod"` showed only on a fresh Debian 12).
//!
//! What counts as running a program, by its file name ("/usr/sbin/nginx" is `nginx`):
//! - a string literal, or a `const NAME: &str` holding one, as the first argument of
//!   `Command::new` or of the repo's own launchers (`LAUNCHERS`);
//! - any string literal that is a path in /usr/bin, /usr/sbin, /bin or /sbin (a helper
//!   returning the path, a list of candidate paths).
//!
//! Names built at run time (`format!`, a variable such as the proxy binary) are not seen.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Programs that need no entry in `PACKAGES`: Debian's Essential packages (present on every
/// Debian system, minimal container images included), apt (how setup installs anything),
/// and what the Rust toolchain or setup itself brings. `(program, where it comes from)`.
const BASE_PROGRAMS: &[(&str, &str)] = &[
    ("sh", "dash, Essential"),
    ("bash", "bash, Essential"),
    ("cat", "coreutils, Essential"),
    ("env", "coreutils, Essential"),
    ("true", "coreutils, Essential"),
    ("timeout", "coreutils, Essential"),
    ("taskset", "util-linux, Essential"),
    ("setpriv", "util-linux, Essential"),
    ("dpkg", "dpkg, Essential"),
    ("dpkg-query", "dpkg, Essential"),
    ("dpkg-deb", "dpkg, Essential"),
    // Priority required, not Essential; setup cannot install the tool it installs with.
    ("apt-get", "apt, Priority required"),
    ("apt-cache", "apt, Priority required"),
    ("cargo", "the Rust toolchain that runs xtask"),
    ("rustc", "the Rust toolchain that runs xtask"),
    ("rustup", "the Rust toolchain that runs xtask"),
    (
        "bpf-linker",
        "built by setup (`cargo install`, see setup.rs bpf_toolchain)",
    ),
    (
        "amsproxy",
        "the proxy itself under its packaged name (`cargo xtask deb`)",
    ),
    (
        "cargo-deb",
        "built by setup (`cargo install`, see setup.rs cargo_deb)",
    ),
    // Not in a minimal Debian: setup uses it only when present and not root, as the way to
    // become root for apt-get; it cannot install that for itself.
    ("sudo", "sudo, used only if present"),
];

/// Functions whose first argument is the program they run: std's, tests/src/util.rs
/// `require_tool`, vmtest's private apt (`cmd`, `output`), the benches' pinned launchers and
/// version probe. Add a launcher here when the code gains one.
const LAUNCHERS: &[&str] = &[
    "Command::new(",
    "require_tool(",
    ".cmd(",
    ".output(",
    "hop_command(",
    "load_command(",
    "first_line(",
];

/// Where the repo's Rust sources are (every crate of the workspace, and proxy-ebpf).
const SOURCE_DIRS: &[&str] = &["xtask", "tests", "benches", "proxy", "proxy-ebpf"];

/// Folders holding program paths that Debian packages install into.
const BIN_DIRS: &[&str] = &["/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/"];

/// Program name -> the places (`file:line`) that run it.
type Found = BTreeMap<String, Vec<String>>;

/// The `.rs` files under `dir`, build outputs left out.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|e| e.path()) {
        if path.is_dir() && !path.ends_with("target") {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text of the string literal opening `s` (after its `"`), escapes left as written.
fn literal(s: &str) -> Option<&str> {
    let body = s.strip_prefix('"')?;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            '\\' => escaped = !escaped,
            '"' if !escaped => return Some(&body[..i]),
            _ => escaped = false,
        }
    }
    None
}

/// `const NAME: &str = "value";` (any visibility) in `text`, by NAME.
fn str_consts(text: &str, consts: &mut HashMap<String, String>) {
    for (at, _) in text.match_indices("const ") {
        let rest = &text[at + "const ".len()..];
        let Some((name, ty_value)) = rest.split_once(':') else {
            continue;
        };
        let Some((ty, value)) = ty_value.split_once('=') else {
            continue;
        };
        if ["&str", "&'static str"].contains(&ty.trim()) {
            if let Some(v) = literal(value.trim_start()) {
                consts.insert(name.trim().to_string(), v.to_string());
            }
        }
    }
}

/// The program a launcher's argument names: a literal, or a known `&str` constant (its last
/// path segment: `crate::hop::HAPROXY`). Anything else is decided at run time.
fn argument(arg: &str, consts: &HashMap<String, String>) -> Option<String> {
    let arg = arg.trim_start();
    if let Some(v) = literal(arg) {
        return Some(v.to_string());
    }
    let path: String = arg
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    let name = path.rsplit("::").next()?;
    consts.get(name).cloned()
}

/// The file name of `program`, the name `PACKAGES` and `BASE_PROGRAMS` use; none for a
/// folder ("/usr/sbin/").
fn name_of(program: &str) -> Option<String> {
    if program.ends_with('/') {
        return None;
    }
    let name = Path::new(program).file_name()?.to_str()?;
    let plain = !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '{');
    plain.then(|| name.to_string())
}

/// The programs `text` runs, with their line numbers.
fn programs_in(text: &str, consts: &HashMap<String, String>) -> Vec<(String, usize)> {
    let mut hits = vec![];
    for launcher in LAUNCHERS {
        for (at, _) in text.match_indices(launcher) {
            let program = argument(&text[at + launcher.len()..], consts);
            hits.extend(program.and_then(|p| name_of(&p)).map(|n| (n, at)));
        }
    }
    for dir in BIN_DIRS {
        for (at, _) in text.match_indices(&format!("\"{dir}")) {
            // `\"/usr/bin/…` is inside another literal (a test's sample), not a path.
            if text[..at].ends_with('\\') {
                continue;
            }
            let program = literal(&text[at..]).and_then(name_of);
            hits.extend(program.map(|n| (n, at)));
        }
    }
    let line = |at: usize| text[..at].matches('\n').count() + 1;
    hits.into_iter().map(|(n, at)| (n, line(at))).collect()
}

/// Every program the repo's sources run, with where.
fn scan(root: &Path) -> Found {
    let mut files = vec![];
    for dir in SOURCE_DIRS {
        rust_files(&root.join(dir), &mut files);
    }
    let texts: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).expect("reading a source file");
            (f, text)
        })
        .collect();
    // Constants are often defined in one file and launched from another (benches' peers).
    let mut consts = HashMap::new();
    for (_, text) in &texts {
        str_consts(text, &mut consts);
    }
    let mut found = Found::new();
    for (file, text) in &texts {
        let shown = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        for (name, line) in programs_in(text, &consts) {
            found
                .entry(name)
                .or_default()
                .push(format!("{shown}:{line}"));
        }
    }
    found
}

/// The package that provides `program`, or where it comes from if it is a base one.
fn provider(program: &str) -> Option<&'static str> {
    let packaged = crate::setup::PACKAGES.iter().find(|p| {
        p.programs
            .iter()
            .any(|q| name_of(q).as_deref() == Some(program))
    });
    let base = BASE_PROGRAMS.iter().find(|(b, _)| *b == program);
    packaged.map(|p| p.name).or(base.map(|(_, from)| *from))
}

/// `program (file:line, ...)` for each program that nothing provides.
fn unprovided(found: &Found) -> Vec<String> {
    found
        .iter()
        .filter(|(program, _)| provider(program).is_none())
        .map(|(program, places)| format!("{program} ({})", places.join(", ")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_run_is_provided() {
        let found = scan(&crate::root());
        for (program, places) in &found {
            let from = provider(program).unwrap_or("NOTHING");
            println!("{program:<12} {from:<40} {}", places.join(" "));
        }
        // A scan that finds nothing would pass whatever the sources run.
        assert!(found.contains_key("depmod") && found.contains_key("nginx"));
        let missing = unprovided(&found);
        assert!(
            missing.is_empty(),
            "programs run by the repo that setup does not install: {}.\n\
             Add the Debian package that provides each to `PACKAGES` in xtask/src/setup.rs \
             (with the program in its `programs`), or, if it comes with every Debian system or \
             the Rust toolchain, to `BASE_PROGRAMS` in xtask/src/programs.rs.",
            missing.join("; ")
        );
    }

    #[test]
    fn a_program_is_in_one_table_only() {
        for (program, _) in BASE_PROGRAMS {
            let packaged = crate::setup::PACKAGES.iter().any(|p| {
                p.programs
                    .iter()
                    .any(|q| name_of(q).as_deref() == Some(program))
            });
            assert!(
                !packaged,
                "{program} is both a base program and in PACKAGES"
            );
        }
    }

    /// Literals, constants, launchers and bin paths are seen; run-time names are not. The
    /// sample's names are provided ones, as the scan of the repo reads this file too.
    #[test]
    fn finds_literals_constants_and_paths() {
        let text = "const NGINX: &str = \"/usr/sbin/nginx\";\n\
             Command::new(\"curl\");\n\
             c.load_command(crate::peers::NGINX);\n\
             require_tool( \"ffprobe\");\n\
             apt.output(\"apt-cache\", &[]);\n\
             Command::new(bin); Command::new(format!(\"x\"));\n\
             fn python() -> &'static str { \"/usr/bin/python3\" }\n";
        let mut consts = HashMap::new();
        str_consts(text, &mut consts);
        let mut got = programs_in(text, &consts);
        got.sort();
        let want = [
            ("apt-cache", 5),
            ("curl", 2),
            ("ffprobe", 4),
            ("nginx", 1),
            ("nginx", 3),
            ("python3", 7),
        ];
        let want: Vec<(String, usize)> = want.iter().map(|(n, l)| (n.to_string(), *l)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn an_unknown_program_is_reported() {
        let mut found = Found::new();
        found.insert("curl".into(), vec!["a.rs:1".into()]);
        found.insert("someprog".into(), vec!["b.rs:2".into()]);
        assert_eq!(unprovided(&found), ["someprog (b.rs:2)"]);
    }
}
