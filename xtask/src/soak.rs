//! `cargo xtask soak --minutes N`: setup, build the proxy (release) and the soak driver, then
//! run the soak (`tests/src/soak`): mixed real load with faults injected on a schedule, ending
//! with `soak: N flows, L bytes lost, rss growth P%, fd growth F, map entries leaked M` and a
//! non-zero exit when anything was lost or leaked. Needs root (it makes its own network
//! namespace).

use anyhow::Result;

#[derive(clap::Args)]
pub struct SoakArgs {
    /// How long the load runs (warm-up included: the first fifth, at least 20 s).
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Seconds between two faults.
    #[arg(long, default_value_t = 20)]
    fault_every: u64,
    /// Only these faults, in turn (comma-separated: KillBackends, LossyNetwork,
    /// ClientResets, NewCertificate, SlowNetwork, Reload); all by default.
    #[arg(long)]
    faults: Option<String>,
}

pub fn soak(args: &SoakArgs) -> Result<()> {
    crate::setup::setup()?;
    crate::run_checked(crate::cargo().args(["build", "--release", "-p", "proxy"]))?;
    crate::run_checked(crate::cargo().args(["build", "--release", "-p", "e2e", "--bin", "soak"]))?;
    let release = crate::root().join("target/release");
    crate::run_checked(
        std::process::Command::new(release.join("soak"))
            .env("PROXY_BIN", release.join("proxy"))
            .args(["--minutes", &args.minutes.to_string()])
            .args(["--fault-every", &args.fault_every.to_string()])
            .args(args.faults.iter().flat_map(|f| ["--faults", f.as_str()])),
    )
}
