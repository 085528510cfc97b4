//! The fast acceptance of input records (SPEC section 1).
//!
//! This only ever *accepts* a record, or skips it by the `events` filter: anything it
//! is not sure of (an error, an unusual number or time format) goes back to Python,
//! whose decoder (`sessionizer/core/events.py`) writes the dead letter or accepts it
//! the exact way. So there is one place that says what is wrong with a record.

use std::borrow::Cow;
use std::cell::Cell;

use compact_str::{CompactString, ToCompactString};

use crate::output::days_from_civil;
use crate::shapes::{json_text, Derivation, Kind, Row, Source, Value, Values, STAKE_PRESENT, WIN_PRESENT};
use crate::HashMap;

pub const MAX_TIME_MS: i64 = 253_402_300_799_999;
const MICROS: i64 = 1_000_000;
const MAX_AMOUNT: i64 = 1_000_000_000_000;
const MAX_MICROS: i64 = MAX_AMOUNT * MICROS;

/// Where each needed field lives: a trie of path segments, each leaf filling some slots.
#[derive(Default)]
struct PathNode {
    children: Vec<(Box<str>, PathNode)>,
    slots: Vec<usize>,
    mask: u64, // a bit per node in this subtree (bits wrap past 64: a shared bit only costs a clear)
}

impl PathNode {
    fn insert(&mut self, path: &[String], slot: usize) {
        match path.split_first() {
            None => self.slots.push(slot),
            Some((first, rest)) => {
                let index = match self.children.iter().position(|(name, _)| **name == **first) {
                    Some(index) => index,
                    None => {
                        self.children.push((first.as_str().into(), PathNode::default()));
                        self.children.len() - 1
                    }
                };
                self.children[index].1.insert(rest, slot);
            }
        }
    }

    /// Give each node its bit, and each subtree the union of its nodes' bits.
    fn number(&mut self, next: &mut u32) -> u64 {
        self.mask = 1 << (*next % 64);
        *next += 1;
        for (_, child) in &mut self.children {
            self.mask |= child.number(next);
        }
        self.mask
    }

    /// The child named `name`.
    #[inline(always)]
    fn child(&self, name: &str) -> Option<&PathNode> {
        let name = name.as_bytes();
        self.children.iter().find(|(part, _)| part.len() == name.len() && same_bytes(part.as_bytes(), name))
            .map(|(_, child)| child)
    }

    fn clear(&self, values: &mut [Token]) {
        for &slot in &self.slots {
            values[slot] = Token::Absent;
        }
        for (_, child) in &self.children {
            child.clear(values);
        }
    }
}

pub struct Fields {
    tree: PathNode,
    slot_count: usize,
    time_from_kafka: bool,
    filtered: bool, // a non-empty `events`: a record whose type is not in it is skipped
    names: TypeNames,
    group_count: usize,
    shape: Option<Shape>,
    last_date: Cell<Option<LastDate>>,
}

/// What a record's type name means: listed in `events`, its `[input.types]` slots, which extra
/// aggregates it feeds. Every name the config mentions, looked up once per record.
struct TypeName {
    listed: bool,
    slots: Option<TypeSlots>,
    feeds: Box<[bool]>, // per extra aggregate, in engine order
    row: Row,           // its row in a `Derivation` (0: a record of no known type)
}

#[derive(Default)]
struct TypeNames {
    names: Vec<(String, TypeName)>,
    index: HashMap<String, usize>, // only when there are many names (a few compare faster in a row)
}

impl TypeNames {
    const SCAN: usize = 8;

    fn entry(&mut self, name: &str, aggregates: usize) -> &mut TypeName {
        let at = match self.names.iter().position(|(known, _)| known == name) {
            Some(at) => at,
            None => {
                let feeds = vec![false; aggregates].into_boxed_slice();
                self.names.push((name.to_owned(), TypeName { listed: false, slots: None, feeds, row: 0 }));
                self.names.len() - 1
            }
        };
        &mut self.names[at].1
    }

    fn finish(&mut self) {
        for (index, (_, meaning)) in self.names.iter_mut().enumerate() {
            meaning.row = Row::try_from(index + 1).unwrap_or(Row::MAX); // too many to derive: see `derive_sessions`
        }
        if self.names.len() > Self::SCAN {
            self.index = self.names.iter().enumerate().map(|(at, (name, _))| (name.clone(), at)).collect();
        }
    }

