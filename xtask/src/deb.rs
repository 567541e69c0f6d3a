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
    build().map(|_| ())
}

/// Builds the package (setup already done); returns its path (under `<target>/debian/`).
pub fn build() -> Result<PathBuf> {
    println!("\n==> cargo deb -p proxy");
    let out = crate::cargo()
        // Stripped: 9 MB instead of 63 MB (release keeps line tables for backtraces in
        // development builds; a package has no use for them).
        .args(["deb", "-p", "proxy", "--locked", "--strip"])
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
