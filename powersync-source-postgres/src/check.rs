//! Prerequisite diagnostics: everything that must hold before replication can work, each
//! problem reported with the statement or setting that fixes it.

use powersync_source_core::{CheckReport, SourceError, TableName};
use tokio_postgres::Client;

use crate::catalog::{qualified, quote_ident};
use crate::sql_error;

/// Oldest supported server: pgoutput and publications exist from 10, but 11 is the oldest
/// release with truncate in pgoutput.
const MIN_VERSION_NUM: i32 = 110_000;

pub(crate) async fn check(
    client: &Client,
    publication: &str,
    slot: &str,
    selection: &[TableName],
) -> Result<CheckReport, SourceError> {
    let mut report = CheckReport::default();
    let settings = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int,
                    current_setting('wal_level'), current_setting('max_replication_slots')::int,
                    current_setting('max_wal_senders')::int,
                    (SELECT count(*)::int FROM pg_catalog.pg_replication_slots),
                    (SELECT count(*)::int FROM pg_catalog.pg_stat_replication),
                    EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1),
                    current_user::text",
            &[&slot],
        )
        .await
        .map_err(|e| sql_error(e, "reading server settings"))?;
    let version: String = settings.get(0);
    let version_num: i32 = settings.get(1);
    let wal_level: String = settings.get(2);
    let max_slots: i32 = settings.get(3);
    let max_senders: i32 = settings.get(4);
    let used_slots: i32 = settings.get(5);
    let used_senders: i32 = settings.get(6);
    let slot_exists: bool = settings.get(7);
    let user: String = settings.get(8);
    report.server_version = Some(format!("PostgreSQL {version}"));

    if version_num < MIN_VERSION_NUM {
        report.error(
            "server_version",
            format!("PostgreSQL {version} is too old; logical replication needs 11 or newer"),
            "upgrade the server to PostgreSQL 11 or newer",
        );
    }
    if wal_level != "logical" {
        report.error(
            "wal_level",
            format!("wal_level is `{wal_level}`, logical decoding needs `logical`"),
            "run `ALTER SYSTEM SET wal_level = logical;` (or set it in postgresql.conf / the provider's parameter group) and restart the server: the setting only takes effect after a restart",
        );
    }
    if !slot_exists && used_slots >= max_slots {
        report.error(
            "max_replication_slots",
            format!("all {max_slots} replication slots are in use, none is free for `{slot}`"),
            "drop unused slots with `SELECT pg_drop_replication_slot('name');` or raise max_replication_slots (restart needed)",
        );
    }
    if used_senders >= max_senders {
        report.error(
            "max_wal_senders",
            format!("all {max_senders} WAL senders are in use"),
            "raise max_wal_senders (restart needed) or stop other replication clients",
        );
    }

    let role = client
        .query_one(
            "SELECT r.rolreplication, r.rolsuper, r.rolbypassrls,
                    EXISTS (SELECT 1 FROM pg_catalog.pg_roles m
                            WHERE m.rolname IN ('rds_replication', 'azure_pg_admin', 'cloudsqlsuperuser', 'supabase_admin')
                              AND pg_catalog.pg_has_role(r.oid, m.oid, 'member'))
             FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| sql_error(e, "reading the user's rights"))?;
    let (replication, superuser, bypass_rls, managed): (bool, bool, bool, bool) =
        (role.get(0), role.get(1), role.get(2), role.get(3));
    if !replication && !superuser && !managed {
        report.error(
            "REPLICATION",
            format!("user `{user}` has no REPLICATION right"),
            format!(
                "run `ALTER ROLE {} WITH REPLICATION;` as a superuser (AWS RDS: `GRANT rds_replication TO {};`)",
                quote_ident(&user),
                quote_ident(&user)
            ),
        );
    }

    let publication_row = client
        .query_opt(
            "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate
             FROM pg_catalog.pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(|e| sql_error(e, "reading publications"))?;
    let Some(publication_row) = publication_row else {
        report.error(
            format!("publication {publication}"),
            format!("publication `{publication}` does not exist"),
            format!(
                "run `CREATE PUBLICATION {} FOR ALL TABLES;` (or `FOR TABLE a, b` for a subset)",
                quote_ident(publication)
            ),
        );
        return Ok(report);
    };
    let missing_ops: Vec<&str> = [("insert", 1), ("update", 2), ("delete", 3), ("truncate", 4)]
        .into_iter()
        .filter(|(_, i)| !publication_row.get::<_, bool>(*i))
        .map(|(op, _)| op)
        .collect();
    if !missing_ops.is_empty() {
        report.error(
            format!("publication {publication}"),
            format!(
                "publication `{publication}` does not publish {}",
                missing_ops.join(", ")
            ),
            format!(
                "run `ALTER PUBLICATION {} SET (publish = 'insert, update, delete, truncate');`",
                quote_ident(publication)
            ),
        );
    }

    let tables = client
        .query(
            "SELECT pt.schemaname::text, pt.tablename::text, c.relreplident::text,
                    EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
                    pg_catalog.has_table_privilege(c.oid, 'SELECT'),
                    c.relrowsecurity,
                    pg_catalog.pg_has_role(c.relowner, 'USAGE')
             FROM pg_catalog.pg_publication_tables pt
             JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
             WHERE pt.pubname = $1 ORDER BY 1, 2",
            &[&publication],
        )
        .await
        .map_err(|e| sql_error(e, "reading published tables"))?;
    let mut published = Vec::new();
    for t in &tables {
        let name = TableName::new(t.get::<_, String>(0), t.get::<_, String>(1));
        published.push(name.clone());
        if !selection.is_empty() && !selection.contains(&name) {
            continue;
        }
        let q = qualified(&name);
        let replident: String = t.get(2);
        let has_pk: bool = t.get(3);
        if replident == "n" || (replident == "d" && !has_pk) {
            report.error(
                format!("table {name}"),
                format!("table {name} has no primary key or replica identity: updates and deletes cannot be keyed (and the server rejects them while the table is published)"),
                format!("add a primary key, or run `ALTER TABLE {q} REPLICA IDENTITY FULL;`"),
            );
        }
        if !t.get::<_, bool>(4) {
            report.error(
                format!("table {name}"),
                format!("user `{user}` cannot SELECT from {name}, so it cannot be snapshotted"),
                format!("run `GRANT SELECT ON {q} TO {};`", quote_ident(&user)),
            );
        }
        let rls: bool = t.get(5);
        let owner: bool = t.get(6);
        if rls && !superuser && !bypass_rls && !owner {
            report.error(
                format!("table {name}"),
                format!("row-level security is enabled on {name}: policies would hide rows from user `{user}` during the snapshot"),
                format!("run `ALTER ROLE {} BYPASSRLS;` or use the table owner", quote_ident(&user)),
            );
        }
    }
    for wanted in selection {
        if !published.contains(wanted) {
            report.error(
                format!("publication {publication}"),
                format!("selected table {wanted} is not in publication `{publication}`"),
                format!(
                    "run `ALTER PUBLICATION {} ADD TABLE {};` (check the table exists)",
                    quote_ident(publication),
                    qualified(wanted)
                ),
            );
        }
    }
    if tables.is_empty() && selection.is_empty() {
        report.warning(
            format!("publication {publication}"),
            format!("publication `{publication}` publishes no tables"),
            format!(
                "run `ALTER PUBLICATION {} ADD TABLE …;`",
                quote_ident(publication)
            ),
        );
    }
    Ok(report)
}
