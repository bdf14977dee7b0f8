//! `setup`: prepares a database for replication, or says exactly what is missing.
//!
//! ```text
//! setup <SOURCE-URL> [--apply] [--table NAME]... [--user NAME] [--publication NAME]
//!       [--provider NAME] [--deploy-key KEY]
//! ```
//!
//! The URL names an administrative account. Without `--apply`, the steps that would make the
//! source ready are printed (as an SQL script: reasons and console steps are comments); with
//! `--apply`, the steps that can run are run (PostgreSQL: one transaction), console and restart
//! steps are described, and the source is checked again. The report goes to stdout; logs to
//! stderr.
//!
//! Each source's rules, planner and executor are its connector's `provision` module (Cargo
//! feature `provision`), built on the same rules as its `check()`; this binary only picks the
//! connector by URL scheme and passes the command line on.
//!
//! Exit statuses: 0 ready (nothing left to do); 3 steps remain (printed, or left for the
//! console / a restart); 2 configuration problems (bad command line or URL, credentials
//! rejected, a source or provider that cannot do logical replication); 1 anything else (a
//! statement failed during `--apply`, the connection failed).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use examples::cli::{self, AppError};
use powersync_source::{source_kind, table_names, SourceKind};
use powersync_source_core::provision::{Outcome, ProvisionError, Request};
use powersync_source_core::{ErrorKind, SourceError};
use powersync_source_postgres::provision::Provider;

/// Prepare a source database for replication: print (or, with --apply, run) the steps.
// No `Debug`: the arguments hold the source URL, which may carry a password, and the deploy key.
#[derive(Parser)]
#[command(name = "setup", version)]
struct Args {
    /// The source with an administrative account: postgres://admin:password@host:port/dbname.
    #[arg(value_name = "SOURCE-URL")]
    url: String,
    /// Run the steps SQL can do (one transaction) and check again; console and restart steps
    /// are printed.
    #[arg(long)]
    apply: bool,
    /// A table to replicate, `schema.name` or `name` (schema `public`); repeat for several.
    /// Default: every table (a publication FOR ALL TABLES), or the existing publication's.
    #[arg(long = "table", value_name = "NAME")]
    tables: Vec<String>,
    /// The replication user to create or complete.
    #[arg(long, value_name = "NAME", default_value = "powersync")]
    user: String,
    /// The publication (default: the URL's `publication`, else `powersync`).
    #[arg(long, value_name = "NAME")]
    publication: Option<String>,
    /// The hosting provider, when the guess from the host name and server settings is wrong:
    /// self-hosted, supabase, rds, azure, cloudsql, alloydb, neon, fly, planetscale, render,
    /// xata, heroku, cockroachdb, aurora-dsql.
    #[arg(long, value_name = "NAME", value_parser = Provider::parse)]
    provider: Option<Provider>,
    /// Convex: the deploy key (or the `CONVEX_DEPLOY_KEY` environment variable).
    #[arg(
        long,
        value_name = "KEY",
        env = "CONVEX_DEPLOY_KEY",
        hide_env_values = true
    )]
    deploy_key: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::init_tracing();
    cli::run_main_local("setup", run(args))
}

async fn run(args: Args) -> Result<ExitCode, AppError> {
    let kind = source_kind(&args.url, args.deploy_key.as_deref())?;
    if kind != SourceKind::Postgres && (args.publication.is_some() || args.provider.is_some()) {
        return Err(SourceError::config(format!(
            "--publication and --provider are PostgreSQL options, not {} ones",
            kind.label()
        ))
        .into());
    }
    if kind != SourceKind::Convex && args.deploy_key.is_some() {
        return Err(SourceError::config(format!(
            "--deploy-key is for Convex sources, not {}",
            kind.label()
        ))
        .into());
    }
    let request = Request {
        apply: args.apply,
        user: args.user.clone(),
        tables: table_names(kind, &args.tables)?,
    };
    let mut out = std::io::stdout().lock();
    let outcome = provision(kind, &args, &request, &mut out).await;
    out.flush()?;
    Ok(ExitCode::from(outcome?.exit_status()))
}

/// Runs the connector's provisioning for a URL of `kind`.
async fn provision(
    kind: SourceKind,
    args: &Args,
    request: &Request,
    out: &mut dyn Write,
) -> Result<Outcome, AppError> {
    let outcome = match kind {
        SourceKind::Postgres => {
            let mut config = powersync_source_postgres::PostgresConfig::parse(&args.url)?;
            if let Some(publication) = &args.publication {
                if publication.is_empty() {
                    return Err(SourceError::config("--publication must not be empty").into());
                }
                config = config.with_publication(publication.clone());
            }
            powersync_source_postgres::provision::run(&config, request, args.provider, out).await
        }
        #[cfg(feature = "mysql")]
        SourceKind::MySql => {
            let config = powersync_source_mysql::MySqlConfig::parse(&args.url)?;
            powersync_source_mysql::provision::run(&config, request, out).await
        }
        #[cfg(feature = "mongodb")]
        SourceKind::MongoDb => {
            let config = powersync_source_mongodb::MongoConfig::parse(&args.url)?;
            powersync_source_mongodb::provision::run(&config, request, out).await
        }
        #[cfg(feature = "mssql")]
        SourceKind::SqlServer => {
            let config = powersync_source_mssql::MssqlConfig::parse(&args.url)?;
            powersync_source_mssql::provision::run(&config, request, out).await
        }
        #[cfg(feature = "convex")]
        SourceKind::Convex => {
            use powersync_source_convex::provision::DEPLOY_KEY_HELP;
            let Some(key) = args.deploy_key.as_deref() else {
                return Err(SourceError::config("a Convex source needs a deploy key")
                    .with_hint(DEPLOY_KEY_HELP)
                    .into());
            };
            let config = powersync_source_convex::ConvexConfig::parse(&args.url, Some(key))?;
            powersync_source_convex::provision::run(&config, request, out).await
        }
        other => {
            return Err(SourceError::new(
                ErrorKind::Unsupported,
                format!("this build has no {} connector", other.label()),
            )
            .with_hint(
                "rebuild the examples with the source's feature (mysql, mongodb, mssql, convex)",
            )
            .into())
        }
    };
    outcome.map_err(|e| match e {
        ProvisionError::Source(e) => AppError::Source(e),
        ProvisionError::Output(e) => AppError::Io(e),
    })
}
