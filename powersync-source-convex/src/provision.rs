//! Provisioning (Cargo feature `provision`) for Convex: what to deploy, and whether it is
//! deployed.
//!
//! Convex has no SQL to run: a deployment is set up by deploying code. The connector needs a
//! `powersync_checkpoints` table in `convex/schema.ts` and the
//! `powersync_checkpoints:createCheckpoint` mutation in `convex/powersync_checkpoints.ts`
//! (write checkpoints go through it), and a deploy key. [`run`] prints both files, runs the
//! connector's `check()` with the key (its problems are the plan: one rule set), and reports
//! what is missing; `--apply` cannot deploy (that is `npx convex deploy` in the project), so
//! it says so.

use std::io::Write;

use powersync_source_core::provision::{Outcome, Plan, ProvisionError, Report, Request};
use powersync_source_core::{ChangeSource, CheckReport, ErrorKind, Severity, SourceError};

use crate::{
    ConvexConfig, ConvexSource, CHECKPOINTS_TS, CHECKPOINT_MUTATION, CHECKPOINT_TABLE, SCHEMA_TS,
};

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
/// table list) with its remedy, warnings are notes.
///
/// Write checkpoints are optional for replication (`check()` only warns when the table or the
/// mutation is missing), but deploying them is what setup is for: here those two warnings are
/// steps.
pub fn plan(report: &CheckReport) -> Plan {
    let mut report = report.clone();
    for p in &mut report.problems {
        if p.setting == CHECKPOINT_TABLE || p.setting == CHECKPOINT_MUTATION {
            p.severity = Severity::Error;
        }
    }
    let mut plan = Plan::default();
    plan.add_check(&report, |_| false);
    plan
}

/// Checks the deployment `config` names (its deploy key included) for `request` and prints
/// what to deploy; nothing can be applied from here, so `request.apply` only adds that
/// remark. A refused key is an [`ErrorKind::Auth`] error with [`DEPLOY_KEY_HELP`].
pub async fn run(
    config: &ConvexConfig,
    request: &Request,
    out: &mut dyn Write,
) -> Result<Outcome, ProvisionError> {
    let tables = &request.tables;
    let source = ConvexSource::new(config.clone()).with_tables(tables.clone());
    let mut report = Report::new(out);
    report.comment("setup: Convex deployment")?;
    report.comment(format_args!(
        "tables: {}",
        if tables.is_empty() {
            "every table of the deployment".to_string()
        } else {
            tables
                .iter()
                .map(|t| t.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        }
    ))?;
    let check = match source.check().await {
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
    let plan = plan(&check);
    report.notes(&plan.notes)?;
    let needs_files = check.problems.iter().any(|p| {
        p.severity == Severity::Error
            && (p.setting.contains("powersync_checkpoints") || p.fix.contains("convex/"))
    });
    report.blank()?;
    if needs_files || !plan.steps.is_empty() {
        report.raw(&files_text())?;
    }
    report.steps(&plan.steps)?;
    if request.apply && !plan.steps.is_empty() {
        report.blank()?;
        report.comment(
            "--apply cannot deploy Convex code: add the files above to the project and run `npx convex deploy`, then run setup again",
        )?;
    }
    if plan.steps.is_empty() {
        report.comment(
            "nothing to change: the deployment has the checkpoint table and mutation, and the key is accepted",
        )?;
    }
    Ok(report.finish(&plan.steps)?)
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
            text.contains("   export const createCheckpoint = internalMutation({"),
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
        let plan = plan(&report);
        assert_eq!(plan.steps.len(), 1);
        assert_eq!(
            plan.steps[0].fix.to_string(),
            "-- to do: add it to convex/schema.ts and deploy"
        );
        assert_eq!(plan.notes, vec!["slow; faster"]);
    }

    #[test]
    fn missing_checkpoint_pieces_are_steps_a_read_only_key_a_note() {
        let mut report = CheckReport::default();
        report.warning(
            CHECKPOINT_MUTATION,
            "write checkpoints are off: the mutation is not usable",
            "add convex/powersync_checkpoints.ts and deploy",
        );
        report.warning(
            "write checkpoints",
            "write checkpoints are off: the key is read-only",
            "use another key",
        );
        let plan = plan(&report);
        assert_eq!(plan.steps.len(), 1, "{plan:?}");
        assert!(plan.steps[0].reason.contains("mutation"));
        assert_eq!(plan.notes.len(), 1);
        assert!(plan.notes[0].contains("read-only"));
    }
}
