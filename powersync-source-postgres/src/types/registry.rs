//! Type OID → what the decoders need: built-in types by a `match` ([`super::builtin`]), user
//! types (enums, domains, composites, arrays, ranges, multiranges, extension types) loaded from
//! the catalog.

use std::collections::HashMap;

use super::builtin::{builtin, builtin_name, Field, Resolved, Scalar};
use super::oid::{FIRST_NORMAL_OBJECT_ID, INT2VECTOR, OIDVECTOR};
use super::{Res, MAX_NESTING};

/// What a user-defined or extension type is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeKind {
    /// An enum: its labels are text.
    Enum,
    /// A domain: decoded as its base type with the domain's typmod.
    Domain {
        /// Base type OID.
        base: u32,
        /// The domain's type modifier (`-1` if none).
        typmod: i32,
    },
    /// A composite (row) type; fields in order, dropped ones left out.
    Composite {
        /// The fields.
        fields: Vec<Field>,
    },
    /// An array of `element`.
    Array {
        /// Element type OID.
        element: u32,
        /// The element type's delimiter in the text format (`,` except for `box`).
        delimiter: u8,
    },
    /// A range over `subtype`.
    Range {
        /// Subtype OID.
        subtype: u32,
    },
    /// A multirange of ranges over `subtype`.
    Multirange {
        /// Subtype OID of its ranges.
        subtype: u32,
    },
    /// A base type whose text and binary formats are both its UTF-8 text (`citext`).
    TextLike,
    /// PostGIS `geometry` or `geography`: (E)WKB, converted to GeoJSON.
    Geometry,
    /// Any other type: its text output is kept; it has no binary decoder.
    Unknown,
}

/// One type known to a [`TypeRegistry`] beyond the built-ins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    /// Type OID.
    pub oid: u32,
    /// SQL name without type modifier, as `format_type(oid, NULL)` prints it (schema-qualified
    /// when not on the search path).
    pub name: String,
    /// What it is.
    pub kind: TypeKind,
}

/// Type OID → how to decode values of it.
///
/// Built-in types are always known. User-defined and extension types are loaded from the
/// catalog with [`TypeRegistry::load`] (before decoding values of them: decoding a type the
/// registry has not loaded is an error) or added with [`TypeRegistry::insert`].
#[derive(Debug, Clone, Default)]
pub struct TypeRegistry {
    types: HashMap<u32, TypeInfo>,
    /// `format_type(oid, typmod)` cached for user types with a typmod.
    names: HashMap<(u32, i32), String>,
}

/// Errors of [`TypeRegistry::load`].
pub type LoadError = tokio_postgres::Error;

impl TypeRegistry {
    /// A registry that knows the built-in types.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a type. Types it refers to (element, base, field, sub-types) must be
    /// built in or added too.
    pub fn insert(&mut self, info: TypeInfo) {
        self.names.retain(|(o, _), _| *o != info.oid);
        self.types.insert(info.oid, info);
    }

    /// Forgets a type (after `ALTER TYPE` or `DROP TYPE`; load it again to pick up changes).
    pub fn remove(&mut self, oid: u32) -> Option<TypeInfo> {
        self.names.retain(|(o, _), _| *o != oid);
        self.types.remove(&oid)
    }

    /// The loaded (non-built-in) type with this OID.
    pub fn get(&self, oid: u32) -> Option<&TypeInfo> {
        self.types.get(&oid)
    }

    /// Whether values of `oid` can be decoded (built in, or loaded).
    pub fn is_known(&self, oid: u32) -> bool {
        builtin(oid).is_some() || self.types.contains_key(&oid) || oid < FIRST_NORMAL_OBJECT_ID
    }

