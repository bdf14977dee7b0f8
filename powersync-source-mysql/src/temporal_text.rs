//! DATE and DATETIME values from their fields (as MySQL stores and sends them) straight to the
//! core's text forms, without the round trip through nanoseconds since the epoch and back to a
//! civil date that the general formatter needs. Years 0000–9999 only (all MySQL can store);
//! anything else goes through the core formatter, so the output is the same either way (a
//! test compares the two).

use powersync_source_core::normalize::time::{
    days_from_civil, format_date, format_timestamp, format_timestamp_utc, is_valid_date,
    FracDigits, NANOS_PER_DAY, NANOS_PER_SECOND,
};

/// A DATETIME's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fields {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub micros: u32,
}

impl Fields {
    /// Whether these fields are a real date and time (zero dates and zero months/days are not).
    fn valid(&self) -> bool {
        is_valid_date(self.year as i64, self.month as u32, self.day as u32)
            && self.hour <= 23
            && self.minute <= 59
            && self.second <= 59
            && self.micros <= 999_999
    }

    fn nanos(&self) -> i128 {
        days_from_civil(self.year as i64, self.month as u32, self.day as u32) as i128
            * NANOS_PER_DAY
            + ((self.hour as i128 * 60 + self.minute as i128) * 60 + self.second as i128)
                * NANOS_PER_SECOND
            + self.micros as i128 * 1000
    }
}

/// `YYYY-MM-DD`, or `None` for a zero or otherwise invalid date.
pub(crate) fn date(year: u16, month: u8, day: u8) -> Option<String> {
    if !is_valid_date(year as i64, month as u32, day as u32) {
        return None;
    }
    if year > 9999 {
        return Some(format_date(days_from_civil(
            year as i64,
            month as u32,
            day as u32,
        )));
    }
    let mut buf = [0u8; 10];
    put_date(&mut buf, year, month, day);
    Some(ascii(&buf))
}

/// `YYYY-MM-DDTHH:MM:SS[.frac digits]` (with `Z` when `utc`), or `None` for a zero or
/// otherwise invalid value. `frac` is the column's declared precision (0–6).
pub(crate) fn datetime(f: Fields, frac: u8, utc: bool) -> Option<String> {
    if !f.valid() {
        return None;
    }
    if f.year > 9999 || frac > 6 {
        let n = f.nanos();
        return Some(if utc {
            format_timestamp_utc(n, FracDigits::Fixed(frac))
        } else {
            format_timestamp(n, FracDigits::Fixed(frac))
        });
    }
    let mut buf = [0u8; 28];
    put_date(&mut buf, f.year, f.month, f.day);
    buf[10] = b'T';
    put2(&mut buf[11..13], f.hour);
    buf[13] = b':';
    put2(&mut buf[14..16], f.minute);
    buf[16] = b':';
    put2(&mut buf[17..19], f.second);
    let mut len = 19;
    if frac > 0 {
        buf[19] = b'.';
        let mut us = f.micros;
        let mut six = [0u8; 6];
        for d in six.iter_mut().rev() {
            *d = b'0' + (us % 10) as u8;
            us /= 10;
        }
        buf[20..20 + frac as usize].copy_from_slice(&six[..frac as usize]);
        len = 20 + frac as usize;
    }
    if utc {
        buf[len] = b'Z';
        len += 1;
    }
    Some(ascii(&buf[..len]))
}

/// Seconds since the epoch (UTC) and microseconds → the TIMESTAMP text with `Z`.
pub(crate) fn timestamp_utc(secs: i64, micros: i64, frac: u8) -> String {
    // A TIMESTAMP is 1970–2106 at most (u32 seconds): i64 civil arithmetic from the fields;
    // anything else the general formatter.
    if (0..=u32::MAX as i64).contains(&secs) && (0..=999_999).contains(&micros) {
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (year, month, day) = civil_from_days(days);
        let f = Fields {
            year,
            month,
            day,
            hour: (rem / 3600) as u8,
            minute: (rem / 60 % 60) as u8,
            second: (rem % 60) as u8,
            micros: micros as u32,
        };
        if let Some(text) = datetime(f, frac, true) {
            return text;
        }
    }
    let n = secs as i128 * NANOS_PER_SECOND + micros as i128 * 1000;
    format_timestamp_utc(n, FracDigits::Fixed(frac))
}

