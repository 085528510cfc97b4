//! SPEC section 7: `sessionizer/core/shapes.py`, the same states, JSON and MessagePack.
//!
//! Records of a shaped job are read by `decode.rs` (or, when it is not sure, by Python,
//! through `offer_shaped`); here are the extra aggregates' values and states and the ids
//! that open sessions and windows hold.

use std::hash::BuildHasher;
use std::cell::RefCell;
use std::rc::Rc;

use compact_str::CompactString;
use smallvec::SmallVec;

use crate::msgpack;
use crate::output::{int, json_amount, json_string};
use crate::sessions::Spin;
use hashbrown::HashTable;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sum,
    Count,
    Min,
    Max,
    First,
    Last,
    CountDistinct,
}

impl Kind {
    pub fn of(name: &str) -> Option<Kind> {
        Some(match name {
            "sum" => Kind::Sum,
            "count" => Kind::Count,
            "min" => Kind::Min,
            "max" => Kind::Max,
            "first" => Kind::First,
            "last" => Kind::Last,
            "count_distinct" => Kind::CountDistinct,
            _ => return None,
        })
    }
}

/// What one record brings to one aggregate (None in a record's `Values`: nothing).
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64), // micros (sum, min, max), or 1 (count)
    // first, last: the JSON text as written; count_distinct: the string itself (the aggregate's kind
    // says which). Short ones in line: no allocation. One text variant, not two, keeps a value in
    // 24 bytes (the int fits beside the string's spare tag byte): a record holds one per aggregate.
    Text(CompactString),
}

/// A record's values for its aggregates, in line for the usual few (no allocation per record).
pub type Values = SmallVec<[Option<Value>; 4]>;

#[derive(Clone)]
pub enum State {
    Total(i128),                       // sum, count
    Extreme(Option<i128>),             // min, max
    Edge(Option<(i64, CompactString)>),    // first, last: (event time, JSON text)
    // count_distinct: sorted and without repeats (encoded as msgspec sorts the set); a vector, not a
    // tree: most sessions and windows see a few values, and a tree allocates a node even for one.
    Distinct(Vec<CompactString>),
}

pub struct Aggregate {
    pub key_json: Vec<u8>, // `,"name":`
    pub kind: Kind,
}

impl Aggregate {
    pub fn new(name: &str, kind: Kind) -> Self {
        let mut key_json = b",".to_vec();
        json_string(&mut key_json, name);
        key_json.push(b':');
        Aggregate { key_json, kind }
    }

    pub fn empty(&self) -> State {
        match self.kind {
            Kind::Sum | Kind::Count => State::Total(0),
            Kind::Min | Kind::Max => State::Extreme(None),
            Kind::First | Kind::Last => State::Edge(None),
            Kind::CountDistinct => State::Distinct(Vec::new()),
        }
    }

    /// `add_value`: first keeps the earliest event time (of equal ones, the first to come), last the
    /// latest (of equal ones, the last to come).
    pub fn add(&self, state: &mut State, value: &Value, time: i64) {
        match (state, value) {
            // first, last: the JSON text as read (a derived value's is made from its string)
            (State::Edge(current), Value::Text(text)) => {
                if self.replaces(current, time) {
                    *current = Some((time, text.clone()));
                }
            }
            (state, Value::Int(v)) => self.add_derived(state, Derived::Int(*v), time),
            (state, Value::Text(text)) => self.add_derived(state, Derived::Text(text), time),
        }
    }

    /// Whether a first or last value at `time` takes the place of the current one.
    fn replaces(&self, current: &Option<(i64, CompactString)>, time: i64) -> bool {
        match current {
            None => true,
            Some((at, _)) => if self.kind == Kind::First { time < *at } else { time >= *at },
        }
    }

