//! `setup` for MySQL and MariaDB: the binlog settings, the replication user and its rights,
//! and the checkpoint table.
//!
//! What the connector needs (see `powersync-source-mysql`): a row-based binlog with full row
//! images (`log_bin`, `binlog_format=ROW`, `binlog_row_image=FULL`, a non-zero `server_id`;
//! MySQL also `gtid_mode=ON` and `enforce_gtid_consistency=ON`; `binlog_row_metadata=FULL`
//! recommended), no `binlog-do-db`/`binlog-ignore-db` filter hiding the database, and a user
//! with `REPLICATION SLAVE`, `REPLICATION CLIENT` (`BINLOG MONITOR` on MariaDB 10.5.2+),
//! `SELECT` on the database (MySQL: `RELOAD` for the exact snapshot start) and rights on the
//! checkpoint table. `log_bin`, `server_id`, the GTID mode and the binlog filters are server
//! options read at start: they go into the configuration file and need a restart. The binlog
//! format, row image and row metadata can also change at run time (`SET GLOBAL`), which
//! `--apply` does, and the configuration file keeps them across restarts.
//!
//! [`plan`] is a pure function of what [`read_facts`] found, so it is tested on recorded facts.

use std::io::Write;

use examples::cli::AppError;
use examples::source_url::{self, SourceKind};
use powersync_source_core::{ChangeSource, SourceError, TableName};
use powersync_source_mysql::mysql_async::prelude::Queryable;
use powersync_source_mysql::mysql_async::{self, Conn, Row};
use powersync_source_mysql::{MySqlConfig, MySqlSource};

use super::{finish, generate_password, print_steps, Action, Options, Outcome, Step};

/// The checkpoint table the connector writes (`write_checkpoint`), as it creates it.
const CHECKPOINT_TABLE: &str = "_powersync_checkpoints";
const CHECKPOINT_DDL: &str = "(id INT PRIMARY KEY, checkpoint VARCHAR(512) NOT NULL, \
     written_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB";

/// MySQL or MariaDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Oracle MySQL (and Percona Server).
    MySql,
    /// MariaDB.
    MariaDb,
}

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
    /// The URL's database.
    pub database: String,
    /// Whether the database exists.
    pub database_exists: bool,
    /// The administrative account (`CURRENT_USER()`).
    pub admin: String,
    /// The replication user's grants (`SHOW GRANTS FOR`), upper case without backticks; None
    /// when the user does not exist.
    pub user_grants: Option<Vec<String>>,
    /// The checkpoint table exists.
    pub checkpoint_table: bool,
}

impl Facts {
    fn flavour(&self) -> Flavour {
        if self.mariadb {
            Flavour::MariaDb
        } else {
            Flavour::MySql
        }
    }

    /// The right that lets the user read the binlog coordinates.
    fn monitor_right(&self) -> &'static str {
        if self.mariadb && self.numbers >= (10, 5, 2) {
            "BINLOG MONITOR"
        } else {
            "REPLICATION CLIENT"
        }
    }

    fn has_global(&self, right: &str) -> bool {
        self.user_grants
            .iter()
            .flatten()
            .any(|g| g.contains(" ON *.* ") && (g.contains("ALL PRIVILEGES") || g.contains(right)))
    }

    fn has_on_database(&self, right: &str, database: &str) -> bool {
        let db = format!(" ON {}.* ", database.to_ascii_uppercase());
        self.has_global(right)
            || self
                .user_grants
                .iter()
                .flatten()
                .any(|g| g.contains(&db) && (g.contains("ALL PRIVILEGES") || g.contains(right)))
    }

    fn has_on_table(&self, right: &str, database: &str, table: &str) -> bool {
        let t = format!(
            " ON {}.{} ",
            database.to_ascii_uppercase(),
            table.to_ascii_uppercase()
        );
        self.has_on_database(right, database)
            || self
                .user_grants
                .iter()
                .flatten()
                .any(|g| g.contains(&t) && (g.contains("ALL PRIVILEGES") || g.contains(right)))
    }
}

/// What the run should produce.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// The replication user.
    pub user: String,
    /// The database whose tables replicate (the URL's).
    pub database: String,
}

/// The ordered steps and the remarks that are not steps.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Steps, in the order they must run.
    pub steps: Vec<Step>,
    /// Remarks.
    pub notes: Vec<String>,
}

/// `'user'@'%'`.
fn account(user: &str) -> String {
    format!("{}@'%'", quote_string(user))
}

