//! The eBPF sockmap engine: both sockets of a flow join a socket hash whose SK_SKB verdict
//! program (proxy-ebpf) redirects each received packet to the peer socket's egress, so the
//! proxy does no per-byte work while a direction keeps within its budget. Near the budget the
//! proxy parks the direction (takes its source out of the verdict's hash) and copies it with
//! TCP backpressure until the destination catches up. See LIFECYCLE.md beside this file.

mod btf;
mod dir;
mod flow;
mod guard;
mod park;
mod slots;
mod sys;
#[cfg(test)]
mod tests;
mod wake;
mod watch;

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use aya::maps::{Map, MapData, RingBuf, SockHash};
use aya::programs::{Iter, SkSkb};
use aya::{Ebpf, EbpfLoader};

use super::ForwardError;
use slots::Slots;

pub use flow::{forward, run};

/// Default per-direction kernel queue budget.
pub const DEFAULT_BUDGET: u64 = 4 * 1024 * 1024;

/// The BPF object built by build.rs; empty when the BPF toolchain was missing.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("PROXY_EBPF_OBJECT"));

/// The loaded program and its maps, for the life of the process.
pub struct Kernel {
    /// Socket hash the verdict is attached to.
    active: RawFd,
    /// Socket hash of every registered socket (redirect targets), no program attached.
    targets: RawFd,
    routes: RawFd,
    /// The park walk's thread (`proxy-ebpf`'s `park`), fed park requests.
    parker: park::Parker,
    /// The walk's link, used by the parker's thread.
    _park_link: OwnedFd,
    slots: Slots,
    budget: AtomicU64,
    /// Flows that could not be registered and ran on the copy engine instead.
    fallbacks: AtomicU64,
    /// Directions parked so far (taken out of the verdict's hash near their budget).
    parks: AtomicU64,
    /// Bytes the verdict cut off packets that overlapped bytes already taken, by ended flows.
    trimmed: AtomicU64,
    /// Owners of the descriptors above and of the attached program (detached when dropped).
    _keep: Mutex<Owners>,
}

/// The loaded object (with the attached program) and the maps, kept open.
struct Owners {
    _ebpf: Ebpf,
    _active: SockHash<MapData, u64>,
    _maps: [MapData; 4],
}

static KERNEL: OnceLock<Result<Kernel, String>> = OnceLock::new();

/// The loaded engine, loading it on first use; the reason when it cannot be had.
pub fn kernel() -> Result<&'static Kernel, String> {
    KERNEL
        .get_or_init(|| Kernel::load().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

/// The engine if it is loaded already (never loads it: for the wake-up thread).
fn loaded() -> Option<&'static Kernel> {
    KERNEL.get()?.as_ref().ok()
}

/// Start-up probe: the program loads, the verdict attaches to the socket hash, the slots map.
pub fn probe() -> Result<(), String> {
    kernel().map(|_| ())
}

/// Sets the per-direction budget for flows registered from now on.
pub fn set_budget(bytes: u64) {
    if let Ok(k) = kernel() {
        k.budget.store(bytes.max(64 * 1024), Ordering::Relaxed);
    }
}

