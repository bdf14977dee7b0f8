//! Spatial values as GeoJSON (RFC 7946) text.
//!
//! Input is Well-Known Binary as the sources store or send it:
//!
//! - OGC WKB, little-endian (NDR, byte order `01`) or big-endian (XDR, `00`); every nested
//!   geometry carries its own byte order;
//! - PostGIS EWKB: type flags `0x20000000` (an SRID follows the type), `0x80000000` (Z),
//!   `0x40000000` (M); [`wkb_hex_to_geojson`] takes the hex text PostGIS prints;
//! - ISO WKB dimension codes: type + 1000 (Z), + 2000 (M), + 3000 (ZM);
//! - MySQL's internal format, a 4-byte little-endian SRID before the WKB
//!   ([`mysql_geometry_to_geojson`]).
//!
//! SQL Server `geometry`/`geography` have their own serialization: select them with
//! `.STAsBinary()` to get WKB.
//!
//! Output rules:
//!
//! - the seven OGC types Point, LineString, Polygon, MultiPoint, MultiLineString,
//!   MultiPolygon, GeometryCollection; anything else (curves, surfaces, TIN, triangles) is an
//!   error, and the connector falls back to its documented rule for unknown types;
//! - members in the order `type`, then `coordinates` (or `geometries`), no whitespace:
//!   `{"type":"Point","coordinates":[1,2]}`;
//! - positions are `[x, y]`, or `[x, y, z]` when the geometry has Z; M is dropped (GeoJSON has
//!   no M). Coordinates are passed through as stored: no reprojection, no axis swapping, and
//!   the SRID is dropped (RFC 7946 has no CRS member);
//! - numbers are the shortest text that reads back as the same `f64`, **without** a `.0` on
//!   integral values (`1`, not `1.0`, as PostGIS `ST_AsGeoJSON` prints), with an exponent
//!   only for very large or small magnitudes (`1e20`, `1e-7`), `-0` as `0`;
//! - an empty point (WKB stores it as NaN coordinates) is `{"type":"Point","coordinates":[]}`;
//!   empty points inside a MultiPoint are left out (a position cannot be empty); empty
//!   LineStrings, Polygons and collections have empty arrays; any other NaN or infinite
//!   coordinate is an error.
//!
//! Every byte is untrusted: counts are checked against the bytes left before anything is
//! reserved, collections nest at most [`MAX_DEPTH`] deep, trailing bytes are an error, and no
//! input panics.

use std::fmt::Write;

/// Deepest nesting of GeometryCollections accepted.
pub const MAX_DEPTH: u32 = 32;

const EWKB_Z: u32 = 0x8000_0000;
const EWKB_M: u32 = 0x4000_0000;
const EWKB_SRID: u32 = 0x2000_0000;

/// WKB or EWKB → GeoJSON text (see the module docs).
pub fn wkb_to_geojson(bytes: &[u8]) -> Result<String, String> {
    let mut r = Reader { b: bytes, pos: 0 };
    let mut out = String::with_capacity(64 + bytes.len());
    r.geometry(&mut out, 0)
        .map_err(|e| format!("invalid WKB at byte {}: {e}", r.pos))?;
    if r.pos != bytes.len() {
        return Err(format!(
            "invalid WKB: {} unexpected bytes after the geometry",
            bytes.len() - r.pos
        ));
    }
    Ok(out)
}

/// MySQL's geometry storage format (4-byte little-endian SRID, then WKB) → GeoJSON text.
pub fn mysql_geometry_to_geojson(bytes: &[u8]) -> Result<String, String> {
    match bytes.get(4..) {
        Some(wkb) => wkb_to_geojson(wkb),
        None => Err(format!(
            "invalid MySQL geometry: {} bytes, expected a 4-byte SRID and WKB",
            bytes.len()
        )),
    }
}

/// Hex-encoded (E)WKB, as PostGIS prints `geometry`/`geography` in text form
/// (`0101000020E6100000…`), → GeoJSON text. Either letter case.
pub fn wkb_hex_to_geojson(hex: &str) -> Result<String, String> {
    let h = hex
        .trim_matches(|c: char| c.is_ascii_whitespace())
        .as_bytes();
    if h.len() % 2 != 0 {
        return Err("invalid hex WKB: odd number of digits".to_owned());
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut bytes = Vec::with_capacity(h.len() / 2);
    for pair in h.chunks_exact(2) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(a), Some(b)) => bytes.push(a << 4 | b),
            _ => return Err("invalid hex WKB: not a hex digit".to_owned()),
        }
    }
    wkb_to_geojson(&bytes)
}

#[derive(Clone, Copy)]
struct Header {
    little: bool,
    kind: u32,
    z: bool,
    m: bool,
}

