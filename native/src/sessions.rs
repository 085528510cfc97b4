//! Capped sessions per key (SPEC section 3): `sessionizer/core/sessions.py`, record for record.
//!
//! The same state (a key's open records in sweep order, where its open sessions start,
//! the end of its latest closed session), the same due times (queued per second of due time:
//! due.rs), the same order of emission. Comments here say only where Rust differs; the Python
//! file explains why.

use crate::HashMap;
use std::rc::Rc;

use compact_str::CompactString;
use thin_vec::ThinVec;

use crate::due::{as_is, DueQueue};
use crate::keys::{ChangedKeys, KeyMap, Slot};
use crate::output::{session_record, SessionFields};
use crate::shapes::{with_aggregates, Aggregate, Derivation, Derived, Ids, Kind, Row, State, Value, COUNTS};
use smallvec::SmallVec;

pub const NEVER: i64 = 1 << 62;
pub const NO_CLOSED_END: i64 = -1;

pub const MAX_EVENTS: &str = "max_events";
pub const INACTIVITY: &str = "inactivity";
pub const MAX_DURATION: &str = "max_duration";
pub const END_OF_INPUT: &str = "end_of_input";

/// A record's (game, channel), shared by the records that have the same pair.
pub type LabelPair = (Option<Box<str>>, Option<Box<str>>);
pub type Label = Rc<LabelPair>;
/// A key (player id, or a window's group) as the stores keep it: inline when up to 24 bytes, so
/// that finding it in a map, the due-time queue or an output needs no second cache line.
pub type Key = CompactString;

#[derive(Clone)]
pub struct SessionRules {
    pub gap: i64,
    pub grace: i64,
    pub max_duration: Option<i64>,
    pub max_events: Option<i64>,
    pub all_count: bool, // false: some records do not count towards max_events (SPEC 7.1)
}

impl SessionRules {
    fn cut_reason(&self, start: i64, end: i64, count: i64, time: i64) -> Option<&'static str> {
        if self.max_events.is_some_and(|max| count >= max) {
            return Some(MAX_EVENTS);
        }
        if time - end > self.gap {
            return Some(INACTIVITY);
        }
        if self.max_duration.is_some_and(|max| time - start > max) {
            return Some(MAX_DURATION);
        }
        None
    }

    fn close_at(&self, end: i64, count: i64) -> i64 {
        if Some(count) == self.max_events {
            end + self.grace + 1
        } else {
            end + self.gap + self.grace + 1
        }
    }

    fn forget_at(&self, closed_end: i64) -> Option<i64> {
        let mut reach = self.max_duration;
        if let (Some(max_events), true) = (self.max_events, self.all_count) {
            let by_count = (max_events - 1) * self.gap;
            reach = Some(reach.map_or(by_count, |r| r.min(by_count)));
        }
        reach.map(|reach| closed_end + reach + self.gap + self.grace + 1)
    }
}

/// One open record: its event time, amounts (micros) and (game, channel). The records of a key
/// live in one vector (one allocation, one cache line per two records), not one vector per field.
#[derive(Clone)]
pub struct Spin {
    pub time: i64,
    pub stake: i64,
    pub win: i64,
    pub label: Option<Label>,
}

/// Where a key's open sessions start in its records. Most keys have one open session, from their
/// first record: that is `None` (in 8 bytes, with no allocation); other starts are in a vector.
#[derive(Clone, Default)]
pub struct Starts(Option<ThinVec<usize>>);

const FIRST_ONLY: [usize; 1] = [0];

impl std::ops::Deref for Starts {
    type Target = [usize];

    fn deref(&self) -> &[usize] {
        self.0.as_deref().unwrap_or(&FIRST_ONLY)
    }
}

impl Starts {
    /// No starts (yet).
    pub fn new() -> Self {
        Starts(Some(ThinVec::new()))
    }

    /// One session, from the first record.
    pub fn first_only() -> Self {
        Starts(None)
    }

    pub fn from_slice(starts: &[usize]) -> Self {
        if starts == FIRST_ONLY {
            Starts(None)
        } else {
            Starts(Some(ThinVec::from(starts)))
        }
    }

    pub fn push(&mut self, start: usize) {
        self.0.get_or_insert_with(|| ThinVec::from(&FIRST_ONLY[..])).push(start);
    }

    pub fn extend(&mut self, starts: impl IntoIterator<Item = usize>) {
        for start in starts {
            self.push(start);
        }
    }

    /// The same starts, in 8 bytes when they are the first record's only.
    pub fn compact(self) -> Self {
        if *self == FIRST_ONLY { Starts(None) } else { self }
    }
}

/// One key's open records and sessions. Small on purpose: a map entry per key with open sessions.
#[derive(Default)]
pub struct KeySessions {
    pub spins: Vec<Spin>, // in sweep order (event time, then arrival)
    pub starts: Starts,
    pub closed_end: i64,
    due: i64,
    shaped: Option<Box<ShapedRecords>>, // a shaped store's (SPEC 7), beside `spins`
}

/// A record's values for the session aggregates, as a shaped store receives them.
pub enum RecordValues<'a> {
    Given(&'a mut [Option<Value>]), // read (taken out, left None): by Python, or for a store that does not derive them
    Derived(Row),                   // the store derives them from the record's row and spin (`Derivation`)
}

/// How many records ahead a release asks for their ids' slots.
const RELEASE_AHEAD: usize = 8;

/// A record with no id.
pub const NO_ID: u32 = u32::MAX;

