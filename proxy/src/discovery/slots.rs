//! Which server slot a record goes to, free of I/O: HAProxy's way of filling a
//! `server-template`. A slot keeps the record it holds while the record is answered; a
//! record missing from the answers keeps its slot for `hold obsolete`, then the slot is
//! freed (maintenance); a new record takes the first free slot. Extra records wait for a
//! slot.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One slot as the resolver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The record it holds; `None` when free.
    pub addr: Option<SocketAddr>,
    /// When an answer last named its record.
    pub seen: Option<Instant>,
}

/// A record of the latest answer: where to connect, and the weight SRV gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub addr: SocketAddr,
    pub weight: Option<u32>,
}

/// What happens to one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Its record is still answered (its weight may have moved).
    Seen { weight: Option<u32> },
    /// Its record is missing but within `hold obsolete`.
    Held,
    /// Its record has been missing past `hold obsolete`: maintenance, no address.
    Free,
    /// Takes this new record.
    Fill(Found),
    /// Free, and stays free.
    Idle,
}

/// The change for each slot (same order), and how many records found no slot.
pub fn assign(
    slots: &[Slot],
    found: &[Found],
    now: Instant,
    obsolete: Duration,
) -> (Vec<Change>, usize) {
    let mut taken = vec![false; found.len()];
    let mut changes: Vec<Change> = slots
        .iter()
        .map(|slot| {
            let Some(addr) = slot.addr else {
                return Change::Idle;
            };
            if let Some(i) = (0..found.len()).find(|&i| !taken[i] && found[i].addr == addr) {
                taken[i] = true;
                return Change::Seen {
                    weight: found[i].weight,
                };
            }
            let missing_for = slot.seen.map_or(Duration::MAX, |t| now.duration_since(t));
            if missing_for > obsolete || obsolete.is_zero() {
                Change::Free
            } else {
                Change::Held
            }
        })
        .collect();
    let mut waiting = 0;
    for f in found
        .iter()
        .zip(&taken)
        .filter(|(_, t)| !**t)
        .map(|(f, _)| f)
    {
        match changes
            .iter()
            .position(|c| matches!(c, Change::Idle | Change::Free))
        {
            Some(at) => changes[at] = Change::Fill(*f),
            None => waiting += 1,
        }
    }
    (changes, waiting)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], port))
    }

    fn found(last: u8) -> Found {
        Found {
            addr: sa(last, 80),
            weight: None,
        }
    }

    fn slot(addr: Option<SocketAddr>, seen: Option<Instant>) -> Slot {
        Slot { addr, seen }
    }

    #[test]
    fn records_fill_free_slots_in_order_and_extras_wait() {
        let now = Instant::now();
        let slots = [slot(None, None); 2];
        let (c, waiting) = assign(&slots, &[found(2), found(3), found(4)], now, Duration::ZERO);
        assert_eq!(c, [Change::Fill(found(2)), Change::Fill(found(3))]);
        assert_eq!(waiting, 1);
    }

    #[test]
    fn a_slot_keeps_its_record_wherever_it_is_listed() {
        let now = Instant::now();
        let slots = [slot(Some(sa(3, 80)), Some(now)), slot(None, None)];
        let (c, _) = assign(&slots, &[found(2), found(3)], now, Duration::ZERO);
        assert_eq!(c, [Change::Seen { weight: None }, Change::Fill(found(2))]);
    }

    #[test]
    fn a_missing_record_is_held_then_its_slot_freed_and_reused() {
        let t0 = Instant::now();
        let hold = Duration::from_secs(5);
        let slots = [slot(Some(sa(2, 80)), Some(t0))];
        let (c, waiting) = assign(&slots, &[found(3)], t0 + Duration::from_secs(1), hold);
        assert_eq!((c.as_slice(), waiting), ([Change::Held].as_slice(), 1));
        let (c, _) = assign(&slots, &[found(3)], t0 + Duration::from_secs(6), hold);
        assert_eq!(c, [Change::Fill(found(3))]);
        // With `hold obsolete 0` (HAProxy's default) the slot goes at once.
        let (c, _) = assign(&slots, &[], t0, Duration::ZERO);
        assert_eq!(c, [Change::Free]);
    }

    #[test]
    fn srv_weights_and_ports_reach_the_slot() {
        let now = Instant::now();
        let srv = Found {
            addr: sa(2, 8081),
            weight: Some(3),
        };
        let (c, _) = assign(&[slot(None, None)], &[srv], now, Duration::ZERO);
        assert_eq!(c, [Change::Fill(srv)]);
        let held = [slot(Some(sa(2, 8081)), Some(now))];
        let (c, _) = assign(&held, &[srv], now, Duration::ZERO);
        assert_eq!(c, [Change::Seen { weight: Some(3) }]);
        // Same address, another port: another record.
        let (c, _) = assign(&held, &[found(2)], now, Duration::ZERO);
        assert_eq!(c, [Change::Fill(found(2))]);
    }
}