fn quote_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
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
    let db = &wanted.database;
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
            plan.steps.push(Step {
                reason,
                action: Action::Manual {
                    todo: format!(
                        "add to the server's configuration file (e.g. /etc/mysql/{}; on a managed service: its parameter group or flags) and restart:\n--   {}",
                        match flavour {
                            Flavour::MariaDb => "mariadb.conf.d/60-powersync.cnf",
                            Flavour::MySql => "mysql.conf.d/powersync.cnf",
                        },
                        lines.join("\n--   ")
                    ),
                    restart: true,
                },
                required: true,
            });
        } else if !dynamic.is_empty() || metadata_missing {
            plan.notes.push(format!(
                "keep the binlog settings across restarts: add to the server's configuration file: {}",
                lines.join(" ")
            ));
        }
    }
    if facts.log_bin {
        for (name, value, reason) in &dynamic {
            plan.steps.push(Step {
                reason: reason.clone(),
                action: Action::SqlAlone(set_global(flavour, name, value)),
                required: true,
            });
        }
        if metadata_missing {
            plan.steps.push(Step {
                reason: "binlog_row_metadata is not FULL: row events then carry no column names (recommended)".into(),
                action: Action::SqlAlone(set_global(flavour, "binlog_row_metadata", "FULL")),
                required: false,
            });
        }
    }
    if facts.expire_seconds > 0.0 && facts.expire_seconds < 86_400.0 {
        plan.notes.push(format!(
            "binlogs are purged after {} s: a connector stopped for longer must snapshot again; consider SET GLOBAL binlog_expire_logs_seconds = 604800",
            facts.expire_seconds
        ));
    }

    if !facts.database_exists {
        plan.notes.push(format!(
            "database `{db}` does not exist yet: create it (and its tables) before replicating"
        ));
    }

    // The user and its rights.
    let who = account(&wanted.user);
    if facts.user_grants.is_none() {
        plan.steps.push(Step {
            reason: format!("the replication user `{}` does not exist", wanted.user),
            action: Action::CreateUserSql {
                statement: format!("CREATE USER {who} IDENTIFIED BY {{password}}"),
            },
            required: true,
        });
    }
    let mut global = Vec::new();
    if !facts.has_global("REPLICATION SLAVE") {
        global.push("REPLICATION SLAVE");
    }
    let monitor = facts.monitor_right();
    if !facts.has_global(monitor)
        && !facts.has_global("REPLICATION CLIENT")
        && !facts.has_global("SUPER")
    {
        global.push(monitor);
    }
    if flavour == Flavour::MySql && !facts.has_global("RELOAD") {
        global.push("RELOAD");
    }
    if !global.is_empty() {
        plan.steps.push(Step {
            reason: format!(
                "`{}` needs {} to read the binlog{}",
                wanted.user,
                global.join(", "),
                if global.contains(&"RELOAD") {
                    " (RELOAD: the brief read lock that fixes the snapshot's start)"
                } else {
                    ""
                }
            ),
            action: Action::Sql(format!("GRANT {} ON *.* TO {who}", global.join(", "))),
            required: true,
        });
    }
    if !facts.has_on_database("SELECT", db) {
        plan.steps.push(Step {
            reason: format!(
                "`{}` cannot read database `{db}` (the snapshot needs SELECT)",
                wanted.user
            ),
            action: Action::Sql(format!("GRANT SELECT ON {}.* TO {who}", quote_ident(db))),
            required: true,
        });
    }
    if facts.database_exists && !facts.checkpoint_table {
        plan.steps.push(Step {
            reason: format!(
                "the checkpoint table `{db}`.`{CHECKPOINT_TABLE}` is missing (write checkpoints use it)"
            ),
            action: Action::Sql(format!(
                "CREATE TABLE IF NOT EXISTS {}.{} {CHECKPOINT_DDL}",
                quote_ident(db),
                quote_ident(CHECKPOINT_TABLE)
            )),
            required: true,
        });
    }
    let checkpoint_rights = ["SELECT", "INSERT", "UPDATE", "CREATE"];
    if facts.database_exists
        && !checkpoint_rights
            .iter()
            .all(|r| facts.has_on_table(r, db, CHECKPOINT_TABLE))
    {
        plan.steps.push(Step {
            reason: format!(
                "`{}` must write the checkpoint table `{db}`.`{CHECKPOINT_TABLE}`",
                wanted.user
            ),
            action: Action::Sql(format!(
                "GRANT {} ON {}.{} TO {who}",
                checkpoint_rights.join(", "),
                quote_ident(db),
                quote_ident(CHECKPOINT_TABLE)
            )),
            required: true,
        });
    }
    plan
}

