//! `check()`: every prerequisite at once, each problem with its fix (the structured
//! [`Fix`] is what `setup` carries out). The privilege lists and the oldest version are
//! shared with the `provision` planner.

use mongodb::bson::doc;
use mongodb::Client;
use powersync_source_core::provision::Fix;
use powersync_source_core::{CheckReport, Problem, Result};

use crate::catalog::{list_collections, Selection};
use crate::config::{MongoConfig, PostImages};
use crate::driver_error::driver_error;
use crate::server_info::{
    parse_version, supports_split_event, topology, Privileges, Topology, CHECKPOINTS_COLLECTION,
};

/// Oldest supported server: change streams with pre/post images.
pub(crate) const MIN_VERSION: (u32, u32, u32) = (6, 0, 0);

/// Privileges on the database (the seed docs' list).
pub(crate) const DATABASE_ACTIONS: &[&str] = &["listCollections", "find", "changeStream"];
/// Privileges on `_powersync_checkpoints`.
pub(crate) const CHECKPOINT_ACTIONS: &[&str] = &[
    "createCollection",
    "dropCollection",
    "find",
    "changeStream",
    "insert",
    "update",
    "remove",
];

/// Runs every check. Fails only when the server cannot be asked (unreachable, bad
/// credentials).
pub async fn run(
    client: &Client,
    config: &MongoConfig,
    selection: &Selection,
) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let admin = client.database("admin");
    let hello = admin
        .run_command(doc! {"hello": 1})
        .await
        .map_err(|e| driver_error(format!("asking {} for hello", config.display_url()), e))?;
    let build = admin
        .run_command(doc! {"buildInfo": 1})
        .await
        .map_err(|e| driver_error("reading buildInfo", e))?;
    let version_text = build.get_str("version").unwrap_or("unknown").to_owned();
    report.server_version = Some(format!("MongoDB {version_text}"));

    match parse_version(&version_text) {
        Some(v) if v < MIN_VERSION => {
            let fix = "upgrade the deployment to MongoDB 6.0 or later (7.0+ recommended)";
            report.push(
                Problem::error(
                    "version",
                    format!("MongoDB {version_text} is too old: change streams with pre/post images need 6.0 or later"),
                    fix,
                )
                .with_remedy(Fix::restart(fix)),
            )
        }
        Some(v) if !supports_split_event(v) => report.warning(
            "version",
            format!("MongoDB {version_text} has no $changeStreamSplitLargeEvent: a change event over 16 MB stops replication"),
            "upgrade to 6.0.9+ or 7.0+",
        ),
        Some(_) => {}
        None => report.warning(
            "version",
            format!("could not read the server version `{version_text}`"),
            "make sure the server is MongoDB 6.0 or later",
        ),
    }

    match topology(&hello) {
        Topology::ReplicaSet(_) => {}
        Topology::Sharded => report.error(
            "topology",
            "the URL points at a sharded cluster (mongos); this connector reads one replica set's change stream",
            "connect to a replica set (each shard is replicated separately), or use a replica-set deployment",
        ),
        Topology::Standalone => {
            let fix = "restart mongod with --replSet rs0 and run rs.initiate() (a one-member replica set is enough)";
            report.push(
                Problem::error(
                    "topology",
                    "the server is a standalone mongod: change streams need a replica set (they read the oplog)",
                    fix,
                )
                .with_remedy(Fix::restart(fix)),
            )
        }
    }

    let db_name = selection.database();
    let status = client
        .database(db_name)
        .run_command(doc! {"connectionStatus": 1, "showPrivileges": true})
        .await
        .map_err(|e| driver_error("reading connectionStatus", e))?;
    let privileges = Privileges::from_connection_status(&status);
    let mut wanted: Vec<&str> = DATABASE_ACTIONS.to_vec();
    if config.post_images() == PostImages::AutoConfigure {
        wanted.push("collMod");
    }
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
    let missing = privileges.missing(CHECKPOINT_ACTIONS, db_name, Some(CHECKPOINTS_COLLECTION));
    if !missing.is_empty() {
        report.error(
            "privileges",
            format!(
                "the user lacks {} on {db_name}.{CHECKPOINTS_COLLECTION} (used for write checkpoints and the snapshot barrier)",
                missing.join(", ")
            ),
            format!("grant readWrite on {{db: \"{db_name}\", collection: \"{CHECKPOINTS_COLLECTION}\"}} plus createCollection, dropCollection and changeStream"),
        );
    }

    let collections = list_collections(&client.database(db_name)).await?;
    for name in selection.names() {
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
                    lacking.join(", ")
                ),
                format!(
                    "run db.runCommand({{collMod: \"<collection>\", changeStreamPreAndPostImages: {{enabled: true}}}}) for {}, or use post_images=auto_configure (does it for you) or post_images=off",
                    lacking.join(", ")
                ),
            )
            .with_remedy(Fix::Sql(commands.join("; "))),
        );
    }
    Ok(report)
}

/// A string as a JavaScript literal, for `mongosh` commands.
pub(crate) fn js_string(s: &str) -> String {
    // Serializing a `&str` cannot fail; the fallback only keeps this total.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The `mongosh` command that enables pre/post images on a collection.
pub(crate) fn enable_images(db: &str, collection: &str) -> String {
    format!(
        "db.getSiblingDB({}).runCommand({{ collMod: {}, changeStreamPreAndPostImages: {{ enabled: true }} }})",
        js_string(db),
        js_string(collection)
    )
}
