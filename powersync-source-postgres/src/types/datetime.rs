//! `date`, `time`, `timetz`, `timestamp`, `timestamptz` and `interval` from their binary
//! forms, and `interval` text (the other text forms are parsed by the core's normalizers).

use powersync_source_core::normalize::time::{
    format_date, format_interval_iso, format_time, format_time_with_offset_utc, format_timestamp,
    format_timestamp_utc, DATE_INFINITY, DATE_NEG_INFINITY, INFINITY_TEXT, NEG_INFINITY_TEXT,
    TIMESTAMP_INFINITY, TIMESTAMP_NEG_INFINITY,
};
use powersync_source_core::Value;

use super::{excerpt, frac_digits, utf8, Res};

/// Days from 1970-01-01 to PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i128 = PG_EPOCH_DAYS as i128 * 86_400_000_000;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// `date`: days since 2000-01-01; `i32::MAX` / `i32::MIN` are ±infinity.
pub(crate) fn date_binary(days: i32) -> Value {
    Value::Text(format_date(match days {
        i32::MAX => DATE_INFINITY,
        i32::MIN => DATE_NEG_INFINITY,
        d => d as i64 + PG_EPOCH_DAYS,
    }))
}

/// `time`: microseconds since midnight (`24:00:00` included).
pub(crate) fn time_binary(micros: i64, typmod: i32) -> Res<Value> {
    if !(0..=MICROS_PER_DAY).contains(&micros) {
        return Err(format!("time out of range: {micros} µs"));
    }
    Ok(Value::Text(format_time(
        micros as u64 * 1000,
        frac_digits(typmod),
    )))
}

/// `timetz`: microseconds since midnight and the zone in seconds **west** of UTC.
pub(crate) fn timetz_binary(micros: i64, zone_west: i32, typmod: i32) -> Res<Value> {
    if !(0..=MICROS_PER_DAY).contains(&micros) {
        return Err(format!("time out of range: {micros} µs"));
    }
    // PostgreSQL limits offsets to ±15:59:59.
    if !(-57_599..=57_599).contains(&zone_west) {
        return Err(format!("time zone offset out of range: {zone_west} s"));
    }
    Ok(Value::Text(format_time_with_offset_utc(
        micros as u64 * 1000,
        -zone_west,
        frac_digits(typmod),
    )))
}

/// `timestamp` / `timestamptz`: microseconds since 2000-01-01 00:00:00 (UTC for
/// `timestamptz`); `i64::MAX` / `i64::MIN` are ±infinity.
pub(crate) fn timestamp_binary(micros: i64, typmod: i32, utc: bool) -> Value {
    let nanos = match micros {
        i64::MAX => TIMESTAMP_INFINITY,
        i64::MIN => TIMESTAMP_NEG_INFINITY,
        m => (m as i128 + PG_EPOCH_MICROS) * 1000,
    };
    Value::Text(if utc {
        format_timestamp_utc(nanos, frac_digits(typmod))
    } else {
        format_timestamp(nanos, frac_digits(typmod))
    })
}

/// `interval` from its three fields.
pub(crate) fn interval_binary(micros: i64, days: i32, months: i32) -> Value {
    Value::Text(format_interval_iso(months, days, micros))
}

/// `interval` text in the `postgres` (default), `postgres_verbose` or `iso_8601`
/// `IntervalStyle` → ISO 8601 duration text.
pub(crate) fn interval_text(b: &[u8]) -> Res<String> {
    let s = utf8(b)?.trim();
    if s.eq_ignore_ascii_case(INFINITY_TEXT) || s.eq_ignore_ascii_case("+infinity") {
        return Ok(format_interval_iso(i32::MAX, i32::MAX, i64::MAX));
    }
    if s.eq_ignore_ascii_case(NEG_INFINITY_TEXT) {
        return Ok(format_interval_iso(i32::MIN, i32::MIN, i64::MIN));
    }
    let parsed = if s.starts_with('P') {
        parse_iso(s.as_bytes())
    } else {
        parse_postgres(s)
    };
    let (months, days, micros) = parsed.ok_or_else(|| {
        format!(
            "invalid interval {} (IntervalStyle must be postgres or iso_8601)",
            excerpt(b)
        )
    })?;
    let months = i32::try_from(months).ok();
    let days = i32::try_from(days).ok();
    let micros = i64::try_from(micros).ok();
    match (months, days, micros) {
        (Some(m), Some(d), Some(us)) => Ok(format_interval_iso(m, d, us)),
        _ => Err(format!("interval out of range: {}", excerpt(b))),
    }
}

