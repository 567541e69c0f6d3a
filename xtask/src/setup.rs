//! `cargo xtask setup`: everything the tests and the demo need, installed by the repo itself.
//! Idempotent, and fast when all is there: one `dpkg-query`, no network.
//!
//! The package list is kept in one place (`PACKAGES`) so that later tools join it: the eBPF
//! toolchain, chromium, testssl.sh, qemu. Each package names the programs the repo runs from
//! it; setup checks they are there, and a unit test (programs.rs) that every program the
//! sources run is in the table or in the base system's list.
//!
//! The eBPF toolchain (`bpf_toolchain`): the pinned nightly with `rust-src`, and bpf-linker
//! built against that nightly's own libLLVM (Debian's LLVM is too old; see
//! docs/kernel-facts.md). A stamp records what bpf-linker was built for, so a second run
//! costs a few `rustup`/`bpf-linker --version` calls.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};

/// A Debian package, why the project needs it, and the programs the repo runs from it.
pub struct Package {
    pub name: &'static str,
    pub why: &'static str,
    /// Checked after installing, where the tests look for them: a bare name on PATH or in
    /// the sbin folders (as tests/src/util.rs `require_tool` does), an absolute path where
    /// the code runs that very path. Every program the repo runs is here or in the base
    /// system's list (programs.rs, whose test scans the sources for them).
    pub programs: &'static [&'static str],
}

/// Debian 12 (bookworm) packages.
pub const PACKAGES: &[Package] = &[
    Package {
        name: "nginx-light",
        why: "RTMP/HTTP backends standing in for Ant Media Server (e2e tests, demo)",
        programs: &["/usr/sbin/nginx"],
    },
    Package {
        name: "libnginx-mod-rtmp",
        why: "the RTMP module for those nginx backends",
        programs: &[],
    },
    Package {
        name: "libnginx-mod-stream",
        why: "nginx's `stream` UDP proxy: the reference peer of the bench's `srt-ingest` \
              (HAProxy community has no UDP proxy)",
        programs: &[],
    },
    Package {
        name: "libnginx-mod-http-echo",
        why: "the echo module for the HTTP backends of the mode http tests",
        programs: &[],
    },
    Package {
        name: "python3-websockets",
        why: "WebSocket echo server and client for the mode http tests (python3 comes with it)",
        programs: &["/usr/bin/python3"],
    },
    Package {
        name: "ffmpeg",
        why: "RTMP publisher and player (ffmpeg, ffprobe, ffplay)",
        programs: &["/usr/bin/ffmpeg", "ffprobe", "ffplay"],
    },
    Package {
        name: "haproxy",
        why: "the reference implementation and a peer in e2e tests",
        programs: &["/usr/sbin/haproxy"],
    },
    Package {
        name: "wrk",
        why: "HTTP/1.1 keep-alive load generator of `cargo xtask bench`",
        programs: &["/usr/bin/wrk"],
    },
    Package {
        name: "linux-perf",
        why: "`cargo xtask bench --profile`: cpu-clock samples (flame graphs) and system-call counts of the hop",
        programs: &["perf"],
    },
    Package {
        name: "socat",
        why: "raw TCP clients in tests",
        programs: &["socat"],
    },
    Package {
        name: "curl",
        why: "HTTP client in tests",
        programs: &["curl"],
    },
    Package {
        name: "nghttp2-client",
        why: "HTTP/2 clients: nghttp (concurrent streams) in the e2e tests, h2load in the bench",
        programs: &["nghttp", "/usr/bin/h2load"],
    },
    Package {
        name: "iproute2",
        why: "`ss` to inspect sockets; `ip` and `tc` for the soak's own network namespace and its \
              lossy and slow network faults",
        programs: &["ss", "ip", "tc"],
    },
    Package {
        name: "nftables",
        why: "the soak's packet loss where the kernel has no netem (`numgen random` drops)",
        programs: &["nft"],
    },
    Package {
        name: "procps",
        why: "`ps`/`pgrep` to inspect processes",
        programs: &["ps", "pgrep"],
    },
    Package {
        name: "chromium",
        why: "headless browser that renders the stats page in the stats tests",
        programs: &["chromium"],
    },
    Package {
        name: "prometheus",
        why: "`promtool check metrics` on the /metrics output",
        programs: &["promtool"],
    },
    Package {
        name: "testssl.sh",
        why: "TLS listener audit in the TLS tests (no old protocol, no weak cipher)",
        programs: &["testssl"],
    },
    Package {
        name: "openssl",
        why: "test certificates made at test time, and s_client as a verifying TLS client",
        programs: &["openssl"],
    },
    Package {
        name: "kmod",
        why: "`depmod` writes modules.dep for the unpacked Debian kernels of `cargo xtask vmtest`",
        programs: &["depmod"],
    },
    Package {
        name: "binutils",
        why: "`strip`, which cargo-deb runs on the packaged binary (`cargo xtask deb`)",
        programs: &["strip"],
    },
    Package {
        name: "systemd",
        why:
            "`systemd-analyze verify` checks packaging/amsproxy.service (tests/tests/packaging.rs)",
        programs: &["systemd-analyze"],
    },
    Package {
        name: "xz-utils",
        why: "`xz -dc` unpacks the kernel modules (.ko.xz) put in vmtest's initramfs",
        programs: &["xz"],
    },
    Package {
        name: "dnsmasq-base",
        why: "a real DNS server (hosts file, SRV records) for the `resolvers` / `server-template` tests",
        programs: &["dnsmasq"],
    },
];

