//! The select-list expression of each captured column.
//!
//! Most columns are selected as they are. Four kinds are cast on the server:
//! `money`/`smallmoney` (tiberius reads money through `f64`, which loses digits past 2^53),
//! `geometry`/`geography` (CLR UDTs: tiberius cannot read UDT metadata, so they come as their
//! serialized bytes), `hierarchyid` (a UDT too: selected as its `/1/2/` text) and
//! `sql_variant` (tiberius cannot read it: selected as `<base type>:<text>`, the text in a
//! style that keeps full precision; see [`crate::values::variant_value`]).

use crate::backend::CapturedColumn;
use crate::tables::quote_ident;

/// The expression selecting `col` from the row source aliased `c`.
pub fn column_expr(col: &CapturedColumn) -> String {
    let c = format!("c.{}", quote_ident(&col.name));
    match col.sql_type.name.as_str() {
        "money" => format!("CAST({c} AS decimal(19,4))"),
        "smallmoney" => format!("CAST({c} AS decimal(10,4))"),
        "geometry" | "geography" => format!("CAST({c} AS varbinary(max))"),
        "hierarchyid" => format!("CAST({c} AS nvarchar(4000))"),
        "sql_variant" => variant_expr(&c),
        _ => c,
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
pub fn select_list(columns: &[CapturedColumn]) -> String {
    columns
        .iter()
        .map(column_expr)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `(k1, k2, …) > (@Pn, @Pn+1, …)` spelled out for T-SQL, which has no row-value comparison:
/// `(c.[k1] > @Pn) OR (c.[k1] = @Pn AND c.[k2] > @Pn+1) OR …`. Each key is compared with the
/// column on the left so the primary-key index is used for a seek.
pub fn after_key_predicate(keys: &[&str], first_param: usize) -> String {
    let mut ors = Vec::with_capacity(keys.len());
    for i in 0..keys.len() {
        let ands: Vec<String> = keys[..=i]
            .iter()
            .enumerate()
            .map(|(j, k)| {
                let op = if j == i { ">" } else { "=" };
                format!("c.{} {op} @P{}", quote_ident(k), first_param + j)
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
        }
    }

    #[test]
    fn special_types_are_cast_on_the_server() {
        assert_eq!(column_expr(&col("a", "int")), "c.[a]");
        assert_eq!(
            column_expr(&col("m", "money")),
            "CAST(c.[m] AS decimal(19,4))"
        );
        assert_eq!(
            column_expr(&col("m", "smallmoney")),
            "CAST(c.[m] AS decimal(10,4))"
        );
        assert_eq!(
            column_expr(&col("g", "geography")),
            "CAST(c.[g] AS varbinary(max))"
        );
        assert_eq!(
            column_expr(&col("h", "hierarchyid")),
            "CAST(c.[h] AS nvarchar(4000))"
        );
        assert_eq!(column_expr(&col("we]ird", "bit")), "c.[we]]ird]");
        let v = column_expr(&col("v", "sql_variant"));
        assert!(v.starts_with("CASE WHEN c.[v] IS NULL THEN NULL ELSE CAST(SQL_VARIANT_PROPERTY(c.[v], 'BaseType') AS nvarchar(128)) + N':'"), "{v}");
        assert!(v.contains("CONVERT(nvarchar(max), CAST(c.[v] AS datetimeoffset(7)), 127)"));
    }

    #[test]
    fn composite_key_predicate() {
        assert_eq!(after_key_predicate(&["id"], 2), "(c.[id] > @P2)");
        assert_eq!(
            after_key_predicate(&["a", "b", "c"], 2),
            "(c.[a] > @P2) OR (c.[a] = @P2 AND c.[b] > @P3) OR (c.[a] = @P2 AND c.[b] = @P3 AND c.[c] > @P4)"
        );
    }
}
