//! Provisioning (Cargo feature `provision`): the binlog settings, the replication user and
//! its rights, and the checkpoint and backfill signal tables that make a MySQL or MariaDB
//! server ready.
//!
//! What the connector needs (see `powersync-source-mysql`): a row-based binlog with full row
//! images (`log_bin`, `binlog_format=ROW`, `binlog_row_image=FULL`, a non-zero `server_id`;
//! MySQL also `gtid_mode=ON` and `enforce_gtid_consistency=ON`; `binlog_row_metadata=FULL`
//! recommended), no `binlog-do-db`/`binlog-ignore-db` filter hiding the database, and a user
//! with `REPLICATION SLAVE`, `REPLICATION CLIENT` (`BINLOG MONITOR` on MariaDB 10.5.2+),
//! `SELECT` on the database (MySQL: `RELOAD` for the exact snapshot start) and rights on the
//! checkpoint table and on the signal table (`_powersync_signals`, next to the checkpoint
//! table: backfill requests). `log_bin`, `server_id`, the GTID mode and the binlog filters are server
//! options read at start: they go into the configuration file and need a restart. The binlog
//! format, row image and row metadata can also change at run time (`SET GLOBAL`), which
//! `--apply` does, and the configuration file keeps them across restarts.
//!
//! The rules it shares with the connector's `check()` (how grants are matched, the right that
//! reads the binlog coordinates, `SET GLOBAL` / `SET PERSIST`, the checkpoint table's columns)
//! and its quoting are the connector's own. [`plan`] is a pure function of what
//! [`read_facts`] found, so it is tested on recorded facts; [`run`] prints or applies it.

use std::io::Write;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use powersync_source_core::backfill::SIGNAL_TABLE;
use powersync_source_core::provision::{
    generate_password, Fix, Outcome, Plan, ProvisionError, Report, Request, Step,
};
use powersync_source_core::{ChangeSource, Secret, SourceError, TableName};

use crate::catalog::Scope;
use crate::check::{monitor_right, set_global, Grants, CHECKPOINT_COLUMNS};
use crate::connection::{ident, literal, sql_error};
use crate::markers::SIGNAL_COLUMNS;
use crate::server::{Flavour, ServerInfo};
use crate::{MySqlConfig, MySqlSource};

/// What the server looks like, as read by [`read_facts`].
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `VERSION()`.
    pub version: String,
    /// MariaDB rather than MySQL.
    pub mariadb: bool,
    /// (major, minor, patch).
    pub numbers: (u32, u32, u32),
    /// `@@log_bin`.
    pub log_bin: bool,
    /// `@@binlog_format`, upper case.
    pub binlog_format: String,
    /// `@@binlog_row_image`, upper case.
    pub binlog_row_image: String,
    /// `@@binlog_row_metadata`, upper case (None: the server has no such variable).
    pub binlog_row_metadata: Option<String>,
    /// `@@server_id`.
    pub server_id: u64,
    /// MySQL: `@@gtid_mode`, upper case.
    pub gtid_mode: Option<String>,
    /// MySQL: `@@enforce_gtid_consistency`, upper case.
    pub enforce_gtid_consistency: Option<String>,
    /// Binlog expiry in seconds (0: never).
    pub expire_seconds: f64,
    /// `Binlog_Do_DB` of `SHOW MASTER STATUS` (comma separated).
    pub do_db: String,
    /// `Binlog_Ignore_DB`.
    pub ignore_db: String,
    /// The databases whose tables replicate (as [`Wanted::databases`]).
    pub databases: Vec<String>,
    /// Those of them (and the checkpoint table's database) that do not exist.
    pub missing_databases: Vec<String>,
    /// The administrative account (`CURRENT_USER()`).
    pub admin: String,
    /// The replication user's grants (`SHOW GRANTS FOR` lines); None when the user does not
    /// exist.
    pub user_grants: Option<Vec<String>>,
    /// The checkpoint table exists.
    pub checkpoint_table: bool,
    /// The backfill signal table (`_powersync_signals` next to the checkpoint table) exists.
    pub signal_table: bool,
}

