//! `sessionizer_native.Engine`: the per-record work of one input partition, compiled.
//!
//! Driven by `sessionizer/core/native.py`, which gives it the same interface as the
//! Python `Partition`. The split: this engine owns stream time, the stores and the
//! final records; Python owns everything about a record that is wrong (decoding it the
//! exact way, dead letters and their wording: the one letter the engine writes, a replay
//! duplicate's, it fills into pieces of one Python wrote) and the state's wire format. A
//! record the engine is not sure of is handed back, untouched, for Python to decide.

mod decode;
mod due;
mod keys;
mod msgpack;
mod output;
mod sessions;
mod shapes;
mod windows;

use compact_str::CompactString;

/// Hash maps keyed by player ids and groups: foldhash (hashbrown's own default: fast on short keys
/// without AES instructions, and seeded at random per process),
/// in hashbrown's map (std's own, with `get_key_value_mut`: one lookup per record, not three).
pub type HashMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;
pub type HashSet<K> = hashbrown::HashSet<K, foldhash::fast::RandomState>;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyBytes, PyList, PyString};

use decode::{Decoded, Event, Fields, ShapeFields};
use sessions::{Key, RecordValues, SessionRules, SessionStore, ShapedRecords, Spin, NO_CLOSED_END, NO_ID};
use shapes::{Aggregate, IdRegistry, Ids, Kind, Row, Value, Values};
use windows::{Totals, WindowExtra, WindowStore, ADDED};

/// What happened to a record, for the Python side.
const DONE: u8 = 0; // aggregated (or skipped by the events filter), nothing more to do
const FALLBACK: u8 = 1; // not handled: decode it in Python (the record is counted as read)
const LATE: u8 = 2; // aggregated where it could be; `late` says for which aggregations it was late
const DUPLICATE: u8 = 3; // a copy of a record an open session or window holds (SPEC 7.2): nothing done

const NO_TIME: i64 = -1;
/// Records a job with ids decodes ahead, warming the id registry for them (`feed_text`, `feed_messages`).
const WARM_AHEAD: usize = 8;

struct Rolling {
    store: WindowStore,
    group: Option<usize>, // index into Fields::groups; None: the input key
}

/// `unsendable`: the stores share ids and labels by `Rc` (an atomic count per record cost more
/// than the record's other bookkeeping). One partition's engine lives on the thread that made it
/// (the runtime's main loop); another thread's call raises instead of racing.
#[pyclass(unsendable)]
pub struct Engine {
    fields: Fields,
    sessions: Option<SessionStore>,
    rolling: Vec<Rolling>,
    #[pyo3(get)]
    stream_time: i64,
    read: u64,
    valid: u64,
    skipped: u64,
    late: Vec<(usize, u8)>, // (0 = sessions, i + 1 = rolling i; LATE or PARTIALLY_LATE) of the last record
    late_key: String,
    late_time: i64,
    duplicate_id: String, // of the last DUPLICATE (its key in late_key)
    // DUPLICATEs `feed_text` went past: (line start, line end, lines read up to it, key, id). Their dead
    // letters (which change nothing here) are written by Python for a whole chunk at once, not one
    // return to Python per copy (each found the interpreter's code and data cold: 9 us a copy).
    duplicates: Vec<(usize, usize, usize, String, String)>,
    // The dead letters of DUPLICATEs `feed_text` went past, written here when it is given their
    // pieces (`LetterPieces`): (key, letter), for Python to take with `take_duplicate_letters`.
    letters: Vec<(String, Vec<u8>)>,
    ids: Ids,
    has_id: bool, // records have an id: the registry follows stream time
}

/// A duplicate's dead letter as Python writes it (`envelope.dead_letter`), in four pieces around
/// what differs from one duplicate to the next: the id described in its detail (as `describe`
/// does: quoted, and cut to 37 characters and `...` past 40; the quotes are in the pieces), the
/// record, and its line number in its source. Python makes the pieces from a letter it writes with
/// stand-ins for the three, so that the wording stays Python's.
#[derive(FromPyObject)]
struct LetterPieces(PyBackedBytes, PyBackedBytes, PyBackedBytes, PyBackedBytes);

impl LetterPieces {
    fn letter(&self, id: &str, record: &[u8], line: usize) -> Vec<u8> {
        let mut letter = Vec::with_capacity(self.0.len() + self.1.len() + self.2.len() + self.3.len() + record.len() + 64);
        letter.extend_from_slice(&self.0);
        match id.char_indices().nth(40) {
            None => output::json_string_body(&mut letter, id),
            Some(_) => {
                let cut = id.char_indices().nth(37).map_or(id.len(), |(at, _)| at);
                output::json_string_body(&mut letter, &id[..cut]);
                letter.extend_from_slice(b"...");
            }
        }
        letter.extend_from_slice(&self.1);
        // Valid UTF-8: the decoder read the whole line (else Python would have decoded it).
        output::json_string_body(&mut letter, std::str::from_utf8(record).expect("a decoded record is UTF-8"));
        letter.extend_from_slice(&self.2);
        output::int(&mut letter, line);
        letter.extend_from_slice(&self.3);
        letter
    }
}

/// A replay line without its end; None for a blank one (as `sessionizer/replay.py` reads lines).
fn strip_line(line: &[u8]) -> Option<&[u8]> {
    let raw = if line.last() == Some(&b'\n') {
        let keep = line.iter().rposition(|&b| b != b'\r' && b != b'\n').map_or(0, |at| at + 1);
        &line[..keep]
    } else {
        line
    };
    let blank = raw.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c));
    (!blank).then_some(raw)
}

impl Engine {
    fn feed_raw(&mut self, raw: &[u8], kafka_timestamp: Option<i64>) -> u8 {
        self.read += 1;
        let mut decoded = decode::decode(&self.fields, raw, kafka_timestamp);
        self.feed_decoded(&mut decoded)
    }

