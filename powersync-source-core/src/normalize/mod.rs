//! The SQLite value rules every connector applies (DESIGN.md "Values"): one implementation so
//! every source renders the same source value the same way — a timestamp from MySQL and one
//! from SQL Server come out as the same text.
//!
//! Connectors decode their wire format into plain numbers, bytes or server text and call the
//! functions here; they never format dates, decimals, UUIDs, JSON or geometry themselves.
//! The golden table in `tests/normalize.rs` lists input → output pairs for every rule below
//! and is the executable form of this page.
//!
//! # The mapping
//!
//! | source value | [`Value`](crate::Value) | produced by |
//! |---|---|---|
//! | booleans | `Integer` 0/1; inside JSON `1`/`0` too | [`Value::bool`](crate::Value::bool), [`json::write_json_bool`] |
//! | integers that fit `i64` | `Integer` | — |
//! | unsigned 64-bit (and 128-bit) above `i64::MAX` | `Text`, base 10 | [`integer::u64_value`], [`integer::i128_value`] |
//! | Convex `Int64` | `Text`, base 10 ("Int64-as-text") | [`integer::int64_as_text`] |
//! | floats | `Real`; NaN → `Null`; ±infinity stay `Real` | [`integer::f64_value`], [`integer::f32_value`] |
//! | decimal, numeric, money, Decimal128 | `Text`, exact digits, never through `f64` | [`decimal::decimal_text`], [`decimal::decimal_from_parts`], [`decimal::decimal_from_int`] |
//! | text, char, varchar, enum, xml | `Text` | — |
//! | binary, bytea, blob | `Blob` | — |
//! | uuid / uniqueidentifier / Mongo UUID binary | `Text`, lowercase `8-4-4-4-12` | [`uuid::format_uuid`], [`uuid::format_guid_mixed_endian`], [`uuid::uuid_text`] |
//! | json / jsonb | `Text`, the document as the server rendered it | [`json::json_text`] |
//! | arrays, nested documents, composites, ranges, SET | `Text`, JSON | [`json::JsonArray`], [`json::JsonObject`], [`json::write_json_value`] |
//! | date | `Text` `YYYY-MM-DD`; years outside 0000–9999 `+YYYYYY-MM-DD` / `-YYYYYY-MM-DD` | [`time::format_date`], [`time::parse_date_text`] |
//! | time | `Text` `HH:MM:SS[.fraction]` | [`time::format_time`], [`time::parse_time_text`] |
//! | time with zone (`timetz`) | `Text` UTC `HH:MM:SS[.fraction]Z` | [`time::format_time_with_offset_utc`] |
//! | timestamp without zone | `Text` `YYYY-MM-DDTHH:MM:SS[.fraction]` | [`time::format_timestamp`], [`time::parse_timestamp_text`] |
//! | timestamp with zone / offset | `Text` in UTC, `YYYY-MM-DDTHH:MM:SS[.fraction]Z` | [`time::format_timestamp_utc`], [`time::to_utc_nanos`] |
//! | interval | `Text`, ISO 8601 duration `P1Y2M3DT4H5M6.5S` | [`time::format_interval_iso`] |
//! | spatial (PostGIS, MySQL geometry, SQL Server geometry/geography) | `Text`, GeoJSON (RFC 7946) | [`spatial::wkb_to_geojson`], [`spatial::wkb_hex_to_geojson`], [`spatial::mysql_geometry_to_geojson`] |
//! | infinite dates / timestamps / intervals | `Text` `infinity` / `-infinity` | [`time::INFINITY_TEXT`], [`time::NEG_INFINITY_TEXT`] |
//! | out-of-range or zero dates (MySQL `0000-00-00`, `2024-02-30`) | `Null` | the parsers reject them; the connector maps the error to `Null` |
//! | types the connector does not know | `Text` as the server renders it; the schema keeps the source type name | — |
//!
//! # Choices
//!
//! - **Calendar.** Proleptic Gregorian with astronomical years, as ISO 8601: 1 BC is `0000`,
//!   44 BC is `-43` (`-000043-03-15`); PostgreSQL's `0044-03-15 BC` is parsed accordingly.
//!   Years 0000–9999 print as four digits. Every other year uses ISO 8601's expanded form, a
//!   sign and at least six digits: `+010000-01-01`, `-000001-12-31` (2 BC), `-000043-03-15`
//!   (44 BC), for dates, timestamps with and without zone alike, from every source. This is
//!   what PowerSync writes (its MongoDB test vectors: `+010000-01-01T00:00:00.000Z`,
//!   `-000001-12-31T23:59:59.999Z`); PostgreSQL prints `10000-01-01` and `0044-03-15 BC`
//!   instead, and the parsers accept all of these spellings.
//! - **Infinity.** Infinite dates, timestamps and intervals are the texts `infinity` and
//!   `-infinity` (PostgreSQL's spelling). In the integer domain they are the sentinels
//!   [`time::DATE_INFINITY`] (`i64::MAX` days) and [`time::TIMESTAMP_INFINITY`] (`i128::MAX`
//!   ns) and their negatives, which the parsers return and the formatters render. Decimal
//!   specials are `NaN`, `Infinity`, `-Infinity` (the spelling PostgreSQL numeric and
//!   MongoDB Decimal128 use).
//! - **Fraction digits.** A column with a declared precision prints exactly that many digits,
//!   zeros included ([`time::FracDigits::Fixed`]: `timestamp(3)` → `.500`, `datetime2(7)` →
//!   `.1234567`), so every value of a column has the same width and the texts sort as the
//!   instants do. Types without a declared precision print the fewest digits, none for a whole
//!   second ([`time::FracDigits::Trim`]). Extra digits are truncated, never rounded: rounding
//!   could carry into the next second, day or year.
//! - **Before 1970.** Instants count backwards from the epoch and the fraction is always the
//!   positive part within the second: -0.5 s is `1969-12-31T23:59:59.5`.
//! - **`24:00:00`.** A time of day `24:00:00` (PostgreSQL, MySQL) prints as such; converted to
//!   UTC with an offset it wraps to `00:00:00Z` like every other time.
//! - **Decimals.** The scale is kept (`1.50` stays `1.50`), exponents are expanded
//!   (`1.5E+3` → `1500`), `+` and redundant leading zeros go, and zero has no sign.
//! - **JSON.** Arrays and documents are compact JSON. Inside them a `Real` always has a
//!   fraction or exponent (`1.0`), infinities are `null`, a `Blob` is a base64 string
//!   (standard alphabet, padded) since JSON has no bytes, and a boolean is `1`/`0` as at the
//!   top level (PowerSync's rule; [`json::write_json_bool`]). JSON documents the server
//!   renders (json/jsonb) pass through as they are.
//! - **GeoJSON.** Coordinates are the shortest round-trip text without `.0` (`1`, `1.5`), Z is
//!   kept, M and the SRID are dropped; empty points are `[]`.
//! - **Intervals.** PostgreSQL's `iso_8601` interval style, each part carrying its own sign
//!   when parts disagree (`P-1M3DT-1.5S`), `PT0S` for zero.

pub mod decimal;
pub mod integer;
pub mod json;
pub mod spatial;
pub mod time;
pub mod uuid;
