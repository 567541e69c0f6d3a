//! The live flow table behind the runtime API's `show sess` / `show flows`: one slot per
//! client connection, entered at accept and left when the session ends.
//!
//! Cheap on the connection path: each thread enters and leaves its own shard (one
//! uncontended lock), and a slot is reused from the shard's free list; slots come in chunks
//! that are never freed, so a flow's byte counters have a fixed address that the forwarding
//! engines add to without any lock. Memory is bounded by the peak number of flows.
//!
//! Which frontend and backend a flow belongs to is kept as the address of their
//! [`Counters`] (a key, never dereferenced): the registry that renders the table holds the
//! same `Arc`s and matches them, so entering a flow copies no name.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::clock::now_ms;
use super::traffic::Counters;

const SHARDS: usize = 16;
const CHUNK: usize = 256;

/// The process's flows.
pub static FLOWS: FlowTable = FlowTable::new();

pub struct FlowTable {
    shards: [Mutex<Shard>; SHARDS],
    next_id: AtomicU64,
    next_shard: AtomicUsize,
}

struct Shard {
    chunks: Vec<&'static Chunk>,
    free: Vec<u32>,
}

type Chunk = [Slot; CHUNK];

#[derive(Default)]
struct Slot {
    meta: Mutex<Option<FlowMeta>>,
    bytes: FlowBytes,
}

/// A flow's bytes so far, added by the engine as it moves them.
#[derive(Debug, Default)]
pub struct FlowBytes {
    /// Client → server.
    pub up: AtomicU64,
    /// Server → client.
    pub down: AtomicU64,
}

/// What the table knows of one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowMeta {
    pub id: u64,
    pub client: SocketAddr,
    /// [`counters_key`] of the frontend's counters.
    pub frontend: usize,
    /// [`counters_key`] of the backend's counters, once a server is picked.
    pub backend: Option<usize>,
    /// The server's id in its backend and the address connected to.
    pub server: Option<(usize, SocketAddr)>,
    pub engine: &'static str,
    pub started_ms: u64,
}

/// One flow as `show sess` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowView {
    pub meta: FlowMeta,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// The key a flow stores for a frontend's or backend's counters.
pub fn counters_key(c: &Counters) -> usize {
    c as *const Counters as usize
}

thread_local! {
    /// Each thread keeps to one shard, so its enters and leaves never wait on another's.
    static MY_SHARD: usize = FLOWS.next_shard.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

impl FlowTable {
    pub const fn new() -> FlowTable {
        FlowTable {
            shards: [const {
                Mutex::new(Shard {
                    chunks: Vec::new(),
                    free: Vec::new(),
                })
            }; SHARDS],
            next_id: AtomicU64::new(1),
            next_shard: AtomicUsize::new(0),
        }
    }

    /// Enters a flow from `client` on the frontend whose counters are `frontend`, moved by
    /// `engine` (`"-"` until [`Flow::set_server`] says); it leaves the table when the
    /// returned guard drops.
    pub fn enter(
        &'static self,
        client: SocketAddr,
        frontend: &Counters,
        engine: &'static str,
    ) -> Flow {
        let shard = MY_SHARD.with(|s| *s);
        let (slot, index) = self.take_slot(shard);
        let meta = FlowMeta {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            client,
            frontend: counters_key(frontend),
            backend: None,
            server: None,
            engine,
            started_ms: now_ms(),
        };
        slot.bytes.up.store(0, Ordering::Relaxed);
        slot.bytes.down.store(0, Ordering::Relaxed);
        *lock(&slot.meta) = Some(meta);
        Flow {
            table: self,
            slot,
            shard,
            index,
        }
    }

    fn take_slot(&self, shard: usize) -> (&'static Slot, u32) {
        let mut s = lock(&self.shards[shard]);
        let index = match s.free.pop() {
            Some(i) => i,
            None => {
                let base = s.chunks.len() * CHUNK;
                let chunk: &'static Chunk =
                    Box::leak(Box::new(std::array::from_fn(|_| Slot::default())));
                s.chunks.push(chunk);
                // Hand out the lowest first: pop takes from the end.
                s.free
                    .extend((base as u32 + 1..(base + CHUNK) as u32).rev());
                base as u32
            }
        };
        let chunk = s.chunks[index as usize / CHUNK];
        (&chunk[index as usize % CHUNK], index)
    }

    /// Every flow now, oldest first.
    pub fn snapshot(&self) -> Vec<FlowView> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let chunks = lock(shard).chunks.clone();
            for slot in chunks.iter().flat_map(|c| c.iter()) {
                if let Some(meta) = *lock(&slot.meta) {
                    out.push(FlowView {
                        meta,
                        bytes_up: slot.bytes.up.load(Ordering::Relaxed),
                        bytes_down: slot.bytes.down.load(Ordering::Relaxed),
                    });
                }
            }
        }
        out.sort_by_key(|f| f.meta.id);
        out
    }
}