    /// Warms the id registry for the ids of `batch`, records about to be fed (see `feed_text`).
    fn warm<'a, 'b: 'a>(&self, batch: impl Iterator<Item = &'a mut Decoded<'b>>) {
        let registry = self.ids.borrow();
        for decoded in batch {
            if let Decoded::Event(Event { key, shaped: Some(part), .. }) = decoded {
                if let Some(id) = &part.id {
                    part.id_hash = Some(registry.warm(key, id));
                }
            }
        }
    }

    /// `feed_raw` of a record decoded (and counted as read).
    fn feed_decoded(&mut self, decoded: &mut Decoded) -> u8 {
        // Borrowed where it was decoded, not moved out (a shaped record's is a few hundred bytes).
        let event = match decoded {
            Decoded::Event(event) => event,
            Decoded::Skip => {
                self.skipped += 1;
                return DONE;
            }
            Decoded::Fallback => return FALLBACK,
        };
        let groups: smallvec::SmallVec<[Option<&str>; 4]> = self // in line: no allocation per record
            .rolling
            .iter()
            .map(|r| Some(r.group.map_or(&*event.key, |index| &*event.groups[index])))
            .collect();
        match &mut event.shaped {
            None => self.aggregate(&event.key, event.time, event.stake, event.win, event.game.as_deref(),
                                   event.channel.as_deref(), &groups),
            Some(part) => self.aggregate_shaped(&event.key, event.time, event.stake, event.win,
                                                event.game.as_deref(), event.channel.as_deref(), &groups,
                                                part.counts, part.id.as_deref(), part.id_hash, &mut part.values,
                                                part.row),
        }
    }

    /// A valid record into every aggregation; `groups[i]` is rolling i's group (None: it has none,
    /// Python dead-letters that). DONE, or LATE with `late` filled.
    #[allow(clippy::too_many_arguments)]
    fn aggregate(&mut self, key: &str, time: i64, stake: i64, win: i64, game: Option<&str>, channel: Option<&str>,
                 groups: &[Option<&str>]) -> u8 {
        self.valid += 1;
        self.move_time(time);
        let now = self.stream_time;
        self.late.clear();
        if let Some(sessions) = &mut self.sessions {
            if !sessions.offer(key, time, stake, win, game, channel, now) {
                self.late.push((0, windows::LATE));
            }
        }
        for (index, rolling) in self.rolling.iter_mut().enumerate() {
            if let Some(group) = groups[index] {
                let outcome = rolling.store.offer(group, time, stake, win, now);
                if outcome != ADDED {
                    self.late.push((index + 1, outcome));
                }
            }
        }
        self.outcome(key, time)
    }

    /// `aggregate` for a shaped job's record (SPEC section 7): DONE, LATE, or DUPLICATE (nothing
    /// done: an open session or window holds a record of this key with this id).
    #[allow(clippy::too_many_arguments)]
    fn aggregate_shaped(&mut self, key: &str, time: i64, stake: i64, win: i64, game: Option<&str>,
                        channel: Option<&str>, groups: &[Option<&str>], counts: bool, record_id: Option<&str>,
                        id_hash: Option<u64>, values: &mut [Option<Value>], row: Option<Row>) -> u8 {
        let slot = match record_id { // (key, id) as the registry holds it, with a holder: the session's
            None => None,
            Some(id) => match shapes::take(&self.ids, key, id, id_hash) {
                None => {
                    self.late_key.clear();
                    self.late_key.push_str(key);
                    self.duplicate_id.clear();
                    self.duplicate_id.push_str(id);
                    return DUPLICATE;
                }
                slot => slot,
            },
        };
        self.valid += 1;
        self.move_time(time);
        let now = self.stream_time;
        self.late.clear();
        // The windows first, each holding a copy of the id; then the sessions, which take the id itself.
        // `values`: the sessions' aggregates' first, unless the sessions derive them (then `row` is set).
        let sessions_take = match row {
            Some(_) => 0,
            None => self.sessions.as_ref().map_or(0, |sessions| sessions.aggregates.len()),
        };
        let mut at = sessions_take;
        let mut until = i64::MIN; // the latest close time of the windows taking the record
        for (index, rolling) in self.rolling.iter_mut().enumerate() {
            let count = rolling.store.aggregates.len();
            let mine = &values[at..at + count];
            at += count;
            if let Some(group) = groups[index] {
                let outcome = rolling.store.offer_shaped(group, time, stake, win, now, counts as i64,
                                                         slot, mine, &mut until);
                if outcome != ADDED {
                    self.late.push((index + 1, outcome));
                }
            }
        }
        if let (Some(slot), true) = (slot, until > i64::MIN) {
            self.ids.borrow_mut().hold_until(slot, until);
        }
        let mut kept = false; // the id's holder, by the session taking the record
        if let Some(sessions) = &mut self.sessions {
            let values = match row { // the sessions' values: derived from the row, or as read
                Some(row) => RecordValues::Derived(row),
                None => RecordValues::Given(&mut values[..sessions_take]),
            };
            kept = sessions.offer_shaped(key, time, stake, win, game, channel, now, counts, slot.unwrap_or(NO_ID), values);
            if !kept {
                self.late.insert(0, (0, windows::LATE)); // sessions first, as `late` lists them
            }
        }
        if let (Some(slot), false) = (slot, kept) {
            self.ids.borrow_mut().release(slot); // held by windows alone, if any
        }
        self.outcome(key, time)
    }

    /// Duplicates gone past, their dead letters not yet taken (written or not).
    fn pending_duplicates(&self) -> usize {
        self.duplicates.len() + self.letters.len()
    }

    /// DONE, or LATE with the record's key and time kept for `late()` (`self.late` says where).
    fn outcome(&mut self, key: &str, time: i64) -> u8 {
        if self.late.is_empty() {
            return DONE;
        }
        self.late_key.clear();
        self.late_key.push_str(key);
        self.late_time = time;
        LATE
    }

    /// Each output's final records not yet drained, sessions first.
    fn outputs(&mut self) -> Vec<&mut Vec<(Key, Vec<u8>)>> {
        let sessions = self.sessions.iter_mut().map(|sessions| &mut sessions.out);
        sessions.chain(self.rolling.iter_mut().map(|rolling| &mut rolling.store.out)).collect()
    }

    fn move_time(&mut self, time: i64) {
        if time <= self.stream_time {
            return;
        }
        self.stream_time = time;
        if self.has_id {
            self.ids.borrow_mut().now = time; // before the closes: a session's release sees its windows closed
        }
        if let Some(sessions) = &mut self.sessions {
            if sessions.next_due <= time {
                sessions.close_due(time);
            }
        }
        for rolling in &mut self.rolling {
            if rolling.store.next_due <= time {
                rolling.store.close_due(time);
            }
        }
    }
}

