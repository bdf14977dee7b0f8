//! Prerequisite diagnostics: every problem at once, each with its fix (the structured
//! [`Fix`] is what `setup --apply` runs).
//!
//! The rules the `provision` planner shares with it live here, once: how grants are read
//! ([`Grants`]), which right reads the binlog coordinates ([`monitor_right`]), how a binlog
//! setting is changed at run time ([`set_global`]) and the checkpoint table's columns (the
//! signal table's are in [`crate::markers`]).

use std::collections::HashMap;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use powersync_source_core::provision::Fix;
use powersync_source_core::{CheckReport, Problem, SourceError, TableName};

use crate::catalog::{self, Scope};
use crate::connection::{ident, sql_error};
use crate::markers::{self, SIGNAL_COLUMNS};
use crate::server::{Flavour, ServerInfo};

/// The checkpoint table's columns, as `write_checkpoint` and `setup` create it.
pub(crate) const CHECKPOINT_COLUMNS: &str =
    "(id INT PRIMARY KEY, checkpoint VARCHAR(512) NOT NULL, \
     written_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB";

/// The right that lets a user read the binlog coordinates (`SHOW MASTER STATUS`): MariaDB
/// 10.5.2 split `BINLOG MONITOR` out of `REPLICATION CLIENT`.
pub(crate) fn monitor_right(flavour: Flavour, numbers: (u32, u32, u32)) -> &'static str {
    if flavour == Flavour::MariaDb && numbers >= (10, 5, 2) {
        "BINLOG MONITOR"
    } else {
        "REPLICATION CLIENT"
    }
}

/// Changes a dynamic binlog setting now; MySQL's `SET PERSIST` also writes
/// `mysqld-auto.cnf`, so the value survives a restart (MariaDB has no such statement).
pub(crate) fn set_global(flavour: Flavour, name: &str, value: &str) -> String {
    match flavour {
        Flavour::MySql => format!("SET PERSIST {name} = '{value}'"),
        Flavour::MariaDb => format!("SET GLOBAL {name} = '{value}'"),
    }
}

/// A user's grants (`SHOW GRANTS` lines), matched exactly: `REPLICATION SLAVE ADMIN` is not
/// `REPLICATION SLAVE`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Grants {
    parsed: Vec<(Vec<String>, String)>,
    /// Some lines grant roles, whose rights `SHOW GRANTS` does not expand.
    pub via_roles: bool,
}

impl Grants {
    pub fn parse(lines: &[String]) -> Grants {
        let parsed: Vec<_> = lines.iter().filter_map(|g| parse_grant(g)).collect();
        Grants {
            via_roles: lines.len() > parsed.len(),
            parsed,
        }
    }

    fn holds(privs: &[String], p: &str) -> bool {
        privs
            .iter()
            .any(|x| x == p || x == "ALL PRIVILEGES" || x == "ALL")
    }

    /// Holds `right` on `*.*`.
    pub fn global(&self, right: &str) -> bool {
        self.parsed
            .iter()
            .any(|(privs, on)| on == "*.*" && Self::holds(privs, right))
    }

    /// Holds `right` on every table of `database`.
    pub fn on_database(&self, right: &str, database: &str) -> bool {
        let db = format!("{}.*", database.to_ascii_uppercase());
        self.global(right)
            || self
                .parsed
                .iter()
                .any(|(privs, on)| *on == db && Self::holds(privs, right))
    }

    /// Holds `right` on some table of `database` (or all of them).
    pub fn in_database(&self, right: &str, database: &str) -> bool {
        let db = database.to_ascii_uppercase();
        self.global(right)
            || self.parsed.iter().any(|(privs, on)| {
                on.split_once('.').is_some_and(|(d, _)| d == db) && Self::holds(privs, right)
            })
    }

    /// Holds `right` on `database.table`.
    pub fn on_table(&self, right: &str, database: &str, table: &str) -> bool {
        let t = format!(
            "{}.{}",
            database.to_ascii_uppercase(),
            table.to_ascii_uppercase()
        );
        self.on_database(right, database)
            || self
                .parsed
                .iter()
                .any(|(privs, on)| *on == t && Self::holds(privs, right))
    }
}

