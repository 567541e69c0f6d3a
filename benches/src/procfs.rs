//! Readers of the few `/proc` files the accounting needs, split into pure parsers (unit-tested
//! on captured text) and thin file readers.
//!
//! Whole-machine CPU comes from `/proc/stat` because that is the only place where softirq work
//! and kernel threads (ksoftirqd, kworkers running the sockmap backlog) are counted: a hop that
//! moves its work out of its own process must not look cheaper for it.

use crate::error::BenchError;
use std::fs;
use std::path::Path;

/// One `cpu` line of `/proc/stat`, in clock ticks (USER_HZ).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    /// Ticks spent doing anything (guest time is already inside `user`).
    pub fn busy(&self) -> u64 {
        self.user + self.nice + self.system + self.irq + self.softirq + self.steal
    }

    pub fn total(&self) -> u64 {
        self.busy() + self.idle + self.iowait
    }

    /// `self - earlier`, field by field (saturating: counters never go back, but a CPU going
    /// offline can make a line restart).
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            nice: self.nice.saturating_sub(earlier.nice),
            system: self.system.saturating_sub(earlier.system),
            idle: self.idle.saturating_sub(earlier.idle),
            iowait: self.iowait.saturating_sub(earlier.iowait),
            irq: self.irq.saturating_sub(earlier.irq),
            softirq: self.softirq.saturating_sub(earlier.softirq),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }

    /// Busy share of the elapsed ticks, 0..=1 (per CPU line: of that CPU; for the aggregate
    /// line: of all CPUs together).
    pub fn busy_fraction(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            t => self.busy() as f64 / t as f64,
        }
    }
}

/// `/proc/stat`: the aggregate line and one line per CPU (index = CPU number).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    pub all: CpuTimes,
    pub per_cpu: Vec<CpuTimes>,
}

impl Stat {
    pub fn since(&self, earlier: &Stat) -> Stat {
        Stat {
            all: self.all.since(&earlier.all),
            per_cpu: self
                .per_cpu
                .iter()
                .zip(&earlier.per_cpu)
                .map(|(a, b)| a.since(b))
                .collect(),
        }
    }
}

/// Parses the text of `/proc/stat`.
pub fn parse_stat(text: &str) -> Result<Stat, BenchError> {
    let mut stat = Stat::default();
    let mut seen_all = false;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(name) = f.next() else { continue };
        if name == "cpu" {
            stat.all = parse_cpu_fields(f, line)?;
            seen_all = true;
        } else if let Some(n) = name.strip_prefix("cpu") {
            let idx: usize = n.parse().map_err(|_| bad("/proc/stat", line))?;
            if stat.per_cpu.len() <= idx {
                stat.per_cpu.resize(idx + 1, CpuTimes::default());
            }
            stat.per_cpu[idx] = parse_cpu_fields(f, line)?;
        }
    }
    if !seen_all {
        return Err(bad("/proc/stat", "no aggregate cpu line"));
    }
    Ok(stat)
}

fn parse_cpu_fields<'a>(
    f: impl Iterator<Item = &'a str>,
    line: &str,
) -> Result<CpuTimes, BenchError> {
    let v: Vec<u64> = f
        .take(8)
        .map(|x| x.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad("/proc/stat", line))?;
    // Kernels since 2.6.33 print at least 8 fields; older ones are not a target.
    if v.len() < 8 {
        return Err(bad("/proc/stat", line));
    }
    Ok(CpuTimes {
        user: v[0],
        nice: v[1],
        system: v[2],
        idle: v[3],
        iowait: v[4],
        irq: v[5],
        softirq: v[6],
        steal: v[7],
    })
}

pub fn read_stat() -> Result<Stat, BenchError> {
    parse_stat(&read("/proc/stat")?)
}

