//! MySQL's binary `DECIMAL(p,s)` storage format (binlog row images) → the core's normal
//! decimal text (`powersync_source_core::normalize::decimal`), in one pass over the bytes and
//! one allocation: the digits go to a stack buffer, then into the value's `String`.
//!
//! Format (MySQL `strings/decimal.cc`, `decimal2bin`): the integer part's `p - s` digits and the
//! fraction's `s` digits are stored in groups of nine decimal digits as big-endian 4-byte
//! integers; a leading integer group (and a trailing fraction group) of fewer than nine digits
//! takes 1–4 bytes ([`DIG2BYTES`]). A negative value has every byte inverted; the sign bit
//! (the top bit of the first byte) is then flipped, so it is set for values ≥ 0.

/// Bytes of a group of `n` (0–9) decimal digits.
const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

/// Largest binary size (DECIMAL(65,30): 35 integer digits in 16 bytes, 30 fraction digits in
/// 14 bytes).
const MAX_BYTES: usize = 32;

/// Bytes a `DECIMAL(precision, scale)` value takes in a row image.
pub(crate) fn size(precision: u8, scale: u8) -> usize {
    let (p, s) = (precision as usize, scale as usize);
    let intg = p.saturating_sub(s);
    (intg / 9) * 4 + DIG2BYTES[intg % 9] + (s / 9) * 4 + DIG2BYTES[s % 9]
}

