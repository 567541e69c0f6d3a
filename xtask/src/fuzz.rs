//! `cargo xtask fuzz [--list] [TARGET] [--seconds N]`: the parsers under libFuzzer, through
//! cargo-fuzz on the pinned nightly (setup installs both). The targets are the files of
//! `fuzz/fuzz_targets/`; each runs from its seeds (`fuzz/corpus/<target>/`, read only) into a
//! working corpus under the target dir, so a run never writes into the repository except a
//! crash's input (`fuzz/artifacts/<target>/`, ignored by git). One line per target says what
//! it did; a crash fails the command. docs/fuzzing.md records the long runs.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Print the target names, one a line, and exit.
    #[arg(long)]
    list: bool,
    /// One target (default: every target, one after the other).
    target: Option<String>,
    /// How long each target runs.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Build without optimisation (cargo-fuzz `--dev`): minutes quicker to build, slower to
    /// run; what CI's smoke run uses, where the build is most of the time.
    #[arg(long)]
    dev: bool,
}

/// What one run did, from libFuzzer's status lines and final stats.
#[derive(Default, Debug, PartialEq)]
pub struct Run {
    pub execs: u64,
    pub cov: u64,
    pub features: u64,
    pub corpus: u64,
    pub crash: Option<String>,
}

pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    let all = targets()?;
    if args.list {
        for t in &all {
            println!("{t}");
        }
        return Ok(());
    }
    let chosen = match &args.target {
        Some(t) if all.contains(t) => vec![t.clone()],
        Some(t) => bail!("no fuzz target {t}; `cargo xtask fuzz --list` names them"),
        None => all,
    };
    crate::setup::cargo_fuzz()?;
    let profile: &[&str] = if args.dev { &["--dev"] } else { &[] };
    crate::run_checked(
        cargo_fuzz(&["build"])
            .args(profile)
            .args(["--target-dir", &target_dir()]),
    )
    .context("building the fuzz targets")?;
    let mut failed = Vec::new();
    for t in &chosen {
        let run = run_one(t, args.seconds, profile)?;
        println!(
            "fuzz: {t}: {} execs in {} s, cov {}, features {}, corpus {}: {}",
            run.execs,
            args.seconds,
            run.cov,
            run.features,
            run.corpus,
            run.crash.as_deref().unwrap_or("no crash")
        );
        if run.crash.is_some() {
            failed.push(t.clone());
        }
    }
    if !failed.is_empty() {
        bail!(
            "crashes in {}: the inputs are under fuzz/artifacts/; replay one with `cargo \
             fuzz run TARGET FILE` (nightly), fix it and add it to fuzz/regressions/TARGET/",
            failed.join(", ")
        );
    }
    Ok(())
}

/// Seconds per target of the smoke run `cargo xtask test` makes (CI): enough to replay the
/// seeds and mutate a little, so a parser change that panics on them fails CI.
pub const SMOKE_SECONDS: u64 = 5;

/// Every target for [`SMOKE_SECONDS`].
pub fn smoke() -> Result<()> {
    fuzz(&FuzzArgs {
        list: false,
        target: None,
        seconds: SMOKE_SECONDS,
        dev: true,
    })
}

/// The target names: the files of `fuzz/fuzz_targets/`, sorted.
pub fn targets() -> Result<Vec<String>> {
    let dir = crate::root().join("fuzz/fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".rs").map(str::to_string)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// `cargo fuzz SUB` on the pinned nightly, in the repository root.
fn cargo_fuzz(sub: &[&str]) -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", &crate::setup::nightly(), "cargo", "fuzz"])
        .args(sub)
        .current_dir(crate::root())
        // Two cores shared with other work: the build takes at most two.
        .env("CARGO_BUILD_JOBS", "2");
    c
}

/// The fuzz build's own folder (sanitizer flags would otherwise rebuild the workspace's).
fn target_dir() -> String {
    crate::bench::target_dir()
        .join("fuzz")
        .to_string_lossy()
        .into_owned()
}

fn run_one(target: &str, seconds: u64, profile: &[&str]) -> Result<Run> {
    let work = PathBuf::from(target_dir()).join("corpus").join(target);
    std::fs::create_dir_all(&work)?;
    let seeds = crate::root().join("fuzz/corpus").join(target);
    println!("\n==> fuzz {target} ({seconds} s)");
    let mut child = cargo_fuzz(&["run", target, "--target-dir", &target_dir()])
        .args(profile)
        .arg(&work)
        .arg(&seeds)
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-rss_limit_mb=2048",
            "-timeout=10",
            "-print_final_stats=1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo fuzz")?;
    let mut run = Run::default();
    let stderr = child.stderr.take().context("cargo fuzz's stderr")?;
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if ["INITED", "pulse", "DONE"].iter().any(|w| line.contains(w)) {
            println!("  {line}");
        }
        if line.contains("ERROR: libFuzzer")
            || line.contains("ERROR: AddressSanitizer")
            || line.contains("panicked at")
        {
            eprintln!("  {line}");
        }
        read_line(&line, &mut run);
    }
    let status = child.wait()?;
    if !status.success() && run.crash.is_none() {
        run.crash = Some(format!("cargo fuzz failed ({status})"));
    }
    Ok(run)
}

/// Takes what a libFuzzer output line says into `run`.
pub fn read_line(line: &str, run: &mut Run) {
    // `cov: 1610`, `ft: 3391`, `corp: 220/18Kb`: the number after the key.
    let field = |key: &str| -> Option<u64> {
        let mut words = line.split_whitespace();
        words.find(|w| *w == key)?;
        words.next()?.split('/').next()?.parse().ok()
    };
    if let Some(rest) = line.strip_prefix("stat::number_of_executed_units:") {
        run.execs = rest.trim().parse().unwrap_or(run.execs);
    }
    if line.starts_with('#') {
        run.cov = field("cov:").unwrap_or(run.cov);
        run.features = field("ft:").unwrap_or(run.features);
        run.corpus = field("corp:").unwrap_or(run.corpus);
    }
    if let Some(path) = line.split("Test unit written to ").nth(1) {
        run.crash = Some(format!("crash, input in {}", path.trim()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_lines() {
        let mut run = Run::default();
        for line in [
            "#2\tINITED cov: 1423 ft: 2030 corp: 16/1024b exec/s: 0 rss: 40Mb",
            "#65536\tpulse  cov: 1610 ft: 3391 corp: 220/18Kb lim: 4 exec/s: 21845 rss: 60Mb",
            "stat::number_of_executed_units: 70001",
        ] {
            read_line(line, &mut run);
        }
        assert_eq!(
            run,
            Run {
                execs: 70001,
                cov: 1610,
                features: 3391,
                corpus: 220,
                crash: None
            }
        );
        read_line(
            "artifact_prefix='fuzz/artifacts/request/'; Test unit written to fuzz/artifacts/request/crash-1",
            &mut run,
        );
        assert_eq!(
            run.crash.as_deref(),
            Some("crash, input in fuzz/artifacts/request/crash-1")
        );
    }

    #[test]
    fn every_target_has_seeds() {
        let targets = targets().expect("fuzz targets");
        assert!(targets.len() >= 7, "{targets:?}");
        for t in targets {
            let seeds = crate::root().join("fuzz/corpus").join(&t);
            let n = std::fs::read_dir(&seeds).map(|d| d.count()).unwrap_or(0);
            assert!(n > 0, "fuzz target {t} has no seeds in {}", seeds.display());
        }
    }
}
