//! Hashing for `balance source|uri|url_param|hdr(…)`: HAProxy's hash functions (`hash-type
//! … sdbm|djb2|wt6|crc32 [avalanche]`), the map-based choice (hash modulo the total weight)
//! and the consistent-hash ring. A ring depends only on the configuration (server names and
//! weights), so independent instances with the same configuration map every key the same
//! way, and adding or removing one server moves only the keys it takes or held.

use crate::config::{HashFunction, HashType};

/// Points per unit of weight on the ring: enough that five servers of equal weight each own
/// close to a fifth of the ring (HAProxy uses 16, which leaves shares off by a third).
const POINTS_PER_WEIGHT: u32 = 100;

pub fn hash(t: HashType, key: &[u8]) -> u32 {
    let h = match t.function {
        HashFunction::Sdbm => sdbm(key),
        HashFunction::Djb2 => djb2(key),
        HashFunction::Wt6 => wt6(key),
        HashFunction::Crc32 => crc32(key),
    };
    if t.avalanche {
        full_hash(h)
    } else {
        h
    }
}

fn sdbm(key: &[u8]) -> u32 {
    key.iter().fold(0u32, |h, &c| {
        u32::from(c)
            .wrapping_add(h << 6)
            .wrapping_add(h << 16)
            .wrapping_sub(h)
    })
}

fn djb2(key: &[u8]) -> u32 {
    key.iter().fold(5381u32, |h, &c| {
        (h << 5).wrapping_add(h).wrapping_add(u32::from(c))
    })
}

fn wt6(key: &[u8]) -> u32 {
    let (mut h0, mut h1) = (0xa53c_965a_u32, 0x5ca6_953a_u32);
    let (mut step0, mut step1) = (6u32, 18u32);
    for &c in key {
        let t = u32::from(c);
        h0 = !(h0 ^ t);
        h1 = !(h1.wrapping_add(t));
        let t = h1.rotate_left(step0);
        h1 = h0.rotate_left(step1);
        h0 = t;
        let t = ((h0 >> 16) ^ h1) & 0xffff;
        step0 = t & 0x1f;
        step1 = t >> 11;
    }
    h0 ^ h1
}

fn crc32(key: &[u8]) -> u32 {
    let mut h = !0u32;
    for &c in key {
        h ^= u32::from(c);
        for _ in 0..8 {
            h = (h >> 1) ^ if h & 1 == 1 { 0xedb8_8320 } else { 0 };
        }
    }
    !h
}

/// Bob Jenkins' full-avalanche integer hash, as HAProxy's `full_hash`.
pub fn full_hash(mut a: u32) -> u32 {
    a = a.wrapping_add(0x7ed5_5d16).wrapping_add(a << 12);
    a = (a ^ 0xc761_c23c) ^ (a >> 19);
    a = a.wrapping_add(0x1656_67b1).wrapping_add(a << 5);
    a = a.wrapping_add(0xd3a2_646c) ^ (a << 9);
    a = a.wrapping_add(0xfd70_46c5).wrapping_add(a << 3);
    (a ^ 0xb55a_4f09) ^ (a >> 16)
}

/// A consistent-hash ring: points sorted by position, each naming a server (its index).
#[derive(Debug, Default)]
pub struct Ring {
    points: Vec<(u32, usize)>,
}

impl Ring {
    /// `servers`: (index, name, weight) of the servers of one tier (active or backup).
    pub fn new<'a>(servers: impl Iterator<Item = (usize, &'a str, u32)>) -> Ring {
        let mut points = Vec::new();
        for (index, name, weight) in servers {
            for i in 0..weight.saturating_mul(POINTS_PER_WEIGHT) {
                let at = full_hash(crc32(format!("{name}#{i}").as_bytes()));
                points.push((at, index));
            }
        }
        // Ties (two points at one position) are broken by index: stable across instances.
        points.sort_unstable();
        Ring { points }
    }

    /// The first server from `key`'s position on, clockwise, that `usable` accepts.
    pub fn pick(&self, key: u32, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let start = self.points.partition_point(|(at, _)| *at < key);
        let (after, before) = self.points.split_at(start);
        before
            .iter()
            .chain(after)
            .map(|(_, index)| *index)
            .find(|&i| usable(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_match_haproxys() {
        // Values from HAProxy 2.6's hash functions (src/hash.c) on the same inputs.
        assert_eq!(sdbm(b""), 0);
        assert_eq!(djb2(b""), 5381);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926, "the CRC-32 check value");
        assert_eq!(sdbm(b"a"), 97);
        assert_eq!(djb2(b"a"), 5381 * 33 + 97);
        assert_ne!(wt6(b"/live/a.ts"), wt6(b"/live/b.ts"));
    }

    fn ring(names: &[&str]) -> Ring {
        Ring::new(names.iter().enumerate().map(|(i, n)| (i, *n, 1)))
    }

    fn owners(r: &Ring, names: &[&str], keys: u32) -> Vec<String> {
        let t = HashType {
            consistent: true,
            function: HashFunction::Sdbm,
            avalanche: true,
        };
        (0..keys)
            .map(|k| {
                let h = hash(t, format!("/live/stream{k}/index.m3u8").as_bytes());
                names[r.pick(h, |_| true).expect("a server")].to_string()
            })
            .collect()
    }

    #[test]
    fn instances_agree_and_a_fifth_server_moves_a_fifth() {
        let four = ["ams1", "ams2", "ams3", "ams4"];
        let a = owners(&ring(&four), &four, 10_000);
        let b = owners(&ring(&four), &four, 10_000);
        assert_eq!(a, b, "two rings from one configuration map every key alike");
        let five = ["ams1", "ams2", "ams3", "ams4", "ams5"];
        let c = owners(&ring(&five), &five, 10_000);
        let moved: Vec<_> = a.iter().zip(&c).filter(|(x, y)| x != y).collect();
        let share = moved.len() as f64 / 10_000.0;
        assert!((0.15..=0.25).contains(&share), "moved {share}");
        assert!(
            moved.iter().all(|(_, to)| *to == "ams5"),
            "keys move only to the new server"
        );
    }

    #[test]
    fn removing_a_server_moves_only_its_keys() {
        let five = ["ams1", "ams2", "ams3", "ams4", "ams5"];
        let r = ring(&five);
        let t = HashType {
            consistent: true,
            function: HashFunction::Crc32,
            avalanche: false,
        };
        for k in 0..5_000u32 {
            let h = hash(t, &k.to_be_bytes());
            let all = r.pick(h, |_| true).expect("a server");
            let without_3 = r.pick(h, |i| i != 2).expect("a server");
            if all != 2 {
                assert_eq!(all, without_3, "key {k} moved although its server stayed");
            }
        }
    }

    #[test]
    fn weights_share_the_ring() {
        let r = Ring::new([(0, "heavy", 3), (1, "light", 1)].into_iter());
        let heavy = (0..10_000u32)
            .filter(|k| r.pick(full_hash(*k), |_| true) == Some(0))
            .count();
        assert!(
            (6_500..=8_500).contains(&heavy),
            "weight 3 of 4 took {heavy} of 10000"
        );
    }
}
