//! The entry points [`decode_text`] and [`decode_binary`]: dispatch of one value by type and
//! format to the scalar decoders ([`super::scalar_text`], [`super::scalar_binary`]) or the
//! structured ones (arrays, composites, ranges), and the JSON writing of their elements.

use powersync_source_core::normalize::json::{check_json, write_json_string, write_json_value};
use powersync_source_core::Value;

use super::builtin::{builtin, Resolved, Scalar};
use super::registry::TypeRegistry;
use super::{
    array, composite, range, scalar_binary, scalar_text, utf8, Format, Res, ValueError, MAX_NESTING,
};

/// Decodes a value in the server's text output format (pgoutput without `binary`, `COPY`,
/// simple-query results) of type `oid` with type modifier `typmod` (`-1` if none).
///
/// Never panics; bytes that are not a valid text of the type give a [`ValueError`].
pub fn decode_text(
    registry: &TypeRegistry,
    oid: u32,
    typmod: i32,
    bytes: &[u8],
) -> Result<Value, ValueError> {
    ColumnType::new(oid, typmod).decode(registry, Format::Text, bytes)
}

/// Decodes a value in the binary send format (pgoutput `binary 'true'`, `COPY` binary,
/// extended-query binary results) of type `oid` with type modifier `typmod` (`-1` if none).
///
/// Gives the same [`Value`] as [`decode_text`] for the same stored value.
/// Types without a binary decoder (see [`TypeRegistry::supports_binary`]) give a
/// [`ValueError`]. Never panics.
pub fn decode_binary(
    registry: &TypeRegistry,
    oid: u32,
    typmod: i32,
    bytes: &[u8],
) -> Result<Value, ValueError> {
    ColumnType::new(oid, typmod).decode(registry, Format::Binary, bytes)
}

/// A column's type as the decoders need it: OID and typmod, with a built-in scalar type
/// resolved once when the column is described rather than for each of its values (a snapshot
/// or a streamed transaction decodes millions of values of the same few columns). Other types
/// (domains, enums, arrays, composites) resolve through the registry at each value, so a
/// registry reloaded later still applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ColumnType {
    pub(crate) oid: u32,
    pub(crate) typmod: i32,
    scalar: Option<Scalar>,
}

impl ColumnType {
    pub(crate) fn new(oid: u32, typmod: i32) -> Self {
        let scalar = match builtin(oid) {
            Some(Resolved::Scalar(s)) => Some(s),
            _ => None,
        };
        ColumnType {
            oid,
            typmod,
            scalar,
        }
    }

    /// Whether this is a built-in scalar type (decoded without the registry).
    pub(crate) fn is_builtin_scalar(&self) -> bool {
        self.scalar.is_some()
    }

    /// Decodes one value of this column in `format`, as [`decode_text`] / [`decode_binary`].
    #[inline]
    pub(crate) fn decode(
        &self,
        registry: &TypeRegistry,
        format: Format,
        bytes: &[u8],
    ) -> Result<Value, ValueError> {
        match self.scalar {
            Some(s) => scalar(s, self.typmod, format, bytes),
            None => decode(registry, self.oid, self.typmod, format, bytes),
        }
        .map_err(|reason| ValueError::new(registry, self.oid, self.typmod, format, reason))
    }
}

/// Decodes one value of type `oid`.
pub(crate) fn decode(
    reg: &TypeRegistry,
    oid: u32,
    typmod: i32,
    format: Format,
    b: &[u8],
) -> Res<Value> {
    let (resolved, typmod) = reg.resolve(oid, typmod)?;
    match resolved {
        Resolved::Scalar(s) => scalar(s, typmod, format, b),
        structured => {
            let mut out = String::with_capacity(b.len() + 8);
            write_resolved(reg, structured, typmod, format, b, &mut out, 0)?;
            Ok(Value::Text(out))
        }
    }
}

/// One scalar value in either format.
#[inline]
pub(crate) fn scalar(s: Scalar, typmod: i32, format: Format, b: &[u8]) -> Res<Value> {
    match format {
        Format::Text => scalar_text::scalar_text(s, typmod, b),
        Format::Binary => scalar_binary::scalar_binary(s, typmod, b),
    }
}

/// Writes one value of type `oid` as a JSON value (an element of an array, a field of a
/// composite, a range bound).
pub(crate) fn write_element(
    reg: &TypeRegistry,
    oid: u32,
    typmod: i32,
    format: Format,
    b: &[u8],
    out: &mut String,
    depth: u32,
) -> Res<()> {
    if depth >= MAX_NESTING {
        return Err("values nested too deeply".to_owned());
    }
    let (resolved, typmod) = reg.resolve(oid, typmod)?;
    write_resolved(reg, resolved, typmod, format, b, out, depth)
}

fn write_resolved(
    reg: &TypeRegistry,
    resolved: Resolved<'_>,
    typmod: i32,
    format: Format,
    b: &[u8],
    out: &mut String,
    depth: u32,
) -> Res<()> {
    let depth = depth + 1;
    match (resolved, format) {
        (Resolved::Scalar(s), _) => write_scalar(s, typmod, format, b, out),
        (Resolved::Array { element, delimiter }, Format::Text) => {
            array::array_text(reg, element, typmod, delimiter, b, out, depth)
        }
        (Resolved::Array { element, .. }, Format::Binary) => {
            array::array_binary(reg, element, typmod, b, out, depth)
        }
        (Resolved::Range { subtype }, Format::Text) => {
            range::range_text(reg, subtype, b, out, depth)
        }
        (Resolved::Range { subtype }, Format::Binary) => {
            range::range_binary(reg, subtype, b, out, depth)
        }
        (Resolved::Multirange { subtype }, Format::Text) => {
            range::multirange_text(reg, subtype, b, out, depth)
        }
        (Resolved::Multirange { subtype }, Format::Binary) => {
            range::multirange_binary(reg, subtype, b, out, depth)
        }
        (Resolved::Composite(fields), Format::Text) => {
            composite::composite_text(reg, fields, b, out, depth)
        }
        (Resolved::Composite(fields), Format::Binary) => {
            composite::composite_binary(reg, fields, b, out, depth)
        }
    }
}

/// A scalar as a JSON value. Text-like types are written straight from the input bytes;
/// JSON documents and GeoJSON are embedded as JSON; the rest go through [`Value`].
fn write_scalar(s: Scalar, typmod: i32, format: Format, b: &[u8], out: &mut String) -> Res<()> {
    match (s, format) {
        (Scalar::Text | Scalar::Xml, _) | (Scalar::Unknown, Format::Text) => {
            write_json_string(out, utf8(b)?);
        }
        (Scalar::Json, _) | (Scalar::Jsonb, Format::Text) => embed_json(b, out)?,
        (Scalar::Jsonb, Format::Binary) => embed_json(scalar_binary::jsonb_payload(b)?, out)?,
        (Scalar::Geometry, _) => match scalar(s, typmod, format, b)? {
            Value::Text(geojson) => out.push_str(&geojson),
            other => write_json_value(out, &other),
        },
        _ => write_json_value(out, &scalar(s, typmod, format, b)?),
    }
    Ok(())
}

fn embed_json(b: &[u8], out: &mut String) -> Res<()> {
    let s = utf8(b)?;
    check_json(s)?;
    out.push_str(s.trim_matches(|c: char| c.is_ascii_whitespace()));
    Ok(())
}
