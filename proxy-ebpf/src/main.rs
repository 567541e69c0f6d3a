//! The sockmap engine's SK_SKB stream verdict, attached (verdict only, no parser) to the
//! `ACTIVE` socket hash. It runs for every packet a socket in that hash receives and redirects
//! it to the peer socket's egress, looked up in `TARGETS`. A direction is slowed down by the
//! proxy taking its source out of `ACTIVE` (parking it), never by the program: see
//! proxy/src/forward/sockmap/LIFECYCLE.md.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::sk_action::{SK_DROP, SK_PASS},
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_coarse_ns},
    macros::{map, stream_verdict},
    maps::{Array, HashMap, SockHash},
    programs::SkBuffContext,
    EbpfContext,
};
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use proxy_ebpf::{DirSlot, Route, BPF_F_MMAPABLE, MAX_SLOTS, MAX_SOCKETS};

/// Sockets whose received bytes the verdict handles (the program is attached here).
#[map]
static ACTIVE: SockHash<u64> = SockHash::with_max_entries(MAX_SOCKETS, 0);

/// Every socket of a registered flow, keyed by cookie: what redirects look up. No program is
/// attached, so a socket taken out of `ACTIVE` keeps its psock (and the bytes queued to it).
#[map]
static TARGETS: SockHash<u64> = SockHash::with_max_entries(MAX_SOCKETS, 0);

/// Source socket cookie → where its bytes go and its direction slot.
#[map]
static ROUTES: HashMap<u64, Route> = HashMap::with_max_entries(MAX_SOCKETS, 0);

/// Per-direction counters, shared with the proxy through mmap.
#[map]
static SLOTS: Array<DirSlot> = Array::with_max_entries(MAX_SLOTS, BPF_F_MMAPABLE);

#[stream_verdict]
pub fn verdict(ctx: SkBuffContext) -> u32 {
    let len = ctx.len();
    // Verdict-only mode hands a FIN over as an empty skb; redirecting it breaks the peer
    // (EPIPE). The proxy sees the FIN itself (POLLRDHUP) and passes it on after draining.
    if len == 0 {
        return SK_DROP;
    }
    // SAFETY: the context pointer is the program's own `__sk_buff`.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out at once; the proxy never deletes a live flow's route.
    let Some(route) = (unsafe { ROUTES.get(&cookie) }).copied() else {
        // Not (or no longer) a flow of ours: keep the bytes on this socket.
        return SK_PASS;
    };
    let Some(slot) = SLOTS.get_ptr_mut(route.slot) else {
        return SK_PASS;
    };
    let mut peer = route.peer;
    if TARGETS.redirect_skb(&ctx, &mut peer, 0) != i64::from(SK_PASS) {
        // The peer left the hash (it closed): the flow is ending anyway.
        return SK_DROP;
    }
    // SAFETY: `slot` points into the array map's value, valid for the program's run; every
    // field is an aligned word accessed whole.
    unsafe { account(slot, u64::from(len)) };
    SK_PASS
}

/// Counts a redirected packet of `len` bytes.
///
/// SAFETY: `slot` must point to a live slot of the SLOTS map.
#[inline(always)]
unsafe fn account(slot: *mut DirSlot, len: u64) {
    write_volatile(addr_of_mut!((*slot).last_ns), bpf_ktime_get_coarse_ns());
    let redirected = read_volatile(addr_of!((*slot).redirected));
    let queued = DirSlot::queued(
        redirected,
        read_volatile(addr_of!((*slot).consumed)),
        read_volatile(addr_of!((*slot).dest_base)),
        read_volatile(addr_of!((*slot).written)),
    );
    if queued.saturating_add(len as i64) > read_volatile(addr_of!((*slot).budget)) as i64 {
        let o = read_volatile(addr_of!((*slot).overruns));
        write_volatile(addr_of_mut!((*slot).overruns), o + 1);
    }
    write_volatile(addr_of_mut!((*slot).redirected), redirected + len);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: nothing in this program can panic (no indexing, no unwrap, no overflow checks
    // in release); the verifier would reject a reachable endless loop anyway.
    unsafe { core::hint::unreachable_unchecked() }
}

/// bpf_sk_redirect_hash and the sockhash helpers are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