/// The fields of `/proc/PID/stat` the report uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskStat {
    pub ppid: i32,
    /// utime + stime in ticks; for a process this covers all its threads, live and exited.
    pub cpu_ticks: u64,
    /// utime + stime of children it has waited for (`cutime` + `cstime`): a master process's
    /// exited workers stay counted here.
    pub reaped_children_ticks: u64,
    /// Kernel threads carry PF_KTHREAD (0x00200000) in `flags`.
    pub kthread: bool,
    /// `Z`: exited, not yet waited for.
    pub zombie: bool,
}

/// Parses `/proc/PID/stat`. The command name is in parentheses and may itself contain spaces
/// and parentheses, so fields are counted from the last `)`.
pub fn parse_task_stat(text: &str) -> Result<TaskStat, BenchError> {
    let close = text.rfind(')').ok_or_else(|| bad("/proc/PID/stat", text))?;
    // After ") ": state(3) ppid(4) pgrp session tty_nr tpgid flags(9) minflt cminflt majflt
    // cmajflt utime(14) stime(15): index = field number - 3.
    let f: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let num = |i: usize| -> Result<u64, BenchError> {
        f.get(i)
            .and_then(|x| x.parse::<u64>().ok())
            .ok_or_else(|| bad("/proc/PID/stat", text))
    };
    let ppid = f
        .get(1)
        .and_then(|x| x.parse::<i32>().ok())
        .ok_or_else(|| bad("/proc/PID/stat", text))?;
    // cutime(16) and cstime(17) are signed in proc(5); negative values never occur here.
    let signed = |i: usize| {
        f.get(i)
            .and_then(|x| x.parse::<i64>().ok())
            .unwrap_or(0)
            .max(0)
    };
    Ok(TaskStat {
        ppid,
        cpu_ticks: num(11)? + num(12)?,
        reaped_children_ticks: (signed(13) + signed(14)) as u64,
        kthread: num(6)? & 0x0020_0000 != 0,
        zombie: f.first() == Some(&"Z"),
    })
}

pub fn read_task_stat(pid: u32) -> Result<TaskStat, BenchError> {
    parse_task_stat(&read(format!("/proc/{pid}/stat"))?)
}

/// `pid` and its live descendants (zombies left out), with their stat: a hop that runs as a
/// master and workers (HAProxy `-W`) is this whole tree.
pub fn process_tree(pid: u32) -> Vec<(u32, TaskStat)> {
    let all: Vec<(u32, TaskStat)> = fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|p| Some((p, read_task_stat(p).ok()?)))
                .collect()
        })
        .unwrap_or_default();
    tree_of(pid, &all)
}

/// The members of `root`'s tree in `all` (a snapshot of every process), `root` first.
pub fn tree_of(root: u32, all: &[(u32, TaskStat)]) -> Vec<(u32, TaskStat)> {
    let mut out: Vec<(u32, TaskStat)> = all.iter().filter(|(p, _)| *p == root).copied().collect();
    let mut i = 0;
    while i < out.len() {
        let parent = out[i].0 as i32;
        out.extend(all.iter().filter(|(_, t)| t.ppid == parent).copied());
        i += 1;
    }
    out.retain(|(_, t)| !t.zombie);
    out
}

/// CPU ticks of a process tree: every live member's own time plus what each has reaped, so a
/// worker that exited between two samples (a reload) is still counted, through its parent.
pub fn tree_cpu_ticks(pid: u32) -> Option<u64> {
    let tree = process_tree(pid);
    (!tree.is_empty()).then(|| {
        tree.iter()
            .map(|(_, t)| t.cpu_ticks + t.reaped_children_ticks)
            .sum()
    })
}

/// CPU ticks of all kernel threads alive now (kworkers, ksoftirqd, …). Threads that exit
/// between two samples are lost, which only ever under-counts.
pub fn kernel_thread_ticks() -> u64 {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| read_task_stat(pid).ok())
        .filter(|t| t.kthread)
        .map(|t| t.cpu_ticks)
        .sum()
}

/// A `Key: value kB` field of `/proc/PID/status` or `/proc/meminfo`, in KiB.
pub fn parse_kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Resident set of a process (all threads share it), KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    parse_kib_field(&read(format!("/proc/{pid}/status")).ok()?, "VmRSS")
}

