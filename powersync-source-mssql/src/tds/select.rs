//! The select-list expression of each captured column.
//!
//! Most columns are selected as they are. These kinds are cast on the server:
//! - `money`/`smallmoney`: tiberius reads money through `f64`, which loses digits past 2^53;
//! - `geometry`/`geography` (CLR UDTs: tiberius cannot read UDT metadata, so they come as their
//!   serialized bytes), `hierarchyid` (a UDT too: selected as its `/1/2/` text) and any other
//!   CLR type (its serialized bytes: tiberius 0.12 panics on UDT metadata, `todo!` in
//!   `TypeInfo::decode`);
//! - `sql_variant` (tiberius cannot read it: selected as `<base type>:<text>`, the text in a
//!   style that keeps full precision; see [`crate::values::variant_value`]);
//! - `char`/`varchar`/`text` as `nvarchar`: tiberius decodes non-Unicode strings with the
//!   collation's code page, knows no `_UTF8` collation (mojibake, silently) and fails the whole
//!   result set on an unknown code page (tiberius issue 326); the server converts correctly.
//!
//! In the snapshot, a captured column the table no longer has (dropped or renamed without a new
//! capture instance) is selected as NULL, which is what CDC records for it.

use crate::backend::CapturedColumn;
use crate::tables::quote_ident;

/// Where a select list reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// `cdc.fn_cdc_get_all_changes_<instance>`: every captured column exists.
    ChangeTable,
    /// The source table: only the columns it still has.
    SourceTable,
}

/// The expression selecting `col` from the row source aliased `c`.
pub fn column_expr(col: &CapturedColumn, from: From) -> String {
    if from == From::SourceTable && !col.in_source {
        return "NULL".to_string();
    }
    let c = format!("c.{}", quote_ident(&col.name));
    if col.clr_type {
        return format!("CAST({c} AS varbinary(max))");
    }
    let ty = &col.sql_type;
    match ty.name.as_str() {
        "money" => format!("CAST({c} AS decimal(19,4))"),
        "smallmoney" => format!("CAST({c} AS decimal(10,4))"),
        "geometry" | "geography" => format!("CAST({c} AS varbinary(max))"),
        "hierarchyid" => format!("CAST({c} AS nvarchar(4000))"),
        "sql_variant" => variant_expr(&c),
        "char" | "varchar" => format!("CAST({c} AS {})", nvarchar_for(ty.max_length)),
        "text" => format!("CAST({c} AS nvarchar(max))"),
        _ => c,
    }
}

/// The `nvarchar` type that holds every value of a non-Unicode column of `max_length` bytes
/// (a byte is at most one UTF-16 unit, also under `_UTF8` collations).
fn nvarchar_for(max_length: i32) -> String {
    match max_length {
        1..=4000 => format!("nvarchar({max_length})"),
        _ => "nvarchar(max)".to_string(),
    }
}

fn variant_expr(c: &str) -> String {
    let base = format!("CAST(SQL_VARIANT_PROPERTY({c}, 'BaseType') AS nvarchar(128))");
    format!(
        "CASE WHEN {c} IS NULL THEN NULL ELSE {base} + N':' + CASE {base} \
         WHEN N'binary' THEN CONVERT(nvarchar(max), CAST({c} AS varbinary(8000)), 2) \
         WHEN N'varbinary' THEN CONVERT(nvarchar(max), CAST({c} AS varbinary(8000)), 2) \
         WHEN N'datetimeoffset' THEN CONVERT(nvarchar(max), CAST({c} AS datetimeoffset(7)), 127) \
         WHEN N'datetime2' THEN CONVERT(nvarchar(max), CAST({c} AS datetime2(7)), 126) \
         WHEN N'datetime' THEN CONVERT(nvarchar(max), CAST({c} AS datetime), 126) \
         WHEN N'smalldatetime' THEN CONVERT(nvarchar(max), CAST({c} AS smalldatetime), 126) \
         WHEN N'date' THEN CONVERT(nvarchar(max), CAST({c} AS date), 23) \
         WHEN N'time' THEN CONVERT(nvarchar(max), CAST({c} AS time(7))) \
         WHEN N'float' THEN CONVERT(nvarchar(max), CAST({c} AS float), 3) \
         WHEN N'real' THEN CONVERT(nvarchar(max), CAST({c} AS float), 3) \
         WHEN N'money' THEN CONVERT(nvarchar(max), CAST(CAST({c} AS money) AS decimal(19,4))) \
         WHEN N'smallmoney' THEN CONVERT(nvarchar(max), CAST(CAST({c} AS smallmoney) AS decimal(10,4))) \
         ELSE CONVERT(nvarchar(max), {c}) END END"
    )
}

