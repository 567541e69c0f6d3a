//! `--profile`: where the hop's time goes, saved beside the report. During the measured
//! window of each variant's first repetition, `perf record -e cpu-clock -g` samples the hop
//! process (the default cycles event does not work on virtual machines like this one) and
//! `perf stat -e raw_syscalls:sys_enter` counts its system calls. The samples become a flame
//! graph, `flame-SCENARIO-VARIANT.svg` in the run's work folder (the `inferno` crate, from
//! `perf script`), and the count becomes system calls per unit in the run's record, so that
//! this proxy's figure reads beside HAProxy's from the same run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static ENABLED: AtomicBool = AtomicBool::new(false);
/// The run being measured: where its files go and what they are called.
static RUN: Mutex<Option<Run>> = Mutex::new(None);
/// The system calls counted in the last profiled window.
static SYSCALLS: Mutex<Option<u64>> = Mutex::new(None);

struct Run {
    dir: PathBuf,
    name: String,
    first: bool,
}

/// Profiles from now on (`perf` is installed by `cargo xtask setup`).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The run that the next measured window belongs to (`rep` counts from 0).
pub fn set_run(dir: &Path, scenario: &str, variant: &str, rep: usize) {
    let name = format!("{scenario}-{variant}").replace([' ', '/'], "_");
    *lock(&RUN) = Some(Run {
        dir: dir.to_path_buf(),
        name,
        first: rep == 0,
    });
    *lock(&SYSCALLS) = None;
}

/// The system calls of the run's profiled window, if it had one.
pub fn take_syscalls() -> Option<u64> {
    lock(&SYSCALLS).take()
}

/// Both recorders attached to the hop for one window.
pub struct Window {
    record: Child,
    stat: Child,
    data: PathBuf,
    counts: PathBuf,
    svg: PathBuf,
    title: String,
}

/// Starts recording `hop` if profiling is on and this is a variant's first repetition.
pub fn start(hop: Option<u32>) -> Option<Window> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    let pid = hop?.to_string();
    let (dir, name) = match lock(&RUN).as_ref() {
        Some(r) if r.first => (r.dir.clone(), r.name.clone()),
        _ => return None,
    };
    let data = dir.join(format!("perf-{name}.data"));
    let counts = dir.join(format!("syscalls-{name}.csv"));
    let quiet = |c: &mut Command| {
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    let record = quiet(
        Command::new("perf")
            .args(["record", "-q", "-e", "cpu-clock", "-g", "-p", &pid, "-o"])
            .arg(&data),
    );
    let stat = quiet(
        Command::new("perf")
            .args([
                "stat",
                "-x,",
                "-e",
                "raw_syscalls:sys_enter",
                "-p",
                &pid,
                "-o",
            ])
            .arg(&counts),
    );
    match (record, stat) {
        (Ok(record), Ok(stat)) => Some(Window {
            record,
            stat,
            data,
            counts,
            svg: dir.join(format!("flame-{name}.svg")),
            title: name,
        }),
        (r, s) => {
            for mut c in [r, s].into_iter().flatten() {
                let _ = c.kill();
                let _ = c.wait();
            }
            eprintln!("bench: --profile: perf did not start (is linux-perf installed?)");
            None
        }
    }
}

impl Window {
    /// Stops both recorders (SIGINT: perf writes what it has), keeps the system-call count
    /// for the run's record and draws the flame graph.
    pub fn finish(mut self) {
        for c in [&mut self.record, &mut self.stat] {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let _ = c.wait();
        }
        *lock(&SYSCALLS) = std::fs::read_to_string(&self.counts)
            .ok()
            .and_then(|t| syscall_count(&t));
        if let Err(e) = flame(&self.data, &self.svg, &self.title) {
            eprintln!("bench: --profile: no flame graph for {}: {e}", self.title);
        }
        let _ = std::fs::remove_file(&self.data);
    }
}

/// The count from `perf stat -x,` output: the first field of the event's line.
fn syscall_count(csv: &str) -> Option<u64> {
    csv.lines()
        .find(|l| l.contains("raw_syscalls:sys_enter"))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.trim().parse().ok())
}

/// `perf script` of the samples, folded by stack, drawn as an SVG flame graph.
fn flame(data: &Path, svg: &Path, title: &str) -> std::io::Result<()> {
    use inferno::collapse::Collapse;
    let script = Command::new("perf")
        .args(["script", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()?;
    let mut folded = Vec::new();
    inferno::collapse::perf::Folder::from(inferno::collapse::perf::Options::default())
        .collapse(&script.stdout[..], &mut folded)?;
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_string();
    let out = std::io::BufWriter::new(std::fs::File::create(svg)?);
    inferno::flamegraph::from_reader(&mut opts, &folded[..], out)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_count_from_perf_stat_csv() {
        let csv = "# started on Mon Dec  7\n\n123456,,raw_syscalls:sys_enter,1002003,100.00,,\n";
        assert_eq!(syscall_count(csv), Some(123456));
        assert_eq!(
            syscall_count("<not counted>,,raw_syscalls:sys_enter,0,0.00,,\n"),
            None
        );
    }
}