impl Kernel {
    fn load() -> Result<Kernel, ForwardError> {
        if OBJECT.is_empty() {
            return Err(ForwardError::NotBuilt);
        }
        let layout =
            btf::Layout::of_running_kernel().map_err(|e| bpf("the kernel's struct layout", e))?;
        let mut ebpf = EbpfLoader::new()
            .override_global("SKB_CB_OFFSET", &layout.skb_cb, true)
            .override_global("SKB_SK_OFFSET", &layout.skb_sk, true)
            .override_global("TCP_COPIED_SEQ_OFFSET", &layout.tcp_copied_seq, true)
            .load(OBJECT)
            .map_err(|e| bpf("loading the object", e))?;
        let active = take_map(&mut ebpf, "ACTIVE")?;
        let active: SockHash<MapData, u64> =
            SockHash::try_from(active).map_err(|e| bpf("the socket hash", e))?;
        let targets = map_data(take_map(&mut ebpf, "TARGETS")?)?;
        let routes = map_data(take_map(&mut ebpf, "ROUTES")?)?;
        let slots_map = map_data(take_map(&mut ebpf, "SLOTS")?)?;
        let park_map = map_data(take_map(&mut ebpf, "PARK")?)?;
        let ring = RingBuf::try_from(take_map(&mut ebpf, "WAKE")?)
            .map_err(|e| bpf("the wake-up ring", e))?;
        let prog: &mut SkSkb = ebpf
            .program_mut("verdict")
            .ok_or_else(|| bpf("the verdict program", "missing from the object"))?
            .try_into()
            .map_err(|e| bpf("the verdict program", e))?;
        prog.load().map_err(|e| bpf("verifying the verdict", e))?;
        prog.attach(active.fd())
            .map_err(|e| bpf("attaching the verdict", e))?;
        let park_link = load_park_walk(&mut ebpf)?;
        let slots = Slots::map(slots_map.fd().as_fd().as_raw_fd(), proxy_ebpf::MAX_SLOTS)
            .map_err(|e| bpf("mapping the slots", e))?;
        wake::start(ring).map_err(|e| bpf("the wake-up thread", e))?;
        let parker = park::Parker::start(park::WalkFds {
            active: active.fd().as_fd().as_raw_fd(),
            park_map: park_map.fd().as_fd().as_raw_fd(),
            link: park_link.as_raw_fd(),
        })
        .map_err(|e| bpf("the park walk's thread", e))?;
        Ok(Kernel {
            active: active.fd().as_fd().as_raw_fd(),
            targets: targets.fd().as_fd().as_raw_fd(),
            routes: routes.fd().as_fd().as_raw_fd(),
            parker,
            _park_link: park_link,
            slots,
            budget: AtomicU64::new(DEFAULT_BUDGET),
            fallbacks: AtomicU64::new(0),
            parks: AtomicU64::new(0),
            trimmed: AtomicU64::new(0),
            _keep: Mutex::new(Owners {
                _ebpf: ebpf,
                _active: active,
                _maps: [targets, routes, slots_map, park_map],
            }),
        })
    }
}

impl Kernel {
    /// Takes a socket out of the verdict's hash under the socket's lock, by the park walk on
    /// its own thread (see `park`).
    async fn park(&self, cookie: u64, fd: RawFd) -> io::Result<()> {
        self.parker.park(cookie, fd).await?;
        self.parks.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Loads the park walk (`iter/tcp` program `park`) against the kernel's BTF and links it.
fn load_park_walk(ebpf: &mut Ebpf) -> Result<OwnedFd, ForwardError> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| bpf("the kernel's BTF", e))?;
    let walk: &mut Iter = ebpf
        .program_mut("park")
        .ok_or_else(|| bpf("the park walk", "missing from the object"))?
        .try_into()
        .map_err(|e| bpf("the park walk", e))?;
    walk.load("tcp", &btf)
        .map_err(|e| bpf("verifying the park walk", e))?;
    let prog = walk.fd().map_err(|e| bpf("the park walk", e))?;
    sys::iter_link(prog.as_fd().as_raw_fd()).map_err(|e| bpf("linking the park walk", e))
}

/// What the engine holds now, for the stats exporters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Flows registered right now.
    pub flows: u32,
    /// Flows that fell back to the copy engine (table full, socket already closing).
    pub fallbacks: u64,
    /// Bytes waiting in psock backlogs between the sockets of every flow: memory the kernel
    /// charges to no socket, bounded by the budget per direction (`Slots::queued_total`).
    pub queued_bytes: u64,
}

/// The engine's figures now; `None` when it is not loaded.
pub fn status() -> Option<Status> {
    let k = KERNEL.get()?.as_ref().ok()?;
    Some(Status {
        flows: k.slots.in_use() / 2,
        fallbacks: k.fallbacks.load(Ordering::Relaxed),
        queued_bytes: k.slots.queued_total(),
    })
}

fn bpf(what: &'static str, reason: impl std::fmt::Display) -> ForwardError {
    ForwardError::Bpf {
        what,
        reason: reason.to_string(),
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, ForwardError> {
    ebpf.take_map(name)
        .ok_or_else(|| bpf(name, "missing from the object"))
}

fn map_data(map: Map) -> Result<MapData, ForwardError> {
    match map {
        Map::HashMap(d) | Map::Array(d) | Map::SockHash(d) => Ok(d),
        _ => Err(bpf("a map", "unexpected map type")),
    }
}

#[cfg(test)]
mod slot_tests {
    #[test]
    fn queued_is_a_difference_of_running_totals() {
        use proxy_ebpf::DirSlot;
        assert_eq!(DirSlot::queued(1000, 0, 10, 10), 1000);
        assert_eq!(DirSlot::queued(1000, 500, 10, 1510), 0);
        // A stale `written` (published before the latest redirects) only overestimates.
        assert_eq!(DirSlot::queued(2000, 0, 0, 1000), 1000);
        // Totals near wrap-around still subtract correctly.
        assert_eq!(DirSlot::queued(u64::MAX - 5, 10, 0, u64::MAX - 5), 10);
    }
}
