//! Rolling windows (SPEC section 4): `sessionizer/core/windows.py`, record for record.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::{HashMap, HashSet};
use hashbrown::hash_map::EntryRef;
use std::rc::Rc;

use crate::output::{json_time, window_record};
use crate::sessions::{Key, NEVER};
use crate::shapes::{with_aggregates, Aggregate, State, Value};

pub const ADDED: u8 = 0;
pub const LATE: u8 = 1;
pub const PARTIALLY_LATE: u8 = 2;

#[derive(Clone, Default)]
pub struct Totals {
    pub count: i64,
    pub stake: i128,
    pub win: i128,
    pub extra: Option<Box<WindowExtra>>, // a shaped store's (beside the totals: one lookup per record)
}

/// A window's held ids, as their slots in the engine's `IdRegistry` (which holds them until the
/// window's close time): the first sixteen in line, in the window's box (a player's window mostly
/// holds a few records), no allocation of their own, nor a reallocation as they come. Kept for the
/// window's state only: closing the window has nothing to release.
pub type HeldIds = smallvec::SmallVec<[u32; 16]>;

/// A shaped window's SPEC 7 part: a state per aggregate, and the (key, id) slot of each record it holds.
#[derive(Clone)]
pub struct WindowExtra {
    pub states: Vec<State>,
    pub held: HeldIds,
}

impl WindowExtra {
    pub fn empty(aggregates: &[Aggregate]) -> Self {
        WindowExtra { states: aggregates.iter().map(Aggregate::empty).collect(), held: HeldIds::new() }
    }
}

pub struct WindowStore {
    size: i64,
    advance: i64,
    grace: i64,
    pub buckets: HashMap<i64, HashMap<Key, Totals>>, // start -> group -> totals
    starts: BinaryHeap<Reverse<i64>>,
    pub next_due: i64,
    pub track_changes: bool,
    pub changed: HashSet<(i64, Key)>,
    event_name: Vec<u8>,
    pub out: Vec<(Key, Vec<u8>)>,
    last_closed_groups: usize, // a new window is sized like the last one closed: no growing tables at peak
    pub shaped: bool,
    pub aggregates: Rc<[Aggregate]>, // shared: a record's window totals borrow the store while they take its values
    // Each window lists its records' ids for its state (SPEC 7.2: duplicates across restarts). Not
    // when its state is never read (replay): the registry's `until` alone holds an id for windows.
    keeps_ids: bool,
}

impl WindowStore {
    pub fn new(size: i64, advance: i64, grace: i64, track_changes: bool, keeps_ids: bool, event_name: Vec<u8>,
               shaped: bool, aggregates: Vec<Aggregate>) -> Self {
        WindowStore {
            keeps_ids,
            shaped,
            aggregates: aggregates.into(),
            size,
            advance,
            grace,
            buckets: HashMap::default(),
            starts: BinaryHeap::new(),
            next_due: NEVER,
            track_changes,
            changed: HashSet::default(),
            event_name,
            out: Vec::new(),
            last_closed_groups: 0,
        }
    }

    pub fn close_at(&self, start: i64) -> i64 {
        start + self.size + self.grace
    }

    /// Add one record at stream time `now` to each of its open windows.
    pub fn offer(&mut self, group: &str, time: i64, stake: i64, win: i64, now: i64) -> u8 {
        let last = time - time % self.advance;
        let first = (last - self.size + self.advance).max(0);
        let (mut added, mut missed) = (0, 0);
        let mut start = last;
        while start >= first {
            if self.close_at(start) <= now {
                missed += 1;
            } else {
                added += 1;
                self.add(start, group, stake, win, 1);
            }
            start -= self.advance;
        }
        if added == 0 {
            LATE
        } else if missed > 0 {
            PARTIALLY_LATE
        } else {
            ADDED
        }
    }

    /// `offer` for SPEC section 7: `weight` 0 for a record that does not count, and its (key, id)
    /// slot and values for this store's aggregates. `until`: raised to the close time of the latest
    /// window that took the record (holding its id until then).
    #[allow(clippy::too_many_arguments)]
    pub fn offer_shaped(&mut self, group: &str, time: i64, stake: i64, win: i64, now: i64, weight: i64,
                        held: Option<u32>, values: &[Option<Value>], until: &mut i64) -> u8 {
        let last = time - time % self.advance;
        let first = (last - self.size + self.advance).max(0);
        let (mut added, mut missed) = (0, 0);
        let aggregates = self.aggregates.clone(); // the totals below borrow the store
        // Nothing to keep but the totals: no `WindowExtra` (an allocation a window) to make.
        let keeps_ids = self.keeps_ids;
        let has_extra = !aggregates.is_empty() || keeps_ids;
        let mut start = last;
        while start >= first {
            let close_at = self.close_at(start);
            if close_at <= now {
                missed += 1;
            } else {
                added += 1;
                *until = (*until).max(close_at);
                let totals = self.add(start, group, stake, win, weight);
                if has_extra {
                    let extra = totals.extra.get_or_insert_with(|| Box::new(WindowExtra::empty(&aggregates)));
                    for ((aggregate, state), value) in aggregates.iter().zip(extra.states.iter_mut()).zip(values) {
                        if let Some(value) = value {
                            aggregate.add(state, value, time);
                        }
                    }
                    if let (Some(slot), true) = (held, keeps_ids) {
                        extra.held.push(slot);
                    }
                }
            }
            start -= self.advance;
        }
        if added == 0 {
            LATE
        } else if missed > 0 {
            PARTIALLY_LATE
        } else {
            ADDED
        }
    }

