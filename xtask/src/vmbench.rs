//! The VM half of `cargo xtask bench`'s `https-bulk-vm` scenario: HTTPS bulk throughput with
//! kTLS and with userspace rustls needs a kernel with kTLS, which this host lacks, so it runs
//! inside the same qemu VM as `cargo xtask vmtest` (its download, initramfs and boot code).
//!
//! The proxy and the `https-vm` bench program are built static, put in the 6.12 initramfs,
//! and the program's init runs both suites with both carriers (see `benches/src/vm.rs`). The
//! whole console is saved to a file; the bench runner reads its result lines from there.

use anyhow::Result;
use std::path::Path;
use std::time::Duration;

use crate::vmtest::{self, Vm};

/// The scenario's name, as the bench runner lists it.
pub const SCENARIO: &str = "https-bulk-vm";
/// The kernel booted (the one with the newer kTLS; 6.1 behaves the same for this path).
const SERIES: &str = "6.12";
/// Body per download and repetitions of each (suite, carrier) pair. TCG moves 5–40 MB/s
/// through TLS (ChaCha20 is the slow one): 12 downloads of 64 MiB take about 90 s, boot
/// included; the static build adds a few minutes the first time only.
const BODY_MIB: u32 = 64;
const REPS: u32 = 3;
/// Bound for the whole VM run.
const LIMIT: Duration = Duration::from_secs(420);

/// Builds, boots, and writes the VM's console to `console`. A failure before any result is
/// written there too, so the report can say why.
pub fn run(console: &Path) -> Result<()> {
    let result = boot_and_measure();
    let text = match &result {
        Ok(text) => text.clone(),
        Err(e) => format!("VM bench did not run: {e:#}\n"),
    };
    std::fs::write(console, text)?;
    result.map(drop)
}

fn boot_and_measure() -> Result<String> {
    let vm = Vm::prepare()?;
    let k = vm.kernel(SERIES)?;
    println!(
        "\n==> {SCENARIO}: static proxy and https-vm for Linux {}",
        k.release
    );
    let json = vmtest::static_build(&[
        "build",
        "--release",
        "-p",
        "proxy",
        "-p",
        "benches",
        "--bin",
        "proxy",
        "--bin",
        "https-vm",
    ])?;
    let proxy = vmtest::executable(&json, "proxy", false)?;
    let bench = vmtest::executable(&json, "https-vm", false)?;
    let command = format!("/https-vm --proxy /proxy --mib {BODY_MIB} --reps {REPS} --dir /tmp");
    let init = vmtest::init_script(&k.release, &command);
    let files: [(&str, &Path); 2] = [("https-vm", &bench), ("proxy", &proxy)];
    let initrd = vmtest::initramfs(&vm.cache, &vm.root, k, &init, &files)?;
    println!("==> {SCENARIO}: booting Linux {} (TCG)", k.release);
    vmtest::boot(&vm.root, k, &initrd, LIMIT)
}
