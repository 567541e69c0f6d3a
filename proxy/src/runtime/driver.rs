//! Building one compio runtime per thread: io_uring with COOP_TASKRUN where the kernel has it,
//! epoll (compio's polling driver) where it does not or where the operator asks for it.

use std::io;
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
    // interrupting the thread; measured as the largest single CPU saving (KERNEL-NOTES.md).
    proactor.coop_taskrun(true).taskrun_flag(true);
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

pub fn driver_name(t: DriverType) -> &'static str {
    match t {
        DriverType::IoUring => "io_uring (COOP_TASKRUN)",
        DriverType::Poll => "epoll",
        DriverType::IOCP => "iocp",
    }
}
