//! Provisioning (Cargo feature `provision`) for SQL Server and Azure SQL Database: CDC on the database and tables, the
//! checkpoint table, the replication user and its rights, and the capture job.
//!
//! The statements follow the crate docs ("Setting up the database") and are the ones the
//! connector's `check()` prints (checkpoint table, capture job, quoting). [`plan`] is a pure function of [`Facts`], golden-tested below on a fresh
//! database (the whole script) and on a ready one (nothing). On SQL Server the capture job is
//! tuned to the recommended values (1 s polling interval, maxtrans 5000, maxscans 10); Azure
//! SQL Database has no SQL Server Agent: the service runs capture on its own schedule (about
//! every 20 s), which no setting changes, so the latency of a change is that much higher.

use std::io::Write;

use powersync_source_core::provision::{
    generate_password, Fix, Outcome, ProvisionError, Report, Request, Step,
};
use powersync_source_core::{SourceError, TableName};

use crate::backend::{checkpoint_table, CHECKPOINT_TABLE, RECOMMENDED_JOB};
use crate::check::{nstring, tune_capture_job, CHECKPOINT_TABLE_DDL};
use crate::tables::{enable_table_sql, quote_ident, quote_table};
use crate::tds::{Row, TdsClient};
use crate::MssqlConfig;

/// One table to replicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFacts {
    /// Schema and name.
    pub name: TableName,
    /// `is_tracked_by_cdc`.
    pub cdc: bool,
    /// The replication user may SELECT from it.
    pub user_select: bool,
}

/// The capture job's settings (`msdb.dbo.cdc_jobs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobFacts {
    /// `pollinginterval`, seconds.
    pub polling_interval: i64,
    /// `maxtrans`.
    pub maxtrans: i64,
    /// `maxscans`.
    pub maxscans: i64,
}

/// What the database looks like.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `SERVERPROPERTY('ProductVersion')`.
    pub version: String,
    /// Azure SQL Database (`EngineEdition` 5): contained users, no Agent, no server rights.
    pub azure_sql_database: bool,
    /// `DB_NAME()`.
    pub database: String,
    /// `sys.databases.is_cdc_enabled`.
    pub cdc_enabled: bool,
    /// `ALLOW_SNAPSHOT_ISOLATION` on.
    pub snapshot_isolation: bool,
    /// The selected tables.
    pub tables: Vec<TableFacts>,
    /// `dbo._powersync_checkpoints` exists / is tracked by CDC.
    pub checkpoint_table: (bool, bool),
    /// A server login of the user's name exists (SQL Server).
    pub login: bool,
    /// A database user of that name exists.
    pub user: bool,
    /// The user's rights: SELECT on schema cdc, rights on the checkpoint table, VIEW
    /// DATABASE (PERFORMANCE) STATE, VIEW SERVER (PERFORMANCE) STATE.
    pub rights: (bool, bool, bool, bool),
    /// The capture job (None: none, or Azure SQL Database).
    pub job: Option<JobFacts>,
    /// The gating roles (`@role_name`) of the selected tables' and the checkpoint table's
    /// capture instances, each with whether the user is a member (PowerSync's own setup uses
    /// `cdc_reader`).
    pub gating_roles: Vec<(String, bool)>,
    /// msdb could not be read: whether a capture job exists is unknown.
    pub job_unknown: bool,
    /// `sys.databases.is_published`: a transactional publication's log reader does the
    /// capture, and "a separate capture job is neither required nor allowed"
    /// (`sys.sp_cdc_add_job`).
    pub published: bool,
}

impl Facts {
    fn major(&self) -> u32 {
        self.version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }

    /// SQL Server 2022 (16) renamed the DMV permissions to `… PERFORMANCE STATE`.
    fn state_right(&self, scope: &str) -> String {
        if self.azure_sql_database || self.major() >= 16 {
            format!("VIEW {scope} PERFORMANCE STATE")
        } else {
            format!("VIEW {scope} STATE")
        }
    }
}

/// The connector's statement enabling CDC on a table, as a step (the script adds the `;`).
fn enable_table(table: &TableName) -> String {
    enable_table_sql(table).trim_end_matches(';').to_owned()
}

