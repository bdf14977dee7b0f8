//! Dates and date-times written straight from their fields into one stack buffer: the hot
//! path of every timestamp a connector emits (a snapshot of a table with one timestamp column
//! formats one per row).
//!
//! [`super`]'s formatters take instants (nanoseconds since the epoch) and use this
//! writer for years 0000–9999; sources that keep dates as fields (MySQL DATETIME, both in
//! result sets and in the binlog) call it directly, without the round trip through an instant.
//! Years beyond 9999 (ISO 8601's expanded form) go through the instant formatters.

use super::{is_valid_date, push_ascii, put_digits, FracDigits};

/// A civil date and time of day (proleptic Gregorian, astronomical years), as sources store
/// DATETIME values and as an instant splits into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTimeFields {
    /// Astronomical year (0 is 1 BC).
    pub year: u16,
    /// 1–12.
    pub month: u8,
    /// 1–31, within the month.
    pub day: u8,
    /// 0–23.
    pub hour: u8,
    /// 0–59.
    pub minute: u8,
    /// 0–59.
    pub second: u8,
    /// Fraction of the second in nanoseconds, 0–999 999 999.
    pub nanos: u32,
}

/// Days from 0000-03-01 to 1970-01-01 (Howard Hinnant's civil algorithms shift the year to
/// start in March so that the leap day is the last day of the year).
const EPOCH_SHIFT_DAYS: i64 = 719_468;
/// Days since 1970-01-01 of 0000-01-01 and 9999-12-31: the range of four-digit years.
const FOUR_DIGIT_YEAR_DAYS: std::ops::RangeInclusive<i64> = -719_528..=2_932_896;

impl DateTimeFields {
    /// The fields of the day `days` since 1970-01-01 at `nanos_of_day` after midnight, when
    /// the day is in years 0000–9999 and `nanos_of_day` is less than a day; `None` otherwise.
    pub fn from_days(days: i64, nanos_of_day: u64) -> Option<Self> {
        if !FOUR_DIGIT_YEAR_DAYS.contains(&days) || nanos_of_day >= 86_400_000_000_000 {
            return None;
        }
        let (year, month, day) = civil_from_days_four_digit(days);
        let secs = (nanos_of_day / 1_000_000_000) as u32;
        Some(DateTimeFields {
            year,
            month,
            day,
            hour: (secs / 3600) as u8,
            minute: (secs / 60 % 60) as u8,
            second: (secs % 60) as u8,
            nanos: (nanos_of_day % 1_000_000_000) as u32,
        })
    }

    /// Whether the fields name a real date and time: a valid day and a time of day up to
    /// 23:59:59.999999999 (MySQL's zero dates and zero days are not).
    pub fn is_valid(&self) -> bool {
        is_valid_date(self.year as i64, self.month as u32, self.day as u32)
            && self.hour <= 23
            && self.minute <= 59
            && self.second <= 59
            && self.nanos <= 999_999_999
    }

    /// `YYYY-MM-DDTHH:MM:SS[.fraction]`, with `Z` when `utc`: the same text as
    /// [`super::format_timestamp`] / [`super::format_timestamp_utc`] give for the
    /// same instant. `None` when the fields are not [valid](Self::is_valid).
    pub fn format(&self, digits: FracDigits, utc: bool) -> Option<String> {
        if !self.is_valid() {
            return None;
        }
        if self.year > 9999 {
            return Some(self.format_general(digits, utc));
        }
        let mut out = String::with_capacity(32);
        self.push(&mut out, digits, utc);
        Some(out)
    }

    /// `YYYY-MM-DD`, or `None` when the date is not valid (the time fields are ignored).
    pub fn format_date(&self) -> Option<String> {
        if !is_valid_date(self.year as i64, self.month as u32, self.day as u32) {
            return None;
        }
        if self.year > 9999 {
            return Some(super::format_date(self.days()));
        }
        let mut out = String::with_capacity(10);
        self.push_date(&mut out);
        Some(out)
    }

    fn days(&self) -> i64 {
        super::days_from_civil(self.year as i64, self.month as u32, self.day as u32)
    }