/// A decimal number with an optional sign and fraction → (value × 10^6) (fraction digits
/// beyond microseconds are truncated, as PostgreSQL never prints them).
fn parse_scaled(t: &[u8]) -> Option<i128> {
    let (neg, t) = match t.first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (int, frac) = match t.iter().position(|&c| c == b'.') {
        Some(p) => (&t[..p], &t[p + 1..]),
        None => (t, &t[..0]),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut v: i128 = 0;
    for &c in int {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as i128)?;
    }
    let mut f: i128 = 0;
    for i in 0..6 {
        let d = match frac.get(i) {
            Some(&c) if c.is_ascii_digit() => (c - b'0') as i128,
            Some(_) => return None,
            None => 0,
        };
        f = f * 10 + d;
    }
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = v.checked_mul(1_000_000)?.checked_add(f)?;
    Some(if neg { -v } else { v })
}

/// `1 year 2 mons -3 days +04:05:06.7`, `@ 1 year 2 mons 4 hours 5 mins 6.7 secs ago`.
fn parse_postgres(s: &str) -> Option<(i128, i128, i128)> {
    let (mut months, mut days, mut micros) = (0i128, 0i128, 0i128);
    let mut tokens = s.split_ascii_whitespace();
    let mut any = false;
    while let Some(tok) = tokens.next() {
        if tok == "@" {
            continue;
        }
        if tok == "ago" {
            (months, days, micros) = (
                months.saturating_neg(),
                days.saturating_neg(),
                micros.saturating_neg(),
            );
            continue;
        }
        any = true;
        if tok.contains(':') {
            micros = micros.saturating_add(parse_clock(tok.as_bytes())?);
            continue;
        }
        let n = parse_scaled(tok.as_bytes())?;
        let Some(unit) = tokens.next() else {
            // `postgres_verbose` prints a zero interval as `@ 0`.
            return (n == 0).then_some((months, days, micros));
        };
        let whole = |n: i128| (n % 1_000_000 == 0).then_some(n / 1_000_000);
        match unit {
            "year" | "years" => months = months.saturating_add(whole(n)?.saturating_mul(12)),
            "mon" | "mons" => months = months.saturating_add(whole(n)?),
            "day" | "days" => days = days.saturating_add(whole(n)?),
            "hour" | "hours" => micros = micros.saturating_add(n.saturating_mul(3600)),
            "min" | "mins" => micros = micros.saturating_add(n.saturating_mul(60)),
            "sec" | "secs" => micros = micros.saturating_add(n),
            _ => return None,
        }
    }
    any.then_some((months, days, micros))
}

/// `[+-]H:MM:SS[.ffffff]` → signed microseconds.
fn parse_clock(t: &[u8]) -> Option<i128> {
    let (neg, t) = match t.first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let mut parts = t.splitn(3, |&c| c == b':');
    let h = parse_scaled(parts.next()?)?;
    let m = parse_scaled(parts.next()?)?;
    let s = match parts.next() {
        Some(s) => parse_scaled(s)?,
        None => 0,
    };
    if h < 0 || m < 0 || s < 0 || h % 1_000_000 != 0 || m % 1_000_000 != 0 {
        return None;
    }
    let v = h
        .saturating_mul(3600)
        .saturating_add(m.saturating_mul(60))
        .saturating_add(s);
    Some(if neg { -v } else { v })
}

/// `P1Y2M3DT4H5M6.7S`, with a sign on any part (`P-1Y-2M3DT-4H`).
fn parse_iso(b: &[u8]) -> Option<(i128, i128, i128)> {
    let (mut months, mut days, mut micros) = (0i128, 0i128, 0i128);
    let mut i = 1;
    let mut time = false;
    let mut any = false;
    while i < b.len() {
        if b[i] == b'T' {
            time = true;
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.') {
            i += 1;
        }
        let n = parse_scaled(&b[start..i])?;
        let whole = |n: i128| (n % 1_000_000 == 0).then_some(n / 1_000_000);
        match (b.get(i)?, time) {
            (b'Y', false) => months = months.saturating_add(whole(n)?.saturating_mul(12)),
            (b'M', false) => months = months.saturating_add(whole(n)?),
            (b'W', false) => days = days.saturating_add(whole(n)?.saturating_mul(7)),
            (b'D', false) => days = days.saturating_add(whole(n)?),
            (b'H', true) => micros = micros.saturating_add(n.saturating_mul(3600)),
            (b'M', true) => micros = micros.saturating_add(n.saturating_mul(60)),
            (b'S', true) => micros = micros.saturating_add(n),
            _ => return None,
        }
        any = true;
        i += 1;
    }
    any.then_some((months, days, micros))
}
