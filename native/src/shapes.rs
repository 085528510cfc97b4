//! SPEC section 7: `sessionizer/core/shapes.py`, the same states, JSON and MessagePack.
//!
//! Records of a shaped job are read by `decode.rs` (or, when it is not sure, by Python,
//! through `offer_shaped`); here are the extra aggregates' values and states and the ids
//! that open sessions and windows hold.

use std::collections::BTreeSet;
use std::rc::Rc;

use compact_str::CompactString;
use smallvec::SmallVec;

use crate::msgpack;
use crate::output::{int, json_amount, json_string};
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
    Int(i64),           // micros (sum, min, max), or 1 (count)
    Text(CompactString), // first, last: the JSON text as written (short ones inline: no allocation)
    Str(CompactString),  // count_distinct
}

/// A record's values for its aggregates, in line for the usual few (no allocation per record).
pub type Values = SmallVec<[Option<Value>; 4]>;


#[derive(Clone)]
pub enum State {
    Total(i128),                       // sum, count
    Extreme(Option<i128>),             // min, max
    Edge(Option<(i64, CompactString)>),    // first, last: (event time, JSON text)
    Distinct(BTreeSet<CompactString>),      // count_distinct (sorted: encoded as msgspec sorts the set)
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
            Kind::CountDistinct => State::Distinct(BTreeSet::new()),
        }
    }

    /// `add_value`: first keeps the earliest event time (of equal ones, the first to come), last the
    /// latest (of equal ones, the last to come).
    pub fn add(&self, state: &mut State, value: &Value, time: i64) {
        match (state, value) {
            (State::Total(total), Value::Int(v)) => *total += *v as i128,
            (State::Extreme(current), Value::Int(v)) => {
                let v = *v as i128;
                let better = match current {
                    None => true,
                    Some(c) => if self.kind == Kind::Min { v < *c } else { v > *c },
                };
                if better {
                    *current = Some(v);
                }
            }
            (State::Edge(current), Value::Text(text)) => {
                let replace = match current {
                    None => true,
                    Some((at, _)) => if self.kind == Kind::First { time < *at } else { time >= *at },
                };
                if replace {
                    *current = Some((time, text.clone()));
                }
            }
            (State::Distinct(seen), Value::Str(text)) if !seen.contains(text) => {
                seen.insert(text.clone());
            }
            _ => {} // a value of another kind cannot reach here: Python read it for this aggregate
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

/// `aggregates_json` over the states of each aggregate, in config order.
pub fn states_json(aggregates: &[Aggregate], states: &[State]) -> Vec<u8> {
    let mut out = Vec::new();
    for (aggregate, state) in aggregates.iter().zip(states) {
        aggregate.write_json(&mut out, state);
    }
    out
}

const VALUE_END: &[u8] = b"},\"user_attributes\":{}}";

/// `envelope.with_aggregates`: `,"name":value...` at the end of the record's `value`.
pub fn with_aggregates(record: &mut Vec<u8>, aggregates: &[u8]) {
    debug_assert!(record.ends_with(VALUE_END));
    record.truncate(record.len() - VALUE_END.len());
    record.extend_from_slice(aggregates);
    record.extend_from_slice(VALUE_END);
}

// -- MessagePack, as msgspec writes the Python values ----------------------------------------------

pub fn write_value(out: &mut Vec<u8>, value: &Option<Value>) {
    match value {
        None => msgpack::nil(out),
        Some(Value::Int(v)) => {
            msgpack::int(out, *v as i128);
        }
        Some(Value::Text(text)) => msgpack::bin(out, text.as_bytes()),
        Some(Value::Str(text)) => msgpack::str(out, text),
    }
}

pub fn read_value(r: &mut msgpack::Reader) -> Option<Option<Value>> {
    Some(match r.peek()? {
        0xc0 => {
            r.nil()?;
            None
        }
        0xc4..=0xc6 => Some(Value::Text(CompactString::from_utf8(r.bin()?).ok()?)),
        0xa0..=0xbf | 0xd9..=0xdb => Some(Value::Str(r.str()?.into())),
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
            let mut seen = BTreeSet::new();
            for _ in 0..count {
                seen.insert(CompactString::from(r.str()?));
            }
            State::Distinct(seen)
        }
    })
}

/// One accepted record's (key, id), as the stores hold it: both texts in one shared allocation.
#[derive(Clone)]
pub struct HeldId {
    both: Rc<str>, // the key, then the id
    key_len: u32,
}

impl HeldId {
    pub fn key(&self) -> &str {
        &self.both[..self.key_len as usize]
    }

    pub fn id(&self) -> &str {
        &self.both[self.key_len as usize..]
    }

    fn is(&self, key: &str, id: &str) -> bool {
        self.both.len() == key.len() + id.len() && self.key() == key && self.id() == id
    }
}

/// The ids (per key) of accepted records. An id is held while an open session or window holds
/// its record: the stores keep clones of the registry's `HeldId`, so it is held exactly while its
/// `Rc` has another owner than the registry, and dropping a closed session or window releases
/// its ids with no bookkeeping. Entries nobody holds any more are swept out once the table has
/// doubled since the last sweep (amortized O(1) per record, at most twice the live ids).
pub struct IdRegistry {
    table: HashTable<HeldId>,
    hasher: ahash::RandomState,
    live_after_sweep: usize,
    scratch: String, // key and id joined, copied once into the shared allocation
}

impl Default for IdRegistry {
    fn default() -> Self {
        IdRegistry { table: HashTable::new(), hasher: ahash::RandomState::new(), live_after_sweep: 0,
                     scratch: String::new() }
    }
}

impl IdRegistry {
    /// The id to keep with a new record of `key`, or None: an open session or window holds a
    /// record of this key with this id (the new one is a duplicate).
    /// Else the registry's (key, id), to be kept by the stores that take the record.
    pub fn take(&mut self, key: &str, id: &str) -> Option<HeldId> {
        let held = self.entry(key, id);
        (Rc::strong_count(&held.both) == 2).then_some(held) // the registry's and this one
    }

    /// The registry's (key, id) for an id read back from state, so that the store holding it holds it.
    pub fn shared(&mut self, key: &str, id: &str) -> HeldId {
        self.entry(key, id)
    }

    fn entry(&mut self, key: &str, id: &str) -> HeldId {
        let hash = self.hasher.hash_one((key, id));
        if let Some(held) = self.table.find(hash, |held| held.is(key, id)) {
            return held.clone();
        }
        if self.table.len() >= (2 * self.live_after_sweep).max(1024) {
            self.table.retain(|held| Rc::strong_count(&held.both) > 1);
            self.live_after_sweep = self.table.len();
        }
        self.scratch.clear();
        self.scratch.push_str(key);
        self.scratch.push_str(id);
        let key_len = u32::try_from(key.len()).expect("a key shorter than 4 GiB");
        let held = HeldId { both: Rc::from(self.scratch.as_str()), key_len };
        let hasher = &self.hasher;
        self.table.insert_unique(hash, held.clone(), |held| hasher.hash_one((held.key(), held.id())));
        held
    }

    pub fn clear(&mut self) {
        self.table.clear();
        self.live_after_sweep = 0;
    }
}