/// Kernel memory that moves with socket traffic: slab (skbs, socket structs) in KiB.
pub fn slab_kib() -> Option<u64> {
    parse_kib_field(&read("/proc/meminfo").ok()?, "Slab")
}

/// Pages charged to TCP socket buffers machine-wide (`TCP: … mem N` of `/proc/net/sockstat`).
pub fn parse_sockstat_tcp_mem_pages(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let i = f.iter().position(|w| *w == "mem")?;
    f.get(i + 1)?.parse().ok()
}

pub fn tcp_mem_kib() -> Option<u64> {
    let pages = parse_sockstat_tcp_mem_pages(&read("/proc/net/sockstat").ok()?)?;
    Some(pages * page_size() / 1024)
}

/// Whether `/proc/net/udp` text lists a socket bound on `addr` (exactly, or on the wildcard
/// address and its port). The kernel prints the address as the 32-bit word it stores (network
/// order) in hex, as read in host order, and the port in hex.
pub fn parse_udp_bound(text: &str, addr: std::net::SocketAddrV4) -> bool {
    let ip = format!("{:08X}", u32::from_ne_bytes(addr.ip().octets()));
    let port = format!("{:04X}", addr.port());
    text.lines().skip(1).any(|l| {
        let local = l.split_whitespace().nth(1).unwrap_or("");
        local.split_once(':').is_some_and(|(i, p)| {
            p.eq_ignore_ascii_case(&port) && (i.eq_ignore_ascii_case(&ip) || i == "00000000")
        })
    })
}

/// Whether a UDP socket of this network namespace is bound on `addr`: a hop is up without
/// the probe taking the port, even for a moment (a bind to test it could make the hop's own
/// bind fail).
pub fn udp_bound(addr: std::net::SocketAddrV4) -> bool {
    read("/proc/net/udp").is_ok_and(|t| parse_udp_bound(&t, addr))
}

/// The three load averages.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut f = text.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([f.next()??, f.next()??, f.next()??])
}

pub fn loadavg() -> Option<[f64; 3]> {
    parse_loadavg(&read("/proc/loadavg").ok()?)
}

