//! Dates, times, timestamps and intervals as ISO 8601 text.
//!
//! All calendar arithmetic is in the **proleptic Gregorian calendar** with **astronomical year
//! numbering** (1 BC is year `0000`, 2 BC is `-0001`), which is what ISO 8601 uses. Sources that
//! print BC years (PostgreSQL: `0044-03-15 BC`) are converted on parsing.
//!
//! Instants are plain integers so every connector can feed whatever its wire format carries:
//! days since 1970-01-01 for dates, nanoseconds since midnight for times, and nanoseconds since
//! 1970-01-01T00:00:00 (as `i128`, so no source range overflows) for timestamps. For a timestamp
//! without zone that integer is the wall-clock reading counted as if it were UTC.
//!
//! Infinite dates and timestamps (PostgreSQL `infinity` / `-infinity`) are represented by the
//! sentinels [`DATE_INFINITY`], [`DATE_NEG_INFINITY`], [`TIMESTAMP_INFINITY`] and
//! [`TIMESTAMP_NEG_INFINITY`]: the parsers return them for the texts `infinity` / `-infinity`
//! and the formatters render them as [`INFINITY_TEXT`] / [`NEG_INFINITY_TEXT`].
//!
//! Fractions are **truncated**, never rounded, to the requested number of digits
//! ([`FracDigits`]), so rounding can never carry into the next second, day or year.

use std::fmt::Write;

mod fields;
pub use fields::DateTimeFields;

/// Text of a positive-infinite date, timestamp or interval (PostgreSQL `infinity`).
pub const INFINITY_TEXT: &str = "infinity";
/// Text of a negative-infinite date, timestamp or interval (PostgreSQL `-infinity`).
pub const NEG_INFINITY_TEXT: &str = "-infinity";

/// Day count that stands for a positive-infinite date: [`format_date`] renders it as
/// [`INFINITY_TEXT`], [`parse_date_text`] returns it for `infinity`.
pub const DATE_INFINITY: i64 = i64::MAX;
/// Day count that stands for a negative-infinite date (`-infinity`).
pub const DATE_NEG_INFINITY: i64 = i64::MIN;
/// Nanosecond count that stands for a positive-infinite timestamp: [`format_timestamp`] and
/// [`format_timestamp_utc`] render it as [`INFINITY_TEXT`] (without `Z`).
pub const TIMESTAMP_INFINITY: i128 = i128::MAX;
/// Nanosecond count that stands for a negative-infinite timestamp (`-infinity`).
pub const TIMESTAMP_NEG_INFINITY: i128 = i128::MIN;

/// Nanoseconds in a second.
pub const NANOS_PER_SECOND: i128 = 1_000_000_000;
/// Nanoseconds in a day (86 400 s; there are no leap seconds in these calendars).
pub const NANOS_PER_DAY: i128 = 86_400 * NANOS_PER_SECOND;

/// How many fraction-of-second digits to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FracDigits {
    /// Exactly this many digits (the column's declared precision, e.g. `timestamp(3)` → 3,
    /// `datetime2(7)` → 7), zeros included; 0 prints no `.` at all. Values above 9 print 9.
    /// Extra precision in the value is truncated.
    Fixed(u8),
    /// As few digits as needed (trailing zeros removed) and no `.` when the fraction is zero:
    /// for values whose type declares no precision (e.g. a timestamp decoded from free text).
    /// Where the source has a fixed resolution, prefer `Fixed` with it (PostgreSQL `timestamp`
    /// without a typmod: `Fixed(6)`; MongoDB dates: `Fixed(3)`) so all values of a column
    /// have the same width and sort as text.
    Trim,
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar with
/// astronomical years. Total over all of `i64`.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let (y, m, d) = civil_from_days_wide(days as i128);
    // |days| ≤ 2^63 gives |y| < 2^63 / 365, so this cannot truncate.
    (y as i64, m, d)
}