/// One record's row, id and place in the count, side by side: a record's own SPEC 7 data, in 12 bytes.
#[derive(Clone, Copy)]
pub struct ShapedRecord {
    // Whether it counts (`COUNTS`) and, `derived`, its type and which amounts it had, its values
    // derived from these when needed.
    pub row: Row,
    pub id: u32, // its (key, id) slot in the engine's `IdRegistry`, held by this record; or NO_ID
    // How many counting records came before it (a running count, wrapping, from no fixed start):
    // a session's count is a difference of two, not a pass over its records (a hot player's key
    // holds thousands, and the close time of each of its sessions needs its count, every record).
    before: u32,
}

/// A shaped key's records' SPEC 7 data, in `spins` order, so a record costs no allocation of its
/// own: each record's row and id in one vector (one cache line to reach for both, one vector to
/// grow); and unless `derived` (a key of a deriving store once a record came with values given, from
/// Python or restored, or a store that does not derive) its values kept in `values`, flat (`stride`
/// per record, one per aggregate of the store). Its records' ids are held (one holder each) until
/// they are drained or it is dropped: one registry handle a key, not one a record.
pub struct ShapedRecords {
    pub records: Vec<ShapedRecord>,
    pub values: Vec<Option<Value>>,
    pub stride: usize,
    pub derived: bool,
    ids: Ids, // the registry holding the records' ids
    after: u32, // the running count of counting records after the last (see `ShapedRecord::before`)
}

impl Drop for ShapedRecords {
    fn drop(&mut self) {
        self.release(0, self.records.len());
    }
}

impl ShapedRecords {
    /// Room for `records` records at first (a new key's: most sessions hold a few).
    pub fn with_capacity(stride: usize, records: usize, derived: bool, ids: Ids) -> Self {
        ShapedRecords { records: Vec::with_capacity(records),
                        values: Vec::with_capacity(if derived { 0 } else { records * stride }), stride, derived, ids,
                        after: 0 }
    }

    /// The (key, id) texts of record `index`'s id, lent to `with`; None when it has none.
    pub fn with_id<R>(&self, index: usize, with: impl FnOnce(&str, &str) -> R) -> Option<R> {
        let slot = self.records[index].id;
        if slot == NO_ID {
            return None;
        }
        let registry = self.ids.borrow();
        let (key, id) = registry.texts_of(slot);
        Some(with(key, id))
    }

    /// Asks for the slots of the first few of records `first..stop`'s ids, ahead of their release.
    fn prefetch_ids(&self, first: usize, stop: usize) {
        let registry = self.ids.borrow();
        self.records[first..stop].iter().take(RELEASE_AHEAD).for_each(|record| registry.prefetch(record.id));
    }

    /// The holds of records `first..stop`, given back.
    fn release(&mut self, first: usize, stop: usize) {
        // Each slot is a cache line of its own, seldom still cached when its session closes: the
        // lines of the next few are asked for ahead, so that their misses overlap.
        self.prefetch_ids(first, stop);
        let mut registry = self.ids.borrow_mut();
        let records = &self.records[first..stop];
        for (index, record) in records.iter().enumerate() {
            if let Some(next) = records.get(index + RELEASE_AHEAD) {
                registry.prefetch(next.id);
            }
            if record.id != NO_ID {
                registry.release(record.id);
            }
        }
    }

    /// Record `index`'s kept values (not `derived`).
    pub fn values_of(&self, index: usize) -> &[Option<Value>] {
        &self.values[index * self.stride..(index + 1) * self.stride]
    }

    /// Whether record `index` counts.
    pub fn counts(&self, index: usize) -> bool {
        self.records[index].row & COUNTS != 0
    }