/// USER_HZ: the unit of every tick count above.
pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn page_size() -> u64 {
    // SAFETY: as above.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

fn read(path: impl AsRef<Path>) -> Result<String, BenchError> {
    let path = path.as_ref();
    fs::read_to_string(path).map_err(|source| BenchError::Io {
        what: format!("read {}", path.display()),
        source,
    })
}

fn bad(what: &str, text: &str) -> BenchError {
    BenchError::Parse {
        what: what.to_string(),
        text: text.chars().take(120).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_bound_reads_address_and_port() {
        // 127.0.77.1:4200 bound; a wildcard socket on 5353.
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tx_rx uid timeout inode ref pointer drops\n\
  1: 014D007F:1068 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0 0\n\
  2: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3 2 0 0\n";
        let a = |s: &str| s.parse().unwrap();
        if cfg!(target_endian = "little") {
            assert!(parse_udp_bound(text, a("127.0.77.1:4200")));
            assert!(
                !parse_udp_bound(text, a("127.0.77.2:4200")),
                "other address"
            );
        }
        assert!(!parse_udp_bound(text, a("127.0.77.1:4201")), "other port");
        assert!(parse_udp_bound(text, a("127.0.77.9:5353")), "wildcard");
        assert!(!parse_udp_bound("", a("127.0.77.1:4200")));
    }

    const STAT: &str = "cpu  4705 150 1120 1000000 300 0 17 5 0 0\n\
cpu0 2000 100 600 500000 100 0 10 2 0 0\n\
cpu1 2705 50 520 500000 200 0 7 3 0 0\n\
intr 12345 0 0\nctxt 999\nbtime 1700000000\n";

    #[test]
    fn stat_parses_aggregate_and_per_cpu() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(s.all.user, 4705);
        assert_eq!(s.all.softirq, 17);
        assert_eq!(s.all.busy(), 4705 + 150 + 1120 + 17 + 5);
        assert_eq!(s.all.total(), s.all.busy() + 1_000_000 + 300);
        assert_eq!(s.per_cpu.len(), 2);
        assert_eq!(s.per_cpu[1].iowait, 200);
    }

    #[test]
    fn stat_delta_and_busy_fraction() {
        let a = parse_stat(STAT).unwrap();
        let mut b = a.clone();
        b.all.user += 30;
        b.all.softirq += 10;
        b.all.idle += 160;
        let d = b.since(&a);
        assert_eq!(d.all.busy(), 40);
        assert!((d.all.busy_fraction() - 0.2).abs() < 1e-9);
        assert_eq!(d.per_cpu[0], CpuTimes::default());
        assert_eq!(CpuTimes::default().busy_fraction(), 0.0);
    }

    #[test]
    fn stat_rejects_garbage() {
        assert!(parse_stat("cpu0 1 2 3\n").is_err());
        assert!(parse_stat("cpu 1 2 x 4 5 6 7 8\n").is_err());
        assert!(parse_stat("cpu 1 2 3 4\n").is_err());
    }

    #[test]
    fn task_stat_with_odd_command_name() {
        let text = "1234 (my (weird) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 3 0 100 1000 50";
        let t = parse_task_stat(text).unwrap();
        assert_eq!(t.ppid, 1);
        assert_eq!(t.cpu_ticks, 325);
        assert!(!t.kthread);
        let k = "77 (kworker/1:2-events) I 2 0 0 0 -1 69238880 0 0 0 0 9 41 0 0 20 0 1 0";
        let t = parse_task_stat(k).unwrap();
        assert!(t.kthread);
        assert_eq!(t.cpu_ticks, 50);
        assert!(parse_task_stat("no parens here").is_err());
        let master = "10 (haproxy) S 1 10 10 0 -1 4194560 0 0 0 0 5 5 300 40 20 0 1 0";
        let t = parse_task_stat(master).unwrap();
        assert_eq!(t.reaped_children_ticks, 340);
        assert!(!t.zombie);
        assert!(
            parse_task_stat("11 (haproxy) Z 10 10 10 0 -1 0 0 0 0 0 1 1 0 0")
                .unwrap()
                .zombie
        );
    }

    #[test]
    fn tree_follows_parents_and_skips_zombies() {
        let t = |ppid: i32, zombie: bool| TaskStat {
            ppid,
            zombie,
            ..TaskStat::default()
        };
        let all = [
            (1, t(0, false)),
            (10, t(1, false)),
            (11, t(10, false)),
            (12, t(10, true)),
            (13, t(11, false)),
            (20, t(1, false)),
        ];
        let pids: Vec<u32> = tree_of(10, &all).iter().map(|(p, _)| *p).collect();
        assert_eq!(pids, vec![10, 11, 13]);
        assert!(tree_of(99, &all).is_empty());
    }

    #[test]
    fn kib_fields() {
        let status = "Name:\tproxy\nVmHWM:\t  9000 kB\nVmRSS:\t  8123 kB\n";
        assert_eq!(parse_kib_field(status, "VmRSS"), Some(8123));
        assert_eq!(parse_kib_field(status, "VmSwap"), None);
        let meminfo = "MemTotal: 24000000 kB\nSlab:  123456 kB\nSReclaimable: 1 kB\n";
        assert_eq!(parse_kib_field(meminfo, "Slab"), Some(123456));
    }

    #[test]
    fn sockstat_and_loadavg() {
        let s =
            "sockets: used 300\nTCP: inuse 20 orphan 0 tw 5 alloc 25 mem 417\nUDP: inuse 1 mem 2\n";
        assert_eq!(parse_sockstat_tcp_mem_pages(s), Some(417));
        assert_eq!(parse_sockstat_tcp_mem_pages("UDP: inuse 1 mem 2\n"), None);
        assert_eq!(
            parse_loadavg("1.28 1.19 0.89 2/144 18198\n"),
            Some([1.28, 1.19, 0.89])
        );
        assert_eq!(parse_loadavg("x"), None);
    }
}
