//! Rolling windows (SPEC section 4): `sessionizer/core/windows.py`, record for record.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::{HashMap, HashSet};
use std::sync::Arc;

use crate::output::{json_time, window_record};
use crate::sessions::NEVER;

pub const ADDED: u8 = 0;
pub const LATE: u8 = 1;
pub const PARTIALLY_LATE: u8 = 2;

#[derive(Clone, Copy, Default)]
pub struct Totals {
    pub count: i64,
    pub stake: i128,
    pub win: i128,
}

pub struct WindowStore {
    size: i64,
    advance: i64,
    grace: i64,
    pub buckets: HashMap<i64, HashMap<Arc<str>, Totals>>, // start -> group -> totals
    starts: BinaryHeap<Reverse<i64>>,
    pub next_due: i64,
    pub track_changes: bool,
    pub changed: HashSet<(i64, Arc<str>)>,
    event_name: Vec<u8>,
    pub out: Vec<(Arc<str>, Vec<u8>)>,
    last_closed_groups: usize, // a new window is sized like the last one closed: no growing tables at peak
}

impl WindowStore {
    pub fn new(size: i64, advance: i64, grace: i64, track_changes: bool, event_name: Vec<u8>) -> Self {
        WindowStore {
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

    fn close_at(&self, start: i64) -> i64 {
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
                self.add(start, group, stake, win);
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

    fn add(&mut self, start: i64, group: &str, stake: i64, win: i64) {
        let close_at = self.close_at(start);
        let capacity = self.last_closed_groups;
        let bucket = self.buckets.entry(start).or_insert_with(|| {
            self.starts.push(Reverse(start));
            if close_at < self.next_due {
                self.next_due = close_at;
            }
            HashMap::with_capacity_and_hasher(capacity, Default::default())
        });
        match bucket.get_mut(group) {
            Some(totals) => {
                totals.count += 1;
                totals.stake += stake as i128;
                totals.win += win as i128;
            }
            None => {
                bucket.insert(Arc::from(group), Totals { count: 1, stake: stake as i128, win: win as i128 });
            }
        }
        if self.track_changes {
            let (shared, _) = bucket.get_key_value(group).unwrap(); // the map's own Arc, not a new string
            self.changed.insert((start, shared.clone()));
        }
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
        let mut groups: Vec<(Arc<str>, Totals)> = bucket.into_iter().collect();
        groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut start_text = Vec::with_capacity(19);
        json_time(&mut start_text, start);
        for (group, totals) in groups {
            let record = window_record(&self.event_name, &group, start, end, totals.count, totals.stake, totals.win,
                                       &start_text);
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
                self.buckets.entry(start).or_default().insert(Arc::from(group), totals);
            }
        }
    }

    pub fn reschedule(&mut self) {
        self.starts = self.buckets.keys().map(|&start| Reverse(start)).collect();
        self.next_due = self.starts.peek().map_or(NEVER, |&Reverse(start)| self.close_at(start));
    }
}