/// Files other than programs that the packages must have provided; checked after installing.
const PROVIDED: &[&str] = &[
    "/usr/lib/nginx/modules/ngx_rtmp_module.so",
    "/usr/lib/nginx/modules/ngx_http_echo_module.so",
    "/usr/lib/nginx/modules/ngx_stream_module.so",
    "/usr/lib/python3/dist-packages/websockets/__init__.py",
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
    let lacking = missing_programs();
    if !lacking.is_empty() {
        bail!(
            "the packages are installed but these programs are not found (a name: on PATH or in \
             /usr/sbin, /sbin, /usr/bin; a path: there): {}",
            lacking.join(", ")
        );
    }
    rust_components()?;
    bpf_toolchain()?;
    cargo_deb()?;
    cargo_fuzz()
}

/// `program (package)` for each program of `PACKAGES` the tests would not find: a package
/// that moved a file, or a PATH that hides it, fails here and not in the middle of a test.
fn missing_programs() -> Vec<String> {
    PACKAGES
        .iter()
        .flat_map(|p| p.programs.iter().map(move |prog| (*prog, p.name)))
        .filter(|(prog, _)| locate(prog).is_none())
        .map(|(prog, package)| format!("{prog} (package {package})"))
        .collect()
}

/// Where the tests find `program` (tests/src/util.rs `require_tool`): an absolute path as
/// is; a name on PATH, or in the sbin folders, which a non-root PATH may lack.
fn locate(program: &str) -> Option<std::path::PathBuf> {
    let absolute = Path::new(program);
    if absolute.is_absolute() {
        return is_executable(absolute).then(|| absolute.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(std::path::PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
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

/// The nightly the BPF program is built with (proxy/build.rs names the same one). Pinned by
/// the name `rustup toolchain list` shows on the project's machines: bpf-linker is linked
/// against this toolchain's libLLVM, so the two move together.
const BPF_TOOLCHAIN: &str = "nightly-x86_64-unknown-linux-gnu";
/// The nightly this was set up and measured with (a different one works if bpf-linker
/// supports its LLVM; setup rebuilds bpf-linker for it).
const BPF_TOOLCHAIN_TESTED: &str = "1.97.0-nightly (e50aa6fba 2026-05-19)";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The pinned nightly (`PROXY_BPF_TOOLCHAIN` overrides it, as for build.rs): the BPF build
/// and the fuzz targets (`cargo xtask fuzz`, whose sanitizers need a nightly) both use it.
pub fn nightly() -> String {
    std::env::var("PROXY_BPF_TOOLCHAIN").unwrap_or_else(|_| BPF_TOOLCHAIN.into())
}

/// cargo-fuzz, the driver of `cargo xtask fuzz` (libFuzzer comes with the `libfuzzer-sys`
/// crate the fuzz targets build): installed when `cargo fuzz` does not run on the nightly.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

pub fn cargo_fuzz() -> Result<()> {
    let runs = Command::new("rustup")
        .args(["run", &nightly(), "cargo", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if runs {
        return Ok(());
    }
    println!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION} (for `cargo xtask fuzz`)");
    crate::run_checked(crate::cargo().args([
        "install",
        &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
        "--locked",
    ]))
    .context("installing cargo-fuzz")
}

/// Nightly + rust-src + bpf-linker, each only if missing.
fn bpf_toolchain() -> Result<()> {
    let toolchain = nightly();
    let sysroot = nightly_sysroot(&toolchain)?;
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        println!("setup: adding rust-src to {toolchain} (build-std for the BPF target)");
        crate::run_checked(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            &toolchain,
        ]))?;
    }
    let (libllvm, major) = find_libllvm(&sysroot)?;
    let prefix = llvm_prefix(&libllvm, major)?;
    let stamp = prefix.join("bpf-linker.stamp");
    let want = format!("bpf-linker {BPF_LINKER_VERSION} {}", libllvm.display());
    let have = std::fs::read_to_string(&stamp).unwrap_or_default();
    if have.trim() == want && bpf_linker_runs() {
        println!("setup: BPF toolchain present ({toolchain}, bpf-linker {BPF_LINKER_VERSION})");
        return Ok(());
    }
    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against {} (a minute or more)",
        libllvm.display()
    );
    crate::run_checked(
        crate::cargo()
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--force",
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .env("LLVM_PREFIX", &prefix),
    )
    .context("building bpf-linker (needed to build the sockmap engine's BPF program)")?;
    if !bpf_linker_runs() {
        bail!("bpf-linker was installed but does not run (is ~/.cargo/bin on PATH?)");
    }
    std::fs::write(&stamp, want)?;
    Ok(())
}

/// The sysroot of `toolchain`, which must be installed; warns if it is not the tested one.
fn nightly_sysroot(toolchain: &str) -> Result<std::path::PathBuf> {
    let out = Command::new("rustup")
        .args(["run", toolchain, "rustc", "-vV"])
        .output()
        .context("rustup not found")?;
    if !out.status.success() {
        bail!(
            "the BPF toolchain {toolchain} is not installed; install the tested nightly with\n  \
             rustup toolchain install nightly-2026-05-19 --component rust-src\n\
             and set PROXY_BPF_TOOLCHAIN=nightly-2026-05-19 (for build.rs and this setup)"
        );
    }
    let version = String::from_utf8_lossy(&out.stdout);
    if !version.contains(BPF_TOOLCHAIN_TESTED.split(' ').next().unwrap_or_default()) {
        println!(
            "setup: note: {toolchain} is not the tested {BPF_TOOLCHAIN_TESTED}; \
             bpf-linker is built for its LLVM"
        );
    }
    let sysroot = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output()?;
    Ok(std::path::PathBuf::from(
        String::from_utf8_lossy(&sysroot.stdout).trim(),
    ))
}

/// The nightly's `lib/libLLVM.so.<major>.<minor>-rust-…` and its major version.
fn find_libllvm(sysroot: &Path) -> Result<(std::path::PathBuf, u32)> {
    let lib = sysroot.join("lib");
    for e in std::fs::read_dir(&lib)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix("libLLVM.so.") {
            if let Some(Ok(major)) = rest.split('.').next().map(str::parse::<u32>) {
                return Ok((e.path(), major));
            }
        }
    }
    bail!(
        "no libLLVM.so.* in {}: cannot build bpf-linker",
        lib.display()
    )
}

