//! Provisioning (Cargo feature `provision`): the steps that make a PostgreSQL database ready
//! for replication, and running them.
//!
//! [`run`] connects with an administrative account, reads what the server looks like
//! ([`read_facts`]), guesses the hosting provider ([`Provider`]), and builds the ordered steps
//! ([`plan`], a pure function of the facts), adding whatever else the connector's own
//! `check()` reports (its problems carry the same structured [`Fix`]es, and the rules both
//! use are written once, in the check module). Without [`Request::apply`] it prints the steps
//! as an SQL script; with it, it runs the ones SQL can do in one transaction (`ALTER SYSTEM`
//! on its own, as it must), says what is left for the console or a restart, and checks again.
//! A step that is already done is not planned, so a second run changes nothing.
//!
//! A new replication user gets a generated password, sent to the server only as a SCRAM
//! verifier (statement logging cannot leak it) and printed once in the report.
//!
//! ```no_run
//! # async fn run() -> Result<(), powersync_source_core::provision::ProvisionError> {
//! use powersync_source_core::provision::Request;
//! use powersync_source_postgres::{provision, PostgresConfig};
//!
//! let config = PostgresConfig::parse("postgres://admin:secret@db:5432/app")?;
//! let request = Request { apply: false, user: "powersync".into(), tables: vec![] };
//! let outcome = provision::run(&config, &request, None, &mut std::io::stdout()).await?;
//! std::process::exit(outcome.exit_status().into());
//! # }
//! ```

mod facts;
mod plan;
mod provider;

use std::io::Write;

use postgres_protocol::escape::escape_literal;
use powersync_source_core::provision::{
    generate_password, Fix, Outcome, Plan, ProvisionError, Report, Request, Step,
};
use powersync_source_core::{ChangeSource, CheckReport, ErrorKind, Secret, SourceError};
use tokio_postgres::Client;

pub use facts::{read_facts, read_version, Facts, PublicationFacts, RoleFacts, TableFacts, Wanted};
pub use plan::{describe_scope, internal_schemas, plan, scope, Scope};
pub use provider::{detect, from_host, from_server, Provider, ServerSignals};

use crate::{PostgresConfig, PostgresSource};

/// Checks a replication user name: PostgreSQL refuses these as role names.
pub fn validate_user(name: &str) -> Result<(), SourceError> {
    let lower = name.to_ascii_lowercase();
    if name.is_empty() {
        return Err(SourceError::config("--user must not be empty"));
    }
    if name.len() > 63 {
        return Err(SourceError::config(
            "--user: role names are at most 63 bytes",
        ));
    }
    if lower.starts_with("pg_") {
        return Err(SourceError::config(
            "--user: names starting with pg_ are reserved",
        ));
    }
    if [
        "public",
        "none",
        "current_user",
        "session_user",
        "current_role",
    ]
    .contains(&lower.as_str())
    {
        return Err(SourceError::config(format!(
            "--user: `{name}` cannot be a role name"
        )));
    }
    Ok(())
}