    fn get(&self, name: &str) -> Option<&TypeName> {
        if self.names.len() > Self::SCAN {
            return self.index.get(name).map(|&at| &self.names[at].1);
        }
        self.names.iter().find(|(known, _)| known == name).map(|(_, meaning)| meaning)
    }
}

// Slots of the fields in `Token` arrays.
const KEY: usize = 0;
const TIME: usize = 1;
const STAKE: usize = 2;
const WIN: usize = 3;
const GAME: usize = 4;
const CHANNEL: usize = 5;
const EVENT: usize = 6;
const GROUPS: usize = 7;
const INLINE_SLOTS: usize = GROUPS + 9;

/// SPEC section 7 as `sessionizer/core/shaped_events.py` reads it: per-type field slots, the id's
/// slot, each extra aggregate's slot. A slot per distinct path (types share most of theirs).
struct Shape {
    plain: TypeSlots,
    id: Option<usize>,
    aggregates: Vec<AggregateSlot>,
}

#[derive(Clone, Copy)]
struct TypeSlots {
    stake: Option<usize>, // None: "" (this type has no such field)
    win: Option<usize>,
    game: Option<usize>,
    channel: Option<usize>,
    counts: bool,
    negate: bool,
}

struct AggregateSlot {
    kind: Kind,
    field: Option<usize>, // None for count
    typed: bool,          // it names its types (then `TypeName::feeds` says which); else it takes all
    derived: bool,        // a session aggregate whose values the store derives (`Derivation`): not read here
}

/// `[input.types.<name>]` as Python resolved it: (name, stake, win, game_code, channel, counts, negate).
pub type TypeFields = (String, String, String, String, String, bool, bool);
/// An extra aggregate: (kind, field path or None, its types or None).
pub type AggregateFields = (String, Option<String>, Option<Vec<String>>);

/// The input's shape beyond section 1: (event path, id path, types, aggregates in engine order).
pub type ShapeFields = (String, Option<String>, Vec<TypeFields>, Vec<AggregateFields>);

fn split_path(text: &str) -> Vec<String> {
    text.split('.').map(str::to_owned).collect()
}

impl Fields {
    /// Dot paths; `time` None is the Kafka record timestamp; `groups` are the extra group_by paths.
    #[allow(clippy::too_many_arguments)]
    pub fn new(key: &str, time: Option<&str>, stake: &str, win: &str, game: &str, channel: &str,
               events: Vec<String>, groups: &[String], shape: Option<ShapeFields>) -> Result<Self, String> {
        let mut tree = PathNode::default();
        // The slot of each path read so far: a SPEC 7 path that section 1 already reads (a type's
        // `game_code` falling back to `[input]`'s, an aggregate over it) shares its slot, so the
        // reader stores its value once rather than cloning it into a second slot.
        let mut slots: HashMap<String, usize> = HashMap::default();
        let mut read = |tree: &mut PathNode, path: &str, slot: usize| {
            tree.insert(&split_path(path), slot);
            slots.entry(path.to_owned()).or_insert(slot);
        };
        for (slot, field) in [(KEY, Some(key)), (TIME, time), (STAKE, Some(stake)), (WIN, Some(win)),
                              (GAME, Some(game)), (CHANNEL, Some(channel))] {
            if let Some(field) = field {
                read(&mut tree, field, slot);
            }
        }
        let event_path = shape.as_ref().map_or("event", |(path, ..)| path.as_str());
        if !events.is_empty() || shape.is_some() {
            read(&mut tree, event_path, EVENT);
        }
        for (index, group) in groups.iter().enumerate() {
            read(&mut tree, group, GROUPS + index);
        }
        let mut slot_count = GROUPS + groups.len();
        let mut names = TypeNames::default();
        let aggregate_count = shape.as_ref().map_or(0, |(.., aggregates)| aggregates.len());
        for name in &events {
            names.entry(name, aggregate_count).listed = true;
        }
        let shape = match shape {
            None => None,
            Some((_, id, types, aggregates)) => {
                let mut slot_of = |path: &str| -> Option<usize> {
                    if path.is_empty() {
                        return None;
                    }
                    Some(*slots.entry(path.to_owned()).or_insert_with(|| {
                        tree.insert(&split_path(path), slot_count);
                        slot_count += 1;
                        slot_count - 1
                    }))
                };
                let plain = TypeSlots { stake: Some(STAKE), win: Some(WIN), game: Some(GAME), channel: Some(CHANNEL),
                                        counts: true, negate: false };
                for (name, stake, win, game, channel, counts, negate) in types {
                    let slots = TypeSlots { stake: slot_of(&stake), win: slot_of(&win), game: slot_of(&game),
                                            channel: slot_of(&channel), counts, negate };
                    names.entry(&name, aggregate_count).slots = Some(slots);
                }
                let id = id.as_deref().and_then(&mut slot_of);
                let mut read = Vec::new();
                for (index, (kind, field, types)) in aggregates.into_iter().enumerate() {
                    let kind = Kind::of(&kind).ok_or_else(|| format!("no aggregate kind {kind:?}"))?;
                    let field = if kind == Kind::Count { None } else { field.as_deref().and_then(&mut slot_of) };
                    let typed = types.is_some();
                    for name in types.unwrap_or_default() {
                        names.entry(&name, aggregate_count).feeds[index] = true;
                    }
                    read.push(AggregateSlot { kind, field, typed, derived: false });
                }
                Some(Shape { plain, id, aggregates: read })
            }
        };
        tree.number(&mut 0);
        names.finish();
        Ok(Fields {
            tree,
            slot_count,
            time_from_kafka: time.is_none(),
            filtered: !events.is_empty(),
            names,
            group_count: groups.len(),
            shape,
            last_date: Cell::default(),
        })
    }