    /// How many of records `first..stop` count.
    pub fn counting(&self, first: usize, stop: usize) -> i64 {
        if first == stop {
            return 0;
        }
        let end = self.records.get(stop).map_or(self.after, |record| record.before);
        end.wrapping_sub(self.records[first].before) as i64
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Record `index`'s values, derived or kept, to `each` in aggregate order.
    pub fn each_value(&self, index: usize, spin: &Spin, derivation: Option<&Derivation>,
                      mut each: impl FnMut(usize, Option<&Value>)) {
        if self.derived {
            let derivation = derivation.expect("a deriving store");
            for aggregate in 0..self.stride {
                each(aggregate, derivation.value(self.records[index].row, aggregate, spin).as_ref());
            }
        } else {
            for (aggregate, value) in self.values_of(index).iter().enumerate() {
                each(aggregate, value.as_ref());
            }
        }
    }

    /// A restored record's data (kept values).
    pub fn push(&mut self, counts: bool, id: u32, values: &mut [Option<Value>]) {
        debug_assert!(!self.derived);
        self.records.push(ShapedRecord { row: if counts { COUNTS } else { 0 }, id, before: self.after });
        self.after = self.after.wrapping_add(counts as u32);
        self.values.extend(values.iter_mut().map(Option::take));
    }

    /// Record `at`'s data; its spin is already `spins[at]`.
    fn insert(&mut self, at: usize, spins: &[Spin], counts: bool, id: u32, values: RecordValues,
              derivation: Option<&Derivation>) {
        let row = match values {
            RecordValues::Derived(row) => row,
            RecordValues::Given(_) => 0,
        } | if counts { COUNTS } else { 0 };
        if self.derived && matches!(values, RecordValues::Given(_)) {
            self.keep_values(spins, at, derivation.expect("a deriving store"));
        }
        if at == self.records.len() {
            self.records.push(ShapedRecord { row, id, before: self.after });
        } else {
            self.records.insert(at, ShapedRecord { row, id, before: self.records[at].before });
            if counts {
                self.records[at + 1..].iter_mut().for_each(|record| record.before = record.before.wrapping_add(1));
            }
        }
        self.after = self.after.wrapping_add(counts as u32);
        if self.derived || self.stride == 0 { // no values to keep (a job with types but no aggregates)
            return;
        }
        let from = at * self.stride;
        match values {
            RecordValues::Given(values) => {
                self.values.splice(from..from, values.iter_mut().map(Option::take));
            }
            RecordValues::Derived(row) => {
                let derivation = derivation.expect("a deriving store");
                self.values.splice(from..from, (0..self.stride).map(|index| derivation.value(row, index, &spins[at])));
            }
        }
    }

    /// From now on, keep the records' values (those of the records here: not yet the new one at
    /// `spins[new]`).
    #[inline(never)] // rare: a key of a deriving store that gets a record from Python
    fn keep_values(&mut self, spins: &[Spin], new: usize, derivation: &Derivation) {
        let spins = spins[..new].iter().chain(&spins[new + 1..]);
        let ShapedRecords { records, values, stride, .. } = self;
        values.reserve((records.len() + 1) * *stride);
        for (record, spin) in records.iter().zip(spins) {
            values.extend((0..*stride).map(|index| derivation.value(record.row, index, spin)));
        }
        self.derived = false;
    }

    /// Records `first..stop` gone, their ids released.
    fn drain(&mut self, first: usize, stop: usize) {
        self.release(first, stop);
        self.forget(first, stop);
    }

    /// Records `first..stop` gone, their ids not released (the caller has them).
    fn forget(&mut self, first: usize, stop: usize) {
        // The records after them are counted from where the first one was (nothing needs moving when
        // none is before them: a count is a difference within the records left).
        if first > 0 {
            let gone = self.counting(first, stop) as u32;
            self.records[stop..].iter_mut().for_each(|record| record.before = record.before.wrapping_sub(gone));
            self.after = self.after.wrapping_sub(gone);
        }
        self.records.drain(first..stop);
        if !self.derived && self.stride > 0 {
            self.values.drain(first * self.stride..stop * self.stride);
        }
    }
}

impl KeySessions {
    /// A shaped key's state: its records' data beside them.
    pub fn shaped(spins: Vec<Spin>, starts: Starts, closed_end: i64, records: ShapedRecords) -> Self {
        KeySessions { spins, starts, closed_end, due: 0, shaped: Some(Box::new(records)) }
    }

    pub fn records(&self) -> Option<&ShapedRecords> {
        self.shaped.as_deref()
    }

    /// Its records' rows and ids, when shaped.
    fn shaped_records(&self) -> &[ShapedRecord] {
        self.shaped.as_ref().map_or(&[], |shaped| &shaped.records)
    }

    fn push_shaped(&mut self, spin: Spin, counts: bool, id: u32, values: RecordValues,
                   derivation: Option<&Derivation>) {
        push_spin(&mut self.spins, spin);
        let at = self.spins.len() - 1;
        self.shaped.as_mut().expect("a shaped key").insert(at, &self.spins, counts, id, values, derivation);
    }

    fn insert_shaped(&mut self, at: usize, spin: Spin, counts: bool, id: u32, values: RecordValues,
                     derivation: Option<&Derivation>) {
        self.spins.insert(at, spin);
        self.shaped.as_mut().expect("a shaped key").insert(at, &self.spins, counts, id, values, derivation);
    }

    /// The record just inserted at `at` taken back out (its id still the caller's).
    fn remove_shaped(&mut self, at: usize) {
        self.spins.remove(at);
        self.shaped.as_mut().expect("a shaped key").forget(at, at + 1);
    }

    fn drain(&mut self, first: usize, stop: usize) {
        self.spins.drain(first..stop);
        if let Some(shaped) = &mut self.shaped {
            shaped.drain(first, stop);
        }
    }

    fn sessions(&self) -> Vec<(usize, usize)> {
        let n = self.starts.len();
        (0..n).map(|i| (self.starts[i], if i + 1 < n { self.starts[i + 1] } else { self.spins.len() })).collect()
    }
}

/// A (game, channel) pair looked up in the labels without making one: hashed as the tuple is.
#[derive(Hash)]
struct LabelQuery<'a>(Option<&'a str>, Option<&'a str>);

impl hashbrown::Equivalent<LabelPair> for LabelQuery<'_> {
    fn equivalent(&self, pair: &LabelPair) -> bool {
        self.0 == pair.0.as_deref() && self.1 == pair.1.as_deref()
    }
}

/// The shared (game, channel) pair of a record: `previous` when it is the same pair (most records
/// of a player), else the one in `labels` (made once per distinct pair, so records share it).
fn label_for(labels: &mut HashMap<LabelPair, Label>, previous: Option<&Label>,
             game: Option<&str>, channel: Option<&str>) -> Option<Label> {
    if game.is_none() && channel.is_none() {
        return None;
    }
    if let Some(label) = previous {
        if label.0.as_deref() == game && label.1.as_deref() == channel {
            return Some(label.clone());
        }
    }
    if let Some(shared) = labels.get(&LabelQuery(game, channel)) {
        return Some(shared.clone());
    }
    if labels.len() >= 65536 {
        labels.clear();
    }
    let pair = (game.map(Box::from), channel.map(Box::from));
    let shared: Label = Rc::new(pair.clone());
    labels.insert(pair, shared.clone());
    Some(shared)
}

/// Append a record, growing the vector a little at a time: a session holds a few records, and
/// doubling would leave most open sessions with room for twice what they hold.
fn push_spin(spins: &mut Vec<Spin>, spin: Spin) {
    if spins.len() == spins.capacity() {
        spins.reserve_exact((spins.len() / 2).max(2));
    }
    spins.push(spin);
}

