//! Type OID → what the decoders need: built-in types by a `match`, user types (enums, domains,
//! composites, arrays, ranges, multiranges, extension types) loaded from the catalog.

use std::collections::HashMap;

use super::{Res, MAX_NESTING};

/// OIDs of the built-in types the decoders know (stable across PostgreSQL versions).
#[allow(missing_docs)]
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const TID: u32 = 27;
    pub const XID: u32 = 28;
    pub const CID: u32 = 29;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const POINT: u32 = 600;
    pub const LSEG: u32 = 601;
    pub const PATH: u32 = 602;
    pub const BOX: u32 = 603;
    pub const POLYGON: u32 = 604;
    pub const LINE: u32 = 628;
    pub const CIDR: u32 = 650;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const CIRCLE: u32 = 718;
    pub const MACADDR8: u32 = 774;
    pub const MONEY: u32 = 790;
    pub const MACADDR: u32 = 829;
    pub const INET: u32 = 869;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const BIT: u32 = 1560;
    pub const VARBIT: u32 = 1562;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const PG_LSN: u32 = 3220;
    pub const TSVECTOR: u32 = 3614;
    pub const JSONB: u32 = 3802;
    pub const JSONPATH: u32 = 4072;
    pub const XID8: u32 = 5069;
    pub const INT4RANGE: u32 = 3904;
    pub const NUMRANGE: u32 = 3906;
    pub const TSRANGE: u32 = 3908;
    pub const TSTZRANGE: u32 = 3910;
    pub const DATERANGE: u32 = 3912;
    pub const INT8RANGE: u32 = 3926;
    pub const INT4MULTIRANGE: u32 = 4451;
    pub const NUMMULTIRANGE: u32 = 4532;
    pub const TSMULTIRANGE: u32 = 4533;
    pub const TSTZMULTIRANGE: u32 = 4534;
    pub const DATEMULTIRANGE: u32 = 4535;
    pub const INT8MULTIRANGE: u32 = 4536;
}

const INT2VECTOR: u32 = 22;
const OIDVECTOR: u32 = 30;

/// OIDs below this are assigned by initdb (built-in); user and extension types are above.
const FIRST_NORMAL_OBJECT_ID: u32 = 16384;

/// Leaf types: how one value is converted (both formats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scalar {
    Bool,
    Int2,
    Int4,
    Int8,
    /// `oid`, `xid`, `cid`: unsigned 32-bit.
    Oid,
    Xid8,
    Float4,
    Float8,
    Numeric,
    Money,
    /// `text`, `varchar`, `bpchar`, `name`, enums, `citext`: UTF-8 in both formats.
    Text,
    /// `"char"`: one byte.
    Char,
    Bytea,
    Uuid,
    Json,
    Jsonb,
    Jsonpath,
    Xml,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    Interval,
    Inet,
    Cidr,
    Macaddr,
    Macaddr8,
    Bit,
    Tsvector,
    Point,
    Line,
    Lseg,
    Box,
    Path,
    Polygon,
    Circle,
    PgLsn,
    Tid,
    Geometry,
    /// Text output kept as is; no binary decoder.
    Unknown,
}

/// What a type is, after domains are resolved.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Resolved<'r> {
    Scalar(Scalar),
    Array { element: u32, delimiter: u8 },
    Range { subtype: u32 },
    Multirange { subtype: u32 },
    Composite(&'r [Field]),
}