#[pymethods]
impl Engine {
    /// `sessions`: (gap, grace, max_duration, max_events, event name as JSON, stamp end, all count,
    /// aggregates); `rolling`: (size, advance, grace, event name as JSON, index of its group path or
    /// None, aggregates) each; aggregates are (name, kind). `shape`: the job's SPEC
    /// section 7 fields (see `decode::ShapeFields`), None when it uses none. `keeps_state`: false
    /// when its state is never read (no changes tracked, no snapshot: replay), which it then need
    /// not keep whole.
    #[new]
    #[pyo3(signature = (key, time, stake, win, game_code, channel, events, group_paths, sessions, rolling, track_changes,
                        shape=None, keeps_state=true))]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn new(key: &str, time: Option<&str>, stake: &str, win: &str, game_code: &str, channel: &str, events: Vec<String>,
           group_paths: Vec<String>,
           sessions: Option<(i64, i64, Option<i64>, Option<i64>, Vec<u8>, bool, bool, Vec<(String, String)>)>,
           rolling: Vec<(i64, i64, i64, Vec<u8>, Option<usize>, Vec<(String, String)>)>, track_changes: bool,
           shape: Option<ShapeFields>, keeps_state: bool) -> PyResult<Self> {
        let mut fields = Fields::new(key, time, stake, win, game_code, channel, events, &group_paths, shape)
            .map_err(PyValueError::new_err)?;
        let shaped = fields.shaped();
        let has_id = fields.has_id();
        let ids = IdRegistry::shared();
        let sessions = match sessions {
            None => None,
            Some((gap, grace, max_duration, max_events, name, stamp_end, all_count, aggregates)) => {
                let rules = SessionRules { gap, grace, max_duration, max_events, all_count };
                let mut store = SessionStore::new(rules, track_changes, name, stamp_end, shaped, aggregates_of(aggregates)?,
                                                  ids.clone());
                store.derivation = fields.derive_sessions(store.aggregates.len());
                Some(store)
            }
        };
        let mut stores = Vec::new();
        for (size, advance, grace, name, group, aggregates) in rolling {
            if size <= 0 || advance <= 0 || size % advance != 0 {
                return Err(PyValueError::new_err("size must be a positive multiple of advance"));
            }
            let store = WindowStore::new(size, advance, grace, track_changes, keeps_state || track_changes, name, shaped,
                                         aggregates_of(aggregates)?);
            stores.push(Rolling { store, group });
        }
        Ok(Engine {
            fields,
            sessions,
            rolling: stores,
            stream_time: NO_TIME,
            read: 0,
            valid: 0,
            skipped: 0,
            late: Vec::new(),
            late_key: String::new(),
            late_time: 0,
            duplicate_id: String::new(),
            duplicates: Vec::new(),
            letters: Vec::new(),
            ids,
            has_id,
        })
    }

    /// Replay text (whole lines, each ending in a line feed but maybe the file's last) from byte
    /// `start` to `stop`, until a line needs Python: (where it begins, where it ends, lines passed,
    /// that one included, FALLBACK or LATE, duplicates pending); or (stop, stop, lines passed, DONE,
    /// duplicates pending). Duplicates are gone past, and kept for `take_duplicates` (their dead letters
    /// come before the line that stopped). Blank lines are passed over. The same lines as a file's
    /// `readlines()`, without making them Python objects. `text` is any contiguous buffer of bytes
    /// (replay reads its input into one reused bytearray). With `letters` (the number of the line at
    /// `start`, and the pieces of a duplicate's dead letter that Python wrote: see `LetterPieces`),
    /// duplicates' dead letters are written here, for `take_duplicate_letters`.
    #[pyo3(signature = (text, start, stop, letters=None))]
    fn feed_text(&mut self, text: PyBuffer<u8>, start: usize, stop: usize,
                 letters: Option<(usize, LetterPieces)>) -> PyResult<(usize, usize, usize, u8, usize)> {
        if !text.is_c_contiguous() {
            return Err(PyValueError::new_err("the text must be a contiguous buffer"));
        }
        // SAFETY: a readable, contiguous buffer of `len_bytes` bytes, kept alive by `text`; nothing
        // in this call runs Python code, so it cannot change while it is read.
        let all = unsafe { std::slice::from_raw_parts(text.buf_ptr() as *const u8, text.len_bytes()) };
        let text = all.get(..stop).ok_or_else(|| PyValueError::new_err("stop is past the text's end"))?;
        let mut at = start;
        let mut lines = 0;
        // A job with ids decodes a few lines ahead and warms the id registry for them before it
        // takes them: each record's hold misses the cache (a table of every id held), and misses
        // asked for together overlap. Decoding reads nothing the records change, so the lines
        // decoded past one that stops (for Python) are simply decoded again by the next call.
        let ahead = if self.has_id { WARM_AHEAD } else { 1 };
        // In place (a record is a few hundred bytes): decoded where it is kept, taken from there.
        let mut batch: [Decoded; WARM_AHEAD] = std::array::from_fn(|_| Decoded::Skip);
        let mut places = [(0, 0, 0); WARM_AHEAD]; // each one's (start, end, line number)
        while at < text.len() {
            let mut count = 0;
            while count < ahead && at < text.len() {
                let end = memchr::memchr(b'\n', &text[at..]).map_or(text.len(), |n| at + n + 1);
                lines += 1;
                if let Some(raw) = strip_line(&text[at..end]) {
                    decode::decode_into(&self.fields, raw, None, &mut batch[count]);
                    places[count] = (at, end, lines);
                    count += 1;
                }
                at = end;
            }
            if ahead > 1 {
                self.warm(batch[..count].iter_mut());
            }
            for (decoded, &(line_at, end, line)) in batch[..count].iter_mut().zip(&places) {
                self.read += 1;
                match self.feed_decoded(decoded) {
                    DONE => {}
                    DUPLICATE => match &letters {
                        Some((first_line, pieces)) => {
                            let raw = strip_line(&text[line_at..end]).expect("a record's line is not blank");
                            let letter = pieces.letter(&self.duplicate_id, raw, first_line + line - 1);
                            self.letters.push((self.late_key.clone(), letter));
                        }
                        None => self.duplicates.push((line_at, end, line, self.late_key.clone(), self.duplicate_id.clone())),
                    },
                    outcome => return Ok((line_at, end, line, outcome, self.pending_duplicates())),
                }
            }
        }
        Ok((text.len(), text.len(), lines, DONE, self.pending_duplicates()))
    }

    /// Kafka messages from `start` while each is a record of `partition` at or after `next_offset`:
    /// (index of the first one not fed, the next offset, how many were fed, DONE, duplicates pending);
    /// or, when a fed message needs Python (FALLBACK, LATE; a null value is a FALLBACK), (its index,
    /// ..., outcome, duplicates pending). Duplicates are gone past, as in `feed_text` (for
    /// `take_duplicates`: the message's index first).
    #[pyo3(signature = (messages, start, partition, next_offset, with_timestamp))]
    fn feed_messages(&mut self, messages: &Bound<'_, PyList>, start: usize, partition: i64, mut next_offset: i64,
                     with_timestamp: bool) -> PyResult<(usize, i64, usize, u8, usize)> {
        let py = messages.py();
        let (error, partition_of, offset_of, value_of, timestamp_of) =
            (intern!(py, "error"), intern!(py, "partition"), intern!(py, "offset"), intern!(py, "value"),
             intern!(py, "timestamp"));
        // As `feed_text`: a job with ids takes its messages a few at a time, decoded and warmed first.
        let ahead = if self.has_id { WARM_AHEAD } else { 1 };
        let mut fed = 0;
        let mut index = start;
        let mut batch: Vec<(usize, i64, Option<i64>, Bound<'_, PyAny>)> = Vec::with_capacity(ahead);
        loop {
            // The next messages of this partition at or after the next offset; `foreign`: the one
            // after them is not (the feed stops there, once those before it are taken).
            let mut foreign = false;
            let mut expected = next_offset;
            while batch.len() < ahead && index < messages.len() {
                let message = messages.get_item(index)?;
                if !message.call_method0(error)?.is_none() || message.call_method0(partition_of)?.extract::<i64>()? != partition {
                    foreign = true;
                    break;
                }
                let offset: i64 = message.call_method0(offset_of)?.extract()?;
                if offset < expected {
                    foreign = true;
                    break;
                }
                let kafka_timestamp = if with_timestamp {
                    let (kind, timestamp): (i64, i64) = message.call_method0(timestamp_of)?.extract()?;
                    (kind != 0).then_some(timestamp)
                } else {
                    None
                };
                batch.push((index, offset, kafka_timestamp, message.call_method0(value_of)?));
                expected = offset + 1;
                index += 1;
            }
            let mut decoded: Vec<Decoded> = batch.iter().map(|(_, _, kafka_timestamp, value)| match value.downcast::<PyBytes>() {
                Ok(bytes) => decode::decode(&self.fields, bytes.as_bytes(), *kafka_timestamp),
                Err(_) => Decoded::Fallback, // not bytes (a null value): Python names it
            }).collect();
            if ahead > 1 {
                self.warm(decoded.iter_mut());
            }
            for ((at, offset, _, _), decoded) in batch.iter().zip(decoded.iter_mut()) {
                next_offset = offset + 1;
                fed += 1;
                self.read += 1;
                match self.feed_decoded(decoded) {
                    DONE => {}
                    DUPLICATE => self.duplicates.push((*at, *at, 0, self.late_key.clone(), self.duplicate_id.clone())),
                    outcome => return Ok((*at, next_offset, fed, outcome, self.duplicates.len())),
                }
            }
            drop(decoded);
            batch.clear();
            if foreign {
                return Ok((index, next_offset, fed, DONE, self.duplicates.len()));
            }
            if index == messages.len() {
                break;
            }
        }
        Ok((messages.len(), next_offset, fed, DONE, self.duplicates.len()))
    }

    /// One record (a Kafka message value): DONE, FALLBACK or LATE.
    #[pyo3(signature = (raw, kafka_timestamp=None))]
    fn feed(&mut self, raw: &[u8], kafka_timestamp: Option<i64>) -> u8 {
        self.feed_raw(raw, kafka_timestamp)
    }

    /// A record Python decoded and found valid (or rejected: `valid=False` only counts it as read).
    #[pyo3(signature = (key, time, stake, win, game_code, channel, groups))]
    #[allow(clippy::too_many_arguments)]
    fn offer(&mut self, key: &str, time: i64, stake: i64, win: i64, game_code: Option<&str>, channel: Option<&str>,
             groups: Vec<Option<String>>) -> PyResult<u8> {
        if groups.len() != self.rolling.len() {
            return Err(PyValueError::new_err("one group per rolling aggregation"));
        }
        let groups: Vec<Option<&str>> = groups.iter().map(Option::as_deref).collect();
        Ok(self.aggregate(key, time, stake, win, game_code, channel, &groups))
    }

    /// A valid record of a shaped job, as Python decoded it (SPEC section 7): DONE, LATE, or DUPLICATE
    /// (nothing done: an open session or window holds a record of this key with this id).
    /// `values`: one per aggregate, sessions' first (None, an int, bytes for first/last, str).
    #[pyo3(signature = (key, time, stake, win, game_code, channel, groups, counts, record_id, values))]
    #[allow(clippy::too_many_arguments)]
    fn offer_shaped(&mut self, key: &str, time: i64, stake: i64, win: i64, game_code: Option<&str>,
                    channel: Option<&str>, groups: Vec<Option<String>>, counts: bool, record_id: Option<&str>,
                    values: Vec<Option<Bound<'_, PyAny>>>) -> PyResult<u8> {
        if groups.len() != self.rolling.len() {
            return Err(PyValueError::new_err("one group per rolling aggregation"));
        }
        let mut values = values.into_iter().map(|value| value.map(|v| value_of(&v)).transpose())
            .collect::<PyResult<Values>>()?;
        let groups: Vec<Option<&str>> = groups.iter().map(Option::as_deref).collect();
        Ok(self.aggregate_shaped(key, time, stake, win, game_code, channel, &groups, counts, record_id, None, &mut values, None))
    }

    /// A record Python handled without the engine (not JSON, or skipped): counts only.
    fn count(&mut self, read: u64, skipped: u64) {
        self.read += read;
        self.skipped += skipped;
    }

    /// (key, event time, stream time, [(aggregation, LATE or PARTIALLY_LATE)]) of the last LATE record.
    fn late(&self) -> (String, i64, i64, Vec<(usize, u8)>) {
        (self.late_key.clone(), self.late_time, self.stream_time, self.late.clone())
    }

    /// The duplicates `feed_text` or `feed_messages` went past since the last call, in input order:
    /// (line start, line end, lines read in its `feed_text` call up to that line, key, id), or
    /// (message index, the same, 0, key, id).
    fn take_duplicates(&mut self) -> Vec<(usize, usize, usize, String, String)> {
        std::mem::take(&mut self.duplicates)
    }

    /// The dead letters `feed_text` wrote since the last call, in input order: (key, letter).
    fn take_duplicate_letters<'py>(&mut self, py: Python<'py>) -> Vec<(String, Bound<'py, PyBytes>)> {
        self.letters.drain(..).map(|(key, letter)| (key, PyBytes::new(py, &letter))).collect()
    }

    /// (key, record id) of the last DUPLICATE record.
    fn duplicate(&self) -> (String, String) {
        (self.late_key.clone(), self.duplicate_id.clone())
    }

    /// (read, valid, skipped by the events filter)
    fn counts(&self) -> (u64, u64, u64) {
        (self.read, self.valid, self.skipped)
    }

    fn advance(&mut self, time: i64) {
        self.move_time(time);
    }

    fn end_of_input(&mut self) {
        if let Some(sessions) = &mut self.sessions {
            sessions.close_all();
        }
        for rolling in &mut self.rolling {
            rolling.store.close_all();
        }
        self.ids.borrow_mut().windows_closed(); // releasing every id they held
    }

    /// Final records since the last drain: one list of (key, value) per output, sessions first.
    fn drain<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyList>>> {
        self.outputs().into_iter()
            .map(|out| {
                let records = out.drain(..).map(|(key, value)| (key.to_string(), PyBytes::new(py, &value)));
                PyList::new(py, records.map(|pair| pair.into_pyobject(py).unwrap()))
            })
            .collect()
    }

    /// The same records as `drain`, for a file: per output (sessions first), how many, and their
    /// values one per line (no key, no Python object per record).
    fn drain_lines<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<(usize, Bound<'py, PyBytes>)>> {
        self.outputs().into_iter()
            .map(|out| {
                let total = out.iter().map(|(_, value)| value.len() + 1).sum();
                let text = PyBytes::new_with(py, total, |buf| {
                    let mut at = 0;
                    for (_, value) in out.iter() {
                        buf[at..at + value.len()].copy_from_slice(value);
                        buf[at + value.len()] = b'\n';
                        at += value.len() + 1;
                    }
                    Ok(())
                })?;
                let count = out.len();
                out.clear();
                Ok((count, text))
            })
            .collect()
    }

    fn has_output(&self) -> bool {
        self.sessions.as_ref().is_some_and(|s| !s.out.is_empty()) || self.rolling.iter().any(|r| !r.store.out.is_empty())
    }

    fn has_changes(&self) -> bool {
        self.sessions.as_ref().is_some_and(|s| !s.changed.is_empty())
            || self.rolling.iter().any(|r| !r.store.changed.is_empty())
    }

    /// Open sessions (when there are sessions), then open (group, window) pairs per rolling aggregation.
    fn open_counts(&self) -> Vec<usize> {
        self.sessions.iter().map(SessionStore::open_count)
            .chain(self.rolling.iter().map(|r| r.store.open_count()))
            .collect()
    }

    /// The id registry's long texts: (bytes held, bytes of its buffer).
    fn id_text_bytes(&self) -> (usize, usize) {
        self.ids.borrow().long_text_bytes()
    }

    fn open_windows(&self) -> usize {
        self.sessions.as_ref().map_or(0, SessionStore::open_count)
            + self.rolling.iter().map(|r| r.store.open_count()).sum::<usize>()
    }

    // -- state ----------------------------------------------------------------------------

    /// (key, state or None when gone) per session key changed since the last call, in key order;
    /// the state as the Python core's changelog holds it.
    fn take_session_changes<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let Some(sessions) = &mut self.sessions else { return Ok(PyList::empty(py)) };
        let mut gone = Vec::new();
        let keys = sessions.changed.take(&sessions.keys, &mut gone);
        session_states(py, sessions, &keys)
    }

    fn all_session_states<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let Some(sessions) = &self.sessions else { return Ok(PyList::empty(py)) };
        let mut keys: Vec<&str> = sessions.keys.keys().chain(sessions.closed_ends.keys()).map(Key::as_str).collect();
        keys.sort_unstable();
        session_states(py, sessions, &keys)
    }

    /// ("start:group", totals or None when closed) per window of rolling `index` changed since the
    /// last call, in (start, group) order.
    fn take_window_changes<'py>(&mut self, py: Python<'py>, index: usize)
                                -> PyResult<Vec<(String, Option<Bound<'py, PyBytes>>)>> {
        let store = &mut self.rolling[index].store;
        let mut changed: Vec<(i64, Key)> = std::mem::take(&mut store.changed).into_iter().collect();
        changed.sort();
        changed
            .into_iter()
            .map(|(start, group)| {
                let totals = store.buckets.get(&start).and_then(|b| b.get(&group));
                let state = totals.map(|t| window_totals(py, t, &self.ids)).transpose()?;
                Ok((format!("{start}:{group}"), state))
            })
            .collect()
    }

    fn all_window_states<'py>(&self, py: Python<'py>, index: usize) -> PyResult<Vec<(String, Bound<'py, PyBytes>)>> {
        let store = &self.rolling[index].store;
        let mut all: Vec<(i64, &Key, &Totals)> = store
            .buckets
            .iter()
            .flat_map(|(&start, bucket)| bucket.iter().map(move |(group, totals)| (start, group, totals)))
            .collect();
        all.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        all.into_iter()
            .map(|(start, group, totals)| {
                Ok((format!("{start}:{group}"), window_totals(py, totals, &self.ids)?))
            })
            .collect()
    }

    /// A batch of one store's changelog records, (key, value or None for a tombstone) each, as the
    /// changelog holds them: `index` None for the sessions store, else the rolling store's index.
    /// The state is read here, from the MessagePack the Python core reads too (a million open
    /// sessions restore in one call per batch, not one Python call per record).
    #[pyo3(signature = (index, records))]
    fn restore_records(&mut self, index: Option<usize>, records: &Bound<'_, PyList>) -> PyResult<()> {
        self.reserve_keys(index, records.len());
        for record in records.iter() {
            // Borrowed, not copied: a `Vec<u8>` would be built from the bytes one Python int at a time.
            let (key, value): (PyBackedStr, Option<PyBackedBytes>) = record.extract()?;
            self.restore_one(index, &key, value.as_deref())?;
        }
        Ok(())
    }

    /// `restore_records` straight from confluent-kafka's messages: from `messages[start]` on, while
    /// they are records of `topic`'s partition `partition`; returns the index of the first that is not
    /// (an error or end-of-partition event, or another partition's record), for the caller to route.
    #[pyo3(signature = (index, messages, start, topic, partition))]
    fn restore_messages(&mut self, index: Option<usize>, messages: &Bound<'_, PyList>, start: usize, topic: &str,
                        partition: i64) -> PyResult<usize> {
        let py = messages.py();
        let (error, topic_of, partition_of, key_of, value_of) =
            (intern!(py, "error"), intern!(py, "topic"), intern!(py, "partition"), intern!(py, "key"),
             intern!(py, "value"));
        self.reserve_keys(index, messages.len().saturating_sub(start));
        for at in start..messages.len() {
            let message = messages.get_item(at)?;
            if !message.call_method0(error)?.is_none()
                || message.call_method0(partition_of)?.extract::<i64>()? != partition
                || message.call_method0(topic_of)?.downcast::<PyString>()?.to_str()? != topic {
                return Ok(at);
            }
            let key = message.call_method0(key_of)?;
            let key = if key.is_none() { "" } else {
                std::str::from_utf8(key.downcast::<PyBytes>()?.as_bytes())
                    .map_err(|_| PyValueError::new_err(format!("a changelog key of {topic} is not UTF-8")))?
            };
            let value = message.call_method0(value_of)?;
            let value = if value.is_none() { None } else { Some(value.downcast::<PyBytes>()?.as_bytes()) };
            self.restore_one(index, key, value)?;
        }
        Ok(messages.len())
    }

    /// Restored stream time (the largest of what the changelogs say).
    fn restore_stream_time(&mut self, time: i64) {
        self.stream_time = self.stream_time.max(time);
        self.ids.borrow_mut().now = self.stream_time;
    }

    fn finish_restore(&mut self) {
        if let Some(sessions) = &mut self.sessions {
            sessions.reschedule();
            sessions.changed.clear();
        }
        for rolling in &mut self.rolling {
            rolling.store.reschedule();
            rolling.store.changed.clear();
        }
    }
}

