//! Harness for the end-to-end tests: starts the proxy binary against real servers and clients
//! (nginx with the RTMP module, ffmpeg, a Rust byte-exact TCP backend), all on 127.0.0.0/8.
//!
//! * `proxy`: `Proxy::start(cfg)`, `proxy_bin()`; `E2E_PROXY=haproxy` runs HAProxy instead.
//! * `ports`: `free_port(ip)`, `loopback(n)`: ports safe across parallel tests.
//! * `nginx`: `Nginx::rtmp(..)`, `rtmp_pair()`, `/stat` parsing (`streams()`).
//! * `ffmpeg`: `ffmpeg_publish`, `ffmpeg_play(_count_frames)`, `rtmp_handshake`.
//! * `tcp`: `TcpServer`, `TcpClient`, `pump`, digests, half-close and reset helpers.
//! * `h2_raw`: `RawH2`, an HTTP/2 client driven frame by frame (Rapid Reset).
//! * `recorder`: `Recorder`, a backend that keeps each connection's bytes (PROXY headers).
//! * `dnsmasq`: `Dnsmasq`, a real DNS server for `resolvers` (hosts file and SRV records).
//! * `netns`: `Netns`, network namespaces a test makes and always removes.
//! * `srt`: `SrtListener`, `SrtPublisher`: ffmpeg speaking SRT (mpegts) as caller and listener.
//! * `util`: `TestDir`, `wait_until`, `require_tool`.
//!
//! Rules the helpers keep: every wait and every client is bounded (a stuck test fails, it does
//! not hang), bounds are generous and never an assertion about speed, and a missing tool is a
//! failure with the command that installs it, never a skip.

pub mod dnsmasq;
pub mod ffmpeg;
pub mod h2_raw;
pub mod http_client;
pub mod netns;
pub mod nginx;
pub mod nginx_conf;
pub mod nginx_http;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod recorder;
pub mod soak;
pub mod srt;
pub mod tcp;
pub mod tls;
pub mod util;

pub use ffmpeg::{
    ffmpeg_play, ffmpeg_play_count_frames, ffmpeg_publish, rtmp_handshake, Play, Publisher,
};
pub use nginx::{rtmp_pair, Nginx};
pub use nix::sys::signal::Signal;
pub use ports::{free_addr, free_port, loopback};
pub use proxy::{proxy_bin, Proxy};
pub use tcp::{pump, End, Reply, TcpClient, TcpServer};
pub use util::{hex, wait_until, TestDir};