/// Days since 1970-01-01 (0 ≤ days < 2^32 / 86400) → (year, month, day): Howard Hinnant's
/// `civil_from_days` in i64, for the range a TIMESTAMP covers.
fn civil_from_days(days: i64) -> (u16, u8, u8) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    ((if m <= 2 { y + 1 } else { y }) as u16, m, d)
}

fn put_date(buf: &mut [u8], year: u16, month: u8, day: u8) {
    let y = year as u32;
    buf[0] = b'0' + (y / 1000) as u8;
    buf[1] = b'0' + (y / 100 % 10) as u8;
    buf[2] = b'0' + (y / 10 % 10) as u8;
    buf[3] = b'0' + (y % 10) as u8;
    buf[4] = b'-';
    put2(&mut buf[5..7], month);
    buf[7] = b'-';
    put2(&mut buf[8..10], day);
}

fn put2(buf: &mut [u8], v: u8) {
    buf[0] = b'0' + v / 10;
    buf[1] = b'0' + v % 10;
}

/// The buffers above hold ASCII digits and separators only (so this never yields `""`).
fn ascii(b: &[u8]) -> String {
    std::str::from_utf8(b)
        .map(str::to_owned)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(f: Fields, frac: u8, utc: bool) -> Option<String> {
        f.valid().then(|| {
            if utc {
                format_timestamp_utc(f.nanos(), FracDigits::Fixed(frac))
            } else {
                format_timestamp(f.nanos(), FracDigits::Fixed(frac))
            }
        })
    }

    #[test]
    fn timestamps() {
        for (secs, micros, frac, want) in [
            (1, 0, 0, "1970-01-01T00:00:01Z"),
            (1_700_000_000, 123_456, 6, "2023-11-14T22:13:20.123456Z"),
            (951_782_400, 0, 0, "2000-02-29T00:00:00Z"),
            (u32::MAX as i64, 999_999, 3, "2106-02-07T06:28:15.999Z"),
            (-1, 0, 0, "1969-12-31T23:59:59Z"),
        ] {
            assert_eq!(timestamp_utc(secs, micros, frac), want);
        }
    }

    #[test]
    fn edges() {
        let f = Fields {
            year: 0,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            micros: 0,
        };
        assert_eq!(
            datetime(f, 0, false).as_deref(),
            Some("0000-01-01T00:00:00")
        );
        let f = Fields {
            year: 9999,
            month: 12,
            day: 31,
            hour: 23,
            minute: 59,
            second: 59,
            micros: 999_999,
        };
        assert_eq!(
            datetime(f, 6, false).as_deref(),
            Some("9999-12-31T23:59:59.999999")
        );
        assert_eq!(
            datetime(f, 3, true).as_deref(),
            Some("9999-12-31T23:59:59.999Z")
        );
        assert_eq!(datetime(Fields { month: 0, ..f }, 0, false), None);
        assert_eq!(date(0, 0, 0), None);
        assert_eq!(date(2024, 2, 29).as_deref(), Some("2024-02-29"));
        assert_eq!(date(2023, 2, 29), None);
    }

    proptest! {
        /// The same text as the core formatter, for every field combination MySQL can store.
        #[test]
        fn agrees_with_core(
            year in 0u16..10_000, month in 0u8..13, day in 0u8..32, hour in 0u8..24,
            minute in 0u8..60, second in 0u8..60, micros in 0u32..1_000_000,
            frac in 0u8..7, utc in any::<bool>(),
        ) {
            let f = Fields { year, month, day, hour, minute, second, micros };
            prop_assert_eq!(datetime(f, frac, utc), reference(f, frac, utc));
            let secs = (days_from_civil(year as i64, month.max(1) as u32, day.clamp(1, 28) as u32)
                * 86_400
                + hour as i64 * 3600
                + minute as i64 * 60
                + second as i64)
                .max(0);
            prop_assert_eq!(
                timestamp_utc(secs, micros as i64, frac),
                format_timestamp_utc(
                    secs as i128 * NANOS_PER_SECOND + micros as i128 * 1000,
                    FracDigits::Fixed(frac)
                )
            );
            let want = is_valid_date(year as i64, month as u32, day as u32)
                .then(|| format_date(days_from_civil(year as i64, month as u32, day as u32)));
            prop_assert_eq!(date(year, month, day), want);
        }
    }
}
