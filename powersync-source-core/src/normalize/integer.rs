//! Integers and floats.

use crate::value::Value;

/// An unsigned 64-bit integer: [`Value::Integer`] when it fits `i64`, else base-10
/// [`Value::Text`] (`18446744073709551615`).
pub fn u64_value(u: u64) -> Value {
    Value::unsigned(u)
}

/// A 128-bit integer (e.g. a MySQL `BIGINT UNSIGNED` sum, a Decimal128 with scale 0 decoded as
/// an integer): [`Value::Integer`] when it fits `i64`, else base-10 [`Value::Text`].
pub fn i128_value(i: i128) -> Value {
    match i64::try_from(i) {
        Ok(i) => Value::Integer(i),
        Err(_) => Value::Text(i.to_string()),
    }
}

/// Convex `Int64` ("Int64-as-text"): always base-10 [`Value::Text`], so a column of Int64
/// values has one SQLite type whatever the magnitudes (`-5` → `"-5"`).
pub fn int64_as_text(i: i64) -> Value {
    Value::Text(i.to_string())
}

/// A 32-bit float as [`Value::Real`], NaN as [`Value::Null`].
///
/// The `f64` is the one nearest to the float's shortest decimal text, not its exact binary
/// value: `0.1f32` gives `0.1`, not `0.10000000149011612`. This is what the same column reads
/// as when a source sends text (PostgreSQL `real` and MySQL `FLOAT` print `0.1`), so a
/// snapshot taken through text and a stream decoded from binary agree.
pub fn f32_value(f: f32) -> Value {
    if f.is_nan() {
        return Value::Null;
    }
    // Infinities, and integers below 2^24, whose shortest text is their exact digits.
    if !f.is_finite() || (f.fract() == 0.0 && f.abs() < 16_777_216.0) {
        return Value::Real(f as f64);
    }
    Value::Real(shortest_f32_as_f64(f))
}

fn shortest_f32_as_f64(f: f32) -> f64 {
    // `{:e}` prints the shortest digits that read back as the same f32, at most ~16 bytes.
    struct Buf {
        b: [u8; 48],
        n: usize,
    }
    impl std::fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let end = self.n + s.len();
            let dst = self.b.get_mut(self.n..end).ok_or(std::fmt::Error)?;
            dst.copy_from_slice(s.as_bytes());
            self.n = end;
            Ok(())
        }
    }
    let mut buf = Buf { b: [0; 48], n: 0 };
    if std::fmt::Write::write_fmt(&mut buf, format_args!("{f:e}")).is_ok() {
        if let Some(v) = std::str::from_utf8(&buf.b[..buf.n])
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
        {
            return v;
        }
    }
    f as f64
}

/// A 64-bit float as [`Value::Real`], NaN as [`Value::Null`] (SQLite has no NaN). Infinities
/// stay `Real` (SQLite stores them).
pub fn f64_value(f: f64) -> Value {
    Value::real(f)
}
