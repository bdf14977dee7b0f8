//! Dates, times and timestamps as ISO 8601 text.

use std::fmt::Write;

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's algorithm: exact for the whole i64 range we accept.
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

/// Microseconds since the Unix epoch → `YYYY-MM-DDTHH:MM:SS[.fraction]Z` with `precision`
/// fraction digits (0–6).
pub fn format_unix_micros_utc(micros: i64, precision: u8) -> String {
    let days = micros.div_euclid(86_400_000_000);
    let rem = micros.rem_euclid(86_400_000_000);
    let (y, m, d) = civil_from_days(days);
    let secs = rem / 1_000_000;
    let frac = (rem % 1_000_000) as u32;
    let mut out = String::with_capacity(32);
    write_year(&mut out, y);
    let _ = write!(
        out,
        "-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    write_fraction(&mut out, frac * 1000, precision.min(6));
    out.push('Z');
    out
}

/// Writes a year as ISO 8601 does: four digits, `-` before years before 1 BC… i.e. astronomical
/// numbering (1 BC = `0000`, 2 BC = `-0001`), `+` never.
pub fn write_year(out: &mut String, y: i64) {
    if y < 0 {
        let _ = write!(out, "-{:04}", -y);
    } else {
        let _ = write!(out, "{y:04}");
    }
}

/// Writes `.` and `precision` digits of `nanos` (truncated, not rounded), nothing for 0.
pub fn write_fraction(out: &mut String, nanos: u32, precision: u8) {
    if precision == 0 {
        return;
    }
    let p = precision.min(9) as u32;
    let v = nanos / 10u32.pow(9 - p);
    let _ = write!(out, ".{:0width$}", v, width = p as usize);
}