    /// Loads from the catalog every type in `oids` that is neither built in nor loaded yet,
    /// and, recursively, the types they refer to (array elements, domain bases, composite
    /// fields, range subtypes), in one query.
    pub async fn load(
        &mut self,
        client: &tokio_postgres::Client,
        oids: &[u32],
    ) -> Result<(), LoadError> {
        let missing: Vec<u32> = oids
            .iter()
            .copied()
            .filter(|&o| builtin(o).is_none() && !self.types.contains_key(&o))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let rows = client.query(LOAD_QUERY, &[&missing]).await?;
        for row in rows {
            let oid: u32 = row.try_get("oid")?;
            if builtin(oid).is_some() {
                continue;
            }
            let typname: String = row.try_get("typname")?;
            let typtype: String = row.try_get("typtype")?;
            let typlen: i16 = row.try_get("typlen")?;
            let typelem: u32 = row.try_get("typelem")?;
            let kind = match typtype.as_str() {
                "d" => TypeKind::Domain {
                    base: row.try_get("typbasetype")?,
                    typmod: row.try_get("typtypmod")?,
                },
                "e" => TypeKind::Enum,
                "c" => {
                    let names: Vec<String> = row.try_get("field_names")?;
                    let types: Vec<u32> = row.try_get("field_types")?;
                    let typmods: Vec<i32> = row.try_get("field_typmods")?;
                    TypeKind::Composite {
                        fields: names
                            .into_iter()
                            .zip(types)
                            .zip(typmods)
                            .map(|((name, type_oid), typmod)| Field {
                                name,
                                type_oid,
                                typmod,
                            })
                            .collect(),
                    }
                }
                "r" => match row.try_get::<_, Option<u32>>("range_subtype")? {
                    Some(subtype) => TypeKind::Range { subtype },
                    None => TypeKind::Unknown,
                },
                "m" => match row.try_get::<_, Option<u32>>("multirange_subtype")? {
                    Some(subtype) => TypeKind::Multirange { subtype },
                    None => TypeKind::Unknown,
                },
                // int2vector and oidvector are arrays whose text form is space-separated.
                "b" if oid == INT2VECTOR || oid == OIDVECTOR => TypeKind::Unknown,
                "b" if typelem != 0 && typlen == -1 => {
                    let delim: Option<String> = row.try_get("delim")?;
                    TypeKind::Array {
                        element: typelem,
                        delimiter: delim.and_then(|d| d.bytes().next()).unwrap_or(b','),
                    }
                }
                "b" => match typname.as_str() {
                    "geometry" | "geography" => TypeKind::Geometry,
                    "citext" => TypeKind::TextLike,
                    _ => TypeKind::Unknown,
                },
                _ => TypeKind::Unknown,
            };
            let name: String = row.try_get("display")?;
            self.insert(TypeInfo { oid, name, kind });
        }
        Ok(())
    }

    /// Like [`load`](Self::load) for the `(type OID, typmod)` pairs of columns, and also asks
    /// the server for the names of loaded types that have a typmod (`geometry(Point,4326)`),
    /// so [`type_name`](Self::type_name) prints them exactly.
    pub async fn load_columns(
        &mut self,
        client: &tokio_postgres::Client,
        columns: &[(u32, i32)],
    ) -> Result<(), LoadError> {
        let oids: Vec<u32> = columns.iter().map(|c| c.0).collect();
        self.load(client, &oids).await?;
        let mut want_oids = Vec::new();
        let mut want_mods = Vec::new();
        for &(oid, typmod) in columns {
            if typmod >= 0
                && builtin(oid).is_none()
                && !self.names.contains_key(&(oid, typmod))
                && !want_oids
                    .iter()
                    .zip(&want_mods)
                    .any(|(&o, &m)| (o, m) == (oid, typmod))
            {
                want_oids.push(oid);
                want_mods.push(typmod);
            }
        }
        if want_oids.is_empty() {
            return Ok(());
        }
        let rows = client
            .query(
                "SELECT t.o, t.m, pg_catalog.format_type(t.o, t.m) \
                 FROM unnest($1::pg_catalog.oid[], $2::pg_catalog.int4[]) AS t(o, m)",
                &[&want_oids, &want_mods],
            )
            .await?;
        for row in rows {
            let (o, m): (u32, i32) = (row.try_get(0)?, row.try_get(1)?);
            if let Some(name) = row.try_get::<_, Option<String>>(2)? {
                self.names.insert((o, m), name);
            }
        }
        Ok(())
    }

    /// What `oid` is, domains resolved to their base type (and the typmod that applies).
    pub(crate) fn resolve(&self, mut oid: u32, mut typmod: i32) -> Res<(Resolved<'_>, i32)> {
        for _ in 0..MAX_NESTING {
            if let Some(r) = builtin(oid) {
                return Ok((r, typmod));
            }
            let Some(info) = self.types.get(&oid) else {
                if oid < FIRST_NORMAL_OBJECT_ID {
                    return Ok((Resolved::Scalar(Scalar::Unknown), typmod));
                }
                return Err(format!(
                    "type oid {oid} is not loaded in the type registry (TypeRegistry::load)"
                ));
            };
            let r = match &info.kind {
                TypeKind::Domain { base, typmod: t } => {
                    if typmod < 0 {
                        typmod = *t;
                    }
                    oid = *base;
                    continue;
                }
                TypeKind::Enum | TypeKind::TextLike => Resolved::Scalar(Scalar::Text),
                TypeKind::Composite { fields } => Resolved::Composite(fields),
                TypeKind::Array { element, delimiter } => Resolved::Array {
                    element: *element,
                    delimiter: *delimiter,
                },
                TypeKind::Range { subtype } => Resolved::Range { subtype: *subtype },
                TypeKind::Multirange { subtype } => Resolved::Multirange { subtype: *subtype },
                TypeKind::Geometry => Resolved::Scalar(Scalar::Geometry),
                TypeKind::Unknown => Resolved::Scalar(Scalar::Unknown),
            };
            return Ok((r, typmod));
        }
        Err(format!("type oid {oid}: domains nested too deeply"))
    }