impl Engine {
    /// One changelog record into its store (see `restore_records`).
    fn restore_one(&mut self, index: Option<usize>, key: &str, value: Option<&[u8]>) -> PyResult<()> {
        if key.is_empty() {  // STREAM_TIME_KEY
            if let Some(value) = value {
                let text = std::str::from_utf8(value).ok().and_then(|t| t.parse::<i64>().ok());
                let time = text.ok_or_else(|| PyValueError::new_err(format!("stream time {value:?} is not an integer")))?;
                self.restore_stream_time(time);
            }
            return Ok(());
        }
        match index {
            None => {
                let state = match value {
                    None => None,
                    Some(bytes) => Some(self.read_session_state(key, bytes).ok_or_else(|| {
                        PyValueError::new_err(format!("session state of {key:?} cannot be read"))
                    })?),
                };
                let Some(sessions) = &mut self.sessions else { return Err(PyValueError::new_err("no sessions store")) };
                sessions.restore(key, state);
            }
            Some(index) => {
                let (start_text, group) = key.split_once(':')
                    .ok_or_else(|| PyValueError::new_err(format!("window key {key:?} has no ':'")))?;
                let start = start_text.parse::<i64>()
                    .map_err(|_| PyValueError::new_err(format!("window key {key:?} does not start with a time")))?;
                let totals = match value {
                    None => None,
                    Some(bytes) => {
                        let rolling = self.rolling.get(index)
                            .ok_or_else(|| PyValueError::new_err("no such rolling store"))?;
                        let close_at = rolling.store.close_at(start);
                        Some(read_totals(bytes, &rolling.store.aggregates, &self.ids, close_at).ok_or_else(|| {
                            PyValueError::new_err(format!("window totals of {key:?} cannot be read"))
                        })?)
                    }
                };
                let rolling = self.rolling.get_mut(index).ok_or_else(|| PyValueError::new_err("no such rolling store"))?;
                rolling.store.restore(start, group, totals);
            }
        }
        Ok(())
    }

