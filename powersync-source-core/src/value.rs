//! Row values in SQLite's type model.

use std::sync::Arc;

use crate::schema::TableSchema;

/// One column value, already normalized to SQLite's type model (see the crate docs for the
/// per-type rules).
///
/// [`Value::Unchanged`] is not a value: it marks a column whose value the source sent nowhere
/// (an unchanged PostgreSQL TOAST column under `REPLICA IDENTITY DEFAULT`, non-key columns of
/// a key-only old image). A connector fills it from a complete old image when there is one, so
/// it appears only when the source truly did not send the value. Consumers never write it;
/// the rule is:
///
/// **Keep the value you hold for this row: under the old key if the update changed the key
/// and you hold that row, otherwise under the new key.** If you hold the row under neither
/// key, you hold no value to keep: do not invent one (NULL included). That only happens in the
/// replay window after a resumed snapshot, which has already delivered the row under the key
/// it has at the end of the window, or a later change deletes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL (also NaN floats and values the rules map to null).
    Null,
    /// A 64-bit signed integer (also booleans as 0/1).
    Integer(i64),
    /// A 64-bit float; never NaN.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
    /// The source did not send this column's value; keep the stored one.
    Unchanged,
}

impl Value {
    /// Whether this is [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
    /// Whether this is [`Value::Unchanged`].
    pub fn is_unchanged(&self) -> bool {
        matches!(self, Value::Unchanged)
    }
    /// The text, if this is [`Value::Text`].
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
    /// The integer, if this is [`Value::Integer`].
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }
    /// A float as [`Value::Real`], NaN as [`Value::Null`] (SQLite has no NaN).
    pub fn real(f: f64) -> Value {
        if f.is_nan() {
            Value::Null
        } else {
            Value::Real(f)
        }
    }
    /// An unsigned 64-bit integer: [`Value::Integer`] when it fits `i64`, else base-10 text.
    pub fn unsigned(u: u64) -> Value {
        match i64::try_from(u) {
            Ok(i) => Value::Integer(i),
            Err(_) => Value::Text(u.to_string()),
        }
    }
    /// A boolean as 0/1.
    pub fn bool(b: bool) -> Value {
        Value::Integer(b as i64)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Integer(i)
    }
}
impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Blob(b)
    }
}

/// The values of one row image, in the column order of its table's schema.
///
/// Rows do not carry column names: the [`TableSchema`] of the change they belong to does, so a
/// million rows share one set of names.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    values: Vec<Value>,
}

impl Row {
    /// A row from values in schema column order.
    pub fn new(values: Vec<Value>) -> Self {
        Row { values }
    }
    /// The values in schema column order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }
    /// Mutable access to the values.
    pub fn values_mut(&mut self) -> &mut Vec<Value> {
        &mut self.values
    }
    /// Consumes the row into its values.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }
    /// The value at column index `i`.
    pub fn get(&self, i: usize) -> Option<&Value> {
        self.values.get(i)
    }
    /// The value of the column named `name` in `schema`.
    pub fn get_by_name<'a>(&'a self, schema: &TableSchema, name: &str) -> Option<&'a Value> {
        schema.column_index(name).and_then(|i| self.values.get(i))
    }
    /// Number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }
    /// Whether the row has no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
    /// Iterates `(column name, value)` pairs against `schema`.
    pub fn iter_named<'a>(
        &'a self,
        schema: &'a Arc<TableSchema>,
    ) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        schema
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .zip(self.values.iter())
    }
}

impl From<Vec<Value>> for Row {
    fn from(values: Vec<Value>) -> Self {
        Row { values }
    }
}
