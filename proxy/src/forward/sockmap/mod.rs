//! The eBPF sockmap engine: both sockets of a flow join a socket hash whose SK_SKB verdict
//! program (proxy-ebpf) redirects each received packet to the peer socket's egress, so the
//! proxy does no per-byte work while a direction keeps within its budget. Near the budget the
//! proxy parks the direction (takes its source out of the verdict's hash) and copies it with
//! TCP backpressure until the destination catches up. See LIFECYCLE.md beside this file.

mod dir;
mod flow;
mod slots;
mod sys;
mod watch;

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use aya::maps::{Map, MapData, SockHash};
use aya::programs::SkSkb;
use aya::Ebpf;

use super::ForwardError;
use slots::Slots;

pub use flow::forward;

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
    slots: Slots,
    budget: AtomicU64,
    /// Flows that could not be registered and ran on the copy engine instead.
    fallbacks: AtomicU64,
    /// Owners of the descriptors above and of the attached program (detached when dropped).
    _keep: Mutex<Owners>,
}

/// The loaded object (with the attached program) and the maps, kept open.
struct Owners {
    _ebpf: Ebpf,
    _active: SockHash<MapData, u64>,
    _maps: [MapData; 3],
}

static KERNEL: OnceLock<Result<Kernel, String>> = OnceLock::new();

/// The loaded engine, loading it on first use; the reason when it cannot be had.
pub fn kernel() -> Result<&'static Kernel, String> {
    KERNEL
        .get_or_init(|| Kernel::load().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
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
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| bpf("loading the object", e))?;
        let active = take_map(&mut ebpf, "ACTIVE")?;
        let active: SockHash<MapData, u64> =
            SockHash::try_from(active).map_err(|e| bpf("the socket hash", e))?;
        let targets = map_data(take_map(&mut ebpf, "TARGETS")?)?;
        let routes = map_data(take_map(&mut ebpf, "ROUTES")?)?;
        let slots_map = map_data(take_map(&mut ebpf, "SLOTS")?)?;
        let prog: &mut SkSkb = ebpf
            .program_mut("verdict")
            .ok_or_else(|| bpf("the verdict program", "missing from the object"))?
            .try_into()
            .map_err(|e| bpf("the verdict program", e))?;
        prog.load().map_err(|e| bpf("verifying the verdict", e))?;
        prog.attach(active.fd())
            .map_err(|e| bpf("attaching the verdict", e))?;
        let slots = Slots::map(slots_map.fd().as_fd().as_raw_fd(), proxy_ebpf::MAX_SLOTS)
            .map_err(|e| bpf("mapping the slots", e))?;
        Ok(Kernel {
            active: active.fd().as_fd().as_raw_fd(),
            targets: targets.fd().as_fd().as_raw_fd(),
            routes: routes.fd().as_fd().as_raw_fd(),
            slots,
            budget: AtomicU64::new(DEFAULT_BUDGET),
            fallbacks: AtomicU64::new(0),
            _keep: Mutex::new(Owners {
                _ebpf: ebpf,
                _active: active,
                _maps: [targets, routes, slots_map],
            }),
        })
    }
}

/// Flows registered right now and flows that fell back to the copy engine (table full,
/// socket already closing); `None` when the engine is not loaded.
pub fn status() -> Option<(u32, u64)> {
    let k = KERNEL.get()?.as_ref().ok()?;
    Some((k.slots.in_use() / 2, k.fallbacks.load(Ordering::Relaxed)))
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
mod tests {
    use super::*;

    /// Loading needs CAP_BPF/CAP_NET_ADMIN: as root (CI) this must work; otherwise it fails
    /// loudly rather than passing without having tried.
    #[test]
    fn program_loads_and_attaches() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test loads a BPF program and must run as root (CI does)"
        );
        probe().expect("the sockmap program loads, verifies and attaches");
        let (flows, _) = status().expect("loaded");
        assert_eq!(flows, 0);
    }

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
