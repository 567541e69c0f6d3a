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
    helpers::{
        bpf_get_socket_cookie, bpf_ktime_get_coarse_ns, bpf_map_delete_elem, bpf_probe_read_kernel,
    },
    macros::{map, stream_verdict},
    maps::{Array, HashMap, RingBuf, SockHash},
    programs::SkBuffContext,
    EbpfContext,
};
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use proxy_ebpf::{
    DirSlot, Route, BPF_F_MMAPABLE, MAX_PARK_REQUESTS, MAX_SLOTS, MAX_SOCKETS, MAX_TRIM_STEPS,
    PARK_DONE, PARK_REQUESTED, TRIM_STEP, WAKE_RING_BYTES,
};

// Offsets in kernel structures the verdict reads, set by the proxy at load time from the
// running kernel's BTF (SK_SKB programs have no field for either value, and no CO-RE here).
/// `struct sk_buff`'s `cb`: `TCP_SKB_CB(skb)->seq` is its first word.
#[unsafe(no_mangle)]
static SKB_CB_OFFSET: u32 = 0;
/// `struct sk_buff`'s `sk`.
#[unsafe(no_mangle)]
static SKB_SK_OFFSET: u32 = 0;
/// `struct tcp_sock`'s `copied_seq`.
#[unsafe(no_mangle)]
static TCP_COPIED_SEQ_OFFSET: u32 = 0;

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

/// Slot indexes of directions whose `redirected` just reached their `wake_at`: the proxy's
/// wake-up thread reads them and wakes those directions (instead of each direction polling).
#[map]
static WAKE: RingBuf = RingBuf::with_byte_size(WAKE_RING_BYTES, 0);

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
    let whole = len;
    let len = match trim_overlap(&ctx, whole) {
        Ok(len) => len,
        Err(cut) => {
            // SAFETY: as for `account` below.
            unsafe {
                count(addr_of_mut!((*slot).faults), 1);
                write_volatile(addr_of_mut!((*slot).fault_cut), u64::from(cut));
            }
            return SK_DROP;
        }
    };
    if len < whole {
        // SAFETY: as for `account` below.
        unsafe { count(addr_of_mut!((*slot).trimmed), u64::from(whole - len)) };
    }
    if len == 0 {
        // Every byte of it was taken before: nothing to send (and nothing counted as read).
        return SK_DROP;
    }
    let mut peer = route.peer;
    if TARGETS.redirect_skb(&ctx, &mut peer, 0) != i64::from(SK_PASS) {
        // The peer left the hash (it closed): the flow is ending anyway.
        return SK_DROP;
    }
    // SAFETY: `slot` points into the array map's value, valid for the program's run; every
    // field is an aligned word accessed whole.
    unsafe { account(slot, route.slot, u64::from(len)) };
    SK_PASS
}

/// Cuts off the head of a packet that overlaps bytes the socket already took, returning the
/// length left. TCP queues a retransmitted segment that overlaps received bytes whole (its
/// reader skips the overlap by sequence number), but the verdict path hands the whole packet
/// over and then counts all of it as read: without this, the overlap is sent twice and the
/// socket's read position overshoots (LIFECYCLE.md, "Overlapping packets"). `Err` with the
/// bytes it had to cut when the packet could not be trimmed.
#[inline(always)]
fn trim_overlap(ctx: &SkBuffContext, len: u32) -> Result<u32, u32> {
    let Some(overlap) = overlap(ctx) else {
        return Ok(len);
    };
    let cut = overlap.min(len);
    // One linear copy of the bytes to cut first: each step then only moves the head pointer.
    // Without it every step pulls its 4 KiB out of the packet's pages and, the packet being a
    // clone (loopback), reallocates the head a step larger each time: seventeen atomic
    // allocations up to 70 KiB for one 64 KiB overlap, any of which may fail under memory
    // pressure (the likely cause of the one fault seen, in a CI run under load). If this one
    // fails the steps still try on their own.
    let _ = ctx.pull_data(cut);
    let mut left = cut;
    for _ in 0..MAX_TRIM_STEPS {
        if left == 0 {
            break;
        }
        let step = left.min(TRIM_STEP);
        ctx.adjust_room(-(step as i32), 0, 0).map_err(|_| cut)?;
        left -= step;
    }
    if left == 0 {
        Ok(len - cut)
    } else {
        Err(cut)
    }
}

/// Bytes at the head of the packet that the socket already took: its read position
/// (`copied_seq`, advanced by every packet the verdict or a reader took) minus the packet's
/// first sequence number. `None` when there is none (the usual case) or a read failed.
#[inline(always)]
fn overlap(ctx: &SkBuffContext) -> Option<u32> {
    // SAFETY: plain loads of the program's own read-only globals.
    let (cb, sk_at, copied_at) = unsafe {
        (
            read_volatile(addr_of!(SKB_CB_OFFSET)),
            read_volatile(addr_of!(SKB_SK_OFFSET)),
            read_volatile(addr_of!(TCP_COPIED_SEQ_OFFSET)),
        )
    };
    let skb = ctx.as_ptr() as *const u8;
    // SAFETY: bpf_probe_read_kernel checks its source and fails instead of faulting; the
    // context is the kernel's `struct sk_buff` and the offsets come from the kernel's BTF.
    let (seq, sk) = unsafe {
        (
            bpf_probe_read_kernel(skb.wrapping_add(cb as usize) as *const u32).ok()?,
            bpf_probe_read_kernel(skb.wrapping_add(sk_at as usize) as *const *const u8).ok()?,
        )
    };
    // SAFETY: as above; `sk` is the skb's owner, a TCP socket (tcp_read_skb set it).
    let copied =
        unsafe { bpf_probe_read_kernel(sk.wrapping_add(copied_at as usize) as *const u32) }.ok()?;
    let d = copied.wrapping_sub(seq) as i32;
    (d > 0).then_some(d as u32)
}

/// Adds `n` to a counter of a slot.
///
/// SAFETY: `field` must point to a field of a live slot of the SLOTS map.
#[inline(always)]
unsafe fn count(field: *mut u64, n: u64) {
    write_volatile(field, read_volatile(field) + n);
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

/// Counts a redirected packet of `len` bytes, and wakes the proxy's look at this direction
/// if it asked to be woken at this total.
///
/// SAFETY: `slot` must point to a live slot of the SLOTS map, the one at `index`.
#[inline(always)]
unsafe fn account(slot: *mut DirSlot, index: u32, len: u64) {
    write_volatile(addr_of_mut!((*slot).last_ns), bpf_ktime_get_coarse_ns());
    let redirected = read_volatile(addr_of!((*slot).redirected));
    let queued = DirSlot::queued(
        redirected,
        read_volatile(addr_of!((*slot).consumed)),
        read_volatile(addr_of!((*slot).dest_base)),
        read_volatile(addr_of!((*slot).written)),
    );
    if queued.saturating_add(len as i64) > read_volatile(addr_of!((*slot).budget)) as i64 {
        count(addr_of_mut!((*slot).overruns), 1);
    }
    let total = redirected + len;
    write_volatile(addr_of_mut!((*slot).redirected), total);
    let wake_at = read_volatile(addr_of!((*slot).wake_at));
    if wake_at != 0 && redirected < wake_at && total >= wake_at {
        // A full ring drops the wake-up: the direction looks at its next tick instead.
        let _ = WAKE.output::<u32>(index, 0);
    }
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
