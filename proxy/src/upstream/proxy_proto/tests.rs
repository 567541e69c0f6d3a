use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use super::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn done(buf: &[u8]) -> Header {
    match parse(buf) {
        Ok(Parsed::Done(h)) => h,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

fn refused(buf: &[u8]) -> String {
    match parse(buf) {
        Err(e) => e.to_string(),
        other => panic!(
            "{:?} must be refused, got {other:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

/// Every strict prefix of a valid header is incomplete, never an error or a header.
fn assert_prefixes_incomplete(header: &[u8]) {
    for n in 0..header.len() {
        assert!(
            matches!(parse(&header[..n]), Ok(Parsed::Incomplete { .. })),
            "prefix of {n} bytes: {:?}",
            parse(&header[..n])
        );
    }
}

// The v2 header HAProxy 2.6 sent for a client 127.0.0.7:40000 connected to 127.0.0.5:19380,
// with `send-proxy-v2 proxy-v2-options crc32c` (captured on the wire).
const HAPROXY_V2_CRC: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x13\
    \x7f\x00\x00\x07\x7f\x00\x00\x05\x9c\x40\x4b\xb4\
    \x03\x00\x04\xc3\x98\x9b\xa6";
// Its health check with the same options: LOCAL, family UNSPEC, the CRC32C TLV only.
const HAPROXY_V2_LOCAL_CRC: &[u8] =
    b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x07\x03\x00\x04\xa9\xb8\x7e\x8f";

#[test]
fn v1_tcp4_tcp6_unknown() {
    let h = done(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /");
    assert_eq!(h.len, 47);
    assert_eq!(
        h.addrs,
        Some((sa("192.168.0.1:56324"), sa("192.168.0.11:443")))
    );
    let h = done(b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n");
    assert_eq!(h.addrs, Some((sa("[2001:db8::1]:65535"), sa("[::1]:0"))));
    let h = done(b"PROXY UNKNOWN\r\n\x16\x03\x01");
    assert_eq!((h.len, h.addrs), (15, None));
    // The rest of an UNKNOWN line is ignored, up to the longest line there may be.
    let long = format!(
        "PROXY UNKNOWN {0} {0} 65535 65535\r\n",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    );
    assert_eq!(long.len(), V1_MAX);
    assert_eq!(done(long.as_bytes()).len, V1_MAX);
}

#[test]
fn v1_malformed_lines_are_refused() {
    for bad in [
        &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY TCP4 ::1 ::1 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
        b"PROXY TCP4 \xff.2.3.4 5.6.7.8 1 2\r\n",
    ] {
        assert!(
            refused(bad).starts_with("Received an invalid PROXY protocol header"),
            "{:?}: {}",
            String::from_utf8_lossy(bad),
            refused(bad)
        );
    }
    assert_eq!(
        refused(b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"),
        "Received an unhandled protocol in the PROXY protocol header"
    );
}

/// `Some(want)` when `buf` is an incomplete header.
fn wants(buf: &[u8]) -> Option<usize> {
    match parse(buf) {
        Ok(Parsed::Incomplete { want }) => Some(want),
        _ => None,
    }
}

#[test]
fn truncated_headers_wait_for_more() {
    assert_prefixes_incomplete(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
    assert_prefixes_incomplete(HAPROXY_V2_CRC);
    // Before the v2 length is known, at most a v1 line's worth is worth looking at; after,
    // exactly the header.
    assert_eq!(wants(&HAPROXY_V2_CRC[..15]), Some(V1_MAX));
    assert_eq!(wants(&HAPROXY_V2_CRC[..20]), Some(HAPROXY_V2_CRC.len()));
    assert_eq!(wants(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"), Some(V1_MAX));
}

#[test]
fn oversized_headers_are_refused() {
    let no_crlf = format!("PROXY UNKNOWN {}", "a".repeat(V1_MAX));
    assert!(refused(no_crlf.as_bytes()).contains("no CRLF within 107 bytes"));
    // A CRLF one byte past the limit is too late.
    let late = format!("PROXY UNKNOWN {}\r\n", "a".repeat(V1_MAX - 15));
    assert_eq!(late.len(), V1_MAX + 1);
    assert!(refused(late.as_bytes()).contains("no CRLF within 107 bytes"));
    let mut big = v2(V2Command::Local, false);
    let len = u16::try_from(V2_MAX - 16 + 1).expect("fits");
    big[14..16].copy_from_slice(&len.to_be_bytes());
    assert!(refused(&big).contains("larger than 2048 bytes"));
    // The largest accepted: LOCAL with a TLV filling the rest.
    let mut most = v2(V2Command::Local, false);
    let value = V2_MAX - 16 - 3;
    most.extend_from_slice(&[0xe0, (value >> 8) as u8, value as u8]);
    most.resize(V2_MAX, 0);
    let len = u16::try_from(V2_MAX - 16).expect("fits");
    most[14..16].copy_from_slice(&len.to_be_bytes());
    assert_eq!(done(&most).len, V2_MAX);
}

#[test]
fn bad_signatures_are_refused() {
    let not = "Received something which does not look like a PROXY protocol header";
    assert_eq!(refused(b"GET / HTTP/1.1\r\n"), not);
    assert_eq!(refused(b"\x16\x03\x01\x02\x00"), not);
    assert_eq!(refused(b"PROXYTCP4"), not);
    assert_eq!(refused(b"proxy TCP4"), not);
    assert_eq!(refused(b"\r\n\r\n\0\r\nQUIX\n"), not);
    // A v2 signature with another version.
    let mut v3 = HAPROXY_V2_CRC.to_vec();
    v3[12] = 0x31;
    assert!(refused(&v3).contains("version other than 2"));
    let mut cmd = HAPROXY_V2_CRC.to_vec();
    cmd[12] = 0x22;
    assert!(refused(&cmd).contains("command other than LOCAL or PROXY"));
}

#[test]
fn v2_proxy_and_local() {
    let h = done(HAPROXY_V2_CRC);
    assert_eq!(h.len, HAPROXY_V2_CRC.len());
    assert_eq!(
        h.addrs,
        Some((sa("127.0.0.7:40000"), sa("127.0.0.5:19380")))
    );
    let h = done(HAPROXY_V2_LOCAL_CRC);
    assert_eq!((h.len, h.addrs), (HAPROXY_V2_LOCAL_CRC.len(), None));
    let six = v2(
        V2Command::Proxy(sa("[2001:db8::7]:1"), sa("[2001:db8::5]:65535")),
        false,
    );
    let mut with_data = six.clone();
    with_data.extend_from_slice(b"GET /");
    let h = done(&with_data);
    assert_eq!(h.len, six.len());
    assert_eq!(
        h.addrs,
        Some((sa("[2001:db8::7]:1"), sa("[2001:db8::5]:65535")))
    );
}

#[test]
fn v2_other_families_keep_the_real_addresses() {
    // PROXY over UDP/IPv4 (0x12), UNSPEC (0x00) and unix stream (0x31): valid, not TCP.
    for (family, block) in [(0x12u8, 12usize), (0x00, 0), (0x31, 216)] {
        let mut h = V2_HEAD.to_vec();
        h.extend_from_slice(&[0x21, family, 0, block as u8]);
        h[15] = block as u8;
        h[14] = (block >> 8) as u8;
        h.resize(16 + block, 0);
        assert_eq!(done(&h).addrs, None, "family {family:#x}");
    }
}

const V2_HEAD: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

#[test]
fn v2_bad_families_and_blocks_are_refused() {
    let header = |fam: u8, len: u8| {
        let mut h = V2_HEAD.to_vec();
        h.extend_from_slice(&[0x21, fam, 0, len]);
        h.resize(16 + usize::from(len), 0);
        h
    };
    assert!(refused(&header(0x41, 12)).contains("unknown address family"));
    assert!(refused(&header(0x13, 12)).contains("unknown transport"));
    assert!(refused(&header(0x11, 11)).contains("address block longer than the header"));
    assert!(refused(&header(0x21, 12)).contains("address block longer than the header"));
    // A TLV running past the header, and one cut short.
    let mut h = header(0x11, 12 + 3);
    h[16 + 12..].copy_from_slice(&[0x01, 0x00, 0x05]);
    assert!(refused(&h).contains("TLV longer than the header"));
    let mut h = header(0x11, 12 + 2);
    h[16 + 12..].copy_from_slice(&[0x01, 0x00]);
    assert!(refused(&h).contains("TLV cut short"));
}

#[test]
fn v2_checksums_are_verified() {
    let mut bad = HAPROXY_V2_CRC.to_vec();
    bad[16] = 10; // another source address under the same checksum
    assert!(refused(&bad).contains("CRC32C mismatch"));
    let mut short = HAPROXY_V2_CRC.to_vec();
    short.pop();
    short[15] -= 1;
    short[30] = 3; // the TLV says 3 bytes
    assert!(refused(&short).contains("CRC32C TLV that is not 4 bytes"));
}

#[test]
fn v1_written_byte_exact() {
    assert_eq!(
        v1(sa("127.0.0.5:40000"), sa("127.0.0.1:8080")),
        b"PROXY TCP4 127.0.0.5 127.0.0.1 40000 8080\r\n"
    );
    assert_eq!(
        v1(sa("[2001:db8::1]:1"), sa("[::1]:65535")),
        b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n"
    );
    // Mixed families: the IPv4 end as IPv4-mapped IPv6.
    assert_eq!(
        v1(sa("10.0.0.1:5"), sa("[::1]:6")),
        b"PROXY TCP6 ::ffff:10.0.0.1 ::1 5 6\r\n"
    );
}

#[test]
fn v2_written_byte_exact() {
    let four = v2(
        V2Command::Proxy(sa("127.0.0.7:40000"), sa("127.0.0.5:19380")),
        false,
    );
    let mut expected = V2_HEAD.to_vec();
    expected.extend_from_slice(b"\x21\x11\x00\x0c\x7f\0\0\x07\x7f\0\0\x05\x9c\x40\x4b\xb4");
    assert_eq!(four, expected);
    let six = v2(
        V2Command::Proxy(sa("[2001:db8::7]:258"), sa("[::1]:443")),
        false,
    );
    let mut expected = V2_HEAD.to_vec();
    expected.extend_from_slice(&[0x21, 0x21, 0x00, 36]);
    expected.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    expected.extend_from_slice(&[0x01, 0x02, 0x01, 0xbb]);
    assert_eq!(six, expected);
    // What HAProxy 2.6 wrote, checksum included.
    let with_crc = v2(
        V2Command::Proxy(sa("127.0.0.7:40000"), sa("127.0.0.5:19380")),
        true,
    );
    assert_eq!(with_crc, HAPROXY_V2_CRC);
    assert_eq!(v2(V2Command::Local, true), HAPROXY_V2_LOCAL_CRC);
    assert_eq!(
        v2(V2Command::Local, false),
        b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00"
    );
}

#[test]
fn server_and_check_headers_follow_the_params() {
    let origin = Origin {
        src: sa("127.0.0.5:40000"),
        dst: sa("127.0.0.1:80"),
    };
    let mut p = crate::config::ServerParams::default();
    assert_eq!(for_server(&p, &origin), None);
    assert_eq!(for_check(&p, origin.dst, origin.src), None);
    p.send_proxy = true;
    assert_eq!(for_server(&p, &origin), Some(v1(origin.src, origin.dst)));
    // Checks name their own two ends.
    assert_eq!(
        for_check(&p, sa("127.0.0.1:5000"), sa("127.0.0.2:80")),
        Some(b"PROXY TCP4 127.0.0.1 127.0.0.2 5000 80\r\n".to_vec())
    );
    p.send_proxy_v2 = true;
    p.proxy_v2_crc32c = true;
    let out = for_server(&p, &origin).expect("v2");
    assert_eq!(
        done(&out).addrs,
        Some((origin.src, origin.dst)),
        "the written header reads back"
    );
    assert_eq!(
        for_check(&p, origin.dst, origin.src),
        Some(HAPROXY_V2_LOCAL_CRC.to_vec())
    );
}

/// A connected pair: the accepted side as a compio stream, the client as a std one.
fn pair() -> (compio::net::TcpStream, std::net::TcpStream, Origin) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (accepted, peer) = l.accept().expect("accept");
    let real = Origin {
        src: peer,
        dst: accepted.local_addr().expect("local"),
    };
    let stream = compio::net::TcpStream::from_std(accepted).expect("compio stream");
    (stream, client, real)
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    compio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(f)
}

/// The bytes after the header stay in the socket: a later read gets them whole, however the
/// header arrived (with the data in one segment, or trickled in pieces).
#[test]
fn accept_takes_exactly_the_header() {
    run(async {
        let (stream, mut client, real) = pair();
        client
            .write_all(b"PROXY TCP4 10.1.2.3 10.9.9.9 1234 443\r\nhello")
            .expect("write");
        let got = accept(&stream, real, Duration::from_secs(5)).await;
        assert_eq!(
            got.map_err(|e| e.to_string()),
            Ok(Origin {
                src: sa("10.1.2.3:1234"),
                dst: sa("10.9.9.9:443")
            })
        );
        assert_eq!(read_some(&stream).await, b"hello");

        let (stream, client, real) = pair();
        let header = v2(V2Command::Local, true);
        let writer = std::thread::spawn(move || {
            let mut client = client;
            for piece in header.chunks(5) {
                client.write_all(piece).expect("piece");
                std::thread::sleep(Duration::from_millis(30));
            }
            client.write_all(b"after").expect("data");
            client
        });
        let got = accept(&stream, real, Duration::from_secs(5)).await;
        assert_eq!(
            got.map_err(|e| e.to_string()),
            Ok(real),
            "LOCAL keeps the peer"
        );
        let _client = writer.join().expect("writer");
        assert_eq!(read_some(&stream).await, b"after");
    });
}

async fn read_some(stream: &compio::net::TcpStream) -> Vec<u8> {
    use compio::io::AsyncRead;
    let mut r = stream;
    let BufResult(n, buf) = r.read(Vec::with_capacity(64)).await;
    n.expect("read");
    buf
}

use compio::buf::BufResult;

#[test]
fn accept_errors() {
    run(async {
        let (stream, mut client, real) = pair();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
        let e = accept(&stream, real, Duration::from_secs(5)).await;
        assert!(matches!(e, Err(ProxyHeaderError::NotHeader)), "{e:?}");

        let (stream, client, real) = pair();
        drop(client);
        let e = accept(&stream, real, Duration::from_secs(5)).await;
        assert!(matches!(e, Err(ProxyHeaderError::Closed)), "{e:?}");

        let (stream, mut client, real) = pair();
        client.write_all(b"PROXY TCP4 1.2").expect("write");
        client
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        let e = accept(&stream, real, Duration::from_secs(5)).await;
        assert!(matches!(e, Err(ProxyHeaderError::Truncated)), "{e:?}");

        let (stream, mut client, real) = pair();
        client.write_all(b"PROXY TCP4 1.2").expect("write");
        let e = accept(&stream, real, Duration::from_millis(100)).await;
        assert!(matches!(e, Err(ProxyHeaderError::Timeout)), "{e:?}");
        let mut rest = [0u8; 1];
        client.set_nonblocking(true).expect("nonblocking");
        assert!(client.read(&mut rest).is_err(), "nothing was answered");
    });
}