    /// `add` of a value borrowed (a derived one): a string is copied only when the state keeps it.
    pub fn add_derived(&self, state: &mut State, value: Derived, time: i64) {
        match (state, value) {
            (State::Total(total), Derived::Int(v)) => *total += v as i128,
            (State::Extreme(current), Derived::Int(v)) => {
                let v = v as i128;
                let better = match current {
                    None => true,
                    Some(c) => if self.kind == Kind::Min { v < *c } else { v > *c },
                };
                if better {
                    *current = Some(v);
                }
            }
            (State::Edge(current), Derived::Text(text)) => {
                if self.replaces(current, time) {
                    *current = Some((time, json_text(text)));
                }
            }
            (State::Distinct(seen), Derived::Text(text)) => {
                if let Err(at) = seen.binary_search_by(|held| held.as_str().cmp(text)) {
                    seen.insert(at, CompactString::from(text));
                }
            }
            _ => {} // a value of another kind cannot reach here: it is read (or derived) per kind
        }
    }

    pub fn write_json(&self, out: &mut Vec<u8>, state: &State) {
        out.extend_from_slice(&self.key_json);
        match state {
            State::Total(total) if self.kind == Kind::Sum => json_amount(out, *total),
            State::Total(total) => int(out, *total as i64),
            State::Extreme(Some(v)) => json_amount(out, *v),
            State::Edge(Some((_, text))) => out.extend_from_slice(text.as_bytes()),
            State::Distinct(seen) => int(out, seen.len()),
            State::Extreme(None) | State::Edge(None) => out.extend_from_slice(b"null"),
        }
    }
}

/// Where a record's value for one session aggregate comes from when it is a copy of what the
/// record's session keeps anyway: an aggregate over the same path as the record type's stake, win,
/// game_code or channel (`largest_win` over a WIN's `amount`, `distinct_games` over `game`), or a
/// count. Such values are derived when a session closes (or is written to state), not kept per
/// record: 2 bytes a record (its `Row`) instead of 24 per aggregate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Source {
    Nothing, // the aggregate does not take records of this type
    One,     // count
    Stake { flip: bool }, // sum, min, max: the amount (`flip`: min and max of a negated type, whose stake was negated)
    Win { flip: bool },
    Game { json: bool }, // first, last (`json`: their JSON text), count_distinct (the string)
    Channel { json: bool },
}

/// A record's type row (an index into `Derivation::rows`), whether its stake and win fields were
/// present (an absent or null amount is 0 to the totals, but nothing to an aggregate), and whether it counts.
pub type Row = u16;
pub const STAKE_PRESENT: Row = 1 << 8;
pub const WIN_PRESENT: Row = 1 << 9;
pub const COUNTS: Row = 1 << 10; // the record counts towards event_count and max_events (SPEC 7.1)

/// Each type row's source per session aggregate (row 0: a record of no known type).
pub struct Derivation {
    pub rows: Vec<Box<[Source]>>,
}

/// A derived value, borrowed from the record's spin: an int, or a string (for first and last, the
/// JSON text is made only when it becomes the state).
pub enum Derived<'a> {
    Int(i64),
    Text(&'a str),
}

impl Derivation {
    /// Record (`row`, `spin`)'s value for aggregate `index`, as the decoder would have read it.
    #[inline]
    pub fn derive<'a>(&self, row: Row, index: usize, spin: &'a Spin) -> Option<Derived<'a>> {
        let amount = |present: bool, micros: i64, flip: bool| present.then_some(Derived::Int(if flip { -micros } else { micros }));
        match self.rows[(row & 0xff) as usize][index] {
            Source::Nothing => None,
            Source::One => Some(Derived::Int(1)),
            Source::Stake { flip } => amount(row & STAKE_PRESENT != 0, spin.stake, flip),
            Source::Win { flip } => amount(row & WIN_PRESENT != 0, spin.win, flip),
            Source::Game { .. } => spin.label.as_ref()?.0.as_deref().map(Derived::Text),
            Source::Channel { .. } => spin.label.as_ref()?.1.as_deref().map(Derived::Text),
        }
    }

    /// `derive`, as the `Value` the decoder would have made.
    pub fn value(&self, row: Row, index: usize, spin: &Spin) -> Option<Value> {
        let json = matches!(self.rows[(row & 0xff) as usize][index], Source::Game { json: true } | Source::Channel { json: true });
        Some(match self.derive(row, index, spin)? {
            Derived::Int(value) => Value::Int(value),
            Derived::Text(text) if json => Value::Text(json_text(text)),
            Derived::Text(text) => Value::Text(CompactString::from(text)),
        })
    }
}