    fn add(&mut self, start: i64, group: &str, stake: i64, win: i64, weight: i64) -> &mut Totals {
        let close_at = self.close_at(start);
        let capacity = self.last_closed_groups;
        let bucket = self.buckets.entry(start).or_insert_with(|| {
            self.starts.push(Reverse(start));
            if close_at < self.next_due {
                self.next_due = close_at;
            }
            HashMap::with_capacity_and_hasher(capacity, Default::default())
        });
        // One lookup; the changes set gets a copy of the map's key (inline when short).
        let totals = match bucket.entry_ref(group) {
            EntryRef::Occupied(entry) => {
                if self.track_changes {
                    self.changed.insert((start, entry.key().clone()));
                }
                entry.into_mut()
            }
            EntryRef::Vacant(entry) => {
                let shared: Key = Key::from(group);
                if self.track_changes {
                    self.changed.insert((start, shared.clone()));
                }
                entry.insert_with_key(shared, Totals::default())
            }
        };
        totals.count += weight;
        totals.stake += stake as i128;
        totals.win += win as i128;
        totals
    }

    pub fn close_due(&mut self, now: i64) {
        while let Some(&Reverse(start)) = self.starts.peek() {
            if self.close_at(start) > now {
                break;
            }
            self.starts.pop();
            self.close_bucket(start);
        }
        self.next_due = self.starts.peek().map_or(NEVER, |&Reverse(start)| self.close_at(start));
    }

    pub fn close_all(&mut self) {
        while let Some(Reverse(start)) = self.starts.pop() {
            self.close_bucket(start);
        }
        self.next_due = NEVER;
    }

    fn close_bucket(&mut self, start: i64) {
        let end = start + self.size;
        let bucket = self.buckets.remove(&start).unwrap_or_default();
        self.last_closed_groups = bucket.len();
        // In key order. Sorted as (first 8 bytes, big-endian, as a number; index): 16 bytes an entry
        // and one integer comparison (player ids mostly differ there), the whole keys only on a tie.
        let mut groups: Vec<Option<(Key, Totals)>> = bucket.into_iter().map(Some).collect();
        let key_of = |index: u32| groups[index as usize].as_ref().expect("not taken yet").0.as_str();
        let mut order: Vec<(u64, u32)> = (0..groups.len() as u32).map(|index| (key_prefix(key_of(index)), index)).collect();
        order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| key_of(a.1).cmp(key_of(b.1))));
        let mut start_text = Vec::with_capacity(19);
        json_time(&mut start_text, start);
        for (_, index) in order {
            let (group, totals) = groups[index as usize].take().expect("each index once");
            let mut record = window_record(&self.event_name, &group, start, end, totals.count, totals.stake,
                                           totals.win, &start_text);
            if let Some(extra) = &totals.extra {
                with_aggregates(&mut record, &self.aggregates, &extra.states);
            }
            if self.track_changes {
                self.changed.insert((start, group.clone()));
            }
            self.out.push((group, record));
        }
    }

    pub fn open_count(&self) -> usize {
        self.buckets.values().map(HashMap::len).sum()
    }

    pub fn restore(&mut self, start: i64, group: &str, totals: Option<Totals>) {
        let totals = totals.map(|mut totals| {
            if self.shaped && totals.extra.is_none() { // written before the job was shaped
                totals.extra = Some(Box::new(WindowExtra::empty(&self.aggregates)));
            }
            totals
        });
        match totals {
            None => {
                if let Some(bucket) = self.buckets.get_mut(&start) {
                    bucket.remove(group);
                    if bucket.is_empty() {
                        self.buckets.remove(&start);
                    }
                }
            }
            Some(totals) => {
                self.buckets.entry(start).or_default().insert(Key::from(group), totals);
            }
        }
    }

    pub fn reschedule(&mut self) {
        self.starts = self.buckets.keys().map(|&start| Reverse(start)).collect();
        self.next_due = self.starts.peek().map_or(NEVER, |&Reverse(start)| self.close_at(start));
    }
}

/// A key's first 8 bytes as a big-endian number (zero-padded): keys in this order are in the keys'
/// own order, or tie (then the whole keys say).
fn key_prefix(key: &str) -> u64 {
    let mut first = [0u8; 8];
    let used = key.len().min(8);
    first[..used].copy_from_slice(&key.as_bytes()[..used]);
    u64::from_be_bytes(first)
}
