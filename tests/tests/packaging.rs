//! What an operator installs: the systemd unit (packaging/amsproxy.service) as systemd's own
//! checker sees it, the default config, and the Debian package `cargo xtask deb` builds,
//! unpacked into a throwaway root with its files and metadata checked.

use e2e::util::workspace_root;
use e2e::{proxy_bin, TestDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const INSTALLED_BIN: &str = "/usr/sbin/amsproxy";

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `systemd-analyze verify` of `unit` with `/usr/sbin/amsproxy` replaced by `bin` (verify
/// wants the ExecStart program to exist): its exit status and everything it said. It exits 0
/// on unknown keys and bad values and only warns, so a clean unit is one that says nothing.
fn verify_unit(unit_text: &str, bin: &Path) -> (bool, String) {
    let dir = TestDir::new("unit");
    let unit = dir.join("amsproxy.service");
    let bin = bin.to_str().expect("utf-8 path");
    std::fs::write(&unit, unit_text.replace(INSTALLED_BIN, bin)).expect("writing the unit");
    let out = run(Command::new(e2e::util::require_tool("systemd-analyze"))
        .args(["verify", "--man=no"])
        .arg(&unit));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    (out.status.success(), said)
}

fn repo_unit() -> String {
    std::fs::read_to_string(workspace_root().join("packaging/amsproxy.service")).expect("unit")
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let unit = repo_unit();
    let (ok, said) = verify_unit(&unit, &proxy_bin());
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );
    for line in [
        "Type=notify",
        "ExecStartPre=/usr/sbin/amsproxy -c -f ${CONFIG}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "RuntimeDirectory=amsproxy",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit has {line:?}");
    }
}

/// The check above would see a mistake: a misspelt key and a bad value are reported.
#[test]
fn systemd_analyze_verify_reports_a_broken_unit() {
    let broken = repo_unit()
        .replace("Type=notify", "Type=notifyy")
        .replace("NoNewPrivileges=", "NoNewPrivilege=");
    let (_, said) = verify_unit(&broken, &proxy_bin());
    assert!(
        said.contains("notifyy") && said.contains("NoNewPrivilege"),
        "both mistakes named:\n{said}"
    );
}

fn check_config(bin: &Path, cfg: &Path) {
    let out = run(Command::new(bin).arg("-c").arg("-f").arg(cfg));
    assert!(
        out.status.success() && text(&out.stdout).contains("Configuration file is valid"),
        "{} -c -f {}: {}\n{}{}",
        bin.display(),
        cfg.display(),
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn default_config_passes_check() {
    check_config(
        &proxy_bin(),
        &workspace_root().join("packaging/amsproxy.cfg"),
    );
}

/// The newest `amsproxy_*.deb` under `<target>/debian/` (`cargo xtask deb` writes it there;
/// `cargo xtask test` runs it before the tests), or `$AMSPROXY_DEB`.
fn built_package() -> PathBuf {
    if let Some(p) = std::env::var_os("AMSPROXY_DEB") {
        return PathBuf::from(p);
    }
    // proxy_bin() is <target>/debug/proxy (or the path CARGO_TARGET_DIR leads to).
    let target = proxy_bin()
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("the target folder");
    let dir = target.join("debian");
    let newest = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| n.starts_with("amsproxy_") && n.ends_with(".deb"))
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    newest.unwrap_or_else(|| {
        panic!(
            "no amsproxy_*.deb in {}: build it with `cargo xtask deb` (`cargo xtask test` \
             does, before the tests) or name one with AMSPROXY_DEB",
            dir.display()
        )
    })
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = run(Command::new("dpkg-deb").args(args).arg(deb));
    assert!(
        out.status.success(),
        "dpkg-deb {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn deb_package_installs_the_service() {
    let deb = built_package();
    let info = dpkg_deb(&["-I"], &deb);
    for field in [
        "Package: amsproxy",
        &format!("Version: {}", env!("CARGO_PKG_VERSION")),
        "Architecture: amd64",
        "Section: net",
    ] {
        assert!(info.contains(field), "dpkg-deb -I has {field:?}:\n{info}");
    }
    let depends = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("a Depends line:\n{info}"));
    assert!(
        depends.contains("libc6") && depends.contains("adduser"),
        "Depends: {depends}"
    );

    let root = TestDir::new("deb-root");
    let out = run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(root.path()));
    assert!(out.status.success(), "dpkg-deb -x: {}", text(&out.stderr));
    let at = |p: &str| root.path().join(p.trim_start_matches('/'));

    // The packaged files are the repo's, so a package older than the sources is caught.
    let bin = at(INSTALLED_BIN);
    let unit = std::fs::read_to_string(at("/usr/lib/systemd/system/amsproxy.service"))
        .expect("the unit is in the package");
    assert_eq!(
        unit,
        repo_unit(),
        "the packaged unit is packaging/amsproxy.service (rebuild with `cargo xtask deb`)"
    );
    let cfg = at("/etc/amsproxy/amsproxy.cfg");
    assert_eq!(
        std::fs::read_to_string(&cfg).expect("the default config"),
        std::fs::read_to_string(workspace_root().join("packaging/amsproxy.cfg")).expect("cfg"),
        "the packaged config is packaging/amsproxy.cfg (rebuild with `cargo xtask deb`)"
    );
    assert!(
        at("/usr/share/man/man8/amsproxy.8.gz").is_file(),
        "the man page"
    );
    assert!(
        at("/usr/share/doc/amsproxy/copyright").is_file(),
        "copyright"
    );

    // The packaged binary runs, checks the packaged config, and the packaged unit verifies.
    let version = run(Command::new(&bin).arg("--version"));
    assert!(
        text(&version.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{} --version: {}",
        bin.display(),
        text(&version.stdout)
    );
    check_config(&bin, &cfg);
    let (ok, said) = verify_unit(&unit, &bin);
    assert!(ok && said.trim().is_empty(), "packaged unit:\n{said}");

    // Control files: the config is a conffile (an edited one survives upgrades) and postinst
    // creates the user the default config drops to.
    let control = TestDir::new("deb-control");
    let out = run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(control.path()));
    assert!(out.status.success(), "dpkg-deb -e: {}", text(&out.stderr));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap_or_default();
    assert!(
        conffiles.lines().any(|l| l == "/etc/amsproxy/amsproxy.cfg"),
        "conffiles: {conffiles:?}"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).expect("postinst");
    assert!(
        postinst.contains("adduser --system --group") && !postinst.contains("#DEBHELPER#"),
        "postinst creates the user (and cargo-deb filled in its systemd part):\n{postinst}"
    );
}
