//! Kernel TLS: after a rustls handshake the session keys go to the kernel (`TCP_ULP "tls"`,
//! then `TLS_TX` and `TLS_RX`), and the socket carries plaintext for us while the kernel
//! encrypts and decrypts records. Probed once at start; when the kernel lacks it (no
//! `CONFIG_TLS`, or a cipher) sessions stay in userspace rustls.
//!
//! Non-data records: a plain read of a record that is not application data fails with EIO,
//! so reads use `recvmsg` and look at the `TLS_GET_RECORD_TYPE` control message. An alert
//! `close_notify` is the client's end of stream; any other alert, or a post-handshake
//! handshake message (KeyUpdate, renegotiation), ends the session (the server side is reset,
//! nothing decrypted with old keys goes on): kernels before 6.14 cannot take new keys on a
//! kTLS socket, and the 6.14 rekey is not used yet. Our own close_notify is sent with `sendmsg` and `TLS_SET_RECORD_TYPE`. The
//! server sends no TLS 1.3 tickets (`send_tls13_tickets = 0`), so none is ever pending when
//! the keys move to the kernel.

use std::cell::{Cell, RefCell};
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::OnceLock;

use compio::buf::{BufResult, IoBuf};
use compio::io::{AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use compio::runtime::fd::PollFd;
use rustls::crypto::cipher::{Iv, NONCE_LEN};
use rustls::server::ServerConnection;
use rustls::{CipherSuite, ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion};
use zeroize::Zeroize;

use super::TlsError;

const TLS_TX: libc::c_int = 1;
const TLS_RX: libc::c_int = 2;
const TLS_SET_RECORD_TYPE: libc::c_int = 1;
const TLS_GET_RECORD_TYPE: libc::c_int = 2;
const TLS_1_2_VERSION: u16 = 0x0303;
const TLS_1_3_VERSION: u16 = 0x0304;
const TLS_CIPHER_AES_GCM_128: u16 = 51;
const TLS_CIPHER_AES_GCM_256: u16 = 52;
const TLS_CIPHER_CHACHA20_POLY1305: u16 = 54;

const RECORD_ALERT: u8 = 21;
const RECORD_HANDSHAKE: u8 = 22;
const RECORD_DATA: u8 = 23;
const ALERT_CLOSE_NOTIFY: u8 = 0;

/// The ciphers the kernel offloads, by the kernel's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Cipher {
    pub const ALL: [Cipher; 3] = [
        Cipher::Aes128Gcm,
        Cipher::Aes256Gcm,
        Cipher::Chacha20Poly1305,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes128Gcm => "aes-128-gcm",
            Cipher::Aes256Gcm => "aes-256-gcm",
            Cipher::Chacha20Poly1305 => "chacha20-poly1305",
        }
    }

    /// The kernel cipher a rustls suite needs.
    pub fn of_suite(s: CipherSuite) -> Option<Cipher> {
        use CipherSuite::*;
        match s {
            TLS13_AES_128_GCM_SHA256
            | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => Some(Cipher::Aes128Gcm),
            TLS13_AES_256_GCM_SHA384
            | TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => Some(Cipher::Aes256Gcm),
            TLS13_CHACHA20_POLY1305_SHA256
            | TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => Some(Cipher::Chacha20Poly1305),
            _ => None,
        }
    }
}

/// What the running kernel can do, probed once.
#[derive(Debug, Clone)]
pub struct Support {
    /// `Err(why)` when the TLS ULP cannot be attached at all.
    pub ulp: Result<(), String>,
    pub ciphers: Vec<Cipher>,
}

impl Support {
    pub fn available(&self) -> bool {
        self.ulp.is_ok() && !self.ciphers.is_empty()
    }

    pub fn has(&self, c: Cipher) -> bool {
        self.ulp.is_ok() && self.ciphers.contains(&c)
    }

