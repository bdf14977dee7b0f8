//! Prerequisite diagnostics: everything that must hold before replication can work, each
//! problem reported with the statement or setting that fixes it (its structured
//! [`Fix`] is what `setup --apply` runs).
//!
//! The rules shared with the `provision` planner live here, once: the oldest supported
//! version, what counts as a keyless table, the operations a publication must publish, and
//! how names are quoted in the statements both print.

use postgres_protocol::escape::escape_identifier;
use powersync_source_core::backfill::SIGNAL_TABLE;
use powersync_source_core::provision::Fix;
use powersync_source_core::{CheckReport, Problem, SourceError, TableName};
use tokio_postgres::Client;

use crate::sql_error;

/// Oldest supported server: pgoutput and publications exist from 10, but 11 is the oldest
/// release with truncate in pgoutput.
pub(crate) const MIN_VERSION_NUM: i32 = 110_000;

/// The `publish` option a publication needs: every operation, or changes are lost.
pub(crate) const PUBLISH_ALL: &str = "insert, update, delete, truncate";

/// `name` as an SQL identifier in a printed statement: bare when PostgreSQL reads it back
/// unchanged (as its own `quote_ident()` does), else quoted by `postgres_protocol`.
pub(crate) fn ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !RESERVED.contains(&name);
    if plain {
        name.to_string()
    } else {
        escape_identifier(name)
    }
}

/// `schema.name`, each part quoted as needed.
pub(crate) fn qualified(t: &TableName) -> String {
    format!("{}.{}", ident(&t.schema), ident(&t.name))
}

/// PostgreSQL's reserved key words (and those a role or column name cannot be unquoted).
#[rustfmt::skip]
const RESERVED: &[&str] = &[
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "authorization",
    "binary", "both", "case", "cast", "check", "collate", "collation", "column", "concurrently",
    "constraint", "create", "cross", "current_catalog", "current_date", "current_role",
    "current_schema", "current_time", "current_timestamp", "current_user", "default", "deferrable",
    "desc", "distinct", "do", "else", "end", "except", "false", "fetch", "for", "foreign", "freeze",
    "from", "full", "grant", "group", "having", "ilike", "in", "initially", "inner", "intersect",
    "into", "is", "isnull", "join", "lateral", "leading", "left", "like", "limit", "localtime",
    "localtimestamp", "natural", "not", "notnull", "null", "offset", "on", "only", "or", "order",
    "outer", "overlaps", "placing", "primary", "references", "returning", "right", "select",
    "session_user", "similar", "some", "symmetric", "system_user", "table", "tablesample", "then",
    "to", "trailing", "true", "union", "unique", "user", "using", "variadic", "verbose", "when",
    "where", "window", "with",
];

/// Whether a table's updates and deletes cannot be keyed: replica identity `nothing`, or
/// `default` without a primary key (`relreplident` is `d`, `n`, `f` or `i`).
pub(crate) fn lacks_row_identity(replident: char, has_pk: bool) -> bool {
    replident == 'n' || (replident == 'd' && !has_pk)
}

/// The fix for a keyless table.
pub(crate) fn replica_identity_full(table: &TableName) -> Fix {
    Fix::Sql(format!(
        "ALTER TABLE {} REPLICA IDENTITY FULL",
        qualified(table)
    ))
}

/// The fix for a publication that leaves operations out.
pub(crate) fn publish_everything(publication: &str) -> Fix {
    Fix::Sql(format!(
        "ALTER PUBLICATION {} SET (publish = '{PUBLISH_ALL}')",
        ident(publication)
    ))
}

/// The fix for tables missing from a publication.
pub(crate) fn add_tables(publication: &str, tables: &[&TableName]) -> Fix {
    let names: Vec<String> = tables.iter().map(|t| qualified(t)).collect();
    Fix::Sql(format!(
        "ALTER PUBLICATION {} ADD TABLE {}",
        ident(publication),
        names.join(", ")
    ))
}

/// The fix for a missing publication: `FOR ALL TABLES`, or the selected tables.
pub(crate) fn create_publication(publication: &str, tables: &[&TableName]) -> Fix {
    let p = ident(publication);
    if tables.is_empty() {
        Fix::Sql(format!("CREATE PUBLICATION {p} FOR ALL TABLES"))
    } else {
        let names: Vec<String> = tables.iter().map(|t| qualified(t)).collect();
        Fix::Sql(format!(
            "CREATE PUBLICATION {p} FOR TABLE {}",
            names.join(", ")
        ))
    }
}

