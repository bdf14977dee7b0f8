//! The decoders' view of a type ([`Scalar`], [`Resolved`]) and the built-in types: their
//! conversions by OID and their SQL names.

use super::oid::{self, FIRST_NORMAL_OBJECT_ID};

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

/// Built-in types by OID (a `match`: no lookup cost on the hot path).
pub(crate) fn builtin(oid: u32) -> Option<Resolved<'static>> {
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

/// `format_type(oid, typmod)` of a built-in scalar, range or multirange (not arrays).
pub(crate) fn builtin_name(oid: u32, typmod: i32) -> Option<String> {
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
