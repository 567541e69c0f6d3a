//! Command line, in HAProxy's conventions: `proxy -f haproxy.cfg`, `-c` to check, `-d` to debug.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use proxy::runtime::{self, DriverChoice, RunOptions};

#[derive(Parser, Debug)]
#[command(
    name = "proxy",
    version,
    about = "HAProxy-compatible load balancer for Ant Media Server clusters"
)]
struct Cli {
    /// Configuration file or directory (its *.cfg files in order); repeatable.
    #[arg(short = 'f', value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// Check the configuration and exit (0: valid, 1: errors as file:line: reason).
    #[arg(short = 'c')]
    check: bool,
    /// Debug logging (the proxy always stays in the foreground).
    #[arg(short = 'd')]
    debug: bool,
    /// Event driver: auto (io_uring if the kernel has it), io-uring, or poll (epoll).
    #[arg(long, default_value = "auto", value_name = "DRIVER")]
    driver: DriverChoice,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    proxy::log::init(cli.debug);
    let cfg = match proxy::config::load(&cli.files) {
        Ok(cfg) => cfg,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    if cli.check {
        return check(&cfg);
    }
    match runtime::run(&cfg, &RunOptions { driver: cli.driver }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `-c`: beyond the syntax, everything the start would refuse (rules and ACLs, engines,
/// certificates), without opening a socket.
fn check(cfg: &proxy::config::Config) -> ExitCode {
    let http_errors = proxy::http::check_config(cfg, cfg.global.bufsize());
    for e in &http_errors {
        eprintln!("{e}");
    }
    if !http_errors.is_empty() {
        return ExitCode::FAILURE;
    }
    if let Err(e) = runtime::check(cfg) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    println!("Configuration file is valid");
    ExitCode::SUCCESS
}
