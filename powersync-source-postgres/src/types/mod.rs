//! PostgreSQL values to SQLite values ([`Value`]), from the server's **text** output format
//! (pgoutput without `binary`, `COPY`, simple queries) and from its **binary** send format
//! (pgoutput `binary 'true'`, `COPY … (FORMAT binary)`, extended-query binary results).
//!
//! Both paths give the *same* [`Value`] for the same stored value; the golden table in
//! `tests/types.rs` checks every rule below through both formats against a real server.
//!
//! | PostgreSQL type | [`Value`] |
//! |---|---|
//! | `boolean` | `Integer` 0/1 |
//! | `smallint`, `integer`, `bigint`, `oid`, `xid`, `cid` | `Integer` (`xid8` above `i64::MAX`: `Text`) |
//! | `real`, `double precision` | `Real`; NaN → `Null`; ±Infinity stay `Real` |
//! | `numeric` | `Text`, exact, as many fraction digits as the value's scale; `NaN`, `Infinity`, `-Infinity` |
//! | `money` | `Text`, exact decimal without currency symbol or grouping (see below) |
//! | `text`, `varchar`, `char(n)` (padded), `name`, `"char"`, `xml`, enums, `citext` | `Text` |
//! | `bytea` | `Blob` |
//! | `uuid` | `Text`, lowercase |
//! | `json`, `jsonb`, `jsonpath` | `Text`: the document as the server prints it |
//! | `date` | `Text` `YYYY-MM-DD` (BC years astronomical, years outside 0000–9999 in ISO 8601 expanded form: `0044-03-15 BC` → `-000043-03-15`; `infinity`, `-infinity`) |
//! | `time` | `Text` `HH:MM:SS[.f]` |
//! | `time with time zone` | `Text`, converted to UTC, `HH:MM:SS[.f]Z` |
//! | `timestamp` | `Text` `YYYY-MM-DDTHH:MM:SS[.f]` |
//! | `timestamp with time zone` | `Text`, UTC, `YYYY-MM-DDTHH:MM:SS[.f]Z` (`infinity` without `Z`) |
//! | `interval` | `Text`, ISO 8601 duration ([`format_interval_iso`](powersync_source_core::normalize::time::format_interval_iso)) |
//! | `inet`, `cidr`, `macaddr`, `macaddr8`, `tid`, `tsvector`, geometric types | `Text` exactly as PostgreSQL prints it |
//! | `pg_lsn` | `Text`, zero-padded `0000000A/0000F00D` (sorts as the positions do) |
//! | `bit(n)`, `bit varying` | `Text` of `0`/`1` digits |
//! | domains | as their base type |
//! | arrays | `Text`, JSON array (nested for several dimensions, `null` elements) |
//! | composites | `Text`, JSON object field name → value |
//! | ranges | `Text`, JSON `{"lower":…,"upper":…,"lower_exclusive":0\|1,"upper_exclusive":0\|1}` or `"empty"`; unbounded → `null`, exclusive (PowerSync's form) |
//! | multiranges | `Text`, JSON array of ranges |
//! | PostGIS `geometry`, `geography` | `Text`, GeoJSON |
//! | anything else | `Text` as the server prints it; binary format unsupported ([`TypeRegistry::supports_binary`]) |
//!
//! Fractions of seconds: a declared precision (`timestamp(3)`) prints exactly that many digits,
//! otherwise six (the types' microsecond resolution), so values of a column sort as text.
//!
//! Inside arrays, composites and ranges every element follows the same rules and is written as
//! JSON: `Integer`/`Real` as numbers, `Text` as strings, `Null` as `null`; nested arrays,
//! composites, ranges, and `json`/`jsonb` documents are embedded as JSON (not as strings).
//! Array lower bounds (`[0:1]={…}`) are not kept: JSON arrays start at index 0.
//!
//! # Session settings the text format relies on
//! The text format is whatever the session's settings make the server print. The decoders
//! expect the defaults a connector should set on its connections: `DateStyle = ISO`,
//! `IntervalStyle = postgres` (`iso_8601` is also understood), `extra_float_digits ≥ 1` (the
//! default; exact shortest floats, so text and binary agree), `client_encoding = UTF8`. Any
//! `TimeZone` works (offsets are converted to UTC) and either `bytea_output`.
//!
//! **money** is an integer count of the currency's smallest unit whose scale depends on
//! `lc_monetary`; both formats here assume **2 fraction digits** (`C`, `en_US` and most
//! locales). The text format is read as its digits and sign only, so symbols and grouping of
//! any locale are ignored.
//!
//! # Types and the registry
//! Built-in types are known by OID. User-defined and extension types (enums, domains,
//! composites, arrays of them, ranges, multiranges, PostGIS `geometry`/`geography`) must be
//! loaded into the [`TypeRegistry`] before values of them are decoded
//! ([`TypeRegistry::load`] / [`TypeRegistry::load_columns`], one catalog query that also pulls
//! in element, base, field and subtypes); decoding a user type the registry has not loaded is a
//! [`ValueError`], never a guess.
//!
//! [`Value`]: powersync_source_core::Value

