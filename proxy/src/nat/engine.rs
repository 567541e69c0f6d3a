//! The nat thread: writes the table when the frontends' slot tables change, and reads the
//! conntrack events of their flows. One thread for everything kernel-side, so writes to
//! the table never race each other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::conntrack::{self, Dumper, Events};
use super::event::{Kind, Message};
use super::family::Family;
use super::flows::Tracker;
use super::ruleset::{self, FrontendRules, MARK_BASE, MARK_MASK};
use super::{local, nft, slots, NatError, NatFrontend};

/// How often the slot tables are recomputed from the servers' state when no event came:
/// a health check's verdict or a runtime API change reaches the kernel within this.
const TICK: Duration = Duration::from_millis(100);

/// How often our conntrack entries are dumped when no closed flow waits for its DESTROY
/// (see `conntrack::Dumper`).
const DUMP_EVERY: Duration = Duration::from_secs(10);

/// How often the table's owner is read back: a table deleted by hand is written again, one
/// taken over by a newer process is left to it.
const OWNER_EVERY: Duration = Duration::from_secs(5);

/// The shortest time between two writes of the table.
const WRITE_GAP: Duration = Duration::from_millis(50);

/// Failed writes are said at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

pub struct NatEngine {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    frontends: Mutex<Vec<Arc<NatFrontend>>>,
    stop: AtomicBool,
}

