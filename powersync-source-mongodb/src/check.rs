//! `check()`: every prerequisite at once, each problem with its fix (the structured
//! [`Fix`] is what `setup` carries out). The privilege lists and the oldest version are
//! shared with the `provision` planner.

use mongodb::bson::doc;
use mongodb::Client;
use powersync_source_core::provision::Fix;
use powersync_source_core::{CheckReport, Problem, Result};

use crate::catalog::Selection;
use crate::config::MongoConfig;
use crate::driver_error::driver_error;
use crate::server_info::{parse_version, supports_split_event, topology, Topology};

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

    crate::selection_check::run(client, config, selection, &mut report).await?;
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
