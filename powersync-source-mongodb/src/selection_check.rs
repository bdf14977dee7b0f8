//! The part of `check()` that depends on the selection: privileges on every selected database
//! (cluster-wide ones when the source reads a cluster-level change stream), the checkpoint
//! collection, the backfill signal collection (a warning), missing collections and post-image
//! settings.

use mongodb::bson::doc;
use mongodb::Client;
use powersync_source_core::provision::Fix;
use powersync_source_core::{CheckReport, Problem, Result};

use crate::catalog::{list_collections, Selection};
use crate::check::{enable_images, js_string, CHECKPOINT_ACTIONS, DATABASE_ACTIONS};
use crate::config::{MongoConfig, PostImages};
use crate::driver_error::driver_error;
use crate::server_info::{Privileges, CHECKPOINTS_COLLECTION, SIGNALS_COLLECTION};

/// Actions a cluster-level change stream (`Client::watch`) needs on `{db: "", collection: ""}`
/// (every non-system collection of every database): the server checks them there, not per
/// database.
pub(crate) const CLUSTER_ACTIONS: &[&str] = &["find", "changeStream"];

/// Adds the selection's problems to `report`. Fails only when the server cannot be asked.
pub(crate) async fn run(
    client: &Client,
    config: &MongoConfig,
    selection: &Selection,
    report: &mut CheckReport,
) -> Result<()> {
    let status = client
        .database(selection.checkpoint_database())
        .run_command(doc! {"connectionStatus": 1, "showPrivileges": true})
        .await
        .map_err(|e| driver_error("reading connectionStatus", e))?;
    let privileges = Privileges::from_connection_status(&status);
    if selection.is_cluster() {
        let missing = privileges.missing_everywhere(CLUSTER_ACTIONS);
        if !missing.is_empty() {
            let dbs: Vec<&str> = selection.databases().collect();
            report.error(
                "privileges",
                format!(
                    "the user lacks {} on the whole cluster, which a change stream over several databases ({}) needs",
                    missing.join(", "),
                    dbs.join(", ")
                ),
                "grant a role with find and changeStream on {db: \"\", collection: \"\"} (`setup` creates it), or replicate one database per source",
            );
        }
    }
    let mut wanted: Vec<&str> = DATABASE_ACTIONS.to_vec();
    if config.post_images() == PostImages::AutoConfigure {
        wanted.push("collMod");
    }
    for db_name in selection.databases() {
        let missing = privileges.missing(&wanted, db_name, None);
        if !missing.is_empty() {
            report.error(
                "privileges",
                format!("the user lacks {} on database {db_name}", missing.join(", ")),
                format!(
                    "grant a role with these actions on {{db: \"{db_name}\", collection: \"\"}} (the built-in `read` role covers listCollections, find and changeStream; collMod needs dbAdmin or a custom role)"
                ),
            );
        }
    }
    let cp_db = selection.checkpoint_database();
    let missing = privileges.missing(CHECKPOINT_ACTIONS, cp_db, Some(CHECKPOINTS_COLLECTION));
    if !missing.is_empty() {
        report.error(
            "privileges",
            format!(
                "the user lacks {} on {cp_db}.{CHECKPOINTS_COLLECTION} (used for write checkpoints and the snapshot barrier)",
                missing.join(", ")
            ),
            format!("grant readWrite on {{db: \"{cp_db}\", collection: \"{CHECKPOINTS_COLLECTION}\"}} plus createCollection, dropCollection and changeStream"),
        );
    }

    let cp_collections = list_collections(&client.database(cp_db)).await?;
    if !cp_collections.iter().any(|c| c.name == SIGNALS_COLLECTION) {
        report.push(
            Problem::warning(
                "backfill signals",
                format!(
                    "the backfill signal collection {cp_db}.{SIGNALS_COLLECTION} is missing: streams work, but backfill requests need it (the first one creates it, if the user may)"
                ),
                format!(
                    "run `setup --apply`, or db.getSiblingDB({}).createCollection(\"{SIGNALS_COLLECTION}\")",
                    js_string(cp_db)
                ),
            )
            .with_remedy(Fix::Sql(format!(
                "db.getSiblingDB({}).createCollection(\"{SIGNALS_COLLECTION}\")",
                js_string(cp_db)
            ))),
        );
    }

    for db_name in selection.databases() {
        let collections = list_collections(&client.database(db_name)).await?;
        for name in selection.names_in(db_name).unwrap_or_default() {
            if !collections.iter().any(|c| &c.name == name) {
                report.warning(
                    format!("collection {db_name}.{name}"),
                    format!("collection {db_name}.{name} does not exist (yet)"),
                    "create it, or check the name; it is replicated from its first write",
                );
            }
        }
        let lacking: Vec<&str> = collections
            .iter()
            .filter(|c| selection.contains(db_name, &c.name) && !c.images)
            .map(|c| c.name.as_str())
            .collect();
        if !lacking.is_empty() && config.post_images() == PostImages::ReadOnly {
            let commands: Vec<String> = lacking.iter().map(|c| enable_images(db_name, c)).collect();
            report.push(
                Problem::error(
                    "changeStreamPreAndPostImages",
                    format!(
                        "post_images=read_only needs changeStreamPreAndPostImages on every selected collection; not enabled on: {}",
                        lacking
                            .iter()
                            .map(|c| format!("{db_name}.{c}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    format!(
                        "run db.runCommand({{collMod: \"<collection>\", changeStreamPreAndPostImages: {{enabled: true}}}}) for {}, or use post_images=auto_configure (does it for you) or post_images=off",
                        lacking.join(", ")
                    ),
                )
                .with_remedy(Fix::Sql(commands.join("; "))),
            );
        }
    }
    Ok(())
}