    /// Room in the sessions map for the keys a batch brings (restore grows it once, not step by step).
    fn reserve_keys(&mut self, index: Option<usize>, count: usize) {
        if let (None, Some(sessions)) = (index, &mut self.sessions) {
            sessions.reserve(count);
        }
    }

    /// A session state as `session_state` writes it: (closed end, times, amounts, labels), and a
    /// shaped job's extras as a fifth item (a state written before the job was shaped has none).
    fn read_session_state(&mut self, key: &str, bytes: &[u8]) -> Option<(i64, Vec<Spin>, ShapedRecords)> {
        let sessions = self.sessions.as_mut()?;
        let mut r = msgpack::Reader::new(bytes);
        let items = r.array()?;
        if items != 4 && !(items == 5 && sessions.shaped) {
            return None;
        }
        let closed_end = i64::try_from(r.int()?).ok()?;
        let times = r.bin()?;
        let amounts = r.bin()?;
        let count = r.array()?;
        if times.len() != 8 * count || amounts.len() != 16 * count {
            return None;
        }
        let word = |bytes: &[u8], i: usize| i64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap());
        let mut spins = Vec::with_capacity(count);
        for i in 0..count {
            let label = if r.nil()? {
                None
            } else {
                if r.array()? != 2 {
                    return None;
                }
                let (game, channel) = (r.optional_str()?, r.optional_str()?);
                sessions.label(game, channel)
            };
            spins.push(Spin { time: word(times, i), stake: word(amounts, 2 * i), win: word(amounts, 2 * i + 1), label });
        }
        let stride = sessions.aggregates.len();
        let mut records = ShapedRecords::with_capacity(stride, count, false, sessions.ids.clone()); // values kept: rows are not in the state
        if items == 5 {
            if r.array()? != count {
                return None;
            }
            let mut values = Values::new();
            for _ in 0..count {
                if r.array()? != 3 {
                    return None;
                }
                let counts = r.boolean()?;
                let id = r.optional_str()?.map_or(NO_ID, |id| shapes::hold(&self.ids, key, id));
                let written = r.array()?;
                if written > stride {
                    return None; // more values than aggregates: not this job's state
                }
                values.clear();
                for _ in 0..written {
                    values.push(shapes::read_value(&mut r)?);
                }
                values.resize(stride, None); // fewer: aggregates added since, nothing for them yet
                records.push(counts, id, &mut values);
            }
        } else if sessions.shaped {
            let mut nothing: Values = smallvec::smallvec![None; stride];
            for _ in 0..count { // a state written before the job was shaped
                records.push(true, NO_ID, &mut nothing);
            }
        }
        r.done().then_some((closed_end, spins, records))
    }
}

