//! `soak --minutes N [--fault-every SECS] [--faults NAME,…]`: the soak run by `cargo xtask soak` (see
//! `e2e::soak`). Prints its verdict line and exits non-zero when anything was lost or leaked.

use std::time::Duration;

fn main() {
    // First, before any thread exists: every thread and child made later inherits it.
    if let Err(e) = e2e::soak::enter_own_netns() {
        eprintln!("soak: {e}");
        std::process::exit(2);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str, default: u64| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{flag} wants a whole number, not {v}"))
            })
            .unwrap_or(default)
    };
    let opts = e2e::soak::Options {
        duration: Duration::from_secs(value("--minutes", 30) * 60),
        fault_every: Duration::from_secs(value("--fault-every", 20)),
        faults: args
            .iter()
            .position(|a| a == "--faults")
            .and_then(|i| args.get(i + 1))
            .map(|v| v.split(',').map(String::from).collect())
            .unwrap_or_default(),
    };
    let verdict = match e2e::soak::run(&opts) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    };
    println!("{}", verdict.line());
    let problems = verdict.problems();
    for p in &problems {
        eprintln!("soak: FAILED: {p}");
    }
    std::process::exit(i32::from(!problems.is_empty()));
}
