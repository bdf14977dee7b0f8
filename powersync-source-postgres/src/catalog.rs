//! Reading the published tables and their schemas from the catalog.

use std::collections::HashMap;
use std::sync::Arc;

use postgres_protocol::escape::escape_identifier;
use powersync_source_core::{Column, RowIdentity, SourceError, TableName, TableSchema};
use tokio_postgres::Client;

use crate::sql_error;
use crate::types::TypeRegistry;

/// A published table as the catalog describes it.
#[derive(Debug, Clone)]
pub(crate) struct PublishedTable {
    pub oid: u32,
    pub schema: Arc<TableSchema>,
    /// Type OID and typmod of each column, in column order.
    pub column_types: Vec<(u32, i32)>,
    /// `pg_class.reltuples` (−1 or 0 when never analyzed).
    pub estimated_rows: Option<u64>,
}

/// Lists the tables of `publication`, restricted to `selection` when it is not empty, with
/// their columns (generated columns excluded: pgoutput does not send them) and row identity.
pub(crate) async fn published_tables(
    client: &Client,
    registry: &mut TypeRegistry,
    publication: &str,
    selection: &[TableName],
) -> Result<Vec<PublishedTable>, SourceError> {
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, c.relreplident::text, c.relrowsecurity,
                    c.reltuples::float8
             FROM pg_catalog.pg_publication_tables pt
             JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
             WHERE pt.pubname = $1
             ORDER BY 2, 3",
            &[&publication],
        )
        .await
        .map_err(|e| sql_error(e, "listing the tables of the publication"))?;
    let mut tables = Vec::new();
    for row in rows {
        let name = TableName::new(row.get::<_, String>(1), row.get::<_, String>(2));
        if !selection.is_empty() && !selection.contains(&name) {
            continue;
        }
        let reltuples: f64 = row.get(5);
        tables.push((
            row.get::<_, u32>(0),
            name,
            row.get::<_, String>(3),
            row.get::<_, bool>(4),
            reltuples,
        ));
    }
    let oids: Vec<u32> = tables.iter().map(|t| t.0).collect();
    let columns = table_columns(client, &oids).await?;
    let keys = identity_columns(client, &oids).await?;
    let mut type_oids: Vec<u32> = columns.values().flatten().map(|c| c.type_oid).collect();
    type_oids.sort_unstable();
    type_oids.dedup();
    registry
        .load(client, &type_oids)
        .await
        .map_err(|e| sql_error(e, "loading column types"))?;

    let mut out = Vec::with_capacity(tables.len());
    for (oid, name, replident, _row_security, reltuples) in tables {
        let cols = columns.get(&oid).cloned().unwrap_or_default();
        let ident = keys.get(&oid);
        let replident = replident.bytes().next().unwrap_or(b'd');
        let (identity, key_names) = row_identity(replident, ident);
        let column_types = cols.iter().map(|c| (c.type_oid, c.typmod)).collect();
        let schema = TableSchema {
            name,
            source_id: Some(oid as u64),
            columns: cols
                .iter()
                .map(|c| Column {
                    name: c.name.clone(),
                    type_name: registry.type_name(c.type_oid, c.typmod),
                    is_key: match &key_names {
                        Some(k) if k.is_empty() => identity == RowIdentity::Full,
                        Some(k) => k.contains(&c.name),
                        None => false,
                    },
                    nullable: Some(!c.not_null),
                })
                .collect(),
            identity,
        };
        out.push(PublishedTable {
            oid,
            schema: Arc::new(schema),
            column_types,
            estimated_rows: (reltuples > 0.0).then_some(reltuples as u64),
        });
    }
    Ok(out)
}

/// The row identity and key column names for a table's replica identity setting.
///
/// FULL identity keys rows by the primary key when there is one (old images still carry
/// every column), by all columns otherwise (`None` here means "every column" for FULL and
/// "no key" for NOTHING).
pub(crate) fn row_identity(
    replident: u8,
    ident: Option<&IdentityColumns>,
) -> (RowIdentity, Option<Vec<String>>) {
    match replident {
        b'f' => (
            RowIdentity::Full,
            ident.and_then(|i| i.primary.clone()).or(Some(Vec::new())),
        ),
        b'i' => match ident.and_then(|i| i.replica_index.clone()) {
            Some(k) => (RowIdentity::Index, Some(k)),
            None => (RowIdentity::Nothing, None),
        },
        b'n' => (RowIdentity::Nothing, ident.and_then(|i| i.primary.clone())),
        _ => match ident.and_then(|i| i.primary.clone()) {
            Some(k) => (RowIdentity::PrimaryKey, Some(k)),
            None => (RowIdentity::Nothing, None),
        },
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CatalogColumn {
    pub name: String,
    pub type_oid: u32,
    pub typmod: i32,
    pub not_null: bool,
}

async fn table_columns(
    client: &Client,
    oids: &[u32],
) -> Result<HashMap<u32, Vec<CatalogColumn>>, SourceError> {
    let rows = client
        .query(
            "SELECT a.attrelid, a.attname::text, a.atttypid, a.atttypmod, a.attnotnull
             FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
               AND COALESCE(to_jsonb(a) ->> 'attgenerated', '') = ''
             ORDER BY a.attrelid, a.attnum",
            &[&oids],
        )
        .await
        .map_err(|e| sql_error(e, "reading table columns"))?;
    let mut out: HashMap<u32, Vec<CatalogColumn>> = HashMap::new();
    for row in rows {
        out.entry(row.get(0)).or_default().push(CatalogColumn {
            name: row.get(1),
            type_oid: row.get(2),
            typmod: row.get(3),
            not_null: row.get(4),
        });
    }
    Ok(out)
}

/// Primary key and replica identity index columns of a table.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdentityColumns {
    pub primary: Option<Vec<String>>,
    pub replica_index: Option<Vec<String>>,
}

pub(crate) async fn identity_columns(
    client: &Client,
    oids: &[u32],
) -> Result<HashMap<u32, IdentityColumns>, SourceError> {
    let rows = client
        .query(
            "SELECT i.indrelid, i.indisprimary, i.indisreplident,
                    array_agg(a.attname::text ORDER BY k.ord)
             FROM pg_catalog.pg_index i
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE i.indrelid = ANY($1) AND (i.indisprimary OR i.indisreplident)
             GROUP BY i.indrelid, i.indexrelid, i.indisprimary, i.indisreplident",
            &[&oids],
        )
        .await
        .map_err(|e| sql_error(e, "reading primary keys"))?;
    let mut out: HashMap<u32, IdentityColumns> = HashMap::new();
    for row in rows {
        let entry = out.entry(row.get(0)).or_default();
        let cols: Vec<String> = row.get(3);
        if row.get::<_, bool>(1) {
            entry.primary = Some(cols.clone());
        }
        if row.get::<_, bool>(2) {
            entry.replica_index = Some(cols);
        }
    }
    Ok(out)
}

/// `"schema"."name"`.
pub(crate) fn qualified(name: &TableName) -> String {
    format!(
        "{}.{}",
        escape_identifier(&name.schema),
        escape_identifier(&name.name)
    )
}
