//! Builds the sockmap engine's BPF program (`proxy-ebpf`, bin) for the BPF target with the
//! pinned nightly toolchain, `-Z build-std=core` and bpf-linker, through aya-build, and leaves
//! it in `OUT_DIR/proxy-ebpf` for `include_bytes!`.
//!
//! Without that toolchain (`cargo xtask setup` installs it) the proxy still builds: the object
//! is left empty, and the proxy reports the sockmap engine as not built, so that `cargo build`,
//! clippy and the tests of the other rooms work on a bare Rust install. Forcing
//! `forward-engine sockmap` on such a build is a start-up error, never a silent fallback.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The nightly the BPF program is built with; bpf-linker is linked against its libLLVM, so
/// both are pinned together (xtask/src/setup.rs installs them). Overridable for other hosts.
const TOOLCHAIN: &str = "nightly-x86_64-unknown-linux-gnu";

fn main() {
    println!("cargo:rerun-if-env-changed=PROXY_BPF_TOOLCHAIN");
    let toolchain = std::env::var("PROXY_BPF_TOOLCHAIN").unwrap_or_else(|_| TOOLCHAIN.into());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("proxy-ebpf");
    // Installing the toolchain later must rebuild this.
    if let Some(home) = cargo_home() {
        println!("cargo:rerun-if-changed={}", home.join("bin").display());
    }
    // The fuzz targets (cargo-fuzz sets `--cfg fuzzing`) never load the BPF program: skipping
    // its build saves minutes of the fuzz build (`cargo xtask fuzz`, CI's smoke run).
    let fuzzing = std::env::var_os("CARGO_CFG_FUZZING").is_some();
    let missing = if fuzzing {
        Some(String::new())
    } else {
        missing_tool(&toolchain)
    };
    match missing {
        None => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proxy-ebpf");
            let root = root.to_string_lossy();
            let pkg = aya_build::Package {
                name: "proxy-ebpf",
                root_dir: &root,
                ..Default::default()
            };
            if let Err(e) = aya_build::build_ebpf([pkg], aya_build::Toolchain::Custom(&toolchain)) {
                panic!("building the BPF program (proxy-ebpf) failed: {e:#}");
            }
        }
        Some(_) if fuzzing => std::fs::write(&object, []).expect("writing the empty BPF object"),
        Some(why) => {
            println!(
                "cargo:warning=sockmap engine not built: {why}; run `cargo xtask setup` to \
                 install the BPF toolchain"
            );
            std::fs::write(&object, []).expect("writing the empty BPF object");
        }
    }
    println!("cargo:rustc-env=PROXY_EBPF_OBJECT={}", object.display());
}

/// What keeps the BPF program from being built here, if anything.
fn missing_tool(toolchain: &str) -> Option<String> {
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
            .unwrap_or(false)
    };
    if !on_path("bpf-linker") {
        return Some("bpf-linker is not installed".into());
    }
    let sysroot = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let Some(sysroot) = sysroot else {
        return Some(format!("toolchain {toolchain} is not installed"));
    };
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Some(format!(
            "toolchain {toolchain} lacks the rust-src component"
        ));
    }
    None
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}
