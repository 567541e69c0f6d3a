//! Map layouts shared by the sockmap engine's BPF program and the proxy. Plain `#[repr(C)]`
//! data, no dependencies: the proxy compiles this for the host, aya-build for the BPF target.
//!
//! How the fields are used (who writes what, when) is in
//! `proxy/src/forward/sockmap/LIFECYCLE.md`.
#![no_std]

/// Flows (client/server pairs) the maps have room for; each flow takes two sockets, two
/// routes and two direction slots.
pub const MAX_FLOWS: u32 = 16384;

/// Entries of the socket hash and of the route map (two sockets per flow).
pub const MAX_SOCKETS: u32 = 2 * MAX_FLOWS;

/// Direction slots (two per flow).
pub const MAX_SLOTS: u32 = 2 * MAX_FLOWS;

/// `BPF_F_MMAPABLE`: the slot array is mapped into the proxy, which reads the program's
/// counters and writes its own fields without a system call.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Direction mode: bytes are passed to the source socket's own receive queue, where the proxy
/// reads them and writes them on with backpressure. Every slot starts here.
pub const MODE_PASS: u32 = 0;
/// Direction mode: bytes are redirected to the peer socket's egress inside the kernel.
pub const MODE_REDIRECT: u32 = 1;
/// Direction mode: the proxy asks to go back to redirecting; the program does so at the next
/// packet if every passed byte has been consumed, else it keeps passing.
pub const MODE_RESUME: u32 = 2;

/// Value of the route map, keyed by the cookie of the socket the bytes come from.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Cookie of the socket to redirect to (its key in the socket hash).
    pub peer: u64,
    /// Index of this direction's slot.
    pub slot: u32,
    /// Index of the opposite direction's slot.
    pub other: u32,
}

/// One direction of one flow. The first block is written only by the program (one writer: the
/// verdict of one socket runs under that socket's lock), the second only by the proxy; `mode`
/// by both, in turns (see LIFECYCLE.md). All fields are naturally aligned 64-bit or 32-bit
/// words, read and written whole.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirSlot {
    /// Bytes redirected to the peer's egress.
    pub redirected: u64,
    /// Bytes passed to the source socket for the proxy to read.
    pub passed: u64,
    /// `bpf_ktime_get_coarse_ns()` of the last packet (CLOCK_MONOTONIC_COARSE).
    pub last_ns: u64,
    /// `MODE_*`.
    pub mode: u32,
    /// Times the budget made the program switch from redirecting to passing.
    pub flips: u32,
    /// Packets redirected over the budget because the opposite direction was busy (passing
    /// is only safe while it is quiet; see LIFECYCLE.md).
    pub overruns: u64,

    /// Most bytes allowed between the source's receive queue and the destination's
    /// acknowledgement (kernel queue bound of this direction).
    pub budget: u64,
    /// Bytes written into the destination socket before the flow was registered.
    pub dest_base: u64,
    /// Passed bytes the proxy has read and written to the destination.
    pub consumed: u64,
    /// The destination's `tcpi_bytes_acked`, as last published by the proxy.
    pub acked: u64,
}

impl DirSlot {
    /// Bytes taken off the source and not yet acknowledged by the destination, as far as the
    /// last published `acked` tells (an overestimate while that is stale, never an
    /// underestimate). Wrapping arithmetic: the terms are running totals.
    #[inline(always)]
    pub fn queued(redirected: u64, consumed: u64, dest_base: u64, acked: u64) -> i64 {
        dest_base
            .wrapping_add(redirected)
            .wrapping_add(consumed)
            .wrapping_sub(acked) as i64
    }
}
