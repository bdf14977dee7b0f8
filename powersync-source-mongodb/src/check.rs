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

/// Privileges on `_powersync_signals` (backfill requests: read from the stream, inserted by
/// `ChangeStream::request_backfill`).
pub(crate) const SIGNAL_ACTIONS: &[&str] = &["createCollection", "find", "changeStream", "insert"];

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

    if matches!(topology(&hello), Topology::ReplicaSet(_)) {
        oplog_window(client, &mut report).await;
    }
    crate::selection_check::run(client, config, selection, &mut report).await?;
    Ok(report)
}

/// The oplog window below which `check()` warns: an outage over a night must not lose the
/// stream's history.
const MIN_OPLOG_WINDOW_SECS: u32 = 86_400;

/// Reports the oplog window (the time between its oldest and newest entries: how long a
/// stopped stream can be resumed) where the server lets the user read `local.oplog.rs`;
/// warns when it is under a day. Silent where it cannot be read (a user without access to
/// `local`, servers without an oplog collection): the window is then not known, not short.
async fn oplog_window(client: &Client, report: &mut CheckReport) {
    use mongodb::bson::{Document, Timestamp};

    let oplog = client.database("local").collection::<Document>("oplog.rs");
    let first = oplog.find_one(doc! {}).sort(doc! {"$natural": 1}).await;
    let last = oplog.find_one(doc! {}).sort(doc! {"$natural": -1}).await;
    let ts = |d: &Document| d.get_timestamp("ts").ok();
    let (Ok(Some(first)), Ok(Some(last))) = (first, last) else {
        tracing::debug!(target: "powersync_source_mongodb", "the oplog window cannot be read");
        return;
    };
    let (Some(Timestamp { time: from, .. }), Some(Timestamp { time: to, .. })) =
        (ts(&first), ts(&last))
    else {
        return;
    };
    let window = to.saturating_sub(from);
    tracing::info!(
        target: "powersync_source_mongodb",
        oplog_window_secs = window,
        "the oplog covers {:.1} hours",
        f64::from(window) / 3600.0
    );
    if window < MIN_OPLOG_WINDOW_SECS {
        report.warning(
            "oplog",
            format!(
                "the oplog covers only {:.1} hours of writes: a stream stopped longer than that must start from scratch (snapshot)",
                f64::from(window) / 3600.0
            ),
            "raise the oplog size (replSetResizeOplog) or its minimum retention (storage.oplogMinRetentionHours) so it covers a day or more",
        );
    }
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

#[cfg(test)]
mod tests {
    use powersync_source_core::ChangeSource;
    use powersync_source_testkit::{start_or_skip, SecantusServer};

    use crate::{MongoConfig, MongoSource};

    /// A fresh replica set's oplog covers seconds: `check()` reports the window as a warning
    /// (not an error: the stream works, but a night's outage would lose its history).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_oplog_window_is_a_warning() {
        powersync_source_testkit::init_tracing();
        let server = start_or_skip!(SecantusServer::start().await);
        server
            .pymongo("db.items.insert_many([{'_id': 1}, {'_id': 2}])")
            .await
            .expect("insert");
        let url = format!(
            "mongodb://127.0.0.1:{}/test?directConnection=true&post_images=off",
            server.port()
        );
        let source = MongoSource::new(MongoConfig::parse(&url).expect("url"));
        let report = source.check().await.expect("check");
        let oplog = report
            .problems
            .iter()
            .find(|p| p.setting == "oplog")
            .unwrap_or_else(|| panic!("no oplog window: {:?}", report.problems));
        assert_eq!(oplog.severity, powersync_source_core::Severity::Warning);
        assert!(oplog.what.contains("hours of writes"), "{}", oplog.what);
        assert!(report.is_ready(), "{:?}", report.problems);
    }
}
