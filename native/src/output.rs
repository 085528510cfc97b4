//! Output records as bytes, the same as `sessionizer/core/envelope.py` writes them.

const DAY_MS: i64 = 86_400_000;
const MICROS: i128 = 1_000_000;

/// A JSON string as orjson writes it: `"` and `\` escaped, control characters as
/// `\b \t \n \f \r` or `\u00xx` (lowercase), everything else as UTF-8.
pub fn json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    json_string_body(out, text);
    out.push(b'"');
}

/// `json_string` without its quotes: `text` escaped as inside a JSON string.
pub fn json_string_body(out: &mut Vec<u8>, text: &str) {
    for &byte in text.as_bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(byte >> 4) as usize]);
                out.push(HEX[(byte & 15) as usize]);
            }
            _ => out.push(byte),
        }
    }
}

fn json_label(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => json_string(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

/// An exact amount from micro-units: `0.3`, `12`, `-1.5`, never an exponent.
pub fn json_amount(out: &mut Vec<u8>, micros: i128) {
    if micros < 0 {
        out.push(b'-');
    }
    let value = micros.unsigned_abs();
    // In 64 bits when it fits (any amount a record can hold, and most totals): a 128-bit division
    // and its digits cost several times more.
    let mut frac = match u64::try_from(value) {
        Ok(value) => {
            int(out, value / MICROS as u64);
            (value % MICROS as u64) as u32
        }
        Err(_) => {
            int(out, value / MICROS as u128);
            (value % MICROS as u128) as u32
        }
    };
    if frac != 0 {
        let mut digits = [b'0'; 6];
        for place in (0..6).rev() {
            digits[place] = b'0' + (frac % 10) as u8;
            frac /= 10;
        }
        let used = 6 - digits.iter().rev().take_while(|&&d| d == b'0').count();
        out.push(b'.');
        out.extend_from_slice(&digits[..used]);
    }
}

/// An integer's decimal digits.
pub fn int(out: &mut Vec<u8>, value: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

fn two(out: &mut Vec<u8>, value: i64) {
    out.push(b'0' + (value / 10) as u8);
    out.push(b'0' + (value % 10) as u8);
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, fraction dropped (times here are never negative).
pub fn json_time(out: &mut Vec<u8>, millis: i64) {
    let (days, in_day) = (millis.div_euclid(DAY_MS), millis.rem_euclid(DAY_MS));
    let (year, month, day) = civil_from_days(days);
    let seconds = in_day / 1000;
    two(out, year / 100);
    two(out, year % 100);
    for (separator, value) in [(b'-', month), (b'-', day), (b' ', seconds / 3600), (b':', seconds / 60 % 60),
                               (b':', seconds % 60)] {
        out.push(separator);
        two(out, value);
    }
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

/// (year, month, day) -> days since 1970-01-01 (the inverse of `civil_from_days`).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub struct SessionFields<'a> {
    pub key: &'a str,
    pub start: i64,
    pub end: i64,
    pub count: usize,
    pub stake: i128,
    pub win: i128,
    pub game: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub reason: &'static str,
}

pub fn session_record(event_name: &[u8], stamp_end: bool, s: &SessionFields) -> Vec<u8> {
    // Room for the usual record (about 350 bytes with the key, game and channel) and a few extra
    // aggregates, so that it is not copied as it grows.
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"event\":");
    out.extend_from_slice(event_name);
    out.extend_from_slice(b",\"user_id\":");
    json_string(&mut out, s.key);
    out.extend_from_slice(b",\"timestamp\":\"");
    json_time(&mut out, if stamp_end { s.end } else { s.start });
    out.extend_from_slice(b"\",\"value\":{\"session_start_ms\":");
    int(&mut out, s.start);
    out.extend_from_slice(b",\"session_end_ms\":");
    int(&mut out, s.end);
    out.extend_from_slice(b",\"duration_ms\":");
    int(&mut out, s.end - s.start);
    out.extend_from_slice(b",\"event_count\":");
    int(&mut out, s.count);
    out.extend_from_slice(b",\"stake_total\":");
    json_amount(&mut out, s.stake);
    out.extend_from_slice(b",\"win_total\":");
    json_amount(&mut out, s.win);
    out.extend_from_slice(b",\"net_total\":");
    json_amount(&mut out, s.win - s.stake);
    out.extend_from_slice(b",\"game_code\":");
    json_label(&mut out, s.game);
    out.extend_from_slice(b",\"channel\":");
    json_label(&mut out, s.channel);
    out.extend_from_slice(b",\"close_reason\":\"");
    out.extend_from_slice(s.reason.as_bytes());
    out.extend_from_slice(b"\"},\"user_attributes\":{}}");
    out
}

#[allow(clippy::too_many_arguments)]
pub fn window_record(event_name: &[u8], group: &str, start: i64, end: i64, count: i64, stake: i128, win: i128,
                     start_text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"event\":");
    out.extend_from_slice(event_name);
    out.extend_from_slice(b",\"user_id\":");
    json_string(&mut out, group);
    out.extend_from_slice(b",\"timestamp\":\"");
    out.extend_from_slice(start_text);
    out.extend_from_slice(b"\",\"value\":{\"window_start_ms\":");
    int(&mut out, start);
    out.extend_from_slice(b",\"window_end_ms\":");
    int(&mut out, end);
    out.extend_from_slice(b",\"event_count\":");
    int(&mut out, count);
    out.extend_from_slice(b",\"stake_total\":");
    json_amount(&mut out, stake);
    out.extend_from_slice(b",\"win_total\":");
    json_amount(&mut out, win);
    out.extend_from_slice(b",\"net_total\":");
    json_amount(&mut out, win - stake);
    out.extend_from_slice(b"},\"user_attributes\":{}}");
    out
}