/// `text` as a JSON string, built in line when short and plain (no allocation, no escaping pass).
pub fn json_text(text: &str) -> CompactString {
    let plain = !text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20);
    let mut inline = [0u8; 24];
    if plain && text.len() + 2 <= inline.len() {
        inline[0] = b'"';
        inline[1..=text.len()].copy_from_slice(text.as_bytes());
        inline[text.len() + 1] = b'"';
        // SAFETY: a str between two ASCII quotes is UTF-8.
        return unsafe { CompactString::from_utf8_unchecked(&inline[..text.len() + 2]) };
    }
    let mut out = Vec::with_capacity(text.len() + 2);
    json_string(&mut out, text);
    // SAFETY: json_string writes UTF-8 (the text, escaped with ASCII).
    unsafe { CompactString::from_utf8_unchecked(out) }
}

const VALUE_END: &[u8] = b"},\"user_attributes\":{}}";

/// `envelope.with_aggregates` of `aggregates_json`: `,"name":value...` for each aggregate's state,
/// in config order, written in place at the end of the record's `value`.
pub fn with_aggregates(record: &mut Vec<u8>, aggregates: &[Aggregate], states: &[State]) {
    debug_assert!(record.ends_with(VALUE_END));
    record.truncate(record.len() - VALUE_END.len());
    for (aggregate, state) in aggregates.iter().zip(states) {
        aggregate.write_json(record, state);
    }
    record.extend_from_slice(VALUE_END);
}

// -- MessagePack, as msgspec writes the Python values ----------------------------------------------

/// A record's value for `aggregate`: first/last's JSON text as bytes, count_distinct's as a str.
pub fn write_value(out: &mut Vec<u8>, aggregate: &Aggregate, value: Option<&Value>) {
    match value {
        None => msgpack::nil(out),
        Some(Value::Int(v)) => {
            msgpack::int(out, *v as i128);
        }
        Some(Value::Text(text)) if aggregate.kind == Kind::CountDistinct => msgpack::str(out, text),
        Some(Value::Text(text)) => msgpack::bin(out, text.as_bytes()),
    }
}

pub fn read_value(r: &mut msgpack::Reader) -> Option<Option<Value>> {
    Some(match r.peek()? {
        0xc0 => {
            r.nil()?;
            None
        }
        0xc4..=0xc6 => Some(Value::Text(CompactString::from_utf8(r.bin()?).ok()?)),
        0xa0..=0xbf | 0xd9..=0xdb => Some(Value::Text(r.str()?.into())),
        _ => Some(Value::Int(i64::try_from(r.int()?).ok()?)),
    })
}

/// `encode_state`; None when a total is too large for MessagePack (msgspec refuses those too).
pub fn write_state(out: &mut Vec<u8>, state: &State) -> Option<()> {
    match state {
        State::Total(total) => msgpack::int(out, *total)?,
        State::Extreme(None) | State::Edge(None) => msgpack::nil(out),
        State::Extreme(Some(v)) => msgpack::int(out, *v)?,
        State::Edge(Some((time, text))) => {
            msgpack::array(out, 2);
            msgpack::int(out, *time as i128)?;
            msgpack::bin(out, text.as_bytes());
        }
        State::Distinct(seen) => {
            msgpack::array(out, seen.len());
            for text in seen {
                msgpack::str(out, text);
            }
        }
    }
    Some(())
}

pub fn read_state(r: &mut msgpack::Reader, aggregate: &Aggregate) -> Option<State> {
    Some(match aggregate.kind {
        Kind::Sum | Kind::Count => State::Total(r.int()?),
        Kind::Min | Kind::Max => State::Extreme(if r.nil()? { None } else { Some(r.int()?) }),
        Kind::First | Kind::Last => State::Edge(if r.nil()? {
            None
        } else {
            if r.array()? != 2 {
                return None;
            }
            let time = i64::try_from(r.int()?).ok()?;
            Some((time, CompactString::from_utf8(r.bin()?).ok()?))
        }),
        Kind::CountDistinct => {
            let count = r.array()?;
            let mut seen = Vec::with_capacity(count);
            for _ in 0..count {
                seen.push(CompactString::from(r.str()?));
            }
            seen.sort_unstable();
            seen.dedup();
            State::Distinct(seen)
        }
    })
}

