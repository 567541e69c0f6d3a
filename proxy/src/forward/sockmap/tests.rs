//! The engine against this kernel, in process: what `cargo xtask vmtest` runs on Debian's 6.1
//! and 6.12 kernels (filter `forward::sockmap`) as well as here: the probe (both programs load
//! and attach, or the reason and the copy fallback), one slow flow on real loopback sockets
//! that parks and must arrive whole, and one flow with a segment overlapping received bytes.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::config::EngineChoice;
use crate::forward::{choose, Engine, FlowEnd, FlowParams, FlowStats};

/// Bytes each way: enough for a slow reader to push its direction over a 64 KiB budget many
/// times, small enough for a TCG virtual machine.
const LEN: usize = 8 << 20;

/// The bytes a side sends: position-dependent, so a lost, repeated or reordered chunk shows.
fn stream(seed: u8) -> Vec<u8> {
    (0..LEN)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[i % 4] ^ seed)
        .collect()
}

/// Sends `data` in 256 KiB bursts with pauses (so the proxy's source runs dry and a parked
/// direction can rejoin the verdict), then the FIN, while reading the other way in 64 KiB
/// bursts with pauses (so the proxy finds the destination full and parks). Returns what it
/// read.
fn end(s: TcpStream, data: Vec<u8>) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(120))).ok();
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        for chunk in data.chunks(256 << 10) {
            w.write_all(chunk).expect("write");
            std::thread::sleep(Duration::from_millis(2));
        }
        w.shutdown(Shutdown::Write).expect("shutdown");
    });
    let mut got = Vec::with_capacity(LEN);
    let mut r = s;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read after {} bytes: {e}", got.len()),
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    writer.join().expect("writer");
    got
}

/// The proxy's side of one flow, on its own thread: accepts one client on `front`, connects to
/// `back_addr` and forwards through `engine` until the flow ends.
fn proxy_one(
    front: TcpListener,
    back_addr: SocketAddr,
    engine: Engine,
) -> std::thread::JoinHandle<FlowStats> {
    std::thread::spawn(move || {
        let rt = compio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let front = compio::net::TcpListener::from_std(front).expect("listener");
            let (client, _) = front.accept().await.expect("accept");
            let server = compio::net::TcpStream::connect(back_addr)
                .await
                .expect("connect");
            let mut p = FlowParams::default();
            p.limits.idle = Some(Duration::from_secs(60));
            crate::forward::forward(engine, client, server, p).await
        })
    })
}

/// Runs one flow through `engine` between a client and a backend on loopback.
fn one_flow(engine: Engine) -> (FlowStats, Vec<u8>, Vec<u8>) {
    let front = TcpListener::bind("127.0.0.1:0").expect("bind");
    let back = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (front_addr, back_addr): (SocketAddr, SocketAddr) = (
        front.local_addr().expect("addr"),
        back.local_addr().expect("addr"),
    );
    let proxy = proxy_one(front, back_addr, engine);
    let backend = std::thread::spawn(move || {
        let (s, _) = back.accept().expect("backend accept");
        end(s, stream(2))
    });
    let client = end(TcpStream::connect(front_addr).expect("connect"), stream(1));
    let at_backend = backend.join().expect("backend");
    (proxy.join().expect("proxy"), client, at_backend)
}

#[test]
fn a_slow_flow_parks_and_arrives_whole() {
    require_loaded("this test loads a BPF program and must run as root (CI and vmtest do)");
    super::set_budget(64 << 10);
    let parks_before = parks();
    let (stats, at_client, at_backend) = one_flow(Engine::Sockmap);
    assert_eq!(stats.end, FlowEnd::Closed);
    assert_eq!((stats.bytes_up, stats.bytes_down), (LEN as u64, LEN as u64));
    assert!(
        at_backend == stream(1),
        "upload differs ({} bytes)",
        at_backend.len()
    );
    assert!(
        at_client == stream(2),
        "download differs ({} bytes)",
        at_client.len()
    );
    let parked = parks() - parks_before;
    eprintln!("sockmap: the flow was parked {parked} times");
    assert!(parked > 0, "a 64 KiB budget behind a slow reader must park");
    let status = super::status().expect("loaded");
    assert_eq!(status.fallbacks, 0, "the flow ran on sockmap, not on copy");
}

