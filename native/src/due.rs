//! When each key's state is next due (to close, or to be forgotten): `(time, key)` entries taken
//! out in (time, key) order, as the Python core's heap gives them.
//!
//! A single heap of every open key's entry costs a cache miss per level on each pop once it
//! outgrows the cache (tens of thousands of players at peak). Due times only come due in order,
//! so entries wait in one vector per second of due time; only the earliest second's entries are
//! in a heap, which stays small and hot.
//!
//! A waiting entry may be smaller than a heap entry (`L`, such as a key's slot in its store,
//! against `C`, the key itself, by which the heap orders equal times): `resolve` turns one into
//! the other as its second comes up, or drops it (an entry already out of date).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::HashMap;

const SLOT_MS: i64 = 1000; // below 65,536: a time within its slot fits in a u16

pub struct DueQueue<L, C: Ord = L> {
    // Every entry of a slot up to `current_slot` is here; every later one is in `later`.
    current: BinaryHeap<Reverse<(i64, C)>>,
    current_slot: i64,
    later: HashMap<i64, Vec<(u16, L)>>, // (ms into the slot, entry): 8 bytes for a slot number
    slots: BinaryHeap<Reverse<i64>>, // the slots in `later`
}

impl<L, C: Ord> Default for DueQueue<L, C> {
    fn default() -> Self {
        DueQueue { current: BinaryHeap::new(), current_slot: i64::MIN, later: HashMap::default(),
                   slots: BinaryHeap::new() }
    }
}

impl<L, C: Ord> DueQueue<L, C> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_entries(entries: Vec<(i64, L)>, mut resolve: impl FnMut(i64, L) -> Option<C>) -> Self {
        let mut queue = DueQueue::new();
        for (when, entry) in entries {
            queue.push(when, entry, &mut resolve);
        }
        queue
    }

    pub fn push(&mut self, when: i64, entry: L, resolve: impl FnOnce(i64, L) -> Option<C>) {
        let slot = when.div_euclid(SLOT_MS);
        if slot <= self.current_slot {
            if let Some(entry) = resolve(when, entry) {
                self.current.push(Reverse((when, entry)));
            }
            return;
        }
        let waiting = self.later.entry(slot).or_insert_with(|| {
            self.slots.push(Reverse(slot));
            Vec::new()
        });
        waiting.push(((when - slot * SLOT_MS) as u16, entry));
    }

    /// The earliest due time, if any.
    pub fn peek(&mut self, mut resolve: impl FnMut(i64, L) -> Option<C>) -> Option<i64> {
        while self.current.is_empty() {
            let Reverse(slot) = self.slots.pop()?;
            let waiting = self.later.remove(&slot).expect("a listed slot");
            let entries = waiting.into_iter().filter_map(|(offset, entry)| {
                let when = slot * SLOT_MS + offset as i64;
                Some(Reverse((when, resolve(when, entry)?)))
            });
            self.current = BinaryHeap::from(entries.collect::<Vec<_>>());
            self.current_slot = slot;
        }
        self.current.peek().map(|Reverse((when, _))| *when)
    }

    /// The earliest entry (of equal times, the least).
    pub fn pop(&mut self, resolve: impl FnMut(i64, L) -> Option<C>) -> Option<(i64, C)> {
        self.peek(resolve)?;
        self.current.pop().map(|Reverse(entry)| entry)
    }

    pub fn clear(&mut self) {
        *self = DueQueue::new();
    }
}

/// Entries that need no resolving (the entry is what the heap orders by).
pub fn as_is<T>(_when: i64, entry: T) -> Option<T> {
    Some(entry)
}
