//! The sockmap engine's SK_SKB stream verdict, attached (verdict only, no parser) to the
//! socket hash. It runs for every packet a registered socket receives and decides: redirect to
//! the peer's egress while the direction is within its budget, pass to the socket itself (for
//! the proxy to copy with backpressure) otherwise. See proxy/src/forward/sockmap/LIFECYCLE.md.
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
use proxy_ebpf::{
    DirSlot, Route, BPF_F_MMAPABLE, MAX_SLOTS, MAX_SOCKETS, MODE_PASS, MODE_REDIRECT, MODE_RESUME,
};

/// Registered sockets, keyed by socket cookie.
#[map]
static SOCKS: SockHash<u64> = SockHash::with_max_entries(MAX_SOCKETS, 0);

/// Source socket cookie → where its bytes go and its direction slot.
#[map]
static ROUTES: HashMap<u64, Route> = HashMap::with_max_entries(MAX_SOCKETS, 0);

/// Per-direction counters and mode, shared with the proxy through mmap.
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
    // SAFETY: `slot` points into the array map's value, valid for the program's run; every
    // field is an aligned word accessed whole.
    unsafe { decide(&ctx, slot, &route, u64::from(len)) }
}

/// Whether the opposite direction has nothing queued towards this socket. Passing a packet
/// to its own socket is only reliable then: with the peer's bytes waiting in this socket's
/// psock backlog, the kernel queues the passed packet behind them, and a retry from that
/// backlog (when the socket's receive memory is full) sends it out as if redirected (seen on
/// 6.18: the client received its own bytes). The estimate never undercounts.
///
/// SAFETY: none beyond the map access; the slot is read through volatile loads.
#[inline(always)]
unsafe fn other_quiet(other: u32) -> bool {
    let Some(o) = SLOTS.get_ptr_mut(other) else {
        return false;
    };
    let queued = DirSlot::queued(
        read_volatile(addr_of!((*o).redirected)),
        read_volatile(addr_of!((*o).consumed)),
        read_volatile(addr_of!((*o).dest_base)),
        read_volatile(addr_of!((*o).acked)),
    );
    queued <= 0
}

/// Redirect or pass one packet of `len` bytes, keeping the direction's counters.
///
/// SAFETY: `slot` must point to a live slot of the SLOTS map.
#[inline(always)]
unsafe fn decide(ctx: &SkBuffContext, slot: *mut DirSlot, route: &Route, len: u64) -> u32 {
    write_volatile(addr_of_mut!((*slot).last_ns), bpf_ktime_get_coarse_ns());
    let passed = read_volatile(addr_of!((*slot).passed));
    let mut mode = read_volatile(addr_of!((*slot).mode));
    // The proxy asked to redirect again: only once it has consumed every passed byte, or a
    // redirected packet would overtake passed ones still waiting on this socket.
    if mode == MODE_RESUME && passed == read_volatile(addr_of!((*slot).consumed)) {
        mode = MODE_REDIRECT;
        write_volatile(addr_of_mut!((*slot).mode), mode);
    }
    if mode == MODE_REDIRECT {
        let redirected = read_volatile(addr_of!((*slot).redirected));
        let queued = DirSlot::queued(
            redirected,
            read_volatile(addr_of!((*slot).consumed)),
            read_volatile(addr_of!((*slot).dest_base)),
            read_volatile(addr_of!((*slot).acked)),
        );
        let budget = read_volatile(addr_of!((*slot).budget)) as i64;
        let within = queued.saturating_add(len as i64) <= budget;
        if within || !other_quiet(route.other) {
            if !within {
                let o = read_volatile(addr_of!((*slot).overruns));
                write_volatile(addr_of_mut!((*slot).overruns), o + 1);
            }
            let mut key = route.peer;
            if SOCKS.redirect_skb(ctx, &mut key, 0) != i64::from(SK_PASS) {
                // The peer left the hash (it closed): the flow is ending anyway.
                return SK_DROP;
            }
            write_volatile(addr_of_mut!((*slot).redirected), redirected + len);
            return SK_PASS;
        }
        // Over budget: the destination is not keeping up. From here the proxy copies with
        // backpressure until it asks to resume.
        write_volatile(addr_of_mut!((*slot).mode), MODE_PASS);
        let flips = read_volatile(addr_of!((*slot).flips));
        write_volatile(addr_of_mut!((*slot).flips), flips.wrapping_add(1));
    }
    write_volatile(addr_of_mut!((*slot).passed), passed + len);
    SK_PASS
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
