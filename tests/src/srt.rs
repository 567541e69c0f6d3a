//! SRT over UDP with ffmpeg (Debian's ffmpeg is built with libsrt): a publisher in caller
//! mode sending MPEG-TS, and a listener recording what it receives to a file, as an Ant
//! Media Server node would take an SRT publish on port 4200.
//!
//! Every process is bounded: the publisher by `-t`, the listener by ffmpeg's own listen
//! timeout and a wall-clock kill.

use crate::process::{kill_now, terminate, wait_timeout};
use crate::util::{require_tool, TestDir};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// SRT's receive latency (microseconds), on both ends: 2 s instead of the default 120 ms, so
/// that a packet held up on a busy 2-core machine (a debug build of the proxy creating
/// thousands of flows) is still played, not dropped as too late: the tests count frames to
/// check what the hop delivers, not how fast (speed lives in `cargo xtask bench`).
pub const LATENCY_US: u32 = 2_000_000;
/// Seconds a publisher's socket lingers at the end so its last packets are delivered: without
/// it (SRT's live-mode default is 0) the last frames depend on timing, direct or not.
pub const LINGER_S: u32 = 3;

/// An `ffmpeg -f mpegts srt://…?mode=listener` recording one caller's stream. Killed on drop.
pub struct SrtListener {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub out: PathBuf,
    log: PathBuf,
    _dir: TestDir,
}

impl SrtListener {
    /// Listens on `addr` (UDP) for one caller, for at most `listen_secs` before one comes.
    pub fn start(addr: SocketAddr, listen_secs: u32) -> SrtListener {
        let dir = TestDir::new("srt-listener");
        let out = dir.join("out.ts");
        let log = dir.join("ffmpeg.log");
        let url = format!(
            "srt://{addr}?mode=listener&latency={LATENCY_US}&listen_timeout={}",
            u64::from(listen_secs) * 1_000_000
        );
        let child = Command::new(require_tool("ffmpeg"))
            .args([
                "-hide_banner",
                "-nostdin",
                "-nostats",
                "-loglevel",
                "warning",
            ])
            .args(["-y", "-i", &url, "-c", "copy", "-f", "mpegts"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("listener log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start ffmpeg: {e}"));
        SrtListener {
            child: Some(child),
            addr,
            out,
            log,
            _dir: dir,
        }
    }

    /// Bytes recorded so far.
    pub fn recorded(&self) -> u64 {
        std::fs::metadata(&self.out).map_or(0, |m| m.len())
    }

    /// Waits (bounded) for the listener to end after its caller left; past `limit` it is
    /// stopped with SIGTERM, on which ffmpeg still writes out what it has.
    pub fn finish(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match wait_timeout(child, limit) {
            Some(s) => Some(s),
            None => {
                terminate(child, Duration::from_secs(5));
                None
            }
        }
    }

    /// Stops it at once, as a node that dies.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            kill_now(c);
        }
    }

    /// Decoded video frames of the recording (`ffprobe -count_frames`; an MPEG-TS file names
    /// its stream twice, under its program and alone: the first count is taken).
    pub fn frames(&self) -> u64 {
        let out = Command::new(require_tool("ffprobe"))
            .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
            .args(["-show_entries", "stream=nb_read_frames"])
            .args(["-of", "default=noprint_wrappers=1:nokey=1"])
            .arg(&self.out)
            .stdin(Stdio::null())
            .output();
        out.ok()
            .and_then(|o| {
                let text = String::from_utf8_lossy(&o.stdout).to_string();
                text.lines().next()?.trim().parse().ok()
            })
            .unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SrtListener {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if wait_timeout(&mut c, Duration::ZERO).is_none() {
                kill_now(&mut c);
            }
        }
    }
}

/// `ffmpeg -re` publishing `seconds` of generated H.264 (one keyframe per second) as MPEG-TS
/// to `srt://{to}?streamid={id}`, from the ephemeral port the kernel gives its socket.
pub struct SrtPublisher {
    child: Child,
    seconds: u32,
    log: PathBuf,
    _dir: TestDir,
}

impl SrtPublisher {
    pub fn start(to: SocketAddr, id: &str, seconds: u32) -> SrtPublisher {
        let dir = TestDir::new("srt-publisher");
        let log = dir.join("ffmpeg.log");
        let child = crate::ffmpeg::test_source(seconds)
            .args(["-f", "mpegts"])
            .arg(format!(
                "srt://{to}?streamid={id}&latency={LATENCY_US}&linger={LINGER_S}"
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("publisher log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start ffmpeg: {e}"));
        SrtPublisher {
            child,
            seconds,
            log,
            _dir: dir,
        }
    }

    /// Waits for the end of the publish (bounded: its length plus `slack`).
    pub fn wait(&mut self, slack: Duration) -> Option<ExitStatus> {
        let limit = Duration::from_secs(u64::from(self.seconds)) + slack;
        match wait_timeout(&mut self.child, limit) {
            Some(s) => Some(s),
            None => {
                kill_now(&mut self.child);
                None
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SrtPublisher {
    fn drop(&mut self) {
        if wait_timeout(&mut self.child, Duration::ZERO).is_none() {
            kill_now(&mut self.child);
        }
    }
}