/// Reads one `DECIMAL(precision, scale)` value from the front of `bytes`; returns its normal
/// text and the bytes consumed. The table map's metadata was checked (`1 ≤ p ≤ 65`,
/// `s ≤ 30`, `s ≤ p`); a group holding more digits than it can is an error (corrupt event).
pub(crate) fn read(bytes: &[u8], precision: u8, scale: u8) -> Result<(String, usize), String> {
    let (p, s) = (precision as usize, scale as usize);
    if p == 0 || p > 65 || s > 30 || s > p {
        return Err(format!("DECIMAL({p},{s})"));
    }
    let n = size(precision, scale);
    let raw = bytes.get(..n).ok_or("truncated DECIMAL value")?;
    let mut b = [0u8; MAX_BYTES];
    b[..n].copy_from_slice(raw);
    let negative = b[0] & 0x80 == 0;
    b[0] ^= 0x80;
    if negative {
        for x in &mut b[..n] {
            *x = !*x;
        }
    }
    // Every digit, integer part then fraction, as ASCII.
    let mut digits = [b'0'; 66];
    let mut at = 0; // next byte of `b`
    let mut d = 0; // next digit of `digits`
    let intg = p - s;
    let mut group = |len: usize, width: usize, at: &mut usize, d: &mut usize| {
        let mut v: u32 = 0;
        for &x in &b[*at..*at + len] {
            v = (v << 8) | x as u32;
        }
        *at += len;
        if width < 9 && v >= 10u32.pow(width as u32) || v >= 1_000_000_000 {
            return Err("DECIMAL group out of range (corrupt row image)".to_owned());
        }
        for i in (0..width).rev() {
            digits[*d + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        *d += width;
        Ok(())
    };
    if intg % 9 > 0 {
        group(DIG2BYTES[intg % 9], intg % 9, &mut at, &mut d)?;
    }
    for _ in 0..intg / 9 {
        group(4, 9, &mut at, &mut d)?;
    }
    for _ in 0..s / 9 {
        group(4, 9, &mut at, &mut d)?;
    }
    if s % 9 > 0 {
        group(DIG2BYTES[s % 9], s % 9, &mut at, &mut d)?;
    }
    let (int, frac) = digits[..d].split_at(intg);
    // No redundant leading zeros, at least one digit.
    let first = int.iter().position(|&c| c != b'0').unwrap_or(int.len());
    let int = if first == int.len() {
        &b"0"[..]
    } else {
        &int[first..]
    };
    let zero = int == b"0" && frac.iter().all(|&c| c == b'0');
    let mut out = String::with_capacity(int.len() + frac.len() + 2);
    if negative && !zero {
        out.push('-');
    }
    // ASCII digits only.
    out.push_str(std::str::from_utf8(int).map_err(|_| "DECIMAL digits")?);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(std::str::from_utf8(frac).map_err(|_| "DECIMAL digits")?);
    }
    Ok((out, n))
}

/// Whether `b` is already the normal decimal text (`-?(0|[1-9][0-9]*)(\.[0-9]+)?`, no `-0`),
/// as servers print DECIMAL values in result sets: such text is used as it is.
pub(crate) fn is_normal_text(b: &[u8]) -> bool {
    let (negative, rest) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    let (int, frac) = match rest.iter().position(|&c| c == b'.') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    if int.is_empty() || !int.iter().all(u8::is_ascii_digit) || (int.len() > 1 && int[0] == b'0') {
        return false;
    }
    if let Some(f) = frac {
        if f.is_empty() || !f.iter().all(u8::is_ascii_digit) {
            return false;
        }
    }
    let zero = int == b"0" && frac.is_none_or(|f| f.iter().all(|&c| c == b'0'));
    !(negative && zero)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::binlog::decimal::Decimal;
    use powersync_source_core::normalize::decimal::decimal_text;
    use proptest::prelude::*;

    /// The reference: mysql_common's decoder, its text, the core's normalization.
    fn reference(bytes: &[u8], p: u8, s: u8) -> String {
        let d = Decimal::read_bin(bytes, p as usize, s as usize, false).unwrap();
        decimal_text(&d.to_string()).unwrap()
    }

    fn encode(text: &str) -> Vec<u8> {
        let d: Decimal = text.parse().unwrap();
        let mut out = Vec::new();
        d.write_bin(&mut out).unwrap();
        out
    }

    #[test]
    fn known_values() {
        for (text, p, s, want) in [
            ("1234567890.12", 12, 2, "1234567890.12"),
            ("-1234567890.12", 12, 2, "-1234567890.12"),
            ("0.00", 3, 2, "0.00"),
            ("-0.50", 3, 2, "-0.50"),
            ("7", 1, 0, "7"),
            (
                "123456789012345678901234567890.123456",
                36,
                6,
                "123456789012345678901234567890.123456",
            ),
        ] {
            let bytes = encode(text);
            assert_eq!(bytes.len(), size(p, s), "{text}");
            let (got, used) = read(&bytes, p, s).unwrap();
            assert_eq!((got.as_str(), used), (want, bytes.len()));
            assert_eq!(got, reference(&bytes, p, s));
        }
    }

    #[test]
    fn corrupt_groups_and_short_input_are_errors() {
        assert!(read(&[0x80, 0x00], 12, 2).is_err());
        // DECIMAL(1,0) stores one digit in one byte: 0x80 | 10 is not a digit.
        assert!(read(&[0x8a], 1, 0).is_err());
        assert!(read(&[0x80], 0, 0).is_err());
    }

    #[test]
    fn normal_text() {
        for ok in ["0", "0.00", "-1.50", "12", "-7"] {
            assert!(is_normal_text(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "", "-", "-0", "-0.00", "01", ".5", "5.", "1e3", "+1", "1.2.3", "NaN",
        ] {
            assert!(!is_normal_text(bad.as_bytes()), "{bad}");
        }
    }

    proptest! {
        /// Every DECIMAL(p,s) value reads exactly as mysql_common + the core normalization read it.
        #[test]
        fn agrees_with_mysql_common(
            int in "[1-9][0-9]{0,34}|0",
            frac in "[0-9]{0,30}",
            negative in any::<bool>(),
        ) {
            let text = format!(
                "{}{int}{}{frac}",
                if negative { "-" } else { "" },
                if frac.is_empty() { "" } else { "." }
            );
            let bytes = encode(&text);
            let s = frac.len() as u8;
            // mysql_common writes a zero integer part as no integer digits.
            let intg = if int == "0" { 0 } else { int.len() as u8 };
            let p = (intg + s).max(1);
            prop_assume!(bytes.len() == size(p, s));
            let (got, used) = read(&bytes, p, s).unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(got, reference(&bytes, p, s));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40), p in 0u8..70, s in 0u8..35) {
            let _ = read(&bytes, p, s);
        }
    }
}
