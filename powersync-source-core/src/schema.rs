//! Tables, columns and row identity as the sources describe them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A table's qualified name. `schema` is the PostgreSQL/SQL Server schema, the MySQL
/// database, the MongoDB database, or `convex` for Convex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableName {
    /// Schema / database name.
    pub schema: String,
    /// Table / collection name.
    pub name: String,
}

impl TableName {
    /// A qualified name.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// Parses `schema.name`, or `name` alone with `default_schema`. Quoting is not
    /// interpreted: the first dot splits.
    pub fn parse(s: &str, default_schema: &str) -> Self {
        match s.split_once('.') {
            Some((schema, name)) => TableName::new(schema, name),
            None => TableName::new(default_schema, s),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Column name as the source spells it.
    pub name: String,
    /// The source's type name (e.g. `timestamptz`, `varchar(20)`, `decimal(10,2)`), kept even
    /// when the value is rendered as text.
    pub type_name: String,
    /// Whether the column is part of the row identity (primary key or replica identity).
    pub is_key: bool,
    /// Whether the column accepts NULL, when the source says.
    pub nullable: Option<bool>,
}

impl Column {
    /// A column with a name and source type name.
    pub fn new(name: impl Into<String>, type_name: impl Into<String>) -> Self {
        Column {
            name: name.into(),
            type_name: type_name.into(),
            is_key: false,
            nullable: None,
        }
    }
    /// Marks the column as part of the row identity.
    pub fn key(mut self) -> Self {
        self.is_key = true;
        self
    }
}

/// How a table's rows are identified in updates and deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RowIdentity {
    /// The primary key (or PostgreSQL `REPLICA IDENTITY DEFAULT` with a primary key).
    PrimaryKey,
    /// A unique index chosen as identity (PostgreSQL `REPLICA IDENTITY USING INDEX`).
    Index,
    /// All columns (PostgreSQL `REPLICA IDENTITY FULL`): old images carry every column.
    Full,
    /// No identity: updates and deletes of this table cannot be keyed.
    Nothing,
}

/// A table's schema as a source sends it. Events share it through an `Arc`, and the order of
/// [`TableSchema::columns`] is the order of every [`crate::Row`] of this table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// Qualified name.
    pub name: TableName,
    /// A source-specific stable id (PostgreSQL relation OID, MySQL table id is not stable and is
    /// not used here), so renames and re-creations can be told apart.
    pub source_id: Option<u64>,
    /// Columns in row order.
    pub columns: Vec<Column>,
    /// How rows are identified.
    pub identity: RowIdentity,
}

impl TableSchema {
    /// Index of the column named `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
    /// Indexes of the key columns, in column order.
    pub fn key_indexes(&self) -> impl Iterator<Item = usize> + '_ {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_key)
            .map(|(i, _)| i)
    }
    /// Names of the key columns, in column order.
    pub fn key_names(&self) -> Vec<&str> {
        self.columns
            .iter()
            .filter(|c| c.is_key)
            .map(|c| c.name.as_str())
            .collect()
    }
}
