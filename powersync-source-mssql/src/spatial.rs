//! SQL Server `geometry` / `geography` values → GeoJSON.
//!
//! The connector selects spatial columns as `CAST(col AS varbinary(max))`, which yields SQL
//! Server's CLR serialization ([MS-SSCLRT] §2.1 "GEOGRAPHY and GEOMETRY structures"):
//!
//! ```text
//! SRID                    int32 LE
//! Version                 u8: 1, or 2 (SQL Server 2012+, needed for curves)
//! Properties              u8: 0x01 Z, 0x02 M, 0x04 valid, 0x08 single point,
//!                             0x10 single line segment, 0x20 larger than a hemisphere
//! single point:           x y [z] [m]                       (f64 LE)
//! single line segment:    x1 y1 x2 y2 [z1 z2] [m1 m2]
//! otherwise:              NumberOfPoints u32, points (x y)…, [z…], [m…],
//!                         NumberOfFigures u32, figures (attribute u8, point offset i32)…,
//!                         NumberOfShapes u32, shapes (parent offset i32, figure offset i32,
//!                                                     OpenGIS type u8)…,
//!                         version 2: NumberOfSegments u32, segment types u8…
//! ```
//!
//! A shape owns the figures from its figure offset up to the next shape that has figures (an
//! offset of -1 means an empty shape); a figure owns the points from its point offset up to the
//! next figure's. Shapes form a tree by their parent offsets (-1 for the root); a collection's
//! members are the shapes whose parent it is, in order.
//!
//! `geography` stores points as (latitude, longitude); GeoJSON wants `[longitude, latitude]`,
//! so the axes are swapped for geography. The value is rebuilt as ISO WKB and rendered by the
//! core's [`wkb_to_geojson`], so SQL Server geometry prints exactly like PostGIS and MySQL
//! geometry (Z kept, M and SRID dropped). Circular arcs, compound curves, curve polygons and
//! the full globe have no GeoJSON form: they are errors, and the connector falls back to the
//! rule for values it cannot convert (see [`crate::values`]).
//!
//! Every byte is untrusted: counts are checked against the bytes present before anything is
//! allocated, every offset is bounds-checked, a parent must precede its children (no cycles),
//! and no input panics.
//!
//! [MS-SSCLRT]: https://learn.microsoft.com/en-us/openspecs/sql_server_protocols/ms-ssclrt/

use powersync_source_core::normalize::spatial::wkb_to_geojson;

const HAS_Z: u8 = 0x01;
const HAS_M: u8 = 0x02;
const SINGLE_POINT: u8 = 0x08;
const SINGLE_LINE_SEGMENT: u8 = 0x10;

/// Which of the two spatial types the bytes belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpatialKind {
    /// Planar `geometry`: points are (x, y).
    Geometry,
    /// Round-earth `geography`: points are stored (latitude, longitude).
    Geography,
}

/// CLR-serialized `geometry`/`geography` bytes → GeoJSON text.
pub fn clr_to_geojson(bytes: &[u8], kind: SpatialKind) -> Result<String, String> {
    let g = parse(bytes, kind)?;
    let mut wkb = Vec::with_capacity(64 + g.points.len() * 24);
    if g.shapes.is_empty() {
        return Err("no shape".into());
    }
    g.write_shape(&mut wkb, 0, 0)?;
    wkb_to_geojson(&wkb)
}

struct Shape {
    parent: i32,
    figure: i32,
    kind: u8,
}

struct Parsed {
    /// (x, y, z) with x/y already in GeoJSON axis order.
    points: Vec<(f64, f64, f64)>,
    has_z: bool,
    /// Point offset of each figure.
    figures: Vec<u32>,
    shapes: Vec<Shape>,
    children: Vec<Vec<usize>>,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| format!("truncated at byte {}: {n} more bytes needed", self.pos))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(self.u32()? as i32)
    }
    fn f64(&mut self) -> Result<f64, String> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(f64::from_le_bytes(a))
    }
    fn left(&self) -> usize {
        self.b.len() - self.pos
    }
    /// A count of items of `size` bytes each, checked against the bytes left.
    fn count(&mut self, size: usize, what: &str) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(size) > self.left() {
            return Err(format!(
                "{n} {what} announced, only {} bytes left",
                self.left()
            ));
        }
        Ok(n)
    }
}