    /// For the start-up line.
    pub fn describe(&self) -> String {
        match &self.ulp {
            Err(why) => format!("kTLS unavailable ({why}): TLS in userspace rustls"),
            Ok(()) if self.ciphers.is_empty() => {
                "kTLS unavailable (no cipher accepted): TLS in userspace rustls".into()
            }
            // Said at start: rekeying a kTLS session (Linux 6.14 and later) is not done, so a
            // client's KeyUpdate ends the session (see the module's comment).
            Ok(()) => {
                let names: Vec<_> = self.ciphers.iter().map(|c| c.name()).collect();
                format!(
                    "kTLS available ({}; no rekey: a TLS 1.3 KeyUpdate ends a kTLS session)",
                    names.join(", ")
                )
            }
        }
    }
}

/// The probe result; the first call runs the probe (a few loopback socket pairs).
pub fn support() -> &'static Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    SUPPORT.get_or_init(probe)
}

fn probe() -> Support {
    let ulp = loopback_pair()
        .and_then(|(a, _b)| set_ulp(a.as_raw_fd()))
        .map_err(|e| format!("TCP_ULP \"tls\": {e}"));
    let ciphers = match ulp {
        Ok(()) => Cipher::ALL
            .into_iter()
            .filter(|c| probe_cipher(*c))
            .collect(),
        Err(_) => Vec::new(),
    };
    Support { ulp, ciphers }
}

/// TX and RX keys of `c` accepted on a fresh connected socket (the ULP needs an established
/// TCP socket, hence the pair).
fn probe_cipher(c: Cipher) -> bool {
    let Ok((a, _b)) = loopback_pair() else {
        return false;
    };
    let fd = a.as_raw_fd();
    let info = CryptoInfo::new(TLS_1_3_VERSION, c, &[7; 32], &[9; 12], 0);
    set_ulp(fd).is_ok() && info.set(fd, TLS_TX).is_ok() && info.set(fd, TLS_RX).is_ok()
}

fn loopback_pair() -> io::Result<(std::net::TcpStream, std::net::TcpStream)> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let a = std::net::TcpStream::connect(l.local_addr()?)?;
    let (b, _) = l.accept()?;
    Ok((a, b))
}

fn set_ulp(fd: RawFd) -> io::Result<()> {
    let name = b"tls";
    // SAFETY: `name` outlives the call and its length is passed; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// True when the kernel TLS ULP is attached to `fd` (what tests assert to know kTLS carried
/// a session).
pub fn is_engaged(fd: RawFd) -> bool {
    let mut name = [0u8; 16];
    let mut len = name.len() as libc::socklen_t;
    // SAFETY: the buffer and its length are valid for the kernel to write into.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_TCP,
            libc::TCP_ULP,
            name.as_mut_ptr().cast(),
            &mut len,
        )
    };
    r == 0 && name.starts_with(b"tls")
}

/// `struct tls12_crypto_info_*` of `linux/tls.h`: a header, then IV, key, salt and record
/// sequence number; the sizes differ per cipher, so one byte array holds the largest.
#[repr(C)]
struct CryptoInfo {
    version: u16,
    cipher: u16,
    rest: [u8; 60],
    len: usize,
}

impl CryptoInfo {
    /// `iv` is rustls' 12-byte IV: for AES-GCM the kernel wants its first 4 bytes as the salt
    /// and the last 8 as the IV; ChaCha20-Poly1305 takes all 12 as the IV and has no salt.
    /// Filled in place (no copy of the key left on the stack by a move), and wiped on drop.
    fn new(version: u16, c: Cipher, key: &[u8], iv: &[u8], seq: u64) -> CryptoInfo {
        let cipher = match c {
            Cipher::Aes128Gcm => TLS_CIPHER_AES_GCM_128,
            Cipher::Aes256Gcm => TLS_CIPHER_AES_GCM_256,
            Cipher::Chacha20Poly1305 => TLS_CIPHER_CHACHA20_POLY1305,
        };
        let mut info = CryptoInfo {
            version,
            cipher,
            rest: [0u8; 60],
            len: 4,
        };
        let (salt, iv) = match c {
            Cipher::Aes128Gcm | Cipher::Aes256Gcm => iv.split_at(4.min(iv.len())),
            Cipher::Chacha20Poly1305 => (&[][..], iv),
        };
        let key_len = match c {
            Cipher::Aes128Gcm => 16,
            Cipher::Aes256Gcm | Cipher::Chacha20Poly1305 => 32,
        };
        let parts: [&[u8]; 4] = [
            iv,
            key.get(..key_len).unwrap_or(key),
            salt,
            &seq.to_be_bytes(),
        ];
        let mut at = 0;
        for p in parts {
            if let Some(dst) = info.rest.get_mut(at..at + p.len()) {
                dst.copy_from_slice(p);
            }
            at += p.len();
        }
        info.len = 4 + at;
        info
    }