/// A window's totals as `window_state` writes them: (count, stake, win), and a shaped job's
/// (aggregate states, [(key, id)...]) after them; the ids held until the window's `close_at`.
fn read_totals(bytes: &[u8], aggregates: &[Aggregate], ids: &Ids, close_at: i64) -> Option<Totals> {
    let mut r = msgpack::Reader::new(bytes);
    let items = r.array()?;
    if items != 3 && items != 5 {
        return None;
    }
    let count = i64::try_from(r.int()?).ok()?;
    let (stake, win) = (r.int()?, r.int()?);
    let mut extra = None;
    if items == 5 {
        if r.array()? != aggregates.len() {
            return None;
        }
        let states = aggregates.iter().map(|aggregate| shapes::read_state(&mut r, aggregate)).collect::<Option<Vec<_>>>()?;
        let mut held = windows::HeldIds::new();
        for _ in 0..r.array()? {
            if r.array()? != 2 {
                return None;
            }
            let (key, id) = (r.str()?, r.str()?);
            held.push(shapes::hold_for_window(ids, key, id, close_at));
        }
        extra = Some(Box::new(WindowExtra { states, held }));
    }
    r.done().then_some(Totals { count, stake, win, extra })
}

/// (name, kind) pairs as the stores' aggregates.
fn aggregates_of(pairs: Vec<(String, String)>) -> PyResult<Vec<Aggregate>> {
    pairs.into_iter()
        .map(|(name, kind)| {
            let kind = Kind::of(&kind).ok_or_else(|| PyValueError::new_err(format!("no aggregate kind {kind:?}")))?;
            Ok(Aggregate::new(&name, kind))
        })
        .collect()
}