    /// Years beyond 9999 (expanded form) through the instant formatters.
    fn format_general(&self, digits: FracDigits, utc: bool) -> String {
        let instant = self.days() as i128 * super::NANOS_PER_DAY
            + ((self.hour as i128 * 60 + self.minute as i128) * 60 + self.second as i128)
                * super::NANOS_PER_SECOND
            + self.nanos as i128;
        if utc {
            super::format_timestamp_utc(instant, digits)
        } else {
            super::format_timestamp(instant, digits)
        }
    }

    /// Appends the text of [`DateTimeFields::format`] to `out` (the fields must be valid, the
    /// year 0000–9999).
    pub(crate) fn push(&self, out: &mut String, digits: FracDigits, utc: bool) {
        let mut buf = [0u8; 32];
        let len = self.write(&mut buf, digits, utc);
        push_ascii(out, &buf[..len]);
    }

    /// Appends `YYYY-MM-DD` to `out` (the year 0000–9999).
    pub(super) fn push_date(&self, out: &mut String) {
        let mut buf = [0u8; 10];
        self.write_date(&mut buf);
        push_ascii(out, &buf);
    }

    /// Writes `YYYY-MM-DD` into the first 10 bytes of `buf`.
    fn write_date(&self, buf: &mut [u8]) {
        put_digits(&mut buf[0..4], self.year as u32);
        buf[4] = b'-';
        put_digits(&mut buf[5..7], self.month as u32);
        buf[7] = b'-';
        put_digits(&mut buf[8..10], self.day as u32);
    }

    /// Writes the text into `buf` (32 bytes hold the longest: 19 + `.` + 9 digits + `Z`) and
    /// returns its length.
    fn write(&self, buf: &mut [u8; 32], digits: FracDigits, utc: bool) -> usize {
        self.write_date(buf);
        buf[10] = b'T';
        put_digits(&mut buf[11..13], self.hour as u32);
        buf[13] = b':';
        put_digits(&mut buf[14..16], self.minute as u32);
        buf[16] = b':';
        put_digits(&mut buf[17..19], self.second as u32);
        let mut len = 19;
        let shown = match digits {
            FracDigits::Fixed(p) => p.min(9) as usize,
            FracDigits::Trim if self.nanos == 0 => 0,
            FracDigits::Trim => 9 - trailing_decimal_zeros(self.nanos),
        };
        if shown > 0 {
            buf[19] = b'.';
            let mut nine = [0u8; 9];
            put_digits(&mut nine, self.nanos.min(999_999_999));
            buf[20..20 + shown].copy_from_slice(&nine[..shown]);
            len = 20 + shown;
        }
        if utc {
            buf[len] = b'Z';
            len += 1;
        }
        len
    }
}

/// Trailing decimal zeros of a non-zero fraction in nanoseconds (at most 8).
fn trailing_decimal_zeros(mut nanos: u32) -> usize {
    let mut zeros = 0;
    while zeros < 8 && nanos != 0 && nanos.is_multiple_of(10) {
        nanos /= 10;
        zeros += 1;
    }
    zeros
}

/// [`super::civil_from_days`] in i64 for days of years 0000–9999. Counted from one 400-year
/// era earlier (0000-01-01 and -02-29 lie before the March-based year 0), so `z` is never
/// negative and plain division is Euclidean division.
fn civil_from_days_four_digit(days: i64) -> (u16, u8, u8) {
    const ERA_DAYS: i64 = 146_097;
    let z = days + EPOCH_SHIFT_DAYS + ERA_DAYS;
    let era = z / ERA_DAYS;
    let doe = z % ERA_DAYS;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400 - 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    ((if m <= 2 { y + 1 } else { y }) as u16, m, d)
}

#[cfg(test)]
mod tests {
    use super::super::{
        civil_from_days, days_from_civil, format_date, format_timestamp, format_timestamp_general,
        NANOS_PER_DAY, NANOS_PER_SECOND,
    };
    use super::*;
    use proptest::prelude::*;

    fn fields(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, nanos: u32) -> DateTimeFields {
        DateTimeFields {
            year: y,
            month: mo,
            day: d,
            hour: h,
            minute: mi,
            second: s,
            nanos,
        }
    }