/// The probe on this kernel: the verdict and the park walk load, verify and attach (as root,
/// which CI and vmtest are). Where the kernel lacks what they need and the run says so
/// (`PROXY_SOCKMAP_MAY_LACK=1`, vmtest), the probe must name the reason and the fallback must
/// hold: `auto` picks copy and a forced sockmap is refused with that reason.
#[test]
fn probe_loads_or_reports_and_falls_back() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test loads a BPF program and must run as root (CI and vmtest do)"
    );
    let may_lack = std::env::var_os("PROXY_SOCKMAP_MAY_LACK").is_some();
    match super::probe() {
        Ok(()) => {
            eprintln!("sockmap probe on Linux {}: loaded", kernel_release());
            assert!(super::status().is_some(), "loaded");
        }
        Err(why) if may_lack => {
            eprintln!("sockmap probe on Linux {}: {why}", kernel_release());
            assert!(!why.is_empty(), "the probe names its reason");
            assert_eq!(choose(EngineChoice::Auto), Ok(Engine::Copy));
            let refused = choose(EngineChoice::Sockmap).expect_err("forced sockmap");
            assert!(refused.contains(why.as_str()), "{refused}");
        }
        Err(why) => panic!("the sockmap program does not load here: {why}"),
    }
    if super::probe().is_ok() {
        assert_eq!(choose(EngineChoice::Sockmap), Ok(Engine::Sockmap));
    }
}

/// A segment that starts inside bytes the socket already took (a retransmission cut at other
/// boundaries than the original), sent by hand over a raw socket that saw the handshake: the
/// verdict must cut the 1 500 bytes of overlap, and every byte must arrive once. Runs in the VM
/// matrix too, since the cut leans on the kernel's verdict path (`tcp_read_skb`,
/// `tcp_eat_skb`) and its struct layout (read from BTF): see LIFECYCLE.md, "Overlapping
/// packets".
///
/// Then the same with 60 000 bytes of overlap: fifteen cuts of the verdict's bounded loop
/// after one linear pull, or none where the kernel's receive queue collapsed the packet
/// first (see `rawtcp::Overlap::may_collapse`); the stream must arrive whole either way. One
/// test for both, since the trim counter is the program's, shared by the tests running
/// beside each other.
#[test]
fn an_overlapping_segment_is_trimmed() {
    overlap_is_trimmed(rawtcp::SMALL);
    overlap_is_trimmed(rawtcp::LARGE);
}

fn overlap_is_trimmed(shape: rawtcp::Overlap) {
    require_loaded("this test loads a BPF program and sends raw packets: it must run as root");
    let front = TcpListener::bind("127.0.0.1:0").expect("bind");
    let back = TcpListener::bind("127.0.0.1:0").expect("bind");
    let front_addr = front.local_addr().expect("addr");
    let proxy = proxy_one(front, back.local_addr().expect("addr"), Engine::Sockmap);
    let trimmed_before = trimmed();
    let x = rawtcp::overlapping_retransmission(front_addr, back, shape);
    let stats = proxy.join().expect("proxy");
    assert_eq!(x.received.len(), x.sent.len(), "bytes at the backend");
    assert!(
        x.received == x.sent,
        "the backend's bytes differ from the stream"
    );
    assert_eq!(stats.bytes_up, shape.stream as u64);
    let cut = trimmed() - trimmed_before;
    assert!(
        cut == shape.overlap as u64 || (shape.may_collapse() && cut == 0),
        "bytes cut by the verdict: {cut}, want {} (the stream itself arrived whole)",
        shape.overlap
    );
}

/// Loading the program needs root: as root (CI, vmtest) the probe must succeed; otherwise the
/// test fails loudly rather than passing without having tried.
fn require_loaded(why: &str) {
    assert!(nix::unistd::geteuid().is_root(), "{why}");
    super::probe().expect("the sockmap program loads");
}

fn trimmed() -> u64 {
    super::kernel().map_or(0, |k| k.trimmed.load(Ordering::Relaxed))
}

fn parks() -> u64 {
    super::kernel().map_or(0, |k| k.parks.load(Ordering::Relaxed))
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}