/// A folder whose `lib/` has `libLLVM.so` (and the versioned name) linking to the nightly's
/// library: what bpf-linker's build looks for under LLVM_PREFIX. It also becomes bpf-linker's
/// RUNPATH, so it stays (under the user's cache, not `target/`).
fn llvm_prefix(libllvm: &Path, major: u32) -> Result<std::path::PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set")?;
    let prefix = cache.join("proxy-bpf").join(format!("llvm-{major}"));
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    let versioned = libllvm.file_name().context("libLLVM has a file name")?;
    for name in [std::ffi::OsStr::new("libLLVM.so"), versioned] {
        let link = lib.join(name);
        if std::fs::read_link(&link).ok().as_deref() != Some(libllvm) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(libllvm, &link)?;
        }
    }
    Ok(prefix)
}

fn bpf_linker_runs() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
}

/// The cargo-deb version `cargo xtask deb` was written and measured with.
const CARGO_DEB_VERSION: &str = "3.8.0";

/// cargo-deb for `cargo xtask deb`, from crates.io with its own lock file, unless that version
/// is already there. Building it takes a few minutes once.
fn cargo_deb() -> Result<()> {
    let have = Command::new("cargo-deb")
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if have.split_whitespace().any(|w| w == CARGO_DEB_VERSION) {
        println!("setup: cargo-deb {CARGO_DEB_VERSION} present");
        return Ok(());
    }
    println!("setup: building cargo-deb {CARGO_DEB_VERSION} (a few minutes, once)");
    crate::run_checked(crate::cargo().args([
        "install",
        &format!("cargo-deb@{CARGO_DEB_VERSION}"),
        "--locked",
        "--force",
    ]))
    .context("installing cargo-deb (`cargo xtask deb` builds the Debian package with it)")
}