/// The records of [first, stop) that count towards event_count and max_events.
fn counting(all_count: bool, state: &KeySessions, first: usize, stop: usize) -> i64 {
    if all_count || state.shaped.is_none() {
        (stop - first) as i64
    } else {
        state.shaped.as_ref().map_or(0, |shaped| shaped.counting(first, stop))
    }
}

/// `counting`, as far as comparing it (or it plus one) with max_events goes: the number of records
/// while even all of them and one more stay below the cap (no pass over their rows per record).
fn cap_count(rules: &SessionRules, state: &KeySessions, first: usize, stop: usize) -> i64 {
    let records = (stop - first) as i64;
    if rules.max_events.is_none_or(|max| records + 1 < max) {
        records
    } else {
        counting(rules.all_count, state, first, stop)
    }
}

/// Session start indexes from `begin`; `known` (sorted) are an earlier sweep's starts, `shift` back.
pub fn sweep(spins: &[Spin], rules: &SessionRules, begin: usize, known: &[usize], shift: usize) -> Starts {
    weighted_sweep(spins, rules, begin, known, shift, |_| 1)
}

/// `sweep` when some records may not count (SPEC 7.1): `weight(index)` is 1 for a record that counts,
/// 0 for one that does not; only a counting record is cut by max_events.
fn weighted_sweep(spins: &[Spin], rules: &SessionRules, begin: usize, known: &[usize], shift: usize,
                  weight: impl Fn(usize) -> i64) -> Starts {
    let max_events = rules.max_events.unwrap_or(NEVER);
    let max_duration = rules.max_duration.unwrap_or(NEVER);
    let mut starts = Starts::from_slice(&[begin]);
    let (mut start, mut end) = (spins[begin].time, spins[begin].time);
    let mut count = weight(begin);
    for index in begin + 1..spins.len() {
        let (time, weight) = (spins[index].time, weight(index));
        // Full only for a counting record (`&`, not `&&`: whether a record counts follows no pattern
        // a branch predictor could learn, in a feed of bets and wins).
        let full = (count >= max_events) & (weight == 1);
        if full || time - end > rules.gap || time - start > max_duration {
            // A cut where the earlier sweep had one: from here on the same records, the same cuts.
            if index >= shift && known.binary_search(&(index - shift)).is_ok() {
                starts.extend(known.iter().map(|old| old + shift).filter(|&s| s >= index));
                return starts;
            }
            starts.push(index);
            start = time;
            count = 0;
        }
        end = time;
        count += weight;
    }
    starts
}

pub struct SessionStore {
    pub rules: SessionRules,
    pub keys: KeyMap<KeySessions>,
    pub closed_ends: HashMap<Key, i64>,
    due: DueQueue<Slot, (Key, Slot)>, // by slot while waiting; by key (then slot) once in the heap
    forget: DueQueue<Key>,
    pub next_due: i64,
    labels: HashMap<LabelPair, Label>,
    pub track_changes: bool,
    pub changed: ChangedKeys,
    max_events: i64,
    max_duration: i64,
    event_name: Vec<u8>,
    stamp_end: bool,
    pub out: Vec<(Key, Vec<u8>)>,
    pub shaped: bool,
    pub aggregates: Vec<Aggregate>,
    pub derivation: Option<Derivation>, // set by the engine when the aggregates' values can be derived
    pub ids: Ids, // the engine's id registry: its records' ids (with an id path, or restored) are held there
}

impl SessionStore {
    pub fn new(rules: SessionRules, track_changes: bool, event_name: Vec<u8>, stamp_end: bool, shaped: bool,
               aggregates: Vec<Aggregate>, ids: Ids) -> Self {
        SessionStore {
            shaped,
            aggregates,
            derivation: None,
            ids,
            max_events: rules.max_events.unwrap_or(NEVER),
            max_duration: rules.max_duration.unwrap_or(NEVER),
            rules,
            keys: KeyMap::default(),
            closed_ends: HashMap::default(),
            due: DueQueue::new(),
            forget: DueQueue::new(),
            next_due: NEVER,
            labels: HashMap::default(),
            track_changes,
            changed: ChangedKeys::default(),
            event_name,
            stamp_end,
            out: Vec::new(),
        }
    }

    fn mark(&mut self, key: &Key) {
        if self.track_changes {
            match self.keys.find(key) {
                Some(slot) => self.changed.mark(slot),
                None => self.changed.mark_gone(key.clone()),
            }
        }
    }

    fn mark_slot(&mut self, slot: Slot) {
        if self.track_changes {
            self.changed.mark(slot);
        }
    }

    /// `slot`'s key is next due at `due`: into the queue, and the store's next due time lowered to it.
    fn schedule_slot(&mut self, slot: Slot, due: i64) {
        self.keys.state_mut(slot).due = due;
        self.due.push(due, slot, |when, slot| due_entry(&self.keys, when, slot));
        self.next_due = self.next_due.min(due);
    }

    fn peek_due(&mut self) -> Option<i64> {
        self.due.peek(|when, slot| due_entry(&self.keys, when, slot))
    }

    /// Take `key` out (with the ids its records held).
    fn remove(&mut self, key: &str) -> Option<KeySessions> {
        let (slot, key, state) = self.keys.remove(key)?;
        if self.track_changes {
            self.changed.removed(slot, &key);
        }
        Some(state)
    }

    pub fn label(&mut self, game: Option<&str>, channel: Option<&str>) -> Option<Label> {
        label_for(&mut self.labels, None, game, channel)
    }