/// The comma-separated select list of `columns`.
pub fn select_list(columns: &[CapturedColumn], from: From) -> String {
    columns
        .iter()
        .map(|c| column_expr(c, from))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A collation name safe to splice into SQL (SQL Server's names are letters, digits and `_`).
fn collation_name(c: &str) -> Option<&str> {
    (!c.is_empty() && c.len() <= 128 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then_some(c)
}

/// Parameter `@Pn` as a value of `key`'s type, so that `c.k > @Pn` compares by the same rules
/// as `ORDER BY c.k`. Keys go back as the text they were read as: a `char`/`varchar` key as an
/// `nvarchar` parameter would make SQL Server compare in Unicode rules, while the ORDER BY sorts
/// by the column's non-Unicode collation (they differ under `SQL_*` collations, for hyphens and
/// apostrophes: rows skipped or read twice). Converted under the column's collation, the
/// parameter keeps its characters in the column's code page.
fn key_param(key: &CapturedColumn, n: usize) -> String {
    let p = format!("@P{n}");
    match key.sql_type.name.as_str() {
        "char" | "varchar" => {
            let len = match key.sql_type.max_length {
                l @ 1..=8000 => l.to_string(),
                _ => "max".to_string(),
            };
            match key.collation.as_deref().and_then(collation_name) {
                Some(coll) => format!("CAST({p} COLLATE {coll} AS varchar({len}))"),
                None => format!("CAST({p} AS varchar({len}))"),
            }
        }
        "hierarchyid" => format!("CAST({p} AS hierarchyid)"),
        _ => p,
    }
}

/// `(k1, k2, …) > (@Pn, @Pn+1, …)` spelled out for T-SQL, which has no row-value comparison:
/// `(c.[k1] > @Pn) OR (c.[k1] = @Pn AND c.[k2] > @Pn+1) OR …`. Each key is compared with the
/// column on the left so the primary-key index is used for a seek; the parameters are converted
/// to the key's type ([`key_param`]).
pub fn after_key_predicate(keys: &[&CapturedColumn], first_param: usize) -> String {
    let mut ors = Vec::with_capacity(keys.len());
    for i in 0..keys.len() {
        let ands: Vec<String> = keys[..=i]
            .iter()
            .enumerate()
            .map(|(j, k)| {
                let op = if j == i { ">" } else { "=" };
                format!(
                    "c.{} {op} {}",
                    quote_ident(&k.name),
                    key_param(k, first_param + j)
                )
            })
            .collect();
        ors.push(format!("({})", ands.join(" AND ")));
    }
    ors.join(" OR ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::SqlType;

    fn col(name: &str, ty: &str) -> CapturedColumn {
        CapturedColumn {
            name: name.into(),
            sql_type: SqlType::simple(ty),
            ordinal: 1,
            key_ordinal: None,
            nullable: true,
            computed: false,
            in_source: true,
            collation: None,
            clr_type: false,
        }
    }

    fn sized(name: &str, ty: &str, max_length: i32) -> CapturedColumn {
        let mut c = col(name, ty);
        c.sql_type.max_length = max_length;
        c
    }

    #[test]
    fn special_types_are_cast_on_the_server() {
        let e = |c: &CapturedColumn| column_expr(c, From::ChangeTable);
        assert_eq!(e(&col("a", "int")), "c.[a]");
        assert_eq!(e(&col("m", "money")), "CAST(c.[m] AS decimal(19,4))");
        assert_eq!(e(&col("m", "smallmoney")), "CAST(c.[m] AS decimal(10,4))");
        assert_eq!(e(&col("g", "geography")), "CAST(c.[g] AS varbinary(max))");
        assert_eq!(e(&col("h", "hierarchyid")), "CAST(c.[h] AS nvarchar(4000))");
        assert_eq!(e(&col("we]ird", "bit")), "c.[we]]ird]");
        let v = e(&col("v", "sql_variant"));
        assert!(v.starts_with("CASE WHEN c.[v] IS NULL THEN NULL ELSE CAST(SQL_VARIANT_PROPERTY(c.[v], 'BaseType') AS nvarchar(128)) + N':'"), "{v}");
        assert!(v.contains("CONVERT(nvarchar(max), CAST(c.[v] AS datetimeoffset(7)), 127)"));
    }

    /// Review finding 5: non-Unicode strings are converted by the server (tiberius has no
    /// `_UTF8` collations and fails whole result sets on unknown code pages).
    #[test]
    fn non_unicode_strings_are_converted_to_nvarchar_on_the_server() {
        let e = |c: &CapturedColumn| column_expr(c, From::ChangeTable);
        assert_eq!(e(&sized("s", "varchar", 50)), "CAST(c.[s] AS nvarchar(50))");
        assert_eq!(e(&sized("s", "char", 10)), "CAST(c.[s] AS nvarchar(10))");
        assert_eq!(
            e(&sized("s", "varchar", 8000)),
            "CAST(c.[s] AS nvarchar(max))"
        );
        assert_eq!(
            e(&sized("s", "varchar", -1)),
            "CAST(c.[s] AS nvarchar(max))"
        );
        assert_eq!(e(&sized("s", "text", 16)), "CAST(c.[s] AS nvarchar(max))");
        assert_eq!(e(&sized("s", "nvarchar", 100)), "c.[s]");
    }

    /// Review finding 10: a user CLR type is never requested raw (tiberius panics on UDT
    /// metadata).
    #[test]
    fn user_clr_types_are_selected_as_bytes() {
        let mut c = col("p", "point");
        c.clr_type = true;
        assert_eq!(
            column_expr(&c, From::ChangeTable),
            "CAST(c.[p] AS varbinary(max))"
        );
        assert_eq!(
            column_expr(&c, From::SourceTable),
            "CAST(c.[p] AS varbinary(max))"
        );
    }

    /// Review finding 3: a captured column the table no longer has is NULL in the snapshot (the
    /// change function still has it).
    #[test]
    fn dropped_columns_are_null_in_the_snapshot_only() {
        let mut c = col("gone", "int");
        c.in_source = false;
        assert_eq!(column_expr(&c, From::SourceTable), "NULL");
        assert_eq!(column_expr(&c, From::ChangeTable), "c.[gone]");
    }

    #[test]
    fn composite_key_predicate() {
        let (id, a, b, c) = (
            col("id", "int"),
            col("a", "int"),
            col("b", "int"),
            col("c", "int"),
        );
        assert_eq!(after_key_predicate(&[&id], 2), "(c.[id] > @P2)");
        assert_eq!(
            after_key_predicate(&[&a, &b, &c], 2),
            "(c.[a] > @P2) OR (c.[a] = @P2 AND c.[b] > @P3) OR (c.[a] = @P2 AND c.[b] = @P3 AND c.[c] > @P4)"
        );
    }

    /// Review finding 6: `varchar` keys compare against a `varchar` of the column's collation,
    /// the same rules as the ORDER BY; hierarchyid keys against a hierarchyid.
    #[test]
    fn key_parameters_take_the_key_type_and_collation() {
        let mut k = sized("code", "varchar", 20);
        k.collation = Some("SQL_Latin1_General_CP1_CI_AS".into());
        assert_eq!(
            after_key_predicate(&[&k], 2),
            "(c.[code] > CAST(@P2 COLLATE SQL_Latin1_General_CP1_CI_AS AS varchar(20)))"
        );
        k.collation = Some("x; DROP TABLE t".into());
        assert_eq!(
            after_key_predicate(&[&k], 2),
            "(c.[code] > CAST(@P2 AS varchar(20)))"
        );
        assert_eq!(
            after_key_predicate(&[&col("h", "hierarchyid")], 3),
            "(c.[h] > CAST(@P3 AS hierarchyid))"
        );
        assert_eq!(
            after_key_predicate(&[&sized("n", "nvarchar", 40)], 2),
            "(c.[n] > @P2)"
        );
    }
}
