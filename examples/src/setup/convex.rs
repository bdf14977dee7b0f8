//! `setup` for Convex: what to deploy, and whether it is deployed.
//!
//! Convex has no SQL to run: a deployment is set up by deploying code. The connector needs a
//! `powersync_checkpoints` table in `convex/schema.ts` and the
//! `powersync_checkpoints:createCheckpoint` mutation in `convex/powersync_checkpoints.ts`
//! (write checkpoints go through it), and a deploy key. `setup` prints both files, runs the
//! connector's `check()` with the key, and reports what is missing; `--apply` cannot deploy
//! (that is `npx convex deploy` in the project), so it says so and checks again.

use std::io::Write;

use examples::cli::AppError;
use examples::source_url::{self, SourceKind};
use powersync_source_convex::{ConvexConfig, ConvexSource, CHECKPOINTS_TS, SCHEMA_TS};
use powersync_source_core::{ChangeSource, CheckReport, ErrorKind, Severity, SourceError};

use super::{finish, print_steps, Action, Options, Outcome, Step};

/// How to get a deploy key, shown when none is given or it is refused.
pub const DEPLOY_KEY_HELP: &str = "create a deploy key in the Convex dashboard (your deployment → Settings → URL & Deploy Key → Generate) and pass it with --deploy-key or CONVEX_DEPLOY_KEY; production and preview deployments have their own keys, and a key grants full access to its deployment, so keep it secret";

/// The files a user deploys, as printed by `setup`: the text is the golden reference.
pub fn files_text() -> String {
    let mut s = String::new();
    s.push_str("-- file convex/schema.ts: add the powersync_checkpoints table to your schema\n");
    for line in SCHEMA_TS.lines() {
        s.push_str("   ");
        s.push_str(line);
        s.push('\n');
    }
    s.push_str("-- file convex/powersync_checkpoints.ts: add this file as it is\n");
    for line in CHECKPOINTS_TS.lines() {
        s.push_str("   ");
        s.push_str(line);
        s.push('\n');
    }
    s.push_str("-- then deploy: npx convex deploy (or keep `npx convex dev` running for a dev deployment)\n");
    s
}

/// Steps from the connector's check: every error is a step (deploying code or fixing the
/// table list), warnings are notes.
pub fn plan(report: &CheckReport) -> (Vec<Step>, Vec<String>) {
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    for problem in &report.problems {
        match problem.severity {
            Severity::Error => steps.push(Step {
                reason: problem.what.clone(),
                action: Action::Manual {
                    todo: problem.fix.clone(),
                    restart: false,
                },
                required: true,
            }),
            Severity::Warning => notes.push(format!("{}; {}", problem.what, problem.fix)),
        }
    }
    (steps, notes)
}

/// Runs `setup` for a Convex deployment.
pub async fn run(opts: &Options, out: &mut dyn Write) -> Result<Outcome, AppError> {
    let Some(key) = opts.deploy_key.as_deref() else {
        return Err(SourceError::config("a Convex source needs a deploy key")
            .with_hint(DEPLOY_KEY_HELP)
            .into());
    };
    let config = ConvexConfig::parse(&opts.url, Some(key))?;
    let tables = source_url::table_names(SourceKind::Convex, &opts.tables)?;
    let source = ConvexSource::new(config).with_tables(tables.clone());
    writeln!(out, "-- setup: Convex deployment")?;
    writeln!(
        out,
        "-- tables: {}",
        if tables.is_empty() {
            "every table of the deployment".to_string()
        } else {
            tables
                .iter()
                .map(|t| t.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        }
    )?;
    let report = match source.check().await {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::Auth => {
            return Err(SourceError::auth(format!(
                "the deployment refused the deploy key: {}",
                e.message()
            ))
            .with_hint(DEPLOY_KEY_HELP)
            .into())
        }
        Err(e) => return Err(e.into()),
    };
    let (steps, notes) = plan(&report);
    for note in &notes {
        writeln!(out, "-- note: {note}")?;
    }
    let needs_files = report.problems.iter().any(|p| {
        p.severity == Severity::Error
            && (p.setting.contains("powersync_checkpoints") || p.fix.contains("convex/"))
    });
    writeln!(out)?;
    if needs_files || !steps.is_empty() {
        out.write_all(files_text().as_bytes())?;
    }
    print_steps(out, &steps)?;
    if opts.apply && !steps.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "-- --apply cannot deploy Convex code: add the files above to the project and run `npx convex deploy`, then run setup again"
        )?;
    }
    if steps.is_empty() {
        writeln!(
            out,
            "-- nothing to change: the deployment has the checkpoint table and mutation, and the key is accepted"
        )?;
    }
    finish(out, &steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_printed_as_comments_with_the_exact_sources() {
        let text = files_text();
        assert!(text.starts_with("-- file convex/schema.ts"));
        assert!(
            text.contains("   powersync_checkpoints: defineTable({"),
            "{text}"
        );
        assert!(
            text.contains("   export const createCheckpoint = mutation({"),
            "{text}"
        );
        assert!(text.ends_with("npx convex dev` running for a dev deployment)\n"));
        // Every line of both files is there, in order.
        for line in SCHEMA_TS.lines().chain(CHECKPOINTS_TS.lines()) {
            assert!(text.contains(&format!("   {line}\n")), "{line}");
        }
    }

    #[test]
    fn errors_are_steps_and_warnings_notes() {
        let mut report = CheckReport::default();
        report.error(
            "powersync_checkpoints",
            "the powersync_checkpoints table does not exist",
            "add it to convex/schema.ts and deploy",
        );
        report.warning("polling", "slow", "faster");
        let (steps, notes) = plan(&report);
        assert_eq!(steps.len(), 1);
        assert_eq!(
            steps[0].action.display(),
            "-- to do: add it to convex/schema.ts and deploy"
        );
        assert_eq!(notes, vec!["slow; faster"]);
    }
}