/// Built-in types by OID (a `match`: no lookup cost on the hot path).
fn builtin(oid: u32) -> Option<Resolved<'static>> {
    use oid::*;
    let s = |s| Some(Resolved::Scalar(s));
    let array = |element| {
        Some(Resolved::Array {
            element,
            delimiter: if element == BOX { b';' } else { b',' },
        })
    };
    match oid {
        BOOL => s(Scalar::Bool),
        BYTEA => s(Scalar::Bytea),
        CHAR => s(Scalar::Char),
        NAME | TEXT | BPCHAR | VARCHAR => s(Scalar::Text),
        INT8 => s(Scalar::Int8),
        INT2 => s(Scalar::Int2),
        INT4 => s(Scalar::Int4),
        OID | XID | CID => s(Scalar::Oid),
        XID8 => s(Scalar::Xid8),
        TID => s(Scalar::Tid),
        JSON => s(Scalar::Json),
        JSONB => s(Scalar::Jsonb),
        JSONPATH => s(Scalar::Jsonpath),
        XML => s(Scalar::Xml),
        POINT => s(Scalar::Point),
        LSEG => s(Scalar::Lseg),
        PATH => s(Scalar::Path),
        BOX => s(Scalar::Box),
        POLYGON => s(Scalar::Polygon),
        LINE => s(Scalar::Line),
        CIRCLE => s(Scalar::Circle),
        CIDR => s(Scalar::Cidr),
        INET => s(Scalar::Inet),
        FLOAT4 => s(Scalar::Float4),
        FLOAT8 => s(Scalar::Float8),
        MACADDR8 => s(Scalar::Macaddr8),
        MACADDR => s(Scalar::Macaddr),
        MONEY => s(Scalar::Money),
        DATE => s(Scalar::Date),
        TIME => s(Scalar::Time),
        TIMESTAMP => s(Scalar::Timestamp),
        TIMESTAMPTZ => s(Scalar::TimestampTz),
        INTERVAL => s(Scalar::Interval),
        TIMETZ => s(Scalar::TimeTz),
        BIT | VARBIT => s(Scalar::Bit),
        NUMERIC => s(Scalar::Numeric),
        UUID => s(Scalar::Uuid),
        PG_LSN => s(Scalar::PgLsn),
        TSVECTOR => s(Scalar::Tsvector),

        INT4RANGE => Some(Resolved::Range { subtype: INT4 }),
        NUMRANGE => Some(Resolved::Range { subtype: NUMERIC }),
        TSRANGE => Some(Resolved::Range { subtype: TIMESTAMP }),
        TSTZRANGE => Some(Resolved::Range {
            subtype: TIMESTAMPTZ,
        }),
        DATERANGE => Some(Resolved::Range { subtype: DATE }),
        INT8RANGE => Some(Resolved::Range { subtype: INT8 }),
        INT4MULTIRANGE => Some(Resolved::Multirange { subtype: INT4 }),
        NUMMULTIRANGE => Some(Resolved::Multirange { subtype: NUMERIC }),
        TSMULTIRANGE => Some(Resolved::Multirange { subtype: TIMESTAMP }),
        TSTZMULTIRANGE => Some(Resolved::Multirange {
            subtype: TIMESTAMPTZ,
        }),
        DATEMULTIRANGE => Some(Resolved::Multirange { subtype: DATE }),
        INT8MULTIRANGE => Some(Resolved::Multirange { subtype: INT8 }),

        1000 => array(BOOL),
        1001 => array(BYTEA),
        1002 => array(CHAR),
        1003 => array(NAME),
        1016 => array(INT8),
        1005 => array(INT2),
        1007 => array(INT4),
        1009 => array(TEXT),
        1028 => array(OID),
        1010 => array(TID),
        1011 => array(XID),
        1012 => array(CID),
        199 => array(JSON),
        143 => array(XML),
        1017 => array(POINT),
        1018 => array(LSEG),
        1019 => array(PATH),
        1020 => array(BOX),
        1027 => array(POLYGON),
        629 => array(LINE),
        651 => array(CIDR),
        1021 => array(FLOAT4),
        1022 => array(FLOAT8),
        719 => array(CIRCLE),
        775 => array(MACADDR8),
        791 => array(MONEY),
        1040 => array(MACADDR),
        1041 => array(INET),
        1014 => array(BPCHAR),
        1015 => array(VARCHAR),
        1182 => array(DATE),
        1183 => array(TIME),
        1115 => array(TIMESTAMP),
        1185 => array(TIMESTAMPTZ),
        1187 => array(INTERVAL),
        1270 => array(TIMETZ),
        1561 => array(BIT),
        1563 => array(VARBIT),
        1231 => array(NUMERIC),
        2951 => array(UUID),
        3221 => array(PG_LSN),
        3643 => array(TSVECTOR),
        3807 => array(JSONB),
        4073 => array(JSONPATH),
        271 => array(XID8),
        3905 => array(INT4RANGE),
        3907 => array(NUMRANGE),
        3909 => array(TSRANGE),
        3911 => array(TSTZRANGE),
        3913 => array(DATERANGE),
        3927 => array(INT8RANGE),
        6150 => array(INT4MULTIRANGE),
        6151 => array(NUMMULTIRANGE),
        6152 => array(TSMULTIRANGE),
        6153 => array(TSTZMULTIRANGE),
        6155 => array(DATEMULTIRANGE),
        6157 => array(INT8MULTIRANGE),
        _ => None,
    }
}

