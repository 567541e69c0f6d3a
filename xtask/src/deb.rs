//! `cargo xtask deb`: the Debian 12 package, built by cargo-deb from `[package.metadata.deb]`
//! in proxy/Cargo.toml: the release binary as /usr/sbin/amsproxy, the systemd unit, the
//! default config, the man page. cargo-deb runs the release build itself, which builds the
//! BPF program as every build does, so setup (nightly, bpf-linker, cargo-deb) runs first.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Stdio;

/// `cargo xtask deb`: setup, then the package.
pub fn deb() -> Result<()> {
    crate::setup::setup()?;
    build(Binary::Release).map(|_| ())
}

/// Which build goes into the package.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// The release build, made by cargo-deb: the package to ship.
    Release,
    /// The debug build `cargo xtask test` has just made, packaged as it is: what the
    /// packaging test checks is the package's layout, metadata and that its binary runs, and
    /// a release build would add minutes to CI for nothing it checks.
    DebugAlreadyBuilt,
}

/// Builds the package (setup already done); returns its path (under `<target>/debian/`).
pub fn build(binary: Binary) -> Result<PathBuf> {
    println!("\n==> cargo deb -p proxy");
    let extra: &[&str] = match binary {
        Binary::Release => &[],
        Binary::DebugAlreadyBuilt => &["--no-build", "--profile", "dev"],
    };
    let out = crate::cargo()
        // Stripped: 9 MB instead of 63 MB (release keeps line tables for backtraces in
        // development builds; a package has no use for them).
        .args(["deb", "-p", "proxy", "--locked", "--strip"])
        .args(extra)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo deb")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    if !out.status.success() {
        bail!("cargo deb -p proxy failed ({})", out.status);
    }
    // cargo-deb prints the package's path as its last line.
    let path = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .context("cargo deb did not name the package it wrote")?;
    println!("package: {}", path.display());
    Ok(path)
}
