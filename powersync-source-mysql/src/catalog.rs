//! Table discovery: `information_schema` → [`TableSchema`] plus what the value decoder needs to
//! know about each column (kind, signedness, precision, charset, ENUM/SET members).

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use powersync_source_core::{Column, RowIdentity, SourceError, TableName, TableSchema};

use crate::charset::Charset;
use crate::connection::sql_error;

/// How a column's values are decoded and normalized.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    /// TINYINT … BIGINT; `bits` is the storage width (for signedness fix-ups).
    Int { unsigned: bool, bits: u8 },
    /// DECIMAL / NUMERIC → exact text.
    Decimal,
    /// FLOAT (single precision).
    Float,
    /// DOUBLE / REAL.
    Double,
    /// BIT(n), `width` = n (1–64): `Integer` up to 63 bits, `Text` for BIT(64).
    Bit { width: u8 },
    /// YEAR → integer.
    Year,
    /// DATE.
    Date,
    /// TIME(frac).
    Time { frac: u8 },
    /// DATETIME(frac), no zone.
    DateTime { frac: u8 },
    /// TIMESTAMP(frac), UTC.
    Timestamp { frac: u8 },
    /// Character data in a charset.
    Text { charset: Charset },
    /// BINARY(n): fixed width, zero padded (`width` bytes).
    FixedBinary { width: usize },
    /// VARBINARY / BLOB.
    Binary,
    /// ENUM members in order (index 1 = first).
    Enum(Arc<[String]>),
    /// SET members in bit order.
    Set(Arc<[String]>),
    /// JSON (MySQL binary JSON in the binlog, text elsewhere; MariaDB: text).
    Json,
    /// Spatial types (MySQL internal geometry format).
    Geometry,
    /// Anything else: text as the server renders it.
    Other,
}

/// One column with its decoder information.
#[derive(Debug, Clone)]
pub(crate) struct ColumnInfo {
    pub name: String,
    pub kind: Kind,
}

/// A selected table: its public schema and decoder info, and its primary key columns in key
/// order (indexes into the columns).
#[derive(Debug, Clone)]
pub(crate) struct TableInfo {
    pub schema: Arc<TableSchema>,
    pub columns: Arc<[ColumnInfo]>,
    pub key: Vec<usize>,
}

impl TableInfo {
    pub fn name(&self) -> &TableName {
        &self.schema.name
    }
}

/// Which schemas a source reads: its default schema (the URL's database, which qualifies table
/// names without one) and the schemas read whole when no table is named (the URL's database
/// and the `databases=` list). Several schemas are one source: one binlog stream, one
/// checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scope {
    /// Qualifies table names without a schema (may be empty).
    pub default_db: String,
    /// Read whole when no table is named, in the order given.
    pub whole: Vec<String>,
}

impl Scope {
    /// The scope of a source's settings.
    pub fn of(config: &crate::MySqlConfig) -> Scope {
        let mut whole = Vec::new();
        for db in
            std::iter::once(config.database()).chain(config.databases().iter().map(String::as_str))
        {
            if !db.is_empty() && !whole.iter().any(|w| w == db) {
                whole.push(db.to_owned());
            }
        }
        let default_db = if !config.database().is_empty() {
            config.database().to_owned()
        } else if whole.len() == 1 {
            whole[0].clone()
        } else {
            String::new()
        };
        Scope { default_db, whole }
    }

    /// `wanted` qualified with the default schema.
    pub fn qualify(&self, wanted: &[TableName]) -> Vec<TableName> {
        wanted
            .iter()
            .map(|t| {
                let schema = if t.schema.is_empty() {
                    &self.default_db
                } else {
                    &t.schema
                };
                TableName::new(schema.clone(), t.name.clone())
            })
            .collect()
    }

    /// Every schema the selection reads (the schemas of `wanted`, or the whole ones), each
    /// once, in the order they were named.
    pub fn schemas(&self, wanted: &[TableName]) -> Vec<String> {
        let named: Vec<String> = if wanted.is_empty() {
            self.whole.clone()
        } else {
            self.qualify(wanted).into_iter().map(|t| t.schema).collect()
        };
        let mut out: Vec<String> = Vec::new();
        for schema in named {
            if !schema.is_empty() && !out.contains(&schema) {
                out.push(schema);
            }
        }
        out
    }
}