/// Checks the server settings, the user's rights and the selected tables.
pub(crate) async fn check(
    conn: &mut Conn,
    info: &ServerInfo,
    scope: &Scope,
    tables: &[TableName],
    checkpoint_table: &(String, String),
) -> Result<CheckReport, SourceError> {
    // Every schema the source reads: SELECT on each, and no binlog filter may hide one.
    let schemas = scope.schemas(tables);
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
        let fix = format!("set log_bin=ON (e.g. log_bin=mysql-bin) {restart}");
        report.push(
            Problem::error(
                "log_bin",
                format!("the binary log is off (log_bin={})", var("log_bin")),
                fix.clone(),
            )
            .with_remedy(Fix::restart(fix)),
        );
    }
    let restart_fix = |fix: String| Fix::restart(fix);
    if var("binlog_format") != "ROW" {
        report.push(
            Problem::error(
                "binlog_format",
                format!("binlog_format is {}, row events are needed", var("binlog_format")),
                "SET GLOBAL binlog_format = 'ROW' and in my.cnf binlog_format=ROW (sessions started before keep the old format)",
            )
            .with_remedy(Fix::SqlAlone(set_global(info.flavour, "binlog_format", "ROW"))),
        );
    }
    if !var("binlog_row_image").is_empty() && var("binlog_row_image") != "FULL" {
        report.push(
            Problem::error(
                "binlog_row_image",
                format!(
                    "binlog_row_image is {}, full before/after images are needed",
                    var("binlog_row_image")
                ),
                "SET GLOBAL binlog_row_image = 'FULL' and in my.cnf binlog_row_image=FULL",
            )
            .with_remedy(Fix::SqlAlone(set_global(
                info.flavour,
                "binlog_row_image",
                "FULL",
            ))),
        );
    }
    if var("server_id") == "0" {
        let fix = format!("set server_id to a unique non-zero value {restart}");
        report.push(
            Problem::error(
                "server_id",
                "server_id is 0: the server refuses replication clients",
                fix.clone(),
            )
            .with_remedy(restart_fix(fix)),
        );
    }
    if info.flavour == Flavour::MySql {
        if var("gtid_mode") != "ON" {
            let fix = format!("set gtid_mode=ON and enforce_gtid_consistency=ON {restart}");
            report.push(
                Problem::error(
                    "gtid_mode",
                    format!(
                        "gtid_mode is {} (GTIDs make resumes survive failovers)",
                        var("gtid_mode")
                    ),
                    fix.clone(),
                )
                .with_remedy(restart_fix(fix)),
            );
        }
        if var("enforce_gtid_consistency") != "ON" {
            let fix = format!("set enforce_gtid_consistency=ON {restart}");
            report.push(
                Problem::error(
                    "enforce_gtid_consistency",
                    format!(
                        "enforce_gtid_consistency is {}",
                        var("enforce_gtid_consistency")
                    ),
                    fix.clone(),
                )
                .with_remedy(restart_fix(fix)),
            );
        }
        if var("binlog_row_value_options").contains("PARTIAL_JSON") {
            report.push(
                Problem::error(
                    "binlog_row_value_options",
                    "partial JSON updates are logged as diffs, not whole documents",
                    "SET GLOBAL binlog_row_value_options = ''",
                )
                .with_remedy(Fix::SqlAlone(set_global(
                    info.flavour,
                    "binlog_row_value_options",
                    "",
                ))),
            );
        }
    }
    if var("encrypt_binlog") == "ON" {
        let fix = format!("set encrypt_binlog=OFF {restart}");
        report.push(
            Problem::error(
                "encrypt_binlog",
                "the binlog is encrypted; replication clients cannot read it",
                fix.clone(),
            )
            .with_remedy(restart_fix(fix)),
        );
    }
    match var("binlog_row_metadata") {
        "FULL" => {}
        "" => {}
        other => report.push(
            Problem::warning(
                "binlog_row_metadata",
                format!("binlog_row_metadata is {other}: row events carry no column names or signedness (the connector reads them from information_schema, which can be wrong right after an ALTER)"),
                "SET GLOBAL binlog_row_metadata = 'FULL'",
            )
            .with_remedy(Fix::SqlAlone(set_global(info.flavour, "binlog_row_metadata", "FULL"))),
        ),
    }
    let expire_secs: u64 = var("binlog_expire_logs_seconds").parse().unwrap_or(0);
    let expire_days: f64 = var("expire_logs_days").parse().unwrap_or(0.0);
    let expire = if expire_secs > 0 {
        expire_secs as f64
    } else {
        expire_days * 86_400.0
    };
    // 0 means never purged automatically; under a day, an outage over a night loses the
    // stream's history.
    if expire > 0.0 && expire < 86_400.0 {
        report.warning(
            "binlog_expire_logs_seconds",
            format!(
                "binlogs are purged after {:.1} hours (binlog_expire_logs_seconds / expire_logs_days): a stream stopped longer than that must start from scratch (snapshot)",
                expire / 3600.0
            ),
            "SET GLOBAL binlog_expire_logs_seconds = 604800 (7 days) or more, and the same in the server's configuration file",
        );
    }

    // Rights.
    let grants: Vec<String> = conn
        .query("SHOW GRANTS")
        .await
        .map_err(|e| sql_error(e, "reading the user's grants"))?;
    let grants = Grants::parse(&grants);
    let has_global = |p: &str| grants.global(p);
    // Privileges held through roles MySQL does not expand in SHOW GRANTS: a missing right
    // is then only a warning (the server will refuse clearly if it really is missing).
    let via_roles = grants.via_roles;
    let missing = |report: &mut CheckReport, setting: &str, what: String, fix: String| {
        if via_roles {
            report.warning(setting, format!("{what} (unless a role grants it)"), fix);
        } else {
            report.error(setting, what, fix);
        }
    };
    if !has_global("REPLICATION SLAVE") {
        missing(
            &mut report,
            "REPLICATION SLAVE",
            "the user lacks REPLICATION SLAVE (needed to read the binlog)".into(),
            "GRANT REPLICATION SLAVE ON *.* TO the user".into(),
        );
    }
    let monitor = monitor_right(info.flavour, info.numbers);
    if !has_global(monitor) && !has_global("REPLICATION CLIENT") && !has_global("SUPER") {
        missing(
            &mut report,
            monitor,
            format!("the user lacks {monitor} (needed for SHOW MASTER STATUS / SHOW BINARY LOGS)"),
            format!("GRANT {monitor} ON *.* TO the user"),
        );
    }
    for database in &schemas {
        if !grants.in_database("SELECT", database) {
            missing(
                &mut report,
                "SELECT",
                format!(
                    "the user cannot SELECT from database `{database}` (needed for the snapshot)"
                ),
                format!("GRANT SELECT ON `{database}`.* TO the user"),
            );
        }
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
        let mut dbs = schemas.clone();
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

    signal_table_warnings(conn, &grants, checkpoint_table, &mut report).await?;

    // Tables.
    match catalog::selected_tables(conn, scope, tables, checkpoint_table).await {
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

/// The `setting` of the signal table's warnings.
pub(crate) const SIGNAL_SETTING: &str = "signal table";

/// Warnings when backfills cannot be requested through the signal table (next to the
/// checkpoint table): it is missing, or the user cannot insert into it. Warnings only:
/// streaming works without it, and a host's request creates it when the user may (else the
/// request is kept in memory until a checkpoint carries it).
async fn signal_table_warnings(
    conn: &mut Conn,
    grants: &Grants,
    checkpoint_table: &(String, String),
    report: &mut CheckReport,
) -> Result<(), SourceError> {
    let (db, table) = markers::signal_table(checkpoint_table);
    if db.is_empty() {
        return Ok(());
    }
    let found: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (&db, &table),
        )
        .await
        .map_err(|e| sql_error(e, "looking for the signal table"))?;
    let q = format!("{}.{}", ident(&db), ident(&table));
    let why = "backfills are requested through rows inserted into it";
    if found.unwrap_or(0) == 0 {
        let fix = format!("CREATE TABLE IF NOT EXISTS {q} {SIGNAL_COLUMNS}");
        report.push(
            Problem::warning(
                SIGNAL_SETTING,
                format!("the signal table {q} does not exist ({why})"),
                format!("run `{fix};` (`setup --apply` does)"),
            )
            .with_remedy(Fix::Sql(fix)),
        );
    } else if !grants.via_roles && !grants.on_table("INSERT", &db, &table) {
        report.warning(
            SIGNAL_SETTING,
            format!("the user cannot insert into the signal table {q}: a host's backfill request is then kept in memory only"),
            format!("GRANT SELECT, INSERT ON {q} TO the user"),
        );
    }
    Ok(())
}

/// `GRANT a, b (cols), c ON db.tbl TO …` → (upper-case privileges, upper-case object without
/// quotes). Role grants (`GRANT role TO user`) and proxies give `None`.
fn parse_grant(line: &str) -> Option<(Vec<String>, String)> {
    let upper = line.to_ascii_uppercase().replace('`', "");
    let rest = upper.strip_prefix("GRANT ")?;
    let on = rest.find(" ON ")?;
    let privs = &rest[..on];
    let object = rest[on + 4..].split(" TO ").next()?.trim();
    let object = object
        .strip_prefix("TABLE ")
        .unwrap_or(object)
        .trim()
        .to_owned();
    // Column lists `SELECT (a, b)` contain commas: drop parenthesised parts first.
    let mut flat = String::with_capacity(privs.len());
    let mut depth = 0;
    for c in privs.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            c if depth == 0 => flat.push(c),
            _ => {}
        }
    }
    Some((
        flat.split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect(),
        object,
    ))
}

