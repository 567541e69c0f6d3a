//! `cargo xtask bench`: installs what the benchmarks need (HAProxy, nginx, wrk: the shared
//! `setup`), builds the proxy and the `benches` runner in release mode, and runs the runner.
//! All measuring lives in `benches/`; this only orchestrates.

use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Shorter windows, 3 repetitions: under 5 minutes on a 2-core machine.
    #[arg(long)]
    quick: bool,
    /// Scenario name or prefix (ingest, bulk, conn-rate, http, https, …); repeatable.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Only this forward engine for the proxy (default: every engine the build has).
    #[arg(long, value_name = "auto|sockmap|splice|copy")]
    engine: Option<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    crate::setup::setup()?;
    println!("\n==> cargo build --release -p proxy -p benches");
    crate::run_checked(crate::cargo().args([
        "build",
        "--release",
        "-p",
        "proxy",
        "-p",
        "benches",
    ]))?;
    let release = target_dir().join("release");
    let mut cmd = std::process::Command::new(release.join("benches"));
    cmd.current_dir(crate::root())
        .arg("--proxy-bin")
        .arg(release.join("proxy"))
        .arg("--out")
        .arg(crate::root().join("benches").join("results"));
    if args.quick {
        cmd.arg("--quick");
    }
    if args.list {
        cmd.arg("--list");
    }
    for s in &args.scenarios {
        cmd.arg("--scenario").arg(s);
    }
    if let Some(e) = &args.engine {
        cmd.arg("--engine").arg(e);
    }
    crate::run_checked(&mut cmd)
}

/// Where cargo puts build outputs (CARGO_TARGET_DIR, relative to the workspace root if so).
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(t) if t.is_absolute() => t,
        Some(t) => crate::root().join(t),
        None => crate::root().join("target"),
    }
}
