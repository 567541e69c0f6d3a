//! `cargo xtask test`: what CI runs (`.ci/run`): setup, build, tests, the kernel matrix, a
//! short run of every fuzz target, rustfmt and clippy. Every step runs even after a failure (except
//! the tests when the proxy does not build), then a summary; the exit code is 1 if any failed.
//! The kernel matrix runs after the test step, beside the fuzz smoke, rustfmt and clippy: none
//! of those depends on timing, while the end-to-end tests do (a run beside the VMs on 2 cores
//! failed a memory-bound check whose two `ss` readings came too far apart).

use anyhow::{bail, Result};
use std::process::Command;
use std::time::{Duration, Instant};

enum Outcome {
    Ok,
    Failed(String),
    Skipped(&'static str),
}

struct Step {
    name: String,
    outcome: Outcome,
    took: Duration,
}

fn step(steps: &mut Vec<Step>, name: &str, f: impl FnOnce() -> Result<()>) -> bool {
    println!("\n==> {name}");
    let start = Instant::now();
    let outcome = match f() {
        Ok(()) => Outcome::Ok,
        Err(e) => {
            eprintln!("xtask: {name}: {e:#}");
            Outcome::Failed(format!("{e:#}"))
        }
    };
    let ok = matches!(outcome, Outcome::Ok);
    steps.push(Step {
        name: name.to_string(),
        outcome,
        took: start.elapsed(),
    });
    ok
}

fn cargo_step(args: &[&str], extra: &[String]) -> Result<()> {
    let mut c: Command = crate::cargo();
    c.args(args).args(extra);
    crate::run_checked(&mut c)
}

pub fn test(extra: &[String]) -> Result<()> {
    let mut steps = Vec::new();

    if !step(&mut steps, "setup", crate::setup::setup) {
        summary(&steps);
        bail!("setup failed: the tests need the tools it installs");
    }

    let built = step(&mut steps, "cargo build -p proxy", || {
        cargo_step(&["build", "-p", "proxy"], &[])
    });

    remove_stale_test_dirs();

    // The Debian package, which tests/tests/packaging.rs unpacks and checks, made of the
    // debug build above (see `deb::Binary`); only on a full run, like vmtest.
    if extra.is_empty() && built {
        step(&mut steps, "cargo deb (debug build)", || {
            crate::deb::build(crate::deb::Binary::DebugAlreadyBuilt).map(|_| ())
        });
    }

    // `--workspace` with `-p` would test everything anyway; the caller asked for less.
    let names_packages = extra
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a.starts_with("-p") || a.starts_with("--package"));
    let mut test_args = vec!["test"];
    if !names_packages {
        test_args.push("--workspace");
    }
    let test_name = format!("cargo {}", test_args.join(" "));
    if built {
        step(&mut steps, &test_name, || cargo_step(&test_args, extra));
    } else {
        steps.push(Step {
            name: test_name,
            outcome: Outcome::Skipped("the proxy did not build"),
            took: Duration::ZERO,
        });
    }

    // The kernel matrix (kTLS needs CONFIG_TLS, which the host may lack): only on a full run.
    let vmtest = if extra.is_empty() {
        Some(Background::start("cargo xtask vmtest", "vmtest"))
    } else {
        None
    };
    if extra.is_empty() {
        // Every fuzz target for a few seconds (the build takes longer than the runs).
        let smoke = format!(
            "cargo xtask fuzz --dev --seconds {}",
            crate::fuzz::SMOKE_SECONDS
        );
        step(&mut steps, &smoke, crate::fuzz::smoke);
    }

    step(&mut steps, "cargo fmt --check", || {
        cargo_step(&["fmt", "--all", "--check"], &[])
    });
    step(&mut steps, "cargo clippy", || {
        cargo_step(
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        )
    });

    if let Some(vmtest) = vmtest {
        steps.push(vmtest.finish());
    }
    summary(&steps);
    if steps.iter().all(|s| matches!(s.outcome, Outcome::Ok)) {
        Ok(())
    } else {
        bail!("some steps failed")
    }
}

/// Failed tests keep their folders (`.test-out/NAME-PID-N`) for inspection; they would pile up.
/// Removes those whose test process is gone, and leaves a test run in progress alone.
/// An xtask subcommand run as a child process beside the other steps, its output kept in a
/// log file and printed when it is waited for, so that it does not interleave with theirs.
struct Background {
    name: &'static str,
    log: std::path::PathBuf,
    child: std::io::Result<std::process::Child>,
    start: Instant,
}

impl Background {
    fn start(name: &'static str, subcommand: &str) -> Background {
        let log = crate::root()
            .join("target")
            .join(format!("{subcommand}.log"));
        println!(
            "\n==> {name} (beside the remaining steps; output in {})",
            log.display()
        );
        let child = std::fs::File::create(&log).and_then(|out| {
            let err = out.try_clone()?;
            Command::new(std::env::current_exe()?)
                .arg(subcommand)
                .stdin(std::process::Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
        });
        Background {
            name,
            log,
            child,
            start: Instant::now(),
        }
    }

    fn finish(self) -> Step {
        println!("\n==> {} (its output)", self.name);
        let status = self.child.and_then(|mut c| c.wait());
        if let Ok(text) = std::fs::read_to_string(&self.log) {
            print!("{text}");
        }
        let outcome = match status {
            Ok(s) if s.success() => Outcome::Ok,
            Ok(s) => Outcome::Failed(format!("exited with {s}")),
            Err(e) => Outcome::Failed(format!("could not run: {e}")),
        };
        if let Outcome::Failed(e) = &outcome {
            eprintln!("xtask: {}: {e}", self.name);
        }
        Step {
            name: self.name.to_string(),
            outcome,
            took: self.start.elapsed(),
        }
    }
}

fn remove_stale_test_dirs() {
    let Ok(entries) = std::fs::read_dir(crate::root().join(".test-out")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn summary(steps: &[Step]) {
    println!("\n==> summary");
    for s in steps {
        let (mark, note) = match &s.outcome {
            Outcome::Ok => ("ok", String::new()),
            Outcome::Failed(e) => ("FAILED", format!("  {e}")),
            Outcome::Skipped(why) => ("SKIPPED", format!("  ({why})")),
        };
        println!(
            "  {:<8} {:<28} {:>7.1}s{note}",
            mark,
            s.name,
            s.took.as_secs_f64()
        );
    }
}