fn parse(bytes: &[u8], kind: SpatialKind) -> Result<Parsed, String> {
    let mut r = Reader { b: bytes, pos: 0 };
    let _srid = r.i32()?;
    let version = r.u8()?;
    if version != 1 && version != 2 {
        return Err(format!("unknown serialization version {version}"));
    }
    let props = r.u8()?;
    let has_z = props & HAS_Z != 0;
    let has_m = props & HAS_M != 0;
    let axis = |a: f64, b: f64| match kind {
        SpatialKind::Geometry => (a, b),
        SpatialKind::Geography => (b, a),
    };
    let mut p = Parsed {
        points: Vec::new(),
        has_z,
        figures: Vec::new(),
        shapes: Vec::new(),
        children: Vec::new(),
    };
    let implicit = if props & SINGLE_POINT != 0 {
        Some((1usize, 1u8))
    } else if props & SINGLE_LINE_SEGMENT != 0 {
        Some((2, 2))
    } else {
        None
    };
    if let Some((n, shape_kind)) = implicit {
        let mut xy = Vec::with_capacity(n);
        for _ in 0..n {
            let a = r.f64()?;
            let b = r.f64()?;
            xy.push(axis(a, b));
        }
        let mut zs = vec![0.0; n];
        if has_z {
            for z in zs.iter_mut() {
                *z = r.f64()?;
            }
        }
        if has_m {
            for _ in 0..n {
                r.f64()?;
            }
        }
        p.points = xy
            .into_iter()
            .zip(zs)
            .map(|((x, y), z)| (x, y, z))
            .collect();
        p.figures.push(0);
        p.shapes.push(Shape {
            parent: -1,
            figure: 0,
            kind: shape_kind,
        });
    } else {
        let per_point = 16 + if has_z { 8 } else { 0 } + if has_m { 8 } else { 0 };
        let n = r.count(per_point, "points")?;
        let mut xy = Vec::with_capacity(n);
        for _ in 0..n {
            let a = r.f64()?;
            let b = r.f64()?;
            xy.push(axis(a, b));
        }
        let mut zs = vec![0.0; n];
        if has_z {
            for z in zs.iter_mut() {
                *z = r.f64()?;
            }
        }
        if has_m {
            for _ in 0..n {
                r.f64()?;
            }
        }
        p.points = xy
            .into_iter()
            .zip(zs)
            .map(|((x, y), z)| (x, y, z))
            .collect();
        let nf = r.count(5, "figures")?;
        let mut last = 0u32;
        for i in 0..nf {
            let attribute = r.u8()?;
            let offset = r.u32()?;
            // Version 2 attribute 2 is a circular arc, 3 a composite curve.
            if version == 2 && attribute >= 2 {
                return Err("circular arcs have no GeoJSON form".into());
            }
            if offset as usize > n || (i > 0 && offset < last) {
                return Err(format!("figure {i} has point offset {offset} out of order"));
            }
            last = offset;
            p.figures.push(offset);
        }
        let ns = r.count(9, "shapes")?;
        let mut last_fig = 0i32;
        for i in 0..ns {
            let parent = r.i32()?;
            let figure = r.i32()?;
            let kind = r.u8()?;
            if parent >= i as i32
                || parent < -1
                || (i > 0 && parent == -1)
                || (i == 0 && parent != -1)
            {
                return Err(format!("shape {i} has parent {parent}"));
            }
            if figure != -1 {
                if figure < 0 || figure as usize > nf || figure < last_fig {
                    return Err(format!("shape {i} has figure offset {figure} out of order"));
                }
                last_fig = figure;
            }
            p.shapes.push(Shape {
                parent,
                figure,
                kind,
            });
        }
        if version == 2 {
            let nseg = r.count(1, "segments")?;
            r.take(nseg)?;
        }
    }
    if r.left() != 0 {
        return Err(format!("{} unexpected bytes after the value", r.left()));
    }
    p.children = vec![Vec::new(); p.shapes.len()];
    for (i, s) in p.shapes.iter().enumerate() {
        if s.parent >= 0 {
            p.children[s.parent as usize].push(i);
        }
    }
    Ok(p)
}

