//! Map layouts shared by the sockmap engine's BPF program and the proxy. Plain `#[repr(C)]`
//! data, no dependencies: the proxy compiles this for the host, aya-build for the BPF target.
//!
//! How the fields are used (who writes what, when) is in
//! `proxy/src/forward/sockmap/LIFECYCLE.md`.
#![no_std]

/// Flows (client/server pairs) the maps have room for; each flow takes two sockets, two
/// routes and two direction slots.
pub const MAX_FLOWS: u32 = 16384;

/// Entries of each socket hash and of the route map (two sockets per flow).
pub const MAX_SOCKETS: u32 = 2 * MAX_FLOWS;

/// Direction slots (two per flow).
pub const MAX_SLOTS: u32 = 2 * MAX_FLOWS;

/// Entries of the park-request map: parking requests in flight at once (one per worker
/// thread at most, in practice).
pub const MAX_PARK_REQUESTS: u32 = 1024;

/// Value of a park request the proxy wrote (`PARK`, keyed by the source socket's cookie).
pub const PARK_REQUESTED: u32 = 1;
/// Value the park walk leaves once it took the socket out of `ACTIVE` under the socket lock.
pub const PARK_DONE: u32 = 2;

/// Bytes of the wake-up ring (`WAKE`): 4096 pending wake-ups of 16 bytes (8 of header, the
/// 4-byte slot index, padding). A full ring drops a wake-up; the direction then looks at its
/// next timer tick instead.
pub const WAKE_RING_BYTES: u32 = 64 * 1024;

/// `BPF_F_MMAPABLE`: the slot array is mapped into the proxy, which reads the program's
/// counters and writes its own fields without a system call.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Value of the route map, keyed by the cookie of the socket the bytes come from.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Cookie of the socket to redirect to (its key in the socket hash).
    pub peer: u64,
    /// Index of this direction's slot.
    pub slot: u32,
    pub _pad: u32,
}

/// One direction of one flow. The first block is written only by the program (one writer: the
/// verdict of one socket runs under that socket's lock), the second only by the proxy. All
/// fields are naturally aligned 64-bit words, read and written whole.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirSlot {
    /// Bytes redirected to the peer's egress.
    pub redirected: u64,
    /// `bpf_ktime_get_coarse_ns()` of the last packet (CLOCK_MONOTONIC_COARSE).
    pub last_ns: u64,
    /// Packets redirected while the direction's backlog (by the last published `written`)
    /// was over its budget: the proxy parks the direction at half the budget, so these count
    /// late reactions (or a stale estimate).
    pub overruns: u64,
    /// Bytes cut off the head of packets that overlapped bytes already taken (a
    /// retransmission TCP queued whole): see LIFECYCLE.md, "Overlapping packets".
    pub trimmed: u64,
    /// Packets whose overlap could not be cut off (the helper failed): dropped, and the
    /// flow is reset by the proxy, since the stream can no longer be trusted.
    pub faults: u64,
    /// The overlap of the last packet that could not be trimmed (for the proxy's log line).
    pub fault_cut: u64,

    /// Most bytes this direction may have waiting in the destination's psock backlog (taken
    /// off the source, not yet in the destination socket).
    pub budget: u64,
    /// Bytes written into the destination socket before the flow was registered.
    pub dest_base: u64,
    /// Bytes the proxy itself copied from the source to the destination (while parked).
    pub consumed: u64,
    /// Bytes written into the destination socket so far (`tcpi_bytes_acked + SIOCOUTQ`), as
    /// last published by the proxy.
    pub written: u64,
    /// `redirected` total at which the proxy wants to look again: the packet that takes
    /// `redirected` from below it to it or past it sends this slot's index through `WAKE`.
    /// 0: no wake-up wanted.
    pub wake_at: u64,
}

impl DirSlot {
    /// Bytes taken off the source and not yet in the destination socket (the psock backlog),
    /// as far as the last published `written` tells: an overestimate while that is stale,
    /// never an underestimate. Wrapping arithmetic: the terms are running totals.
    #[inline(always)]
    pub fn queued(redirected: u64, consumed: u64, dest_base: u64, written: u64) -> i64 {
        dest_base
            .wrapping_add(redirected)
            .wrapping_add(consumed)
            .wrapping_sub(written) as i64
    }
}

/// Bytes `bpf_skb_adjust_room` may take off a packet per call (SK_SKB: at most 0xfff).
pub const TRIM_STEP: u32 = 4095;

/// Calls the verdict may make to trim one packet: 256 KiB less 64 bytes, four 64 KiB loopback
/// packets (a retransmission TCP collapsed from several segments, or one the receive queue
/// merged). An overlap beyond it resets the flow (LIFECYCLE.md, "Overlapping packets").
pub const MAX_TRIM_STEPS: u32 = 64;
