//! The HTTP/2 frame path (see `h2/fuzzing.rs`, which lives beside the private h2 modules).

use super::{block_on, split_step, BUFSIZE};

/// A client's bytes after the TLS layer: `data[0]` is the read size, the rest the
/// connection preface, SETTINGS and frames.
pub fn frames(data: &[u8]) {
    let (step, input) = split_step(data);
    block_on(super::super::h2::fuzzing::frames(input, step, BUFSIZE));
}
