//! Prerequisite diagnostics: every problem at once, each with its fix.

use std::collections::HashMap;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use powersync_source_core::{CheckReport, SourceError, TableName};

use crate::catalog;
use crate::connection::sql_error;
use crate::server::{Flavour, ServerInfo};

/// Checks the server settings, the user's rights and the selected tables.
pub(crate) async fn check(
    conn: &mut Conn,
    info: &ServerInfo,
    database: &str,
    tables: &[TableName],
    checkpoint_table: &(String, String),
) -> Result<CheckReport, SourceError> {
    let mut report = CheckReport {
        server_version: Some(info.version.clone()),
        problems: Vec::new(),
    };
    let rows: Vec<(String, String)> = conn
        .query(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', \
             'binlog_row_image', 'server_id', 'gtid_mode', 'enforce_gtid_consistency', \
             'binlog_row_metadata', 'binlog_expire_logs_seconds', 'expire_logs_days', \
             'binlog_transaction_compression', 'binlog_row_value_options', 'encrypt_binlog')",
        )
        .await
        .map_err(|e| sql_error(e, "reading server variables"))?;
    let vars: HashMap<String, String> = rows
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_ascii_uppercase()))
        .collect();
    let var = |k: &str| vars.get(k).map(String::as_str).unwrap_or("");
    let restart = "(my.cnf [mysqld], needs a restart)";
    if var("log_bin") != "ON" && var("log_bin") != "1" {
        report.error(
            "log_bin",
            format!("the binary log is off (log_bin={})", var("log_bin")),
            format!("set log_bin=ON (e.g. log_bin=mysql-bin) {restart}"),
        );
    }
    if var("binlog_format") != "ROW" {
        report.error(
            "binlog_format",
            format!("binlog_format is {}, row events are needed", var("binlog_format")),
            "SET GLOBAL binlog_format = 'ROW' and in my.cnf binlog_format=ROW (sessions started before keep the old format)",
        );
    }
    if !var("binlog_row_image").is_empty() && var("binlog_row_image") != "FULL" {
        report.error(
            "binlog_row_image",
            format!(
                "binlog_row_image is {}, full before/after images are needed",
                var("binlog_row_image")
            ),
            "SET GLOBAL binlog_row_image = 'FULL' and in my.cnf binlog_row_image=FULL",
        );
    }
    if var("server_id") == "0" {
        report.error(
            "server_id",
            "server_id is 0: the server refuses replication clients",
            format!("set server_id to a unique non-zero value {restart}"),
        );
    }
    if info.flavour == Flavour::MySql {
        if var("gtid_mode") != "ON" {
            report.error(
                "gtid_mode",
                format!(
                    "gtid_mode is {} (GTIDs make resumes survive failovers)",
                    var("gtid_mode")
                ),
                format!("set gtid_mode=ON and enforce_gtid_consistency=ON {restart}"),
            );
        }
        if var("enforce_gtid_consistency") != "ON" {
            report.error(
                "enforce_gtid_consistency",
                format!(
                    "enforce_gtid_consistency is {}",
                    var("enforce_gtid_consistency")
                ),
                format!("set enforce_gtid_consistency=ON {restart}"),
            );
        }
        if var("binlog_row_value_options").contains("PARTIAL_JSON") {
            report.error(
                "binlog_row_value_options",
                "partial JSON updates are logged as diffs, not whole documents",
                "SET GLOBAL binlog_row_value_options = ''",
            );
        }
    }
    if var("encrypt_binlog") == "ON" {
        report.error(
            "encrypt_binlog",
            "the binlog is encrypted; replication clients cannot read it",
            format!("set encrypt_binlog=OFF {restart}"),
        );
    }
    match var("binlog_row_metadata") {
        "FULL" => {}
        "" => {}
        other => report.warning(
            "binlog_row_metadata",
            format!("binlog_row_metadata is {other}: row events carry no column names or signedness (the connector reads them from information_schema, which can be wrong right after an ALTER)"),
            "SET GLOBAL binlog_row_metadata = 'FULL'",
        ),
    }
    let expire_secs: u64 = var("binlog_expire_logs_seconds").parse().unwrap_or(0);
    let expire_days: f64 = var("expire_logs_days").parse().unwrap_or(0.0);
    let expire = if expire_secs > 0 {
        expire_secs as f64
    } else {
        expire_days * 86_400.0
    };
    if expire > 0.0 && expire < 86_400.0 {
        report.warning(
            "binlog_expire_logs_seconds",
            format!("binlogs are purged after {expire} s: a stream stopped longer than that must resnapshot"),
            "SET GLOBAL binlog_expire_logs_seconds = 604800 (7 days) or more",
        );
    }

    // Rights.
    let grants: Vec<String> = conn
        .query("SHOW GRANTS")
        .await
        .map_err(|e| sql_error(e, "reading the user's grants"))?;
    let upper: Vec<String> = grants
        .iter()
        .map(|g| g.to_ascii_uppercase().replace('`', ""))
        .collect();
    let global: Vec<&String> = upper.iter().filter(|g| g.contains(" ON *.* ")).collect();
    let has_global = |p: &str| {
        global
            .iter()
            .any(|g| g.contains("ALL PRIVILEGES") || g.contains(p))
    };
    if !has_global("REPLICATION SLAVE") {
        report.error(
            "REPLICATION SLAVE",
            "the user lacks REPLICATION SLAVE (needed to read the binlog)",
            "GRANT REPLICATION SLAVE ON *.* TO the user",
        );
    }
    let monitor = if info.flavour == Flavour::MariaDb && info.numbers >= (10, 5, 2) {
        "BINLOG MONITOR"
    } else {
        "REPLICATION CLIENT"
    };
    if !has_global(monitor) && !has_global("REPLICATION CLIENT") && !has_global("SUPER") {
        report.error(
            monitor,
            format!("the user lacks {monitor} (needed for SHOW MASTER STATUS / SHOW BINARY LOGS)"),
            format!("GRANT {monitor} ON *.* TO the user"),
        );
    }
    let db_upper = database.to_ascii_uppercase();
    let has_select = has_global("SELECT")
        || upper.iter().any(|g| {
            (g.contains(&format!(" ON {db_upper}.* ")) || g.contains(&format!(" ON {db_upper}.")))
                && (g.contains("SELECT") || g.contains("ALL PRIVILEGES"))
        });
    if !has_select {
        report.error(
            "SELECT",
            format!("the user cannot SELECT from database `{database}` (needed for the snapshot)"),
            format!("GRANT SELECT ON `{database}`.* TO the user"),
        );
    }
    if info.flavour == Flavour::MySql && !has_global("RELOAD") {
        report.warning(
            "RELOAD",
            "the user lacks RELOAD: the exact snapshot start (FLUSH TABLES WITH READ LOCK) needs it",
            "GRANT RELOAD ON *.* TO the user",
        );
    }

    // Binlog filters hiding selected databases.
    let status: Option<Row> = conn
        .query_first(info.master_status_sql())
        .await
        .unwrap_or(None);
    if let Some(row) = status {
        let do_db: String = row
            .get::<Option<String>, _>(2)
            .flatten()
            .unwrap_or_default();
        let ignore_db: String = row
            .get::<Option<String>, _>(3)
            .flatten()
            .unwrap_or_default();
        let mut dbs: Vec<String> = tables
            .iter()
            .map(|t| {
                if t.schema.is_empty() {
                    database.to_owned()
                } else {
                    t.schema.clone()
                }
            })
            .collect();
        if dbs.is_empty() {
            dbs.push(database.to_owned());
        }
        dbs.push(checkpoint_table.0.clone());
        dbs.sort();
        dbs.dedup();
        for db in dbs.iter().filter(|d| !d.is_empty()) {
            let listed = |list: &str| list.split(',').any(|x| x.trim() == db);
            if !do_db.is_empty() && !listed(&do_db) {
                report.error(
                    "binlog-do-db",
                    format!(
                        "binlog-do-db={do_db} does not include `{db}`: its changes are not logged"
                    ),
                    format!("add binlog-do-db={db} or remove binlog-do-db (my.cnf, restart)"),
                );
            }
            if listed(&ignore_db) {
                report.error(
                    "binlog-ignore-db",
                    format!("binlog-ignore-db includes `{db}`: its changes are not logged"),
                    format!("remove `{db}` from binlog-ignore-db (my.cnf, restart)"),
                );
            }
        }
    }

    // Tables.
    match catalog::selected_tables(conn, database, tables, checkpoint_table).await {
        Ok(found) => {
            for t in found.iter().filter(|t| t.key.is_empty()) {
                report.warning(
                    format!("table {}", t.name()),
                    format!("{} has no primary key: its snapshot is read in one pass and its row changes have no key", t.name()),
                    format!("ALTER TABLE {} ADD PRIMARY KEY (…)", t.name()),
                );
            }
        }
        Err(e) if e.kind() == powersync_source_core::ErrorKind::Schema => {
            report.error(
                "tables",
                e.message().to_owned(),
                "create the table or fix the table list",
            );
        }
        Err(e) => return Err(e),
    }
    Ok(report)
}