    fn set(&self, fd: RawFd, dir: libc::c_int) -> io::Result<()> {
        // SAFETY: the struct starts with the kernel's layout (two u16, then bytes) and `len`
        // covers only the header and the bytes written for this cipher.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_TLS,
                dir,
                (self as *const CryptoInfo).cast(),
                self.len as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The key, IV and salt stay in this process only while the kernel is being given them.
impl Drop for CryptoInfo {
    fn drop(&mut self) {
        // Volatile writes (zeroize): a plain store to memory about to be freed may be elided.
        self.rest.zeroize();
    }
}

/// Why the kernel did not take a session over.
pub enum Refused {
    /// Nothing was changed: the caller carries on in userspace with the connection.
    Fallback(Box<ServerConnection>, String),
    /// The keys left rustls but the kernel refused them: the session cannot go on.
    Broken(TlsError),
}

/// Moves the session of `conn` into the kernel. Call after the handshake with nothing queued
/// in rustls either way (the handshake reads record by record and flushes its writes).
pub fn install(tcp: &TcpStream, conn: ServerConnection) -> Result<KtlsStream, Refused> {
    let s = support();
    let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
    let Some(cipher) = suite.and_then(Cipher::of_suite) else {
        return Err(Refused::Fallback(
            Box::new(conn),
            format!("suite {suite:?}"),
        ));
    };
    if !s.has(cipher) {
        let why = format!("kernel lacks {}", cipher.name());
        return Err(Refused::Fallback(Box::new(conn), why));
    }
    let version = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => TLS_1_3_VERSION,
        Some(ProtocolVersion::TLSv1_2) => TLS_1_2_VERSION,
        v => return Err(Refused::Fallback(Box::new(conn), format!("version {v:?}"))),
    };
    let fd = tcp.as_raw_fd();
    if let Err(e) = set_ulp(fd) {
        return Err(Refused::Fallback(Box::new(conn), format!("TCP_ULP: {e}")));
    }
    // rustls' connection is consumed by the key extraction: what the handshake agreed on is
    // kept here.
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let mut secrets = conn
        .dangerous_extract_secrets()
        .map_err(|e| Refused::Broken(TlsError::Handshake(e)))?;
    let given = give_keys(fd, version, &secrets);
    wipe_ivs(&mut secrets);
    drop(secrets);
    given.map_err(|e| Refused::Broken(TlsError::Ktls(e.to_string())))?;
    let poll = tcp
        .to_poll_fd()
        .map_err(|e| Refused::Broken(TlsError::Io(e)))?;
    Ok(KtlsStream {
        tcp: tcp.clone(),
        poll,
        pending_eof: RefCell::new(false),
        truncated: Cell::new(false),
        alpn,
    })
}

/// Both directions' keys into the kernel; each copy made for it is wiped when dropped.
fn give_keys(fd: RawFd, version: u16, secrets: &ExtractedSecrets) -> io::Result<()> {
    let (tx_seq, tx) = &secrets.tx;
    let (rx_seq, rx) = &secrets.rx;
    info_of(version, tx, *tx_seq).set(fd, TLS_TX)?;
    info_of(version, rx, *rx_seq).set(fd, TLS_RX)
}

/// rustls wipes its `AeadKey`s when they drop, but not its `Iv`s (the static IVs, derived
/// from the traffic secrets as the keys are): they are overwritten in place before the
/// secrets go.
fn wipe_ivs(secrets: &mut ExtractedSecrets) {
    wipe_iv(&mut secrets.tx.1);
    wipe_iv(&mut secrets.rx.1);
}

fn wipe_iv(s: &mut ConnectionTrafficSecrets) {
    let iv = match s {
        ConnectionTrafficSecrets::Aes128Gcm { iv, .. }
        | ConnectionTrafficSecrets::Aes256Gcm { iv, .. }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { iv, .. } => iv,
        _ => return,
    };
    // SAFETY: `iv` is a valid, aligned and exclusive place holding an `Iv`, which has no drop
    // glue to skip. Volatile, so that the store is kept although the secrets are dropped
    // right after.
    unsafe { std::ptr::write_volatile(iv, Iv::new([0; NONCE_LEN])) };
}

fn info_of(version: u16, s: &ConnectionTrafficSecrets, seq: u64) -> CryptoInfo {
    match s {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
            CryptoInfo::new(version, Cipher::Aes128Gcm, key.as_ref(), iv.as_ref(), seq)
        }
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
            CryptoInfo::new(version, Cipher::Aes256Gcm, key.as_ref(), iv.as_ref(), seq)
        }
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => CryptoInfo::new(
            version,
            Cipher::Chacha20Poly1305,
            key.as_ref(),
            iv.as_ref(),
            seq,
        ),
        // Only the ciphers above pass `Cipher::of_suite`; this arm is never reached, and if
        // it were, the all-zero info is refused by the kernel and the session ends.
        _ => CryptoInfo::new(version, Cipher::Aes128Gcm, &[], &[], seq),
    }
}

