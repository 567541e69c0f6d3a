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
    /// Sample the hop with perf (cpu-clock) in each variant's first repetition: a flame
    /// graph per variant beside the report and system calls per unit in the records.
    #[arg(long)]
    profile: bool,
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
    let results = crate::root().join("benches").join("results");
    // The VM scenario runs first, on its own (it uses both CPUs for a few minutes); the runner
    // reports it from the console file. Its failure is reported there, not fatal here.
    let vm_console = results.join("vm-console.txt");
    let with_vm = wants_vm(args);
    if with_vm {
        std::fs::create_dir_all(&results)?;
        if let Err(e) = crate::vmbench::run(&vm_console) {
            println!("bench: {}: {e:#}", crate::vmbench::SCENARIO);
        }
    }
    let release = target_dir().join("release");
    let mut cmd = std::process::Command::new(release.join("benches"));
    cmd.current_dir(crate::root())
        .arg("--proxy-bin")
        .arg(release.join("proxy"))
        .arg("--out")
        .arg(&results);
    if with_vm {
        cmd.arg("--vm-console").arg(&vm_console);
    }
    if args.quick {
        cmd.arg("--quick");
    }
    if args.list {
        cmd.arg("--list");
    }
    if args.profile {
        cmd.arg("--profile");
    }
    for s in &args.scenarios {
        cmd.arg("--scenario").arg(s);
    }
    if let Some(e) = &args.engine {
        cmd.arg("--engine").arg(e);
    }
    crate::run_checked(&mut cmd)
}

/// Whether the run includes the VM scenario: the full run does, `--quick` does not, and a
/// `--scenario` that names it (or a prefix of it, as the runner matches) does.
fn wants_vm(args: &BenchArgs) -> bool {
    if args.list {
        return false;
    }
    if args.scenarios.is_empty() {
        return !args.quick;
    }
    args.scenarios
        .iter()
        .flat_map(|s| s.split(','))
        .any(|w| crate::vmbench::SCENARIO.starts_with(w.trim()))
}

/// Where cargo puts build outputs (CARGO_TARGET_DIR, relative to the workspace root if so).
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(t) if t.is_absolute() => t,
        Some(t) => crate::root().join(t),
        None => crate::root().join("target"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(quick: bool, scenarios: &[&str]) -> BenchArgs {
        BenchArgs {
            quick,
            scenarios: scenarios.iter().map(|s| s.to_string()).collect(),
            engine: None,
            profile: false,
            list: false,
        }
    }

    #[test]
    fn vm_scenario_runs_in_full_runs_and_when_named() {
        assert!(wants_vm(&args(false, &[])));
        assert!(!wants_vm(&args(true, &[])));
        assert!(wants_vm(&args(true, &["https-bulk-vm"])));
        assert!(wants_vm(&args(false, &["bulk-up,https"])));
        assert!(!wants_vm(&args(false, &["https-bulk-vmx", "ingest"])));
        let mut list = args(false, &[]);
        list.list = true;
        assert!(!wants_vm(&list));
    }
}
