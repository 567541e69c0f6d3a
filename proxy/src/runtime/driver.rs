//! Building one compio runtime per thread: io_uring with COOP_TASKRUN where the kernel has it,
//! epoll (compio's polling driver) where it does not or where the operator asks for it.

use std::io;
use std::num::NonZeroU16;
use std::str::FromStr;

use compio::driver::{DriverType, ProactorBuilder};
use compio::runtime::Runtime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriverChoice {
    /// io_uring when every operation we use is supported, else epoll.
    #[default]
    Auto,
    IoUring,
    Poll,
}

impl FromStr for DriverChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DriverChoice::Auto),
            "io-uring" | "io_uring" | "uring" => Ok(DriverChoice::IoUring),
            "poll" | "epoll" => Ok(DriverChoice::Poll),
            other => Err(format!(
                "unknown driver '{other}' (expected auto, io-uring or poll)"
            )),
        }
    }
}

pub fn build_runtime(choice: DriverChoice) -> io::Result<Runtime> {
    let mut proactor = ProactorBuilder::new();
    // COOP_TASKRUN: completions are processed when we enter the kernel anyway instead of by
    // interrupting the thread; measured as the largest single CPU saving (docs/kernel-facts.md).
    proactor.coop_taskrun(true).taskrun_flag(true);
    size_buffer_ring(&mut proactor);
    match choice {
        DriverChoice::Auto => {}
        DriverChoice::IoUring => {
            proactor.driver_type(DriverType::IoUring);
        }
        DriverChoice::Poll => {
            proactor.driver_type(DriverType::Poll);
        }
    }
    let rt = Runtime::builder().with_proactor(proactor).build()?;
    if choice == DriverChoice::IoUring && !rt.driver_type().is_iouring() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring is not available",
        ));
    }
    Ok(rt)
}

/// Buffers in each worker's provided-buffer ring (a power of two), unless
/// `PROXY_COPY_RING` says otherwise (the tests shrink it to force ring exhaustion).
const RING_BUFFERS: u16 = 512;
/// One ring buffer: the default `tune.bufsize`, so a chunk is what the plain pump moves.
const RING_BUFFER_LEN: usize = 16 * 1024;

/// The copy engine's multishot pump receives into this ring; it is shared by every flow on
/// the worker, mapped lazily on first use (8 MiB at the defaults), and each direction holds at
/// most a few buffers of it (forward/LIFECYCLE.md, "Multishot copy").
fn size_buffer_ring(proactor: &mut ProactorBuilder) {
    let wanted = std::env::var("PROXY_COPY_RING")
        .ok()
        .and_then(|v| v.parse::<u16>().ok())
        .filter(|n| n.is_power_of_two())
        .unwrap_or(RING_BUFFERS);
    if let Some(n) = NonZeroU16::new(wanted) {
        proactor.buffer_pool_size(n);
    }
    proactor.buffer_pool_buffer_len(RING_BUFFER_LEN);
}

pub fn driver_name(t: DriverType) -> &'static str {
    match t {
        DriverType::IoUring => "io_uring (COOP_TASKRUN)",
        DriverType::Poll => "epoll",
        DriverType::IOCP => "iocp",
    }
}