/// The signal table through which backfills are requested (see [`crate::backfill`]).
pub(crate) fn signal_table() -> TableName {
    TableName::new("public", SIGNAL_TABLE)
}

/// The statement that creates the signal table.
pub(crate) fn create_signal_table() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, kind text NOT NULL, tables text NOT NULL)",
        qualified(&signal_table())
    )
}

/// The `setting` of the signal table's warnings (the provisioning plan has its own steps).
pub(crate) const SIGNAL_SETTING: &str = "signal table";

/// Why a server is too old, when it is.
pub(crate) fn too_old(version: &str, version_num: i32) -> Option<(String, Fix)> {
    (version_num < MIN_VERSION_NUM).then(|| {
        (
            format!(
                "PostgreSQL {version} is too old: logical replication with pgoutput needs 11 or newer"
            ),
            Fix::restart("upgrade the server to PostgreSQL 11 or newer (a supported major version)"),
        )
    })
}

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

    if let Some((what, remedy)) = too_old(&version, version_num) {
        report.push(
            Problem::error(
                "server_version",
                what,
                "upgrade the server to PostgreSQL 11 or newer",
            )
            .with_remedy(remedy),
        );
    }
    if wal_level != "logical" {
        let fix = "run `ALTER SYSTEM SET wal_level = logical;` (or set it in postgresql.conf / the provider's parameter group) and restart the server: the setting only takes effect after a restart";
        report.push(
            Problem::error(
                "wal_level",
                format!("wal_level is `{wal_level}`: logical decoding needs `logical`"),
                fix,
            )
            .with_remedy(Fix::restart(fix)),
        );
    }
    if !slot_exists && used_slots >= max_slots {
        let fix = "drop unused slots with `SELECT pg_drop_replication_slot('name');` or raise max_replication_slots (restart needed)";
        report.push(
            Problem::error(
                "max_replication_slots",
                format!("all {max_slots} replication slots are in use, none is free for `{slot}`"),
                fix,
            )
            .with_remedy(Fix::restart(fix)),
        );
    }
    if used_senders >= max_senders {
        let fix = "raise max_wal_senders (restart needed) or stop other replication clients";
        report.push(
            Problem::error(
                "max_wal_senders",
                format!("all {max_senders} WAL senders are in use"),
                fix,
            )
            .with_remedy(Fix::restart(fix)),
        );
    }

    retention_warnings(client, slot, version_num, &mut report).await?;

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
    let u = ident(&user);
    if !replication && !superuser && !managed {
        report.push(
            Problem::error(
                "REPLICATION",
                format!("user `{user}` has no REPLICATION right"),
                format!(
                    "run `ALTER ROLE {u} WITH REPLICATION;` as a superuser (AWS RDS: `GRANT rds_replication TO {u};`)"
                ),
            )
            .with_remedy(Fix::Sql(format!("ALTER ROLE {u} WITH REPLICATION"))),
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
    let p = ident(publication);
    let Some(publication_row) = publication_row else {
        let selected: Vec<&TableName> = selection.iter().collect();
        report.push(
            Problem::error(
                format!("publication {publication}"),
                format!("publication `{publication}` does not exist"),
                format!(
                    "run `CREATE PUBLICATION {p} FOR ALL TABLES;` (or `FOR TABLE a, b` for a subset)"
                ),
            )
            .with_remedy(create_publication(publication, &selected)),
        );
        return Ok(report);
    };
    let missing_ops: Vec<&str> = [("insert", 1), ("update", 2), ("delete", 3), ("truncate", 4)]
        .into_iter()
        .filter(|(_, i)| !publication_row.get::<_, bool>(*i))
        .map(|(op, _)| op)
        .collect();
    if !missing_ops.is_empty() {
        let remedy = publish_everything(publication);
        report.push(
            Problem::error(
                format!("publication {publication}"),
                format!(
                    "publication `{publication}` does not publish {}",
                    missing_ops.join(", ")
                ),
                format!("run `{remedy}`"),
            )
            .with_remedy(remedy),
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
        if lacks_row_identity(replident.chars().next().unwrap_or('d'), has_pk) {
            let remedy = replica_identity_full(&name);
            report.push(
                Problem::error(
                    format!("table {name}"),
                    format!("table {name} has no primary key or replica identity: updates and deletes cannot be keyed (and the server rejects them while the table is published)"),
                    format!("add a primary key, or run `{remedy}`"),
                )
                .with_remedy(remedy),
            );
        }
        if !t.get::<_, bool>(4) {
            let grant = format!("GRANT SELECT ON {q} TO {u}");
            report.push(
                Problem::error(
                    format!("table {name}"),
                    format!("user `{user}` cannot SELECT from {name}, so it cannot be snapshotted"),
                    format!("run `{grant};`"),
                )
                .with_remedy(Fix::Sql(grant)),
            );
        }
        let rls: bool = t.get(5);
        let owner: bool = t.get(6);
        if rls && !superuser && !bypass_rls && !owner {
            report.push(
                Problem::error(
                    format!("table {name}"),
                    format!("row-level security is enabled on {name}: policies would hide rows from user `{user}` during the snapshot"),
                    format!("run `ALTER ROLE {u} BYPASSRLS;` or use the table owner"),
                )
                .with_remedy(Fix::Sql(format!("ALTER ROLE {u} BYPASSRLS"))),
            );
        }
    }
    signal_table_warnings(client, publication, &u, &published, &mut report).await?;
    for wanted in selection {
        if !published.contains(wanted) {
            let remedy = add_tables(publication, &[wanted]);
            report.push(
                Problem::error(
                    format!("publication {publication}"),
                    format!("selected table {wanted} is not in publication `{publication}`"),
                    format!("run `{remedy}` (check the table exists)"),
                )
                .with_remedy(remedy),
            );
        }
    }
    if tables.is_empty() && selection.is_empty() {
        report.warning(
            format!("publication {publication}"),
            format!("publication `{publication}` publishes no tables"),
            format!("run `ALTER PUBLICATION {p} ADD TABLE …;`"),
        );
    }
    Ok(report)
}

/// Warnings when backfills cannot be requested through the signal table: it is missing, not
/// published, or the user cannot insert into it. Warnings only: streaming works without it
/// (a host's request is then kept in memory until a checkpoint carries it).
async fn signal_table_warnings(
    client: &Client,
    publication: &str,
    user: &str,
    published: &[TableName],
    report: &mut CheckReport,
) -> Result<(), SourceError> {
    let table = signal_table();
    let q = qualified(&table);
    let row = client
        .query_one(
            "SELECT c.oid IS NOT NULL,
                    c.oid IS NOT NULL AND pg_catalog.has_table_privilege(c.oid, 'INSERT')
             FROM (SELECT pg_catalog.to_regclass($1) AS oid) c",
            &[&q],
        )
        .await
        .map_err(|e| sql_error(e, "looking for the signal table"))?;
    let (exists, insertable): (bool, bool) = (row.get(0), row.get(1));
    let why = "backfills are requested through rows inserted into it";
    if !exists {
        let mut statements = vec![create_signal_table()];
        if let Fix::Sql(add) = add_tables(publication, &[&table]) {
            statements.push(add);
        }
        // A FOR ALL TABLES publication already holds it once it exists.
        let all_tables: bool = client
            .query_one(
                "SELECT COALESCE((SELECT puballtables FROM pg_catalog.pg_publication WHERE pubname = $1), false)",
                &[&publication],
            )
            .await
            .map_err(|e| sql_error(e, "reading the publication"))?
            .get(0);
        if all_tables {
            statements.truncate(1);
        }
        let fix = statements.join("; ");
        report.push(
            Problem::warning(
                SIGNAL_SETTING,
                format!("the signal table {q} does not exist ({why})"),
                format!("run `{fix};` (`setup --apply` does)"),
            )
            .with_remedy(Fix::Sql(fix)),
        );
    } else if !published.contains(&table) {
        let remedy = add_tables(publication, &[&table]);
        report.push(
            Problem::warning(
                SIGNAL_SETTING,
                format!("the signal table {q} is not in publication `{publication}` ({why})"),
                format!("run `{remedy}`"),
            )
            .with_remedy(remedy),
        );
    } else if !insertable {
        report.warning(
            SIGNAL_SETTING,
            format!("user `{user}` cannot insert into the signal table {q}: a host's backfill request is then kept in memory only"),
            format!("run `GRANT SELECT, INSERT ON {q} TO {user};`"),
        );
    }
    Ok(())
}

/// Warnings about WAL the server keeps for slots: unbounded retention (a stalled stream
/// fills the source's disk) and other inactive slots holding WAL.
async fn retention_warnings(
    client: &Client,
    slot: &str,
    version_num: i32,
    report: &mut CheckReport,
) -> Result<(), SourceError> {
    // max_slot_wal_keep_size exists from 13 on; before, retention is always unbounded.
    if version_num >= 130_000 {
        let keep: i64 = client
            .query_one(
                "SELECT setting::bigint FROM pg_catalog.pg_settings
                 WHERE name = 'max_slot_wal_keep_size'",
                &[],
            )
            .await
            .map_err(|e| sql_error(e, "reading max_slot_wal_keep_size"))?
            .get(0);
        if keep < 0 {
            report.warning(
                "max_slot_wal_keep_size",
                "max_slot_wal_keep_size is -1: a replication slot keeps WAL without limit, so a stopped or slow stream fills the server's disk",
                "give max_slot_wal_keep_size a budget larger than the WAL written during the longest snapshot and outage to survive (postgresql.conf or the provider's parameters; a reload applies it); the stream reports its use as powersync_source_retained_bytes",
            );
        }
    }
    let others = client
        .query(
            "SELECT slot_name::text,
                    pg_catalog.pg_wal_lsn_diff(
                        CASE WHEN pg_catalog.pg_is_in_recovery()
                             THEN pg_catalog.pg_last_wal_receive_lsn()
                             ELSE pg_catalog.pg_current_wal_lsn() END,
                        restart_lsn)::bigint
             FROM pg_catalog.pg_replication_slots
             WHERE NOT active AND slot_name <> $1 AND restart_lsn IS NOT NULL
             ORDER BY 2 DESC NULLS LAST, 1",
            &[&slot],
        )
        .await
        .map_err(|e| sql_error(e, "reading other replication slots"))?;
    if !others.is_empty() {
        let list: Vec<String> = others
            .iter()
            .map(|r| {
                let name: String = r.get(0);
                match r.get::<_, Option<i64>>(1) {
                    Some(bytes) => format!("`{name}` ({} MB)", bytes.max(0) / (1024 * 1024)),
                    None => format!("`{name}`"),
                }
            })
            .collect();
        report.warning(
            "replication slots",
            format!(
                "inactive replication slots hold WAL on the server: {}",
                list.join(", ")
            ),
            "drop the slots no client uses any more with `SELECT pg_drop_replication_slot('name');`",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use powersync_source_core::provision::Fix;
    use powersync_source_core::{ChangeSource, TableName};
    use powersync_source_testkit::postgres::PostgresServer;
    use powersync_source_testkit::start_or_skip;

    use super::{ident, qualified};
    use crate::PostgresSource;

    #[test]
    fn names_are_quoted_only_when_needed() {
        assert_eq!(ident("powersync"), "powersync");
        assert_eq!(ident("Keyless"), "\"Keyless\"");
        assert_eq!(ident("select"), "\"select\"");
        assert_eq!(
            qualified(&TableName::new("my schema", "a\"b")),
            "\"my schema\".\"a\"\"b\""
        );
    }

    /// What `check()` reports is executable: running its SQL remedies, round after round (a
    /// table added to the publication can then show its own problem), makes the server
    /// ready, and each remedy is the statement the planner would print.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn running_the_remedies_makes_the_server_ready() {
        let server = start_or_skip!(PostgresServer::builder().start().await);
        server
            .psql(
                "CREATE TABLE a (id int PRIMARY KEY);
                 CREATE TABLE \"Keyless\" (x int);
                 CREATE PUBLICATION powersync FOR TABLE a WITH (publish = 'insert');",
            )
            .await
            .expect("schema");
        let source = PostgresSource::from_url(&server.url())
            .expect("url")
            .with_tables(vec![
                TableName::new("public", "a"),
                TableName::new("public", "Keyless"),
            ]);
        let client = crate::connect_sql(source.config()).await.expect("connect");
        let mut ran = Vec::new();
        for _round in 0..3 {
            let report = source.check().await.expect("check");
            if report.is_ready() {
                break;
            }
            for problem in report.errors() {
                let Fix::Sql(statement) = &problem.remedy else {
                    panic!("not an SQL remedy: {problem:?}");
                };
                client.batch_execute(statement).await.expect("remedy runs");
                ran.push(statement.clone());
            }
        }
        assert!(source.check().await.expect("check").is_ready(), "{ran:?}");
        assert_eq!(
            ran,
            vec![
                "ALTER PUBLICATION powersync SET (publish = 'insert, update, delete, truncate')",
                "ALTER PUBLICATION powersync ADD TABLE public.\"Keyless\"",
                "ALTER TABLE public.\"Keyless\" REPLICA IDENTITY FULL",
            ]
        );
    }
}
