//! OIDs of the built-in types the decoders know (stable across PostgreSQL versions).
#![allow(missing_docs)] // each constant is the type's name in upper case

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

/// `int2vector` (read as unknown: its text form is kept).
pub(crate) const INT2VECTOR: u32 = 22;
/// `oidvector` (read as unknown: its text form is kept).
pub(crate) const OIDVECTOR: u32 = 30;

/// OIDs below this are assigned by initdb (built-in); user and extension types are above.
pub(crate) const FIRST_NORMAL_OBJECT_ID: u32 = 16384;