#[cfg(test)]
mod tests {
    use mysql_async::prelude::Queryable;
    use powersync_source_core::provision::Fix;
    use powersync_source_core::ChangeSource;
    use powersync_source_testkit::{start_or_skip, MariaDbServer};

    use super::{parse_grant, Grants};
    use crate::{MySqlConfig, MySqlSource};

    /// What `check()` reports about the binlog settings is executable: running the
    /// statements of its remedies clears those problems.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn binlog_setting_remedies_run() {
        let server = start_or_skip!(
            MariaDbServer::builder()
                .setting("binlog_format", "MIXED")
                .setting("binlog_row_metadata", "MINIMAL")
                .start()
                .await
        );
        server
            .sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)")
            .await
            .expect("schema");
        let config = MySqlConfig::parse(&server.database_url("app")).expect("url");
        let source = MySqlSource::new(config.clone());
        let report = source.check().await.expect("check");
        let remedies: Vec<(&str, &Fix)> = report
            .problems
            .iter()
            .filter(|p| p.setting.starts_with("binlog_"))
            .map(|p| (p.setting.as_str(), &p.remedy))
            .collect();
        assert_eq!(
            remedies,
            vec![
                (
                    "binlog_format",
                    &Fix::SqlAlone("SET GLOBAL binlog_format = 'ROW'".into())
                ),
                (
                    "binlog_row_metadata",
                    &Fix::SqlAlone("SET GLOBAL binlog_row_metadata = 'FULL'".into())
                ),
            ]
        );
        let mut conn = crate::connect_sql(&config).await.expect("connect");
        for (_, fix) in &remedies {
            let statement = fix.statement("").expect("a statement");
            conn.query_drop(statement).await.expect("remedy runs");
        }
        let report = source.check().await.expect("check");
        assert!(
            report
                .problems
                .iter()
                .all(|p| !p.setting.starts_with("binlog_")),
            "{:?}",
            report.problems
        );
    }

    /// Binlogs kept for less than a day are a warning (not an error: the stream works, but an
    /// outage over a night loses its history).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn short_binlog_expiry_is_a_warning() {
        let server = start_or_skip!(
            MariaDbServer::builder()
                .setting("binlog_expire_logs_seconds", "3600")
                .start()
                .await
        );
        server
            .sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)")
            .await
            .expect("schema");
        let config = MySqlConfig::parse(&server.database_url("app")).expect("url");
        let report = MySqlSource::new(config).check().await.expect("check");
        let warning = report
            .problems
            .iter()
            .find(|p| p.setting == "binlog_expire_logs_seconds")
            .unwrap_or_else(|| panic!("no expiry warning: {:?}", report.problems));
        assert_eq!(warning.severity, powersync_source_core::Severity::Warning);
        assert!(warning.what.contains("1.0 hours"), "{}", warning.what);
        assert!(report.is_ready(), "{:?}", report.problems);
    }

    #[test]
    fn grants_match_exactly() {
        let g = Grants::parse(&[
            "GRANT REPLICATION SLAVE ADMIN ON *.* TO `u`@`%`".into(),
            "GRANT SELECT ON `app`.* TO `u`@`%`".into(),
            "GRANT INSERT ON `app`.`cp` TO `u`@`%`".into(),
            "GRANT `r1` TO `u`@`%`".into(),
        ]);
        assert!(!g.global("REPLICATION SLAVE"));
        assert!(g.on_database("SELECT", "APP") && !g.on_database("SELECT", "other"));
        assert!(g.in_database("INSERT", "app") && !g.on_database("INSERT", "app"));
        assert!(g.on_table("INSERT", "app", "cp") && g.on_table("SELECT", "app", "cp"));
        assert!(g.via_roles);
    }

    #[test]
    fn grants() {
        let (p, on) =
            parse_grant("GRANT REPLICATION SLAVE ADMIN, BINLOG MONITOR ON *.* TO `u`@`%`").unwrap();
        assert_eq!(p, vec!["REPLICATION SLAVE ADMIN", "BINLOG MONITOR"]);
        assert_eq!(on, "*.*");
        assert!(!p.contains(&"REPLICATION SLAVE".to_owned()));
        let (p, on) = parse_grant("GRANT SELECT (a, b), INSERT ON `app`.`t` TO 'u'@'%'").unwrap();
        assert_eq!(p, vec!["SELECT", "INSERT"]);
        assert_eq!(on, "APP.T");
        assert!(parse_grant("GRANT `r1` TO `u`@`%`").is_none());
    }
}