    /// One record at stream time `now`; false when it is late (nothing changes).
    #[allow(clippy::too_many_arguments)]
    pub fn offer(&mut self, key: &str, time: i64, stake: i64, win: i64, game: Option<&str>, channel: Option<&str>,
                 now: i64) -> bool {
        // The common case first, in one lookup: a key with open records, this one not older than its last.
        if let Some(slot) = self.keys.find(key) {
            let (owned, state) = self.keys.entry_mut(slot);
            if time <= state.closed_end {
                return false;
            }
            let last = state.spins.last().unwrap();
            if time < last.time {
                let key = owned.clone();
                let label = label_for(&mut self.labels, None, game, channel);
                if !self.insert_out_of_order(&key, time, stake, win, label, now) {
                    return false;
                }
                self.mark(&key);
                return true;
            }
            let first = *state.starts.last().unwrap();
            let count = (state.spins.len() - first) as i64;
            let cut = count >= self.max_events || time - last.time > self.rules.gap
                || time - state.spins[first].time > self.max_duration;
            let new_count = if cut { 1 } else { count + 1 };
            let due = self.rules.close_at(time, new_count);
            if due <= now {
                return false;
            }
            // A player's records mostly share the previous one's (game, channel): reuse it.
            let label = label_for(&mut self.labels, last.label.as_ref(), game, channel);
            if cut {
                state.starts.push(state.spins.len());
            }
            push_spin(&mut state.spins, Spin { time, stake, win, label });
            if due < state.due {
                self.schedule_slot(slot, due);
            }
            self.mark_slot(slot);
            return true;
        }
        // A key with no open records: a new session, unless its last closed one makes this late.
        let closed_end = self.closed_ends.get(key).copied().unwrap_or(NO_CLOSED_END);
        let due = self.rules.close_at(time, 1);
        if time <= closed_end || due <= now {
            return false;
        }
        let label = label_for(&mut self.labels, None, game, channel);
        self.closed_ends.remove(key);
        let spins = vec![Spin { time, stake, win, label }];
        let slot = self.keys.insert(Key::from(key), KeySessions { spins, starts: Starts::first_only(), closed_end, ..Default::default() });
        self.schedule_slot(slot, due);
        self.mark_slot(slot);
        true
    }

    /// `offer` for SPEC section 7 (`_offer_shaped`): records that may not count, and ids. `id`: the
    /// record's id slot with a holder (or NO_ID), kept by the record when this returns true, the
    /// caller's to release when false.
    #[allow(clippy::too_many_arguments)]
    pub fn offer_shaped(&mut self, key: &str, time: i64, stake: i64, win: i64, game: Option<&str>,
                        channel: Option<&str>, now: i64, counts: bool, id: u32,
                        values: RecordValues) -> bool {
        let rules = self.rules.clone();
        let weight = counts as i64;
        match self.keys.find(key) {
            None => {
                let closed_end = self.closed_ends.get(key).copied().unwrap_or(NO_CLOSED_END);
                let due = rules.close_at(time, weight);
                if time <= closed_end || due <= now {
                    return false;
                }
                let label = label_for(&mut self.labels, None, game, channel);
                self.closed_ends.remove(key);
                let spins = vec![Spin { time, stake, win, label }];
                let derivation = self.derivation.as_ref();
                let mut records = ShapedRecords::with_capacity(self.aggregates.len(), 4, derivation.is_some(),
                                                               self.ids.clone());
                records.insert(0, &spins, counts, id, values, derivation);
                let slot = self.keys.insert(Key::from(key), KeySessions::shaped(spins, Starts::first_only(), closed_end, records));
                self.schedule_slot(slot, due);
                self.mark_slot(slot);
            }
            Some(slot) => {
                let (owned, state) = self.keys.entry_mut(slot);
                if time <= state.closed_end {
                    return false;
                }
                let last = state.spins.last().unwrap();
                // A player's records mostly share the previous one's (game, channel): reuse it.
                let label = label_for(&mut self.labels, last.label.as_ref(), game, channel);
                let spin = Spin { time, stake, win, label };
                let last = last.time;
                if time >= last {
                    let first = *state.starts.last().unwrap();
                    let count = cap_count(&rules, state, first, state.spins.len());
                    let cut = (weight == 1 && count >= self.max_events) || time - last > rules.gap
                        || time - state.spins[first].time > self.max_duration;
                    let due = rules.close_at(time, if cut { weight } else { count + weight });
                    if due <= now {
                        return false;
                    }
                    if cut {
                        state.starts.push(state.spins.len());
                    }
                    state.push_shaped(spin, counts, id, values, self.derivation.as_ref());
                    if due < state.due {
                        self.schedule_slot(slot, due);
                    }
                    self.mark_slot(slot);
                } else {
                    let owned = owned.clone();
                    let at = state.spins.partition_point(|s| s.time <= time);
                    let (keep, inside) = inside_session(&state.starts, at, state.spins.len());
                    // Strictly inside a session that stays within max_events, a record moves no cut
                    // (no gap grows, no start moves, no count passes the cap before the session's
                    // end): the later starts shift by one, with no sweep (as `insert_out_of_order`).
                    let shift = inside && (weight == 0 || cap_count(&rules, state, state.starts[keep],
                        state.starts.get(keep + 1).copied().unwrap_or(state.spins.len())) < self.max_events);
                    state.insert_shaped(at, spin, counts, id, values, self.derivation.as_ref());
                    let old_starts = std::mem::take(&mut state.starts);
                    state.starts = if shift {
                        shifted(&old_starts, keep)
                    } else {
                        sweep_after_insert(&rules, state, &old_starts, keep)
                    };
                    let session = state.starts.partition_point(|&s| s <= at) - 1;
                    let first = state.starts[session];
                    let stop = if session + 1 < state.starts.len() { state.starts[session + 1] } else { state.spins.len() };
                    if rules.close_at(state.spins[stop - 1].time, cap_count(&rules, state, first, stop)) <= now {
                        state.remove_shaped(at);
                        state.starts = old_starts;
                        return false;
                    }
                    self.settle(&owned, now);
                    self.mark(&owned); // by key: settling may have closed all its sessions
                }
            }
        }
        true
    }