/// Prepares the database `config` names (with an administrative account) for `request`:
/// prints the steps to `out`, or runs them when `request.apply` is set, and says how it
/// ended. `provider` overrides the guess from the host name and server settings. The
/// publication is the configuration's ([`PostgresConfig::publication`]).
///
/// Errors are for what stops the report itself: a bad user name, rejected credentials, an
/// unreachable server, a failed write to `out`. A failed step is [`Outcome::Failed`].
pub async fn run(
    config: &PostgresConfig,
    request: &Request,
    provider: Option<Provider>,
    out: &mut dyn Write,
) -> Result<Outcome, ProvisionError> {
    validate_user(&request.user)?;
    let wanted = Wanted {
        user: request.user.clone(),
        publication: config.publication().to_string(),
        tables: request.tables.clone(),
    };
    let mut report = Report::new(out);

    let client = crate::connect_sql(config).await?;
    let version = read_version(&client).await?;
    let early = ServerSignals {
        version,
        ..Default::default()
    };
    let guess = provider
        .or_else(|| provider::from_host(config.host()))
        .or_else(|| provider::from_server(&early));
    if let Some(why) = guess.and_then(|p| p.unsupported()) {
        let provider = guess.unwrap_or(Provider::SelfHosted);
        report.comment(format_args!("provider: {provider}"))?;
        report.comment(format_args!("not supported: {why}"))?;
        writeln!(report.out(), "ready: no (1 problem left)")?;
        return Ok(Outcome::Unsupported);
    }

    let facts = read_facts(&client, &wanted).await?;
    let given = provider;
    let provider = given.unwrap_or_else(|| provider::detect(config.host(), &facts.signals));
    let how = if given.is_some() {
        "given with --provider"
    } else if provider::from_host(config.host()).is_some() {
        "from the host name"
    } else if provider::from_server(&facts.signals).is_some() {
        "from the server's settings and roles"
    } else {
        "no provider's host name, settings or roles found"
    };
    if let Some(why) = provider.unsupported() {
        report.comment(format_args!("provider: {provider} ({how})"))?;
        report.comment(format_args!("not supported: {why}"))?;
        writeln!(report.out(), "ready: no (1 problem left)")?;
        return Ok(Outcome::Unsupported);
    }

    let scope = scope(&facts, &wanted, provider);
    let mut steps = plan(&facts, &wanted, provider, config.host());
    add_check(
        &mut steps,
        admin_check(config, &wanted).await,
        CheckAs::Admin,
    );

    report.comment(format_args!(
        "setup: PostgreSQL {}, database {} on {} as {}{}",
        facts.version,
        facts.database,
        config.endpoint(),
        facts.admin.name,
        if facts.admin.superuser {
            " (superuser)"
        } else {
            ""
        }
    ))?;
    report.comment(format_args!("provider: {provider} ({how})"))?;
    report.comment(format_args!(
        "replication user: {}; publication: {}; tables: {}",
        wanted.user,
        wanted.publication,
        describe_scope(&facts, &wanted, &scope)
    ))?;
    if facts.user.is_none() && !facts.admin.superuser && !facts.admin.createrole {
        steps.notes.push(format!(
            "`{}` has no CREATEROLE right: creating the user will fail; run setup as a user that may create roles",
            facts.admin.name
        ));
    }
    report.notes(&steps.notes)?;

    if !request.apply {
        report.steps(&steps.steps)?;
        if steps.steps.is_empty() {
            nothing(&mut report, "nothing to change", &facts, &wanted)?;
        } else if steps.has_automatic_steps() {
            report.blank()?;
            report.comment("run again with --apply to execute the SQL steps (one transaction)")?;
        }
        return Ok(report.finish(&steps.steps)?);
    }

    // ---- --apply ----
    if steps.steps.is_empty() {
        report.blank()?;
        nothing(&mut report, "nothing to change", &facts, &wanted)?;
        return Ok(report.finish(&steps.steps)?);
    }
    let applied = apply(&client, &steps.steps, &mut report).await?;
    let mut failed = applied.failed;
    if !steps.has_automatic_steps() {
        report.blank()?;
        report.comment(
            "nothing to run from SQL: what is left needs the console, the server's configuration or a restart",
        )?;
    }
    if let Some(password) = &applied.password {
        // display_url() masks the password as `***`: show where it goes instead.
        let url = config
            .clone()
            .with_user(wanted.user.clone())
            .with_password("x")
            .display_url()
            .replacen(":***@", ":<password>@", 1);
        report.password(&wanted.user, password)?;
        report.comment(format_args!("connector URL: {url}"))?;
    }

    // Check again.
    report.blank()?;
    report.comment("checking again")?;
    let facts = match read_facts(&client, &wanted).await {
        Ok(f) => f,
        Err(e) => {
            report.comment(format_args!("could not read the server again: {e}"))?;
            writeln!(report.out(), "ready: no (unknown)")?;
            return Ok(Outcome::Failed);
        }
    };
    let mut steps = plan(&facts, &wanted, provider, config.host());
    add_check(
        &mut steps,
        admin_check(config, &wanted).await,
        CheckAs::Admin,
    );
    if let Some(password) = &applied.password {
        let user_config = config
            .clone()
            .with_user(wanted.user.clone())
            .with_password(password.expose());
        let result = PostgresSource::new(user_config)
            .with_tables(wanted.tables.clone())
            .check()
            .await;
        if let Err(e) = &result {
            if e.kind() == ErrorKind::Auth || e.kind() == ErrorKind::Config {
                failed = true;
            }
        }
        add_check(&mut steps, result, CheckAs::User(&wanted.user));
    }
    if steps.steps.is_empty() {
        nothing(&mut report, "nothing left", &facts, &wanted)?;
    } else {
        report.comment("still to do:")?;
        report.steps(&steps.steps)?;
    }
    let outcome = report.finish(&steps.steps)?;
    Ok(if failed { Outcome::Failed } else { outcome })
}

fn nothing(
    report: &mut Report<'_>,
    lead: &str,
    facts: &Facts,
    wanted: &Wanted,
) -> std::io::Result<()> {
    report.comment(format_args!(
        "{lead}: database {} is set up for replication by `{}` with publication `{}`",
        facts.database, wanted.user, wanted.publication
    ))
}

async fn admin_check(config: &PostgresConfig, wanted: &Wanted) -> Result<CheckReport, SourceError> {
    PostgresSource::new(config.clone())
        .with_tables(wanted.tables.clone())
        .check()
        .await
}

/// Whose account the connector's check ran with.
enum CheckAs<'a> {
    /// The administrator's URL: its findings about that user (rights, SELECT, row-level
    /// security) and what the plan covers are left out.
    Admin,
    /// The new replication user's: everything counts except what the plan covers.
    User(&'a str),
}

