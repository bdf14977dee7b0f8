//! Prerequisite checks: every problem found, each with the SQL that fixes it (the structured
//! [`Fix`] is what `setup --apply` runs). The statements the `provision` planner shares with
//! it (checkpoint table, capture job tuning, string literals) are defined here, once.

use std::time::Duration;

use powersync_source_core::provision::Fix;
use powersync_source_core::{CheckReport, Problem, Result, TableName};

use crate::backend::{checkpoint_table, timed, CdcBackend, CheckpointShape, RECOMMENDED_JOB};
use crate::tables::{
    by_table, enable_table_sql, key_positions, load_instances, quote_ident, select,
};

/// The statement that creates the checkpoint table (CDC is enabled on it separately).
#[cfg_attr(not(feature = "provision"), allow(dead_code))]
pub(crate) const CHECKPOINT_TABLE_DDL: &str = "CREATE TABLE dbo._powersync_checkpoints (id bigint IDENTITY PRIMARY KEY, token varchar(64) NOT NULL, created_at datetime2 NOT NULL DEFAULT SYSUTCDATETIME())";

/// `s` as a T-SQL Unicode string literal (`N'it''s'`).
#[cfg_attr(not(feature = "provision"), allow(dead_code))]
pub(crate) fn nstring(s: &str) -> String {
    format!("N'{}'", s.replace('\'', "''"))
}

/// The statements that set the capture job to [`RECOMMENDED_JOB`] and restart it (new
/// settings apply at the next start). `sp_cdc_stop_job` fails when the job is not running and
/// returns before the job has stopped, so its failure is ignored and the start waits (up to
/// 30 s) until SQL Server Agent no longer shows the job running in its current session.
pub(crate) fn tune_capture_job() -> String {
    let (pi, mt, ms) = RECOMMENDED_JOB;
    format!("EXEC sys.sp_cdc_change_job @job_type = N'capture', @pollinginterval = {pi}, @maxtrans = {mt}, @maxscans = {ms}; \
BEGIN TRY EXEC sys.sp_cdc_stop_job @job_type = N'capture'; END TRY BEGIN CATCH END CATCH; \
DECLARE @waited int = 0; \
WHILE @waited < 30 AND EXISTS (SELECT 1 FROM msdb.dbo.cdc_jobs j JOIN msdb.dbo.sysjobactivity a ON a.job_id = j.job_id \
WHERE j.database_id = DB_ID() AND j.job_type = N'capture' AND a.session_id = (SELECT MAX(session_id) FROM msdb.dbo.syssessions) \
AND a.start_execution_date IS NOT NULL AND a.stop_execution_date IS NULL) \
BEGIN WAITFOR DELAY '00:00:01'; SET @waited += 1; END; \
EXEC sys.sp_cdc_start_job @job_type = N'capture'")
}

/// A statement as [`Fix::Sql`], without its closing `;` (the printed script adds it).
fn sql(statement: &str) -> Fix {
    Fix::Sql(statement.trim_end().trim_end_matches(';').to_owned())
}

/// The SQL that creates the checkpoint table and enables CDC on it.
pub const CHECKPOINT_TABLE_SQL: &str = "CREATE TABLE dbo._powersync_checkpoints (id bigint IDENTITY PRIMARY KEY, token varchar(64) NOT NULL, created_at datetime2 NOT NULL DEFAULT SYSUTCDATETIME()); EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'_powersync_checkpoints', @role_name = NULL, @supports_net_changes = 0;";

