//! `cargo xtask …`: the project's own commands (the alias lives in `.cargo/config.toml`).
//!
//! * `setup`: install what the tests and the demo need (Debian packages), idempotently.
//! * `test`:  setup, build the proxy, `cargo test --workspace`, rustfmt and clippy checks.
//! * `run`:   setup, build the proxy (release) and run it; without `--config`, in front of two
//!   local nginx-rtmp nodes with `examples/demo.cfg`.
//! * `bench`: setup, build proxy and benches (release), run the side-by-side benchmarks.
//! * `soak`:  setup, build (release), run mixed load with injected faults for N minutes.
//! * `deb`:   setup, then the Debian package (cargo-deb) under `<target>/debian/`.
//!
//! * `fuzz`:  the parsers under libFuzzer (cargo-fuzz on the pinned nightly), docs/fuzzing.md.
//!
//! `vmtest` comes with the features it tests.

mod bench;
mod deb;
mod fuzz;
#[cfg(test)]
mod programs;
mod run;
mod setup;
mod soak;
mod test;
mod vmbench;
mod vmtest;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Project tasks: setup, test, run")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the Debian packages the tests and the demo need (only the missing ones).
    Setup,
    /// Setup, build the proxy, run all tests, then `cargo fmt --check` and clippy.
    Test {
        /// Passed to `cargo test` (e.g. `-p e2e --test rtmp -- --nocapture`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the proxy (release) and run it; without --config, in front of two local nginx-rtmp
    /// nodes (127.0.0.2, 127.0.0.3) with examples/demo.cfg. Ctrl-C stops everything.
    Run {
        /// A HAProxy-syntax config to run instead of the demo (no demo backends are started).
        #[arg(long, short = 'f')]
        config: Option<PathBuf>,
    },
    /// Boot Debian's 6.1 and 6.12 cloud kernels under qemu (TCG) and run the kernel-facing
    /// tests there (kTLS); everything downloaded is Debian packages, cached in target/vmtest.
    Vmtest {
        /// Test name filters and test-binary flags (default: the TLS room's tests).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        filters: Vec<String>,
    },
    /// The Debian 12 package (cargo-deb): binary, systemd unit, default config, man page;
    /// written to <target>/debian/ (README "Operations").
    Deb,
    /// Side-by-side benchmarks: direct, HAProxy, HAProxy splice-auto, this proxy (per forward
    /// engine); results under benches/results/. See README "Benchmarks".
    Bench(bench::BenchArgs),
    /// Mixed real load (RTMP, RTMPS, byte-checked TCP, HTTP, WebSocket, HLS) with faults
    /// injected on a schedule; ends with one verdict line, non-zero when anything was lost
    /// or leaked. Needs root.
    Soak(soak::SoakArgs),
    /// Fuzz the parsers (cargo-fuzz, libFuzzer) on the pinned nightly: every target, or one,
    /// for --seconds each; `--list` names the targets. See docs/fuzzing.md.
    Fuzz(fuzz::FuzzArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Test { args } => test::test(&args),
        Cmd::Run { config } => run::run(config.as_deref()),
        Cmd::Vmtest { filters } => vmtest::vmtest(&filters),
        Cmd::Bench(args) => bench::bench(&args),
        Cmd::Soak(args) => soak::soak(&args),
        Cmd::Deb => deb::deb(),
        Cmd::Fuzz(args) => fuzz::fuzz(&args),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

/// The workspace root (the folder above `xtask/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

/// The cargo that runs us (so `cargo +nightly xtask` keeps its toolchain), in the workspace root.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs `cmd` with inherited stdio; error unless it exits with 0.
pub fn run_checked(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}
