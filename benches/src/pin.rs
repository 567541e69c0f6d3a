//! The pinning plan: the hop under test (HAProxy or this proxy, one worker thread) gets a CPU
//! of its own; the load generators, the backends and the bench's own threads share another.
//! On the 2-core machine this is "hop on CPU 1, everything else on CPU 0", so the hop never
//! competes with its own load and its CPU share is directly readable from the per-CPU line.

use std::process::Command;

/// The nice value the bench asks for (root only).
const NICE: i32 = -10;

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Plan {
    pub cpus: usize,
    /// Where load generators, backends and this process run.
    pub load_cpu: Option<usize>,
    /// Where the hop runs.
    pub hop_cpu: Option<usize>,
    /// Nice value of every bench process (load, backends, hops), when it could be raised.
    pub nice: Option<i32>,
}

impl Plan {
    pub fn detect() -> Plan {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus >= 2 {
            Plan {
                cpus,
                load_cpu: Some(0),
                hop_cpu: Some(1),
                nice: None,
            }
        } else {
            Plan {
                cpus,
                load_cpu: None,
                hop_cpu: None,
                nice: None,
            }
        }
    }

    pub fn describe(&self) -> String {
        let nice = match self.nice {
            Some(n) => format!(
                "; all bench processes at nice {n}, so that other work on the machine \
                 (compiles at nice 0..10) takes less of the pinned CPUs"
            ),
            None => "; nice unchanged (not root): other work on the machine competes freely".into(),
        };
        let pins = match (self.load_cpu, self.hop_cpu) {
            (Some(l), Some(h)) => format!(
                "{} CPUs: hop (HAProxy / proxy, 1 thread each) pinned to CPU {h}; load \
                 generators, backends (nginx, bench threads) and wrk pinned to CPU {l}; \
                 direct runs leave CPU {h} idle",
                self.cpus
            ),
            _ => format!(
                "{} CPU: no pinning possible; figures are indicative only",
                self.cpus
            ),
        };
        pins + &nice
    }

    /// Lowers the nice value of this thread (and of every thread and child started after it)
    /// to `NICE`: the scheduler then gives the measured processes most of their CPU even while
    /// other work runs. Call before spawning anything.
    pub fn raise_priority(&mut self) {
        // SAFETY: setpriority on the calling thread (who = 0) has no memory effects.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
        self.nice = (rc == 0).then_some(NICE);
    }

    /// Pins the calling thread to the load CPU (threads spawned afterwards inherit it).
    pub fn pin_load_thread(&self) {
        if let Some(cpu) = self.load_cpu {
            pin_current_thread(cpu);
        }
    }

    /// A command for a hop process, wrapped in `taskset` when pinning applies.
    pub fn hop_command(&self, program: &str) -> Command {
        wrap(program, self.hop_cpu)
    }

    /// A command for a load or backend process (nginx, wrk).
    pub fn load_command(&self, program: &str) -> Command {
        wrap(program, self.load_cpu)
    }
}

fn wrap(program: &str, cpu: Option<usize>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Best effort: a failure (e.g. a cgroup cpuset without that CPU) leaves the thread unpinned,
/// which the stated plan then over-claims; it is reported once.
pub fn pin_current_thread(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity(0) affects
    // only the calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            eprintln!(
                "bench: warning: cannot pin to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            )
        });
    }
}
