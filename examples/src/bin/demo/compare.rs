//! The demo's verdict: every row of PostgreSQL and of the SQLite mirror compared through one
//! canonical text form per column type.

use std::collections::BTreeMap;
use std::path::Path;

use tokio_postgres::Client;

use crate::error::{Context, DemoError};

/// How to compare one column: the source expression renders it as canonical text.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// SQLite INTEGER; source `x::text` (booleans as `x::int`).
    Int,
    /// SQLite REAL; source float text, compared as the same `f64`.
    Real,
    /// SQLite TEXT, byte for byte.
    Text,
    /// SQLite TEXT `YYYY-MM-DDTHH:MM:SS[.fraction]Z`; trailing zeros of the fraction do not
    /// count (the source renders six digits).
    Timestamp,
    /// SQLite TEXT holding JSON; compared as parsed JSON documents.
    Json,
    /// SQLite BLOB; source `encode(x, 'hex')`.
    Blob,
}

struct TableSpec {
    name: &'static str,
    columns: &'static [(&'static str, &'static str, Kind)],
}

const TABLES: &[TableSpec] = &[
    TableSpec {
        name: "items",
        columns: &[
            ("id", "id::text", Kind::Int),
            ("qty", "qty::text", Kind::Int),
            ("name", "name", Kind::Text),
            ("code", "code::text", Kind::Text),
            ("active", "active::int::text", Kind::Int),
            ("score", "score::text", Kind::Real),
            ("price", "price::text", Kind::Text),
            (
                "updated_at",
                "to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
                Kind::Timestamp,
            ),
            ("day", "to_char(day, 'YYYY-MM-DD')", Kind::Text),
            ("ref", "ref::text", Kind::Text),
            ("attrs", "attrs::text", Kind::Json),
            ("payload", "encode(payload, 'hex')", Kind::Blob),
            ("tags", "array_to_json(tags)::text", Kind::Json),
            ("doc", "doc", Kind::Text),
        ],
    },
    TableSpec {
        name: "events",
        columns: &[
            ("id", "id::text", Kind::Int),
            ("item_id", "item_id::text", Kind::Int),
            ("kind", "kind", Kind::Text),
            (
                "at",
                "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
                Kind::Timestamp,
            ),
            ("note", "note", Kind::Text),
        ],
    },
];

/// What the comparison found.
pub(crate) struct Report {
    /// Rows per table in PostgreSQL.
    pub(crate) rows: BTreeMap<String, u64>,
    /// Rows missing on one side or with a differing value.
    pub(crate) mismatches: u64,
}