/// Runs every check on `b` for the tables `requested` (empty = every CDC table).
pub async fn check(
    b: &mut dyn CdcBackend,
    requested: &[TableName],
    t_out: Duration,
) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let info = timed(t_out, b.server_info()).await?;
    report.server_version = Some(format!(
        "SQL Server {} (engine edition {})",
        info.product_version, info.engine_edition
    ));
    let db = quote_ident(&info.database);
    if !info.is_azure() && info.major_version().is_none_or(|m| m < 15) {
        report.error(
            "version",
            format!(
                "SQL Server {} is older than SQL Server 2019 (15.0)",
                info.product_version
            ),
            "upgrade to SQL Server 2019 or newer, or use Azure SQL Database / Managed Instance",
        );
    }
    if !info.cdc_enabled {
        report.push(
            Problem::error(
                "is_cdc_enabled",
                format!("CDC is not enabled on database {}", info.database),
                format!("USE {db}; EXEC sys.sp_cdc_enable_db; (sysadmin on SQL Server, db_owner on Azure SQL)"),
            )
            .with_remedy(sql("EXEC sys.sp_cdc_enable_db")),
        );
        // Nothing below can be read without the cdc schema.
        return Ok(report);
    }
    if !info.snapshot_isolation {
        let fix = format!("ALTER DATABASE {db} SET ALLOW_SNAPSHOT_ISOLATION ON;");
        report.push(
            Problem::error(
                "ALLOW_SNAPSHOT_ISOLATION",
                format!(
                    "snapshot isolation is off on database {}: the initial snapshot needs it",
                    info.database
                ),
                fix.clone(),
            )
            .with_remedy(sql(&fix)),
        );
    }
    let all = by_table(&load_instances(b, t_out).await?);
    let tables = match select(&all, requested) {
        Ok(t) => t,
        Err(_) => {
            // Report each missing table with its fix; check the rest.
            let mut ok = Vec::new();
            for t in requested {
                let t = if t.schema.is_empty() {
                    TableName::new("dbo", &t.name)
                } else {
                    t.clone()
                };
                if all.contains_key(&t) {
                    ok.push(t);
                } else {
                    let exists = timed(t_out, b.table_exists(&t)).await?;
                    let what = if exists {
                        format!("CDC is not enabled on table {t}")
                    } else {
                        format!("table {t} does not exist")
                    };
                    report.error(format!("cdc table {t}"), what, enable_table_sql(&t));
                }
            }
            ok
        }
    };
    if tables.is_empty() && requested.is_empty() {
        report.error(
            "cdc tables",
            "no table of the database has CDC enabled",
            enable_table_sql(&TableName::new("dbo", "<table>")),
        );
    }
    for t in &tables {
        if let Some(list) = all.get(t) {
            if list.last().is_some_and(|i| key_positions(i).is_empty()) {
                report.error(
                    format!("primary key {t}"),
                    format!("table {t} has no primary key (or its capture instance does not capture all key columns): rows cannot be keyed nor snapshotted in chunks"),
                    format!("ALTER TABLE {} ADD CONSTRAINT PK_... PRIMARY KEY (...); then recreate its capture instance", crate::tables::quote_table(t)),
                );
            }
        }
    }
    if !all.contains_key(&checkpoint_table()) {
        report.push(
            Problem::error(
                "_powersync_checkpoints",
                "the checkpoint table dbo._powersync_checkpoints is missing or has no CDC capture instance (write checkpoints and the exact snapshot start need it)",
                CHECKPOINT_TABLE_SQL,
            )
            .with_remedy(sql(CHECKPOINT_TABLE_SQL)),
        );
    }
    // Gating roles of the instances read: CDC answers a non-member with zeros from
    // sys.fn_cdc_get_min_lsn and fails its change functions (PowerSync's own setup enables CDC
    // with @role_name = N'cdc_reader').
    let mut roles: Vec<String> = Vec::new();
    for t in tables.iter().chain(std::iter::once(&checkpoint_table())) {
        for i in all.get(t).into_iter().flatten() {
            if let Some(r) = &i.role_name {
                if !roles.contains(r) {
                    roles.push(r.clone());
                }
            }
        }
    }
    let ckpt_instance = all.get(&checkpoint_table()).and_then(|l| l.last());
    if let Some(i) = ckpt_instance {
        if CheckpointShape::of(i).is_none() {
            report.error(
                "_powersync_checkpoints columns",
                "dbo._powersync_checkpoints (as its capture instance captures it) has neither the connector's columns (token, created_at) nor the PowerSync service's (id, last_updated)",
                format!("DROP TABLE dbo._powersync_checkpoints; {CHECKPOINT_TABLE_SQL}"),
            );
        }
    }
    let perms = timed(
        t_out,
        b.permissions(&tables, &roles, info.is_azure_sql_database()),
    )
    .await?;
    for (role, member) in &perms.gating_roles {
        if !member {
            let fix = format!("ALTER ROLE {} ADD MEMBER <user>;", quote_ident(role));
            report.error(
                format!("gating role {role}"),
                format!("the user is not a member of {role}, the gating role of capture instances it must read: SQL Server hides their changes from it (sys.fn_cdc_get_min_lsn answers zeros)"),
                fix,
            );
        }
    }
    for (t, ok) in &perms.select_tables {
        if !ok {
            report.error(
                format!("SELECT on {t}"),
                format!("the user cannot read table {t}"),
                format!(
                    "GRANT SELECT ON {} TO <user>;",
                    crate::tables::quote_table(t)
                ),
            );
        }
    }
    if !perms.select_cdc {
        report.error(
            "cdc schema",
            "the user cannot read the change tables (schema cdc)",
            "GRANT SELECT ON SCHEMA::cdc TO <user>; (or add the user to the capture instances' gating role / a cdc_reader role holding that grant)",
        );
    }
    if !perms.checkpoint_rw && all.contains_key(&checkpoint_table()) {
        report.error(
            "_powersync_checkpoints permissions",
            "the user cannot read, insert into and delete from dbo._powersync_checkpoints",
            "GRANT SELECT, INSERT, DELETE ON dbo._powersync_checkpoints TO <user>;",
        );
    }
    if !perms.view_database_state {
        report.error(
            "VIEW DATABASE PERFORMANCE STATE",
            "the user cannot see the database's CDC and performance state",
            "GRANT VIEW DATABASE PERFORMANCE STATE TO <user>; (VIEW DATABASE STATE before SQL Server 2022)",
        );
    }
    if perms.view_server_state == Some(false) {
        // No statement of the connector needs it: a DBA may decline it.
        report.push(Problem::warning(
            "VIEW SERVER PERFORMANCE STATE",
            "the login cannot see the server's state (only monitoring of the capture job would use it)",
            "USE master; GRANT VIEW SERVER PERFORMANCE STATE TO <login>; (VIEW SERVER STATE before SQL Server 2022)",
        ));
    }
    if !info.is_azure_sql_database() && !info.published {
        match timed(t_out, b.capture_job()).await? {
            None => report.push(
                Problem::error(
                    "capture job",
                    "the database has no CDC capture job",
                    "EXEC sys.sp_cdc_add_job @job_type = N'capture'; and make sure SQL Server Agent runs",
                )
                .with_remedy(sql("EXEC sys.sp_cdc_add_job @job_type = N'capture'")),
            ),
            Some(job) => {
                if job.running == Some(false) {
                    report.error(
                        "capture job",
                        "the CDC capture job is not running: no change reaches the change tables",
                        "start SQL Server Agent, then EXEC sys.sp_cdc_start_job @job_type = N'capture';",
                    );
                }
                let (pi, mt, ms) = RECOMMENDED_JOB;
                let far = |v: i64, r: i64| v > 2 * r || v * 2 < r;
                if far(job.polling_interval_secs, pi) || far(job.maxtrans, mt) || far(job.maxscans, ms) {
                    report.push(
                        Problem::warning(
                            "capture job settings",
                            format!(
                                "capture job runs with pollinginterval {} s, maxtrans {}, maxscans {} (recommended {pi} s, {mt}, {ms}): changes reach the stream later or in smaller steps",
                                job.polling_interval_secs, job.maxtrans, job.maxscans
                            ),
                            format!("{};", tune_capture_job()),
                        )
                        .with_remedy(Fix::Sql(tune_capture_job())),
                    );
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::checkpoint_table;

    #[test]
    fn the_checkpoint_statements_agree() {
        assert_eq!(
            CHECKPOINT_TABLE_SQL,
            format!(
                "{CHECKPOINT_TABLE_DDL}; {}",
                enable_table_sql(&checkpoint_table())
            )
        );
        assert_eq!(nstring("it's"), "N'it''s'");
    }
}
