//! ffmpeg as an RTMP publisher and player, and a bare RTMP handshake probe.
//!
//! Every client is bounded: ffmpeg's own `-rw_timeout` (a player of a stream nobody publishes
//! otherwise waits forever) and a wall-clock limit after which the harness kills it.

use crate::process::{kill_now, wait_timeout};
use crate::util::{require_tool, tail};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Frame rate of the generated test video; with `-g 25` one keyframe per second.
pub const FPS: u32 = 25;

/// Keeps the last 64 KiB of a child's stderr in memory.
fn collect_stderr(stderr: ChildStderr) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let log = Arc::new(Mutex::new(String::new()));
    let l = log.clone();
    let t = std::thread::spawn(move || {
        let mut r = BufReader::new(stderr);
        let mut line = String::new();
        while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
            let mut g = l.lock().unwrap_or_else(|e| e.into_inner());
            g.push_str(&line);
            if g.len() > 128 * 1024 {
                let cut = g.len() - 64 * 1024;
                let cut = (cut..g.len()).find(|&i| g.is_char_boundary(i)).unwrap_or(0);
                g.drain(..cut);
            }
            line.clear();
        }
    });
    (log, t)
}

/// A running `ffmpeg` publishing generated video (testsrc, H.264) to an RTMP URL.
/// Killed on drop.
pub struct Publisher {
    child: Child,
    url: String,
    seconds: u32,
    log: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
}

/// ffmpeg encoding `seconds` of 320x240 test video at [`FPS`], paced in real time (`-re`),
/// with a keyframe every second: the output format and URL are the caller's.
pub fn test_source(seconds: u32) -> Command {
    let mut c = Command::new(require_tool("ffmpeg"));
    c.args([
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "warning",
    ])
    .args(["-re", "-f", "lavfi", "-i"])
    .arg(format!("testsrc=size=320x240:rate={FPS}"))
    .args(["-t", &seconds.to_string()])
    .args([
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
    ])
    .args(["-g", &FPS.to_string(), "-pix_fmt", "yuv420p"]);
    c
}

/// Starts publishing `seconds` of 320x240 25 fps test video to `url`, paced in real time
/// (`-re`), with a keyframe every second (`-g 25 -tune zerolatency`).
pub fn ffmpeg_publish(url: &str, seconds: u32) -> Publisher {
    let mut child = test_source(seconds)
        // Microseconds; bounds a write that blocks because nobody reads.
        .args(["-rw_timeout", "10000000"])
        .args(["-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start ffmpeg: {e}"));
    let (log, _) = collect_stderr(child.stderr.take().expect("piped stderr"));
    Publisher {
        child,
        url: url.to_string(),
        seconds,
        log,
        status: None,
    }
}

impl Publisher {
    pub fn url(&self) -> &str {
        &self.url
    }

    /// ffmpeg's stderr so far (warnings and errors only).
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `None` while it still publishes.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits for the publish to end: at most its duration plus `slack`, then kills it and
    /// panics.
    pub fn wait(&mut self, slack: Duration) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let limit = Duration::from_secs(self.seconds as u64) + slack;
        match wait_timeout(&mut self.child, limit) {
            Some(s) => {
                self.status = Some(s);
                s
            }
            None => {
                self.status = Some(kill_now(&mut self.child));
                panic!(
                    "ffmpeg publishing to {} was still running after {limit:?}; log:\n{}",
                    self.url,
                    tail(&self.log(), 4000)
                );
            }
        }
    }

    /// Waits at most `limit` for the publish to end; `None` if it still runs.
    pub fn wait_at_most(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = wait_timeout(&mut self.child, limit);
        }
        self.status
    }

    /// Waits for the end and panics unless ffmpeg exited with status 0.
    pub fn wait_success(&mut self, slack: Duration) {
        let s = self.wait(slack);
        assert!(
            s.success(),
            "ffmpeg publishing to {} failed ({s}); log:\n{}",
            self.url,
            tail(&self.log(), 4000)
        );
    }

    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            self.status = Some(kill_now(&mut self.child));
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a bounded play gave.
#[derive(Debug, Clone)]
pub struct Play {
    /// Decoded video frames (the last `frame=` of `-progress`).
    pub frames: u64,
    /// ffmpeg's exit status; `None` if the harness had to kill it.
    pub status: Option<ExitStatus>,
    /// ffmpeg's stderr (errors only).
    pub log: String,
}