/// Reads every row of every table from both sides, in key order, and compares them value by
/// value (the first ten mismatches are printed).
pub(crate) async fn compare(client: &Client, sqlite: &Path) -> Result<Report, DemoError> {
    client
        .batch_execute("SET extra_float_digits = 3; SET DateStyle = ISO")
        .await
        .context("setting up the comparison")?;
    let db =
        rusqlite::Connection::open_with_flags(sqlite, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .context("opening the SQLite mirror")?;
    let mut report = Report {
        rows: BTreeMap::new(),
        mismatches: 0,
    };
    let mut shown = 0;
    for spec in TABLES {
        let exprs: Vec<&str> = spec.columns.iter().map(|c| c.1).collect();
        // `ORDER BY t.id`: a bare `id` would name the output column `id::text`.
        let source_sql = format!(
            "SELECT {} FROM {1} ORDER BY {1}.id",
            exprs.join(", "),
            spec.name
        );
        let source: Vec<Vec<Option<String>>> = client
            .simple_query(&source_sql)
            .await
            .context("reading PostgreSQL")?
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..spec.columns.len())
                        .map(|i| r.get(i).map(str::to_owned))
                        .collect(),
                ),
                _ => None,
            })
            .collect();
        let names: Vec<String> = spec
            .columns
            .iter()
            .map(|c| powersync_source_sqlite::quote(c.0))
            .collect();
        let mut stmt = db
            .prepare(&format!(
                "SELECT {} FROM {} ORDER BY id",
                names.join(", "),
                powersync_source_sqlite::quote(spec.name)
            ))
            .context("reading SQLite")?;
        let mirror: Vec<Vec<rusqlite::types::Value>> = stmt
            .query_map([], |r| {
                (0..spec.columns.len())
                    .map(|i| r.get::<_, rusqlite::types::Value>(i))
                    .collect()
            })
            .context("reading SQLite")?
            .collect::<Result<_, _>>()
            .context("reading SQLite")?;
        report
            .rows
            .insert(spec.name.to_string(), source.len() as u64);

        let (mut i, mut j) = (0, 0);
        let id_of = |v: &rusqlite::types::Value| match v {
            rusqlite::types::Value::Integer(i) => *i,
            _ => i64::MIN,
        };
        while i < source.len() || j < mirror.len() {
            let sid = source
                .get(i)
                .and_then(|r| r[0].as_deref())
                .and_then(|s| s.parse::<i64>().ok());
            let mid = mirror.get(j).map(|r| id_of(&r[0]));
            let problem = match (sid, mid) {
                (Some(a), Some(b)) if a == b => {
                    let diffs: Vec<String> = spec
                        .columns
                        .iter()
                        .enumerate()
                        .filter(|(c, (_, _, kind))| {
                            !same(*kind, source[i][*c].as_deref(), &mirror[j][*c])
                        })
                        .map(|(c, (name, _, _))| {
                            format!(
                                "{name}: postgres {:?} / sqlite {:?}",
                                source[i][c].as_deref().map(shorten),
                                mirror[j][c]
                            )
                        })
                        .collect();
                    i += 1;
                    j += 1;
                    (!diffs.is_empty()).then(|| format!("id {a} differs: {}", diffs.join("; ")))
                }
                (Some(a), Some(b)) if a < b => {
                    i += 1;
                    Some(format!("id {a} is missing from SQLite"))
                }
                (Some(_), Some(b)) => {
                    j += 1;
                    Some(format!("id {b} is in SQLite only"))
                }
                (Some(a), None) => {
                    i += 1;
                    Some(format!("id {a} is missing from SQLite"))
                }
                (None, Some(b)) => {
                    j += 1;
                    Some(format!("id {b} is in SQLite only"))
                }
                (None, None) => break,
            };
            if let Some(p) = problem {
                report.mismatches += 1;
                if shown < 10 {
                    shown += 1;
                    println!("  mismatch in {}: {p}", spec.name);
                }
            }
        }
    }
    Ok(report)
}

/// `…:SS.120000Z` → `…:SS.12Z`, `…:SS.000Z` → `…:SS Z` (without the space).
fn trim_fraction(s: &str) -> String {
    match s.strip_suffix('Z').and_then(|b| b.rsplit_once('.')) {
        Some((whole, frac)) if frac.bytes().all(|c| c.is_ascii_digit()) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                format!("{whole}Z")
            } else {
                format!("{whole}.{frac}Z")
            }
        }
        _ => s.to_string(),
    }
}

fn shorten(s: &str) -> String {
    if s.len() > 60 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(60).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s.to_string()
    }
}

/// Whether the SQLite value equals the source's canonical text for this kind of column.
fn same(kind: Kind, source: Option<&str>, mirror: &rusqlite::types::Value) -> bool {
    use rusqlite::types::Value as V;
    match (source, mirror) {
        (None, V::Null) => true,
        (None, _) | (Some(_), V::Null) => false,
        (Some(s), V::Integer(i)) if kind == Kind::Int => s == i.to_string(),
        (Some(s), V::Real(f)) if kind == Kind::Real => {
            s.parse::<f64>().is_ok_and(|p| p.to_bits() == f.to_bits())
        }
        (Some(s), V::Text(t)) if kind == Kind::Text => s == t,
        (Some(s), V::Text(t)) if kind == Kind::Timestamp => trim_fraction(s) == trim_fraction(t),
        (Some(s), V::Text(t)) if kind == Kind::Json => {
            match (
                serde_json::from_str::<serde_json::Value>(s),
                serde_json::from_str::<serde_json::Value>(t),
            ) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            }
        }
        (Some(s), V::Blob(b)) if kind == Kind::Blob => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            s == hex
        }
        _ => false,
    }
}