    pub fn shaped(&self) -> bool {
        self.shape.is_some()
    }

    /// Whether records have an id (SPEC 7.2).
    pub fn has_id(&self) -> bool {
        self.shape.as_ref().is_some_and(|shape| shape.id.is_some())
    }

    /// The sources of the first `count` aggregates (the sessions') for every type row, when each is
    /// a copy of the type's stake, win, game_code or channel, or a count (see `Source`); then the
    /// decoder stops reading their values, and records carry their row instead. None otherwise.
    pub fn derive_sessions(&mut self, count: usize) -> Option<Derivation> {
        let shape = self.shape.as_mut()?;
        if count == 0 || self.names.names.len() >= 0xff {
            return None;
        }
        let plain = shape.plain;
        let meanings = std::iter::once((plain, None)).chain(self.names.names.iter()
            .map(|(_, meaning)| (meaning.slots.unwrap_or(plain), Some(&meaning.feeds))));
        let mut rows = Vec::new();
        for (slots, feeds) in meanings {
            let mut sources = Vec::with_capacity(count);
            for (index, aggregate) in shape.aggregates[..count].iter().enumerate() {
                let takes = !aggregate.typed || feeds.is_some_and(|feeds| feeds[index]);
                let flip = slots.negate && matches!(aggregate.kind, Kind::Min | Kind::Max);
                let json = aggregate.kind != Kind::CountDistinct;
                sources.push(match (aggregate.kind, aggregate.field) {
                    _ if !takes => Source::Nothing,
                    (Kind::Count, _) => Source::One,
                    (_, None) => Source::Nothing, // no path: never present
                    (Kind::Sum | Kind::Min | Kind::Max, field) if field == slots.stake => Source::Stake { flip },
                    (Kind::Sum | Kind::Min | Kind::Max, field) if field == slots.win => Source::Win { flip },
                    (Kind::First | Kind::Last | Kind::CountDistinct, field) if field == slots.game => Source::Game { json },
                    (Kind::First | Kind::Last | Kind::CountDistinct, field) if field == slots.channel => {
                        Source::Channel { json }
                    }
                    _ => return None,
                });
            }
            rows.push(sources.into_boxed_slice());
        }
        for aggregate in &mut shape.aggregates[..count] {
            aggregate.derived = true;
        }
        Some(Derivation { rows })
    }
}