    fn insert_out_of_order(&mut self, key: &Key, time: i64, stake: i64, win: i64, label: Option<Label>,
                           now: i64) -> bool {
        let rules = self.rules.clone();
        let max_events = self.max_events;
        let state = self.keys.get_mut(key).unwrap();
        let at = state.spins.partition_point(|spin| spin.time <= time);
        state.spins.insert(at, Spin { time, stake, win, label });
        let old_starts = state.starts.clone();
        let (keep, inside) = inside_session(&old_starts, at, state.spins.len() - 1);
        let stop = if keep + 1 < old_starts.len() { old_starts[keep + 1] } else { state.spins.len() - 1 };
        if inside && ((stop - old_starts[keep]) as i64) < max_events {
            state.starts = shifted(&old_starts, keep);
        } else {
            state.starts = sweep_after_insert(&rules, state, &old_starts, keep);
        }
        let session = state.starts.partition_point(|&s| s <= at) - 1;
        let first = state.starts[session];
        let stop = if session + 1 < state.starts.len() { state.starts[session + 1] } else { state.spins.len() };
        if rules.close_at(state.spins[stop - 1].time, (stop - first) as i64) <= now {
            state.spins.remove(at);
            state.starts = old_starts;
            return false;
        }
        self.settle(key, now);
        true
    }

    pub fn close_due(&mut self, now: i64) {
        while let Some(when) = self.peek_due() {
            if when > now {
                break;
            }
            let (when, (key, slot)) = self.due.pop(|when, slot| due_entry(&self.keys, when, slot)).unwrap();
            match self.keys.at(slot) {
                Some((held, state)) if *held == key && state.due == when => {
                    let close_time = close_time(&self.rules, state);
                    if close_time != when {
                        // Scheduled before later records moved the key's close time: back into the
                        // queue at its own time, so that keys close in (close time, key) order, as
                        // after a restore.
                        self.schedule(&key, close_time);
                        continue;
                    }
                    self.settle(&key, now)
                }
                _ => continue,
            }
        }
        while let Some(when) = self.forget.peek(as_is) {
            if when > now {
                break;
            }
            let (when, key) = self.forget.pop(as_is).unwrap();
            if let Some(&closed_end) = self.closed_ends.get(&key) {
                if self.rules.forget_at(closed_end) == Some(when) {
                    self.closed_ends.remove(&key);
                    self.mark(&key);
                }
            }
        }
        self.update_next_due();
    }

    fn update_next_due(&mut self) {
        let due = self.peek_due().unwrap_or(NEVER);
        let forget = self.forget.peek(as_is).unwrap_or(NEVER);
        self.next_due = due.min(forget);
    }