fn set_global(flavour: Flavour, name: &str, value: &str) -> String {
    match flavour {
        // SET PERSIST also writes mysqld-auto.cnf, so the value survives a restart.
        Flavour::MySql => format!("SET PERSIST {name} = '{value}'"),
        Flavour::MariaDb => format!("SET GLOBAL {name} = '{value}'"),
    }
}

fn sql_error(e: mysql_async::Error, doing: &str) -> SourceError {
    match &e {
        mysql_async::Error::Server(s) if s.code == 1045 || s.code == 1044 => {
            SourceError::auth(format!("{doing}: {} ({})", s.message, s.code))
        }
        mysql_async::Error::Server(s) => {
            SourceError::prerequisite(format!("{doing}: {} ({})", s.message, s.code))
        }
        _ => SourceError::connection(format!("{doing}: {e}")),
    }
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
    let (version, admin): (String, String) = conn
        .query_first("SELECT VERSION(), CURRENT_USER()")
        .await
        .map_err(|e| sql_error(e, "reading the server version"))?
        .unwrap_or_default();
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let numbers = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
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
        database: wanted.database.clone(),
        admin,
        version,
        ..Facts::default()
    };
    if log_bin {
        let sql = if !mariadb && numbers >= (8, 2, 0) {
            "SHOW BINARY LOG STATUS"
        } else {
            "SHOW MASTER STATUS"
        };
        if let Ok(Some(row)) = conn.query_first::<Row, _>(sql).await {
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
    let schemas: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (wanted.database.as_str(),),
        )
        .await
        .map_err(|e| sql_error(e, "looking up the database"))?;
    facts.database_exists = schemas.unwrap_or(0) > 0;
    let tables: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (wanted.database.as_str(), CHECKPOINT_TABLE),
        )
        .await
        .map_err(|e| sql_error(e, "looking up the checkpoint table"))?;
    facts.checkpoint_table = tables.unwrap_or(0) > 0;
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
        facts.user_grants = Some(
            grants
                .iter()
                .map(|g| format!("{} ", g.to_ascii_uppercase().replace('`', "")))
                .collect(),
        );
    }
    Ok(facts)
}