impl Facts {
    fn flavour(&self) -> Flavour {
        if self.mariadb {
            Flavour::MariaDb
        } else {
            Flavour::MySql
        }
    }

    fn grants(&self) -> Grants {
        Grants::parse(self.user_grants.as_deref().unwrap_or_default())
    }
}

/// What the run should produce.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// The replication user.
    pub user: String,
    /// The databases whose tables replicate: the URL's and its `databases=` list, or the
    /// databases of the named tables. One source reads them all through one binlog stream.
    pub databases: Vec<String>,
    /// The checkpoint table (database, name): the URL's `checkpoint_table` option, by
    /// default `_powersync_checkpoints` in the URL's database (else the first of
    /// `databases=`).
    pub checkpoint_table: (String, String),
}

/// `'user'@'%'`.
fn account(user: &str) -> String {
    format!("{}@'%'", literal(user))
}

/// The steps that make the server ready for `wanted`, from what [`read_facts`] found.
pub fn plan(facts: &Facts, wanted: &Wanted) -> Plan {
    let mut plan = Plan::default();
    let flavour = facts.flavour();
    let section = match flavour {
        Flavour::MariaDb => "[mariadb]",
        Flavour::MySql => "[mysqld]",
    };

    // Options read at start: one configuration step, with a restart.
    let mut startup: Vec<(String, String)> = Vec::new();
    if !facts.log_bin {
        startup.push((
            "log_bin = binlog".into(),
            "the binary log is off (log_bin)".into(),
        ));
    }
    if facts.server_id == 0 {
        startup.push((
            "server_id = 1".into(),
            "server_id is 0: the server writes no usable binlog".into(),
        ));
    }
    if flavour == Flavour::MySql {
        if facts.gtid_mode.as_deref() != Some("ON") {
            startup.push((
                "gtid_mode = ON".into(),
                format!(
                    "gtid_mode is {} (the connector resumes by GTID)",
                    facts.gtid_mode.as_deref().unwrap_or("unknown")
                ),
            ));
        }
        if facts.enforce_gtid_consistency.as_deref() != Some("ON") {
            startup.push((
                "enforce_gtid_consistency = ON".into(),
                "enforce_gtid_consistency is not ON (required with gtid_mode = ON)".into(),
            ));
        }
    }
    let mut logged: Vec<&str> = wanted.databases.iter().map(String::as_str).collect();
    logged.push(&wanted.checkpoint_table.0);
    logged.retain(|d| !d.is_empty());
    logged.sort();
    logged.dedup();
    for db in logged {
        let listed = |list: &str| list.split(',').any(|x| x.trim() == db);
        if !facts.do_db.is_empty() && !listed(&facts.do_db) {
            startup.push((
                format!("binlog_do_db = {db}   (or remove every binlog_do_db line)"),
                format!(
                    "binlog-do-db ({}) leaves out `{db}`: its changes are not logged",
                    facts.do_db
                ),
            ));
        }
        if listed(&facts.ignore_db) {
            startup.push((
                format!("remove `binlog_ignore_db = {db}`"),
                format!("binlog-ignore-db lists `{db}`: its changes are not logged"),
            ));
        }
    }

    // Dynamic ones: SET GLOBAL now, and the configuration file for the next restart.
    let mut dynamic: Vec<(&str, &str, String)> = Vec::new();
    if facts.binlog_format != "ROW" {
        dynamic.push((
            "binlog_format",
            "ROW",
            format!(
                "binlog_format is {} (the connector reads row events)",
                facts.binlog_format
            ),
        ));
    }
    if facts.binlog_row_image != "FULL" {
        dynamic.push((
            "binlog_row_image",
            "FULL",
            format!(
                "binlog_row_image is {} (updates and deletes must carry whole rows)",
                facts.binlog_row_image
            ),
        ));
    }
    let metadata_missing = matches!(&facts.binlog_row_metadata, Some(m) if m != "FULL");

    if !startup.is_empty() || !dynamic.is_empty() || metadata_missing {
        let mut lines = vec![section.to_string()];
        lines.extend(startup.iter().map(|(line, _)| line.clone()));
        if !facts.log_bin || !startup.is_empty() {
            // Written together so the file describes the whole setup after the restart.
            for (name, value) in [("binlog_format", "ROW"), ("binlog_row_image", "FULL")] {
                lines.push(format!("{name} = {value}"));
            }
            if facts.binlog_row_metadata.is_some() {
                lines.push("binlog_row_metadata = FULL".into());
            }
        } else {
            lines.extend(dynamic.iter().map(|(n, v, _)| format!("{n} = {v}")));
            if metadata_missing {
                lines.push("binlog_row_metadata = FULL".into());
            }
        }
        if !startup.is_empty() {
            let reason = startup
                .iter()
                .map(|(_, why)| why.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            plan.steps.push(Step::required(
                reason,
                Fix::restart(format!(
                        "add to the server's configuration file (e.g. /etc/mysql/{}; on a managed service: its parameter group or flags) and restart:\n--   {}",
                        match flavour {
                            Flavour::MariaDb => "mariadb.conf.d/60-powersync.cnf",
                            Flavour::MySql => "mysql.conf.d/powersync.cnf",
                        },
                        lines.join("\n--   ")
                    )),
            ));
        } else if !dynamic.is_empty() || metadata_missing {
            plan.notes.push(format!(
                "keep the binlog settings across restarts: add to the server's configuration file: {}",
                lines.join(" ")
            ));
        }
    }
    if facts.log_bin {
        for (name, value, reason) in &dynamic {
            plan.steps.push(Step::required(
                reason.clone(),
                Fix::SqlAlone(set_global(flavour, name, value)),
            ));
        }
        if metadata_missing {
            plan.steps.push(Step::recommended(
                "binlog_row_metadata is not FULL: row events then carry no column names (recommended)",
                Fix::SqlAlone(set_global(flavour, "binlog_row_metadata", "FULL")),
            ));
        }
    }
    if facts.expire_seconds > 0.0 && facts.expire_seconds < 86_400.0 {
        plan.notes.push(format!(
            "binlogs are purged after {} s: a connector stopped for longer must snapshot again; consider SET GLOBAL binlog_expire_logs_seconds = 604800",
            facts.expire_seconds
        ));
    }

    for db in &facts.missing_databases {
        plan.notes.push(format!(
            "database `{db}` does not exist yet: create it (and its tables) before replicating"
        ));
    }

    // The user and its rights.
    let who = account(&wanted.user);
    if facts.user_grants.is_none() {
        plan.steps.push(Step::required(
            format!("the replication user `{}` does not exist", wanted.user),
            Fix::CreateUser {
                head: format!("CREATE USER {who} IDENTIFIED BY "),
                tail: String::new(),
            },
        ));
    }
    let grants = facts.grants();
    let mut global = Vec::new();
    if !grants.global("REPLICATION SLAVE") {
        global.push("REPLICATION SLAVE");
    }
    let monitor = monitor_right(flavour, facts.numbers);
    if !grants.global(monitor) && !grants.global("REPLICATION CLIENT") && !grants.global("SUPER") {
        global.push(monitor);
    }
    if flavour == Flavour::MySql && !grants.global("RELOAD") {
        global.push("RELOAD");
    }
    if !global.is_empty() {
        plan.steps.push(Step::required(
            format!(
                "`{}` needs {} to read the binlog{}",
                wanted.user,
                global.join(", "),
                if global.contains(&"RELOAD") {
                    " (RELOAD: the brief read lock that fixes the snapshot's start)"
                } else {
                    ""
                }
            ),
            Fix::Sql(format!("GRANT {} ON *.* TO {who}", global.join(", "))),
        ));
    }
    for db in &wanted.databases {
        if !grants.on_database("SELECT", db) {
            plan.steps.push(Step::required(
                format!(
                    "`{}` cannot read database `{db}` (the snapshot needs SELECT)",
                    wanted.user
                ),
                Fix::Sql(format!("GRANT SELECT ON {}.* TO {who}", ident(db))),
            ));
        }
    }
    let (cp_db, cp_table) = &wanted.checkpoint_table;
    let cp = format!("{}.{}", ident(cp_db), ident(cp_table));
    let cp_db_exists = !facts.missing_databases.contains(cp_db);
    if cp_db_exists && !facts.checkpoint_table {
        plan.steps.push(Step::required(
            format!(
                "the checkpoint table `{cp_db}`.`{cp_table}` is missing (write checkpoints use it)"
            ),
            Fix::Sql(format!(
                "CREATE TABLE IF NOT EXISTS {cp} {CHECKPOINT_COLUMNS}"
            )),
        ));
    }
    let checkpoint_rights = ["SELECT", "INSERT", "UPDATE", "CREATE"];
    if cp_db_exists
        && !checkpoint_rights
            .iter()
            .all(|r| grants.on_table(r, cp_db, cp_table))
    {
        plan.steps.push(Step::required(
            format!(
                "`{}` must write the checkpoint table `{cp_db}`.`{cp_table}`",
                wanted.user
            ),
            Fix::Sql(format!(
                "GRANT {} ON {cp} TO {who}",
                checkpoint_rights.join(", ")
            )),
        ));
    }
    let signal = format!("{}.{}", ident(cp_db), ident(SIGNAL_TABLE));
    if cp_db_exists && !facts.signal_table {
        plan.steps.push(Step::required(
            format!(
                "the signal table `{cp_db}`.`{SIGNAL_TABLE}` is missing (backfills are requested through rows inserted into it)"
            ),
            Fix::Sql(format!("CREATE TABLE IF NOT EXISTS {signal} {SIGNAL_COLUMNS}")),
        ));
    }
    let signal_rights = ["SELECT", "INSERT"];
    if cp_db_exists
        && !signal_rights
            .iter()
            .all(|r| grants.on_table(r, cp_db, SIGNAL_TABLE))
    {
        plan.steps.push(Step::required(
            format!(
                "`{}` must insert into the signal table `{cp_db}`.`{SIGNAL_TABLE}` (a host's backfill request)",
                wanted.user
            ),
            Fix::Sql(format!(
                "GRANT {} ON {signal} TO {who}",
                signal_rights.join(", ")
            )),
        ));
    }
    plan
}

async fn variable(conn: &mut Conn, name: &str) -> Option<String> {
    // Missing variables (older servers, the other flavour) are an error: read them as absent.
    conn.query_first::<Option<String>, _>(format!("SELECT @@GLOBAL.{name}"))
        .await
        .ok()
        .flatten()
        .flatten()
}

/// Reads what [`plan`] needs.
pub async fn read_facts(conn: &mut Conn, wanted: &Wanted) -> Result<Facts, SourceError> {
    let info = ServerInfo::detect(conn).await?;
    let admin: String = conn
        .query_first("SELECT CURRENT_USER()")
        .await
        .map_err(|e| sql_error(e, "reading the current user"))?
        .unwrap_or_default();
    let mariadb = info.flavour == Flavour::MariaDb;
    let numbers = info.numbers;
    let upper = |v: Option<String>| v.map(|s| s.to_ascii_uppercase());
    let log_bin = matches!(
        upper(variable(conn, "log_bin").await).as_deref(),
        Some("1" | "ON")
    );
    let expire_seconds = match variable(conn, "binlog_expire_logs_seconds").await {
        Some(s) if s.parse::<f64>().unwrap_or(0.0) > 0.0 => s.parse().unwrap_or(0.0),
        _ => {
            variable(conn, "expire_logs_days")
                .await
                .and_then(|d| d.parse::<f64>().ok())
                .unwrap_or(0.0)
                * 86_400.0
        }
    };
    let mut facts = Facts {
        mariadb,
        numbers,
        log_bin,
        binlog_format: upper(variable(conn, "binlog_format").await).unwrap_or_default(),
        binlog_row_image: upper(variable(conn, "binlog_row_image").await).unwrap_or_default(),
        binlog_row_metadata: upper(variable(conn, "binlog_row_metadata").await),
        server_id: variable(conn, "server_id")
            .await
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        gtid_mode: if mariadb {
            None
        } else {
            upper(variable(conn, "gtid_mode").await)
        },
        enforce_gtid_consistency: if mariadb {
            None
        } else {
            upper(variable(conn, "enforce_gtid_consistency").await)
        },
        expire_seconds,
        databases: wanted.databases.clone(),
        admin,
        version: info.version.clone(),
        ..Facts::default()
    };
    if log_bin {
        if let Ok(Some(row)) = conn.query_first::<Row, _>(info.master_status_sql()).await {
            facts.do_db = row
                .get::<Option<String>, _>(2)
                .flatten()
                .unwrap_or_default();
            facts.ignore_db = row
                .get::<Option<String>, _>(3)
                .flatten()
                .unwrap_or_default();
        }
    }
    let mut dbs: Vec<&str> = wanted.databases.iter().map(String::as_str).collect();
    if !dbs.contains(&wanted.checkpoint_table.0.as_str()) {
        dbs.push(&wanted.checkpoint_table.0);
    }
    for db in dbs {
        let schemas: Option<u64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (db,),
            )
            .await
            .map_err(|e| sql_error(e, "looking up the database"))?;
        if schemas.unwrap_or(0) == 0 {
            facts.missing_databases.push(db.to_owned());
        }
    }
    let tables: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (
                wanted.checkpoint_table.0.as_str(),
                wanted.checkpoint_table.1.as_str(),
            ),
        )
        .await
        .map_err(|e| sql_error(e, "looking up the checkpoint table"))?;
    facts.checkpoint_table = tables.unwrap_or(0) > 0;
    let signals: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (wanted.checkpoint_table.0.as_str(), SIGNAL_TABLE),
        )
        .await
        .map_err(|e| sql_error(e, "looking up the signal table"))?;
    facts.signal_table = signals.unwrap_or(0) > 0;
    let users: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = '%'",
            (wanted.user.as_str(),),
        )
        .await
        .map_err(|e| {
            sql_error(e, "looking up the replication user in mysql.user").with_hint(
                "run setup as an administrative user (one that may create users and grant rights)",
            )
        })?;
    if users.unwrap_or(0) > 0 {
        let grants: Vec<String> = conn
            .query(format!("SHOW GRANTS FOR {}", account(&wanted.user)))
            .await
            .map_err(|e| sql_error(e, "reading the replication user's grants"))?;
        facts.user_grants = Some(grants);
    }
    Ok(facts)
}