impl NatEngine {
    /// Probes the kernel (nft, nat table, conntrack events), writes the table for
    /// `frontends` and starts following them. Any failure refuses the start, with why.
    pub fn start(frontends: Vec<Arc<NatFrontend>>) -> Result<NatEngine, NatError> {
        probe(&frontends)?;
        conntrack::enable_accounting()?;
        let events = Events::open()?;
        let dumper = Dumper::open()?;
        let mut state = State::new(std::process::id());
        state.v6_table = nft::has_table(Family::V6);
        state.write(&frontends, true)?;
        let shared = Arc::new(Shared {
            frontends: Mutex::new(frontends),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("nat".to_string())
                .spawn(move || run(&shared, state, events, dumper))
                .map_err(|e| NatError::Probe(format!("cannot start its thread: {e}")))?
        };
        Ok(NatEngine {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// A reload's frontends: the table follows at the next tick. Established flows keep their
    /// conntrack entries (and server), whatever the new table says.
    pub fn update(&self, frontends: Vec<Arc<NatFrontend>>) {
        *lock(&self.shared.frontends) = frontends;
    }

    /// The stop: the thread ends, and the table is deleted unless another process (a binary
    /// upgrade) owns it now. Established flows keep their conntrack entries until they end;
    /// new connections are no longer translated.
    pub fn stop(&self) {
        if self.shared.stop.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        let me = std::process::id();
        match nft::owner() {
            Some(owner) if owner != me => {
                log::info!(
                    "nat: table {} now belongs to pid {owner}; left in place",
                    ruleset::TABLE
                )
            }
            _ => match nft::apply(&ruleset::delete(nft::has_table(Family::V6))) {
                Ok(()) => log::info!("nat: table {} deleted", ruleset::TABLE),
                Err(e) => log::error!("nat: cannot delete table {}: {e}", ruleset::TABLE),
            },
        }
    }
}

/// A start that fails after the engine started (or any early exit) still takes the table out.
impl Drop for NatEngine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether this kernel and this process can run nat: the nft program, the right to change
/// the ruleset (CAP_NET_ADMIN), a nat chain (nf_nat, loaded on demand), and forwarding, for
/// IPv4 and, when a frontend is IPv6, for IPv6. A reload that brings the first IPv6 frontend
/// is not probed again: a failing write is warned about.
fn probe(frontends: &[Arc<NatFrontend>]) -> Result<(), NatError> {
    let mut families = vec![Family::V4];
    if frontends.iter().any(|fe| fe.family() == Family::V6) {
        families.push(Family::V6);
    }
    for family in families {
        probe_family(family)?;
    }
    Ok(())
}

fn probe_family(family: Family) -> Result<(), NatError> {
    let t = family.table();
    let probe_table = format!(
        "table {t} amsproxy_nat_probe {{\n  chain pre {{ type nat hook prerouting \
         priority dstnat; policy accept; }}\n}}\ndelete table {t} amsproxy_nat_probe\n"
    );
    nft::apply(&probe_table).map_err(|e| {
        NatError::Probe(format!(
            "cannot write an nftables nat table of family {t} (the nft program, \
             CAP_NET_ADMIN, nf_nat): {e}"
        ))
    })?;
    let sysctl = family.forwarding_sysctl();
    let path = format!("/proc/sys/{}", sysctl.replace('.', "/"));
    let forward = std::fs::read_to_string(path).unwrap_or_default();
    if forward.trim() != "1" {
        return Err(NatError::Probe(format!(
            "{sysctl} is not 1: the kernel would not forward translated connections \
             (sysctl -w {sysctl}=1)"
        )));
    }
    Ok(())
}

fn run(shared: &Shared, mut state: State, mut events: Events, mut dumper: Dumper) {
    // The first pass dumps: flows running before this process took the table over are
    // followed from the start.
    let mut dumped: Option<Instant> = None;
    let mut owned = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        let frontends = lock(&shared.frontends).clone();
        for m in events.receive(TICK) {
            state.event(m, &frontends);
        }
        let reap = state.tracker.reap_due();
        if reap || dumped.is_none_or(|t| t.elapsed() >= DUMP_EVERY) {
            dumped = Some(Instant::now());
            for m in dumper.dump(MARK_BASE, MARK_MASK) {
                state.dumped(m, &frontends);
            }
            if reap {
                state.tracker.reaped();
            }
        }
        if owned.elapsed() >= OWNER_EVERY {
            owned = Instant::now();
            state.check_owner();
        }
        if let Err(e) = state.write(&frontends, false) {
            state.warn(&e);
        }
    }
}

/// The thread's own state.
struct State {
    pid: u32,
    /// Each frontend's mark, by name, kept over reloads so its flows stay its own.
    marks: HashMap<String, u32>,
    last: String,
    /// The slot maps the last write made, by table.
    maps: Vec<(Family, String)>,
    /// The IPv6 table exists (written by us or a process before us).
    v6_table: bool,
    tracker: Tracker,
    /// Another process took the table over (a binary upgrade): this one no longer writes it.
    handed_over: bool,
    warned: Option<Instant>,
    written: Option<Instant>,
}

impl State {
    fn new(pid: u32) -> State {
        State {
            pid,
            marks: HashMap::new(),
            last: String::new(),
            maps: Vec::new(),
            v6_table: false,
            tracker: Tracker::default(),
            handed_over: false,
            warned: None,
            written: None,
        }
    }

    /// Writes the table when what it should say changed. `first`: the start, which takes the
    /// table over from whoever wrote it before.
    fn write(&mut self, frontends: &[Arc<NatFrontend>], first: bool) -> Result<(), NatError> {
        if self.handed_over {
            return Ok(());
        }
        let rules = self.rules(frontends);
        let names: Vec<(Family, String)> = rules.iter().map(|r| (r.family, r.map_name())).collect();
        let stale: Vec<(Family, String)> = self
            .maps
            .iter()
            .filter(|m| !names.contains(m))
            .cloned()
            .collect();
        let script = ruleset::render(self.pid, &rules, &stale, self.v6_table);
        if script == self.last {
            return Ok(());
        }
        // leastconn's table follows every flow count: under a burst of new connections the
        // writes are spaced (one nft run of a 256-slot table took ~22 ms, ~6 ms of CPU, here).
        if !first && self.written.is_some_and(|t| t.elapsed() < WRITE_GAP) {
            return Ok(());
        }
        if !first {
            if let Some(owner) = nft::owner().filter(|o| *o != self.pid) {
                log::info!(
                    "nat: pid {owner} took table {} over; no longer writing it",
                    ruleset::TABLE
                );
                self.handed_over = true;
                return Ok(());
            }
        }
        nft::apply(&script)?;
        self.written = Some(Instant::now());
        log::debug!("nat: table written:\n{script}");
        self.last = script;
        self.v6_table = names.iter().any(|(f, _)| *f == Family::V6);
        self.maps = names;
        Ok(())
    }

    fn check_owner(&mut self) {
        if self.handed_over {
            return;
        }
        match nft::owner() {
            Some(owner) if owner == self.pid => {}
            Some(owner) => {
                log::info!(
                    "nat: pid {owner} took table {} over; no longer writing it",
                    ruleset::TABLE
                );
                self.handed_over = true;
            }
            None => {
                log::warn!("nat: table {} is gone; writing it again", ruleset::TABLE);
                self.last.clear();
                self.maps.clear();
            }
        }
    }

    fn rules(&mut self, frontends: &[Arc<NatFrontend>]) -> Vec<FrontendRules> {
        frontends
            .iter()
            .map(|fe| FrontendRules {
                mark: self.mark(&fe.name),
                family: fe.family(),
                binds: fe.binds.clone(),
                table: slots::table(&fe.set, fe.family()),
                idle_secs: fe.idle.map(secs),
                fin_secs: fe.fin.map(secs),
                untouched: local::untouched(&fe.set),
            })
            .collect()
    }

    /// A stable mark per frontend name: a hash of the name (so a new process after a binary
    /// upgrade finds the same marks on the flows it inherits), the next free one on a clash.
    fn mark(&mut self, name: &str) -> u32 {
        if let Some(m) = self.marks.get(name) {
            return *m;
        }
        let mut low = fnv(name) & 0xffff;
        while low == 0 || self.marks.values().any(|m| *m == MARK_BASE | low) {
            low = (low + 1) & 0xffff;
        }
        self.marks.insert(name.to_string(), MARK_BASE | low);
        MARK_BASE | low
    }

    /// A dumped entry: its bytes so far; one this process has not followed yet (made before a
    /// binary upgrade handed the table over, or whose NEW event was lost) is followed from now.
    fn dumped(&mut self, m: Message, frontends: &[Arc<NatFrontend>]) {
        let Message::Event(ev) = m else { return };
        let Some(fe) = self.frontend_of(ev.mark, frontends) else {
            return;
        };
        self.tracker.opened(&ev, &fe);
        self.tracker.progress(&ev);
        self.tracker.seen(&ev);
    }

    fn frontend_of(&self, mark: u32, frontends: &[Arc<NatFrontend>]) -> Option<Arc<NatFrontend>> {
        if mark & MARK_MASK != MARK_BASE {
            return None;
        }
        frontends
            .iter()
            .find(|fe| self.marks.get(&fe.name) == Some(&mark))
            .cloned()
    }

    fn event(&mut self, m: Message, frontends: &[Arc<NatFrontend>]) {
        let ev = match m {
            Message::Event(ev) => ev,
            Message::Overrun => {
                self.tracker.overruns += 1;
                log::warn!("nat: conntrack events lost (receive buffer full): counts may drift");
                return;
            }
            Message::Other => return,
        };
        if ev.mark & MARK_MASK != MARK_BASE {
            return;
        }
        let fe = self.frontend_of(ev.mark, frontends);
        match (ev.kind, fe) {
            // A new entry, or a state change of one (an update).
            (Kind::New, fe) => {
                if let Some(fe) = fe {
                    self.tracker.opened(&ev, &fe);
                }
                self.tracker.seen(&ev);
            }
            (Kind::Destroy, fe) => self.tracker.closed(&ev, fe.as_ref()),
        }
    }

    fn warn(&mut self, e: &NatError) {
        if self.warned.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        self.warned = Some(Instant::now());
        log::warn!("nat: cannot write table {}: {e}", ruleset::TABLE);
    }
}

/// Whole seconds, rounded up, at least one: conntrack's timeouts are in seconds.
fn secs(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

/// FNV-1a: an id for a name, not a balancing hash.
fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