/// One aggregate value from Python: bytes (first/last), str (count_distinct) or an int.
fn value_of(value: &Bound<'_, PyAny>) -> PyResult<Value> {
    if let Ok(bytes) = value.downcast::<PyBytes>() {
        return Ok(Value::Text(CompactString::from_utf8(bytes.as_bytes())
            .map_err(|_| PyValueError::new_err("a first/last value is not UTF-8 JSON"))?));
    }
    if let Ok(text) = value.downcast::<PyString>() {
        return Ok(Value::Text(text.to_str()?.into()));
    }
    Ok(Value::Int(value.extract()?))
}

/// One key's state as msgspec encodes the Python core's (closed end, times, amounts, labels);
/// None when the key has no state left.
fn session_state<'py>(py: Python<'py>, sessions: &SessionStore, key: &str, out: &mut Vec<u8>)
                     -> Option<Bound<'py, PyBytes>> {
    out.clear();
    match sessions.keys.get(key) {
        None => {
            let &end = sessions.closed_ends.get(key)?;
            msgpack::array(out, 4);
            msgpack::int(out, end as i128)?;
            msgpack::bin(out, b"");
            msgpack::bin(out, b"");
            msgpack::array(out, 0);
        }
        Some(state) => {
            let times: Vec<u8> = state.spins.iter().flat_map(|spin| spin.time.to_le_bytes()).collect();
            let amounts: Vec<u8> = state.spins.iter()
                .flat_map(|spin| spin.stake.to_le_bytes().into_iter().chain(spin.win.to_le_bytes())).collect();
            msgpack::array(out, if sessions.shaped { 5 } else { 4 });
            msgpack::int(out, state.closed_end.max(NO_CLOSED_END) as i128)?;
            msgpack::bin(out, &times);
            msgpack::bin(out, &amounts);
            msgpack::array(out, state.spins.len());
            for label in state.spins.iter().map(|spin| &spin.label) {
                match label {
                    None => msgpack::nil(out),
                    Some(label) => {
                        msgpack::array(out, 2);
                        for part in [&label.0, &label.1] {
                            match part {
                                None => msgpack::nil(out),
                                Some(text) => msgpack::str(out, text),
                            }
                        }
                    }
                }
            }
            if let (true, Some(records)) = (sessions.shaped, state.records()) {
                msgpack::array(out, records.len());
                for index in 0..records.len() {
                    msgpack::array(out, 3);
                    msgpack::boolean(out, records.counts(index));
                    if records.with_id(index, |_, id| msgpack::str(out, id)).is_none() {
                        msgpack::nil(out);
                    }
                    msgpack::array(out, records.stride);
                    records.each_value(index, &state.spins[index], sessions.derivation.as_ref(), |aggregate, value| {
                        shapes::write_value(out, &sessions.aggregates[aggregate], value);
                    });
                }
            }
        }
    }
    Some(PyBytes::new(py, out))
}