/// Plays `url` and decodes `seconds` of its video (stream time), returning the number of
/// decoded frames. Bounded: `-rw_timeout` 5 s of silence, and a kill after `seconds + 30 s`.
pub fn ffmpeg_play(url: &str, seconds: u32) -> Play {
    let mut child = Command::new(require_tool("ffmpeg"))
        .args(["-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"])
        // A live FLV without audio makes ffmpeg probe for 5 s by default, waiting to learn
        // whether audio comes; 1 s is plenty for a stream that has a keyframe every second.
        .args(["-analyzeduration", "1000000"])
        .args(["-rw_timeout", "5000000"])
        .args(["-i", url])
        .args(["-t", &seconds.to_string()])
        .args(["-map", "0:v:0", "-fps_mode", "passthrough"])
        .args(["-f", "null", "-", "-progress", "pipe:1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start ffmpeg: {e}"));
    let (log, log_thread) = collect_stderr(child.stderr.take().expect("piped stderr"));
    let stdout = child.stdout.take().expect("piped stdout");
    let frames = Arc::new(Mutex::new(0u64));
    let f = frames.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(v) = line.strip_prefix("frame=") {
                if let Ok(n) = v.trim().parse::<u64>() {
                    *f.lock().unwrap_or_else(|e| e.into_inner()) = n;
                }
            }
        }
    });
    let limit = Duration::from_secs(seconds as u64 + 30);
    let status = wait_timeout(&mut child, limit);
    if status.is_none() {
        kill_now(&mut child);
    }
    let _ = reader.join();
    let _ = log_thread.join();
    let frames = *frames.lock().unwrap_or_else(|e| e.into_inner());
    let log = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Play {
        frames,
        status,
        log,
    }
}

/// `ffmpeg_play(url, seconds).frames`.
pub fn ffmpeg_play_count_frames(url: &str, seconds: u32) -> u64 {
    ffmpeg_play(url, seconds).frames
}

/// Video frames in a media file or URL, counted by decoding (`ffprobe -count_frames`).
pub fn ffprobe_count_frames(input: &str) -> std::io::Result<u64> {
    let out = Command::new(require_tool("ffprobe"))
        .args([
            "-v",
            "error",
            "-rw_timeout",
            "5000000",
            "-select_streams",
            "v:0",
        ])
        .args(["-count_frames", "-show_entries", "stream=nb_read_frames"])
        .args(["-of", "default=noprint_wrappers=1:nokey=1", input])
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().map_err(|_| {
        std::io::Error::other(format!(
            "ffprobe said {text:?} / {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    })
}

/// An RTMP handshake (C0+C1 → S0+S1) with whatever answers at `addr`: proves that a
/// connection reaches a live RTMP server (through the proxy, that the proxy connected it to a
/// backend that is up). Bounded by `limit` for connect and read.
pub fn rtmp_handshake(addr: SocketAddr, limit: Duration) -> std::io::Result<()> {
    rtmp_handshake_open(addr, limit).map(drop)
}

/// [`rtmp_handshake`] that hands back the connection, still open: the caller can see where
/// it went (its local address names it in other namespaces' socket tables) before closing it.
pub fn rtmp_handshake_open(addr: SocketAddr, limit: Duration) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, limit)?;
    s.set_read_timeout(Some(limit))?;
    s.set_write_timeout(Some(limit))?;
    // C0: version 3. C1: time, zero, 1528 bytes of anything (a "simple" handshake).
    let mut c0c1 = vec![0u8; 1 + 1536];
    c0c1[0] = 3;
    for (i, b) in c0c1[9..].iter_mut().enumerate() {
        *b = (i * 31 % 251) as u8;
    }
    s.write_all(&c0c1)?;
    let mut s0s1 = vec![0u8; 1 + 1536];
    s.read_exact(&mut s0s1)?;
    if s0s1[0] != 3 {
        return Err(std::io::Error::other(format!(
            "RTMP server answered version {}",
            s0s1[0]
        )));
    }
    Ok(s)
}