    #[test]
    fn edges() {
        let f = fields(0, 1, 1, 0, 0, 0, 0);
        assert_eq!(
            f.format(FracDigits::Fixed(0), false).as_deref(),
            Some("0000-01-01T00:00:00")
        );
        let f = fields(9999, 12, 31, 23, 59, 59, 999_999_999);
        assert_eq!(
            f.format(FracDigits::Fixed(6), false).as_deref(),
            Some("9999-12-31T23:59:59.999999")
        );
        assert_eq!(
            f.format(FracDigits::Fixed(9), true).as_deref(),
            Some("9999-12-31T23:59:59.999999999Z")
        );
        assert_eq!(
            fields(2024, 1, 1, 0, 0, 0, 500_000_000)
                .format(FracDigits::Trim, true)
                .as_deref(),
            Some("2024-01-01T00:00:00.5Z")
        );
        assert_eq!(
            fields(2024, 0, 1, 0, 0, 0, 0).format(FracDigits::Trim, true),
            None
        );
        assert_eq!(fields(2023, 2, 29, 0, 0, 0, 0).format_date(), None);
        assert_eq!(
            fields(10_000, 1, 1, 0, 0, 0, 0).format_date().as_deref(),
            Some("+010000-01-01")
        );
        assert_eq!(
            fields(10_000, 1, 1, 0, 0, 1, 0)
                .format(FracDigits::Fixed(0), true)
                .as_deref(),
            Some("+010000-01-01T00:00:01Z")
        );
        assert_eq!(
            fields(2024, 2, 29, 0, 0, 0, 0).format_date().as_deref(),
            Some("2024-02-29")
        );
        for (days, text) in [
            (-719_528, "0000-01-01"),
            (-719_469, "0000-02-29"),
            (-719_468, "0000-03-01"),
            (-719_163, "0000-12-31"),
            (2_932_896, "9999-12-31"),
        ] {
            let f = DateTimeFields::from_days(days, 0).unwrap();
            assert_eq!(f.format_date().as_deref(), Some(text));
        }
        assert_eq!(DateTimeFields::from_days(-719_529, 0), None);
        assert_eq!(DateTimeFields::from_days(0, 86_400_000_000_000), None);
    }

    fn digits() -> impl Strategy<Value = FracDigits> {
        prop_oneof![
            (0u8..12).prop_map(FracDigits::Fixed),
            Just(FracDigits::Trim)
        ]
    }

    proptest! {
        /// The same text as the general instant formatter for every four-digit-year instant.
        #[test]
        fn agrees_with_the_instant_formatter(
            days in prop_oneof![-719_528i64..=2_932_896, -719_528i64..-719_000, 2_932_000i64..=2_932_896],
            nanos in 0u64..86_400_000_000_000,
            digits in digits(),
            utc in any::<bool>(),
        ) {
            let f = DateTimeFields::from_days(days, nanos).unwrap();
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!((f.year as i64, f.month as u32, f.day as u32), (y, m, d));
            let instant = days as i128 * NANOS_PER_DAY + nanos as i128;
            let want = format_timestamp_general(instant, digits, utc);
            prop_assert_eq!(f.format(digits, utc), Some(want.clone()));
            let fast = if utc {
                super::super::format_timestamp_utc(instant, digits)
            } else {
                format_timestamp(instant, digits)
            };
            prop_assert_eq!(fast, want);
            prop_assert_eq!(f.format_date(), Some(format_date(days)));
        }

        /// Fields a source may send (zero dates, day 31 of short months) are formatted exactly
        /// when they are a real date.
        #[test]
        fn invalid_fields_are_declined(
            year in 0u16..12_000, month in 0u8..13, day in 0u8..32, hour in 0u8..24,
            minute in 0u8..60, second in 0u8..60, micros in 0u32..1_000_000,
        ) {
            let f = fields(year, month, day, hour, minute, second, micros * 1000);
            let real = is_valid_date(year as i64, month as u32, day as u32);
            prop_assert_eq!(f.format(FracDigits::Fixed(6), false).is_some(), real);
            if real {
                let days = days_from_civil(year as i64, month as u32, day as u32);
                let instant = days as i128 * NANOS_PER_DAY
                    + ((hour as i128 * 60 + minute as i128) * 60 + second as i128)
                        * NANOS_PER_SECOND
                    + micros as i128 * 1000;
                prop_assert_eq!(
                    f.format(FracDigits::Fixed(6), false),
                    Some(format_timestamp_general(instant, FracDigits::Fixed(6), false))
                );
            }
        }
    }
}