/// Runs `setup` for a MySQL or MariaDB URL.
pub async fn run(opts: &Options, out: &mut dyn Write) -> Result<Outcome, AppError> {
    let config = MySqlConfig::parse(&opts.url)?;
    if config.database().is_empty() {
        return Err(SourceError::config(
            "the URL names no database: add /database (the one whose tables replicate)",
        )
        .into());
    }
    validate_user(&opts.user)?;
    let tables = source_url::table_names(SourceKind::MySql, &opts.tables)?;
    let wanted = Wanted {
        user: opts.user.clone(),
        database: config.database().to_string(),
    };
    let mut conn = powersync_source_mysql::connect_sql(&config).await?;
    let facts = read_facts(&mut conn, &wanted).await?;
    let plan = plan(&facts, &wanted);

    writeln!(
        out,
        "-- setup: {} {}, database {} as {}",
        if facts.mariadb { "MariaDB" } else { "MySQL" },
        facts.version,
        facts.database,
        facts.admin
    )?;
    writeln!(
        out,
        "-- replication user: {}; tables: {}",
        wanted.user,
        if tables.is_empty() {
            format!("every table of `{}`", wanted.database)
        } else {
            tables
                .iter()
                .map(TableName::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    )?;
    for note in &plan.notes {
        writeln!(out, "-- note: {note}")?;
    }
    if !opts.apply {
        print_steps(out, &plan.steps)?;
        if plan.steps.is_empty() {
            writeln!(
                out,
                "-- nothing to change: `{}` can replicate database {}",
                wanted.user, wanted.database
            )?;
        } else if plan.steps.iter().any(|s| s.action.is_sql()) {
            writeln!(out)?;
            writeln!(out, "-- run again with --apply to execute the SQL steps")?;
        }
        return finish(out, &plan.steps);
    }
    if plan.steps.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "-- nothing to change: `{}` can replicate database {}",
            wanted.user, wanted.database
        )?;
        return finish(out, &plan.steps);
    }

    // MySQL runs DDL and account statements in their own implicit transactions: steps run one
    // by one, and a failure stops the run (what ran stays; a second run plans the rest).
    let mut password = None;
    let mut failed = false;
    for (i, step) in plan.steps.iter().enumerate() {
        writeln!(out)?;
        writeln!(out, "-- {}. {}", i + 1, step.reason)?;
        writeln!(out, "{}", step.action.display())?;
        let statement = match &step.action {
            Action::Manual { restart, .. } => {
                writeln!(
                    out,
                    "-- skipped: SQL cannot do this; do it as described{}",
                    if *restart {
                        " (the server must be restarted)"
                    } else {
                        ""
                    }
                )?;
                continue;
            }
            Action::CreateUserSql { statement } => {
                let p = generate_password();
                let s = statement.replace("{password}", &quote_string(&p));
                password = Some(p);
                s
            }
            Action::Sql(s) | Action::SqlAlone(s) => s.clone(),
        };
        match conn.query_drop(statement).await {
            Ok(()) => writeln!(out, "-- done")?,
            Err(e) => {
                if matches!(step.action, Action::CreateUserSql { .. }) {
                    password = None;
                }
                super::step_failed(out, &server_message(&e))?;
                failed = true;
                break;
            }
        }
    }
    if let Some(p) = &password {
        super::show_password(out, &wanted.user, p)?;
    }

    writeln!(out)?;
    writeln!(out, "-- checking again")?;
    let facts = read_facts(&mut conn, &wanted).await?;
    let mut plan = super::mysql::plan(&facts, &wanted);
    if let Some(p) = &password {
        // The connector's own check, as the new user.
        let user_config = config
            .clone()
            .with_user(wanted.user.clone())
            .with_password(p.clone());
        let source = MySqlSource::new(user_config).with_tables(tables.clone());
        match source.check().await {
            Ok(report) => {
                for problem in report.problems {
                    if plan.steps.iter().any(|s| s.reason == problem.what) {
                        continue;
                    }
                    plan.notes
                        .push(format!("{}; {}", problem.what, problem.fix));
                }
            }
            Err(e) => {
                failed = true;
                plan.steps.push(Step {
                    reason: format!("the connector's check as `{}` failed: {e}", wanted.user),
                    action: Action::Manual {
                        todo: format!(
                            "make sure `{}` can log in from where the connector runs",
                            wanted.user
                        ),
                        restart: false,
                    },
                    required: true,
                });
            }
        }
    }
    for note in &plan.notes {
        writeln!(out, "-- note: {note}")?;
    }
    if plan.steps.is_empty() {
        writeln!(
            out,
            "-- nothing left: `{}` can replicate database {}",
            wanted.user, wanted.database
        )?;
    } else {
        writeln!(out, "-- still to do:")?;
        print_steps(out, &plan.steps)?;
    }
    let outcome = finish(out, &plan.steps)?;
    Ok(if failed { Outcome::Failed } else { outcome })
}

fn server_message(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

/// User names: letters, digits, `_`, `-`, `.`; 1–32 characters (MySQL's limit).
fn validate_user(user: &str) -> Result<(), SourceError> {
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
            database: "app".into(),
            database_exists: true,
            admin: "root@localhost".into(),
            user_grants: Some(vec![
                "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO POWERSYNC@% ".into(),
                "GRANT SELECT ON APP.* TO POWERSYNC@% ".into(),
                "GRANT SELECT, INSERT, UPDATE, CREATE ON APP._POWERSYNC_CHECKPOINTS TO POWERSYNC@% "
                    .into(),
            ]),
            checkpoint_table: true,
            ..Facts::default()
        }
    }

    fn wanted() -> Wanted {
        Wanted {
            user: "powersync".into(),
            database: "app".into(),
        }
    }

    fn shown(plan: &Plan) -> Vec<String> {
        plan.steps.iter().map(|s| s.action.display()).collect()
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
        let text = plan.steps[0].action.display();
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
            .push("GRANT RELOAD, REPLICATION CLIENT ON *.* TO POWERSYNC@% ".into());
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
        let p = plan(&f, &wanted());
        assert_eq!(
            shown(&p),
            vec![
                "CREATE USER 'powersync'@'%' IDENTIFIED BY '<generated by --apply, shown once>';".to_string(),
                "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'powersync'@'%';".into(),
                "GRANT SELECT ON `app`.* TO 'powersync'@'%';".into(),
                format!("CREATE TABLE IF NOT EXISTS `app`.`_powersync_checkpoints` {CHECKPOINT_DDL};"),
                "GRANT SELECT, INSERT, UPDATE, CREATE ON `app`.`_powersync_checkpoints` TO 'powersync'@'%';".into(),
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
    fn older_mariadb_uses_replication_client() {
        let mut f = ready_mariadb();
        f.numbers = (10, 4, 30);
        f.user_grants = Some(vec![]);
        let p = plan(&f, &wanted());
        assert!(shown(&p)[0].contains("REPLICATION SLAVE, REPLICATION CLIENT ON *.*"));
    }
}
