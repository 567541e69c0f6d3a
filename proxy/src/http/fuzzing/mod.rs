//! Entry points for the fuzz targets (`fuzz/`, `cargo xtask fuzz`): each takes arbitrary
//! bytes and drives one parser of the HTTP room the way the data path does, through the
//! room's private types, so that the library exposes these functions and nothing else.
//! Built only for fuzzing (`--cfg fuzzing`, which cargo-fuzz sets) and for the unit tests,
//! which replay the seed corpora and the crashes found.
//!
//! A panic here is a finding: either the proxy panicked on input, or a checked property
//! (see each module) does not hold.

mod cookie;
mod h1;
mod h2;
mod mem;

#[cfg(test)]
mod tests;

pub use cookie::cookie;
pub use h1::{request, response};
pub use h2::frames as h2_frames;

use std::future::Future;

/// `tune.bufsize`'s default: the head and buffer limit the entries run with.
const BUFSIZE: usize = 16 * 1024;

/// `data[0]` as the size of each read (1..=256), and the rest.
fn split_step(data: &[u8]) -> (usize, &[u8]) {
    match data.split_first() {
        Some((&s, rest)) => (usize::from(s) + 1, rest),
        None => (1, data),
    }
}

thread_local! {
    static RUNTIME: compio::runtime::Runtime =
        compio::runtime::Runtime::new().expect("a compio runtime for the fuzz entries");
}

fn block_on<F: Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(f))
}