/// Howard Hinnant's `civil_from_days`, in `i128` so that no input overflows.
fn civil_from_days_wide(days: i128) -> (i128, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01 (proleptic Gregorian, astronomical years: 1 BC is
/// year 0). The inverse of [`civil_from_days`].
///
/// Total: a month outside 1–12 carries into the year (month 13 of 2023 is January 2024, month
/// 0 is December of the year before) and the day is counted on linearly (January 32 is
/// February 1, day 0 is the last day of the month before). Results beyond `i64` saturate.
/// Use [`is_valid_date`] to check a date first.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let months = m as i128 - 1;
    let y = y as i128 + months.div_euclid(12);
    let m = months.rem_euclid(12) + 1;
    let days = days_from_civil_wide(y, m as u32) + d as i128 - 1;
    days.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Days since the epoch of the first day of month `m` (1–12) of year `y`.
fn days_from_civil_wide(y: i128, m: u32) -> i128 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i128;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whether `y` (astronomical) is a Gregorian leap year.
pub fn is_leap_year(y: i64) -> bool {
    y.rem_euclid(4) == 0 && (y.rem_euclid(100) != 0 || y.rem_euclid(400) == 0)
}

/// Number of days in month `m` (1–12) of year `y`; 0 for a month outside 1–12.
pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Whether (year, month, day) names a real day (month 1–12, day within the month).
pub fn is_valid_date(y: i64, m: u32, d: u32) -> bool {
    d >= 1 && d <= days_in_month(y, m)
}

/// Days since 1970-01-01 → `YYYY-MM-DD`.
///
/// Years 0000–9999 print as four digits; years outside that range use ISO 8601's expanded
/// form, a sign and at least six digits (see [`write_year`]): `+010000-01-01`, and with
/// astronomical numbering before 1 AD, `-000001-12-31` (2 BC) and `-000043-03-15` (44 BC).
/// [`DATE_INFINITY`] / [`DATE_NEG_INFINITY`] print [`INFINITY_TEXT`] / [`NEG_INFINITY_TEXT`].
pub fn format_date(days_since_unix_epoch: i64) -> String {
    match days_since_unix_epoch {
        DATE_INFINITY => return INFINITY_TEXT.to_owned(),
        DATE_NEG_INFINITY => return NEG_INFINITY_TEXT.to_owned(),
        _ => {}
    }
    let mut out = String::with_capacity(10);
    write_date_wide(&mut out, days_since_unix_epoch as i128);
    out
}

fn write_date_wide(out: &mut String, days: i128) {
    // Hot path (every date value): years 0000–9999 written from fields in one buffer;
    // `write!` and i128 division cost several times more.
    if let Some(fields) = i64::try_from(days)
        .ok()
        .and_then(|d| DateTimeFields::from_days(d, 0))
    {
        fields.push_date(out);
        return;
    }
    let (y, m, d) = civil_from_days_wide(days);
    write_year_wide(out, y);
    let _ = write!(out, "-{m:02}-{d:02}");
}

/// The two-digit texts `00`–`99`, back to back: one table lookup per pair of digits instead
/// of two divisions.
const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes `v` as exactly `dst.len()` decimal digits (zero-padded, high digits dropped).
#[inline]
fn put_digits(dst: &mut [u8], mut v: u32) {
    let mut end = dst.len();
    while end >= 2 {
        let i = (v % 100) as usize * 2;
        dst[end - 2..end].copy_from_slice(&DIGIT_PAIRS[i..i + 2]);
        v /= 100;
        end -= 2;
    }
    if end == 1 {
        dst[0] = b'0' + (v % 10) as u8;
    }
}

fn push_ascii(out: &mut String, ascii: &[u8]) {
    // Only ASCII digits and separators are ever written here.
    out.push_str(std::str::from_utf8(ascii).unwrap_or_default());
}

/// Nanoseconds since midnight → `HH:MM:SS[.fraction]`.
///
/// `24:00:00` (PostgreSQL and MySQL allow it: the end of the day) prints as such. Values of a
/// day or more keep counting hours (`100:00:00`), which is how MySQL `TIME` durations read; see
/// [`format_time_span`] for negative durations.
pub fn format_time(nanos_since_midnight: u64, digits: FracDigits) -> String {
    let mut out = String::with_capacity(18);
    write_hms(&mut out, nanos_since_midnight, digits);
    out
}

/// A signed duration as `[-]HH:MM:SS[.fraction]`, hours unbounded: MySQL `TIME` values such as
/// `-838:59:59`. A zero duration never prints a `-`.
pub fn format_time_span(negative: bool, nanos: u64, digits: FracDigits) -> String {
    let mut out = String::with_capacity(19);
    if negative && nanos != 0 {
        out.push('-');
    }
    write_hms(&mut out, nanos, digits);
    out
}

fn write_hms(out: &mut String, nanos: u64, digits: FracDigits) {
    let secs = nanos / 1_000_000_000;
    let frac = (nanos % 1_000_000_000) as u32;
    let hours = secs / 3600;
    if hours < 100 {
        let mut buf = [0u8; 8];
        put_digits(&mut buf[0..2], hours as u32);
        buf[2] = b':';
        put_digits(&mut buf[3..5], (secs / 60 % 60) as u32);
        buf[5] = b':';
        put_digits(&mut buf[6..8], (secs % 60) as u32);
        push_ascii(out, &buf);
    } else {
        let _ = write!(out, "{hours:02}:{:02}:{:02}", secs / 60 % 60, secs % 60);
    }
    write_frac(out, frac, digits);
}

/// Nanoseconds since 1970-01-01T00:00:00 → `YYYY-MM-DDTHH:MM:SS[.fraction]`, no zone: for
/// timestamps without time zone (the integer is the wall-clock reading counted as UTC).
///
/// Instants before 1970 count backwards, and the fraction is always the positive part within
/// the second: -1 ns is `1969-12-31T23:59:59.999999999`. The sentinels
/// [`TIMESTAMP_INFINITY`] / [`TIMESTAMP_NEG_INFINITY`] print `infinity` / `-infinity`.
pub fn format_timestamp(unix_nanos: i128, digits: FracDigits) -> String {
    let mut out = String::with_capacity(32);
    if !write_infinity(&mut out, unix_nanos) {
        write_timestamp(&mut out, unix_nanos, digits, false);
    }
    out
}

/// Like [`format_timestamp`] with a `Z` suffix: for timestamps with time zone, already
/// converted to UTC (see [`to_utc_nanos`]). Infinities print without `Z`.
pub fn format_timestamp_utc(unix_nanos: i128, digits: FracDigits) -> String {
    let mut out = String::with_capacity(33);
    if !write_infinity(&mut out, unix_nanos) {
        write_timestamp(&mut out, unix_nanos, digits, true);
    }
    out
}

fn write_infinity(out: &mut String, unix_nanos: i128) -> bool {
    match unix_nanos {
        TIMESTAMP_INFINITY => out.push_str(INFINITY_TEXT),
        TIMESTAMP_NEG_INFINITY => out.push_str(NEG_INFINITY_TEXT),
        _ => return false,
    }
    true
}

fn write_timestamp(out: &mut String, unix_nanos: i128, digits: FracDigits, utc: bool) {
    // i64 division when the value fits (years 1677–2262), i128 otherwise.
    let (days, rem) = match i64::try_from(unix_nanos) {
        Ok(n) => {
            let per_day = NANOS_PER_DAY as i64;
            (n.div_euclid(per_day) as i128, n.rem_euclid(per_day) as u64)
        }
        Err(_) => (
            unix_nanos.div_euclid(NANOS_PER_DAY),
            unix_nanos.rem_euclid(NANOS_PER_DAY) as u64,
        ),
    };
    // Four-digit years (every value of most columns): written from fields in one buffer.
    if let Some(fields) = i64::try_from(days)
        .ok()
        .and_then(|d| DateTimeFields::from_days(d, rem))
    {
        fields.push(out, digits, utc);
        return;
    }
    write_timestamp_general(out, days, rem, digits, utc);
}

/// Any instant, years of any width: the reference [`DateTimeFields`] is tested against.
fn write_timestamp_general(out: &mut String, days: i128, rem: u64, digits: FracDigits, utc: bool) {
    write_date_wide(out, days);
    out.push('T');
    write_hms(out, rem, digits);
    if utc {
        out.push('Z');
    }
}

/// [`format_timestamp`] / [`format_timestamp_utc`] without the fast path, for tests.
#[cfg(test)]
pub(crate) fn format_timestamp_general(unix_nanos: i128, digits: FracDigits, utc: bool) -> String {
    let mut out = String::new();
    write_timestamp_general(
        &mut out,
        unix_nanos.div_euclid(NANOS_PER_DAY),
        unix_nanos.rem_euclid(NANOS_PER_DAY) as u64,
        digits,
        utc,
    );
    out
}

/// A time of day with a UTC offset (PostgreSQL `timetz`) → the same instant as a UTC time of
/// day with `Z`, wrapping around midnight: `01:00:00+02` is `23:00:00Z`, `23:00:00-02` is
/// `01:00:00Z`. The result is always within `00:00:00`–`23:59:59.999999999` (so
/// `24:00:00+00` becomes `00:00:00Z`).
pub fn format_time_with_offset_utc(
    nanos_since_midnight: u64,
    offset_seconds_east: i32,
    digits: FracDigits,
) -> String {
    let utc = (nanos_since_midnight as i128 - offset_seconds_east as i128 * NANOS_PER_SECOND)
        .rem_euclid(NANOS_PER_DAY) as u64;
    let mut out = String::with_capacity(19);
    write_hms(&mut out, utc, digits);
    out.push('Z');
    out
}

/// A local wall-clock reading and its UTC offset (as returned by [`parse_timestamp_text`]) →
/// nanoseconds since the epoch in UTC. No offset means the reading already is UTC; the
/// infinity sentinels pass through unchanged.
pub fn to_utc_nanos(local_unix_nanos: i128, offset_seconds_east: Option<i32>) -> i128 {
    match (local_unix_nanos, offset_seconds_east) {
        (TIMESTAMP_INFINITY | TIMESTAMP_NEG_INFINITY, _) | (_, None) => local_unix_nanos,
        (t, Some(off)) => t.saturating_sub(off as i128 * NANOS_PER_SECOND),
    }
}

/// Microseconds since the Unix epoch → `YYYY-MM-DDTHH:MM:SS[.fraction]Z` with `precision`
/// fraction digits (0–6, larger values print 6).
pub fn format_unix_micros_utc(micros: i64, precision: u8) -> String {
    format_timestamp_utc(micros as i128 * 1000, FracDigits::Fixed(precision.min(6)))
}

/// Writes an astronomical year (1 BC = 0, 2 BC = -1) as ISO 8601 does: years 0–9999 as four
/// digits (`0000`, `2024`); any other year in the expanded form, `+` or `-` and at least six
/// digits (`+010000`, `-000001`, `+5874897`).
///
/// The expanded form is what PowerSync writes for such years (JavaScript's
/// `Date.prototype.toISOString` form), and it keeps every year's text unambiguous: a plain
/// `10000` could be read as a five-digit year or a malformed four-digit one, while `+010000`
/// cannot. [`parse_date_text`] and [`parse_timestamp_text`] read both forms back.
pub fn write_year(out: &mut String, y: i64) {
    write_year_wide(out, y as i128);
}

fn write_year_wide(out: &mut String, y: i128) {
    if (0..=9999).contains(&y) {
        let _ = write!(out, "{y:04}");
    } else {
        let sign = if y < 0 { '-' } else { '+' };
        let _ = write!(out, "{sign}{:06}", y.unsigned_abs());
    }
}

/// Writes `.` and exactly `precision` digits (at most 9) of `nanos` (truncated, not rounded);
/// nothing at all when `precision` is 0.
pub fn write_fraction(out: &mut String, nanos: u32, precision: u8) {
    if precision == 0 {
        return;
    }
    let p = precision.min(9) as usize;
    let mut buf = [0u8; 10];
    buf[0] = b'.';
    put_digits(&mut buf[1..10], nanos.min(999_999_999));
    push_ascii(out, &buf[..=p]);
}

fn write_frac(out: &mut String, nanos: u32, digits: FracDigits) {
    match digits {
        FracDigits::Fixed(p) => write_fraction(out, nanos, p),
        FracDigits::Trim => {
            if nanos != 0 {
                write_fraction(out, nanos, 9);
                let trimmed = out.trim_end_matches('0').len();
                out.truncate(trimmed);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Limits what error messages quote of their input.
fn quote(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}…")
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn at_end(&self) -> bool {
        self.i >= self.b.len()
    }
    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }
    /// Reads `min..=max` ASCII digits (`max` ≤ 18) as a number.
    fn number(&mut self, min: usize, max: usize) -> Option<u64> {
        let start = self.i;
        let mut v = 0u64;
        while self.i - start < max {
            match self.peek() {
                Some(c @ b'0'..=b'9') => {
                    v = v * 10 + (c - b'0') as u64;
                    self.i += 1;
                }
                _ => break,
            }
        }
        (self.i - start >= min).then_some(v)
    }
    /// Whether the rest starts with `word` (ASCII case-insensitive); consumes it if so.
    fn eat_word(&mut self, word: &str) -> bool {
        let end = self.i + word.len();
        if end <= self.b.len() && self.b[self.i..end].eq_ignore_ascii_case(word.as_bytes()) {
            self.i = end;
            true
        } else {
            false
        }
    }
}

/// Largest number of year digits accepted (keeps every parsed value far inside `i64`).
const MAX_YEAR_DIGITS: usize = 9;

/// Parses `[+|-]YYYY-MM-DD`; the year as written (sign applied, BC not yet).
fn parse_ymd(c: &mut Cursor<'_>) -> Result<(i64, bool, u32, u32), &'static str> {
    let signed = match c.peek() {
        Some(b'-') => {
            c.i += 1;
            Some(true)
        }
        Some(b'+') => {
            c.i += 1;
            Some(false)
        }
        _ => None,
    };
    let y = c
        .number(4, MAX_YEAR_DIGITS)
        .ok_or("expected a year of 4 to 9 digits")? as i64;
    if !c.eat(b'-') {
        return Err("expected '-' after the year");
    }
    let m = c.number(2, 2).ok_or("expected a two-digit month")? as u32;
    if !c.eat(b'-') {
        return Err("expected '-' after the month");
    }
    let d = c.number(2, 2).ok_or("expected a two-digit day")? as u32;
    let y = if signed == Some(true) { -y } else { y };
    Ok((y, signed.is_some(), m, d))
}

/// Applies an optional BC era and validates; returns days since the epoch.
fn finish_date(y: i64, signed: bool, m: u32, d: u32, bc: bool) -> Result<i64, &'static str> {
    let y = if bc {
        if signed {
            return Err("a signed year cannot also be BC");
        }
        if y == 0 {
            return Err("there is no year 0 BC");
        }
        1 - y
    } else {
        y
    };
    if !(1..=12).contains(&m) {
        return Err("month out of range");
    }
    if !is_valid_date(y, m, d) {
        return Err("day out of range for the month");
    }
    Ok(days_from_civil(y, m, d))
}

/// Parses `HH:MM:SS[.fraction]` (fraction digits beyond 9 are truncated); `24:00:00` allowed.
fn parse_hms(c: &mut Cursor<'_>) -> Result<u64, &'static str> {
    let h = c.number(2, 2).ok_or("expected a two-digit hour")?;
    if !c.eat(b':') {
        return Err("expected ':' after the hour");
    }
    let m = c.number(2, 2).ok_or("expected two-digit minutes")?;
    if !c.eat(b':') {
        return Err("expected ':' after the minutes");
    }
    let s = c.number(2, 2).ok_or("expected two-digit seconds")?;
    let mut frac = 0u64;
    if c.eat(b'.') {
        let start = c.i;
        let mut scale = 100_000_000u64;
        while let Some(ch @ b'0'..=b'9') = c.peek() {
            frac += (ch - b'0') as u64 * scale;
            scale /= 10;
            c.i += 1;
        }
        if c.i == start {
            return Err("expected digits after '.'");
        }
    }
    if m > 59 || s > 59 {
        return Err("minutes or seconds out of range");
    }
    if h > 24 || (h == 24 && (m, s, frac) != (0, 0, 0)) {
        return Err("hour out of range");
    }
    Ok(((h * 60 + m) * 60 + s) * 1_000_000_000 + frac)
}

/// Parses an optional UTC offset: `Z`, `±HH`, `±HH:MM`, `±HH:MM:SS`, `±HHMM`, `±HHMMSS`.
fn parse_offset(c: &mut Cursor<'_>) -> Result<Option<i32>, &'static str> {
    let negative = match c.peek() {
        Some(b'Z' | b'z') => {
            c.i += 1;
            return Ok(Some(0));
        }
        Some(b'+') => false,
        Some(b'-') => true,
        _ => return Ok(None),
    };
    c.i += 1;
    let h = c.number(2, 2).ok_or("expected a two-digit offset hour")?;
    let mut secs = h * 3600;
    let colon = c.eat(b':');
    match c.number(2, 2) {
        Some(m) => {
            if m > 59 {
                return Err("offset minutes out of range");
            }
            secs += m * 60;
            let s = if colon {
                if c.eat(b':') {
                    Some(c.number(2, 2).ok_or("expected offset seconds after ':'")?)
                } else {
                    None
                }
            } else {
                c.number(2, 2)
            };
            if let Some(s) = s {
                if s > 59 {
                    return Err("offset seconds out of range");
                }
                secs += s;
            }
        }
        None if colon => return Err("expected offset minutes after ':'"),
        None => {}
    }
    if h > 23 {
        return Err("offset hour out of range");
    }
    let secs = secs as i32;
    Ok(Some(if negative { -secs } else { secs }))
}

fn infinity_of(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("infinity") || s.eq_ignore_ascii_case("+infinity") {
        Some(true)
    } else if s.eq_ignore_ascii_case("-infinity") {
        Some(false)
    } else {
        None
    }
}

/// Reads an optional ` BC` / ` AD` era after optional spaces; requires the end of input.
fn parse_era_and_end(c: &mut Cursor<'_>) -> Result<bool, &'static str> {
    c.skip_spaces();
    let bc = if c.eat_word("BC") {
        true
    } else {
        c.eat_word("AD");
        false
    };
    if !c.at_end() {
        return Err("unexpected text after the value");
    }
    Ok(bc)
}

/// Parses a date as sources print it → days since 1970-01-01.
///
/// Accepts `YYYY-MM-DD` (4–9 year digits), an astronomical signed year (`-000043-03-15` and
/// `+010000-01-01` as [`format_date`] prints, or `-0043-03-15`), an era suffix ` BC` / ` AD`
/// (PostgreSQL: `0044-03-15 BC` is `-000043-03-15`), and `infinity` / `+infinity` / `-infinity` (any case) which give
/// [`DATE_INFINITY`] / [`DATE_NEG_INFINITY`]. Surrounding spaces are ignored. Rejects
/// impossible dates (`2023-02-29`, MySQL's zero date `0000-00-00`): connectors map those to
/// Null.
pub fn parse_date_text(s: &str) -> Result<i64, String> {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    match infinity_of(t) {
        Some(true) => return Ok(DATE_INFINITY),
        Some(false) => return Ok(DATE_NEG_INFINITY),
        None => {}
    }
    let mut c = Cursor {
        b: t.as_bytes(),
        i: 0,
    };
    (|| {
        let (y, signed, m, d) = parse_ymd(&mut c)?;
        let bc = parse_era_and_end(&mut c)?;
        finish_date(y, signed, m, d, bc)
    })()
    .map_err(|why| format!("invalid date {}: {why}", quote(s)))
}

/// Parses a timestamp as sources print it → (nanoseconds since 1970-01-01T00:00:00 of the
/// wall-clock reading, the UTC offset in seconds east if the text has one).
///
/// Accepts `YYYY-MM-DD HH:MM:SS[.fraction][offset][ BC]` with `T` (or `t`) instead of the
/// space, a fraction of any length (digits beyond nanoseconds are truncated), an offset `Z`,
/// `±HH`, `±HH:MM`, `±HH:MM:SS`, `±HHMM` or `±HHMMSS` (optionally after a space), the era
/// suffix ` BC` / ` AD` at the very end (PostgreSQL prints `0044-03-15 12:00:00+00 BC`), the
/// date forms of [`parse_date_text`], `24:00:00` (the next midnight), and `infinity` /
/// `-infinity` (→ [`TIMESTAMP_INFINITY`] / [`TIMESTAMP_NEG_INFINITY`], no offset). Use
/// [`to_utc_nanos`] to get the UTC instant.
pub fn parse_timestamp_text(s: &str) -> Result<(i128, Option<i32>), String> {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    match infinity_of(t) {
        Some(true) => return Ok((TIMESTAMP_INFINITY, None)),
        Some(false) => return Ok((TIMESTAMP_NEG_INFINITY, None)),
        None => {}
    }
    let mut c = Cursor {
        b: t.as_bytes(),
        i: 0,
    };
    (|| {
        let (y, signed, m, d) = parse_ymd(&mut c)?;
        if !(c.eat(b' ') || c.eat(b'T') || c.eat(b't')) {
            return Err("expected ' ' or 'T' between date and time");
        }
        let time = parse_hms(&mut c)?;
        c.skip_spaces();
        let offset = parse_offset(&mut c)?;
        let bc = parse_era_and_end(&mut c)?;
        let days = finish_date(y, signed, m, d, bc)?;
        Ok((days as i128 * NANOS_PER_DAY + time as i128, offset))
    })()
    .map_err(|why| format!("invalid timestamp {}: {why}", quote(s)))
}

/// Parses a time of day `HH:MM:SS[.fraction][offset]` → (nanoseconds since midnight, offset in
/// seconds east if present). Fraction and offset forms as in [`parse_timestamp_text`];
/// `24:00:00` is allowed (end of day). Durations beyond a day and negative times (MySQL
/// `TIME` such as `-838:59:59`) are rejected.
pub fn parse_time_text(s: &str) -> Result<(u64, Option<i32>), String> {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    let mut c = Cursor {
        b: t.as_bytes(),
        i: 0,
    };
    (|| {
        let time = parse_hms(&mut c)?;
        c.skip_spaces();
        let offset = parse_offset(&mut c)?;
        if !c.at_end() {
            return Err("unexpected text after the time");
        }
        Ok((time, offset))
    })()
    .map_err(|why| format!("invalid time {}: {why}", quote(s)))
}

// ---------------------------------------------------------------------------------------------
// Intervals

/// An interval as months, days and microseconds (PostgreSQL's representation; other sources
/// fit into it) → an ISO 8601 duration, exactly as PostgreSQL prints it with
/// `IntervalStyle = iso_8601`:
///
/// - months split into years and months (`14` months → `P1Y2M`), days kept as days (a day is
///   not always 24 hours), microseconds split into hours, minutes and seconds (hours are not
///   folded into days: `PT100H`);
/// - zero parts are left out, the `T` only appears with a time part, zero is `PT0S`;
/// - seconds carry their fraction with trailing zeros removed (`PT6.5S`);
/// - **negative parts**: ISO 8601 has no signs inside durations, so this uses the common
///   extension PostgreSQL uses: each part carries its own sign, as the three fields are
///   independent (`-1 mons +3 days -00:00:01.5` → `P-1M3DT-1.5S`; `-1 year -2 mons` →
///   `P-1Y-2M`). Years and months share the sign of `months`, hours, minutes and seconds the
///   sign of `micros`.
/// - PostgreSQL 17's infinite intervals (all fields at their maximum / minimum) print
///   [`INFINITY_TEXT`] / [`NEG_INFINITY_TEXT`].
pub fn format_interval_iso(months: i32, days: i32, micros: i64) -> String {
    if (months, days, micros) == (i32::MAX, i32::MAX, i64::MAX) {
        return INFINITY_TEXT.to_owned();
    }
    if (months, days, micros) == (i32::MIN, i32::MIN, i64::MIN) {
        return NEG_INFINITY_TEXT.to_owned();
    }
    if (months, days, micros) == (0, 0, 0) {
        return "PT0S".to_owned();
    }
    let mut out = String::with_capacity(24);
    out.push('P');
    let (years, mons) = (months / 12, months % 12);
    for (v, unit) in [(years as i64, 'Y'), (mons as i64, 'M'), (days as i64, 'D')] {
        if v != 0 {
            let _ = write!(out, "{v}{unit}");
        }
    }
    if micros != 0 {
        out.push('T');
        let hours = micros / 3_600_000_000;
        let rest = micros % 3_600_000_000;
        let minutes = rest / 60_000_000;
        let rest = rest % 60_000_000;
        if hours != 0 {
            let _ = write!(out, "{hours}H");
        }
        if minutes != 0 {
            let _ = write!(out, "{minutes}M");
        }
        if rest != 0 {
            if rest < 0 {
                out.push('-');
            }
            let rest = rest.unsigned_abs();
            let _ = write!(out, "{}", rest / 1_000_000);
            write_frac(&mut out, (rest % 1_000_000) as u32 * 1000, FracDigits::Trim);
            out.push('S');
        }
    }
    out
}
