//! SPEC section 7: `sessionizer/core/shapes.py`, the same states, JSON and MessagePack.
//!
//! Records of a shaped job are read by `decode.rs` (or, when it is not sure, by Python,
//! through `offer_shaped`); here are the extra aggregates' values and states and the ids
//! that open sessions and windows hold.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::msgpack;
use crate::output::{int, json_amount, json_string};
use crate::HashMap;

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

/// What one record brings to one aggregate (None in `Extra::values`: nothing).
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),           // micros (sum, min, max), or 1 (count)
    Text(Box<[u8]>),    // first, last: the JSON text as written
    Str(Box<str>),      // count_distinct
}

/// A record's SPEC 7 data, kept beside it in a session: whether it counts, its id, its values
/// for the sessions' aggregates.
#[derive(Clone)]
pub struct Extra {
    pub counts: bool,
    pub id: Option<Arc<str>>,
    pub values: Box<[Option<Value>]>,
}

#[derive(Clone)]
pub enum State {
    Total(i128),                       // sum, count
    Extreme(Option<i128>),             // min, max
    Edge(Option<(i64, Box<[u8]>)>),    // first, last: (event time, JSON text)
    Distinct(BTreeSet<Box<str>>),      // count_distinct (sorted: encoded as msgspec sorts the set)
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
            State::Edge(Some((_, text))) => out.extend_from_slice(text),
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
        Some(Value::Text(text)) => msgpack::bin(out, text),
        Some(Value::Str(text)) => msgpack::str(out, text),
    }
}

pub fn read_value(r: &mut msgpack::Reader) -> Option<Option<Value>> {
    Some(match r.peek()? {
        0xc0 => {
            r.nil()?;
            None
        }
        0xc4..=0xc6 => Some(Value::Text(r.bin()?.into())),
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
            msgpack::bin(out, text);
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
            Some((time, r.bin()?.into()))
        }),
        Kind::CountDistinct => {
            let count = r.array()?;
            let mut seen = BTreeSet::new();
            for _ in 0..count {
                seen.insert(Box::from(r.str()?));
            }
            State::Distinct(seen)
        }
    })
}

/// Ids (per key) of accepted records that an open session or window still holds, with how many
/// hold each. Stores note what they hold and release in `IdChanges`; the engine applies them.
#[derive(Default)]
pub struct IdRegistry {
    held: HashMap<(Arc<str>, Arc<str>), u32>,
}

impl IdRegistry {
    pub fn holds(&self, key: &str, id: &str) -> bool {
        // (a borrowed pair cannot look up an owned one: build it; duplicates checks are per record)
        self.held.contains_key(&(Arc::from(key), Arc::from(id)))
    }

    pub fn apply(&mut self, changes: &mut IdChanges) {
        for (hold, key, id) in changes.0.drain(..) {
            let pair = (key, id);
            if hold {
                *self.held.entry(pair).or_insert(0) += 1;
            } else {
                let left = self.held.get_mut(&pair).expect("released an id that was not held");
                *left -= 1;
                if *left == 0 {
                    self.held.remove(&pair);
                }
            }
        }
    }

    pub fn clear(&mut self) {
        self.held.clear();
    }
}

/// (true: hold, false: release, key, id), in the order a store made them.
#[derive(Default)]
pub struct IdChanges(pub Vec<(bool, Arc<str>, Arc<str>)>);

impl IdChanges {
    pub fn hold(&mut self, key: &Arc<str>, id: &Arc<str>) {
        self.0.push((true, key.clone(), id.clone()));
    }

    pub fn release(&mut self, key: &Arc<str>, id: &Arc<str>) {
        self.0.push((false, key.clone(), id.clone()));
    }
}
