//! `cargo xtask setup`: everything the tests and the demo need, installed by the repo itself.
//! Idempotent, and fast when all is there: one `dpkg-query`, no network.
//!
//! The package list is kept in one place (`PACKAGES`) so that later tools join it: the eBPF
//! toolchain, chromium, testssl.sh, qemu.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};

/// A Debian package and why the project needs it.
pub struct Package {
    pub name: &'static str,
    pub why: &'static str,
}

/// Debian 12 (bookworm) packages.
pub const PACKAGES: &[Package] = &[
    Package {
        name: "nginx-light",
        why: "RTMP/HTTP backends standing in for Ant Media Server (e2e tests, demo)",
    },
    Package {
        name: "libnginx-mod-rtmp",
        why: "the RTMP module for those nginx backends",
    },
    Package {
        name: "libnginx-mod-http-echo",
        why: "the echo module for the HTTP backends of the mode http tests",
    },
    Package {
        name: "python3-websockets",
        why: "WebSocket echo server and client for the mode http tests",
    },
    Package {
        name: "ffmpeg",
        why: "RTMP publisher and player (ffmpeg, ffprobe, ffplay)",
    },
    Package {
        name: "haproxy",
        why: "the reference implementation and a peer in e2e tests",
    },
    Package {
        name: "socat",
        why: "raw TCP clients in tests",
    },
    Package {
        name: "curl",
        why: "HTTP client in tests",
    },
    Package {
        name: "iproute2",
        why: "`ss` to inspect sockets",
    },
    Package {
        name: "procps",
        why: "`ps`/`pgrep` to inspect processes",
    },
    Package {
        name: "chromium",
        why: "headless browser that renders the stats page in the stats tests",
    },
    Package {
        name: "prometheus",
        why: "`promtool check metrics` on the /metrics output",
    },
];

/// Programs and files the packages must have provided; checked after installing.
const PROVIDED: &[&str] = &[
    "/usr/sbin/nginx",
    "/usr/lib/nginx/modules/ngx_rtmp_module.so",
    "/usr/lib/nginx/modules/ngx_http_echo_module.so",
    "/usr/lib/python3/dist-packages/websockets/__init__.py",
    "/usr/bin/ffmpeg",
    "/usr/bin/ffprobe",
    "/usr/sbin/haproxy",
    "/usr/bin/socat",
    "/usr/bin/curl",
    "/usr/bin/ss",
    "/usr/bin/pgrep",
];

pub fn setup() -> Result<()> {
    let missing = missing_packages()?;
    if missing.is_empty() {
        println!("setup: all {} Debian packages present", PACKAGES.len());
    } else {
        println!("setup: installing {}", missing.join(" "));
        for p in PACKAGES.iter().filter(|p| missing.contains(&p.name)) {
            println!("  {:<20} {}", p.name, p.why);
        }
        apt_install(&missing)?;
        let still = missing_packages()?;
        if !still.is_empty() {
            bail!("still missing after apt-get install: {}", still.join(" "));
        }
    }
    let absent: Vec<_> = PROVIDED.iter().filter(|p| !Path::new(p).exists()).collect();
    if !absent.is_empty() {
        bail!("the packages are installed but these files are missing: {absent:?}");
    }
    rust_components()
}

/// Packages of `PACKAGES` that dpkg does not report as installed.
fn missing_packages() -> Result<Vec<&'static str>> {
    let out = Command::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${Status}\\n")
        .args(PACKAGES.iter().map(|p| p.name))
        .stderr(Stdio::null())
        .output()
        .context(
            "dpkg-query not found: `cargo xtask setup` supports Debian/Ubuntu; elsewhere \
             install the equivalents of the packages listed in xtask/src/setup.rs",
        )?;
    // dpkg-query exits 1 when a package is unknown; its stdout still lists the known ones.
    let text = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = text
        .lines()
        .filter(|l| l.ends_with(" install ok installed"))
        .filter_map(|l| l.split_whitespace().next())
        .map(|name| name.split(':').next().unwrap_or(name))
        .collect();
    Ok(PACKAGES
        .iter()
        .map(|p| p.name)
        .filter(|n| !installed.contains(n))
        .collect())
}

fn apt_install(pkgs: &[&str]) -> Result<()> {
    let root = nix::unistd::geteuid().is_root();
    let sudo = !root
        && Command::new("sudo")
            .arg("-n")
            .arg("true")
            .status()
            .is_ok_and(|s| s.success());
    if !root && !sudo {
        bail!(
            "missing packages and not root (and no password-less sudo); run as root:\n  \
             apt-get update && apt-get install -y --no-install-recommends {}",
            pkgs.join(" ")
        );
    }
    let apt = |args: &[&str]| -> Result<()> {
        let mut c = if sudo {
            let mut c = Command::new("sudo");
            c.args(["-n", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
            c
        } else {
            Command::new("apt-get")
        };
        c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        crate::run_checked(&mut c)
    };
    apt(&["update"])?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend_from_slice(pkgs);
    apt(&args)
}

/// `cargo xtask test` runs rustfmt and clippy; a minimal rustup profile lacks them.
fn rust_components() -> Result<()> {
    let has = |sub: &str| {
        crate::cargo()
            .args([sub, "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let missing: Vec<&str> = [("fmt", "rustfmt"), ("clippy", "clippy")]
        .into_iter()
        .filter(|(sub, _)| !has(sub))
        .map(|(_, component)| component)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: adding rustup components {}", missing.join(" "));
    crate::run_checked(
        Command::new("rustup")
            .args(["component", "add"])
            .args(&missing),
    )
    .context("rustfmt and clippy are needed by `cargo xtask test`")
}