/// A JSON value as far as a field needs it.
#[derive(Clone, Debug, PartialEq)]
enum Token<'a> {
    Absent,
    Null,
    Bool(bool),
    Number(&'a str), // its exact text
    Str(Cow<'a, str>),
    Object,
    Array,
}

pub struct Event<'a> {
    pub key: Cow<'a, str>,
    pub time: i64,
    pub stake: i64,
    pub win: i64,
    pub game: Option<Cow<'a, str>>,
    pub channel: Option<Cow<'a, str>>,
    pub groups: Vec<Cow<'a, str>>,
    pub shaped: Option<ShapedPart<'a>>, // a shaped job's record: what SPEC section 7 adds
}

/// What `ShapedEventDecoder` adds to a record: whether it counts, its id, a value per aggregate.
pub struct ShapedPart<'a> {
    pub counts: bool,
    pub id: Option<Cow<'a, str>>,
    pub values: Values, // a value per aggregate, sessions' first; the rolling aggregates' only when `row` is set
    pub row: Option<Row>, // the record's row, when the sessions derive their aggregates' values
    pub id_hash: Option<u64>, // the hash of (key, id), when the registry was warmed for it ahead
}

pub enum Decoded<'a> {
    Event(Event<'a>),
    Skip,     // not in the `events` filter
    Fallback, // let the Python decoder decide (and name the error)
}

/// A strict (RFC 8259) JSON reader that keeps only the values at the configured paths.
/// Anything it does not like (including what is valid but unusual: nesting deeper than
/// MAX_DEPTH, integers of more than 18 digits, lone surrogates) is an Err: Python decides.
struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    filled: u64, // PathNode masks of the names read so far (a name read twice clears its slots first)
}

const MAX_DEPTH: usize = 128;