/// Every built-in type OID the decoders handle natively (scalars, arrays, ranges, multiranges).
pub fn builtin_oids() -> impl Iterator<Item = u32> {
    (0..FIRST_NORMAL_OBJECT_ID).filter(|&o| builtin(o).is_some())
}

/// One field of a composite type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Field (attribute) name.
    pub name: String,
    /// Type OID of the field.
    pub type_oid: u32,
    /// Type modifier of the field (`-1` if none).
    pub typmod: i32,
}

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

/// `format_type(oid, typmod)` of a built-in scalar, range or multirange (not arrays).
fn builtin_name(oid: u32, typmod: i32) -> Option<String> {
    use oid::*;
    let plain = match oid {
        BOOL => "boolean",
        BYTEA => "bytea",
        CHAR => "\"char\"",
        NAME => "name",
        INT8 => "bigint",
        INT2 => "smallint",
        INT4 => "integer",
        TEXT => "text",
        OID => "oid",
        TID => "tid",
        XID => "xid",
        CID => "cid",
        XID8 => "xid8",
        JSON => "json",
        JSONB => "jsonb",
        JSONPATH => "jsonpath",
        XML => "xml",
        POINT => "point",
        LSEG => "lseg",
        PATH => "path",
        BOX => "box",
        POLYGON => "polygon",
        LINE => "line",
        CIRCLE => "circle",
        CIDR => "cidr",
        INET => "inet",
        FLOAT4 => "real",
        FLOAT8 => "double precision",
        MACADDR8 => "macaddr8",
        MACADDR => "macaddr",
        MONEY => "money",
        DATE => "date",
        UUID => "uuid",
        PG_LSN => "pg_lsn",
        TSVECTOR => "tsvector",
        INT4RANGE => "int4range",
        NUMRANGE => "numrange",
        TSRANGE => "tsrange",
        TSTZRANGE => "tstzrange",
        DATERANGE => "daterange",
        INT8RANGE => "int8range",
        INT4MULTIRANGE => "int4multirange",
        NUMMULTIRANGE => "nummultirange",
        TSMULTIRANGE => "tsmultirange",
        TSTZMULTIRANGE => "tstzmultirange",
        DATEMULTIRANGE => "datemultirange",
        INT8MULTIRANGE => "int8multirange",
        BPCHAR if typmod >= 0 => return Some(format!("character({})", typmod - 4)),
        BPCHAR => "bpchar",
        VARCHAR if typmod >= 0 => return Some(format!("character varying({})", typmod - 4)),
        VARCHAR => "character varying",
        BIT if typmod >= 0 => return Some(format!("bit({typmod})")),
        BIT => "\"bit\"",
        VARBIT if typmod >= 0 => return Some(format!("bit varying({typmod})")),
        VARBIT => "bit varying",
        NUMERIC if typmod >= 4 => {
            let t = typmod - 4;
            let precision = (t >> 16) & 0xffff;
            let scale = ((t & 0x7ff) ^ 1024) - 1024;
            return Some(format!("numeric({precision},{scale})"));
        }
        NUMERIC => "numeric",
        TIME | TIMETZ | TIMESTAMP | TIMESTAMPTZ => {
            let (base, tz) = match oid {
                TIME => ("time", "without"),
                TIMETZ => ("time", "with"),
                TIMESTAMP => ("timestamp", "without"),
                _ => ("timestamp", "with"),
            };
            return Some(if typmod >= 0 {
                format!("{base}({typmod}) {tz} time zone")
            } else {
                format!("{base} {tz} time zone")
            });
        }
        INTERVAL if typmod >= 0 => {
            let fields = match (typmod >> 16) & 0x7fff {
                0x0004 => " year",
                0x0002 => " month",
                0x0008 => " day",
                0x0400 => " hour",
                0x0800 => " minute",
                0x1000 => " second",
                0x0006 => " year to month",
                0x0408 => " day to hour",
                0x0c08 => " day to minute",
                0x1c08 => " day to second",
                0x0c00 => " hour to minute",
                0x1c00 => " hour to second",
                0x1800 => " minute to second",
                _ => "",
            };
            let precision = typmod & 0xffff;
            return Some(if precision != 0xffff {
                format!("interval{fields}({precision})")
            } else {
                format!("interval{fields}")
            });
        }
        INTERVAL => "interval",
        _ => return None,
    };
    Some(plain.to_owned())
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
