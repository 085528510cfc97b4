//! When each key's state is next due (to close, or to be forgotten): `(time, key)` entries taken
//! out in (time, key) order, as the Python core's heap gives them.
//!
//! A single heap of every open key's entry costs a cache miss per level on each pop once it
//! outgrows the cache (tens of thousands of players at peak). Due times only come due in order,
//! so entries wait in one vector per second of due time; only the earliest second's entries are
//! in a heap, which stays small and hot.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::sessions::Key;
use crate::HashMap;

const SLOT_MS: i64 = 1000;

#[derive(Default)]
pub struct DueQueue {
    // Every entry of a slot up to `current_slot` is here; every later one is in `later`.
    current: BinaryHeap<Reverse<(i64, Key)>>,
    current_slot: i64,
    later: HashMap<i64, Vec<(i64, Key)>>,
    slots: BinaryHeap<Reverse<i64>>, // the slots in `later`
}

impl DueQueue {
    pub fn new() -> Self {
        DueQueue { current_slot: i64::MIN, ..Default::default() }
    }

    pub fn from_entries(entries: Vec<(i64, Key)>) -> Self {
        let mut queue = DueQueue::new();
        for (when, key) in entries {
            queue.push(when, key);
        }
        queue
    }

    pub fn push(&mut self, when: i64, key: Key) {
        let slot = when.div_euclid(SLOT_MS);
        if slot <= self.current_slot {
            self.current.push(Reverse((when, key)));
            return;
        }
        let waiting = self.later.entry(slot).or_insert_with(|| {
            self.slots.push(Reverse(slot));
            Vec::new()
        });
        waiting.push((when, key));
    }

    /// The earliest due time, if any.
    pub fn peek(&mut self) -> Option<i64> {
        if self.current.is_empty() {
            let Reverse(slot) = self.slots.pop()?;
            let waiting = self.later.remove(&slot).expect("a listed slot");
            self.current = BinaryHeap::from(waiting.into_iter().map(Reverse).collect::<Vec<_>>());
            self.current_slot = slot;
        }
        self.current.peek().map(|Reverse((when, _))| *when)
    }

    /// The earliest entry (of equal times, the least key).
    pub fn pop(&mut self) -> Option<(i64, Key)> {
        self.peek()?;
        self.current.pop().map(|Reverse(entry)| entry)
    }

    pub fn clear(&mut self) {
        *self = DueQueue::new();
    }
}