impl<'a> Reader<'a> {
    #[inline(always)]
    fn space(&mut self) {
        // Records are mostly compact JSON: one comparison says there is no space here.
        if self.bytes.get(self.at).is_some_and(|&b| b <= b' ') {
            while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
                self.at += 1;
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), ()> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(())
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), ()> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(())
        }
    }

    /// One value; `node` is the path-trie node it sits at (None: not needed, only checked).
    fn value(&mut self, node: Option<&PathNode>, values: &mut [Token<'a>], depth: usize) -> Result<Token<'a>, ()> {
        if depth > MAX_DEPTH {
            return Err(());
        }
        match self.peek().ok_or(())? {
            b'{' => {
                self.at += 1;
                self.space();
                if self.peek() == Some(b'}') {
                    self.at += 1;
                    return Ok(Token::Object);
                }
                loop {
                    self.space();
                    let name = self.string()?;
                    self.space();
                    self.expect(b':')?;
                    self.space();
                    let child = node.and_then(|n| n.child(&name));
                    if let Some(child) = child {
                        if self.filled & child.mask != 0 {
                            child.clear(values); // a repeated name: the last one wins, as in Python
                        }
                    }
                    // Strings and numbers (most members) read here, not through a call of `value`.
                    let token = match self.peek() {
                        Some(b'"') => Token::Str(self.string()?),
                        Some(b'-' | b'0'..=b'9') => Token::Number(self.number()?),
                        _ => self.value(child.filter(|c| !c.children.is_empty()), values, depth + 1)?,
                    };
                    if let Some(child) = child {
                        match child.slots.as_slice() {
                            [] => {}
                            [slot] => values[*slot] = token, // the usual one slot: moved, not cloned
                            slots => {
                                for &slot in slots {
                                    values[slot] = token.clone();
                                }
                            }
                        }
                        self.filled |= child.mask;
                    }
                    self.space();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Token::Object);
                        }
                        _ => return Err(()),
                    }
                }
            }
            b'[' => {
                self.at += 1;
                self.space();
                if self.peek() == Some(b']') {
                    self.at += 1;
                    return Ok(Token::Array);
                }
                loop {
                    self.space();
                    self.value(None, values, depth + 1)?;
                    self.space();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Token::Array);
                        }
                        _ => return Err(()),
                    }
                }
            }
            b'"' => Ok(Token::Str(self.string()?)),
            b't' => self.literal(b"true").map(|_| Token::Bool(true)),
            b'f' => self.literal(b"false").map(|_| Token::Bool(false)),
            b'n' => self.literal(b"null").map(|_| Token::Null),
            _ => self.number().map(Token::Number),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Result<&'a str, ()> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let whole = self.digits();
        if whole == 0 || (whole > 1 && self.bytes[self.at - whole] == b'0') {
            return Err(());
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.at += 1;
            integer = false;
            if self.digits() == 0 {
                return Err(());
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(());
            }
        }
        if integer && whole > 18 {
            return Err(()); // big integers: Python's decoder has its own limits
        }
        Ok(&self.text[start..self.at])
    }

    fn hex4(&mut self) -> Result<u32, ()> {
        let digits = self.bytes.get(self.at..self.at + 4).ok_or(())?;
        let mut value = 0;
        for &digit in digits {
            value = value * 16 + (digit as char).to_digit(16).ok_or(())?;
        }
        self.at += 4;
        Ok(value)
    }

    /// A string: borrowed from the text unless it has escapes (the usual case, inlined: every name
    /// and most values of a record go through here).
    #[inline(always)]
    fn string(&mut self) -> Result<Cow<'a, str>, ()> {
        self.expect(b'"')?;
        let start = self.at;
        let plain = find_special(&self.bytes[start..]).ok_or(())?;
        self.at += plain;
        match self.bytes[self.at] {
            b'"' => {
                self.at += 1;
                // SAFETY: the text is valid UTF-8 (checked up front) and both ends sit next to an
                // ASCII quote, so both are character boundaries.
                Ok(Cow::Borrowed(unsafe { self.text.get_unchecked(start..self.at - 1) }))
            }
            b'\\' => self.escaped(start),
            _ => Err(()),
        }
    }

    /// The rest of a string with escapes, from its first backslash (at `self.at`).
    #[cold]
    #[inline(never)]
    fn escaped(&mut self, start: usize) -> Result<Cow<'a, str>, ()> {
        let mut text = String::from(&self.text[start..self.at]);
        loop {
            match self.peek().ok_or(())? {
                b'"' => {
                    self.at += 1;
                    return Ok(Cow::Owned(text));
                }
                b'\\' => {
                    self.at += 1;
                    let escape = self.peek().ok_or(())?;
                    self.at += 1;
                    match escape {
                        b'"' => text.push('"'),
                        b'\\' => text.push('\\'),
                        b'/' => text.push('/'),
                        b'b' => text.push('\u{8}'),
                        b'f' => text.push('\u{c}'),
                        b'n' => text.push('\n'),
                        b'r' => text.push('\r'),
                        b't' => text.push('\t'),
                        b'u' => {
                            let mut code = self.hex4()?;
                            if (0xD800..0xDC00).contains(&code) {
                                self.literal(b"\\u")?;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return Err(());
                                }
                                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                            }
                            text.push(char::from_u32(code).ok_or(())?); // a lone low surrogate fails here
                        }
                        _ => return Err(()),
                    }
                }
                0..=0x1f => return Err(()),
                _ => {
                    // Copy a run of plain characters (the text is valid UTF-8, checked up front).
                    let run = self.at;
                    while self.peek().is_some_and(|b| b != b'"' && b != b'\\' && b >= 0x20) {
                        self.at += 1;
                    }
                    text.push_str(&self.text[run..self.at]);
                }
            }
        }
    }
}

/// Two names of the same length alike. Most are 4 to 16 bytes: two overlapping word loads each
/// (the first and the last 4 or 8 bytes), not a byte at a time nor a memcmp call.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap());
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().unwrap());
    match n {
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => a == b,
    }
}

/// Where the first `"`, `\\` or control character is: what ends a string's plain run. Sixteen bytes
/// at a time (SSE2, which every x86-64 has): most names and values end in the first sixteen.
#[cfg(target_arch = "x86_64")]
#[inline]
fn find_special(bytes: &[u8]) -> Option<usize> {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
                            _mm_set1_epi8};
    let mut at = 0;
    while at + 16 <= bytes.len() {
        // SAFETY: SSE2 is part of x86-64; the 16 bytes read are inside `bytes` (checked just above).
        let found = unsafe {
            let chunk = _mm_loadu_si128(bytes.as_ptr().add(at) as *const __m128i);
            let quote = _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'"' as i8));
            let slash = _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'\\' as i8));
            // A byte below 0x20: max(byte, 0x1f) == 0x1f.
            let control = _mm_cmpeq_epi8(_mm_max_epu8(chunk, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f));
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, slash), control)) as u32
        };
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize);
        }
        at += 16;
    }
    find_special_swar(&bytes[at..]).map(|found| at + found)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn find_special(bytes: &[u8]) -> Option<usize> {
    find_special_swar(bytes)
}