impl Header {
    fn dims(self) -> usize {
        2 + self.z as usize + self.m as usize
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

type R<T> = Result<T, String>;

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    fn take<const N: usize>(&mut self) -> R<[u8; N]> {
        let s = self
            .b
            .get(self.pos..self.pos + N)
            .ok_or_else(|| "unexpected end of data".to_owned())?;
        self.pos += N;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, little: bool) -> R<u32> {
        let a = self.take::<4>()?;
        Ok(if little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    }

    fn f64(&mut self, little: bool) -> R<f64> {
        let a = self.take::<8>()?;
        Ok(if little {
            f64::from_le_bytes(a)
        } else {
            f64::from_be_bytes(a)
        })
    }

    /// Reads a count of items, each at least `min_size` bytes, checked against what is left.
    fn count(&mut self, little: bool, min_size: usize) -> R<u32> {
        let n = self.u32(little)?;
        if (n as usize).saturating_mul(min_size) > self.remaining() {
            return Err(format!(
                "count {n} needs more than the {} bytes left",
                self.remaining()
            ));
        }
        Ok(n)
    }

    fn header(&mut self) -> R<Header> {
        let little = match self.take::<1>()?[0] {
            0 => false,
            1 => true,
            b => return Err(format!("byte order must be 0 or 1, got {b}")),
        };
        let code = self.u32(little)?;
        let mut z = code & EWKB_Z != 0;
        let mut m = code & EWKB_M != 0;
        if code & EWKB_SRID != 0 {
            let _srid = self.u32(little)?;
        }
        let iso = code & 0x0fff_ffff;
        match iso / 1000 {
            0 => {}
            1 => z = true,
            2 => m = true,
            3 => (z, m) = (true, true),
            _ => return Err(format!("unknown geometry type code {code:#x}")),
        }
        Ok(Header {
            little,
            kind: iso % 1000,
            z,
            m,
        })
    }

    /// Reads one position; writes it unless it is empty (all NaN). Returns whether written.
    fn position(&mut self, h: Header, out: &mut String) -> R<bool> {
        let x = self.f64(h.little)?;
        let y = self.f64(h.little)?;
        let z = if h.z { Some(self.f64(h.little)?) } else { None };
        if h.m {
            self.f64(h.little)?;
        }
        if x.is_nan() && y.is_nan() && !matches!(z, Some(z) if !z.is_nan()) {
            return Ok(false);
        }
        out.push('[');
        write_number(out, x)?;
        out.push(',');
        write_number(out, y)?;
        if let Some(z) = z {
            out.push(',');
            write_number(out, z)?;
        }
        out.push(']');
        Ok(true)
    }

    /// Reads a point list (count + positions) as `[[x,y],…]`.
    fn points(&mut self, h: Header, out: &mut String) -> R<()> {
        let n = self.count(h.little, 8 * h.dims())?;
        out.push('[');
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            if !self.position(h, out)? {
                return Err("empty point inside a line or ring".to_owned());
            }
        }
        out.push(']');
        Ok(())
    }

    /// Reads a polygon body (ring count + rings) as `[[[x,y],…],…]`.
    fn rings(&mut self, h: Header, out: &mut String) -> R<()> {
        let n = self.count(h.little, 4)?;
        out.push('[');
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            self.points(h, out)?;
        }
        out.push(']');
        Ok(())
    }

    /// Reads the members of a Multi* geometry, each a full WKB geometry of type `member`.
    fn members(&mut self, h: Header, member: u32, out: &mut String) -> R<()> {
        // The smallest member is an empty LineString/Polygon: order byte, type, count.
        let n = self.count(h.little, 9)?;
        out.push('[');
        let mut first = true;
        for _ in 0..n {
            let mh = self.header()?;
            if mh.kind != member {
                return Err(format!(
                    "a multi-geometry of type {} holds a member of type {}",
                    h.kind, mh.kind
                ));
            }
            let mark = out.len();
            if !first {
                out.push(',');
            }
            let written = match member {
                1 => self.position(mh, out)?,
                2 => self.points(mh, out).map(|()| true)?,
                _ => self.rings(mh, out).map(|()| true)?,
            };
            if written {
                first = false;
            } else {
                out.truncate(mark);
            }
        }
        out.push(']');
        Ok(())
    }

    fn geometry(&mut self, out: &mut String, depth: u32) -> R<()> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "geometry collections nested deeper than {MAX_DEPTH}"
            ));
        }
        let h = self.header()?;
        let name = match h.kind {
            1 => "Point",
            2 => "LineString",
            3 => "Polygon",
            4 => "MultiPoint",
            5 => "MultiLineString",
            6 => "MultiPolygon",
            7 => "GeometryCollection",
            k => return Err(format!("unsupported geometry type {k}")),
        };
        let _ = write!(out, "{{\"type\":\"{name}\",");
        match h.kind {
            1 => {
                out.push_str("\"coordinates\":");
                if !self.position(h, out)? {
                    out.push_str("[]");
                }
            }
            2 => {
                out.push_str("\"coordinates\":");
                self.points(h, out)?;
            }
            3 => {
                out.push_str("\"coordinates\":");
                self.rings(h, out)?;
            }
            4..=6 => {
                out.push_str("\"coordinates\":");
                self.members(h, h.kind - 3, out)?;
            }
            _ => {
                out.push_str("\"geometries\":[");
                let n = self.count(h.little, 9)?;
                for i in 0..n {
                    if i > 0 {
                        out.push(',');
                    }
                    self.geometry(out, depth + 1)?;
                }
                out.push(']');
            }
        }
        out.push('}');
        Ok(())
    }
}

/// Writes a finite coordinate compactly (see the module docs).
fn write_number(out: &mut String, f: f64) -> R<()> {
    if !f.is_finite() {
        return Err(format!("coordinate {f} is not a finite number"));
    }
    if f == 0.0 {
        out.push('0');
        return Ok(());
    }
    let _ = write!(out, "{f:?}");
    if out.ends_with(".0") {
        out.truncate(out.len() - 2);
    }
    Ok(())
}
