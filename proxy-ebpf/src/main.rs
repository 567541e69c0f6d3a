//! The sockmap engine's SK_SKB stream verdict, attached (verdict only, no parser) to the
//! `ACTIVE` socket hash. It runs for every packet a socket in that hash receives and redirects
//! it to the peer socket's egress, looked up in `TARGETS`. A direction is slowed down by the
//! proxy taking its source out of `ACTIVE` (parking it), never by the program: see
//! proxy/src/forward/sockmap/LIFECYCLE.md.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::sk_action::{SK_DROP, SK_PASS},
    cty::c_void,
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_coarse_ns, bpf_map_delete_elem},
    macros::{map, stream_verdict},
    maps::{Array, HashMap, SockHash},
    programs::SkBuffContext,
    EbpfContext,
};
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use proxy_ebpf::{
    DirSlot, Route, BPF_F_MMAPABLE, MAX_PARK_REQUESTS, MAX_SLOTS, MAX_SOCKETS, PARK_DONE,
    PARK_REQUESTED,
};

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

/// Sockets the proxy wants out of `ACTIVE` (cookie → PARK_REQUESTED, then PARK_DONE): see
/// `park` below.
#[map]
static PARK: HashMap<u64, u32> = HashMap::with_max_entries(MAX_PARK_REQUESTS, 0);

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

/// TCP socket iterator (`iter/tcp`, run by the proxy reading an iterator it creates): takes
/// each socket with a pending park request out of `ACTIVE`. The iterator holds the socket's
/// lock (`lock_sock`) while this runs, so no verdict run is in progress on it and none can
/// start: packets arriving meanwhile wait in the socket's backlog and, once the lock is
/// released, find the socket's own data-ready callback. Taking a socket out of the hash from
/// outside the lock (`bpf(BPF_MAP_DELETE_ELEM)`) races with a verdict run on another CPU, which
/// then finds no program and drops the packet (sockmap/LIFECYCLE.md, "Parking").
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub fn park(ctx: *mut c_void) -> i32 {
    // `struct bpf_iter__tcp { meta; sk_common; uid }`: the socket is the second pointer.
    // SAFETY: the context is the iterator's, whose second field is that pointer.
    let sk = unsafe { *(ctx as *const *mut c_void).add(1) };
    if sk.is_null() {
        return 0;
    }
    // SAFETY: `sk` is the iterator's non-null sock_common.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    let Some(state) = PARK.get_ptr_mut(&cookie) else {
        return 0;
    };
    // SAFETY: `state` points to the map's value for `cookie`, valid during this run.
    if unsafe { read_volatile(state) } != PARK_REQUESTED {
        return 0;
    }
    // SAFETY: the map pointer is ACTIVE's definition, the key a live u64; a missing entry
    // (already parked) returns an error, which changes nothing.
    unsafe {
        bpf_map_delete_elem(
            addr_of!(ACTIVE) as *mut c_void,
            addr_of!(cookie) as *const c_void,
        )
    };
    // SAFETY: as above.
    unsafe { write_volatile(state, PARK_DONE) };
    0
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