    pub fn close_all(&mut self) {
        let mut keys: Vec<Key> = self.keys.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let state = self.keys.get(&key).unwrap();
            let (sessions, total) = (state.sessions(), state.spins.len());
            for (first, stop) in sessions {
                self.emit_session(&key, first, stop, (stop < total).then_some(stop), true);
            }
        }
        self.changed.keep_by_name(&self.keys); // their states are gone: a commit after this says so
        self.keys.clear();
        self.closed_ends.clear();
        self.due.clear();
        self.forget.clear();
        self.next_due = NEVER;
    }

    fn settle(&mut self, key: &Key, now: i64) {
        let rules = self.rules.clone();
        let state = self.keys.get(key).unwrap();
        if state.starts.len() == 1 {
            let count = state.spins.len();
            let due = close_time(&rules, state);
            if due > now {
                self.schedule(key, due);
                return;
            }
            self.emit_session(key, 0, count, None, false);
            self.mark(key);
            self.drop_empty(key, now);
            return;
        }
        let sessions = state.sessions();
        let close_times: Vec<i64> =
            sessions.iter().map(|&(first, stop)| session_close_time(&rules, state, first, stop)).collect();
        let closing = with_followers(&sessions, &close_times, now);
        if !closing.is_empty() {
            self.close_sessions(key, &closing);
            self.mark(key);
        }
        let state = self.keys.get(key).unwrap();
        if state.spins.is_empty() {
            self.drop_empty(key, now);
        } else {
            let due = close_time(&rules, state);
            self.schedule(key, due);
        }
    }

    fn drop_empty(&mut self, key: &Key, now: i64) {
        let state = self.remove(key).unwrap();
        if state.closed_end == NO_CLOSED_END {
            return;
        }
        let forget_at = self.rules.forget_at(state.closed_end);
        if forget_at.is_none_or(|at| at > now) {
            self.closed_ends.insert(key.clone(), state.closed_end);
            if let Some(at) = forget_at {
                self.forget.push(at, key.clone(), as_is);
                if at < self.next_due {
                    self.next_due = at;
                }
            }
        }
    }

    /// Emit the given sessions (first, stop, follower) and drop their records (not at end of
    /// input: see close_all).
    fn close_sessions(&mut self, key: &Key, closing: &[(usize, usize, Option<usize>)]) {
        for &(first, stop, follower) in closing {
            self.emit_session(key, first, stop, follower, false);
        }
        let state = self.keys.get_mut(key).unwrap();
        let total = state.spins.len();
        let closed_starts: std::collections::HashSet<usize> = closing.iter().map(|&(first, _, _)| first).collect();
        let mut removed = 0;
        let mut starts = Starts::new();
        for (index, &first) in state.starts.iter().enumerate() {
            if closed_starts.contains(&first) {
                let stop = if index + 1 < state.starts.len() { state.starts[index + 1] } else { total };
                removed += stop - first;
            } else {
                starts.push(first - removed);
            }
        }
        for &(first, stop, _) in closing.iter().rev() {
            state.drain(first, stop);
        }
        state.starts = starts.compact();
    }

    /// Emit the session of records [first, stop) and remember its end as closed; `follower` is
    /// the index of the record that follows it in the sweep as it closes (None: none).
    fn emit_session(&mut self, key: &Key, first: usize, stop: usize, follower: Option<usize>, end_of_input: bool) {
        let state = self.keys.get_mut(key).unwrap();
        if let Some(records) = &state.shaped {
            records.prefetch_ids(first, stop); // released after this record is written: their misses overlap it
        }
        let count = counting(self.rules.all_count, state, first, stop) as usize;
        let (start, end) = (state.spins[first].time, state.spins[stop - 1].time);
        let reason = if Some(count as i64) == self.rules.max_events {
            MAX_EVENTS // a full session closes as such, whatever follows (SPEC 7.1)
        } else if let Some(next) = follower {
            // What cut the session from its next record cuts it from any later one.
            self.rules.cut_reason(start, end, count as i64, state.spins[next].time).expect("the sweep cut here")
        } else if end_of_input {
            END_OF_INPUT
        } else {
            INACTIVITY
        };
        let (mut game, mut channel): (Option<&str>, Option<&str>) = (None, None);
        for label in state.spins[first..stop].iter().rev().filter_map(|spin| spin.label.as_ref()) {
            if game.is_none() {
                game = label.0.as_deref();
            }
            if channel.is_none() {
                channel = label.1.as_deref();
            }
            if game.is_some() && channel.is_some() {
                break;
            }
        }
        let (mut stake, mut win) = (0i128, 0i128);
        for spin in &state.spins[first..stop] {
            stake += spin.stake as i128;
            win += spin.win as i128;
        }
        let mut record = session_record(&self.event_name, self.stamp_end, &SessionFields {
            key, start, end, count, stake, win, game, channel, reason,
        });
        if let Some(records) = state.shaped.as_deref().filter(|records| records.stride > 0) {
            let mut states: SmallVec<[State; 4]> = self.aggregates.iter().map(Aggregate::empty).collect();
            if records.derived {
                // An aggregate at a time: its kind the same through the inner loop, which branches alike.
                let derivation = self.derivation.as_ref().expect("a deriving store");
                let (spins, shaped) = (&state.spins[first..stop], &records.records[first..stop]);
                for (index, (aggregate, state)) in self.aggregates.iter().zip(states.iter_mut()).enumerate() {
                    let mut derived = spins.iter().zip(shaped).filter_map(|record| timed_value(derivation, index, record));
                    match aggregate.kind {
                        // The records are in sweep order (event time, then arrival): first is the
                        // first value, last the last, with no need to look at the others.
                        Kind::First | Kind::Last => {
                            let edge = if aggregate.kind == Kind::First { derived.next() } else {
                                spins.iter().zip(shaped).rev().find_map(|record| timed_value(derivation, index, record))
                            };
                            if let Some((time, value)) = edge {
                                aggregate.add_derived(state, value, time);
                            }
                        }
                        // A record mostly has its previous one's (game, channel), shared: the very
                        // same text (same address) is already counted, with no search of the set.
                        Kind::CountDistinct => {
                            let mut previous: Option<*const str> = None;
                            for (time, value) in derived {
                                if let Derived::Text(text) = value {
                                    if previous == Some(text as *const str) {
                                        continue;
                                    }
                                    previous = Some(text as *const str);
                                }
                                aggregate.add_derived(state, value, time);
                            }
                        }
                        _ => derived.for_each(|(time, value)| aggregate.add_derived(state, value, time)),
                    }
                }
            } else {
                let values = records.values[first * records.stride..stop * records.stride].chunks_exact(records.stride);
                for (spin, values) in state.spins[first..stop].iter().zip(values) {
                    for ((aggregate, state), value) in self.aggregates.iter().zip(states.iter_mut()).zip(values) {
                        if let Some(value) = value {
                            aggregate.add(state, value, spin.time);
                        }
                    }
                }
            }
            with_aggregates(&mut record, &self.aggregates, &states);
        }
        self.out.push((key.clone(), record));
        if end > state.closed_end {
            state.closed_end = end;
        }
    }

    fn schedule(&mut self, key: &Key, due: i64) {
        let slot = self.keys.find(key).unwrap();
        self.schedule_slot(slot, due);
    }

    pub fn open_count(&self) -> usize {
        self.keys.values().map(|state| state.starts.len()).sum()
    }

    /// Load one key's state (None: gone); `reschedule` after the last one.
    pub fn restore(&mut self, key: &str, state: Option<(i64, Vec<Spin>, ShapedRecords)>) {
        if !self.closed_ends.is_empty() {
            self.closed_ends.remove(key);
        }
        let Some((closed_end, spins, records)) = state else {
            self.remove(key);
            return;
        };
        if spins.is_empty() {
            self.remove(key);
            self.closed_ends.insert(Key::from(key), closed_end);
            return;
        }
        let mut state = if self.shaped {
            KeySessions::shaped(spins, Starts::new(), closed_end, records)
        } else {
            KeySessions { spins, closed_end, ..Default::default() }
        };
        state.starts = if self.shaped { resweep(&self.rules, &state) } else if state.spins.len() == 1 {
            Starts::first_only()
        } else {
            sweep(&state.spins, &self.rules, 0, &[], 0)
        };
        self.keys.set(key, state);
    }

    /// Room for `count` more keys at once, rather than growing the map step by step while restoring.
    pub fn reserve(&mut self, count: usize) {
        self.keys.reserve(count);
    }

    pub fn reschedule(&mut self) {
        let rules = self.rules.clone();
        let mut due = Vec::with_capacity(self.keys.len());
        for (slot, _, state) in self.keys.iter_mut() {
            state.due = close_time(&rules, state);
            due.push((state.due, slot));
        }
        self.due = DueQueue::from_entries(due, |when, slot| due_entry(&self.keys, when, slot));
        self.forget = DueQueue::from_entries(self.closed_ends.iter()
            .filter_map(|(key, &end)| rules.forget_at(end).map(|when| (when, key.clone())))
            .collect(), as_is);
        self.update_next_due();
    }
}

