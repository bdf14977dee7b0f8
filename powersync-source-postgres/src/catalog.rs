//! Reading the published tables and their schemas from the catalog.

use std::collections::HashMap;
use std::sync::Arc;

use postgres_protocol::escape::escape_identifier;
use powersync_source_core::{Column, RowIdentity, SourceError, TableName, TableSchema};
use tokio_postgres::Client;

use crate::sql_error;
use crate::types::{ColumnType, TypeRegistry};

/// A published table as the catalog describes it.
#[derive(Debug, Clone)]
pub(crate) struct PublishedTable {
    pub oid: u32,
    /// Only the published columns (what the stream's Relation messages carry).
    pub schema: Arc<TableSchema>,
    /// Type OID and typmod of each column, in column order.
    pub column_types: Vec<ColumnType>,
    /// `pg_class.reltuples` (−1 or 0 when never analyzed).
    pub estimated_rows: Option<u64>,
    /// What the publication publishes of the table's rows.
    pub publishing: Publishing,
}

/// What a publication publishes of a table beyond its shape: the rows a snapshot reads, and
/// what, when it changes while streaming, makes the rows the host holds wrong without a
/// change in the WAL (so the table is read again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Publishing {
    // (A changed column list always comes with a Relation message; the other two may not.)
    /// The row filter (`pg_publication_tables.rowfilter`, PostgreSQL 15+) as SQL.
    pub row_filter: Option<String>,
    /// The explicit column list (15+), if the publication has one for the table: a column
    /// it adds has values the stream never sends.
    pub column_list: Option<Vec<String>>,
    /// A partitioned table's partitions (OIDs, sorted): attaching or detaching one changes
    /// the rows published under the table without a row change in the WAL.
    pub partitions: Vec<u32>,
}

impl Publishing {
    /// Whether the published rows differ (row filter or partitions), regardless of columns.
    pub(crate) fn rows_differ(&self, other: &Publishing) -> bool {
        self.row_filter != other.row_filter || self.partitions != other.partitions
    }
}

/// One row of [`publication_rows`].
struct PublicationRow {
    oid: u32,
    name: TableName,
    replident: String,
    reltuples: f64,
    /// `pg_publication_tables.attnames` (15+): the published columns.
    attnames: Option<Vec<String>>,
    publishing: Publishing,
    /// 18+ publishes generated columns when `attnames` lists them; earlier servers never do
    /// (though their `attnames` lists them).
    generated_published: bool,
}

/// The tables of `publication` (only `only` when given) with what it publishes of each.
/// Version-independent: the 15+ columns of `pg_publication_tables` are read through
/// `to_jsonb`, null on older servers.
async fn publication_rows(
    client: &Client,
    publication: &str,
    only: Option<u32>,
) -> Result<Vec<PublicationRow>, SourceError> {
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, c.relreplident::text,
                    c.reltuples::float8,
                    CASE WHEN to_jsonb(pt) -> 'attnames' IS NOT NULL
                              AND jsonb_typeof(to_jsonb(pt) -> 'attnames') = 'array'
                         THEN ARRAY(SELECT jsonb_array_elements_text(to_jsonb(pt) -> 'attnames'))
                    END,
                    to_jsonb(pt) ->> 'rowfilter',
                    EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr
                            JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
                            WHERE p.pubname = pt.pubname AND pr.prrelid = c.oid
                              AND to_jsonb(pr) ->> 'prattrs' IS NOT NULL),
                    CASE WHEN c.relkind = 'p' THEN ARRAY(
                        WITH RECURSIVE tree(oid) AS (
                            SELECT i.inhrelid FROM pg_catalog.pg_inherits i WHERE i.inhparent = c.oid
                            UNION ALL
                            SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.oid)
                        SELECT oid FROM tree ORDER BY 1)
                    END,
                    current_setting('server_version_num')::int >= 180000
             FROM pg_catalog.pg_publication_tables pt
             JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
             WHERE pt.pubname = $1 AND ($2::oid IS NULL OR c.oid = $2::oid)
             ORDER BY 2, 3",
            &[&publication, &only],
        )
        .await
        .map_err(|e| sql_error(e, "listing the tables of the publication"))?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let attnames: Option<Vec<String>> = row.get(5);
            let explicit_list: bool = row.get(7);
            PublicationRow {
                oid: row.get(0),
                name: TableName::new(row.get::<_, String>(1), row.get::<_, String>(2)),
                replident: row.get(3),
                reltuples: row.get(4),
                publishing: Publishing {
                    row_filter: row.get(6),
                    column_list: attnames.clone().filter(|_| explicit_list),
                    partitions: row.get::<_, Option<Vec<u32>>>(8).unwrap_or_default(),
                },
                attnames,
                generated_published: row.get(9),
            }
        })
        .collect())
}

/// What `publication` publishes of the table `oid` now; `None` when it is not published.
pub(crate) async fn publishing(
    client: &Client,
    publication: &str,
    oid: u32,
) -> Result<Option<Publishing>, SourceError> {
    Ok(publication_rows(client, publication, Some(oid))
        .await?
        .into_iter()
        .next()
        .map(|r| r.publishing))
}

