//! The fast acceptance of input records (SPEC section 1).
//!
//! This only ever *accepts* a record, or skips it by the `events` filter: anything it
//! is not sure of (an error, an unusual number or time format) goes back to Python,
//! whose decoder (`sessionizer/core/events.py`) writes the dead letter or accepts it
//! the exact way. So there is one place that says what is wrong with a record.

use std::borrow::Cow;
use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::output::days_from_civil;

pub const MAX_TIME_MS: i64 = 253_402_300_799_999;
const MICROS: i64 = 1_000_000;
const MAX_AMOUNT: i64 = 1_000_000_000_000;
const MAX_MICROS: i64 = MAX_AMOUNT * MICROS;

pub struct Fields {
    pub key: Vec<String>,
    pub time: Option<Vec<String>>, // None: the Kafka record timestamp
    pub stake: Vec<String>,
    pub win: Vec<String>,
    pub game: Vec<String>,
    pub channel: Vec<String>,
    pub events: Option<HashSet<String>>,
    pub groups: Vec<Vec<String>>, // extra group_by paths, in order
}

pub struct Event<'a> {
    pub key: Cow<'a, str>,
    pub time: i64,
    pub stake: i64,
    pub win: i64,
    pub game: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub groups: Vec<Cow<'a, str>>,
}

pub enum Decoded<'a> {
    Event(Event<'a>),
    Skip,     // not in the `events` filter
    Fallback, // let the Python decoder decide (and name the error)
}

/// The value at a dot path; None when absent or when the path runs through a non-object.
fn at<'a>(body: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let mut value = body.get(&path[0])?;
    for part in &path[1..] {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// A JSON integer's value when it is plainly one (no fraction, no exponent) and small.
fn small_integer(value: &Value) -> Option<i64> {
    let Value::Number(number) = value else { return None };
    let text = number.as_str();
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn key_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(text) if !text.is_empty() => Some(Cow::Borrowed(text)),
        Value::Number(_) => small_integer(value).map(|n| Cow::Owned(n.to_string())),
        _ => None,
    }
}

fn amount(value: Option<&Value>) -> Option<i64> {
    let value = match value {
        None | Some(Value::Null) => return Some(0),
        Some(value) => value,
    };
    let Value::Number(number) = value else { return None };
    let text = number.as_str();
    let (whole, frac) = match text.split_once('.') {
        Some((whole, frac)) => (whole, frac),
        None => (text, ""),
    };
    if whole == "-0" && frac.is_empty() {
        return Some(0); // an integer -0 is 0
    }
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 13 || !digits_only(whole) || frac.len() > 6 || !digits_only(frac)
        || (text.contains('.') && frac.is_empty())
    {
        return None;
    }
    let mut micros: i64 = whole.parse::<i64>().ok()? * MICROS;
    if !frac.is_empty() {
        micros += frac.parse::<i64>().ok()? * 10_i64.pow(6 - frac.len() as u32);
    }
    (micros <= MAX_MICROS).then_some(micros)
}

fn label(value: Option<&Value>) -> Result<Option<&str>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        _ => Err(()),
    }
}

fn two_digits(bytes: &[u8], at: usize) -> Option<i64> {
    let (a, b) = (bytes[at], bytes[at + 1]);
    (a.is_ascii_digit() && b.is_ascii_digit()).then(|| ((a - b'0') * 10 + (b - b'0')) as i64)
}

/// `YYYY-MM-DD HH:MM:SS[.f..ffffff]` (UTC) or the same with `T` and `Z`/`±HH:MM`; None otherwise.
pub fn parse_text_time(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = two_digits(b, 0)? * 100 + two_digits(b, 2)?;
    let (month, day) = (two_digits(b, 5)?, two_digits(b, 8)?);
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
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    if year < 1 || day < 1 || day > days_in_month || hours > 23 || minutes > 59 || seconds > 59 {
        return None;
    }
    let millis = days_from_civil(year, month, day) * 86_400_000 + hours * 3_600_000 + minutes * 60_000
        + seconds * 1000 + millis_part + offset;
    (0..=MAX_TIME_MS).contains(&millis).then_some(millis)
}

fn event_time(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::String(text) => parse_text_time(text),
        number @ Value::Number(_) => small_integer(number).filter(|t| (0..=MAX_TIME_MS).contains(t)),
        _ => None,
    }
}

pub fn decode<'a>(fields: &Fields, body: &'a Value, kafka_timestamp: Option<i64>) -> Decoded<'a> {
    let Value::Object(body) = body else { return Decoded::Fallback };
    if let Some(events) = &fields.events {
        match body.get("event") {
            Some(Value::String(name)) if events.contains(name.as_str()) => {}
            _ => return Decoded::Skip,
        }
    }
    let Some(key) = at(body, &fields.key).and_then(key_text) else { return Decoded::Fallback };
    let time = match &fields.time {
        Some(path) => event_time(at(body, path)),
        None => kafka_timestamp.filter(|t| (0..=MAX_TIME_MS).contains(t)),
    };
    let Some(time) = time else { return Decoded::Fallback };
    let (Some(stake), Some(win)) = (amount(at(body, &fields.stake)), amount(at(body, &fields.win))) else {
        return Decoded::Fallback;
    };
    let (Ok(game), Ok(channel)) = (label(at(body, &fields.game)), label(at(body, &fields.channel))) else {
        return Decoded::Fallback;
    };
    let mut groups = Vec::with_capacity(fields.groups.len());
    for path in &fields.groups {
        match at(body, path).and_then(key_text) {
            Some(group) => groups.push(group),
            None => return Decoded::Fallback, // Python writes the missing_group dead letter
        }
    }
    Decoded::Event(Event { key, time, stake, win, game, channel, groups })
}