/// The same, eight bytes at a time (SWAR): for the lowest byte that matches, these tests are exact,
/// and the lowest is the one wanted (little-endian: the first in memory).
#[inline]
fn find_special_swar(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let word = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let quote = word ^ (ONES * b'"' as u64);
        let slash = word ^ (ONES * b'\\' as u64);
        let found = ((quote.wrapping_sub(ONES) & !quote) | (slash.wrapping_sub(ONES) & !slash)
            | (word.wrapping_sub(ONES * 0x20) & !word)) & HIGHS;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    bytes[at..].iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20).map(|found| at + found)
}

/// A JSON integer's value when it is plainly one (no fraction, no exponent).
fn small_integer(text: &str) -> Option<i64> {
    if text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        return None;
    }
    text.parse().ok()
}

fn key_text<'a>(token: &Token<'a>) -> Option<Cow<'a, str>> {
    match token {
        Token::Str(text) if !text.is_empty() => Some(text.clone()),
        Token::Number(text) => small_integer(text).map(|n| Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// Micros of a plain decimal text: 1-13 digits, then maybe `.` and 1-6 digits; None otherwise
/// (Python reads the rest: signs, exponents, long fractions, or names what is wrong).
fn plain_micros(text: &str) -> Option<i64> {
    // One pass over the digits: up to 13 whole and 6 fraction digits fit a u64 (below 10^19).
    let bytes = text.as_bytes();
    let mut value: u64 = 0;
    let mut at = 0;
    let digits = |at: &mut usize, value: &mut u64| {
        let from = *at;
        while let Some(digit) = bytes.get(*at).filter(|b| b.is_ascii_digit()) {
            *value = *value * 10 + (digit - b'0') as u64;
            *at += 1;
        }
        *at - from
    };
    let whole = digits(&mut at, &mut value);
    if whole == 0 || whole > 13 {
        return None;
    }
    let mut fraction = 0;
    if at < bytes.len() {
        if bytes[at] != b'.' {
            return None;
        }
        at += 1;
        fraction = digits(&mut at, &mut value);
        if fraction == 0 || fraction > 6 || at < bytes.len() {
            return None;
        }
    }
    let micros = value * 10_u64.pow(6 - fraction as u32);
    (micros <= MAX_MICROS as u64).then_some(micros as i64)
}

/// A section 1 amount (absent and null are 0): a JSON number or a numeric string.
fn amount(token: &Token) -> Option<i64> {
    match token {
        Token::Absent | Token::Null => Some(0),
        Token::Number("-0") => Some(0), // an integer -0 is 0
        Token::Number(text) => plain_micros(text),
        Token::Str(text) => plain_micros(text),
        _ => None,
    }
}

/// An amount that may be negative (sum, min, max: `parse_signed_amount`).
fn signed_amount(token: &Token) -> Option<i64> {
    let text: &str = match token {
        Token::Number(text) => text,
        Token::Str(text) => text,
        _ => return None,
    };
    match text.strip_prefix('-') {
        Some(rest) => plain_micros(rest).map(|micros| -micros),
        None => plain_micros(text),
    }
}

/// One present value for one aggregate (`read_aggregate_value`), or None: Python decides.
fn aggregate_value(kind: Kind, token: &Token, negate: bool) -> Option<Value> {
    Some(match kind {
        Kind::Sum | Kind::Min | Kind::Max => {
            let micros = signed_amount(token)?;
            Value::Int(if negate && kind == Kind::Sum { -micros } else { micros })
        }
        Kind::First | Kind::Last => Value::Text(match token {
            Token::Str(value) => json_text(value), // its JSON text, as a derived value's
            Token::Number(number) if number.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) => {
                CompactString::from(&**number) // as written
            }
            Token::Number(number) => small_integer(number)?.to_compact_string(),
            Token::Bool(true) => CompactString::const_new("true"),
            Token::Bool(false) => CompactString::const_new("false"),
            _ => return None,
        }),
        Kind::CountDistinct => Value::Text(match token {
            Token::Str(value) => CompactString::from(&**value),
            Token::Number(number) => small_integer(number)?.to_compact_string(),
            _ => return None,
        }),
        Kind::Count => Value::Int(1),
    })
}

fn label<'a>(token: &Token<'a>) -> Result<Option<Cow<'a, str>>, ()> {
    match token {
        Token::Absent | Token::Null => Ok(None),
        Token::Str(text) => Ok(Some(text.clone())),
        _ => Err(()),
    }
}

