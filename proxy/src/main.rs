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
    /// Binary upgrade: take the listening sockets (and, with -sf, the established mode-tcp
    /// flows) from the process serving this hand-over socket.
    #[arg(short = 'x', value_name = "SOCKET")]
    take_over: Option<PathBuf>,
    /// Tell these processes to finish (soft stop) once this one serves; with -x their flows
    /// move here first. HAProxy's `-sf PID…`.
    #[arg(long = "sf", value_name = "PID", num_args = 1..)]
    finish: Vec<i32>,
    /// Event driver: auto (io_uring if the kernel has it), io-uring, or poll (epoll).
    #[arg(long, default_value = "auto", value_name = "DRIVER")]
    driver: DriverChoice,
}

/// HAProxy spells it `-sf PID…`, one dash and two letters, which a short-option parser reads
/// as `-s -f`: the word is taken as `--sf` before parsing.
fn args() -> impl Iterator<Item = std::ffi::OsString> {
    std::env::args_os().map(|a| if a == "-sf" { "--sf".into() } else { a })
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(args());
    proxy::log::init(cli.debug);
    if cli.check {
        // Everything the start would refuse (syntax, references, rules and ACLs, engines,
        // certificates), every problem in one run, without opening a socket.
        return match runtime::check(&cli.files) {
            Ok(warnings) => {
                for w in &warnings {
                    eprintln!("[WARNING] {w}");
                }
                println!("Configuration file is valid");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let opts = RunOptions {
        driver: cli.driver,
        take_over: cli.take_over,
        finish: cli.finish,
    };
    let ran = runtime::run(&cli.files, &opts);
    let code = match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(runtime::RuntimeError::Config(problems)) => {
            for p in &problems {
                eprintln!("{p}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    };
    // Process messages are written by a thread of their own: out before the process ends.
    proxy::log::flush(std::time::Duration::from_millis(500));
    code
}