/// The steps that make the database ready for `user`.
pub fn plan(facts: &Facts, user: &str) -> (Vec<Step>, Vec<String>) {
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    let sql = |reason: String, statement: String| Step::required(reason, Fix::Sql(statement));
    let u = quote_ident(user);
    let major = facts.major();
    if !facts.azure_sql_database && major != 0 && major < 15 {
        notes.push(format!(
            "SQL Server {} is older than 2019 (15.x), which the connector supports",
            facts.version
        ));
    }
    if facts.tables.is_empty() {
        notes.push("no table is named and none has CDC yet: name the tables to replicate".into());
    }
    if !facts.cdc_enabled {
        steps.push(sql(
            format!("CDC is off on database {}", facts.database),
            "EXEC sys.sp_cdc_enable_db".into(),
        ));
    }
    if !facts.snapshot_isolation {
        steps.push(sql(
            "snapshot isolation is off (the exact initial snapshot reads in a SNAPSHOT transaction)".into(),
            "ALTER DATABASE CURRENT SET ALLOW_SNAPSHOT_ISOLATION ON".into(),
        ));
    }
    for t in facts.tables.iter().filter(|t| !t.cdc) {
        steps.push(sql(
            format!("CDC is off on table {}.{}", t.name.schema, t.name.name),
            enable_table(&t.name),
        ));
    }
    let checkpoint = checkpoint_table();
    if !facts.checkpoint_table.0 {
        steps.push(sql(
            "the checkpoint table dbo._powersync_checkpoints is missing (write checkpoints and the exact snapshot start use it)".into(),
            CHECKPOINT_TABLE_DDL.into(),
        ));
    }
    if !facts.checkpoint_table.1 {
        steps.push(sql(
            "CDC is off on dbo._powersync_checkpoints".into(),
            enable_table(&checkpoint),
        ));
    }
    if facts.azure_sql_database {
        if !facts.user {
            steps.push(Step::required(
                format!(
                    "the replication user `{user}` does not exist (Azure SQL Database: a contained user)"
                ),
                Fix::CreateUser {
                    head: format!("CREATE USER {u} WITH PASSWORD = "),
                    tail: String::new(),
                },
            ));
        }
    } else {
        if !facts.login {
            steps.push(Step::required(
                format!("the login `{user}` does not exist"),
                Fix::CreateUser {
                    head: format!("CREATE LOGIN {u} WITH PASSWORD = "),
                    tail: format!(", DEFAULT_DATABASE = {}", quote_ident(&facts.database)),
                },
            ));
        }
        if !facts.user {
            steps.push(sql(
                format!(
                    "the login `{user}` has no user in database {}",
                    facts.database
                ),
                format!("CREATE USER {u} FOR LOGIN {u}"),
            ));
        }
    }
    for t in facts.tables.iter().filter(|t| !t.user_select) {
        steps.push(sql(
            format!(
                "`{user}` cannot read {}.{} (snapshot)",
                t.name.schema, t.name.name
            ),
            format!("GRANT SELECT ON {} TO {u}", quote_table(&t.name)),
        ));
    }
    for (role, _) in facts.gating_roles.iter().filter(|(_, member)| !member) {
        steps.push(sql(
            format!("`{user}` is not a member of {role}, the gating role of capture instances it reads (SQL Server hides their changes from others)"),
            format!("ALTER ROLE {} ADD MEMBER {u}", quote_ident(role)),
        ));
    }
    let (cdc, checkpoint_rw, db_state, server_state) = facts.rights;
    if !cdc {
        steps.push(sql(
            format!("`{user}` cannot read the change tables (schema cdc)"),
            format!("GRANT SELECT ON SCHEMA::cdc TO {u}"),
        ));
    }
    if !checkpoint_rw {
        steps.push(sql(
            format!("`{user}` must write dbo._powersync_checkpoints"),
            format!("GRANT SELECT, INSERT, DELETE ON dbo._powersync_checkpoints TO {u}"),
        ));
    }
    if !db_state {
        let right = facts.state_right("DATABASE");
        steps.push(sql(
            format!("`{user}` lacks {right} (lag and capture state)"),
            format!("GRANT {right} TO {u}"),
        ));
    }
    if !facts.azure_sql_database && !server_state {
        // No statement of the connector needs it (check() warns only).
        let right = facts.state_right("SERVER");
        steps.push(Step::recommended(
            format!("`{user}` lacks {right} (only monitoring of the capture job would use it)"),
            Fix::Sql(format!(
                "USE master; GRANT {right} TO {u}; USE {}",
                quote_ident(&facts.database)
            )),
        ));
    }
    if facts.azure_sql_database {
        notes.push("Azure SQL Database runs CDC capture on its own scheduler, about every 20 s; no setting changes that, so changes arrive up to ~20 s (+ the connector's polling interval) after commit".into());
    } else {
        // The first sp_cdc_enable_table of the database creates the capture job
        // (sys.sp_cdc_add_job: adding one is needed "only when a job has been explicitly
        // dropped"); sp_cdc_enable_db does not.
        let enables_a_table =
            !facts.cdc_enabled || facts.tables.iter().any(|t| !t.cdc) || !facts.checkpoint_table.1;
        let (pi, mt, ms) = RECOMMENDED_JOB;
        match facts.job {
            _ if facts.published => notes.push("the database is published for transactional replication: its log reader does the CDC capture (no capture job)".into()),
            None if facts.job_unknown => notes.push("msdb.dbo.cdc_jobs is not readable with this account: the capture job was not checked".into()),
            None if enables_a_table => steps.push(Step::recommended(
                format!("tune the capture job that the first sp_cdc_enable_table creates (defaults: 5 s, 500, 10) to the recommended {pi} s, {mt}, {ms}"),
                Fix::Sql(tune_capture_job()),
            )),
            None => steps.push(Step::required(
                "the CDC capture job is missing",
                Fix::Sql("EXEC sys.sp_cdc_add_job @job_type = N'capture'".into()),
            )),
            Some(job) if (job.polling_interval, job.maxtrans, job.maxscans) != RECOMMENDED_JOB => {
                steps.push(Step::recommended(
                    format!(
                        "the capture job runs every {} s with maxtrans {} and maxscans {}; recommended: {pi} s, {mt}, {ms} (lower latency, larger batches)",
                        job.polling_interval, job.maxtrans, job.maxscans
                    ),
                    Fix::Sql(tune_capture_job()),
                ))
            }
            Some(_) => {}
        }
        notes.push("SQL Server Agent must be running: it runs the capture job".into());
    }
    (steps, notes)
}