impl Default for FlowTable {
    fn default() -> Self {
        FlowTable::new()
    }
}

/// A flow's place in the table; dropping it takes the flow out.
pub struct Flow {
    table: &'static FlowTable,
    slot: &'static Slot,
    shard: usize,
    index: u32,
}

impl Flow {
    /// The server picked (its backend's counters, id and address) and the engine moving the
    /// bytes (`"-"` while not known; HTTP flows say `http`).
    pub fn set_server(
        &self,
        backend: &Counters,
        server: usize,
        addr: SocketAddr,
        engine: &'static str,
    ) {
        if let Some(m) = lock(&self.slot.meta).as_mut() {
            m.backend = Some(counters_key(backend));
            m.server = Some((server, addr));
            m.engine = engine;
        }
    }

    /// Where the engines add this flow's bytes.
    pub fn bytes(&self) -> &'static FlowBytes {
        &self.slot.bytes
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        *lock(&self.slot.meta) = None;
        lock(&self.table.shards[self.shard]).free.push(self.index);
    }
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow").field("index", &self.index).finish()
    }
}

/// A poisoned lock here only means a panic elsewhere while holding plain data: go on.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> &'static FlowTable {
        Box::leak(Box::new(FlowTable::new()))
    }

    #[test]
    fn flows_enter_show_and_leave() {
        let t = table();
        let fe = Counters::default();
        let be = Counters::default();
        let client: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let a = t.enter(client, &fe, "-");
        let b = t.enter("127.0.0.2:5001".parse().unwrap(), &fe, "-");
        a.set_server(&be, 1, "127.0.0.9:1935".parse().unwrap(), "splice");
        a.bytes().up.fetch_add(10, Ordering::Relaxed);
        let seen = t.snapshot();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].meta.client, client);
        assert_eq!(seen[0].meta.frontend, counters_key(&fe));
        assert_eq!(seen[0].meta.backend, Some(counters_key(&be)));
        assert_eq!(seen[0].meta.engine, "splice");
        assert_eq!((seen[0].bytes_up, seen[0].bytes_down), (10, 0));
        assert_eq!(seen[1].meta.server, None);
        drop(a);
        assert_eq!(t.snapshot().len(), 1);
        drop(b);
        assert!(t.snapshot().is_empty());
    }

    #[test]
    fn slots_are_reused_and_chunks_grow_past_one() {
        let t = table();
        let fe = Counters::default();
        let client: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let many: Vec<Flow> = (0..CHUNK + 3).map(|_| t.enter(client, &fe, "-")).collect();
        assert_eq!(t.snapshot().len(), CHUNK + 3);
        drop(many);
        let again = t.enter(client, &fe, "-");
        assert_eq!(again.bytes().up.load(Ordering::Relaxed), 0);
        assert_eq!(t.snapshot().len(), 1);
        let chunks: usize = t.shards.iter().map(|s| lock(s).chunks.len()).sum();
        assert_eq!(chunks, 2, "freed slots are reused, not new chunks");
    }
}