/// Prepares the database `config` names (with an administrative account) for `request`:
/// prints the steps to `out`, or runs them one by one when `request.apply` is set, and says
/// how it ended. The URL must name the database whose tables replicate.
///
/// MySQL runs DDL and account statements in their own implicit transactions, so a failed
/// step stops the run with what ran before it kept ([`Outcome::Failed`]); a second run plans
/// the rest.
pub async fn run(
    config: &MySqlConfig,
    request: &Request,
    out: &mut dyn Write,
) -> Result<Outcome, ProvisionError> {
    validate_user(&request.user)?;
    let tables = &request.tables;
    let scope = Scope::of(config);
    let databases = scope.schemas(tables);
    if databases.is_empty() {
        return Err(SourceError::config(
            "the URL names no database: add /database or ?databases=a,b (the ones whose tables replicate), or name tables as database.table",
        )
        .into());
    }
    let mut checkpoint_table = config.checkpoint_table();
    if checkpoint_table.0.is_empty() {
        // Named tables only: the checkpoint table goes to the first of their databases.
        checkpoint_table.0 = databases[0].clone();
    }
    let wanted = Wanted {
        user: request.user.clone(),
        databases,
        checkpoint_table,
    };
    let mut report = Report::new(out);
    let mut conn = crate::connect_sql(config).await?;
    let facts = read_facts(&mut conn, &wanted).await?;
    let plan = plan(&facts, &wanted);

    report.comment(format_args!(
        "setup: {} {}, database {} as {}",
        if facts.mariadb { "MariaDB" } else { "MySQL" },
        facts.version,
        facts.databases.join(", "),
        facts.admin
    ))?;
    report.comment(format_args!(
        "replication user: {}; tables: {}",
        wanted.user,
        if tables.is_empty() {
            format!("every table of `{}`", wanted.databases.join("`, `"))
        } else {
            tables
                .iter()
                .map(TableName::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    ))?;
    report.notes(&plan.notes)?;
    let ready_line = format!(
        "`{}` can replicate database {}",
        wanted.user,
        wanted.databases.join(", ")
    );
    if !request.apply {
        report.steps(&plan.steps)?;
        if plan.steps.is_empty() {
            report.comment(format_args!("nothing to change: {ready_line}"))?;
        } else if plan.has_automatic_steps() {
            report.blank()?;
            report.comment("run again with --apply to execute the SQL steps")?;
        }
        return Ok(report.finish(&plan.steps)?);
    }
    if plan.steps.is_empty() {
        report.blank()?;
        report.comment(format_args!("nothing to change: {ready_line}"))?;
        return Ok(report.finish(&plan.steps)?);
    }

    let mut password: Option<Secret> = None;
    let mut failed = false;
    for (i, step) in plan.steps.iter().enumerate() {
        report.step(i, step)?;
        let statement = match &step.fix {
            Fix::Manual { restart, .. } => {
                report.comment(format_args!(
                    "skipped: SQL cannot do this; do it as described{}",
                    if *restart {
                        " (the server must be restarted)"
                    } else {
                        ""
                    }
                ))?;
                continue;
            }
            Fix::CreateUser { .. } => {
                let p = generate_password();
                let s = step.fix.statement(&literal(p.expose()));
                password = Some(p);
                s
            }
            fix => fix.statement(""),
        };
        let Some(statement) = statement else { continue };
        match conn.query_drop(statement).await {
            Ok(()) => report.comment("done")?,
            Err(e) => {
                if matches!(step.fix, Fix::CreateUser { .. }) {
                    password = None;
                }
                report.step_failed(server_message(&e))?;
                failed = true;
                break;
            }
        }
    }
    if let Some(p) = &password {
        report.password(&wanted.user, p)?;
    }

    report.blank()?;
    report.comment("checking again")?;
    let facts = read_facts(&mut conn, &wanted).await?;
    let mut plan = self::plan(&facts, &wanted);
    if let Some(p) = &password {
        // The connector's own check, as the new user: what it finds beyond the plan is
        // printed as notes.
        let user_config = config
            .clone()
            .with_user(wanted.user.clone())
            .with_password(p.expose());
        let source = MySqlSource::new(user_config).with_tables(tables.clone());
        match source.check().await {
            Ok(check) => {
                for problem in check.problems {
                    if plan.steps.iter().any(|s| s.reason == problem.what) {
                        continue;
                    }
                    plan.notes
                        .push(format!("{}; {}", problem.what, problem.fix));
                }
            }
            Err(e) => {
                failed = true;
                plan.steps.push(Step::required(
                    format!("the connector's check as `{}` failed: {e}", wanted.user),
                    Fix::manual(format!(
                        "make sure `{}` can log in from where the connector runs",
                        wanted.user
                    )),
                ));
            }
        }
    }
    report.notes(&plan.notes)?;
    if plan.steps.is_empty() {
        report.comment(format_args!("nothing left: {ready_line}"))?;
    } else {
        report.comment("still to do:")?;
        report.steps(&plan.steps)?;
    }
    let outcome = report.finish(&plan.steps)?;
    Ok(if failed { Outcome::Failed } else { outcome })
}

fn server_message(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

/// User names: letters, digits, `_`, `-`, `.`; 1–32 characters (MySQL's limit).
pub fn validate_user(user: &str) -> Result<(), SourceError> {
    let ok = !user.is_empty()
        && user.len() <= 32
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(SourceError::config(format!(
            "--user `{user}`: use 1–32 letters, digits, `_`, `-` or `.`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_mariadb() -> Facts {
        Facts {
            version: "10.11.9-MariaDB".into(),
            mariadb: true,
            numbers: (10, 11, 9),
            log_bin: true,
            binlog_format: "ROW".into(),
            binlog_row_image: "FULL".into(),
            binlog_row_metadata: Some("FULL".into()),
            server_id: 1,
            expire_seconds: 0.0,
            databases: vec!["app".into()],
            admin: "root@localhost".into(),
            user_grants: Some(vec![
                "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `powersync`@`%`".into(),
                "GRANT SELECT ON `app`.* TO `powersync`@`%`".into(),
                "GRANT SELECT, INSERT, UPDATE, CREATE ON `app`.`_powersync_checkpoints` TO `powersync`@`%`"
                    .into(),
                "GRANT SELECT, INSERT ON `app`.`_powersync_signals` TO `powersync`@`%`".into(),
            ]),
            checkpoint_table: true,
            signal_table: true,
            ..Facts::default()
        }
    }

    fn wanted() -> Wanted {
        Wanted {
            user: "powersync".into(),
            databases: vec!["app".into()],
            checkpoint_table: ("app".into(), "_powersync_checkpoints".into()),
        }
    }

    fn shown(plan: &Plan) -> Vec<String> {
        plan.steps.iter().map(|s| s.fix.to_string()).collect()
    }

    #[test]
    fn ready_server_needs_nothing() {
        let plan = plan(&ready_mariadb(), &wanted());
        assert!(plan.steps.is_empty(), "{:?}", shown(&plan));
    }

    #[test]
    fn binlog_off_is_a_configuration_step_with_a_restart() {
        let mut f = ready_mariadb();
        f.log_bin = false;
        f.binlog_format = "MIXED".into();
        let plan = plan(&f, &wanted());
        assert_eq!(plan.steps.len(), 1, "{:?}", shown(&plan));
        let text = plan.steps[0].fix.to_string();
        assert!(text.contains("[mariadb]"), "{text}");
        assert!(text.contains("log_bin = binlog"), "{text}");
        assert!(text.contains("binlog_format = ROW"), "{text}");
        assert!(text.contains("restart needed"), "{text}");
    }

    #[test]
    fn dynamic_settings_are_set_globally_on_mariadb_and_persisted_on_mysql() {
        let mut f = ready_mariadb();
        f.binlog_format = "STATEMENT".into();
        f.binlog_row_metadata = Some("MINIMAL".into());
        let p = plan(&f, &wanted());
        assert_eq!(
            shown(&p),
            vec![
                "SET GLOBAL binlog_format = 'ROW';",
                "SET GLOBAL binlog_row_metadata = 'FULL';"
            ]
        );
        assert!(!p.steps[1].required);
        assert!(p.notes.iter().any(|n| n.contains("binlog_format = ROW")));

        f.mariadb = false;
        f.numbers = (8, 0, 36);
        f.gtid_mode = Some("ON".into());
        f.enforce_gtid_consistency = Some("ON".into());
        f.user_grants
            .as_mut()
            .unwrap()
            .push("GRANT RELOAD, REPLICATION CLIENT ON *.* TO `powersync`@`%`".into());
        let p = plan(&f, &wanted());
        assert_eq!(shown(&p)[0], "SET PERSIST binlog_format = 'ROW';");
    }

    #[test]
    fn mysql_needs_gtids_and_reload() {
        let mut f = ready_mariadb();
        f.mariadb = false;
        f.numbers = (8, 0, 36);
        f.gtid_mode = Some("OFF".into());
        f.enforce_gtid_consistency = Some("OFF".into());
        let p = plan(&f, &wanted());
        let text = shown(&p).join("\n");
        assert!(text.contains("[mysqld]"), "{text}");
        assert!(text.contains("gtid_mode = ON"), "{text}");
        assert!(text.contains("enforce_gtid_consistency = ON"), "{text}");
        assert!(
            text.contains("GRANT REPLICATION CLIENT, RELOAD ON *.* TO 'powersync'@'%';"),
            "{text}"
        );
    }

    #[test]
    fn new_user_gets_every_right() {
        let mut f = ready_mariadb();
        f.user_grants = None;
        f.checkpoint_table = false;
        f.signal_table = false;
        let p = plan(&f, &wanted());
        assert_eq!(
            shown(&p),
            vec![
                "CREATE USER 'powersync'@'%' IDENTIFIED BY '<generated by --apply, shown once>';".to_string(),
                "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'powersync'@'%';".into(),
                "GRANT SELECT ON `app`.* TO 'powersync'@'%';".into(),
                format!("CREATE TABLE IF NOT EXISTS `app`.`_powersync_checkpoints` {CHECKPOINT_COLUMNS};"),
                "GRANT SELECT, INSERT, UPDATE, CREATE ON `app`.`_powersync_checkpoints` TO 'powersync'@'%';".into(),
                format!("CREATE TABLE IF NOT EXISTS `app`.`_powersync_signals` {SIGNAL_COLUMNS};"),
                "GRANT SELECT, INSERT ON `app`.`_powersync_signals` TO 'powersync'@'%';".into(),
            ]
        );
    }

    #[test]
    fn binlog_filters_hiding_the_database() {
        let mut f = ready_mariadb();
        f.do_db = "other".into();
        f.ignore_db = "app,x".into();
        let p = plan(&f, &wanted());
        let text = shown(&p).join("\n");
        assert!(text.contains("binlog_do_db = app"), "{text}");
        assert!(text.contains("remove `binlog_ignore_db = app`"), "{text}");
        assert!(p.steps[0].reason.contains("binlog-do-db (other)"));
    }

    #[test]
    fn several_databases_are_each_read_and_logged() {
        let mut f = ready_mariadb();
        f.do_db = "app".into();
        let w = Wanted {
            databases: vec!["app".into(), "billing".into()],
            ..wanted()
        };
        let p = plan(&f, &w);
        let text = shown(&p).join("\n");
        assert!(text.contains("binlog_do_db = billing"), "{text}");
        assert!(!text.contains("binlog_do_db = app"), "{text}");
        assert!(
            text.contains("GRANT SELECT ON `billing`.* TO 'powersync'@'%';"),
            "{text}"
        );
        assert!(!text.contains("GRANT SELECT ON `app`.*"), "{text}");
    }

    #[test]
    fn rights_are_matched_exactly() {
        let mut f = ready_mariadb();
        f.user_grants.as_mut().unwrap()[0] =
            "GRANT REPLICATION SLAVE ADMIN, BINLOG MONITOR ON *.* TO `powersync`@`%`".into();
        assert_eq!(
            shown(&plan(&f, &wanted())),
            vec!["GRANT REPLICATION SLAVE ON *.* TO 'powersync'@'%';"]
        );
    }

    #[test]
    fn user_names() {
        assert!(validate_user("repl_1.x-y").is_ok());
        assert!(validate_user("").is_err());
        assert!(validate_user("a'b").is_err());
        assert!(validate_user(&"x".repeat(33)).is_err());
    }

    #[test]
    fn older_mariadb_uses_replication_client() {
        let mut f = ready_mariadb();
        f.numbers = (10, 4, 30);
        f.user_grants = Some(vec![]);
        let p = plan(&f, &wanted());
        assert!(shown(&p)[0].contains("REPLICATION SLAVE, REPLICATION CLIENT ON *.*"));
    }
}