fn text(row: &Row, i: usize) -> String {
    row.get::<&str, _>(i).unwrap_or_default().to_string()
}

fn flag(row: &Row, i: usize) -> bool {
    row.try_get::<i32, _>(i).ok().flatten().unwrap_or(0) != 0
}

/// The tables setup prepares: the requested ones (schema `dbo` when not given), or, like the
/// connector, every table that already has CDC (never every user table: enabling CDC on all of
/// them is not what a source without a table list replicates). Each with its CDC flag.
fn selected_tables(
    listed: &[(TableName, bool)],
    requested: &[TableName],
) -> Vec<(TableName, bool)> {
    if requested.is_empty() {
        return listed
            .iter()
            .filter(|(t, cdc)| *cdc && t.name != CHECKPOINT_TABLE && t.schema != "cdc")
            .cloned()
            .collect();
    }
    requested
        .iter()
        .map(|t| {
            let t = if t.schema.is_empty() {
                TableName::new("dbo", &t.name)
            } else {
                t.clone()
            };
            let cdc = listed.iter().any(|(l, c)| *l == t && *c);
            (t, cdc)
        })
        .collect()
}

/// The select list of the database-level rights probe, run as the user (`EXECUTE AS USER`):
/// SELECT on schema cdc, SELECT/INSERT/DELETE on the checkpoint table (what `check()`
/// requires), the database state right, then SELECT on each table. Server rights are not
/// here: "a context switch to a database user does not inherit the server-level permissions of
/// that user" (EXECUTE AS), see [`server_state_probe`].
fn rights_probe(database_state_right: String, tables: &[(TableName, bool)]) -> String {
    let ck = "'dbo._powersync_checkpoints', 'OBJECT'";
    let mut probes = vec![
        "HAS_PERMS_BY_NAME('cdc', 'SCHEMA', 'SELECT')".to_string(),
        format!("HAS_PERMS_BY_NAME({ck}, 'SELECT') * HAS_PERMS_BY_NAME({ck}, 'INSERT') * HAS_PERMS_BY_NAME({ck}, 'DELETE')"),
        format!("HAS_PERMS_BY_NAME(NULL, 'DATABASE', '{database_state_right}')"),
    ];
    for (t, _) in tables {
        probes.push(format!(
            "HAS_PERMS_BY_NAME({}, 'OBJECT', 'SELECT')",
            nstring(&quote_table(t))
        ));
    }
    probes
        .iter()
        .map(|p| format!("CAST(COALESCE({p}, 0) AS int)"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether the login holds `right` on the server (granted directly, or as sysadmin), read from
/// the catalog by the administrator running setup (no impersonation).
fn server_state_probe(user: &str, right: &str) -> String {
    let n = nstring(user);
    format!(
        "SELECT CAST(CASE WHEN IS_SRVROLEMEMBER(N'sysadmin', {n}) = 1 OR EXISTS (SELECT 1 FROM sys.server_permissions p \
         JOIN sys.server_principals sp ON sp.principal_id = p.grantee_principal_id WHERE sp.name = {n} \
         AND p.permission_name IN ({}, N'VIEW SERVER STATE') AND p.state IN ('G', 'W')) THEN 1 ELSE 0 END AS int)",
        nstring(right)
    )
}

/// Reads what [`plan`] needs.
pub async fn read_facts(
    client: &TdsClient,
    user: &str,
    tables: &[TableName],
) -> Result<Facts, SourceError> {
    let rows = client
        .query(
            "SELECT CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)), \
             CAST(SERVERPROPERTY('EngineEdition') AS int), DB_NAME(), \
             CAST(d.is_cdc_enabled AS int), CAST(CASE WHEN d.snapshot_isolation_state = 1 THEN 1 ELSE 0 END AS int), \
             CAST(d.is_published AS int) \
             FROM sys.databases d WHERE d.name = DB_NAME()"
                .into(),
            vec![],
            "reading the server and database",
        )
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| SourceError::prerequisite("the current database is not in sys.databases"))?;
    let mut facts = Facts {
        version: text(row, 0),
        azure_sql_database: row.try_get::<i32, _>(1).ok().flatten() == Some(5),
        database: text(row, 2),
        cdc_enabled: flag(row, 3),
        snapshot_isolation: flag(row, 4),
        published: flag(row, 5),
        ..Facts::default()
    };
    let tracked = "SELECT s.name, t.name, CAST(t.is_tracked_by_cdc AS int) FROM sys.tables t \
                   JOIN sys.schemas s ON s.schema_id = t.schema_id WHERE t.is_ms_shipped = 0";
    let all = client
        .query(tracked.into(), vec![], "listing tables")
        .await?;
    let listed: Vec<(TableName, bool)> = all
        .iter()
        .map(|r| (TableName::new(text(r, 0), text(r, 1)), flag(r, 2)))
        .collect();
    let checkpoint = listed
        .iter()
        .find(|(t, _)| t.schema == "dbo" && t.name == CHECKPOINT_TABLE);
    facts.checkpoint_table = (checkpoint.is_some(), checkpoint.is_some_and(|(_, c)| *c));
    let selected = selected_tables(&listed, tables);
    let principal = client
        .query(
            format!(
                "SELECT CAST(CASE WHEN EXISTS (SELECT 1 FROM sys.database_principals WHERE name = {n}) THEN 1 ELSE 0 END AS int), \
                 CAST(CASE WHEN EXISTS (SELECT 1 FROM sys.server_principals WHERE name = {n}) THEN 1 ELSE 0 END AS int)",
                n = nstring(user)
            ),
            vec![],
            "looking up the replication user",
        )
        .await?;
    if let Some(r) = principal.first() {
        facts.user = flag(r, 0);
        facts.login = flag(r, 1);
    }
    let mut rights = (false, false, false, false);
    let mut table_rights = vec![false; selected.len()];
    if facts.user {
        let select = rights_probe(facts.state_right("DATABASE"), &selected);
        let rows = client
            .query(
                format!(
                    "EXECUTE AS USER = {}; SELECT {select}; REVERT;",
                    nstring(user)
                ),
                vec![],
                "reading the replication user's rights",
            )
            .await?;
        if let Some(r) = rows.first() {
            rights = (flag(r, 0), flag(r, 1), flag(r, 2), true);
            for (i, ok) in table_rights.iter_mut().enumerate() {
                *ok = flag(r, 3 + i);
            }
        }
        if !facts.azure_sql_database && facts.login {
            let rows = client
                .query(
                    server_state_probe(user, &facts.state_right("SERVER")),
                    vec![],
                    "reading the replication login's server rights",
                )
                .await?;
            rights.3 = rows.first().is_some_and(|r| flag(r, 0));
        }
    }
    facts.rights = rights;
    if facts.cdc_enabled {
        let rows = client
            .query(
                format!(
                    "SELECT DISTINCT CAST(OBJECT_SCHEMA_NAME(source_object_id) AS nvarchar(128)), \
                     CAST(OBJECT_NAME(source_object_id) AS nvarchar(128)), CAST(role_name AS nvarchar(128)), \
                     CAST(ISNULL(IS_ROLEMEMBER(role_name, {}), 0) AS int) \
                     FROM cdc.change_tables WHERE role_name IS NOT NULL",
                    nstring(user)
                ),
                vec![],
                "reading the capture instances' gating roles",
            )
            .await?;
        let checkpoint = checkpoint_table();
        for r in &rows {
            let table = TableName::new(text(r, 0), text(r, 1));
            let read = table == checkpoint || selected.iter().any(|(t, _)| *t == table);
            let role = text(r, 2);
            if read && !facts.gating_roles.iter().any(|(g, _)| *g == role) {
                facts.gating_roles.push((role, flag(r, 3)));
            }
        }
    }
    facts.tables = selected
        .into_iter()
        .zip(table_rights)
        .map(|((name, cdc), user_select)| TableFacts {
            name,
            cdc,
            user_select,
        })
        .collect();
    if !facts.azure_sql_database {
        // msdb may be unreadable for this account: then the job is reported as unknown.
        facts.job_unknown = true;
        if let Ok(rows) = client
            .query(
                "SELECT CAST(pollinginterval AS bigint), CAST(maxtrans AS bigint), CAST(maxscans AS bigint) \
                 FROM msdb.dbo.cdc_jobs WHERE database_id = DB_ID() AND job_type = N'capture'"
                    .into(),
                vec![],
                "reading the capture job",
            )
            .await
        {
            facts.job_unknown = false;
            facts.job = rows.first().map(|r| JobFacts {
                polling_interval: r.try_get::<i64, _>(0).ok().flatten().unwrap_or(0),
                maxtrans: r.try_get::<i64, _>(1).ok().flatten().unwrap_or(0),
                maxscans: r.try_get::<i64, _>(2).ok().flatten().unwrap_or(0),
            });
        }
    }
    Ok(facts)
}

/// Whether a failed setup statement is worth running again: right after `sp_cdc_enable_db`,
/// `sp_cdc_enable_table` can fail while SQL Server Agent and the CDC metadata settle (errors
/// 22832, 22836 and 14258; powersync-service's `ci/init-mssql.sql` retries exactly these).
fn transient(e: &SourceError) -> bool {
    matches!(e.code(), Some("22832" | "22836" | "14258"))
}

/// Runs one setup statement, again (up to 5 times, 2 s apart) after a [`transient`] failure.
async fn run_step(client: &TdsClient, statement: String) -> Result<(), SourceError> {
    let mut attempt = 1;
    loop {
        match client
            .batch(statement.clone(), "running the setup step")
            .await
        {
            Err(e) if attempt < 5 && transient(&e) => {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Prepares the database `config` names (with an administrative account) for `request`:
/// prints the steps, or runs them one by one when `request.apply` is set (a failure stops
/// the run with what ran before it kept), and says how it ended.
pub async fn run(
    config: &MssqlConfig,
    request: &Request,
    out: &mut dyn Write,
) -> Result<Outcome, ProvisionError> {
    let user = request.user.as_str();
    let tables = &request.tables;
    let client = TdsClient::connect(config).await?;
    let facts = read_facts(&client, user, tables).await?;
    let (steps, notes) = plan(&facts, user);
    let mut report = Report::new(out);
    report.comment(format_args!(
        "setup: {} {}, database {}",
        if facts.azure_sql_database {
            "Azure SQL Database"
        } else {
            "SQL Server"
        },
        facts.version,
        facts.database
    ))?;
    report.comment(format_args!("replication user: {user}"))?;
    report.notes(&notes)?;
    if !request.apply || steps.is_empty() {
        report.steps(&steps)?;
        if steps.is_empty() {
            report.comment("nothing to change")?;
        } else {
            report.blank()?;
            report.comment("run again with --apply to execute these statements")?;
        }
        return Ok(report.finish(&steps)?);
    }
    let mut password = None;
    let mut failed = false;
    for (i, step) in steps.iter().enumerate() {
        report.step(i, step)?;
        let statement = match &step.fix {
            Fix::Manual { .. } => {
                report.comment("skipped: do it as described")?;
                continue;
            }
            Fix::CreateUser { .. } => {
                let p = generate_password();
                let s = step.fix.statement(&nstring(p.expose()));
                password = Some(p);
                s
            }
            fix => fix.statement(""),
        };
        let Some(statement) = statement else { continue };
        match run_step(&client, statement).await {
            Ok(()) => report.comment("done")?,
            Err(e) => {
                if matches!(step.fix, Fix::CreateUser { .. }) {
                    password = None;
                }
                report.step_failed(e)?;
                failed = true;
                break;
            }
        }
    }
    if let Some(p) = &password {
        report.password(user, p)?;
    }
    report.blank()?;
    report.comment("checking again")?;
    let facts = read_facts(&client, user, tables).await?;
    let (steps, _) = plan(&facts, user);
    report.steps(&steps)?;
    let outcome = report.finish(&steps)?;
    Ok(if failed { Outcome::Failed } else { outcome })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(azure: bool) -> Facts {
        Facts {
            version: if azure { "12.0.2000.8" } else { "16.0.4135.4" }.into(),
            azure_sql_database: azure,
            database: "shop".into(),
            tables: vec![TableFacts {
                name: TableName::new("dbo", "orders"),
                cdc: false,
                user_select: false,
            }],
            ..Facts::default()
        }
    }

    fn script(facts: &Facts) -> String {
        let (steps, _) = plan(facts, "powersync");
        steps
            .iter()
            .map(|s| s.fix.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The golden script for a fresh SQL Server 2022 database.
    #[test]
    fn fresh_sql_server_database() {
        let expected = "\
EXEC sys.sp_cdc_enable_db;
ALTER DATABASE CURRENT SET ALLOW_SNAPSHOT_ISOLATION ON;
EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'orders', @role_name = NULL, @supports_net_changes = 0;
CREATE TABLE dbo._powersync_checkpoints (id bigint IDENTITY PRIMARY KEY, token varchar(64) NOT NULL, created_at datetime2 NOT NULL DEFAULT SYSUTCDATETIME());
EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'_powersync_checkpoints', @role_name = NULL, @supports_net_changes = 0;
CREATE LOGIN [powersync] WITH PASSWORD = '<generated by --apply, shown once>', DEFAULT_DATABASE = [shop];
CREATE USER [powersync] FOR LOGIN [powersync];
GRANT SELECT ON [dbo].[orders] TO [powersync];
GRANT SELECT ON SCHEMA::cdc TO [powersync];
GRANT SELECT, INSERT, DELETE ON dbo._powersync_checkpoints TO [powersync];
GRANT VIEW DATABASE PERFORMANCE STATE TO [powersync];
USE master; GRANT VIEW SERVER PERFORMANCE STATE TO [powersync]; USE [shop];
{};";
        let expected = expected.replace("{}", &tune_capture_job());
        assert_eq!(script(&fresh(false)), expected);
    }

    /// The golden script for a fresh Azure SQL database: a contained user, no server rights,
    /// no capture job to tune.
    #[test]
    fn fresh_azure_sql_database() {
        let expected = "\
EXEC sys.sp_cdc_enable_db;
ALTER DATABASE CURRENT SET ALLOW_SNAPSHOT_ISOLATION ON;
EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'orders', @role_name = NULL, @supports_net_changes = 0;
CREATE TABLE dbo._powersync_checkpoints (id bigint IDENTITY PRIMARY KEY, token varchar(64) NOT NULL, created_at datetime2 NOT NULL DEFAULT SYSUTCDATETIME());
EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'_powersync_checkpoints', @role_name = NULL, @supports_net_changes = 0;
CREATE USER [powersync] WITH PASSWORD = '<generated by --apply, shown once>';
GRANT SELECT ON [dbo].[orders] TO [powersync];
GRANT SELECT ON SCHEMA::cdc TO [powersync];
GRANT SELECT, INSERT, DELETE ON dbo._powersync_checkpoints TO [powersync];
GRANT VIEW DATABASE PERFORMANCE STATE TO [powersync];";
        assert_eq!(script(&fresh(true)), expected);
        let (_, notes) = plan(&fresh(true), "powersync");
        assert!(notes.iter().any(|n| n.contains("20 s")));
    }

    #[test]
    fn ready_database_needs_nothing_and_2019_uses_the_old_right_names() {
        let mut f = fresh(false);
        f.cdc_enabled = true;
        f.snapshot_isolation = true;
        f.tables[0].cdc = true;
        f.tables[0].user_select = true;
        f.checkpoint_table = (true, true);
        f.login = true;
        f.user = true;
        f.rights = (true, true, true, true);
        f.job = Some(JobFacts {
            polling_interval: 1,
            maxtrans: 5000,
            maxscans: 10,
        });
        assert_eq!(script(&f), "");

        f.version = "15.0.4345.5".into();
        f.rights = (true, true, false, false);
        f.job = Some(JobFacts {
            polling_interval: 5,
            maxtrans: 500,
            maxscans: 10,
        });
        let (steps, _) = plan(&f, "powersync");
        let text = script(&f);
        assert!(
            text.contains("GRANT VIEW DATABASE STATE TO [powersync];"),
            "{text}"
        );
        assert!(
            text.contains("GRANT VIEW SERVER STATE TO [powersync];"),
            "{text}"
        );
        assert!(steps
            .last()
            .is_some_and(|s| !s.required && s.reason.contains("every 5 s")));
    }

    /// Review finding 7: the server right is read from the catalog, never under `EXECUTE AS
    /// USER` (which has no server-level permissions, so setup never reported ready); it is only
    /// recommended (check() warns), and the checkpoint probe includes the SELECT check() needs.
    #[test]
    fn rights_are_probed_where_they_are_visible_and_server_state_is_optional() {
        let probe = rights_probe(
            "VIEW DATABASE PERFORMANCE STATE".into(),
            &[(TableName::new("dbo", "orders"), true)],
        );
        assert!(!probe.contains("SERVER"), "{probe}");
        assert!(
            probe.contains("HAS_PERMS_BY_NAME('dbo._powersync_checkpoints', 'OBJECT', 'SELECT')"),
            "{probe}"
        );
        let server = server_state_probe("power'sync", "VIEW SERVER PERFORMANCE STATE");
        assert!(!server.contains("EXECUTE AS"), "{server}");
        assert!(server.contains("sp.name = N'power''sync'"), "{server}");

        let mut f = fresh(false);
        f.cdc_enabled = true;
        f.snapshot_isolation = true;
        f.tables[0].cdc = true;
        f.tables[0].user_select = true;
        f.checkpoint_table = (true, true);
        f.login = true;
        f.user = true;
        f.rights = (true, true, true, false);
        f.job = Some(JobFacts {
            polling_interval: 1,
            maxtrans: 5000,
            maxscans: 10,
        });
        let (steps, _) = plan(&f, "powersync");
        assert_eq!(steps.len(), 1);
        assert!(!steps[0].required, "{:?}", steps[0].reason);
    }

    /// Review finding 8: the first `sp_cdc_enable_table` creates the capture job, so
    /// `sp_cdc_add_job` is planned only when no table is enabled by the plan; never for a
    /// published database or when msdb could not be read. The restart waits for the stop.
    #[test]
    fn the_capture_job_is_added_only_when_nothing_else_creates_it() {
        let mut f = fresh(false);
        f.cdc_enabled = true;
        f.checkpoint_table = (true, true);
        let add = |f: &Facts| script(f).contains("sp_cdc_add_job");
        // A table still to enable: its sp_cdc_enable_table creates the job; tune it.
        assert!(!add(&f));
        assert!(script(&f).contains("sp_cdc_change_job"));
        f.tables[0].cdc = true;
        assert!(add(&f));
        f.job_unknown = true;
        assert!(!add(&f));
        f.job_unknown = false;
        f.published = true;
        assert!(!add(&f));
        let tune = tune_capture_job();
        assert!(
            tune.contains("BEGIN TRY EXEC sys.sp_cdc_stop_job @job_type = N'capture'; END TRY BEGIN CATCH END CATCH;"),
            "{tune}"
        );
        assert!(tune.contains("WAITFOR DELAY"), "{tune}");
        assert!(tune.ends_with("EXEC sys.sp_cdc_start_job @job_type = N'capture'"));
    }

    /// Without a table list setup prepares what the connector replicates then: the tables
    /// that have CDC, not every user table; a name without schema means `dbo`.
    #[test]
    fn the_default_selection_is_the_connectors() {
        let listed = vec![
            (TableName::new("dbo", "orders"), true),
            (TableName::new("dbo", "audit"), false),
            (TableName::new("dbo", CHECKPOINT_TABLE), true),
        ];
        assert_eq!(
            selected_tables(&listed, &[]),
            vec![(TableName::new("dbo", "orders"), true)]
        );
        assert_eq!(
            selected_tables(&listed, &[TableName::new("", "audit")]),
            vec![(TableName::new("dbo", "audit"), false)]
        );
        let mut f = fresh(false);
        f.tables.clear();
        let (_, notes) = plan(&f, "powersync");
        assert!(
            notes.iter().any(|n| n.contains("name the tables")),
            "{notes:?}"
        );
    }

    /// A PowerSync-prepared database gates its instances with `cdc_reader`: the user is added
    /// to the role (required: SQL Server hides gated changes from non-members).
    #[test]
    fn a_gating_role_gets_the_user_as_member() {
        let mut f = fresh(false);
        f.cdc_enabled = true;
        f.gating_roles = vec![("cdc_reader".into(), false), ("other".into(), true)];
        let (steps, _) = plan(&f, "powersync");
        let adds: Vec<_> = steps
            .iter()
            .filter(|s| s.fix.to_string().starts_with("ALTER ROLE"))
            .collect();
        assert_eq!(adds.len(), 1);
        assert!(adds[0].required);
        assert_eq!(
            adds[0].fix.to_string(),
            "ALTER ROLE [cdc_reader] ADD MEMBER [powersync];"
        );
    }

    #[test]
    fn cdc_metadata_races_are_retried_other_failures_not() {
        let with = |code: &str| SourceError::connection("x").with_code(code);
        assert!(transient(&with("22832")));
        assert!(transient(&with("22836")));
        assert!(transient(&with("14258")));
        assert!(!transient(&with("229")));
        assert!(!transient(&SourceError::connection("no code")));
    }

    #[test]
    fn names_are_quoted() {
        let mut f = fresh(true);
        f.tables[0].name = TableName::new("sales", "o'rders]x");
        let text = script(&f);
        assert!(text.contains("@source_name = N'o''rders]x'"), "{text}");
        assert!(
            text.contains("GRANT SELECT ON [sales].[o'rders]]x] TO"),
            "{text}"
        );
    }
}