mod array;
mod builtin;
mod composite;
mod datetime;
mod decode;
mod geometry;
mod lex;
mod network;
mod numeric;
pub mod oid;
mod range;
mod registry;
mod scalar_binary;
mod scalar_text;

use std::fmt;

pub use builtin::{builtin_oids, Field};
pub(crate) use decode::ColumnType;
pub use decode::{decode_binary, decode_text};
pub use registry::{LoadError, TypeInfo, TypeKind, TypeRegistry};

/// The two wire formats of a PostgreSQL value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The type's text output (`typoutput`).
    Text,
    /// The type's binary send format (`typsend`).
    Binary,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Text => "text",
            Format::Binary => "binary",
        })
    }
}

/// A value that could not be decoded: which type, which format, and why. The connector adds
/// the table and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    type_oid: u32,
    type_name: String,
    format: Format,
    reason: String,
}

impl ValueError {
    pub(crate) fn new(
        registry: &TypeRegistry,
        oid: u32,
        typmod: i32,
        format: Format,
        reason: String,
    ) -> Self {
        ValueError {
            type_oid: oid,
            type_name: registry.type_name(oid, typmod),
            format,
            reason,
        }
    }
    /// OID of the column's type.
    pub fn type_oid(&self) -> u32 {
        self.type_oid
    }
    /// SQL name of the column's type.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }
    /// The format the value came in.
    pub fn format(&self) -> Format {
        self.format
    }
    /// Why it could not be decoded.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot decode a {} value of type {} (oid {}): {}",
            self.format, self.type_name, self.type_oid, self.reason
        )
    }
}

impl std::error::Error for ValueError {}

/// Internal result: the reason of a failure, wrapped into a [`ValueError`] at the top.
pub(crate) type Res<T> = Result<T, String>;

/// How deeply types may nest (arrays of composites of ranges …) before decoding gives up:
/// guards the stack against a corrupt registry.
pub(crate) const MAX_NESTING: u32 = 32;

/// Fraction digits for a `time`/`timetz`/`timestamp`/`timestamptz` typmod (the precision).
/// Without a typmod the type still has microsecond resolution: six digits, so every value of a
/// column has the same width and the texts sort as the instants do.
pub(crate) fn frac_digits(typmod: i32) -> powersync_source_core::normalize::time::FracDigits {
    use powersync_source_core::normalize::time::FracDigits;
    if (0..=6).contains(&typmod) {
        FracDigits::Fixed(typmod as u8)
    } else {
        FracDigits::Fixed(6)
    }
}

/// The bytes as UTF-8 text, or an error naming the offset of the first invalid byte.
pub(crate) fn utf8(b: &[u8]) -> Res<&str> {
    std::str::from_utf8(b).map_err(|e| {
        format!(
            "invalid UTF-8 at byte {} (the connection must use client_encoding UTF8)",
            e.valid_up_to()
        )
    })
}

/// A short, printable excerpt of bad input for error messages.
pub(crate) fn excerpt(b: &[u8]) -> String {
    const MAX: usize = 48;
    let s = String::from_utf8_lossy(&b[..b.len().min(MAX)]);
    if b.len() > MAX {
        format!("{s:?}…")
    } else {
        format!("{s:?}")
    }
}