/// Adds what the connector's `check()` finds beyond the plan: full slots, WAL senders, and
/// whatever a newer connector checks. The plan covers the server version and `wal_level`
/// with more detail (provider consoles, restarts, `ALTER SYSTEM` rights).
fn add_check(plan: &mut Plan, result: Result<CheckReport, SourceError>, who: CheckAs<'_>) {
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            match who {
                CheckAs::Admin => plan
                    .notes
                    .push(format!("the connector's check could not run: {e}")),
                CheckAs::User(user) => plan.steps.push(Step::required(
                    format!("the connector's check as `{user}` failed: {e}"),
                    Fix::manual(format!(
                        "make sure `{user}` can log in from where the connector runs (pg_hba.conf / the provider's network rules) with the password printed above"
                    )),
                )),
            }
            return;
        }
    };
    plan.add_check(&report, |problem| {
        let s = problem.setting.as_str();
        // The plan has its own steps for these (the signal table: created and published).
        let covered =
            s == "wal_level" || s == "server_version" || s == crate::check::SIGNAL_SETTING;
        let about_admin = matches!(who, CheckAs::Admin)
            && (s == "REPLICATION" || s.starts_with("table ") || s.starts_with("publication "));
        covered || about_admin
    });
}

/// What `--apply` did.
struct Applied {
    /// The generated password, when the user was created (and committed).
    password: Option<Secret>,
    /// A statement failed (and its transaction was rolled back).
    failed: bool,
}

/// Runs the SQL steps: one transaction, except [`Fix::SqlAlone`] steps, which commit what
/// came before and run on their own. A failure rolls the transaction back and stops.
async fn apply(
    client: &Client,
    steps: &[Step],
    report: &mut Report<'_>,
) -> Result<Applied, ProvisionError> {
    let mut in_tx = false;
    let mut tx_statements = 0usize;
    let mut pending_password: Option<Secret> = None;
    let mut result = Applied {
        password: None,
        failed: false,
    };
    for (i, step) in steps.iter().enumerate() {
        report.step(i, step)?;
        let statement = match &step.fix {
            Fix::Manual { restart, .. } => {
                report.comment(format_args!(
                    "skipped: SQL cannot do this; do it as described{}",
                    if *restart {
                        " (the server restarts or must be restarted)"
                    } else {
                        ""
                    }
                ))?;
                continue;
            }
            Fix::SqlAlone(s) => {
                if in_tx {
                    commit(
                        client,
                        report,
                        &mut result,
                        &mut pending_password,
                        tx_statements,
                    )
                    .await?;
                    in_tx = false;
                    tx_statements = 0;
                    if result.failed {
                        break;
                    }
                }
                match client.batch_execute(s).await {
                    Ok(()) => report.comment("done")?,
                    Err(e) => {
                        report.comment(format_args!("failed: {}", db_message(&e)))?;
                        result.failed = true;
                        break;
                    }
                }
                continue;
            }
            Fix::Sql(s) => s.clone(),
            create @ Fix::CreateUser { .. } => {
                let password = generate_password();
                // Only a SCRAM verifier goes to the server: statement logging cannot leak
                // the password.
                let verifier =
                    postgres_protocol::password::scram_sha_256(password.expose().as_bytes());
                pending_password = Some(password);
                create
                    .statement(&escape_literal(&verifier))
                    .unwrap_or_default()
            }
        };
        if !in_tx {
            client.batch_execute("BEGIN").await.map_err(|e| {
                SourceError::connection(format!("BEGIN failed: {}", db_message(&e)))
            })?;
            in_tx = true;
        }
        match client.batch_execute(&statement).await {
            Ok(()) => {
                tx_statements += 1;
                report.comment("ok (in the setup transaction)")?;
            }
            Err(e) => {
                report.comment(format_args!("failed: {}", db_message(&e)))?;
                // The connection may be gone; the report says what happened either way.
                let _ = client.batch_execute("ROLLBACK").await;
                in_tx = false;
                pending_password = None;
                report.comment(format_args!(
                    "rolled back: {tx_statements} earlier statement(s) of the setup transaction were undone; fix the cause and run --apply again"
                ))?;
                result.failed = true;
                break;
            }
        }
    }
    if in_tx {
        commit(
            client,
            report,
            &mut result,
            &mut pending_password,
            tx_statements,
        )
        .await?;
    }
    Ok(result)
}

async fn commit(
    client: &Client,
    report: &mut Report<'_>,
    result: &mut Applied,
    pending_password: &mut Option<Secret>,
    statements: usize,
) -> Result<(), ProvisionError> {
    report.blank()?;
    match client.batch_execute("COMMIT").await {
        Ok(()) => {
            report.comment(format_args!("committed ({statements} statement(s))"))?;
            if let Some(p) = pending_password.take() {
                result.password = Some(p);
            }
        }
        Err(e) => {
            report.comment(format_args!(
                "COMMIT failed, nothing applied: {}",
                db_message(&e)
            ))?;
            *pending_password = None;
            result.failed = true;
        }
    }
    Ok(())
}

/// The server's message (with its detail and hint), never the statement.
fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str("; ");
                s.push_str(d);
            }
            if let Some(h) = db.hint() {
                s.push_str("; hint: ");
                s.push_str(h);
            }
            s
        }
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        assert!(validate_user("pg_x").is_err());
        assert!(validate_user("public").is_err());
        assert!(validate_user("").is_err());
        assert!(validate_user(&"x".repeat(64)).is_err());
        assert!(validate_user("repl").is_ok());
    }
}