/// (key, state or None) per key, as a list made in place: a commit of many keys holds no copy of
/// them (nor of their states) on the side.
fn session_states<'py>(py: Python<'py>, sessions: &SessionStore, keys: &[&str]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    let mut out = Vec::with_capacity(64);
    for &key in keys {
        list.append((key, session_state(py, sessions, key, &mut out)))?;
    }
    Ok(list)
}

/// A window's (count, stake, win) as msgspec encodes it, with a shaped window's (states, ids).
fn window_totals<'py>(py: Python<'py>, totals: &Totals, ids: &Ids) -> PyResult<Bound<'py, PyBytes>> {
    let extra = totals.extra.as_deref();
    let too_large = || PyValueError::new_err("a window total is too large for its state");
    let mut out = Vec::with_capacity(24);
    msgpack::array(&mut out, if extra.is_some() { 5 } else { 3 });
    for value in [totals.count as i128, totals.stake, totals.win] {
        msgpack::int(&mut out, value).ok_or_else(too_large)?;
    }
    if let Some(extra) = extra {
        msgpack::array(&mut out, extra.states.len());
        for state in &extra.states {
            shapes::write_state(&mut out, state).ok_or_else(too_large)?;
        }
        msgpack::array(&mut out, extra.held.len());
        let registry = ids.borrow();
        for &slot in &extra.held {
            let (key, id) = registry.texts_of(slot);
            msgpack::array(&mut out, 2);
            msgpack::str(&mut out, key);
            msgpack::str(&mut out, id);
        }
    }
    Ok(PyBytes::new(py, &out))
}

/// `sessionizer._native`: built into the sessionizer package itself (maturin's mixed layout).
/// Places in mimalloc 3's `mi_option_t` (libmimalloc-sys builds mimalloc 3 unless told "v2").
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    // Pages in 4 KiB, not transparent huge ones: windows and sessions close and open all the time,
    // and faulting pages in again, 2 MiB zeroed by the kernel at a time, cost a fifth to a third of
    // a replay's time. Freed pages go back to the OS after 100 ms, not mimalloc's 10 ms (pages freed
    // and wanted again at once stay) nor never (RSS then keeps every page that a growing vector or
    // table ever freed: 545 instead of 449 bytes per open session in make bench-kafka's state
    // script, for 20 % more minor faults in a replay, a few ms). An operator's MIMALLOC_PURGE_DELAY
    // / MIMALLOC_ALLOW_THP still win.
    for (option, name, value) in [(MI_OPTION_PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 100),
                                  (MI_OPTION_ALLOW_THP, "MIMALLOC_ALLOW_THP", 0)] {
        if std::env::var_os(name).is_none() {
            // SAFETY: sets one integer option; mimalloc reads it when it next needs it.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
    module.add_class::<Engine>()?;
    module.add("DONE", DONE)?;
    module.add("FALLBACK", FALLBACK)?;
    module.add("LATE", LATE)?;
    module.add("DUPLICATE", DUPLICATE)?;
    module.add("PARTIALLY_LATE", windows::PARTIALLY_LATE)?;
    Ok(())
}

// The engine allocates and frees many small objects per record (keys, a player's records, output
// buffers): mimalloc keeps them close together and returns freed memory instead of fragmenting.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