/// The sessions due at `now`, each with the record that follows it in the sweep as it closes.
///
/// Sessions close in order of close time, and a closed session's records leave the sweep: a full
/// session can close before an earlier one that is not full, so a session that closes strictly
/// sooner in the same batch is not what follows (SPEC 3 close reason: the result does not depend
/// on whether stream time reached both close times at once).
fn with_followers(sessions: &[(usize, usize)], close_times: &[i64], now: i64) -> Vec<(usize, usize, Option<usize>)> {
    // The nearest later session that closes no sooner, for each, from the right with a stack (one
    // pass: a hot key can hold thousands of sessions). A session popped here for closing sooner than
    // this one is never the answer for an earlier one either: this one is nearer and closes later.
    let mut followers = vec![None; sessions.len()];
    let mut later: Vec<usize> = Vec::new(); // indexes; close times not decreasing from the top
    for index in (0..sessions.len()).rev() {
        while later.last().is_some_and(|&top| close_times[top] < close_times[index]) {
            later.pop();
        }
        followers[index] = later.last().map(|&top| sessions[top].0);
        later.push(index);
    }
    sessions
        .iter()
        .zip(close_times)
        .zip(followers)
        .filter_map(|((&(first, stop), &close_time), follower)| (close_time <= now).then_some((first, stop, follower)))
        .collect()
}

/// A waiting due entry as the heap orders it: (key, slot), or None when it is out of date (the
/// key has gone, or was given another due time, which came with an entry of its own).
fn due_entry(keys: &KeyMap<KeySessions>, when: i64, slot: Slot) -> Option<(Key, Slot)> {
    let (key, state) = keys.at(slot)?;
    (state.due == when).then(|| (key.clone(), slot))
}

/// When the first of a key's open sessions closes (`_close_time`).
fn close_time(rules: &SessionRules, state: &KeySessions) -> i64 {
    if state.starts.len() == 1 {
        return session_close_time(rules, state, 0, state.spins.len());
    }
    state.sessions().into_iter().map(|(first, stop)| session_close_time(rules, state, first, stop)).min().unwrap()
}

/// When the session of records [first, stop) closes.
fn session_close_time(rules: &SessionRules, state: &KeySessions, first: usize, stop: usize) -> i64 {
    rules.close_at(state.spins[stop - 1].time, cap_count(rules, state, first, stop))
}

/// For a record going in at index `at` of `len` records: the session it falls in (the one before
/// it, at a start), and whether it lands strictly inside it (after its first record, before its last).
fn inside_session(starts: &[usize], at: usize, len: usize) -> (usize, bool) {
    let keep = if at > 0 { starts.partition_point(|&s| s < at) - 1 } else { 0 };
    let stop = if keep + 1 < starts.len() { starts[keep + 1] } else { len };
    (keep, 0 < at && starts[keep] < at && at < stop)
}

/// `starts` once a record went in inside session `keep`: the later sessions start one record later.
fn shifted(starts: &[usize], keep: usize) -> Starts {
    let mut shifted = Starts::from_slice(&starts[..=keep]);
    shifted.extend(starts[keep + 1..].iter().map(|first| first + 1));
    shifted
}

/// A shaped key's session starts, from scratch (as the Python core's `_resweep`).
fn resweep(rules: &SessionRules, state: &KeySessions) -> Starts {
    sweep_from(rules, state, 0, &[], 0)
}

/// The starts after a record went in (one more record than `old_starts` knew) inside session `keep`:
/// the sessions before it stay; from it on, swept as far as cuts move.
fn sweep_after_insert(rules: &SessionRules, state: &KeySessions, old_starts: &[usize], keep: usize) -> Starts {
    let mut starts = Starts::from_slice(&old_starts[..keep]);
    starts.extend(sweep_from(rules, state, old_starts[keep], &old_starts[keep + 1..], 1).iter().copied());
    starts.compact()
}

/// `sweep` of a key's records from `begin`, only counting records counted when some do not (as `counting`).
fn sweep_from(rules: &SessionRules, state: &KeySessions, begin: usize, known: &[usize], shift: usize) -> Starts {
    if rules.all_count || state.shaped.is_none() {
        sweep(&state.spins, rules, begin, known, shift)
    } else {
        let records = state.shaped_records();
        weighted_sweep(&state.spins, rules, begin, known, shift, |index| (records[index].row & COUNTS != 0) as i64)
    }
}

/// A record's (event time, derived value) for aggregate `index`, if it has one.
fn timed_value<'a>(derivation: &Derivation, index: usize, (spin, record): (&'a Spin, &ShapedRecord)) -> Option<(i64, Derived<'a>)> {
    Some((spin.time, derivation.derive(record.row, index, spin)?))
}