fn two_digits(bytes: &[u8], at: usize) -> Option<i64> {
    let (a, b) = (bytes[at], bytes[at + 1]);
    (a.is_ascii_digit() && b.is_ascii_digit()).then(|| ((a - b'0') * 10 + (b - b'0')) as i64)
}

/// The last date read (`YYYY-MM-DD`, as two words) and its day number: records come in time order,
/// more or less, so most carry the date of the one before, and skip reading and checking it.
#[derive(Clone, Copy)]
pub struct LastDate {
    text: (u64, u16),
    days: i64,
}

/// `YYYY-MM-DD HH:MM:SS[.f..ffffff]` (UTC) or the same with `T` and `Z`/`±HH:MM`; None otherwise.
pub fn parse_text_time(text: &str, last: &Cell<Option<LastDate>>) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 19 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let date = (u64::from_le_bytes(b[..8].try_into().unwrap()), u16::from_le_bytes(b[8..10].try_into().unwrap()));
    let days = match last.get() {
        Some(known) if known.text == date => known.days,
        _ => {
            let days = date_days(b)?;
            last.set(Some(LastDate { text: date, days }));
            days
        }
    };
    let (hours, minutes, seconds) = (two_digits(b, 11)?, two_digits(b, 14)?, two_digits(b, 17)?);
    let iso = match b[10] {
        b' ' => false,
        b'T' => true,
        _ => return None,
    };
    let mut rest = &b[19..];
    let mut millis_part = 0;
    if let Some((&b'.', after)) = rest.split_first() {
        let digits = after.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 6 {
            return None;
        }
        for i in 0..3 {
            millis_part = millis_part * 10 + if i < digits { (after[i] - b'0') as i64 } else { 0 };
        }
        rest = &after[digits..];
    }
    let offset = match rest {
        [] if !iso => 0,
        [b'Z'] if iso => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] if iso => {
            let (off_h, off_m) = (two_digits(rest, 1)?, two_digits(rest, 4)?);
            if off_h > 23 || off_m > 59 {
                return None;
            }
            let offset = off_h * 3_600_000 + off_m * 60_000;
            if *sign == b'+' { -offset } else { offset }
        }
        _ => return None,
    };
    if hours > 23 || minutes > 59 || seconds > 59 {
        return None;
    }
    let millis = days * 86_400_000 + hours * 3_600_000 + minutes * 60_000 + seconds * 1000 + millis_part + offset;
    (0..=MAX_TIME_MS).contains(&millis).then_some(millis)
}