/// Asks the CPU for the cache line at `at` ahead of its use (a hint; nothing where not x86_64).
#[inline(always)]
pub fn prefetch_line<T>(at: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing and cannot fault; `at` is a valid reference anyway.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((at as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// The registry as the engine and its stores share it.
pub type Ids = Rc<RefCell<IdRegistry>>;

/// Bytes of (key, id) text a slot holds in line; a longer text is in the registry's `texts`.
const IN_LINE: usize = 36;

/// One (key, id): how it is held and its text, on one cache line (64 bytes), so that taking a
/// free slot, comparing its text and releasing it each touch that line alone (the holds, slots and
/// texts in three vectors were three lines: on the wallet bench `hold` missed a 512 KiB cache about
/// three times a call).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Slot {
    hash: u64,
    until: i64,   // held by windows until then (their latest close time); i64::MIN: none
    holders: u32, // sessions holding it
    key_len: u32,
    len: u32,                // of key and id together
    text: [u8; IN_LINE],     // the key, then the id; or, when longer, where they start in `texts` (8 bytes, LE)
}

impl Slot {
    /// Held at stream time `now` (windows closing at or before it have closed).
    fn is_held(&self, now: i64) -> bool {
        self.holders > 0 || self.until > now
    }

    fn bytes<'a>(&'a self, texts: &'a [u8]) -> &'a [u8] {
        let len = self.len as usize;
        if len <= IN_LINE {
            &self.text[..len]
        } else {
            let at = usize::from_le_bytes(self.text[..8].try_into().expect("8 bytes"));
            &texts[at..at + len]
        }
    }

    fn is(&self, texts: &[u8], key: &str, id: &str) -> bool {
        self.key_len as usize == key.len() && self.len as usize == key.len() + id.len() && {
            let (held_key, held_id) = self.bytes(texts).split_at(key.len());
            held_key == key.as_bytes() && held_id == id.as_bytes()
        }
    }
}

/// The (key, id) of every record an open session or window holds (as the Python core's
/// `IdRegistry`): a record whose (key, id) is here, held, is a duplicate (SPEC 7.2).
///
/// A session holds its records' ids as holders, counted in `holders` (a session's close time is
/// not known while it is open; its key's `ShapedRecords` releases them when it closes). A window's
/// close time is known when it takes a record (its end plus grace, by stream time), so windows
/// hold an id by its slot's `until`: the latest close time of the windows holding it; an id is held
/// while `holders > 0` or `until > now` (the stream time, at which every window closing at or
/// before it has closed), with nothing to do when a window closes (a window's ids were a counted
/// holder each: a clone on the way in, a release on the way out, 16 bytes a record in each window;
/// now a slot number, 4 bytes, for its state).
///
/// A slot no longer held is free: put on the free list when its last session holder releases it
/// after its windows closed, or else found free by the next rebuild. Its table entry stays until
/// the slot is found again (and taken back) or the table is rebuilt from the held slots, once it
/// holds four times as many entries as were held at the last rebuild (a sequential pass, amortized
/// O(1) per id; on the wallet bench, at twice the misses of a 512 KiB cache went up from 13.9 M to
/// 15.0 M, and the wall time with them).
pub struct IdRegistry {
    table: HashTable<u32>, // slot numbers, by the hash of (key, id); some may be free or reused
    slots: Vec<Slot>,
    // The texts longer than a slot holds, one after another (no allocation of their own, and none
    // to free): the texts of free slots stay until the rebuild, which copies only the held ones.
    texts: Vec<u8>,
    // The texts' other buffer: a rebuild copies the held texts into it and keeps the old one for the
    // next rebuild, so that rebuilds reuse two buffers (a new megabyte each time was a new megabyte of
    // pages for the kernel to fault in).
    spare: Vec<u8>,
    free: Vec<u32>, // free slots (a slot taken back since may be listed: skipped when popped)
    held_at_rebuild: usize,
    // Bytes of long texts held at the last rebuild: once `texts` is twice that (the rest the texts of
    // ids since freed), it is rebuilt too, so that long ids cost memory by the ids held, not by the ids
    // seen (the table's own trigger let it reach four times the texts held: on the wallet feed with
    // 300-byte keys and 500-byte ids, a peak RSS of 189 MiB, now 139 MiB; output the same).
    texts_at_rebuild: usize,
    /// The stream time: windows that close at or before it are closed (or closing in this step).
    pub now: i64,
    hasher: foldhash::fast::RandomState,
}

impl IdRegistry {
    pub fn shared() -> Ids {
        Rc::new(RefCell::new(IdRegistry {
            table: HashTable::new(), slots: Vec::new(), texts: Vec::new(), spare: Vec::new(), free: Vec::new(),
            held_at_rebuild: 0, texts_at_rebuild: 0, now: i64::MIN, hasher: foldhash::fast::RandomState::default(),
        }))
    }

    /// Asks for slot `slot`'s line (a hint: nothing when `slot` is no slot).
    #[inline]
    pub fn prefetch(&self, slot: u32) {
        if let Some(held) = self.slots.get(slot as usize) {
            prefetch_line(held);
        }
    }

    /// One holder of `slot` less.
    pub fn release(&mut self, slot: u32) {
        let held = &mut self.slots[slot as usize];
        held.holders -= 1;
        if !held.is_held(self.now) {
            self.free.push(slot);
        }
    }

    /// Slot `slot` is held by a window open until `close_at`.
    pub fn hold_until(&mut self, slot: u32, close_at: i64) {
        let held = &mut self.slots[slot as usize];
        held.until = held.until.max(close_at);
    }

    /// The (key, id) texts of slot `slot` (held).
    pub fn texts_of(&self, slot: u32) -> (&str, &str) {
        let held = &self.slots[slot as usize];
        let (key, id) = held.bytes(&self.texts).split_at(held.key_len as usize);
        let text = |bytes| std::str::from_utf8(bytes).expect("copied from a str, whole");
        (text(key), text(id))
    }

    /// The hash of (key, id), its table lines and candidate slots asked for ahead of its `hold`: a
    /// lookup that finds nothing (it only asks for each candidate's line), so that the holds of a
    /// batch of records find their lines cached, their misses overlapped here.
    pub fn warm(&self, key: &str, id: &str) -> u64 {
        let hash = self.hasher.hash_one((key, id));
        let slots = &self.slots;
        let _ = self.table.find(hash, |&slot| {
            if let Some(held) = slots.get(slot as usize) {
                prefetch_line(held);
            }
            false
        });
        hash
    }

    /// The slot of (key, id), with one more holder; `fresh`: it was not held (else, a duplicate).
    /// `hash`: (key, id)'s, when `warm` made it.
    fn hold(&mut self, key: &str, id: &str, hash: Option<u64>) -> (u32, bool) {
        if self.table.len() >= (4 * self.held_at_rebuild).max(1024)
            || self.texts.len() >= (2 * self.texts_at_rebuild).max(1 << 20) {
            self.rebuild();
        }
        let hash = hash.unwrap_or_else(|| self.hasher.hash_one((key, id)));
        let now = self.now;
        let IdRegistry { table, slots, texts, free, .. } = self;
        let entry = table.entry(hash, |&slot| slots[slot as usize].is(texts, key, id), |&slot| slots[slot as usize].hash);
        match entry {
            hashbrown::hash_table::Entry::Occupied(found) => {
                let slot = *found.get();
                let held = &mut slots[slot as usize];
                let fresh = !held.is_held(now);
                if fresh {
                    held.until = i64::MIN; // taken back: its windows have closed
                }
                held.holders += 1;
                (slot, fresh)
            }
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                let slot = new_slot(slots, texts, free, now, hash, key, id);
                vacant.insert(slot);
                (slot, true)
            }
        }
    }

    /// The table again from the held slots (dropping the entries of free and reused slots), the long
    /// texts of held slots copied together (dropping those of free slots), and the free list again.
    #[inline(never)] // rare: kept out of the per-record path
    fn rebuild(&mut self) {
        let now = self.now;
        let IdRegistry { table, slots, texts, spare, free, .. } = self;
        let mut kept = std::mem::take(spare);
        kept.clear();
        free.clear();
        table.clear();
        for index in 0..slots.len() { // one pass over the slots (a line each)
            let held = &mut slots[index];
            if !held.is_held(now) {
                free.push(index as u32);
                continue;
            }
            if held.len as usize > IN_LINE {
                let at = kept.len();
                kept.extend_from_slice(held.bytes(texts));
                held.text[..8].copy_from_slice(&at.to_le_bytes());
            }
            let hash = held.hash;
            table.insert_unique(hash, index as u32, |&slot| slots[slot as usize].hash);
        }
        *spare = std::mem::replace(texts, kept);
        self.held_at_rebuild = table.len();
        self.texts_at_rebuild = self.texts.len();
    }

    /// (bytes of the long (key, id) texts held, bytes of the buffer holding them and those of ids
    /// since freed): what the rebuild bounds, for tests and a look at the state's size.
    pub fn long_text_bytes(&self) -> (usize, usize) {
        let held = self.slots.iter().filter(|slot| slot.is_held(self.now) && slot.len as usize > IN_LINE)
            .map(|slot| slot.len as usize).sum();
        (held, self.texts.len())
    }

    /// Every window has closed (end of input): ids are held by sessions only from now on.
    pub fn windows_closed(&mut self) {
        self.slots.iter_mut().for_each(|held| held.until = i64::MIN);
        self.rebuild();
    }
}

/// A free slot (or a new one) holding (key, id) with one holder.
fn new_slot(slots: &mut Vec<Slot>, texts: &mut Vec<u8>, free: &mut Vec<u32>, now: i64, hash: u64, key: &str,
            id: &str) -> u32 {
    let len = key.len() + id.len();
    let mut held = Slot { hash, until: i64::MIN, holders: 1,
                          key_len: u32::try_from(key.len()).expect("a key shorter than 4 GiB"),
                          len: u32::try_from(len).expect("an id shorter than 4 GiB"), text: [0; IN_LINE] };
    if len <= IN_LINE {
        held.text[..key.len()].copy_from_slice(key.as_bytes());
        held.text[key.len()..len].copy_from_slice(id.as_bytes());
    } else { // its old text (if any) is left where it is, for the rebuild to drop
        held.text[..8].copy_from_slice(&texts.len().to_le_bytes());
        texts.extend_from_slice(key.as_bytes());
        texts.extend_from_slice(id.as_bytes());
    }
    while let Some(slot) = free.pop() {
        if !slots[slot as usize].is_held(now) { // else taken back after it was freed
            slots[slot as usize] = held;
            return slot;
        }
    }
    slots.push(held);
    u32::try_from(slots.len() - 1).expect("fewer than 4 billion held ids")
}

/// The slot of a new record's (key, id), with one holder for the caller to hand on (to the session
/// taking the record) or release; None: an open session or window holds a record of this key with
/// this id (the new one is a duplicate).
pub fn take(ids: &Ids, key: &str, id: &str, hash: Option<u64>) -> Option<u32> {
    let mut registry = ids.borrow_mut();
    let (slot, fresh) = registry.hold(key, id, hash);
    if !fresh {
        registry.release(slot); // the holder just added: nothing holds this copy
        return None;
    }
    Some(slot)
}

/// The slot of (key, id) read back from a session's state, with one holder (the record's).
pub fn hold(ids: &Ids, key: &str, id: &str) -> u32 {
    ids.borrow_mut().hold(key, id, None).0
}

/// The slot of (key, id) read back from a window's state, held by that window until `close_at`.
pub fn hold_for_window(ids: &Ids, key: &str, id: &str, close_at: i64) -> u32 {
    let mut registry = ids.borrow_mut();
    let (slot, _) = registry.hold(key, id, None);
    registry.hold_until(slot, close_at);
    registry.release(slot); // held by its window's close time, not as a holder
    slot
}
