//! The copy engine's buffers, lent per burst from a per-worker free list (issue #14).
//!
//! A direction holds a buffer only while bytes are in flight: from the read that found data
//! to the write that delivered it. An idle flow (an RTMP player between bursts, a WebSocket
//! signalling channel) then costs no buffer at all, as in HAProxy, which allocates its
//! buffers only while data is in flight. Each worker is one thread, so the free list needs
//! no lock; it is bounded, so a burst of many busy flows does not stay resident once they
//! calm down.

use std::cell::RefCell;

/// Buffers kept per worker for the next burst: enough for the directions that are busy at
/// the same moment on a loaded worker (each holds one only until its write completes);
/// beyond it, returned buffers are freed. 64 × 16 KiB = 1 MiB per worker at most.
pub(crate) const KEPT: usize = 64;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// Buffers lent and not given back on this thread: what the tests check an idle flow by.
    static LENT: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
}

/// An empty buffer of at least `size` bytes' capacity: a kept one, or a new one.
pub(crate) fn take(size: usize) -> Vec<u8> {
    #[cfg(test)]
    LENT.with(|l| l.set(l.get() + 1));
    let kept = FREE.with(|f| f.borrow_mut().pop());
    match kept {
        // `tune.bufsize` is global, so a kept buffer is the right size but after a reload
        // with another value; a smaller one is dropped for a new one.
        Some(b) if b.capacity() >= size => b,
        _ => Vec::with_capacity(size),
    }
}

/// Hands a buffer back: kept for the next burst while there is room, freed otherwise.
pub(crate) fn give(mut buf: Vec<u8>) {
    #[cfg(test)]
    LENT.with(|l| l.set(l.get() - 1));
    buf.clear();
    FREE.with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < KEPT {
            f.push(buf);
        }
    });
}

/// Buffers kept on this thread now.
#[cfg(test)]
pub(crate) fn kept() -> usize {
    FREE.with(|f| f.borrow().len())
}

/// Buffers lent on this thread and not given back yet.
#[cfg(test)]
pub(crate) fn lent() -> isize {
    LENT.with(|l| l.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_bounded() {
        let before = kept();
        let b = take(16 * 1024);
        assert!(b.capacity() >= 16 * 1024 && b.is_empty());
        let ptr = b.as_ptr();
        give(b);
        assert_eq!(kept(), before + 1);
        let again = take(16 * 1024);
        assert_eq!(again.as_ptr(), ptr, "the kept buffer is lent again");
        give(again);
        let many: Vec<_> = (0..KEPT + 10).map(|_| take(1024)).collect();
        for b in many {
            give(b);
        }
        assert_eq!(kept(), KEPT, "no more than KEPT stay");
    }

    #[test]
    fn a_smaller_kept_buffer_is_not_lent_for_a_bigger_size() {
        give(Vec::with_capacity(512));
        let b = take(64 * 1024);
        assert!(b.capacity() >= 64 * 1024);
    }
}