impl Parsed {
    /// Figure indexes of shape `i`.
    fn figure_range(&self, i: usize) -> std::ops::Range<usize> {
        let start = self.shapes[i].figure;
        if start < 0 {
            return 0..0;
        }
        let end = self.shapes[i + 1..]
            .iter()
            .find(|s| s.figure >= 0)
            .map(|s| s.figure as usize)
            .unwrap_or(self.figures.len());
        start as usize..end.max(start as usize)
    }

    /// Point indexes of figure `f`.
    fn point_range(&self, f: usize) -> std::ops::Range<usize> {
        let start = self.figures[f] as usize;
        let end = self
            .figures
            .get(f + 1)
            .map(|o| *o as usize)
            .unwrap_or(self.points.len());
        start..end.max(start)
    }

    fn header(&self, out: &mut Vec<u8>, code: u32) {
        out.push(1);
        let code = if self.has_z { code + 1000 } else { code };
        out.extend_from_slice(&code.to_le_bytes());
    }

    fn point(&self, out: &mut Vec<u8>, i: usize) {
        let (x, y, z) = self.points[i];
        out.extend_from_slice(&x.to_le_bytes());
        out.extend_from_slice(&y.to_le_bytes());
        if self.has_z {
            out.extend_from_slice(&z.to_le_bytes());
        }
    }

    fn points_of(&self, out: &mut Vec<u8>, f: usize) {
        let r = self.point_range(f);
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        for i in r {
            self.point(out, i);
        }
    }