/// The selected tables: `wanted` (an empty schema means the scope's default schema), or every
/// base table of the scope's whole schemas when `wanted` is empty, except the connector's own
/// tables next to the checkpoint table `skip` (checkpoints, backfill signals). A wanted table that does not
/// exist is a [`Schema`](powersync_source_core::ErrorKind::Schema) error.
pub(crate) async fn selected_tables(
    conn: &mut Conn,
    scope: &Scope,
    wanted: &[TableName],
    skip: &(String, String),
) -> Result<Vec<TableInfo>, SourceError> {
    let names: Vec<TableName> = if wanted.is_empty() {
        if scope.whole.is_empty() {
            return Err(SourceError::config(
                "no tables selected and the URL names no database: add /database or ?databases=a,b to the URL, or select tables",
            ));
        }
        let mut names = Vec::new();
        for db in &scope.whole {
            let rows: Vec<(String, String)> = conn
                .exec(
                    "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
                     WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
                    (db,),
                )
                .await
                .map_err(|e| sql_error(e, "listing tables"))?;
            names.extend(
                rows.into_iter()
                    .map(|(s, n)| TableName::new(s, n))
                    .filter(|t| !crate::markers::is_internal(&t.schema, &t.name, skip)),
            );
        }
        names
    } else {
        let names = scope.qualify(wanted);
        if let Some(t) = names.iter().find(|t| t.schema.is_empty()) {
            return Err(SourceError::config(format!(
                "table `{}` names no database, and the URL names no single default one",
                t.name
            ))
            .with_hint("write it as database.table, or put the database in the URL path"));
        }
        names
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match table_info(conn, &name).await? {
            Some(t) => out.push(t),
            None => {
                return Err(SourceError::schema(format!(
                    "table {name} does not exist (or the user cannot see it)"
                ))
                .with_hint("check the table list, or GRANT SELECT on it to the replication user"))
            }
        }
    }
    Ok(out)
}

type ColumnRow = (
    String,
    String,
    String,
    String,
    String,
    Option<u64>,
    Option<String>,
    Option<String>,
);

/// Reads one table's columns and primary key; `None` when it does not exist.
pub(crate) async fn table_info(
    conn: &mut Conn,
    name: &TableName,
) -> Result<Option<TableInfo>, SourceError> {
    let rows: Vec<ColumnRow> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY, \
                    DATETIME_PRECISION, CHARACTER_SET_NAME, \
                    CAST(ORDINAL_POSITION AS CHAR) \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
            (&name.schema, &name.name),
        )
        .await
        .map_err(|e| sql_error(e, &format!("reading the columns of {name}")))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let key_cols: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
             ORDER BY ORDINAL_POSITION",
            (&name.schema, &name.name),
        )
        .await
        .map_err(|e| sql_error(e, &format!("reading the primary key of {name}")))?;
    // MariaDB stores JSON as LONGTEXT with a json_valid() check; that check marks it.
    let json_checks: Vec<String> = conn
        .exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
            (&name.schema, &name.name),
        )
        .await
        .unwrap_or_default();
    let mut columns = Vec::with_capacity(rows.len());
    let mut infos = Vec::with_capacity(rows.len());
    for (col, data_type, column_type, nullable, _key, frac, charset, _) in rows {
        let is_json = json_checks
            .iter()
            .any(|c| c.replace(' ', "").contains(&format!("json_valid(`{col}`)")));
        let kind = kind_of(&data_type, &column_type, frac, charset.as_deref(), is_json);
        let mut c = Column::new(col.clone(), column_type.clone());
        c.is_key = key_cols.contains(&col);
        c.nullable = Some(nullable == "YES");
        columns.push(c);
        infos.push(ColumnInfo { name: col, kind });
    }
    let key: Vec<usize> = key_cols
        .iter()
        .filter_map(|k| columns.iter().position(|c| &c.name == k))
        .collect();
    let identity = if key.is_empty() {
        RowIdentity::Full
    } else {
        RowIdentity::PrimaryKey
    };
    Ok(Some(TableInfo {
        schema: Arc::new(TableSchema {
            name: name.clone(),
            source_id: None,
            columns,
            identity,
        }),
        columns: infos.into(),
        key,
    }))
}