/// Each table of `publication` now, by OID: its name and what the publication publishes of it.
pub(crate) async fn publishing_all(
    client: &Client,
    publication: &str,
) -> Result<HashMap<u32, (TableName, Publishing)>, SourceError> {
    Ok(publication_rows(client, publication, None)
        .await?
        .into_iter()
        .map(|r| (r.oid, (r.name, r.publishing)))
        .collect())
}

/// Which of `oids` may have joined `publication` after the replication slot `slot`'s restart
/// point: those whose publication entry (`pg_publication_rel`, or on 15+ their schema's
/// `pg_publication_namespace`) or whose row type (`pg_type`, created with the table; renames
/// and owner changes rewrite it too) was written by a transaction no older than the slot's
/// `catalog_xmin`.
///
/// Why that horizon: a stream resumes from a checkpoint at or after the slot's
/// `confirmed_flush`, itself at or after its `restart_lsn`, and every transaction that commits
/// after `restart_lsn` has an xid of at least `catalog_xmin`. So a table added to the
/// publication (or created in its scope) after the checkpoint is always in the answer; one
/// added a little before it may be too, which costs a read the host did not need, never a
/// missed one. Ages compare xids across wraparound; a frozen row more than 2^31 transactions
/// old may also answer, with the same harmless cost.
pub(crate) async fn joined_since_slot_horizon(
    client: &Client,
    publication: &str,
    slot: &str,
    oids: &[u32],
) -> Result<Vec<u32>, SourceError> {
    let schemas = client
        .query_one(
            "SELECT current_setting('server_version_num')::int >= 150000",
            &[],
        )
        .await
        .map_err(|e| sql_error(e, "reading the server version"))?
        .get::<_, bool>(0);
    // 15+ publishes whole schemas (`FOR TABLES IN SCHEMA`); the catalog exists there only.
    let (schema_join, schema_age) = if schemas {
        (
            "LEFT JOIN pg_catalog.pg_publication_namespace pn
                    ON pn.pnpubid = p.oid AND pn.pnnspid = c.relnamespace",
            "COALESCE(age(pn.xmin), 2147483647)",
        )
    } else {
        ("", "2147483647")
    };
    let sql = format!(
        "SELECT c.oid
           FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_type t ON t.oid = c.reltype
           JOIN pg_catalog.pg_replication_slots s ON s.slot_name = $2
           LEFT JOIN pg_catalog.pg_publication p ON p.pubname = $1
           LEFT JOIN pg_catalog.pg_publication_rel pr
                  ON pr.prpubid = p.oid AND pr.prrelid = c.oid
           {schema_join}
          WHERE c.oid = ANY($3)
            AND s.catalog_xmin IS NOT NULL
            AND LEAST(age(t.xmin), COALESCE(age(pr.xmin), 2147483647), {schema_age})
                <= age(s.catalog_xmin)"
    );
    let rows = client
        .query(&sql, &[&publication, &slot, &oids])
        .await
        .map_err(|e| sql_error(e, "reading which tables joined the publication lately"))?;
    Ok(rows.iter().map(|r| r.get::<_, u32>(0)).collect())
}

/// Lists the tables of `publication`, restricted to `selection` when it is not empty, with
/// their published columns (the column list on 15+; generated columns only where the server
/// publishes them: 18+ per `publish_generated_columns`), row identity and row filter.
pub(crate) async fn published_tables(
    client: &Client,
    registry: &mut TypeRegistry,
    publication: &str,
    selection: &[TableName],
) -> Result<Vec<PublishedTable>, SourceError> {
    let tables: Vec<PublicationRow> = publication_rows(client, publication, None)
        .await?
        .into_iter()
        .filter(|t| selection.is_empty() || selection.contains(&t.name))
        .collect();
    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    let mut columns = table_columns(client, &oids).await?;
    for t in &tables {
        if let Some(cols) = columns.get_mut(&t.oid) {
            cols.retain(|c| {
                let listed = t
                    .attnames
                    .as_ref()
                    .is_none_or(|names| names.contains(&c.name));
                listed && (!c.generated || (t.generated_published && t.attnames.is_some()))
            });
        }
    }
    let keys = identity_columns(client, &oids).await?;
    let mut type_oids: Vec<u32> = columns.values().flatten().map(|c| c.type_oid).collect();
    type_oids.sort_unstable();
    type_oids.dedup();
    registry
        .load(client, &type_oids)
        .await
        .map_err(|e| sql_error(e, "loading column types"))?;

    let mut out = Vec::with_capacity(tables.len());
    for PublicationRow {
        oid,
        name,
        replident,
        reltuples,
        publishing,
        ..
    } in tables
    {
        let cols = columns.get(&oid).cloned().unwrap_or_default();
        let ident = keys.get(&oid);
        let replident = replident.bytes().next().unwrap_or(b'd');
        let (identity, key_names) = row_identity(replident, ident);
        let column_types = cols
            .iter()
            .map(|c| ColumnType::new(c.type_oid, c.typmod))
            .collect();
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
            publishing,
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
    pub generated: bool,
}

async fn table_columns(
    client: &Client,
    oids: &[u32],
) -> Result<HashMap<u32, Vec<CatalogColumn>>, SourceError> {
    let rows = client
        .query(
            "SELECT a.attrelid, a.attname::text, a.atttypid, a.atttypmod, a.attnotnull,
                    COALESCE(to_jsonb(a) ->> 'attgenerated', '') <> ''
             FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
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
            generated: row.get(5),
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
