//! Struct member offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`), for the
//! verdict's reads of kernel memory that SK_SKB programs get no field for: a packet's TCP
//! sequence number and its socket's `copied_seq` (see LIFECYCLE.md, "Overlapping packets").
//! aya parses BTF but keeps its type lookup private, and the program cannot use CO-RE, so
//! this walks the type section itself: the format is a flat list of fixed-size records.

use std::fmt;

/// Where the verdict finds what it reads in kernel memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// `struct sk_buff`'s `cb` (whose first word is `TCP_SKB_CB(skb)->seq`).
    pub skb_cb: u32,
    /// `struct sk_buff`'s `sk`.
    pub skb_sk: u32,
    /// `struct tcp_sock`'s `copied_seq`.
    pub tcp_copied_seq: u32,
}

/// What was missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfError(String);

impl fmt::Display for BtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Layout {
    /// Reads the running kernel's BTF.
    pub fn of_running_kernel() -> Result<Layout, BtfError> {
        let data = std::fs::read("/sys/kernel/btf/vmlinux")
            .map_err(|e| BtfError(format!("/sys/kernel/btf/vmlinux: {e}")))?;
        Layout::from_btf(&data)
    }

    pub fn from_btf(data: &[u8]) -> Result<Layout, BtfError> {
        let btf = Btf::parse(data)?;
        Ok(Layout {
            skb_cb: btf.member_offset("sk_buff", "cb")?,
            skb_sk: btf.member_offset("sk_buff", "sk")?,
            tcp_copied_seq: btf.member_offset("tcp_sock", "copied_seq")?,
        })
    }
}

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

/// The type and string sections of a BTF blob, with where each type record starts.
struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Offset in `types` of type id `i + 1` (id 0 is `void`).
    starts: Vec<usize>,
}

/// One type record's fixed part.
struct Record {
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    start: usize,
}

fn word(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| BtfError(format!("BTF truncated at byte {at}")))
}