/// The decoder kind of a column from `information_schema.COLUMNS`.
pub(crate) fn kind_of(
    data_type: &str,
    column_type: &str,
    datetime_precision: Option<u64>,
    charset: Option<&str>,
    json_check: bool,
) -> Kind {
    let dt = data_type.to_ascii_lowercase();
    let ct = column_type.to_ascii_lowercase();
    let unsigned = ct.contains("unsigned");
    let frac = datetime_precision.unwrap_or(0).min(6) as u8;
    match dt.as_str() {
        "tinyint" => Kind::Int { unsigned, bits: 8 },
        "smallint" => Kind::Int { unsigned, bits: 16 },
        "mediumint" => Kind::Int { unsigned, bits: 24 },
        "int" | "integer" => Kind::Int { unsigned, bits: 32 },
        "bigint" => Kind::Int { unsigned, bits: 64 },
        "decimal" | "numeric" => Kind::Decimal,
        "float" => Kind::Float,
        "double" | "real" | "double precision" => Kind::Double,
        "bit" => Kind::Bit {
            width: type_width(&ct).unwrap_or(1).min(64) as u8,
        },
        "year" => Kind::Year,
        "date" => Kind::Date,
        "time" => Kind::Time { frac },
        "datetime" => Kind::DateTime { frac },
        "timestamp" => Kind::Timestamp { frac },
        "json" => Kind::Json,
        "enum" => Kind::Enum(members(&ct, column_type, "enum").into()),
        "set" => Kind::Set(members(&ct, column_type, "set").into()),
        "binary" => Kind::FixedBinary {
            width: type_width(&ct).unwrap_or(1),
        },
        "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Kind::Binary,
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "geomcollection" => Kind::Geometry,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => match charset {
            Some(cs) if cs.eq_ignore_ascii_case("binary") => Kind::Binary,
            _ if json_check => Kind::Json,
            Some(cs) => Kind::Text {
                charset: Charset::from_name(cs),
            },
            None => Kind::Text {
                charset: Charset::Utf8,
            },
        },
        _ => Kind::Other,
    }
}

fn type_width(ct: &str) -> Option<usize> {
    let open = ct.find('(')?;
    let close = ct[open..].find(')')? + open;
    ct[open + 1..close].trim().parse().ok()
}

/// `enum('a','b''c')` → `["a", "b'c"]` (original spelling from `column_type`).
fn members(lower: &str, original: &str, word: &str) -> Vec<String> {
    let Some(start) = lower.find(&format!("{word}(")) else {
        return Vec::new();
    };
    let body = &original[start + word.len() + 1..];
    let mut out = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => break,
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            s.push('\'');
                        }
                        Some('\'') => break,
                        Some('\\') => {
                            if let Some(n) = chars.next() {
                                s.push(n);
                            }
                        }
                        Some(c) => s.push(c),
                    }
                }
                out.push(s);
            }
            ')' => break,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_members() {
        assert_eq!(
            members("enum('a','b''c','d,e')", "enum('a','b''c','d,e')", "enum"),
            vec!["a", "b'c", "d,e"]
        );
        assert_eq!(members("set('x')", "set('X')", "set"), vec!["X"]);
    }

    #[test]
    fn kinds() {
        assert_eq!(
            kind_of("bigint", "bigint(20) unsigned", None, None, false),
            Kind::Int {
                unsigned: true,
                bits: 64
            }
        );
        assert_eq!(
            kind_of("binary", "binary(16)", None, None, false),
            Kind::FixedBinary { width: 16 }
        );
        assert_eq!(
            kind_of("longtext", "longtext", None, Some("utf8mb4"), true),
            Kind::Json
        );
        assert_eq!(
            kind_of("datetime", "datetime(3)", Some(3), None, false),
            Kind::DateTime { frac: 3 }
        );
    }
}