/// A socket whose records the kernel encrypts and decrypts.
pub struct KtlsStream {
    tcp: TcpStream,
    poll: PollFd<socket2::Socket>,
    /// close_notify seen: later reads return EOF without touching the socket.
    pending_eof: RefCell<bool>,
    /// The client's FIN came without close_notify.
    truncated: Cell<bool>,
    /// The ALPN protocol of the handshake.
    alpn: Option<Vec<u8>>,
}

/// One `recvmsg` result.
enum Got {
    Data(usize),
    Control(u8),
}

impl KtlsStream {
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn alpn(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// Whether the client ended its stream with a bare FIN, without close_notify.
    pub fn truncated(&self) -> bool {
        self.truncated.get()
    }

    /// The socket's end of stream came before any close_notify (a splice that read 0, or a
    /// `recvmsg` that did).
    pub(super) fn fin_seen(&self) {
        if !*self.pending_eof.borrow() {
            super::note_truncated(&self.truncated);
        }
    }

    /// Plaintext into `dst`; `Ok(0)` at the client's close_notify or FIN (the latter also
    /// marks the session [`KtlsStream::truncated`]).
    pub async fn read_plain(&self, dst: &mut [u8]) -> io::Result<usize> {
        if *self.pending_eof.borrow() || <[u8]>::is_empty(dst) {
            return Ok(0);
        }
        loop {
            match recv_record(self.tcp.as_raw_fd(), dst) {
                // `dst` is not empty: 0 bytes is the socket's end of stream.
                Ok(Got::Data(0)) => {
                    self.fin_seen();
                    return Ok(0);
                }
                Ok(Got::Data(n)) => return Ok(n),
                Ok(Got::Control(RECORD_ALERT)) if dst.get(1) == Some(&ALERT_CLOSE_NOTIFY) => {
                    *self.pending_eof.borrow_mut() = true;
                    return Ok(0);
                }
                Ok(Got::Control(RECORD_ALERT)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "TLS alert from the client",
                    ))
                }
                Ok(Got::Control(RECORD_HANDSHAKE)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "post-handshake message (KeyUpdate or renegotiation) on a kTLS session",
                    ))
                }
                Ok(Got::Control(t)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected TLS record type {t}"),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.poll.read_ready().await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn write_plain(&self, data: &[u8]) -> io::Result<()> {
        let mut w = &self.tcp;
        let BufResult(res, _) = w.write_all(data.to_vec()).await;
        res
    }