    /// Whether values of `oid` can be decoded from the binary format: true when the type and
    /// everything inside it (elements, fields, subtypes) has a binary decoder. A connector
    /// asks the server for binary only when this holds for every column.
    pub fn supports_binary(&self, oid: u32) -> bool {
        self.supports_binary_at(oid, 0)
    }

    fn supports_binary_at(&self, oid: u32, depth: u32) -> bool {
        if depth >= MAX_NESTING {
            return false;
        }
        match self.resolve(oid, -1) {
            Err(_) => false,
            Ok((Resolved::Scalar(s), _)) => s != Scalar::Unknown,
            Ok((Resolved::Array { element: t, .. }, _))
            | Ok((Resolved::Range { subtype: t }, _))
            | Ok((Resolved::Multirange { subtype: t }, _)) => self.supports_binary_at(t, depth + 1),
            Ok((Resolved::Composite(fields), _)) => fields
                .iter()
                .all(|f| self.supports_binary_at(f.type_oid, depth + 1)),
        }
    }

    /// The SQL name of a column type as PostgreSQL's `format_type(oid, typmod)` prints it:
    /// `integer`, `numeric(10,2)`, `character varying(20)`, `timestamp(3) with time zone`,
    /// `integer[]`, a user type's (possibly schema-qualified) name. For user types with a
    /// typmod, the exact name is known after [`load_columns`](Self::load_columns); otherwise
    /// the name without typmod is given.
    pub fn type_name(&self, oid: u32, typmod: i32) -> String {
        self.type_name_at(oid, typmod, 0)
    }

    fn type_name_at(&self, oid: u32, typmod: i32, depth: u32) -> String {
        if let Some(n) = self.names.get(&(oid, typmod)) {
            return n.clone();
        }
        if let Some(name) = builtin_name(oid, typmod) {
            return name;
        }
        if let Some(Resolved::Array { element, .. }) = builtin(oid) {
            if depth < MAX_NESTING {
                let mut n = self.type_name_at(element, typmod, depth + 1);
                n.push_str("[]");
                return n;
            }
        }
        match self.types.get(&oid) {
            Some(info) => match &info.kind {
                TypeKind::Array { element, .. } if typmod >= 0 && depth < MAX_NESTING => {
                    let mut n = self.type_name_at(*element, typmod, depth + 1);
                    n.push_str("[]");
                    n
                }
                _ => info.name.clone(),
            },
            None => format!("oid {oid}"),
        }
    }
}

/// Fetches the requested types and, recursively, every type they refer to.
const LOAD_QUERY: &str = "\
WITH RECURSIVE wanted(oid) AS (
    SELECT unnest($1::pg_catalog.oid[])
  UNION
    SELECT dep.oid
    FROM wanted w
    JOIN pg_catalog.pg_type ty ON ty.oid = w.oid
    CROSS JOIN LATERAL (
        SELECT ty.typelem WHERE ty.typelem <> 0 AND ty.typlen = -1
        UNION ALL SELECT ty.typbasetype WHERE ty.typbasetype <> 0
        UNION ALL SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid = ty.oid
        UNION ALL SELECT r.rngtypid FROM pg_catalog.pg_range r
            WHERE ty.typtype = 'm' AND (pg_catalog.to_jsonb(r) ->> 'rngmultitypid')::pg_catalog.oid = ty.oid
        UNION ALL SELECT a.atttypid FROM pg_catalog.pg_attribute a
            WHERE ty.typrelid <> 0 AND a.attrelid = ty.typrelid AND a.attnum > 0 AND NOT a.attisdropped
    ) AS dep(oid)
)
SELECT ty.oid,
       ty.typname::pg_catalog.text AS typname,
       ty.typtype::pg_catalog.text AS typtype,
       ty.typlen,
       ty.typelem,
       ty.typbasetype,
       ty.typtypmod,
       pg_catalog.format_type(ty.oid, NULL) AS display,
       (SELECT e.typdelim::pg_catalog.text FROM pg_catalog.pg_type e WHERE e.oid = ty.typelem) AS delim,
       (SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid = ty.oid) AS range_subtype,
       (SELECT r.rngsubtype FROM pg_catalog.pg_range r
         WHERE ty.typtype = 'm' AND (pg_catalog.to_jsonb(r) ->> 'rngmultitypid')::pg_catalog.oid = ty.oid) AS multirange_subtype,
       ARRAY(SELECT a.attname::pg_catalog.text FROM pg_catalog.pg_attribute a
              WHERE a.attrelid = ty.typrelid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) AS field_names,
       ARRAY(SELECT a.atttypid FROM pg_catalog.pg_attribute a
              WHERE a.attrelid = ty.typrelid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) AS field_types,
       ARRAY(SELECT a.atttypmod FROM pg_catalog.pg_attribute a
              WHERE a.attrelid = ty.typrelid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) AS field_typmods
FROM (SELECT DISTINCT oid FROM wanted) w
JOIN pg_catalog.pg_type ty ON ty.oid = w.oid";