    fn write_shape(&self, out: &mut Vec<u8>, i: usize, depth: u32) -> Result<(), String> {
        if depth > powersync_source_core::normalize::spatial::MAX_DEPTH {
            return Err("collections nested too deep".into());
        }
        let figures = self.figure_range(i);
        match self.shapes[i].kind {
            1 => {
                self.header(out, 1);
                match figures.clone().next() {
                    Some(f) if !self.point_range(f).is_empty() => {
                        if figures.len() != 1 || self.point_range(f).len() != 1 {
                            return Err("a point with more than one position".into());
                        }
                        self.point(out, self.point_range(f).start)
                    }
                    _ => {
                        // WKB's empty point: NaN coordinates.
                        for _ in 0..if self.has_z { 3 } else { 2 } {
                            out.extend_from_slice(&f64::NAN.to_le_bytes());
                        }
                    }
                }
            }
            2 => {
                self.header(out, 2);
                match figures.len() {
                    0 => out.extend_from_slice(&0u32.to_le_bytes()),
                    1 => self.points_of(out, figures.start),
                    n => return Err(format!("a linestring with {n} figures")),
                }
            }
            3 => {
                self.header(out, 3);
                out.extend_from_slice(&(figures.len() as u32).to_le_bytes());
                for f in figures {
                    self.points_of(out, f);
                }
            }
            k @ 4..=7 => {
                self.header(out, k as u32);
                let kids = &self.children[i];
                out.extend_from_slice(&(kids.len() as u32).to_le_bytes());
                let want = match k {
                    4 => Some(1),
                    5 => Some(2),
                    6 => Some(3),
                    _ => None,
                };
                for &c in kids {
                    if want.is_some_and(|w| w != self.shapes[c].kind) {
                        return Err(format!(
                            "a member of type {} in a collection of type {k}",
                            self.shapes[c].kind
                        ));
                    }
                    self.write_shape(out, c, depth + 1)?;
                }
            }
            8 => return Err("CircularString has no GeoJSON form".into()),
            9 => return Err("CompoundCurve has no GeoJSON form".into()),
            10 => return Err("CurvePolygon has no GeoJSON form".into()),
            11 => return Err("FullGlobe has no GeoJSON form".into()),
            k => return Err(format!("unknown shape type {k}")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // The byte examples below are SQL Server's output for `CAST(<value> AS varbinary(max))`,
    // as laid out by MS-SSCLRT: SRID, version, properties, then the parts listed above.

    #[test]
    fn single_point_geometry() {
        // geometry::STGeomFromText('POINT (5 10)', 0): SRID 0, version 1, properties 0x0C
        // (valid, single point), x = 5, y = 10.
        let b = hex("00000000010C00000000000014400000000000002440");
        assert_eq!(
            clr_to_geojson(&b, SpatialKind::Geometry).unwrap(),
            r#"{"type":"Point","coordinates":[5,10]}"#
        );
    }

    #[test]
    fn single_point_geography_swaps_axes() {
        // geography::Point(47.65100, -122.34900, 4326): stored latitude first.
        let mut b = hex("E6100000010C");
        b.extend_from_slice(&47.651f64.to_le_bytes());
        b.extend_from_slice(&(-122.349f64).to_le_bytes());
        assert_eq!(
            clr_to_geojson(&b, SpatialKind::Geography).unwrap(),
            r#"{"type":"Point","coordinates":[-122.349,47.651]}"#
        );
    }

    #[test]
    fn single_line_segment_with_z() {
        // LINESTRING (1 2 3, 4 5 6): properties 0x15 (Z, valid, single line segment).
        let mut b = hex("000000000115");
        for v in [1.0f64, 2.0, 4.0, 5.0, 3.0, 6.0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(
            clr_to_geojson(&b, SpatialKind::Geometry).unwrap(),
            r#"{"type":"LineString","coordinates":[[1,2,3],[4,5,6]]}"#
        );
    }

    fn general(points: &[(f64, f64)], figures: &[(u8, u32)], shapes: &[(i32, i32, u8)]) -> Vec<u8> {
        let mut b = hex("000000000104");
        b.extend_from_slice(&(points.len() as u32).to_le_bytes());
        for (x, y) in points {
            b.extend_from_slice(&x.to_le_bytes());
            b.extend_from_slice(&y.to_le_bytes());
        }
        b.extend_from_slice(&(figures.len() as u32).to_le_bytes());
        for (a, o) in figures {
            b.push(*a);
            b.extend_from_slice(&o.to_le_bytes());
        }
        b.extend_from_slice(&(shapes.len() as u32).to_le_bytes());
        for (p, f, t) in shapes {
            b.extend_from_slice(&p.to_le_bytes());
            b.extend_from_slice(&f.to_le_bytes());
            b.push(*t);
        }
        b
    }

    #[test]
    fn polygon_with_hole() {
        let pts = [
            (0.0, 0.0),
            (10.0, 0.0),
            (10.0, 10.0),
            (0.0, 10.0),
            (0.0, 0.0),
            (2.0, 2.0),
            (3.0, 2.0),
            (3.0, 3.0),
            (2.0, 2.0),
        ];
        let b = general(&pts, &[(2, 0), (0, 5)], &[(-1, 0, 3)]);
        assert_eq!(
            clr_to_geojson(&b, SpatialKind::Geometry).unwrap(),
            r#"{"type":"Polygon","coordinates":[[[0,0],[10,0],[10,10],[0,10],[0,0]],[[2,2],[3,2],[3,3],[2,2]]]}"#
        );
    }

    #[test]
    fn multi_and_collections() {
        // MULTIPOINT ((1 2), (3 4))
        let b = general(
            &[(1.0, 2.0), (3.0, 4.0)],
            &[(1, 0), (1, 1)],
            &[(-1, 0, 4), (0, 0, 1), (0, 1, 1)],
        );
        assert_eq!(
            clr_to_geojson(&b, SpatialKind::Geometry).unwrap(),
            r#"{"type":"MultiPoint","coordinates":[[1,2],[3,4]]}"#
        );
        // GEOMETRYCOLLECTION (POINT (1 2), LINESTRING (0 0, 1 1), POINT EMPTY)
        let b = general(
            &[(1.0, 2.0), (0.0, 0.0), (1.0, 1.0)],
            &[(1, 0), (1, 1)],
            &[(-1, 0, 7), (0, 0, 1), (0, 1, 2), (0, -1, 1)],
        );
        assert_eq!(
            clr_to_geojson(&b, SpatialKind::Geometry).unwrap(),
            r#"{"type":"GeometryCollection","geometries":[{"type":"Point","coordinates":[1,2]},{"type":"LineString","coordinates":[[0,0],[1,1]]},{"type":"Point","coordinates":[]}]}"#
        );
        // MULTILINESTRING ((0 0, 1 1), (2 2, 3 3))
        let b = general(
            &[(0.0, 0.0), (1.0, 1.0), (2.0, 2.0), (3.0, 3.0)],
            &[(1, 0), (1, 2)],
            &[(-1, 0, 5), (0, 0, 2), (0, 1, 2)],
        );
        assert_eq!(
            clr_to_geojson(&b, SpatialKind::Geometry).unwrap(),
            r#"{"type":"MultiLineString","coordinates":[[[0,0],[1,1]],[[2,2],[3,3]]]}"#
        );
        // MULTIPOLYGON of two triangles
        let b = general(
            &[
                (0.0, 0.0),
                (1.0, 0.0),
                (0.0, 1.0),
                (0.0, 0.0),
                (5.0, 5.0),
                (6.0, 5.0),
                (5.0, 6.0),
                (5.0, 5.0),
            ],
            &[(2, 0), (2, 4)],
            &[(-1, 0, 6), (0, 0, 3), (0, 1, 3)],
        );
        assert_eq!(
            clr_to_geojson(&b, SpatialKind::Geometry).unwrap(),
            r#"{"type":"MultiPolygon","coordinates":[[[[0,0],[1,0],[0,1],[0,0]]],[[[5,5],[6,5],[5,6],[5,5]]]]}"#
        );
        // POINT EMPTY, LINESTRING EMPTY
        let b = general(&[], &[], &[(-1, -1, 1)]);
        assert_eq!(
            clr_to_geojson(&b, SpatialKind::Geometry).unwrap(),
            r#"{"type":"Point","coordinates":[]}"#
        );
        let b = general(&[], &[], &[(-1, -1, 2)]);
        assert_eq!(
            clr_to_geojson(&b, SpatialKind::Geometry).unwrap(),
            r#"{"type":"LineString","coordinates":[]}"#
        );
    }

    #[test]
    fn rejects_bad_input() {
        for b in [
            vec![],
            hex("00000000030C"),
            hex("00000000010C0000"),
            general(&[(1.0, 2.0)], &[(1, 5)], &[(-1, 0, 1)]),
            general(&[(1.0, 2.0)], &[(1, 0)], &[(-1, 0, 8)]),
            general(&[(1.0, 2.0)], &[(1, 0)], &[(0, 0, 1)]),
            general(&[(1.0, 2.0)], &[(1, 0)], &[]),
        ] {
            assert!(
                clr_to_geojson(&b, SpatialKind::Geometry).is_err(),
                "{b:02X?}"
            );
        }
        let mut huge = hex("000000000104");
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(clr_to_geojson(&huge, SpatialKind::Geometry).is_err());
    }
}