    /// close_notify as an alert record, then FIN.
    pub async fn finish(&self) -> io::Result<()> {
        let fd = self.tcp.as_raw_fd();
        loop {
            match send_alert(fd, [1, ALERT_CLOSE_NOTIFY]) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.poll.write_ready().await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        crate::forward::shut_write(&self.tcp)
    }
}

/// Control-message space for one `TLS_GET_RECORD_TYPE` byte, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Cmsg([u8; 64]);

fn recv_record(fd: RawFd, dst: &mut [u8]) -> io::Result<Got> {
    let mut cmsg = Cmsg([0; 64]);
    let mut iov = libc::iovec {
        iov_base: dst.as_mut_ptr().cast(),
        iov_len: dst.len(),
    };
    // SAFETY: zeroed msghdr is valid; the pointers set below stay alive during the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.0.len();
    // SAFETY: `msg` describes buffers we own for the duration of the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    match record_type(&msg) {
        Some(t) if t != RECORD_DATA => Ok(Got::Control(t)),
        _ => Ok(Got::Data(n)),
    }
}

fn record_type(msg: &libc::msghdr) -> Option<u8> {
    // SAFETY: `msg` was filled by recvmsg; the CMSG macros walk within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_TLS && (*c).cmsg_type == TLS_GET_RECORD_TYPE {
                return Some(*libc::CMSG_DATA(c));
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

fn send_alert(fd: RawFd, alert: [u8; 2]) -> io::Result<()> {
    let mut cmsg = Cmsg([0; 64]);
    let mut body = alert;
    let mut iov = libc::iovec {
        iov_base: body.as_mut_ptr().cast(),
        iov_len: body.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(1) } as usize;
    // SAFETY: zeroed msghdr is valid; pointers below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: the control buffer is aligned and at least CMSG_SPACE(1) long.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() {
            return Err(io::Error::other("no room for the control message"));
        }
        (*c).cmsg_level = libc::SOL_TLS;
        (*c).cmsg_type = TLS_SET_RECORD_TYPE;
        (*c).cmsg_len = libc::CMSG_LEN(1) as usize;
        *libc::CMSG_DATA(c) = RECORD_ALERT;
    }
    // SAFETY: `msg` describes buffers we own for the duration of the call.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl AsyncWrite for &KtlsStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let mut w = &self.tcp;
        w.write(buf).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.finish().await
    }
}

// `size_of` keeps the layout assumption checked at compile time: header + largest cipher.
const _: () = assert!(size_of::<[u8; 60]>() >= 12 + 32 + 4 + 8);

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::AeadKey;
    use std::mem::ManuallyDrop;

    /// The bytes handed to the kernel are zero once the struct is dropped.
    #[test]
    fn crypto_info_is_wiped_on_drop() {
        let mut info = ManuallyDrop::new(CryptoInfo::new(
            TLS_1_3_VERSION,
            Cipher::Aes256Gcm,
            &[0xAA; 32],
            &[0xBB; 12],
            7,
        ));
        assert!(info.rest.contains(&0xAA) && info.rest.contains(&0xBB));
        // SAFETY: dropped once; the struct is plain bytes, its memory still ours (inside the
        // ManuallyDrop), and only read afterwards to see what the drop left there.
        unsafe { ManuallyDrop::drop(&mut info) };
        assert!(info.rest.iter().all(|&b| b == 0), "{:?}", info.rest);
    }

    /// The start-up line says what a KeyUpdate does to a kTLS session.
    #[test]
    fn the_start_line_warns_of_key_updates() {
        let s = Support {
            ulp: Ok(()),
            ciphers: vec![Cipher::Aes128Gcm],
        };
        let line = s.describe();
        assert!(line.starts_with("kTLS available (aes-128-gcm;"), "{line}");
        assert!(line.contains("KeyUpdate ends a kTLS session"), "{line}");
    }

    /// The IVs rustls hands over are wiped in place; its keys wipe themselves when dropped.
    #[test]
    fn extracted_ivs_are_wiped() {
        let mut s = ConnectionTrafficSecrets::Chacha20Poly1305 {
            key: AeadKey::from([0xCC; 32]),
            iv: Iv::new([0xDD; NONCE_LEN]),
        };
        wipe_iv(&mut s);
        let ConnectionTrafficSecrets::Chacha20Poly1305 { iv, key } = &s else {
            panic!("the variant is kept");
        };
        assert_eq!(iv.as_ref(), &[0u8; NONCE_LEN]);
        assert_eq!(key.as_ref(), &[0xCC; 32], "only the IV is ours to wipe");
    }
}
