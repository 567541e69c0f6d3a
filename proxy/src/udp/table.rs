//! The flow table: one entry per client address and port, and the order in which flows are
//! reclaimed when the table is full. Generic over the flow so that the policy is tested
//! without sockets.
//!
//! Reclaiming: flows are kept in creation order; at the limit the oldest flow the caller
//! calls idle is ended. A flow the caller calls active is moved to the back and never taken,
//! so a flood of new source ports only ever displaces flows that are themselves idle or
//! unanswered (a flood's own flows first, being the oldest idle ones), never an established
//! stream. Each flow is looked at once per search, so a table of only active flows costs one
//! pass, after which the newcomer is refused.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use slab::Slab;

#[derive(Debug)]
pub struct FlowTable<F> {
    by_client: HashMap<SocketAddr, usize>,
    flows: Slab<(SocketAddr, F)>,
    /// Creation order (active flows re-queued at the back); entries of ended flows are
    /// skipped when met and dropped by [`FlowTable::compact`].
    order: VecDeque<(usize, SocketAddr)>,
}

impl<F> Default for FlowTable<F> {
    fn default() -> FlowTable<F> {
        FlowTable {
            by_client: HashMap::new(),
            flows: Slab::new(),
            order: VecDeque::new(),
        }
    }
}

impl<F> FlowTable<F> {
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// The slot of `client`'s flow.
    pub fn find(&self, client: &SocketAddr) -> Option<usize> {
        self.by_client.get(client).copied()
    }

    pub fn insert(&mut self, client: SocketAddr, flow: F) -> usize {
        let slot = self.flows.insert((client, flow));
        self.by_client.insert(client, slot);
        self.order.push_back((slot, client));
        slot
    }

    pub fn remove(&mut self, slot: usize) -> Option<(SocketAddr, F)> {
        let (client, flow) = self.flows.try_remove(slot)?;
        self.by_client.remove(&client);
        Some((client, flow))
    }

    pub fn get(&self, slot: usize) -> Option<&(SocketAddr, F)> {
        self.flows.get(slot)
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut (SocketAddr, F)> {
        self.flows.get_mut(slot)
    }

    /// Every slot in use (a copy: the caller may end flows while walking it).
    pub fn slots(&self) -> Vec<usize> {
        self.flows.iter().map(|(slot, _)| slot).collect()
    }

    /// The oldest flow `is_active` says is not active, or `None` when every flow is.
    pub fn oldest_idle(&mut self, is_active: impl Fn(&F) -> bool) -> Option<usize> {
        for _ in 0..self.order.len() {
            let (slot, client) = self.order.pop_front()?;
            let Some((owner, flow)) = self.flows.get(slot) else {
                continue;
            };
            if *owner != client {
                continue; // the slot was reused by a later flow, queued on its own
            }
            if is_active(flow) {
                self.order.push_back((slot, client));
                continue;
            }
            return Some(slot);
        }
        None
    }

    /// Drops queue entries of ended flows once they outnumber the live ones, so the queue
    /// stays proportional to the table when the limit is never reached.
    pub fn compact(&mut self) {
        if self.order.len() <= 2 * self.flows.len() + 64 {
            return;
        }
        let flows = &self.flows;
        self.order
            .retain(|(slot, client)| flows.get(*slot).is_some_and(|(c, _)| c == client));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_oldest_idle_flow_goes_first_and_active_ones_never() {
        let mut t = FlowTable::default();
        let stream = t.insert(client(1), true); // established and busy
        let a = t.insert(client(2), false);
        let b = t.insert(client(3), false);
        assert_eq!(t.oldest_idle(|busy| *busy), Some(a));
        t.remove(a);
        assert_eq!(t.oldest_idle(|busy| *busy), Some(b));
        t.remove(b);
        assert_eq!(t.oldest_idle(|busy| *busy), None);
        assert_eq!(t.find(&client(1)), Some(stream));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_flood_of_ports_only_displaces_itself() {
        let mut t = FlowTable::default();
        let limit = 100;
        let stream = t.insert(client(1), true);
        for port in 2..10_002u16 {
            if t.len() >= limit {
                let slot = t.oldest_idle(|busy| *busy).expect("an idle flow");
                let (gone, _) = t.remove(slot).expect("flow");
                assert_ne!(gone, client(1));
            }
            t.insert(client(port), false);
            t.compact();
        }
        assert_eq!(t.find(&client(1)), Some(stream));
        assert_eq!(t.len(), limit);
        assert!(t.order.len() <= 2 * limit + 64);
    }

    #[test]
    fn a_reused_slot_is_not_taken_for_its_old_owner() {
        let mut t = FlowTable::default();
        let a = t.insert(client(1), false);
        t.remove(a);
        let b = t.insert(client(2), true);
        assert_eq!(a, b, "slab reuses the slot");
        assert_eq!(t.oldest_idle(|busy| *busy), None);
        assert_eq!(t.get(b).map(|(c, _)| *c), Some(client(2)));
    }
}
