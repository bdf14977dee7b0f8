//! `setup`: prepares a database for replication, or says exactly what is missing.
//!
//! ```text
//! setup <SOURCE-URL> [--apply] [--table NAME]... [--user NAME] [--publication NAME]
//!       [--provider NAME]
//! ```
//!
//! The URL names an administrative account. Without `--apply`, the steps that would make the
//! source ready are printed (as an SQL script: reasons and console steps are comments); with
//! `--apply`, the SQL steps run (one transaction), console and restart steps are described,
//! and the source is checked again. The report goes to stdout; logs to stderr.
//!
//! Exit statuses: 0 ready (nothing left to do); 3 steps remain (printed, or left for the
//! console / a restart); 2 configuration problems (bad command line or URL, credentials
//! rejected, a source or provider that cannot do logical replication); 1 anything else (a
//! statement failed during `--apply` and was rolled back, the connection failed).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use examples::cli::{self, AppError};

#[path = "../setup/mod.rs"]
mod setup;

use powersync_source_postgres::provision::Provider;

/// Prepare a source database for replication: print (or, with --apply, run) the steps.
// No `Debug`: the arguments hold the source URL, which may carry a password.
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
    cli::run_main("setup", run(args))
}

async fn run(args: Args) -> Result<ExitCode, AppError> {
    let options = setup::Options {
        url: args.url,
        apply: args.apply,
        tables: args.tables,
        user: args.user,
        publication: args.publication,
        provider: args.provider,
        deploy_key: args.deploy_key,
    };
    let mut out = std::io::stdout().lock();
    let outcome = setup::run(&options, &mut out).await;
    out.flush()?;
    Ok(ExitCode::from(outcome?.exit_status()))
}