fn section(data: &[u8], hdr_len: usize, off: u32, len: u32) -> Result<&[u8], BtfError> {
    let start = hdr_len + off as usize;
    data.get(start..start + len as usize)
        .ok_or_else(|| BtfError("BTF section outside the blob".into()))
}

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8]) -> Result<Btf<'a>, BtfError> {
        let magic = data.get(0..2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
        if magic != Some(MAGIC) {
            return Err(BtfError(
                "not BTF (or not in this machine's byte order)".into(),
            ));
        }
        let hdr_len = word(data, 4)? as usize;
        let types = section(data, hdr_len, word(data, 8)?, word(data, 12)?)?;
        let strings = section(data, hdr_len, word(data, 16)?, word(data, 20)?)?;
        let mut btf = Btf {
            types,
            strings,
            starts: Vec::new(),
        };
        let mut at = 0;
        while at < types.len() {
            btf.starts.push(at);
            let r = btf.record(at)?;
            at = r.start + 12 + trailer_len(&r)?;
        }
        Ok(btf)
    }

    fn record(&self, start: usize) -> Result<Record, BtfError> {
        let info = word(self.types, start + 4)?;
        Ok(Record {
            name_off: word(self.types, start)?,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            start,
        })
    }

    fn name(&self, off: u32) -> &str {
        let tail = self.strings.get(off as usize..).unwrap_or_default();
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).unwrap_or_default()
    }

    fn by_id(&self, id: u32) -> Result<Record, BtfError> {
        let start = id
            .checked_sub(1)
            .and_then(|i| self.starts.get(i as usize))
            .ok_or_else(|| BtfError(format!("BTF type id {id} out of range")))?;
        self.record(*start)
    }

    /// Byte offset of `member` in the struct named `strukt`, looking into anonymous
    /// structs and unions (where `sk_buff` keeps `sk`).
    fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let ty = self
            .starts
            .iter()
            .map(|&s| self.record(s))
            .find(|r| {
                r.as_ref()
                    .is_ok_and(|r| r.kind == KIND_STRUCT && self.name(r.name_off) == strukt)
            })
            .ok_or_else(|| BtfError(format!("the kernel's BTF has no struct {strukt}")))??;
        self.find_member(&ty, member, 0)?
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError(format!("struct {strukt} has no member {member}")))
    }

    /// Bit offset of `member` in the struct or union `ty`, `base` bits in.
    fn find_member(&self, ty: &Record, member: &str, base: u32) -> Result<Option<u32>, BtfError> {
        for i in 0..ty.vlen {
            let at = ty.start + 12 + 12 * i;
            let (name_off, type_id, raw) = (
                word(self.types, at)?,
                word(self.types, at + 4)?,
                word(self.types, at + 8)?,
            );
            // With the kind flag the low 24 bits are the offset, the high 8 a bitfield size.
            let bits = base + if ty.kind_flag { raw & 0xff_ffff } else { raw };
            if name_off != 0 {
                if self.name(name_off) == member {
                    return Ok(Some(bits));
                }
                continue;
            }
            let inner = self.by_id(type_id)?;
            if matches!(inner.kind, KIND_STRUCT | KIND_UNION) {
                if let Some(found) = self.find_member(&inner, member, bits)? {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }
}

/// Bytes after a record's 12-byte fixed part, by kind (linux/btf.h).
fn trailer_len(r: &Record) -> Result<usize, BtfError> {
    Ok(match r.kind {
        // INT, VAR, DECL_TAG: one word.
        1 | 14 | 17 => 4,
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG.
        2 | 7..=12 | 16 | 18 => 0,
        // ARRAY: elem type, index type, count.
        3 => 12,
        // STRUCT, UNION, DATASEC (12 bytes an entry), ENUM, FUNC_PROTO (8), ENUM64 (12).
        4 | 5 | 15 | 19 => 12 * r.vlen,
        6 | 13 => 8 * r.vlen,
        k => return Err(BtfError(format!("unknown BTF kind {k}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob with `struct s { int a; union { long b; int c; }; int d; }` (a at 0, the union
    /// at 8, d at 16) and `struct t` with a bitfield member (kind flag set).
    fn sample() -> Vec<u8> {
        let strings = b"\0s\0a\0b\0c\0d\0int\0long\0t\0e\0".to_vec();
        let name = |s: &str| {
            let needle = format!("\0{s}\0");
            (strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap()
                + 1) as u32
        };
        let mut types: Vec<u32> = Vec::new();
        // 1: int
        types.extend([name("int"), 1 << 24, 4, 32]);
        // 2: long
        types.extend([name("long"), 1 << 24, 8, 64]);
        // 3: anonymous union { long b; int c; }
        types.extend([0, KIND_UNION << 24 | 2, 8]);
        types.extend([name("b"), 2, 0, name("c"), 1, 0]);
        // 4: struct s
        types.extend([name("s"), KIND_STRUCT << 24 | 3, 24]);
        types.extend([name("a"), 1, 0, 0, 3, 64, name("d"), 1, 128]);
        // 5: struct t { int a:3; int e:5; } with the kind flag
        types.extend([name("t"), 1 << 31 | KIND_STRUCT << 24 | 2, 4]);
        types.extend([name("a"), 1, 3 << 24, name("e"), 1, 5 << 24 | 3]);
        let types: Vec<u8> = types.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut blob = Vec::new();
        blob.extend(MAGIC.to_ne_bytes());
        blob.extend([1, 0]);
        for w in [
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend(w.to_ne_bytes());
        }
        blob.extend(types);
        blob.extend(strings);
        blob
    }

    #[test]
    fn finds_members_directly_and_inside_anonymous_unions() {
        let blob = sample();
        let btf = Btf::parse(&blob).unwrap();
        assert_eq!(btf.member_offset("s", "a"), Ok(0));
        assert_eq!(btf.member_offset("s", "c"), Ok(8));
        assert_eq!(btf.member_offset("s", "d"), Ok(16));
        assert_eq!(btf.member_offset("t", "e"), Ok(0), "bit 3 is in byte 0");
        assert!(btf
            .member_offset("s", "x")
            .unwrap_err()
            .0
            .contains("no member x"));
        assert!(btf
            .member_offset("u", "a")
            .unwrap_err()
            .0
            .contains("no struct u"));
    }

    #[test]
    fn refuses_what_is_not_btf() {
        assert!(Btf::parse(b"\x7fELF and more").is_err());
        assert!(Btf::parse(&sample()[..30]).is_err());
    }

    /// The running kernel's layout: sk_buff's head has not moved in years on x86-64
    /// (next/prev/dev, then sk, then tstamp, then cb), and copied_seq lies somewhere inside
    /// a tcp_sock (well past the inet_connection_sock it begins with).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn reads_this_kernels_layout() {
        let l = Layout::of_running_kernel().unwrap();
        assert_eq!((l.skb_sk, l.skb_cb), (24, 40));
        assert!(l.tcp_copied_seq > 1000 && l.tcp_copied_seq < 4096, "{l:?}");
    }
}