/// The day number of `YYYY-MM-DD` (the first 10 bytes), if it is a date (from year 1).
fn date_days(b: &[u8]) -> Option<i64> {
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = two_digits(b, 0)? * 100 + two_digits(b, 2)?;
    let (month, day) = (two_digits(b, 5)?, two_digits(b, 8)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    if year < 1 || day < 1 || day > days_in_month {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

fn event_time(token: &Token, last_date: &Cell<Option<LastDate>>) -> Option<i64> {
    match token {
        Token::Str(text) => parse_text_time(text, last_date),
        Token::Number(text) => small_integer(text).filter(|t| (0..=MAX_TIME_MS).contains(t)),
        _ => None,
    }
}

/// `decode` into `out` (a record is a few hundred bytes: written where it is kept, not copied there).
pub fn decode_into<'a>(fields: &Fields, raw: &'a [u8], kafka_timestamp: Option<i64>, out: &mut Decoded<'a>) {
    *out = decode(fields, raw, kafka_timestamp);
}

#[inline(always)]
pub fn decode<'a>(fields: &Fields, raw: &'a [u8], kafka_timestamp: Option<i64>) -> Decoded<'a> {
    let Ok(text) = simdutf8::basic::from_utf8(raw) else { return Decoded::Fallback }; // SIMD: several times std's speed
    // The fields' tokens: on the stack for the usual few group_by paths (no allocation per record).
    let mut inline = [const { Token::Absent }; INLINE_SLOTS];
    let mut spilled;
    let values: &mut [Token<'a>] = if fields.slot_count <= INLINE_SLOTS {
        &mut inline[..fields.slot_count]
    } else {
        spilled = vec![Token::Absent; fields.slot_count];
        &mut spilled
    };
    let mut reader = Reader { text, bytes: raw, at: 0, filled: 0 };
    reader.space();
    if reader.peek() != Some(b'{') {
        return Decoded::Fallback;
    }
    if reader.value(Some(&fields.tree), values, 1).is_err() {
        return Decoded::Fallback;
    }
    reader.space();
    if reader.at != raw.len() {
        return Decoded::Fallback;
    }
    let event_type = match &values[EVENT] {
        Token::Str(name) => Some(name.as_ref()),
        _ => None,
    };
    let meaning = event_type.and_then(|name| fields.names.get(name));
    if fields.filtered && !meaning.is_some_and(|m| m.listed) {
        return Decoded::Skip;
    }
    let Some(key) = key_text(&values[KEY]) else { return Decoded::Fallback };
    let time = if fields.time_from_kafka {
        kafka_timestamp.filter(|t| (0..=MAX_TIME_MS).contains(t))
    } else {
        event_time(&values[TIME], &fields.last_date)
    };
    let Some(time) = time else { return Decoded::Fallback };
    let slots = fields.shape.as_ref().map(|shape| meaning.and_then(|m| m.slots).unwrap_or(shape.plain));
    let at = |slot: Option<usize>| slot.map_or(&Token::Absent, |slot| &values[slot]);
    let (stake_at, win_at, game_at, channel_at) = match &slots {
        Some(s) => (at(s.stake), at(s.win), at(s.game), at(s.channel)),
        None => (&values[STAKE], &values[WIN], &values[GAME], &values[CHANNEL]),
    };
    let (Some(mut stake), Some(mut win)) = (amount(stake_at), amount(win_at)) else {
        return Decoded::Fallback;
    };
    let (Ok(game), Ok(channel)) = (label(game_at), label(channel_at)) else {
        return Decoded::Fallback;
    };
    let mut groups = Vec::with_capacity(fields.group_count);
    for index in 0..fields.group_count {
        match key_text(&values[GROUPS + index]) {
            Some(group) => groups.push(group),
            None => return Decoded::Fallback, // Python writes the missing_group dead letter
        }
    }
    let shaped = match (&fields.shape, slots) {
        (Some(shape), Some(slots)) => {
            let id = match shape.id.map(|slot| &values[slot]) {
                None | Some(Token::Absent | Token::Null) => None,
                Some(token) => match key_text(token) {
                    Some(id) => Some(id),
                    None => return Decoded::Fallback, // not a record id: Python names it
                },
            };
            let mut read = Values::new(); // in line for up to four (a call to size it cost more than it saved)
            // The sessions' values when they derive them: read as the stake, win, game or channel
            // (and checked there); the row says which, and whether the amounts were there.
            let derived = shape.aggregates.first().is_some_and(|aggregate| aggregate.derived);
            let present = |token: &Token| !matches!(token, Token::Absent | Token::Null);
            let row = derived.then(|| meaning.map_or(0, |m| m.row)
                | if present(stake_at) { STAKE_PRESENT } else { 0 } | if present(win_at) { WIN_PRESENT } else { 0 });
            for (index, aggregate) in shape.aggregates.iter().enumerate() {
                if aggregate.derived {
                    continue; // no value: `values` then holds the rolling aggregates' only
                }
                let feeds = !aggregate.typed || meaning.is_some_and(|m| m.feeds[index]);
                read.push(if !feeds {
                    None
                } else if aggregate.kind == Kind::Count {
                    Some(Value::Int(1))
                } else {
                    match at(aggregate.field) {
                        Token::Absent | Token::Null => None,
                        token => match aggregate_value(aggregate.kind, token, slots.negate) {
                            Some(value) => Some(value),
                            None => return Decoded::Fallback,
                        },
                    }
                });
            }
            if slots.negate {
                (stake, win) = (-stake, -win);
            }
            Some(ShapedPart { counts: slots.counts, id, values: read, row, id_hash: None })
        }
        _ => None,
    };
    Decoded::Event(Event { key, time, stake, win, game, channel, groups, shaped })
}
